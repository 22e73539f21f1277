/*
 * refund.c: the Wix Refund entity, and which of two versions wins.
 *
 * refund_from_json() copies what we store out of a strictly parsed
 * entity (WIX.md §2): keys are matched case-sensitively, the amount must
 * be a decimal string and is converted exactly (never through floating
 * point), and the whole entity is kept as compact JSON.  An amount we cannot
 * express in minor units (unknown currency, too many decimals, too
 * large) is not an error: the text is kept and amount_exact is false.
 * refund_version_newer() is SPEC §4 and nothing else.  Pure functions,
 * safe from any thread.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "domain/json.h"
#include "domain/money.h"
#include "domain/refund.h"
#include "util/isotime.h"
#include "util/xmalloc.h"

/* A required non-empty string member, or NULL. */
static const char *
req_string(const cJSON *obj, const char *key)
{
	const char *s = json_get_string(obj, key);

	return s != NULL && *s != '\0' ? s : NULL;
}

/*
 * An optional string member: absent or null leaves *out NULL; a string is
 * copied; anything else is RS_ERR_INPUT.
 */
static enum rs_status
opt_string(const cJSON *obj, const char *key, char **out /* OUT */)
{
	const cJSON *item = json_get(obj, key);

	if (item == NULL || cJSON_IsNull(item))
		return RS_OK;
	if (!cJSON_IsString(item))
		return RS_ERR_INPUT;
	*out = xstrdup(item->valuestring);
	return RS_OK;
}

/* Like opt_string(), and the string must be a well-formed decimal. */
static enum rs_status
opt_decimal(const cJSON *obj, const char *key, char **out /* OUT */)
{
	const cJSON *item = json_get(obj, key);

	if (item == NULL || cJSON_IsNull(item))
		return RS_OK;
	if (!cJSON_IsString(item) ||
	    !money_decimal_wellformed(item->valuestring))
		return RS_ERR_INPUT;
	*out = xstrdup(item->valuestring);
	return RS_OK;
}

enum rs_status
refund_from_json(const cJSON *entity, struct refund *out, const char **why)
{
	struct refund r;
	const cJSON *item;
	const char *s, *reason = NULL;

	memset(&r, 0, sizeof(r));
	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(entity)) {
		reason = "refund is not an object";
		goto out;
	}
	if ((s = req_string(entity, "id")) == NULL) {
		reason = "refund id missing";
		goto out;
	}
	r.id = xstrdup(s);
	if ((s = req_string(entity, "chargeId")) == NULL) {
		reason = "refund chargeId missing";
		goto out;
	}
	r.charge_id = xstrdup(s);

	/* currencyCode; older payloads use currency. */
	item = json_get(entity, "currencyCode");
	if (item == NULL || cJSON_IsNull(item) || (cJSON_IsString(item) &&
	    *item->valuestring == '\0'))
		item = json_get(entity, "currency");
	if (!cJSON_IsString(item) ||
	    !money_currency_wellformed(item->valuestring)) {
		reason = "bad currency code";
		goto out;
	}
	r.currency = xstrdup(item->valuestring);

	item = json_get(entity, "amount");
	if (!cJSON_IsString(item) ||
	    !money_decimal_wellformed(item->valuestring)) {
		reason = "amount is not a decimal string";
		goto out;
	}
	r.amount = xstrdup(item->valuestring);
	/* RS_ERR_RANGE: kept as text, amount_minor is NULL in the store. */
	r.amount_exact = money_to_minor(r.amount, r.currency,
	    &r.amount_minor) == RS_OK;
	if (!r.amount_exact)
		r.amount_minor = 0;

	if ((s = req_string(entity, "status")) == NULL) {
		reason = "refund status missing";
		goto out;
	}
	r.status = xstrdup(s);

	switch (json_get_int64(entity, "revision", &r.revision)) {
	case RS_OK:
		/* A number must survive cJSON's printer in the body. */
		if (cJSON_IsNumber(json_get(entity, "revision")) &&
		    (r.revision > REFUND_MAX_NUMERIC_REVISION ||
		    r.revision < -REFUND_MAX_NUMERIC_REVISION)) {
			reason = "bad revision";
			goto out;
		}
		r.has_revision = true;
		break;
	case RS_ERR_NOTFOUND:
		break;
	default:
		reason = "bad revision";
		goto out;
	}
	if (opt_decimal(entity, "returnedApplicationFee",
	    &r.returned_application_fee) != RS_OK) {
		reason = "bad returnedApplicationFee";
		goto out;
	}
	if (opt_decimal(entity, "returnedProcessingFee",
	    &r.returned_processing_fee) != RS_OK) {
		reason = "bad returnedProcessingFee";
		goto out;
	}
	/* Dates are kept as sent; one that does not parse never compares. */
	if (opt_string(entity, "createdDate", &r.created_date) != RS_OK) {
		reason = "createdDate is not a string";
		goto out;
	}
	if (opt_string(entity, "updatedDate", &r.updated_date) != RS_OK) {
		reason = "updatedDate is not a string";
		goto out;
	}
	r.body = json_print(entity);
out:
	if (reason != NULL) {
		refund_cleanup(&r);
		if (why != NULL)
			*why = reason;
		return RS_ERR_INPUT;
	}
	*out = r;
	return RS_OK;
}

void
refund_cleanup(struct refund *r)
{
	if (r == NULL)
		return;
	free(r->id);
	free(r->charge_id);
	free(r->currency);
	free(r->amount);
	free(r->status);
	free(r->created_date);
	free(r->updated_date);
	free(r->returned_application_fee);
	free(r->returned_processing_fee);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

bool
refund_version_newer(const struct refund_version *incoming,
    const struct refund_version *stored)
{
	struct isotime a, b;
	int c;

	if (incoming == NULL || stored == NULL)
		return false;
	/* Both revised: the revision alone decides; equal is a tie. */
	if (incoming->has_revision && stored->has_revision)
		return incoming->revision > stored->revision;
	if (incoming->has_sequence && stored->has_sequence &&
	    incoming->sequence != stored->sequence)
		return incoming->sequence > stored->sequence;
	/* Compared as instants: text order is wrong across fractions. */
	if (incoming->updated_date != NULL && stored->updated_date != NULL &&
	    isotime_parse(incoming->updated_date, &a) == RS_OK &&
	    isotime_parse(stored->updated_date, &b) == RS_OK &&
	    (c = isotime_cmp(&a, &b)) != 0)
		return c > 0;
	/* A tie: the stored row stays.  Status never decides. */
	return false;
}
