/*
 * event.c: decode a verified Wix webhook into an event (WIX.md §1).
 *
 * Three layers: the JWT claims (A) carry "data", a string holding layer
 * B; B's "data" is a string holding layer C, the domain event.  Each
 * layer is parsed with json_parse_strict(), so duplicate keys, invalid
 * UTF-8, deep nesting or trailing data anywhere make the payload
 * malformed, and keys are matched case-sensitively.  The refund entity
 * comes in two wire forms (an object, or JSON text in the ...AsJson
 * member); both are accepted.  A verified event of a type we do not
 * handle is never an error once A and B are sound: it decodes to
 * EVENT_IGNORED.  Pure functions, safe from any thread.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "domain/event.h"
#include "domain/json.h"
#include "domain/refund.h"
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

/*
 * Strict-parse the string member "data" of obj into *out, an object.
 * outer says which layer obj is, for the reason: true for the claims.
 */
static enum rs_status
parse_data(const cJSON *obj, bool outer, cJSON **out /* OUT */,
    const char **why)
{
	const char *s;
	cJSON *tree = NULL;

	if ((s = json_get_string(obj, "data")) == NULL) {
		*why = outer ? "claims data is not a string" :
		    "event data is not a string";
		return RS_ERR_INPUT;
	}
	if (json_parse_strict(s, strlen(s), JSON_MAX_DEPTH, &tree, why) !=
	    RS_OK)
		return RS_ERR_INPUT;
	if (!cJSON_IsObject(tree)) {
		cJSON_Delete(tree);
		*why = outer ? "claims data is not an object" :
		    "event data is not an object";
		return RS_ERR_INPUT;
	}
	*out = tree;
	return RS_OK;
}

/*
 * Layer C of Refund Created / Refund Updated.  The entity is
 * createdEvent.entity (or entityAsJson) for created, and
 * updatedEvent.currentEntity (or currentEntityAsJson) for updated;
 * modifiedFields is ignored.
 */
static enum rs_status
decode_refund(const cJSON *c, bool created, struct event *ev,
    const char **why)
{
	const cJSON *wrap, *item;
	const char *s;
	cJSON *parsed = NULL;
	enum rs_status st = RS_ERR_INPUT;

	if ((s = req_string(c, "id")) == NULL) {
		*why = "event id missing";
		goto out;
	}
	ev->event_id = xstrdup(s);
	if (opt_string(c, "entityId", &ev->entity_id) != RS_OK) {
		*why = "entityId is not a string";
		goto out;
	}
	if (opt_string(c, "eventTime", &ev->event_time) != RS_OK) {
		*why = "eventTime is not a string";
		goto out;
	}
	switch (json_get_int64(c, "entityEventSequence", &ev->sequence)) {
	case RS_OK:
		ev->has_sequence = true;
		break;
	case RS_ERR_NOTFOUND:
		break;
	default:
		*why = "bad entityEventSequence";
		goto out;
	}

	wrap = json_get_object(c, created ? "createdEvent" : "updatedEvent");
	item = json_get(wrap, created ? "entity" : "currentEntity");
	if (item == NULL || cJSON_IsNull(item))
		item = json_get(wrap, created ? "entityAsJson" :
		    "currentEntityAsJson");
	if (cJSON_IsString(item)) {
		if (json_parse_strict(item->valuestring,
		    strlen(item->valuestring), JSON_MAX_DEPTH, &parsed, why) !=
		    RS_OK)
			goto out;
		item = parsed;
	}
	if (!cJSON_IsObject(item)) {
		*why = "refund entity missing";
		goto out;
	}
	if (refund_from_json(item, &ev->refund, why) != RS_OK)
		goto out;
	if (ev->entity_id != NULL && strcmp(ev->entity_id, ev->refund.id) !=
	    0) {
		*why = "entityId does not match refund id";
		goto out;
	}
	st = RS_OK;
out:
	cJSON_Delete(parsed);
	return st;
}

/* Layer C of AppInstalled / AppRemoved: {"appId", "originInstanceId"}. */
static enum rs_status
decode_app(const cJSON *c, struct event *ev, const char **why)
{
	const char *s;

	if ((s = req_string(c, "id")) != NULL)
		ev->event_id = xstrdup(s);
	if (opt_string(c, "appId", &ev->app_id) != RS_OK) {
		*why = "appId is not a string";
		return RS_ERR_INPUT;
	}
	return RS_OK;
}

enum rs_status
event_decode(const cJSON *claims, struct event *out, const char **why)
{
	cJSON *b = NULL, *c = NULL;
	const char *s, *reason = NULL;
	enum rs_status st = RS_ERR_INPUT;

	memset(out, 0, sizeof(*out));
	if (!cJSON_IsObject(claims)) {
		reason = "claims are not an object";
		goto out;
	}
	if (parse_data(claims, true, &b, &reason) != RS_OK)
		goto out;
	if ((s = req_string(b, "instanceId")) == NULL) {
		reason = "instanceId missing";
		goto out;
	}
	out->instance_id = xstrdup(s);
	if ((s = req_string(b, "eventType")) == NULL) {
		reason = "eventType missing";
		goto out;
	}
	out->event_type = xstrdup(s);

	if (strcmp(s, EVENT_TYPE_REFUND_CREATED) == 0 ||
	    strcmp(s, EVENT_TYPE_REFUND_UPDATED) == 0)
		out->kind = EVENT_REFUND;
	else if (strcmp(s, EVENT_TYPE_APP_INSTALLED) == 0)
		out->kind = EVENT_APP_INSTALLED;
	else if (strcmp(s, EVENT_TYPE_APP_REMOVED) == 0)
		out->kind = EVENT_APP_REMOVED;
	else
		out->kind = EVENT_IGNORED;

	if (out->kind == EVENT_IGNORED) {
		/* Only an id, if layer C offers one; never an error. */
		if (parse_data(b, false, &c, &reason) == RS_OK &&
		    (s = req_string(c, "id")) != NULL)
			out->event_id = xstrdup(s);
		reason = NULL;
		st = RS_OK;
		goto out;
	}
	if (parse_data(b, false, &c, &reason) != RS_OK)
		goto out;
	if (out->kind == EVENT_REFUND)
		st = decode_refund(c, strcmp(out->event_type,
		    EVENT_TYPE_REFUND_CREATED) == 0, out, &reason);
	else
		st = decode_app(c, out, &reason);
out:
	cJSON_Delete(b);
	cJSON_Delete(c);
	if (st != RS_OK && why != NULL)
		*why = reason != NULL ? reason : "malformed event";
	return st;
}

void
event_cleanup(struct event *ev)
{
	if (ev == NULL)
		return;
	free(ev->event_type);
	free(ev->instance_id);
	free(ev->event_id);
	free(ev->entity_id);
	free(ev->event_time);
	free(ev->app_id);
	refund_cleanup(&ev->refund);
	memset(ev, 0, sizeof(*ev));
}
