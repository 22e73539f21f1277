/*
 * check_event.c: decoding the three webhook layers, the Refund entity,
 * and the rule for which version of a refund wins.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "domain/event.h"
#include "domain/json.h"
#include "domain/refund.h"
#include "util/xmalloc.h"

#define INSTANCE	"3bbcabc7-ebb7-4fc8-8829-13ea0e142123"

/* A compact Refund entity as Wix sends it. */
#define ENTITY \
	"{\"id\":\"r-1\",\"chargeId\":\"ch-1\",\"currencyCode\":\"USD\"," \
	"\"amount\":\"12.95\",\"status\":\"SUCCEEDED\",\"revision\":\"3\"," \
	"\"createdDate\":\"2024-05-01T10:20:30Z\"," \
	"\"updatedDate\":\"2024-05-01T10:20:31.5Z\"," \
	"\"returnedApplicationFee\":\"0.10\",\"full\":false," \
	"\"statusInfo\":{\"code\":\"1013\"}}"

/* Layer C of Refund Created around an entity member text. */
#define CREATED_C(member) \
	"{\"id\":\"ev-1\",\"entityFqdn\":\"wix.payments.refunds.v1.refund\"," \
	"\"slug\":\"created\",\"entityId\":\"r-1\"," \
	"\"eventTime\":\"2024-05-01T10:20:31.272823Z\"," \
	"\"triggeredByAnonymizeRequest\":false," \
	"\"entityEventSequence\":\"7\",\"createdEvent\":{" member "}}"

/* The real AppInstalled claims (fixtures/wix-real/app-installed.jwt). */
static const char app_installed_a[] =
    "{\"data\":\"{\\\"data\\\":\\\"{\\\\\\\"appId\\\\\\\":\\\\\\\""
    "5bc2062d-010b-448c-a62a-d6bb269c5a4c\\\\\\\", \\\\\\\""
    "originInstanceId\\\\\\\":\\\\\\\""
    "07864c16-3a6f-4dd2-9973-028705762b2c\\\\\\\"}\\\",\\\"instanceId\\\":"
    "\\\"3bbcabc7-ebb7-4fc8-8829-13ea0e142123\\\",\\\"eventType\\\":"
    "\\\"AppInstalled\\\"}\",\"iat\":1640788554,\"exp\":1644388554}";
/* Its layer B, decoded by hand. */
static const char app_installed_b[] =
    "{\"data\":\"{\\\"appId\\\":\\\"5bc2062d-010b-448c-a62a-d6bb269c5a4c"
    "\\\", \\\"originInstanceId\\\":\\\""
    "07864c16-3a6f-4dd2-9973-028705762b2c\\\"}\",\"instanceId\":\""
    "3bbcabc7-ebb7-4fc8-8829-13ea0e142123\",\"eventType\":"
    "\"AppInstalled\"}";

/* JSON string literal of s (quoted and escaped).  Caller frees. */
static char *
quote(const char *s)
{
	cJSON *str = cJSON_CreateString(s);
	char *q = cJSON_PrintUnformatted(str);

	cJSON_Delete(str);
	return q;
}

/* Layer A around the text of layer B.  Caller deletes. */
static cJSON *
claims_b(const char *b_text)
{
	cJSON *a = cJSON_CreateObject();

	cJSON_AddStringToObject(a, "data", b_text);
	cJSON_AddNumberToObject(a, "iat", 1754753184);
	cJSON_AddNumberToObject(a, "exp", 1758353184);
	return a;
}

/* Layers A and B around the text of layer C.  Caller deletes. */
static cJSON *
claims_c(const char *type, const char *c_text)
{
	cJSON *b = cJSON_CreateObject(), *a;
	char *bt;

	cJSON_AddStringToObject(b, "data", c_text);
	cJSON_AddStringToObject(b, "instanceId", INSTANCE);
	cJSON_AddStringToObject(b, "eventType", type);
	bt = cJSON_PrintUnformatted(b);
	a = claims_b(bt);
	free(bt);
	cJSON_Delete(b);
	return a;
}

/* Decode; check the status; on failure return the reason. */
static const char *
decode(const cJSON *claims, struct event *ev, enum rs_status want)
{
	const char *why = NULL;
	enum rs_status st = event_decode(claims, ev, &why);

	ck_assert_msg(st == want, "status %d (%s), want %d", (int)st,
	    why != NULL ? why : "-", (int)want);
	if (st != RS_OK) {
		ck_assert_ptr_nonnull(why);
		/* On failure nothing is left to the caller but cleanup. */
		event_cleanup(ev);
	}
	return why;
}

/* Layer C text, expecting RS_ERR_INPUT with reason. */
static void
expect_bad_c(const char *type, const char *c_text, const char *reason)
{
	struct event ev;
	cJSON *a = claims_c(type, c_text);

	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT), reason);
	cJSON_Delete(a);
}

/* Layer B text, expecting RS_ERR_INPUT with reason. */
static void
expect_bad_b(const char *b_text, const char *reason)
{
	struct event ev;
	cJSON *a = claims_b(b_text);

	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT), reason);
	cJSON_Delete(a);
}

/* A refund entity text inside a created event (object form). */
static void
expect_bad_entity(const char *entity, const char *reason)
{
	char *c = xasprintf(CREATED_C("\"entity\":%s"), entity);

	expect_bad_c(EVENT_TYPE_REFUND_CREATED, c, reason);
	free(c);
}

/* Decode a created event with this entity; RS_OK expected. */
static void
decode_entity(const char *entity, struct event *ev)
{
	char *c = xasprintf(CREATED_C("\"entity\":%s"), entity);
	cJSON *a = claims_c(EVENT_TYPE_REFUND_CREATED, c);

	decode(a, ev, RS_OK);
	cJSON_Delete(a);
	free(c);
}

static void
check_refund_fields(const struct event *ev)
{
	ck_assert_int_eq(ev->kind, EVENT_REFUND);
	ck_assert_str_eq(ev->instance_id, INSTANCE);
	ck_assert_str_eq(ev->refund.id, "r-1");
	ck_assert_str_eq(ev->refund.charge_id, "ch-1");
	ck_assert_str_eq(ev->refund.currency, "USD");
	ck_assert_str_eq(ev->refund.amount, "12.95");
	ck_assert(ev->refund.amount_exact);
	ck_assert_int_eq(ev->refund.amount_minor, 1295);
	ck_assert_str_eq(ev->refund.status, "SUCCEEDED");
	ck_assert(ev->refund.has_revision);
	ck_assert_int_eq(ev->refund.revision, 3);
	ck_assert_str_eq(ev->refund.created_date, "2024-05-01T10:20:30Z");
	ck_assert_str_eq(ev->refund.updated_date, "2024-05-01T10:20:31.5Z");
	ck_assert_str_eq(ev->refund.returned_application_fee, "0.10");
	ck_assert_ptr_null(ev->refund.returned_processing_fee);
	ck_assert_str_eq(ev->refund.body, ENTITY);
}

START_TEST(test_created_object)
{
	struct event ev;
	cJSON *a = claims_c(EVENT_TYPE_REFUND_CREATED,
	    CREATED_C("\"entity\":" ENTITY));

	decode(a, &ev, RS_OK);
	check_refund_fields(&ev);
	ck_assert_str_eq(ev.event_type, EVENT_TYPE_REFUND_CREATED);
	ck_assert_str_eq(ev.event_id, "ev-1");
	ck_assert_str_eq(ev.entity_id, "r-1");
	ck_assert_str_eq(ev.event_time, "2024-05-01T10:20:31.272823Z");
	ck_assert(ev.has_sequence);
	ck_assert_int_eq(ev.sequence, 7);
	ck_assert_ptr_null(ev.app_id);
	event_cleanup(&ev);
	/* Cleanup leaves it empty, and a second one is harmless. */
	ck_assert_ptr_null(ev.event_id);
	ck_assert_ptr_null(ev.refund.body);
	event_cleanup(&ev);
	event_cleanup(NULL);
	cJSON_Delete(a);
}
END_TEST

START_TEST(test_created_as_json)
{
	struct event ev;
	char *q = quote(ENTITY);
	char *c = xasprintf(CREATED_C("\"entityAsJson\":%s"), q);
	cJSON *a = claims_c(EVENT_TYPE_REFUND_CREATED, c);

	decode(a, &ev, RS_OK);
	check_refund_fields(&ev);
	ck_assert_str_eq(ev.event_id, "ev-1");
	event_cleanup(&ev);
	cJSON_Delete(a);
	free(c);
	free(q);
}
END_TEST

START_TEST(test_updated_object)
{
	struct event ev;
	cJSON *a = claims_c(EVENT_TYPE_REFUND_UPDATED,
	    "{\"id\":\"ev-2\",\"entityId\":\"r-1\",\"slug\":\"updated\","
	    "\"entityEventSequence\":\"8\",\"updatedEvent\":{"
	    "\"currentEntity\":" ENTITY ",\"modifiedFields\":"
	    "{\"status\":\"PENDING\"}}}");

	decode(a, &ev, RS_OK);
	check_refund_fields(&ev);
	ck_assert_str_eq(ev.event_type, EVENT_TYPE_REFUND_UPDATED);
	ck_assert_str_eq(ev.event_id, "ev-2");
	ck_assert_int_eq(ev.sequence, 8);
	ck_assert_ptr_null(ev.event_time);
	event_cleanup(&ev);
	cJSON_Delete(a);
}
END_TEST

START_TEST(test_updated_as_json)
{
	struct event ev;
	char *q = quote(ENTITY);
	char *c = xasprintf("{\"id\":\"ev-2\",\"updatedEvent\":{"
	    "\"currentEntityAsJson\":%s}}", q);
	cJSON *a = claims_c(EVENT_TYPE_REFUND_UPDATED, c);

	decode(a, &ev, RS_OK);
	check_refund_fields(&ev);
	ck_assert_str_eq(ev.event_id, "ev-2");
	ck_assert_ptr_null(ev.entity_id);
	ck_assert(!ev.has_sequence);
	event_cleanup(&ev);
	cJSON_Delete(a);
	free(c);
	free(q);
}
END_TEST

START_TEST(test_wrong_wrapper)
{
	/* Created needs createdEvent, updated needs updatedEvent. */
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, "{\"id\":\"ev-1\","
	    "\"updatedEvent\":{\"currentEntity\":" ENTITY "}}",
	    "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_UPDATED, CREATED_C("\"entity\":"
	    ENTITY), "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_UPDATED, "{\"id\":\"ev-1\","
	    "\"updatedEvent\":{\"entity\":" ENTITY "}}",
	    "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C(""),
	    "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C("\"entity\":[]"),
	    "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C("\"entity\":null"),
	    "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C("\"entity\":42"),
	    "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED,
	    "{\"id\":\"ev-1\",\"createdEvent\":\"x\"}",
	    "refund entity missing");
	/* JSON text that is not an object. */
	expect_bad_c(EVENT_TYPE_REFUND_CREATED,
	    CREATED_C("\"entityAsJson\":\"[1]\""), "refund entity missing");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED,
	    CREATED_C("\"entityAsJson\":\"{\\\"id\\\":\""),
	    "syntax error");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED,
	    CREATED_C("\"entityAsJson\":\"\""), "empty");
}
END_TEST

START_TEST(test_pretty_layer_c)
{
	struct event ev;
	cJSON *a = claims_c(EVENT_TYPE_REFUND_UPDATED,
	    "{\n  \"id\" : \"ev-9\", \n"
	    "  \"entityFqdn\" : \"wix.payments.refunds.v1.refund\", \n"
	    "  \"slug\" : \"updated\", \n"
	    "  \"entityId\" : \"r-1\", \n"
	    "  \"entityEventSequence\" : \"12\" , \n"
	    "  \"updatedEvent\" : {\n"
	    "    \"currentEntity\" : {\n"
	    "      \"id\" : \"r-1\", \n"
	    "      \"chargeId\" : \"ch-1\", \n"
	    "      \"currencyCode\" : \"JPY\", \n"
	    "      \"amount\" : \"1000\", \n"
	    "      \"status\" : \"PENDING\" \n"
	    "    } \n  } \n}\n");

	decode(a, &ev, RS_OK);
	ck_assert_str_eq(ev.event_id, "ev-9");
	ck_assert_int_eq(ev.sequence, 12);
	ck_assert_str_eq(ev.refund.currency, "JPY");
	ck_assert_int_eq(ev.refund.amount_minor, 1000);
	ck_assert(!ev.refund.has_revision);
	ck_assert_str_eq(ev.refund.body, "{\"id\":\"r-1\",\"chargeId\":"
	    "\"ch-1\",\"currencyCode\":\"JPY\",\"amount\":\"1000\","
	    "\"status\":\"PENDING\"}");
	event_cleanup(&ev);
	cJSON_Delete(a);
}
END_TEST

/* The stored body keeps every number as Wix wrote it (SPEC: the full
 * entity; docs/exporters.md: never rounded through a double). */
START_TEST(test_body_numbers_as_sent)
{
	struct event ev;
	cJSON *a = claims_c(EVENT_TYPE_REFUND_UPDATED,
	    "{\"id\":\"ev-n\",\"slug\":\"updated\",\"updatedEvent\":"
	    "{\"currentEntity\":{\"id\":\"r-n\",\"chargeId\":\"ch-1\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1.00\",\"status\":"
	    "\"SUCCEEDED\",\"revision\":3,\"x\":12345678901234567890.123,"
	    "\"y\":1e5,\"z\":[0.10]}}}");

	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.refund.revision, 3);
	ck_assert_str_eq(ev.refund.body, "{\"id\":\"r-n\",\"chargeId\":"
	    "\"ch-1\",\"currencyCode\":\"USD\",\"amount\":\"1.00\","
	    "\"status\":\"SUCCEEDED\",\"revision\":3,"
	    "\"x\":12345678901234567890.123,\"y\":1e5,\"z\":[0.10]}");
	event_cleanup(&ev);
	cJSON_Delete(a);
}
END_TEST

START_TEST(test_bad_layer_a)
{
	struct event ev;
	cJSON *a;

	a = cJSON_CreateArray();
	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT),
	    "claims are not an object");
	cJSON_Delete(a);
	ck_assert_str_eq(decode(NULL, &ev, RS_ERR_INPUT),
	    "claims are not an object");
	a = cJSON_CreateObject();
	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT),
	    "claims data is not a string");
	cJSON_AddNumberToObject(a, "data", 5);
	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT),
	    "claims data is not a string");
	cJSON_Delete(a);
	a = cJSON_CreateObject();
	cJSON_AddItemToObject(a, "data", cJSON_CreateObject());
	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT),
	    "claims data is not a string");
	cJSON_Delete(a);
	/* "Data" is not "data". */
	a = cJSON_CreateObject();
	cJSON_AddStringToObject(a, "Data", app_installed_b);
	ck_assert_str_eq(decode(a, &ev, RS_ERR_INPUT),
	    "claims data is not a string");
	cJSON_Delete(a);
}
END_TEST

START_TEST(test_bad_layer_b)
{
	expect_bad_b("not json", "syntax error");
	expect_bad_b("", "empty");
	expect_bad_b("[1]", "claims data is not an object");
	expect_bad_b("\"str\"", "claims data is not an object");
	expect_bad_b("{\"data\":\"{}\",\"eventType\":\"AppInstalled\"}",
	    "instanceId missing");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"\","
	    "\"eventType\":\"AppInstalled\"}", "instanceId missing");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":5,"
	    "\"eventType\":\"AppInstalled\"}", "instanceId missing");
	expect_bad_b("{\"data\":\"{}\",\"InstanceId\":\"i\","
	    "\"eventType\":\"AppInstalled\"}", "instanceId missing");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\"}",
	    "eventType missing");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\","
	    "\"eventType\":\"\"}", "eventType missing");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\","
	    "\"eventType\":null}", "eventType missing");
	/* B.data must be a string holding JSON. */
	expect_bad_b("{\"instanceId\":\"i\",\"eventType\":\""
	    EVENT_TYPE_REFUND_CREATED "\"}", "event data is not a string");
	expect_bad_b("{\"data\":{\"id\":\"ev-1\"},\"instanceId\":\"i\","
	    "\"eventType\":\"" EVENT_TYPE_REFUND_CREATED "\"}",
	    "event data is not a string");
	expect_bad_b("{\"data\":\"nope\",\"instanceId\":\"i\","
	    "\"eventType\":\"" EVENT_TYPE_REFUND_CREATED "\"}",
	    "syntax error");
	expect_bad_b("{\"data\":\"[]\",\"instanceId\":\"i\","
	    "\"eventType\":\"" EVENT_TYPE_REFUND_CREATED "\"}",
	    "event data is not an object");
	/* Strictness of layer B itself. */
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\","
	    "\"instanceId\":\"j\",\"eventType\":\"AppInstalled\"}",
	    "duplicate key");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\","
	    "\"eventType\":\"AppInstalled\"} x", "trailing data");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\xff\","
	    "\"eventType\":\"AppInstalled\"}", "invalid utf-8");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\\u0000\","
	    "\"eventType\":\"AppInstalled\"}", "\\u0000 escape");
}
END_TEST

START_TEST(test_bad_layer_c)
{
	const char *t = EVENT_TYPE_REFUND_CREATED;

	expect_bad_c(t, "not json", "syntax error");
	expect_bad_c(t, "", "empty");
	expect_bad_c(t, "[]", "event data is not an object");
	expect_bad_c(t, CREATED_C("\"entity\":" ENTITY) " x",
	    "trailing data");
	expect_bad_c(t, CREATED_C("\"entity\":" ENTITY) "{}",
	    "trailing data");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"id\":\"ev-2\",\"createdEvent\":"
	    "{\"entity\":" ENTITY "}}", "duplicate key");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"x\":\"\\ud800\"}",
	    "unpaired surrogate");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"x\":\"\\u0000\"}",
	    "\\u0000 escape");
	expect_bad_c(t, "{\"id\":01}", "leading zero");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"n\":1e999}",
	    "number out of range");
	expect_bad_c(t, "{\"a\":[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}",
	    "nesting too deep");
	/*
	 * Raw invalid UTF-8 meant for layer C already breaks layer B, the
	 * string that carries it.
	 */
	expect_bad_c(t, "{\"id\":\"ev-\xc0\xaf\"}", "invalid utf-8");
	expect_bad_c(t, "{\"id\":\"ev-\xed\xa0\x80\"}", "invalid utf-8");
}
END_TEST

START_TEST(test_bad_event_fields)
{
	const char *t = EVENT_TYPE_REFUND_CREATED;

	expect_bad_c(t, "{\"createdEvent\":{\"entity\":" ENTITY "}}",
	    "event id missing");
	expect_bad_c(t, "{\"id\":\"\",\"createdEvent\":{\"entity\":" ENTITY
	    "}}", "event id missing");
	expect_bad_c(t, "{\"id\":17,\"createdEvent\":{\"entity\":" ENTITY
	    "}}", "event id missing");
	expect_bad_c(t, "{\"ID\":\"ev-1\",\"createdEvent\":{\"entity\":"
	    ENTITY "}}", "event id missing");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"entityId\":5,\"createdEvent\":"
	    "{\"entity\":" ENTITY "}}", "entityId is not a string");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"eventTime\":5,\"createdEvent\":"
	    "{\"entity\":" ENTITY "}}", "eventTime is not a string");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"entityId\":\"r-2\","
	    "\"createdEvent\":{\"entity\":" ENTITY "}}",
	    "entityId does not match refund id");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"entityEventSequence\":\"x\","
	    "\"createdEvent\":{\"entity\":" ENTITY "}}",
	    "bad entityEventSequence");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"entityEventSequence\":1.5,"
	    "\"createdEvent\":{\"entity\":" ENTITY "}}",
	    "bad entityEventSequence");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"entityEventSequence\":true,"
	    "\"createdEvent\":{\"entity\":" ENTITY "}}",
	    "bad entityEventSequence");
	expect_bad_c(t, "{\"id\":\"ev-1\",\"entityEventSequence\":"
	    "\"99999999999999999999\",\"createdEvent\":{\"entity\":" ENTITY
	    "}}", "bad entityEventSequence");
}
END_TEST

START_TEST(test_sequence_forms)
{
	struct event ev;
	cJSON *a;

	a = claims_c(EVENT_TYPE_REFUND_CREATED, "{\"id\":\"ev-1\","
	    "\"entityEventSequence\":12,\"createdEvent\":{\"entity\":"
	    ENTITY "}}");
	decode(a, &ev, RS_OK);
	ck_assert(ev.has_sequence);
	ck_assert_int_eq(ev.sequence, 12);
	event_cleanup(&ev);
	cJSON_Delete(a);
	a = claims_c(EVENT_TYPE_REFUND_CREATED, "{\"id\":\"ev-1\","
	    "\"entityEventSequence\":\"9223372036854775807\","
	    "\"createdEvent\":{\"entity\":" ENTITY "}}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.sequence, INT64_MAX);
	event_cleanup(&ev);
	cJSON_Delete(a);
	a = claims_c(EVENT_TYPE_REFUND_CREATED, "{\"id\":\"ev-1\","
	    "\"entityEventSequence\":null,\"entityId\":null,"
	    "\"createdEvent\":{\"entity\":" ENTITY "}}");
	decode(a, &ev, RS_OK);
	ck_assert(!ev.has_sequence);
	ck_assert_ptr_null(ev.entity_id);
	event_cleanup(&ev);
	cJSON_Delete(a);
}
END_TEST

START_TEST(test_bad_entity)
{
	/* Required fields. */
	expect_bad_entity("{\"chargeId\":\"c\",\"currencyCode\":\"USD\","
	    "\"amount\":\"1\",\"status\":\"PENDING\"}", "refund id missing");
	expect_bad_entity("{\"id\":\"\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"USD\",\"amount\":\"1\",\"status\":\"PENDING\"}",
	    "refund id missing");
	expect_bad_entity("{\"Id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\"}", "refund id missing");
	expect_bad_entity("{\"id\":\"r-1\",\"currencyCode\":\"USD\","
	    "\"amount\":\"1\",\"status\":\"PENDING\"}",
	    "refund chargeId missing");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"amount\":\"1\",\"status\":\"PENDING\"}", "bad currency code");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"usd\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\"}", "bad currency code");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":840,\"currency\":\"USD\",\"amount\":\"1\","
	    "\"status\":\"PENDING\"}", "bad currency code");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"status\":\"PENDING\"}",
	    "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\"}",
	    "refund status missing");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":7}",
	    "refund status missing");

	/* The amount: a JSON number, or a string in a bad format. */
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":12.95,\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"12,95\",\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"-1\",\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1e3\",\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"\",\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":null,\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"Amount\":\"1\",\"status\":"
	    "\"PENDING\"}", "amount is not a decimal string");

	/* Optional fields of the wrong kind. */
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"revision\":\"x\"}", "bad revision");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"revision\":1.5}", "bad revision");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"revision\":\"01\"}", "bad revision");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"returnedApplicationFee\":\"1e2\"}",
	    "bad returnedApplicationFee");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"returnedProcessingFee\":0.5}",
	    "bad returnedProcessingFee");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"updatedDate\":1714558831}",
	    "updatedDate is not a string");
	expect_bad_entity("{\"id\":\"r-1\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\",\"createdDate\":{}}", "createdDate is not a string");

	/* Strictness inside the entity, in both wire forms. */
	expect_bad_entity("{\"id\":\"r-1\",\"id\":\"r-2\",\"chargeId\":\"c\","
	    "\"currencyCode\":\"USD\",\"amount\":\"1\",\"status\":"
	    "\"PENDING\"}", "duplicate key");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C("\"entityAsJson\":"
	    "\"{\\\"id\\\":\\\"r-1\\\",\\\"id\\\":\\\"r-2\\\"}\""),
	    "duplicate key");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C("\"entityAsJson\":"
	    "\"{\\\"id\\\":\\\"r-1\\\"} x\""), "trailing data");
	expect_bad_c(EVENT_TYPE_REFUND_CREATED, CREATED_C("\"entityAsJson\":"
	    "\"{\\\"id\\\":\\\"r\\\\u0000\\\"}\""), "\\u0000 escape");
	expect_bad_c(EVENT_TYPE_REFUND_UPDATED, "{\"id\":\"ev-1\","
	    "\"updatedEvent\":{\"currentEntityAsJson\":"
	    "\"{\\\"id\\\":\\\"r-1\\\",\\\"amount\\\":1}\"}}",
	    "refund chargeId missing");
}
END_TEST

START_TEST(test_entity_variants)
{
	struct event ev;

	/* Older payloads: currency instead of currencyCode. */
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currency\":"
	    "\"JPY\",\"amount\":\"1000\",\"status\":\"PENDING\","
	    "\"revision\":5}", &ev);
	ck_assert_str_eq(ev.refund.currency, "JPY");
	ck_assert(ev.refund.amount_exact);
	ck_assert_int_eq(ev.refund.amount_minor, 1000);
	ck_assert(ev.refund.has_revision);
	ck_assert_int_eq(ev.refund.revision, 5);
	ck_assert_ptr_null(ev.refund.created_date);
	ck_assert_ptr_null(ev.refund.updated_date);
	event_cleanup(&ev);

	/* currencyCode wins over currency; null or "" falls back. */
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"KWD\",\"currency\":\"USD\",\"amount\":\"1.234\",\"status\":"
	    "\"SUCCEEDED\"}", &ev);
	ck_assert_str_eq(ev.refund.currency, "KWD");
	ck_assert_int_eq(ev.refund.amount_minor, 1234);
	ck_assert(!ev.refund.has_revision);
	event_cleanup(&ev);
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "null,\"currency\":\"BHD\",\"amount\":\"1\",\"status\":\"X\"}",
	    &ev);
	ck_assert_str_eq(ev.refund.currency, "BHD");
	ck_assert_int_eq(ev.refund.amount_minor, 1000);
	event_cleanup(&ev);
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"\",\"currency\":\"CLF\",\"amount\":\"0.0001\",\"status\":"
	    "\"X\"}", &ev);
	ck_assert_str_eq(ev.refund.currency, "CLF");
	ck_assert_int_eq(ev.refund.amount_minor, 1);
	event_cleanup(&ev);

	/* Not representable: stored as text, amount_exact false. */
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"XYZ\",\"amount\":\"12.95\",\"status\":\"PENDING\"}", &ev);
	ck_assert_str_eq(ev.refund.amount, "12.95");
	ck_assert(!ev.refund.amount_exact);
	ck_assert_int_eq(ev.refund.amount_minor, 0);
	event_cleanup(&ev);
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"USD\",\"amount\":\"12.345\",\"status\":\"PENDING\"}", &ev);
	ck_assert(!ev.refund.amount_exact);
	event_cleanup(&ev);
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"USD\",\"amount\":\"92233720368547758.08\",\"status\":\"X\"}",
	    &ev);
	ck_assert(!ev.refund.amount_exact);
	ck_assert_str_eq(ev.refund.amount, "92233720368547758.08");
	event_cleanup(&ev);

	/* Unparsable dates are kept as sent; unknown statuses too. */
	decode_entity("{\"id\":\"r-1\",\"chargeId\":\"c\",\"currencyCode\":"
	    "\"USD\",\"amount\":\"1.00\",\"status\":\"STARTING\","
	    "\"updatedDate\":\"yesterday\",\"createdDate\":null,"
	    "\"returnedProcessingFee\":\"0.3\",\"revision\":null}", &ev);
	ck_assert_str_eq(ev.refund.updated_date, "yesterday");
	ck_assert_ptr_null(ev.refund.created_date);
	ck_assert_str_eq(ev.refund.status, "STARTING");
	ck_assert_str_eq(ev.refund.returned_processing_fee, "0.3");
	ck_assert(!ev.refund.has_revision);
	event_cleanup(&ev);
}
END_TEST

START_TEST(test_refund_from_json_direct)
{
	struct refund r;
	cJSON *e = NULL;
	const char *why = NULL;

	ck_assert_int_eq(json_parse_strict(ENTITY, strlen(ENTITY), 16, &e,
	    &why), RS_OK);
	ck_assert_int_eq(refund_from_json(e, &r, &why), RS_OK);
	ck_assert_str_eq(r.body, ENTITY);
	ck_assert_int_eq(r.amount_minor, 1295);
	refund_cleanup(&r);
	ck_assert_ptr_null(r.id);
	refund_cleanup(&r);
	refund_cleanup(NULL);
	/* Failure leaves *out zeroed. */
	cJSON_DeleteItemFromObjectCaseSensitive(e, "status");
	memset(&r, 0xff, sizeof(r));
	ck_assert_int_eq(refund_from_json(e, &r, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, "refund status missing");
	ck_assert_ptr_null(r.id);
	ck_assert_ptr_null(r.body);
	ck_assert(!r.has_revision);
	ck_assert_int_eq(refund_from_json(json_get(e, "id"), &r, &why),
	    RS_ERR_INPUT);
	ck_assert_str_eq(why, "refund is not an object");
	cJSON_Delete(e);
}
END_TEST

/*
 * A numeric revision must come back the same from the stored body:
 * 15 digits do, 16 are refused (cJSON would print 5999999999999999 as
 * 6e+15; the fuzzer found it), and a 16-digit string is fine.
 */
START_TEST(test_refund_numeric_revision)
{
	static const char *const ok[] = {
		"999999999999999", "-999999999999999", "\"5999999999999999\""
	};
	static const char *const bad[] = {
		"5999999999999999", "1000000000000000", "-1000000000000000"
	};
	struct refund r, again;
	cJSON *e, *e2;
	const char *why;
	char *text;
	size_t i;

	for (i = 0; i < 3; i++) {
		text = xasprintf("{\"id\":\"r\",\"chargeId\":\"c\","
		    "\"currency\":\"USD\",\"amount\":\"1\",\"status\":"
		    "\"SUCCEEDED\",\"revision\":%s}", ok[i]);
		e = NULL;
		ck_assert_int_eq(json_parse_strict(text, strlen(text), 16, &e,
		    &why), RS_OK);
		ck_assert_msg(refund_from_json(e, &r, &why) == RS_OK, "%s",
		    ok[i]);
		e2 = NULL;
		ck_assert_int_eq(json_parse_strict(r.body, strlen(r.body), 16,
		    &e2, &why), RS_OK);
		ck_assert_int_eq(refund_from_json(e2, &again, &why), RS_OK);
		ck_assert_msg(again.revision == r.revision, "%s: %lld != "
		    "%lld", ok[i], (long long)again.revision,
		    (long long)r.revision);
		refund_cleanup(&again);
		refund_cleanup(&r);
		cJSON_Delete(e2);
		cJSON_Delete(e);
		free(text);
	}
	for (i = 0; i < 3; i++) {
		text = xasprintf("{\"id\":\"r\",\"chargeId\":\"c\","
		    "\"currency\":\"USD\",\"amount\":\"1\",\"status\":"
		    "\"SUCCEEDED\",\"revision\":%s}", bad[i]);
		e = NULL;
		ck_assert_int_eq(json_parse_strict(text, strlen(text), 16, &e,
		    &why), RS_OK);
		ck_assert_msg(refund_from_json(e, &r, &why) == RS_ERR_INPUT,
		    "%s accepted", bad[i]);
		ck_assert_str_eq(why, "bad revision");
		cJSON_Delete(e);
		free(text);
	}
}
END_TEST

START_TEST(test_app_installed_real)
{
	struct event ev;
	cJSON *a = NULL;
	const char *why = NULL;

	/* The exact claims of the real Wix-signed token. */
	ck_assert_int_eq(json_parse_strict(app_installed_a,
	    sizeof(app_installed_a) - 1, JSON_MAX_DEPTH, &a, &why), RS_OK);
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_APP_INSTALLED);
	ck_assert_str_eq(ev.event_type, "AppInstalled");
	ck_assert_str_eq(ev.instance_id, INSTANCE);
	ck_assert_str_eq(ev.app_id, "5bc2062d-010b-448c-a62a-d6bb269c5a4c");
	ck_assert_ptr_null(ev.event_id);
	ck_assert_ptr_null(ev.refund.id);
	event_cleanup(&ev);
	cJSON_Delete(a);

	/* The same layer B, wrapped by us. */
	a = claims_b(app_installed_b);
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_APP_INSTALLED);
	ck_assert_str_eq(ev.instance_id, INSTANCE);
	ck_assert_str_eq(ev.app_id, "5bc2062d-010b-448c-a62a-d6bb269c5a4c");
	event_cleanup(&ev);
	cJSON_Delete(a);
}
END_TEST

START_TEST(test_app_events)
{
	struct event ev;
	cJSON *a;

	a = claims_c(EVENT_TYPE_APP_REMOVED, "{\"appId\":\"app-1\"}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_APP_REMOVED);
	ck_assert_str_eq(ev.event_type, "AppRemoved");
	ck_assert_str_eq(ev.app_id, "app-1");
	ck_assert_ptr_null(ev.event_id);
	event_cleanup(&ev);
	cJSON_Delete(a);

	/* appId is optional; an id is taken when present. */
	a = claims_c(EVENT_TYPE_APP_REMOVED, "{\"id\":\"ev-5\"}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_APP_REMOVED);
	ck_assert_ptr_null(ev.app_id);
	ck_assert_str_eq(ev.event_id, "ev-5");
	event_cleanup(&ev);
	cJSON_Delete(a);

	a = claims_c(EVENT_TYPE_APP_INSTALLED, "{}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_APP_INSTALLED);
	ck_assert_ptr_null(ev.app_id);
	event_cleanup(&ev);
	cJSON_Delete(a);

	/* A known type with a malformed layer C is malformed. */
	expect_bad_c(EVENT_TYPE_APP_INSTALLED, "nope", "syntax error");
	expect_bad_c(EVENT_TYPE_APP_INSTALLED, "[]",
	    "event data is not an object");
	expect_bad_c(EVENT_TYPE_APP_REMOVED, "{\"appId\":1}",
	    "appId is not a string");
	expect_bad_c(EVENT_TYPE_APP_REMOVED, "{\"appId\":\"a\",\"appId\":"
	    "\"b\"}", "duplicate key");
}
END_TEST

START_TEST(test_unknown_type)
{
	struct event ev;
	cJSON *a;

	a = claims_c("wix.ecom.v1.order_created", "{\"id\":\"ev-7\","
	    "\"entityId\":\"o-1\"}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_IGNORED);
	ck_assert_str_eq(ev.event_type, "wix.ecom.v1.order_created");
	ck_assert_str_eq(ev.instance_id, INSTANCE);
	ck_assert_str_eq(ev.event_id, "ev-7");
	ck_assert_ptr_null(ev.entity_id);
	event_cleanup(&ev);
	cJSON_Delete(a);

	/* Whatever layer C is, an unknown type is never an error. */
	a = claims_c("SomethingNew", "not json at all");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_IGNORED);
	ck_assert_ptr_null(ev.event_id);
	event_cleanup(&ev);
	cJSON_Delete(a);
	a = claims_c("SomethingNew", "[\"id\"]");
	decode(a, &ev, RS_OK);
	ck_assert_ptr_null(ev.event_id);
	event_cleanup(&ev);
	cJSON_Delete(a);
	a = claims_c("SomethingNew", "{\"id\":5}");
	decode(a, &ev, RS_OK);
	ck_assert_ptr_null(ev.event_id);
	event_cleanup(&ev);
	cJSON_Delete(a);
	a = claims_b("{\"instanceId\":\"i\",\"eventType\":\"X\"}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_IGNORED);
	ck_assert_str_eq(ev.instance_id, "i");
	event_cleanup(&ev);
	cJSON_Delete(a);

	/* Event types are case-sensitive. */
	a = claims_c("appinstalled", "{\"appId\":\"x\"}");
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_IGNORED);
	ck_assert_ptr_null(ev.app_id);
	event_cleanup(&ev);
	cJSON_Delete(a);
	a = claims_c("wix.payments.refunds.v1.Refund_Created",
	    CREATED_C("\"entity\":" ENTITY));
	decode(a, &ev, RS_OK);
	ck_assert_int_eq(ev.kind, EVENT_IGNORED);
	ck_assert_str_eq(ev.event_id, "ev-1");
	ck_assert_ptr_null(ev.refund.id);
	event_cleanup(&ev);
	cJSON_Delete(a);

	/* Layer B must still be sound. */
	expect_bad_b("{\"data\":\"{}\",\"eventType\":\"X\"}",
	    "instanceId missing");
	expect_bad_b("{\"data\":\"{}\",\"instanceId\":\"i\",\"eventType\":"
	    "\"X\",\"eventType\":\"Y\"}", "duplicate key");
}
END_TEST

/* ---- the version rule ------------------------------------------------ */

static struct refund_version
ver(bool hr, int64_t rev, bool hs, int64_t seq, const char *date)
{
	struct refund_version v;

	memset(&v, 0, sizeof(v));
	v.has_revision = hr;
	v.revision = rev;
	v.has_sequence = hs;
	v.sequence = seq;
	v.updated_date = date;
	return v;
}

static bool
newer(struct refund_version in, struct refund_version st)
{
	return refund_version_newer(&in, &st);
}

#define T1	"2024-05-01T10:20:27Z"
#define T2	"2024-05-01T10:20:28Z"

START_TEST(test_version_revision)
{
	ck_assert(newer(ver(true, 4, false, 0, NULL),
	    ver(true, 3, false, 0, NULL)));
	ck_assert(!newer(ver(true, 3, false, 0, NULL),
	    ver(true, 4, false, 0, NULL)));
	ck_assert(!newer(ver(true, 3, false, 0, NULL),
	    ver(true, 3, false, 0, NULL)));
	/* Both revised: sequence and date never override it. */
	ck_assert(!newer(ver(true, 3, true, 9, T2),
	    ver(true, 3, true, 1, T1)));
	ck_assert(!newer(ver(true, 2, true, 9, T2),
	    ver(true, 3, true, 1, T1)));
	ck_assert(newer(ver(true, 4, true, 1, T1),
	    ver(true, 3, true, 9, T2)));
	ck_assert(newer(ver(true, 0, false, 0, NULL),
	    ver(true, -1, false, 0, NULL)));
	ck_assert(newer(ver(true, INT64_MAX, false, 0, NULL),
	    ver(true, INT64_MAX - 1, false, 0, NULL)));
}
END_TEST

START_TEST(test_version_sequence)
{
	/* Missing revision on either side: the sequence decides. */
	ck_assert(newer(ver(false, 0, true, 8, NULL),
	    ver(true, 3, true, 7, NULL)));
	ck_assert(!newer(ver(false, 0, true, 6, NULL),
	    ver(true, 3, true, 7, NULL)));
	ck_assert(newer(ver(true, 1, true, 8, NULL),
	    ver(false, 0, true, 7, NULL)));
	ck_assert(!newer(ver(true, 9, true, 6, NULL),
	    ver(false, 0, true, 7, NULL)));
	ck_assert(newer(ver(false, 0, true, 8, T1),
	    ver(false, 0, true, 7, T2)));
	ck_assert(!newer(ver(false, 0, true, 7, T2),
	    ver(false, 0, true, 8, T1)));
	/* No dates either: equal or missing sequences are a tie. */
	ck_assert(!newer(ver(false, 0, true, 7, NULL),
	    ver(false, 0, true, 7, NULL)));
	ck_assert(!newer(ver(false, 0, true, 8, NULL),
	    ver(false, 0, false, 0, NULL)));
	ck_assert(!newer(ver(false, 0, false, 0, NULL),
	    ver(false, 0, true, 7, NULL)));
	ck_assert(!newer(ver(false, 0, false, 0, NULL),
	    ver(false, 0, false, 0, NULL)));
}
END_TEST

START_TEST(test_version_date)
{
	/* Sequence equal or missing: the later updatedDate wins. */
	ck_assert(newer(ver(false, 0, true, 7, T2),
	    ver(false, 0, true, 7, T1)));
	ck_assert(!newer(ver(false, 0, true, 7, T1),
	    ver(false, 0, true, 7, T2)));
	ck_assert(newer(ver(false, 0, false, 0, T2),
	    ver(true, 5, true, 7, T1)));
	ck_assert(newer(ver(true, 5, true, 7, T2),
	    ver(false, 0, false, 0, T1)));
	ck_assert(!newer(ver(true, 5, false, 0, T1),
	    ver(false, 0, true, 7, T2)));
	/* Fractions of different lengths compare as instants. */
	ck_assert(newer(ver(false, 0, false, 0, "2024-05-01T10:20:27.2Z"),
	    ver(false, 0, false, 0, "2024-05-01T10:20:27.19Z")));
	ck_assert(!newer(ver(false, 0, false, 0, "2024-05-01T10:20:27.19Z"),
	    ver(false, 0, false, 0, "2024-05-01T10:20:27.2Z")));
	ck_assert(newer(ver(false, 0, false, 0, "2024-05-01T10:20:27.5Z"),
	    ver(false, 0, false, 0, "2024-05-01T10:20:27Z")));
	ck_assert(!newer(ver(false, 0, false, 0, "2024-05-01T10:20:27Z"),
	    ver(false, 0, false, 0, "2024-05-01T10:20:27.5Z")));
	ck_assert(newer(ver(false, 0, false, 0,
	    "2024-05-01T10:20:27.272824Z"), ver(false, 0, false, 0,
	    "2024-05-01T10:20:27.272823Z")));
	/* Equal instants are a tie, however written. */
	ck_assert(!newer(ver(false, 0, false, 0, "2024-05-01T10:20:27.20Z"),
	    ver(false, 0, false, 0, "2024-05-01T10:20:27.2Z")));
	ck_assert(!newer(ver(false, 0, false, 0, "2024-05-01T12:20:27+02:00"),
	    ver(false, 0, false, 0, T1)));
	ck_assert(!newer(ver(false, 0, false, 0, T1),
	    ver(false, 0, false, 0, T1)));
	/* A date that does not parse, or is missing, never compares. */
	ck_assert(!newer(ver(false, 0, false, 0, "yesterday"),
	    ver(false, 0, false, 0, T1)));
	ck_assert(!newer(ver(false, 0, false, 0, T2),
	    ver(false, 0, false, 0, "2024-13-01T00:00:00Z")));
	ck_assert(!newer(ver(false, 0, false, 0, T2),
	    ver(false, 0, false, 0, NULL)));
	ck_assert(!newer(ver(false, 0, false, 0, NULL),
	    ver(false, 0, false, 0, T1)));
	ck_assert(!refund_version_newer(NULL, NULL));
}
END_TEST

/* The version of a decoded refund event. */
static struct refund_version
event_version(const struct event *ev)
{
	return ver(ev->refund.has_revision, ev->refund.revision,
	    ev->has_sequence, ev->sequence, ev->refund.updated_date);
}

static void
decode_status(const char *status, const char *rev, const char *seq,
    const char *date, struct event *ev)
{
	char *c = xasprintf("{\"id\":\"ev-%s-%s\",\"entityEventSequence\":"
	    "\"%s\",\"updatedEvent\":{\"currentEntity\":{\"id\":\"r-1\","
	    "\"chargeId\":\"c\",\"currencyCode\":\"USD\",\"amount\":\"5\","
	    "\"status\":\"%s\",\"updatedDate\":\"%s\"%s%s%s}}}", status, seq,
	    seq, status, date, rev != NULL ? ",\"revision\":\"" : "",
	    rev != NULL ? rev : "", rev != NULL ? "\"" : "");
	cJSON *a = claims_c(EVENT_TYPE_REFUND_UPDATED, c);

	decode(a, ev, RS_OK);
	cJSON_Delete(a);
	free(c);
}

START_TEST(test_version_status_never_decides)
{
	struct event succeeded, pending, reversed;

	/* Status may move any way; only the order fields count. */
	decode_status("SUCCEEDED", "3", "7", T1, &succeeded);
	decode_status("PENDING", "4", "8", T2, &pending);
	decode_status("REVERSED", "3", "9", T2, &reversed);
	ck_assert(newer(event_version(&pending), event_version(&succeeded)));
	ck_assert(!newer(event_version(&succeeded), event_version(&pending)));
	/* Same revision: a tie, whatever the status, sequence or date. */
	ck_assert(!newer(event_version(&reversed),
	    event_version(&succeeded)));
	ck_assert(!newer(event_version(&succeeded),
	    event_version(&reversed)));
	event_cleanup(&succeeded);
	event_cleanup(&pending);
	event_cleanup(&reversed);

	/* Without revisions the sequence orders them. */
	decode_status("SUCCEEDED", NULL, "7", T2, &succeeded);
	decode_status("PENDING", NULL, "8", T1, &pending);
	ck_assert(newer(event_version(&pending), event_version(&succeeded)));
	ck_assert(!newer(event_version(&succeeded), event_version(&pending)));
	event_cleanup(&succeeded);
	event_cleanup(&pending);
}
END_TEST

static Suite *
event_suite(void)
{
	Suite *s = suite_create("event");
	TCase *tc = tcase_create("decode");
	TCase *tv = tcase_create("version");

	tcase_add_test(tc, test_created_object);
	tcase_add_test(tc, test_created_as_json);
	tcase_add_test(tc, test_updated_object);
	tcase_add_test(tc, test_updated_as_json);
	tcase_add_test(tc, test_wrong_wrapper);
	tcase_add_test(tc, test_pretty_layer_c);
	tcase_add_test(tc, test_body_numbers_as_sent);
	tcase_add_test(tc, test_bad_layer_a);
	tcase_add_test(tc, test_bad_layer_b);
	tcase_add_test(tc, test_bad_layer_c);
	tcase_add_test(tc, test_bad_event_fields);
	tcase_add_test(tc, test_sequence_forms);
	tcase_add_test(tc, test_bad_entity);
	tcase_add_test(tc, test_entity_variants);
	tcase_add_test(tc, test_refund_from_json_direct);
	tcase_add_test(tc, test_refund_numeric_revision);
	tcase_add_test(tc, test_app_installed_real);
	tcase_add_test(tc, test_app_events);
	tcase_add_test(tc, test_unknown_type);
	suite_add_tcase(s, tc);
	tcase_add_test(tv, test_version_revision);
	tcase_add_test(tv, test_version_sequence);
	tcase_add_test(tv, test_version_date);
	tcase_add_test(tv, test_version_status_never_decides);
	suite_add_tcase(s, tv);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(event_suite());
	int failed;

	xmalloc_init_json();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
