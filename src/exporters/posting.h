/*
 * posting.h: the accounting semantics of the exporters (SPEC §5).
 *
 * A change-log record becomes at most one balanced transaction, so that
 * the books always hold exactly the refund's current version if it is
 * SUCCEEDED, and nothing for it otherwise:
 *
 *  - reaching SUCCEEDED posts the refund (RS_POSTING_POST);
 *  - leaving SUCCEEDED for any other status (REVERSED, FAILED, PENDING,
 *    ...) posts what the version before it posted, with every sign
 *    flipped (RS_POSTING_REVERSE);
 *  - a new SUCCEEDED version of a SUCCEEDED refund whose amount, fees or
 *    currency differ from the version before it posts the difference,
 *    line by line: the new transaction minus the one posted
 *    (RS_POSTING_ADJUST);
 *  - anything else (PENDING, FAILED -> REVERSED, SUCCEEDED -> SUCCEEDED
 *    with the same amounts, a first version that is not SUCCEEDED)
 *    posts nothing (RS_POSTING_NONE).
 *
 * The transaction of a refund of amount A with returned fees Fa
 * (returnedApplicationFee) and Fp (returnedProcessingFee), all in the
 * refund's currency, in exact minor units:
 *
 *	refund account		+A
 *	application fee account	-Fa
 *	processing fee account	-Fp
 *	clearing account	-(A - Fa - Fp)
 *
 * with the default accounts Expenses:Refunds,
 * Income:Wix:Fees:Returned:Application,
 * Income:Wix:Fees:Returned:Processing and Assets:Wix:Clearing.
 *
 * The refund is an expense (or contra-revenue) paid out of the payment
 * clearing account; fees the payment provider and Wix hand back to the
 * merchant reduce what leaves the clearing account and are booked as
 * income.  A fee line is left out when the fee is absent or zero.  The
 * refund account therefore holds, per currency, exactly the sum of the
 * refunds whose current status is SUCCEEDED.
 *
 * What "the version before it posted" is comes with the record (its
 * posted_* fields: the refund's previous change-log entry, which was
 * SUCCEEDED).  Each record moves the books from that to its own version,
 * so the result does not depend on which records posted nothing.  An
 * adjustment always has the refund account line (0 if only fees
 * changed); its other lines are left out when their difference is 0.
 * A reversal of a record without posted_* amounts (a store older than
 * its change log) uses the record's own amounts.  An adjustment across
 * currencies cannot be one balanced transaction in one currency: it is
 * refused (RS_ERR_INPUT), so it goes to dead letters and is seen.
 *
 * The transaction is dated by the record's updatedDate (its UTC date),
 * else createdDate, else the time refundsync stored it.
 *
 * Pure functions; safe from any thread.
 */
#ifndef RS_POSTING_H
#define RS_POSTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refundsync/exporter.h"
#include "util/status.h"

/* The default account names (configurable per exporter). */
#define POSTING_DEFAULT_REFUND		"Expenses:Refunds"
#define POSTING_DEFAULT_CLEARING	"Assets:Wix:Clearing"
#define POSTING_DEFAULT_APP_FEE		"Income:Wix:Fees:Returned:Application"
#define POSTING_DEFAULT_PROC_FEE	"Income:Wix:Fees:Returned:Processing"

/* The status that posts a refund. */
#define POSTING_STATUS_SUCCEEDED	"SUCCEEDED"

/*
 * What a version with status (required) posts, given the status of the
 * version before it (prev_status, NULL for the first version).  See the
 * rules above.  A NULL status posts nothing.
 */
enum rs_posting	posting_classify(const char *status, const char *prev_status);

/*
 * What rec posts: posting_classify() of its statuses, except that a
 * SUCCEEDED -> SUCCEEDED record whose amounts (currency, amount, fees:
 * compared in minor units) differ from its posted_* ones is
 * RS_POSTING_ADJUST.  rec->posting is not read.
 */
enum rs_posting	posting_classify_record(const struct rs_export_record *rec);

/* "none", "post", "reverse" or "adjust"; "none" for an unknown value.
 * Static. */
const char	*posting_name(enum rs_posting p);

/* The four accounts.  Strings are borrowed. */
struct posting_accounts {
	const char	*refund;	 /* debited with the refund */
	const char	*clearing;	 /* credited with what is paid out */
	const char	*application_fee; /* credited with
					     returnedApplicationFee */
	const char	*processing_fee; /* credited with
					    returnedProcessingFee */
};

/* Fill a with the POSTING_DEFAULT_* names. */
void		posting_accounts_default(struct posting_accounts *a /* OUT */);

/* Which tool's account syntax to check against. */
enum posting_syntax {
	POSTING_SYNTAX_LEDGER,		/* hledger and ledger journals */
	POSTING_SYNTAX_BEANCOUNT
};

/*
 * Is name an account name we can write?  Both: colon-separated
 * components of ASCII letters, digits, '-' and '_' (no '_' for
 * beancount), each starting with a letter or digit, at most 200 bytes.
 * Beancount also wants the first component to be Assets, Liabilities,
 * Equity, Income or Expenses, at least one component after it, and
 * every component to start with an upper-case letter or a digit.
 */
bool		posting_account_valid(const char *name,
		    enum posting_syntax syn);

/* Most lines of one transaction: refund, two fees, clearing (an
 * adjustment merges the old and new lines account by account). */
#define POSTING_MAX_LINES	4

/* One posting line. */
struct posting_line {
	const char	*account;	/* borrowed from the accounts */
	int64_t		 minor;		/* signed, in minor units */
};

/* A balanced transaction: the lines sum to zero. */
struct posting_txn {
	enum rs_posting	 kind;		/* NONE: no lines, nothing else */
	const char	*currency;	/* borrowed from the record */
	int		 exponent;	/* minor-unit digits of currency */
	char		 date[11];	/* YYYY-MM-DD, UTC */
	size_t		 nlines;
	struct posting_line lines[POSTING_MAX_LINES];
};

/*
 * Build the transaction of rec (its posting field says which) against
 * the accounts acc.  RS_OK and *out (a NONE record gives kind NONE and
 * no lines).  Otherwise, with a static reason in *why (may be NULL):
 * RS_ERR_INPUT if the currency is not three upper-case letters or no
 * date parses; RS_ERR_RANGE if the amount or a fee is not exact in the
 * currency's minor units, or a sum overflows.  *out is only valid on
 * RS_OK.
 */
enum rs_status	posting_build(const struct rs_export_record *rec,
		    const struct posting_accounts *acc,
		    struct posting_txn *out /* OUT */,
		    const char **why /* OUT, may be NULL */);

#endif
