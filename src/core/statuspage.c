/*
 * statuspage.c: gather a status snapshot from the store and render it
 * as HTML, text or JSON.
 *
 * The page is one self-contained document: inline CSS, no scripts, a
 * meta refresh.  Every string that comes from the store, the log or Wix
 * goes through html_esc(); in the terminal, control bytes are shown as
 * '?' so a hostile id cannot drive the terminal.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "adapters/httpd.h"
#include "adapters/store.h"
#include "core/statuspage.h"
#include "domain/money.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/termsafe.h"
#include "util/xmalloc.h"

/* The largest page we render; far above any real one. */
#define STATUSPAGE_MAX	(8 * 1024 * 1024)
/* The longest a request waits for a lock on the store. */
#define STATUSPAGE_BUSY_MS	1000

struct statuspage {
	char	*store_path;
	int	 busy_ms;
};

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/* ---- gathering ------------------------------------------------------- */

static enum rs_status
gather_instance(void *arg, const struct store_instance *in)
{
	struct status_snapshot *s = arg;
	struct status_instance *o;

	s->instances = xreallocarray(s->instances, s->ninstances + 1,
	    sizeof(*s->instances));
	o = &s->instances[s->ninstances++];
	memset(o, 0, sizeof(*o));
	o->instance_id = dup_or_null(in->instance_id);
	o->backfill = in->backfill;
	o->pages = in->backfill_pages;
	o->refunds = in->backfill_refunds;
	o->last_error = dup_or_null(in->last_error);
	o->installed_at = dup_or_null(in->installed_at);
	o->removed_at = dup_or_null(in->removed_at);
	o->started_at = dup_or_null(in->backfill_started_at);
	o->finished_at = dup_or_null(in->backfill_finished_at);
	return RS_OK;
}

static enum rs_status
gather_exporter(void *arg, const struct store_export *e)
{
	struct status_snapshot *s = arg;
	struct status_exporter *o;

	s->exporters = xreallocarray(s->exporters, s->nexporters + 1,
	    sizeof(*s->exporters));
	o = &s->exporters[s->nexporters++];
	memset(o, 0, sizeof(*o));
	o->name = dup_or_null(e->exporter);
	o->position = e->position;
	o->lag = s->counts.last_change > e->position ?
	    s->counts.last_change - e->position : 0;
	o->delivered = e->delivered;
	o->failures = e->failures;
	o->dead = e->dead;
	o->queued = e->queued;
	o->last_error = dup_or_null(e->last_error);
	o->last_error_at = dup_or_null(e->last_error_at);
	o->last_delivery_at = dup_or_null(e->last_delivery_at);
	return RS_OK;
}

static enum rs_status
gather_day(void *arg, const struct store_day_total *d)
{
	struct status_snapshot *s = arg;
	struct status_day *o;

	s->days = xreallocarray(s->days, s->ndays + 1, sizeof(*s->days));
	o = &s->days[s->ndays++];
	o->day = xstrdup(d->day);
	o->currency = xstrdup(d->currency);
	o->count = d->count;
	o->sum_minor = d->sum_minor;
	o->exponent = d->exponent;
	o->inexact = d->inexact;
	o->overflow = d->overflow;
	return RS_OK;
}

enum rs_status
statuspage_gather(struct store *st, bool with_log,
    struct status_snapshot *out)
{
	time_t t;
	struct tm tm;
	enum rs_status r;

	memset(out, 0, sizeof(*out));
	clock_wall_iso(out->generated_at);
	t = (time_t)clock_wall_s() - (STATUSPAGE_DAYS - 1) * 86400;
	gmtime_r(&t, &tm);
	if (strftime(out->since, sizeof(out->since), "%Y-%m-%d", &tm) == 0)
		return RS_ERR_INTERNAL;
	if (with_log)
		out->nerrors = log_recent_copy(out->errors, LOG_RECENT_MAX);
	if ((r = store_counts(st, &out->counts)) != RS_OK)
		return r;
	if ((r = store_instance_foreach(st, gather_instance, out)) != RS_OK)
		return r;
	if ((r = store_export_foreach(st, gather_exporter, out)) != RS_OK)
		return r;
	return store_refunds_by_day(st, out->since, gather_day, out);
}

void
statuspage_cleanup(struct status_snapshot *s)
{
	size_t i;

	for (i = 0; i < s->ninstances; i++) {
		struct status_instance *o = &s->instances[i];

		free(o->instance_id);
		free(o->last_error);
		free(o->installed_at);
		free(o->removed_at);
		free(o->started_at);
		free(o->finished_at);
	}
	free(s->instances);
	for (i = 0; i < s->nexporters; i++) {
		struct status_exporter *o = &s->exporters[i];

		free(o->name);
		free(o->last_error);
		free(o->last_error_at);
		free(o->last_delivery_at);
	}
	free(s->exporters);
	for (i = 0; i < s->ndays; i++) {
		free(s->days[i].day);
		free(s->days[i].currency);
	}
	free(s->days);
	for (i = 0; i < s->nerrors; i++)
		free(s->errors[i]);
	memset(s, 0, sizeof(*s));
}

/* The day's total as decimal text, "?" for an unknown currency, or
 * "overflow" when it does not fit in an int64_t. */
static void
day_amount(const struct status_day *d, char *out, size_t outlen)
{
	if (d->overflow)
		(void)snprintf(out, outlen, "overflow");
	else if (d->exponent < 0 ||
	    money_format(d->sum_minor, d->exponent, out, outlen) != RS_OK)
		(void)snprintf(out, outlen, "?");
}

/* ---- HTML ------------------------------------------------------------ */

/* Append s (NULL: empty) to b with & < > " ' escaped. */
static void
html_esc(struct buf *b, const char *s)
{
	const char *p, *start;

	if (s == NULL)
		return;
	for (start = p = s; *p != '\0'; p++) {
		const char *ent;

		switch (*p) {
		case '&':
			ent = "&amp;";
			break;
		case '<':
			ent = "&lt;";
			break;
		case '>':
			ent = "&gt;";
			break;
		case '"':
			ent = "&quot;";
			break;
		case '\'':
			ent = "&#39;";
			break;
		default:
			continue;
		}
		(void)buf_append(b, start, (size_t)(p - start));
		(void)buf_appends(b, ent);
		start = p + 1;
	}
	(void)buf_append(b, start, (size_t)(p - start));
}

/* A table cell holding s escaped, or a dash when s is NULL or empty. */
static void
html_cell(struct buf *b, const char *s)
{
	if (s == NULL || s[0] == '\0') {
		(void)buf_appends(b, "<td class=\"none\">&mdash;</td>");
		return;
	}
	(void)buf_appends(b, "<td>");
	html_esc(b, s);
	(void)buf_appends(b, "</td>");
}

static const char html_head[] =
"<!DOCTYPE html>\n"
"<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<meta http-equiv=\"refresh\" content=\"5\">\n"
"<meta name=\"viewport\" content=\"width=device-width\">\n"
"<title>refundsync status</title>\n"
"<style>\n"
"body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;"
"max-width:1150px;padding:0 1em;color:#1d2330;background:#f6f7f9}\n"
"h1{font-size:1.5em;margin:0 0 .2em}\n"
"h2{font-size:1.1em;margin:1.6em 0 .5em;border-bottom:2px solid #d9dde5;"
"padding-bottom:.2em}\n"
".meta{color:#5a6375;margin:0 0 1em}\n"
".cards{display:flex;gap:.8em;flex-wrap:wrap}\n"
".card{background:#fff;border:1px solid #d9dde5;border-radius:6px;"
"padding:.5em 1em;min-width:8em}\n"
".card b{display:block;font-size:1.4em}\n"
"table{border-collapse:collapse;width:100%;background:#fff;"
"border:1px solid #d9dde5}\n"
"th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e6e9ef;"
"vertical-align:top}\n"
"th{background:#eef0f4;font-weight:600}\n"
"td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\n"
"td.none{color:#9aa2b1}\n"
"td.err{color:#b3261e;word-break:break-word}\n"
".bar{width:11em;height:.9em;background:#e6e9ef;border-radius:3px;"
"overflow:hidden;display:inline-block;vertical-align:middle}\n"
".bar span{display:block;height:100%}\n"
".done span{background:#2e7d32;width:100%}\n"
".running span{width:100%;background:repeating-linear-gradient(45deg,"
"#1565c0 0 8px,#64a0e0 8px 16px)}\n"
".failed span{background:#c62828;width:100%}\n"
".pending span{width:0}\n"
".state{font-weight:600;margin-left:.5em}\n"
".ok{color:#2e7d32}.warn{color:#b26a00}.bad{color:#c62828}\n"
".daybar{display:inline-block;height:.8em;background:#5c7cfa;"
"border-radius:2px;vertical-align:middle}\n"
"ol.log{background:#fff;border:1px solid #d9dde5;margin:0;"
"padding:.5em .5em .5em 2.5em;font:13px/1.5 ui-monospace,monospace}\n"
"ol.log li{word-break:break-word}\n"
".empty{color:#5a6375;font-style:italic}\n"
"</style></head><body>\n";

static void
html_counts(struct buf *b, const struct status_snapshot *s)
{
	int64_t dead = 0, lag = 0;
	size_t i;

	for (i = 0; i < s->nexporters; i++) {
		dead += s->exporters[i].dead + s->exporters[i].queued;
		if (s->exporters[i].lag > lag)
			lag = s->exporters[i].lag;
	}
	(void)buf_printf(b, "<div class=\"cards\">"
	    "<div class=\"card\">Refunds<b id=\"refunds\">%lld</b></div>"
	    "<div class=\"card\">Webhook events<b>%lld</b></div>"
	    "<div class=\"card\">Newest change<b>%lld</b></div>"
	    "<div class=\"card\">Instances<b>%lld</b></div>"
	    "<div class=\"card\">Largest lag<b class=\"%s\">%lld</b></div>"
	    "<div class=\"card\">Dead letters<b class=\"%s\">%lld</b></div>"
	    "</div>\n",
	    (long long)s->counts.refunds, (long long)s->counts.events,
	    (long long)s->counts.last_change, (long long)s->counts.instances,
	    lag > 0 ? "warn" : "ok", (long long)lag,
	    dead > 0 ? "bad" : "ok", (long long)dead);
}

static void
html_instances(struct buf *b, const struct status_snapshot *s)
{
	size_t i;

	(void)buf_appends(b, "<h2>Backfill per instance</h2>\n");
	if (s->ninstances == 0) {
		(void)buf_appends(b, "<p class=\"empty\">No instance yet."
		    "</p>\n");
		return;
	}
	(void)buf_appends(b, "<table id=\"instances\"><tr><th>Instance</th>"
	    "<th>Backfill</th><th class=\"n\">Pages</th>"
	    "<th class=\"n\">Refunds</th><th>Started</th><th>Finished</th>"
	    "<th>Last error</th></tr>\n");
	for (i = 0; i < s->ninstances; i++) {
		const struct status_instance *in = &s->instances[i];
		const char *state = store_backfill_name(in->backfill);

		(void)buf_appends(b, "<tr>");
		html_cell(b, in->instance_id);
		(void)buf_printf(b, "<td><span class=\"bar %s\"><span>"
		    "</span></span><span class=\"state\">%s</span>%s</td>"
		    "<td class=\"n\">%lld</td><td class=\"n\">%lld</td>",
		    state, state, in->removed_at != NULL ? " (removed)" : "",
		    (long long)in->pages, (long long)in->refunds);
		html_cell(b, in->started_at);
		html_cell(b, in->finished_at);
		if (in->last_error != NULL) {
			(void)buf_appends(b, "<td class=\"err\">");
			html_esc(b, in->last_error);
			(void)buf_appends(b, "</td>");
		} else
			html_cell(b, NULL);
		(void)buf_appends(b, "</tr>\n");
	}
	(void)buf_appends(b, "</table>\n");
}

static void
html_exporters(struct buf *b, const struct status_snapshot *s)
{
	size_t i;

	(void)buf_appends(b, "<h2>Exporters</h2>\n");
	if (s->nexporters == 0) {
		(void)buf_appends(b, "<p class=\"empty\">No exporter has run "
		    "yet.</p>\n");
		return;
	}
	(void)buf_appends(b, "<table id=\"exporters\"><tr><th>Exporter</th>"
	    "<th class=\"n\">Position</th><th class=\"n\">Lag</th>"
	    "<th class=\"n\">Delivered</th><th class=\"n\">Failures</th>"
	    "<th class=\"n\">Dead letters</th><th>Last delivery</th>"
	    "<th>Last error</th></tr>\n");
	for (i = 0; i < s->nexporters; i++) {
		const struct status_exporter *e = &s->exporters[i];

		(void)buf_appends(b, "<tr>");
		html_cell(b, e->name);
		(void)buf_printf(b, "<td class=\"n\">%lld</td>"
		    "<td class=\"n %s\">%lld</td><td class=\"n\">%lld</td>"
		    "<td class=\"n\">%lld</td><td class=\"n %s\">%lld",
		    (long long)e->position, e->lag > 0 ? "warn" : "ok",
		    (long long)e->lag, (long long)e->delivered,
		    (long long)e->failures, e->dead + e->queued > 0 ? "bad" :
		    "ok", (long long)e->dead + (long long)e->queued);
		if (e->queued > 0)
			(void)buf_printf(b, " (%lld queued)",
			    (long long)e->queued);
		(void)buf_appends(b, "</td>");
		html_cell(b, e->last_delivery_at);
		if (e->last_error != NULL) {
			(void)buf_appends(b, "<td class=\"err\">");
			html_esc(b, e->last_error);
			if (e->last_error_at != NULL) {
				(void)buf_appends(b, " (");
				html_esc(b, e->last_error_at);
				(void)buf_appends(b, ")");
			}
			(void)buf_appends(b, "</td>");
		} else
			html_cell(b, NULL);
		(void)buf_appends(b, "</tr>\n");
	}
	(void)buf_appends(b, "</table>\n");
}

static void
html_days(struct buf *b, const struct status_snapshot *s)
{
	char amount[64];
	int64_t most = 1;
	size_t i;

	(void)buf_appends(b, "<h2>Refunds per day (last ");
	(void)buf_printf(b, "%d days, since ", STATUSPAGE_DAYS);
	html_esc(b, s->since);
	(void)buf_appends(b, ", by created date, UTC)</h2>\n");
	if (s->ndays == 0) {
		(void)buf_appends(b, "<p class=\"empty\">No refund in these "
		    "days.</p>\n");
		return;
	}
	for (i = 0; i < s->ndays; i++)
		if (s->days[i].count > most)
			most = s->days[i].count;
	(void)buf_appends(b, "<table id=\"days\"><tr><th>Day</th>"
	    "<th>Currency</th><th class=\"n\">Refunds</th>"
	    "<th class=\"n\">Total</th><th></th></tr>\n");
	for (i = 0; i < s->ndays; i++) {
		const struct status_day *d = &s->days[i];

		day_amount(d, amount, sizeof(amount));
		(void)buf_appends(b, "<tr>");
		html_cell(b, d->day);
		html_cell(b, d->currency);
		(void)buf_printf(b, "<td class=\"n\">%lld</td>"
		    "<td class=\"n\">", (long long)d->count);
		html_esc(b, amount);
		if (d->inexact > 0)
			(void)buf_printf(b, " (+%lld not summed)",
			    (long long)d->inexact);
		(void)buf_printf(b, "</td><td><span class=\"daybar\" "
		    "style=\"width:%lldpx\"></span></td></tr>\n",
		    1 + (long long)d->count * 200 / most);
	}
	(void)buf_appends(b, "</table>\n");
}

static void
html_errors(struct buf *b, const struct status_snapshot *s)
{
	size_t i;

	(void)buf_appends(b, "<h2>Recent warnings and errors</h2>\n");
	if (s->nerrors == 0) {
		(void)buf_appends(b, "<p class=\"empty\">None since the "
		    "daemon started.</p>\n");
		return;
	}
	(void)buf_appends(b, "<ol class=\"log\" id=\"errors\">\n");
	/* Newest first: that is what one looks for. */
	for (i = s->nerrors; i-- > 0;) {
		(void)buf_appends(b, "<li>");
		html_esc(b, s->errors[i]);
		(void)buf_appends(b, "</li>\n");
	}
	(void)buf_appends(b, "</ol>\n");
}

enum rs_status
statuspage_html(const struct status_snapshot *s, struct buf *out)
{
	(void)buf_appends(out, html_head);
	(void)buf_appends(out, "<h1>refundsync status</h1>\n"
	    "<p class=\"meta\">refundsync " PACKAGE_VERSION " &middot; "
	    "generated ");
	html_esc(out, s->generated_at);
	(void)buf_appends(out, " &middot; refreshes every 5 s</p>\n");
	html_counts(out, s);
	html_instances(out, s);
	html_exporters(out, s);
	html_days(out, s);
	html_errors(out, s);
	return buf_appends(out, "</body></html>\n");
}

/* ---- JSON ------------------------------------------------------------ */

static void
json_str(cJSON *o, const char *key, const char *v)
{
	if (v != NULL)
		cJSON_AddStringToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

static void
json_int(cJSON *o, const char *key, int64_t v)
{
	/* Counts stay far below 2^53. */
	cJSON_AddNumberToObject(o, key, (double)v);
}

cJSON *
statuspage_json(const struct status_snapshot *s)
{
	cJSON *doc, *o, *arr, *e;
	char amount[64];
	size_t i;

	doc = cJSON_CreateObject();
	cJSON_AddStringToObject(doc, "generated_at", s->generated_at);
	o = cJSON_AddObjectToObject(doc, "store");
	json_int(o, "refunds", s->counts.refunds);
	json_int(o, "events", s->counts.events);
	json_int(o, "changes", s->counts.changes);
	json_int(o, "last_change", s->counts.last_change);
	json_int(o, "instances", s->counts.instances);

	arr = cJSON_AddArrayToObject(doc, "instances");
	for (i = 0; i < s->ninstances; i++) {
		const struct status_instance *in = &s->instances[i];

		e = cJSON_CreateObject();
		json_str(e, "instance_id", in->instance_id);
		json_str(e, "backfill", store_backfill_name(in->backfill));
		json_int(e, "pages", in->pages);
		json_int(e, "refunds", in->refunds);
		json_str(e, "last_error", in->last_error);
		json_str(e, "installed_at", in->installed_at);
		json_str(e, "removed_at", in->removed_at);
		json_str(e, "started_at", in->started_at);
		json_str(e, "finished_at", in->finished_at);
		cJSON_AddItemToArray(arr, e);
	}

	arr = cJSON_AddArrayToObject(doc, "exporters");
	for (i = 0; i < s->nexporters; i++) {
		const struct status_exporter *x = &s->exporters[i];

		e = cJSON_CreateObject();
		json_str(e, "exporter", x->name);
		json_int(e, "position", x->position);
		json_int(e, "lag", x->lag);
		json_int(e, "delivered", x->delivered);
		json_int(e, "failures", x->failures);
		json_int(e, "dead_letters", x->dead);
		json_int(e, "queued", x->queued);
		json_str(e, "last_delivery_at", x->last_delivery_at);
		json_str(e, "last_error", x->last_error);
		json_str(e, "last_error_at", x->last_error_at);
		cJSON_AddItemToArray(arr, e);
	}

	cJSON_AddStringToObject(doc, "since", s->since);
	arr = cJSON_AddArrayToObject(doc, "days");
	for (i = 0; i < s->ndays; i++) {
		const struct status_day *d = &s->days[i];

		e = cJSON_CreateObject();
		json_str(e, "day", d->day);
		json_str(e, "currency", d->currency);
		json_int(e, "refunds", d->count);
		if (d->exponent >= 0) {
			day_amount(d, amount, sizeof(amount));
			json_str(e, "amount", amount);
		} else
			json_str(e, "amount", NULL);
		json_int(e, "not_summed", d->inexact);
		cJSON_AddItemToArray(arr, e);
	}

	arr = cJSON_AddArrayToObject(doc, "recent_errors");
	for (i = 0; i < s->nerrors; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(s->errors[i]));
	return doc;
}

/* ---- text ------------------------------------------------------------ */

/* s padded to width, control bytes shown as '?'; NULL is "-". */
static void
text_field(FILE *out, const char *s, int width)
{
	int n = 0;

	if (s == NULL || s[0] == '\0')
		s = "-";
	n = (int)term_fputs(s, out);
	for (; n < width; n++)
		fputc(' ', out);
}

/* The widest of the strings at base + i * stride (at least min). */
static int
text_width(const void *base, size_t n, size_t stride, size_t off, int min)
{
	int w = min;
	size_t i;

	for (i = 0; i < n; i++) {
		const char *s = *(char *const *)(const void *)
		    ((const char *)base + i * stride + off);
		int len = s != NULL ? (int)strlen(s) : 1;

		if (len > w)
			w = len;
	}
	return w > 60 ? 60 : w;
}

void
statuspage_text(const struct status_snapshot *s, FILE *out)
{
	char amount[64];
	size_t i;
	int w;

	fprintf(out, "refundsync status at %s\n", s->generated_at);
	fprintf(out, "store: %lld refunds, %lld webhook events, newest "
	    "change %lld, %lld instances\n\n",
	    (long long)s->counts.refunds, (long long)s->counts.events,
	    (long long)s->counts.last_change,
	    (long long)s->counts.instances);

	fprintf(out, "BACKFILL\n");
	w = text_width(s->instances, s->ninstances, sizeof(*s->instances),
	    offsetof(struct status_instance, instance_id), 8);
	if (s->ninstances == 0)
		fprintf(out, "  (no instance yet)\n");
	else {
		fputs("  ", out);
		text_field(out, "INSTANCE", w);
		fprintf(out, "  %-8s %8s %9s  %s\n", "STATE", "PAGES",
		    "REFUNDS", "LAST ERROR");
	}
	for (i = 0; i < s->ninstances; i++) {
		const struct status_instance *in = &s->instances[i];

		fputs("  ", out);
		text_field(out, in->instance_id, w);
		fprintf(out, "  %-8s %8lld %9lld  ",
		    store_backfill_name(in->backfill), (long long)in->pages,
		    (long long)in->refunds);
		text_field(out, in->last_error, 0);
		fputc('\n', out);
	}

	fprintf(out, "\nEXPORTERS\n");
	w = text_width(s->exporters, s->nexporters, sizeof(*s->exporters),
	    offsetof(struct status_exporter, name), 8);
	if (s->nexporters == 0)
		fprintf(out, "  (no exporter has run yet)\n");
	else {
		fputs("  ", out);
		text_field(out, "EXPORTER", w);
		fprintf(out, "  %8s %6s %9s %8s %4s  %s\n", "POSITION", "LAG",
		    "DELIVERED", "FAILURES", "DEAD", "LAST ERROR");
	}
	for (i = 0; i < s->nexporters; i++) {
		const struct status_exporter *e = &s->exporters[i];

		fputs("  ", out);
		text_field(out, e->name, w);
		fprintf(out, "  %8lld %6lld %9lld %8lld %4lld  ",
		    (long long)e->position, (long long)e->lag,
		    (long long)e->delivered, (long long)e->failures,
		    (long long)e->dead + (long long)e->queued);
		text_field(out, e->last_error, 0);
		fputc('\n', out);
	}

	fprintf(out, "\nREFUNDS PER DAY (since %s, by created date, UTC)\n",
	    s->since);
	if (s->ndays == 0)
		fprintf(out, "  (none)\n");
	else
		fprintf(out, "  %-10s  %-8s %7s %18s\n", "DAY", "CURRENCY",
		    "REFUNDS", "TOTAL");
	for (i = 0; i < s->ndays; i++) {
		const struct status_day *d = &s->days[i];

		day_amount(d, amount, sizeof(amount));
		fputs("  ", out);
		text_field(out, d->day, 10);
		fputs("  ", out);
		text_field(out, d->currency, 8);
		fprintf(out, " %7lld %18s", (long long)d->count, amount);
		if (d->inexact > 0)
			fprintf(out, "  (+%lld not summed)",
			    (long long)d->inexact);
		fputc('\n', out);
	}
	if (s->nerrors > 0) {
		fprintf(out, "\nRECENT WARNINGS\n");
		for (i = 0; i < s->nerrors; i++) {
			fputs("  ", out);
			text_field(out, s->errors[i], 0);
			fputc('\n', out);
		}
	}
}

enum rs_status
statuspage_cmd(struct store *st, bool json, FILE *out, FILE *err)
{
	struct status_snapshot s;
	enum rs_status r;

	if ((r = statuspage_gather(st, false, &s)) != RS_OK) {
		fprintf(err, "refundsync: status: cannot read the store: %s\n",
		    rs_strstatus(r));
		goto out;
	}
	if (json) {
		cJSON *doc = statuspage_json(&s);
		char *text = cJSON_PrintUnformatted(doc);

		fprintf(out, "%s\n", text);
		cJSON_free(text);
		cJSON_Delete(doc);
	} else
		statuspage_text(&s, out);
out:
	statuspage_cleanup(&s);
	return r;
}

/* ---- the admin handler ----------------------------------------------- */

struct statuspage *
statuspage_new(const char *store_path, int busy_ms)
{
	struct statuspage *sp = xcalloc(1, sizeof(*sp));

	sp->store_path = xstrdup(store_path);
	/* Readers of a WAL database wait only in rare cases (recovery);
	 * even then, an MHD thread waits a second at most. */
	sp->busy_ms = busy_ms > STATUSPAGE_BUSY_MS ? STATUSPAGE_BUSY_MS :
	    busy_ms;
	return sp;
}

void
statuspage_free(struct statuspage *sp)
{
	if (sp == NULL)
		return;
	free(sp->store_path);
	free(sp);
}

void
statuspage_http(void *arg, struct httpd_request *req)
{
	struct statuspage *sp = arg;
	struct store_options opt;
	struct store *st = NULL;
	struct status_snapshot s;
	struct buf b;
	char *why = NULL;
	enum rs_status r;

	memset(&s, 0, sizeof(s));
	buf_init(&b, STATUSPAGE_MAX);
	memset(&opt, 0, sizeof(opt));
	opt.busy_timeout_ms = sp->busy_ms;
	opt.readonly = true;
	if ((r = store_open(sp->store_path, &opt, &st, &why)) != RS_OK) {
		log_warnx("status page: store: %s",
		    why != NULL ? why : rs_strstatus(r));
		httpd_respond_error(req, 503, "store unavailable", "store");
		goto out;
	}
	if ((r = statuspage_gather(st, true, &s)) != RS_OK ||
	    (r = statuspage_html(&s, &b)) != RS_OK) {
		log_warnx("status page: %s", rs_strstatus(r));
		httpd_respond_error(req, 503, "status unavailable", "store");
		goto out;
	}
	httpd_respond(req, 200, "text/html; charset=utf-8", b.data, b.len,
	    "Cache-Control", "no-store");
out:
	statuspage_cleanup(&s);
	buf_cleanup(&b);
	store_close(st);
	free(why);
}
