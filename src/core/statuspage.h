/*
 * statuspage.h: the facts an operator wants at a glance (SPEC §1
 * `refundsync status`, §3 admin GET /status): backfill progress per
 * instance, lag and dead letters per exporter, refunds per day and, in
 * the daemon, the recent warnings.
 *
 * A snapshot is gathered from a store connection (read-only is enough)
 * and then rendered as HTML (every dynamic string escaped), as aligned
 * text or as one JSON document.  Nothing here writes to the store.
 */
#ifndef RS_STATUSPAGE_H
#define RS_STATUSPAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "adapters/httpd.h"
#include "adapters/store.h"
#include "util/buf.h"
#include "util/log.h"

/* Days of refunds shown, today (UTC) included. */
#define STATUSPAGE_DAYS	14

/* One instance.  Strings are owned; NULL when absent. */
struct status_instance {
	char		*instance_id;
	enum store_backfill backfill;
	int64_t		 pages;		/* backfill_pages */
	int64_t		 refunds;	/* backfill_refunds */
	char		*last_error;
	char		*installed_at;
	char		*removed_at;
	char		*started_at;	/* backfill_started_at */
	char		*finished_at;	/* backfill_finished_at */
};

/* One exporter.  Strings are owned; NULL when absent. */
struct status_exporter {
	char		*name;
	int64_t		 position;
	int64_t		 lag;		/* newest change seq - position */
	int64_t		 delivered;
	int64_t		 failures;
	int64_t		 dead;		/* dead letters, not queued */
	int64_t		 queued;	/* dead letters queued again */
	char		*last_error;
	char		*last_error_at;
	char		*last_delivery_at;
};

/* Refunds of one day in one currency.  Strings are owned. */
struct status_day {
	char		*day;		/* YYYY-MM-DD */
	char		*currency;
	int64_t		 count;
	int64_t		 sum_minor;
	int		 exponent;	/* -1: unknown currency */
	int64_t		 inexact;	/* refunds not in sum_minor */
	bool		 overflow;	/* the sum does not fit in int64_t */
};

struct status_snapshot {
	char			 generated_at[32];
	char			 since[11];	/* first day shown */
	struct store_counts	 counts;
	struct status_instance	*instances;
	size_t			 ninstances;
	struct status_exporter	*exporters;
	size_t			 nexporters;
	struct status_day	*days;
	size_t			 ndays;
	char			*errors[LOG_RECENT_MAX]; /* oldest first */
	size_t			 nerrors;
};

/*
 * Fill *out (caller cleans with statuspage_cleanup(), also after an
 * error) from st; with_log adds this process's recent warning lines.
 * RS_OK, or the store's error.
 */
enum rs_status	statuspage_gather(struct store *st, bool with_log,
		    struct status_snapshot *out /* OUT */);
void		statuspage_cleanup(struct status_snapshot *s);

/* The HTML page (it refreshes itself every 5 s), appended to out. */
enum rs_status	statuspage_html(const struct status_snapshot *s,
		    struct buf *out);
/* The snapshot as one JSON object.  Caller frees with cJSON_Delete(). */
cJSON		*statuspage_json(const struct status_snapshot *s);
/* The snapshot as aligned text for a terminal. */
void		statuspage_text(const struct status_snapshot *s, FILE *out);

/*
 * `refundsync status`: gather from st and print text or JSON on out;
 * errors on err.  RS_OK or the store's error.
 */
enum rs_status	statuspage_cmd(struct store *st, bool json, FILE *out,
		    FILE *err);

/*
 * The admin GET /status handler.  Each request opens its own read-only
 * connection to the store (SQLite in WAL mode: readers never wait for the
 * writer), so the page never touches the daemon's connections and never
 * holds a lock across requests.
 */
struct statuspage;
/* store_path is copied; busy_ms is capped at 1 s.  Caller frees with
 * statuspage_free(). */
struct statuspage *statuspage_new(const char *store_path, int busy_ms);
void		statuspage_free(struct statuspage *sp);
/* An httpd_handler; arg is a struct statuspage. */
void		statuspage_http(void *arg, struct httpd_request *req);

#endif
