/*
 * fuzz_event.c: libFuzzer target for the three-layer envelope decoder.
 *
 * Input: the JWT claims (layer A) as JSON text, parsed strictly, then
 * event_decode().  Invariants: a refusal carries a reason; an accepted
 * event has its instance id and type; a refund event has an event id and
 * a refund entity with well-formed money whose minor units agree with
 * money_to_minor(); the kind matches the event type.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domain/event.h"
#include "domain/json.h"
#include "domain/money.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct event ev;
	cJSON *claims = NULL;
	const char *why = NULL;
	enum rs_status st;
	int64_t minor;

	if (json_parse_strict((const char *)data, size, JSON_MAX_DEPTH,
	    &claims, &why) != RS_OK) {
		CHECK(why != NULL);
		return 0;
	}
	why = NULL;
	memset(&ev, 0xa5, sizeof(ev));
	st = event_decode(claims, &ev, &why);
	if (st != RS_OK) {
		CHECK(st == RS_ERR_INPUT && why != NULL);
		goto out;
	}
	CHECK(ev.instance_id != NULL && ev.event_type != NULL);
	switch (ev.kind) {
	case EVENT_REFUND:
		CHECK(strcmp(ev.event_type, EVENT_TYPE_REFUND_CREATED) == 0 ||
		    strcmp(ev.event_type, EVENT_TYPE_REFUND_UPDATED) == 0);
		CHECK(ev.event_id != NULL);
		CHECK(ev.refund.id != NULL && ev.refund.charge_id != NULL);
		CHECK(ev.refund.status != NULL && ev.refund.body != NULL);
		CHECK(money_currency_wellformed(ev.refund.currency));
		CHECK(money_decimal_wellformed(ev.refund.amount));
		if (ev.refund.amount_exact) {
			CHECK(money_to_minor(ev.refund.amount,
			    ev.refund.currency, &minor) == RS_OK);
			CHECK(minor == ev.refund.amount_minor);
		}
		break;
	case EVENT_APP_INSTALLED:
		CHECK(strcmp(ev.event_type, EVENT_TYPE_APP_INSTALLED) == 0);
		break;
	case EVENT_APP_REMOVED:
		CHECK(strcmp(ev.event_type, EVENT_TYPE_APP_REMOVED) == 0);
		break;
	case EVENT_IGNORED:
		break;
	default:
		abort();
	}
out:
	event_cleanup(&ev);
	cJSON_Delete(claims);
	return 0;
}
