/*
 * refund.h: the Wix Refund entity, and the rule for which version wins.
 */
#ifndef RS_REFUND_H
#define RS_REFUND_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util/status.h"

/*
 * A refund as we store it.  Every string is owned by the struct and
 * released by refund_cleanup(); optional ones are NULL when absent.
 */
struct refund {
	char	*id;		/* Wix refund id; required */
	char	*charge_id;	/* required */
	char	*currency;	/* currencyCode, falling back to currency;
				   three upper-case letters; required */
	char	*amount;	/* decimal text exactly as sent; required */
	bool	 amount_exact;	/* amount_minor is meaningful */
	int64_t	 amount_minor;	/* exact minor units if amount_exact */
	char	*status;	/* PENDING, SUCCEEDED, ... as sent; required */
	bool	 has_revision;
	int64_t	 revision;	/* Wix revision (sent as a string) */
	char	*created_date;	/* ISO-8601 text, optional */
	char	*updated_date;	/* ISO-8601 text, optional */
	char	*returned_application_fee; /* decimal text, optional */
	char	*returned_processing_fee;  /* decimal text, optional */
	char	*body;		/* the whole entity, compact JSON */
};

/*
 * Read a Refund entity object.  Required: id, chargeId, currencyCode or
 * currency, amount (a decimal string), status (a string).  revision, if
 * present, is a string holding an int64 (as Wix sends it) or an integer
 * number of at most 15 digits (REFUND_MAX_NUMERIC_REVISION): cJSON
 * prints a longer one rounded (5999999999999999 as 6e+15), so the stored
 * body would carry another revision than the one stored.  Fees, if
 * present, are decimal strings.  Dates, if present, are ISO-8601 strings.
 * Returns RS_OK and fills *out, or RS_ERR_INPUT with a static reason in
 * *why and *out zeroed.  Caller cleans *out with refund_cleanup().
 */
#define REFUND_MAX_NUMERIC_REVISION	INT64_C(999999999999999)
enum rs_status	refund_from_json(const cJSON *entity, struct refund *out,
		    const char **why /* OUT */);
void		refund_cleanup(struct refund *r);

/* What orders two versions of one refund. */
struct refund_version {
	bool		 has_revision;
	int64_t		 revision;
	bool		 has_sequence;
	int64_t		 sequence;	/* the event's entityEventSequence */
	const char	*updated_date;	/* ISO-8601 or NULL */
};

/*
 * SPEC §4: is incoming newer than stored?  A higher revision wins when
 * both have one.  Otherwise the higher entityEventSequence when both have
 * one and they differ, otherwise the later updatedDate when both parse
 * and differ.  Anything else is a tie, and on a tie the stored row stays,
 * so this returns false.  Status never decides.
 */
bool		refund_version_newer(const struct refund_version *incoming,
		    const struct refund_version *stored);

#endif
