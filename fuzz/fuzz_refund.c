/*
 * fuzz_refund.c: libFuzzer target for the Refund entity parser.
 *
 * Input: JSON text, parsed strictly, then refund_from_json().
 * Invariants: a refused entity leaves *out zeroed with a reason; an
 * accepted one has every required field, a well-formed currency and
 * amount (no acceptance of malformed money), exact minor units that
 * money_to_minor() agrees with, and a body that round-trips: parsing it
 * again gives the same refund.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domain/json.h"
#include "domain/money.h"
#include "domain/refund.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static int
str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
check_refund(const struct refund *r)
{
	int64_t minor;

	CHECK(r->id != NULL && r->charge_id != NULL);
	CHECK(r->currency != NULL && money_currency_wellformed(r->currency));
	CHECK(r->amount != NULL && money_decimal_wellformed(r->amount));
	CHECK(r->status != NULL && r->body != NULL);
	if (r->amount_exact) {
		CHECK(money_to_minor(r->amount, r->currency, &minor) == RS_OK);
		CHECK(minor == r->amount_minor);
	}
	if (r->returned_application_fee != NULL)
		CHECK(money_decimal_wellformed(r->returned_application_fee));
	if (r->returned_processing_fee != NULL)
		CHECK(money_decimal_wellformed(r->returned_processing_fee));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct refund r, again;
	cJSON *root = NULL, *root2 = NULL;
	const char *why = NULL;
	enum rs_status st;

	if (json_parse_strict((const char *)data, size, JSON_MAX_DEPTH, &root,
	    &why) != RS_OK) {
		CHECK(why != NULL);
		return 0;
	}
	why = NULL;
	st = refund_from_json(root, &r, &why);
	if (st != RS_OK) {
		CHECK(st == RS_ERR_INPUT && why != NULL);
		CHECK(r.id == NULL && r.amount == NULL && r.body == NULL);
		refund_cleanup(&r);
		goto out;
	}
	check_refund(&r);

	/* Round-trip: the stored body is the entity again. */
	CHECK(json_parse_strict(r.body, strlen(r.body), JSON_MAX_DEPTH, &root2,
	    &why) == RS_OK);
	CHECK(refund_from_json(root2, &again, &why) == RS_OK);
	CHECK(str_eq(r.id, again.id) && str_eq(r.charge_id, again.charge_id));
	CHECK(str_eq(r.currency, again.currency));
	CHECK(str_eq(r.amount, again.amount) && str_eq(r.status, again.status));
	CHECK(r.amount_exact == again.amount_exact &&
	    r.amount_minor == again.amount_minor);
	CHECK(r.has_revision == again.has_revision &&
	    r.revision == again.revision);
	CHECK(str_eq(r.created_date, again.created_date));
	CHECK(str_eq(r.updated_date, again.updated_date));
	CHECK(str_eq(r.body, again.body));
	refund_cleanup(&again);
	refund_cleanup(&r);
	cJSON_Delete(root2);
out:
	cJSON_Delete(root);
	return 0;
}
