/*
 * refundcmd.h: `refundsync refund create` (SPEC §1, WIX.md §4-6), the
 * merchant-facing way to refund a charge without ever refunding twice.
 *
 * A full refund (no amount) is sent as is: Wix rejects a second one.  A
 * partial refund carries previouslyRefundedAmount, the exact sum of the
 * charge's SUCCEEDED refunds read from Query Refunds (every page)
 * immediately before sending, so a request that is retried after a
 * network error or a 5xx (the REST client does that with the same body)
 * can never land twice: the retry gets PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH.
 * A created refund is written to the store at once (source "cli") under
 * the normal version rule.  Money is exact minor units (domain/money.h).
 */
#ifndef RS_REFUNDCMD_H
#define RS_REFUNDCMD_H

#include <stdbool.h>
#include <stdio.h>

#include "adapters/store.h"
#include "adapters/wixapi.h"

/* Exit status when Wix refused the refund with an application error (or
 * the operator declined a fresh attempt after one).  0, 1 and 2 are
 * cli.h's. */
#define REFUNDCMD_EXIT_REFUSED	3

/* What to create.  Every string is borrowed for the call. */
struct refundcmd_options {
	const char	*instance;	/* app instance; required */
	const char	*charge;	/* charge id; required */
	const char	*amount;	/* decimal text; NULL: a full refund */
	const char	*currency;	/* ISO 4217; with amount only */
	const char	*reason;	/* may be NULL */
	const char	*note;		/* may be NULL */
	bool		 yes;		/* never ask; never retry on our own */
	bool		 json;		/* one JSON document on out */
	bool		 interactive;	/* may ask on in (a terminal) */
};

/*
 * Check o's input, without sending anything: the ids, and for a partial
 * refund the amount's format, its decimals against the currency's
 * ISO 4217 exponent, and that it is more than zero.  Returns 0, or 2
 * (CLI_EXIT_USAGE) after saying why on err.
 */
int	refundcmd_check(const struct refundcmd_options *o, FILE *err);

/*
 * Create the refund of o through w (borrowed), recording a created
 * refund in st (a connection of the calling thread, no transaction
 * open).  Reads answers to questions from in (only if o->interactive and
 * not o->yes or o->json); writes the history, the plan and the result to
 * out (or one JSON document with --json) and problems to err.  Returns
 * the exit status: 0 the refund was created (SUCCEEDED or PENDING); 1 a
 * runtime failure, or a created refund that FAILED; 2 bad input (also a
 * validationError from Wix); 3 Wix refused it with an application error.
 */
int	refundcmd_create(struct wixapi *w, struct store *st,
	    const struct refundcmd_options *o, FILE *in, FILE *out,
	    FILE *err);

/*
 * The `refund` command line: argv[0] is "refund", then [-c FILE] create
 * --instance ID --charge ID [--amount DEC --currency CUR] [--reason TEXT]
 * [--note TEXT] [--yes] [--json].  Loads the config, builds the REST
 * client from [wix] and opens the store.  Returns the exit status.
 */
int	refundcmd_main(int argc, char *argv[]);

#endif
