/*
 * event.h: decoding a verified Wix webhook into an event (WIX.md §1).
 *
 * Layer A is the JWT claims object (already strict-parsed by the verifier).
 * Its "data" member is a string holding layer B; B's "data" is a string
 * holding layer C, the domain event.  Each layer goes through
 * json_parse_strict(), and keys are matched case-sensitively.
 */
#ifndef RS_EVENT_H
#define RS_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "domain/refund.h"
#include "util/status.h"

#define EVENT_TYPE_REFUND_CREATED "wix.payments.refunds.v1.refund_created"
#define EVENT_TYPE_REFUND_UPDATED "wix.payments.refunds.v1.refund_updated"
#define EVENT_TYPE_APP_INSTALLED  "AppInstalled"
#define EVENT_TYPE_APP_REMOVED    "AppRemoved"

enum event_kind {
	EVENT_REFUND,		/* Refund Created or Refund Updated */
	EVENT_APP_INSTALLED,
	EVENT_APP_REMOVED,
	EVENT_IGNORED		/* a verified event of a type we ignore */
};

/* All strings owned by the struct; released by event_cleanup(). */
struct event {
	enum event_kind	 kind;
	char		*event_type;	/* B.eventType */
	char		*instance_id;	/* B.instanceId */
	char		*event_id;	/* C.id for refund events; for the
					   others C.id if present, else NULL
					   (the caller derives a key) */
	char		*entity_id;	/* C.entityId, or NULL */
	char		*event_time;	/* C.eventTime, or NULL */
	bool		 has_sequence;
	int64_t		 sequence;	/* C.entityEventSequence */
	char		*app_id;	/* AppInstalled/Removed: C.appId */
	struct refund	 refund;	/* EVENT_REFUND only */
};

/*
 * Decode claims (layer A, an object) into *out.
 * RS_OK: *out filled.  RS_ERR_INPUT: the payload is malformed (data not a
 * string, not strict JSON, instanceId or eventType missing, a refund
 * event without event id or a valid refund entity, ...), with a static
 * reason in *why.  Both wire forms of the entity are accepted:
 * createdEvent.entity / updatedEvent.currentEntity as objects, and
 * createdEvent.entityAsJson / updatedEvent.currentEntityAsJson as JSON
 * text; a member that is a string is parsed, an object is used.
 * Unknown event types decode to EVENT_IGNORED without looking at layer C
 * beyond an optional id.  On failure the members decoded before the
 * fault (instance_id, event_id, entity_id) stay set, for the log line.
 * Caller cleans *out with event_cleanup(), on success or failure.
 */
enum rs_status	event_decode(const cJSON *claims, struct event *out,
		    const char **why /* OUT */);
void		event_cleanup(struct event *ev);

#endif
