/*
 * refundcmd.c: `refundsync refund create` (see refundcmd.h).
 *
 * Flow 1, a full refund: Create Refund without amount, currency or
 * previouslyRefundedAmount.  Flow 2, a partial refund: read the charge's
 * whole refund history (Query Refunds filtered by chargeId, every page),
 * sum its SUCCEEDED refunds exactly in minor units, show the history and
 * the plan, and send the sum as previouslyRefundedAmount.  The REST
 * client retries network errors and 5xx with the same body, which is
 * safe: if an attempt had succeeded, the retry gets
 * PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH (or, for a full refund,
 * CHARGE_REFUNDED).  On a mismatch the history is read again and shown;
 * in a terminal the operator may confirm a fresh attempt, otherwise the
 * command stops with exit 3.
 *
 * Runs on the main thread only.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "core/backfill.h"
#include "core/cli.h"
#include "core/refundcmd.h"
#include "domain/json.h"
#include "domain/money.h"
#include "domain/refund.h"
#include "util/log.h"
#include "util/termsafe.h"
#include "util/xmalloc.h"

#define RC_PATH_CREATE	"/payments/refunds/v1/refunds"
#define RC_ID_MAX	256	/* longest instance or charge id */
#define RC_TEXT_MAX	4096	/* longest reason or note */
#define RC_MAX_PAGES	1000	/* history pages of one charge */
#define RC_MAX_ROUNDS	10	/* fresh attempts after mismatches */
#define RC_SAFE_MAX	512	/* text shown from Wix, per item (term_safe) */

/* The charge's refund history, as read just now. */
struct rc_hist {
	struct refund	*v;		/* owned, createdDate order */
	size_t		 n;
	bool		 summed;	/* the sums below are valid */
	int64_t		 succeeded;	/* SUCCEEDED total, minor units */
	size_t		 nsucceeded;
	char		 currency[4];	/* of the SUCCEEDED ones; "" none */
	int		 exponent;	/* of currency (or the request's) */
	size_t		 npending;
	char		 other[4];	/* a currency other than the
					   request's, seen in history */
};

/* One run. */
struct rc {
	const struct refundcmd_options *o;
	struct wixapi	*w;
	struct store	*st;
	FILE		*in, *out, *err;
	bool		 full;
	char		 currency[4];
	int		 exponent;
	int64_t		 minor;		/* the amount, minor units */
	char		 amount[MONEY_MAX_TEXT + 1]; /* normalised */
	char		 who[160];
	cJSON		*doc;		/* the --json document */
	bool		 retried;	/* the last send took more than one
					   HTTP request */
};

static void	say(struct rc *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	complain(struct rc *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

/* Human output, only without --json. */
static void
say(struct rc *c, const char *fmt, ...)
{
	va_list ap;

	if (c->o->json)
		return;
	va_start(ap, fmt);
	vfprintf(c->out, fmt, ap);
	va_end(ap);
}

/* Problems, on err in both modes. */
static void
complain(struct rc *c, const char *fmt, ...)
{
	va_list ap;

	fputs("refundsync: refund create: ", c->err);
	va_start(ap, fmt);
	vfprintf(c->err, fmt, ap);
	va_end(ap);
	fputc('\n', c->err);
}


/* Who asked, for the log: the login name, else $USER/$LOGNAME, and the
 * uid. */
static void
who_asked(char *buf, size_t len)
{
	const char *n = getlogin();
	char tmp[64];

	if (n == NULL || *n == '\0')
		n = getenv("USER");
	if (n == NULL || *n == '\0')
		n = getenv("LOGNAME");
	if (n == NULL || *n == '\0')
		n = "unknown";
	snprintf(buf, len, "%s (uid %ld)", term_safe(n, tmp, sizeof(tmp)),
	    (long)getuid());
}

/* ---- input ------------------------------------------------------------ */

static bool
id_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n > RC_ID_MAX)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* Check the amount and currency; fills c's normalised copies.  0 or
 * CLI_EXIT_USAGE. */
static int
check_money(const char *amount, const char *currency, char cur[4],
    int *exponent, int64_t *minor, FILE *err)
{
	const char *dot;
	size_t i, decimals;
	enum rs_status s;

	if (currency == NULL || strlen(currency) != 3) {
		fprintf(err, "refundsync: refund create: --currency %s: not a "
		    "three-letter ISO 4217 code\n", currency != NULL ?
		    currency : "");
		return CLI_EXIT_USAGE;
	}
	for (i = 0; i < 3; i++)
		cur[i] = (char)toupper((unsigned char)currency[i]);
	cur[3] = '\0';
	if (!money_currency_wellformed(cur) || (*exponent =
	    money_exponent(cur)) < 0) {
		fprintf(err, "refundsync: refund create: --currency %s: not an "
		    "ISO 4217 currency code, or one without a minor unit "
		    "(such as XAU)\n", cur);
		return CLI_EXIT_USAGE;
	}
	if (amount[0] == '-') {
		fprintf(err, "refundsync: refund create: --amount %s: must be "
		    "more than zero\n", amount);
		return CLI_EXIT_USAGE;
	}
	if (!money_decimal_wellformed(amount)) {
		fprintf(err, "refundsync: refund create: --amount %s: not a "
		    "decimal amount such as 12.95 (digits without a leading "
		    "zero, at most one '.', no sign, spaces or grouping)\n", amount);
		return CLI_EXIT_USAGE;
	}
	dot = strchr(amount, '.');
	decimals = dot != NULL ? strlen(dot + 1) : 0;
	if (decimals > (size_t)*exponent) {
		if (*exponent == 0)
			fprintf(err, "refundsync: refund create: --amount %s: "
			    "%s has no decimals\n", amount, cur);
		else
			fprintf(err, "refundsync: refund create: --amount %s: "
			    "%s has %d decimals, not %zu\n", amount, cur,
			    *exponent, decimals);
		return CLI_EXIT_USAGE;
	}
	if ((s = money_to_minor(amount, cur, minor)) != RS_OK) {
		fprintf(err, "refundsync: refund create: --amount %s: %s\n",
		    amount, s == RS_ERR_RANGE ? "too large" : "not a decimal");
		return CLI_EXIT_USAGE;
	}
	if (*minor <= 0) {
		fprintf(err, "refundsync: refund create: --amount %s: must be "
		    "more than zero\n", amount);
		return CLI_EXIT_USAGE;
	}
	return 0;
}

int
refundcmd_check(const struct refundcmd_options *o, FILE *err)
{
	char cur[4];
	int exponent;
	int64_t minor;

	if (!id_ok(o->instance)) {
		fprintf(err, "refundsync: refund create: --instance ID is "
		    "required (1-%d bytes, no spaces)\n", RC_ID_MAX);
		return CLI_EXIT_USAGE;
	}
	if (!id_ok(o->charge)) {
		fprintf(err, "refundsync: refund create: --charge ID is "
		    "required (1-%d bytes, no spaces)\n", RC_ID_MAX);
		return CLI_EXIT_USAGE;
	}
	if ((o->reason != NULL && strlen(o->reason) > RC_TEXT_MAX) ||
	    (o->note != NULL && strlen(o->note) > RC_TEXT_MAX)) {
		fprintf(err, "refundsync: refund create: --reason and --note "
		    "take at most %d bytes\n", RC_TEXT_MAX);
		return CLI_EXIT_USAGE;
	}
	if ((o->amount == NULL) != (o->currency == NULL)) {
		fprintf(err, "refundsync: refund create: --amount and "
		    "--currency go together (neither: a full refund)\n");
		return CLI_EXIT_USAGE;
	}
	if (o->amount == NULL)
		return 0;
	return check_money(o->amount, o->currency, cur, &exponent, &minor,
	    err);
}

/* ---- the history ------------------------------------------------------ */

static void
hist_cleanup(struct rc_hist *h)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		refund_cleanup(&h->v[i]);
	free(h->v);
	memset(h, 0, sizeof(*h));
}

/* Why a REST call failed, for a message.  Caller frees. */
static char *
api_why(enum rs_status s, const struct wixapi_error *e)
{
	char a[RC_SAFE_MAX], b[RC_SAFE_MAX], r[128];
	const char *what;

	switch (s) {
	case RS_ERR_BUSY:
		what = "Wix kept failing (network errors, 5xx or 429) and the "
		    "retries ran out";
		break;
	case RS_ERR_AUTH:
		what = "Wix refused the app's credentials";
		break;
	case RS_ERR_TOOBIG:
		what = e->token ? "Wix's OAuth token answer was too large" :
		    "Wix's answer was too large";
		break;
	case RS_ERR_INPUT:
		/* Not the operator's input: what Wix's status means
		 * (WIX.md §6). */
		what = e->http_status >= 300 && e->http_status <= 399 ?
		    "Wix answered with a redirect, which is not followed "
		    "(check [wix] api_base)" : e->http_status == 401 ?
		    "Wix refused the credentials" :
		    e->http_status == 403 ? "Wix refused: no permission" :
		    e->http_status == 404 ? "Wix refused: not found" :
		    e->http_status == 409 ? "Wix refused: a conflict" :
		    e->http_status == 428 ? "Wix refused: a precondition "
		    "failed" : e->http_status >= 400 ? "Wix refused the "
		    "request" : "Wix's answer could not be read";
		break;
	default:
		what = rs_strstatus(s);
		break;
	}
	if (e->http_status == 0)
		return xstrdup(what);
	return xasprintf("%s: HTTP %ld%s%s%s%s%s%s", what, e->http_status,
	    e->code != NULL ? " " : "", e->code != NULL ? term_safe(e->code, a,
	    sizeof(a)) : "", e->message != NULL || e->description != NULL ?
	    ": " : "", term_safe(e->description != NULL ? e->description :
	    e->message, b, sizeof(b)), e->request_id != NULL ?
	    ", x-wix-request-id " : "", e->request_id != NULL ?
	    term_safe(e->request_id, r, sizeof(r)) : "");
}

/* Read every page of the charge's refunds into *h.  RS_OK, or an error
 * and *why (caller frees). */
static enum rs_status
hist_fetch(struct rc *c, struct rc_hist *h, char **why)
{
	struct wixapi_page pg;
	struct wixapi_error err;
	char *cursor = NULL;
	enum rs_status s;
	int pages = 0, restarts = 0, bad = 0;
	size_t i;

	memset(h, 0, sizeof(*h));
	memset(&pg, 0, sizeof(pg));
	memset(&err, 0, sizeof(err));
	*why = NULL;
	for (;;) {
		s = wixapi_query_refunds(c->w, c->o->instance, cursor, 100,
		    c->o->charge, &pg, &err);
		if (s == RS_ERR_RANGE && cursor != NULL && restarts < 3) {
			/* WIX.md §4: a rejected cursor: start over. */
			restarts++;
			free(cursor);
			cursor = NULL;
			hist_cleanup(h);
			wixapi_page_cleanup(&pg);
			wixapi_error_cleanup(&err);
			continue;
		}
		if (s == RS_ERR_INPUT && err.http_status >= 200 &&
		    err.http_status < 300 && bad < 3) {
			/* A malformed page: ask for it again. */
			bad++;
			wixapi_page_cleanup(&pg);
			wixapi_error_cleanup(&err);
			continue;
		}
		if (s != RS_OK) {
			*why = api_why(s, &err);
			goto out;
		}
		for (i = 0; i < pg.n; i++) {
			/* Trust the filter, but verify it. */
			if (strcmp(pg.refunds[i].charge_id, c->o->charge) != 0)
				continue;
			h->v = xreallocarray(h->v, h->n + 1, sizeof(*h->v));
			h->v[h->n++] = pg.refunds[i];
			memset(&pg.refunds[i], 0, sizeof(pg.refunds[i]));
		}
		if (!pg.has_next || pg.next_cursor == NULL)
			break;
		if ((cursor != NULL && strcmp(cursor, pg.next_cursor) == 0) ||
		    ++pages >= RC_MAX_PAGES) {
			*why = xstrdup("Query Refunds does not end (a repeated "
			    "cursor, or too many pages)");
			s = RS_ERR_INPUT;
			goto out;
		}
		free(cursor);
		cursor = pg.next_cursor;
		pg.next_cursor = NULL;
		wixapi_page_cleanup(&pg);
		wixapi_error_cleanup(&err);
	}
	s = RS_OK;
out:
	if (s != RS_OK)
		hist_cleanup(h);
	free(cursor);
	wixapi_page_cleanup(&pg);
	wixapi_error_cleanup(&err);
	return s;
}

/* Sum the SUCCEEDED refunds of h exactly.  RS_OK, or RS_ERR_RANGE and
 * *why (caller frees) when they cannot be summed exactly. */
static enum rs_status
hist_sum(struct rc *c, struct rc_hist *h, char **why)
{
	const struct refund *r;
	size_t i;

	*why = NULL;
	h->succeeded = 0;
	h->nsucceeded = h->npending = 0;
	h->currency[0] = h->other[0] = '\0';
	for (i = 0; i < h->n; i++) {
		r = &h->v[i];
		if (!c->full && strcmp(r->currency, c->currency) != 0 &&
		    h->other[0] == '\0' && strlen(r->currency) == 3)
			memcpy(h->other, r->currency, 4);
		if (strcmp(r->status, "PENDING") == 0)
			h->npending++;
		if (strcmp(r->status, "SUCCEEDED") != 0)
			continue;
		if (h->currency[0] == '\0' && strlen(r->currency) == 3)
			memcpy(h->currency, r->currency, 4);
		else if (strcmp(h->currency, r->currency) != 0) {
			*why = xasprintf("the charge has SUCCEEDED refunds in "
			    "two currencies (%s and %.3s): they cannot be "
			    "summed", h->currency, r->currency);
			return RS_ERR_RANGE;
		}
		if (!r->amount_exact || r->amount_minor < 0 ||
		    r->amount_minor > INT64_MAX - h->succeeded) {
			*why = xasprintf("refund %s: its amount cannot be "
			    "summed exactly in %.3s", r->id, r->currency);
			return RS_ERR_RANGE;
		}
		h->succeeded += r->amount_minor;
		h->nsucceeded++;
	}
	if (h->currency[0] == '\0' && c->full) {
		/* A full refund names no currency: take the history's. */
		if (h->n == 0 || strlen(h->v[0].currency) != 3)
			return RS_OK;	/* nothing to sum, nothing to show */
		memcpy(h->currency, h->v[0].currency, 4);
	}
	h->exponent = money_exponent(h->currency[0] != '\0' ? h->currency :
	    c->currency);
	if (h->exponent < 0) {
		*why = xasprintf("%s is not an ISO 4217 currency", h->currency);
		return RS_ERR_RANGE;
	}
	h->summed = true;
	return RS_OK;
}

/* minor as text with exponent decimals, into buf. */
static const char *
fmt_minor(int64_t minor, int exponent, char *buf, size_t len)
{
	if (money_format(minor, exponent, buf, len) != RS_OK)
		snprintf(buf, len, "?");
	return buf;
}

/* A refund's amount as text: exact and normalised when possible. */
static const char *
fmt_refund_amount(const struct refund *r, char *buf, size_t len)
{
	int e = money_exponent(r->currency);

	if (r->amount_exact && e >= 0 && money_format(r->amount_minor, e,
	    buf, len) == RS_OK)
		return buf;
	return term_safe(r->amount, buf, len);
}

/* An integer as a raw JSON number: a count never goes through binary
 * floating point. */
static void
rc_json_int(cJSON *o, const char *name, int64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%" PRId64, v);
	cJSON_AddRawToObject(o, name, tmp);
}

/* The --json form of h. */
static cJSON *
hist_json(const struct rc_hist *h)
{
	cJSON *o = cJSON_CreateObject(), *a, *e;
	char buf[MONEY_MAX_TEXT + 8];
	size_t i;

	a = cJSON_AddArrayToObject(o, "refunds");
	for (i = 0; i < h->n; i++)
		if (h->v[i].body != NULL && json_parse_strict(h->v[i].body,
		    strlen(h->v[i].body), JSON_MAX_DEPTH, &e, NULL) == RS_OK)
			cJSON_AddItemToArray(a, e);
	if (h->summed) {
		cJSON_AddStringToObject(o, "succeeded", fmt_minor(h->succeeded,
		    h->exponent, buf, sizeof(buf)));
		rc_json_int(o, "succeededCount", (int64_t)h->nsucceeded);
		if (h->currency[0] != '\0')
			cJSON_AddStringToObject(o, "currency", h->currency);
	}
	rc_json_int(o, "pendingCount", (int64_t)h->npending);
	return o;
}

/* Put item (owned) under key of the --json document, replacing one. */
static void
doc_set(struct rc *c, const char *key, cJSON *item)
{
	if (cJSON_HasObjectItem(c->doc, key))
		cJSON_ReplaceItemInObjectCaseSensitive(c->doc, key, item);
	else
		cJSON_AddItemToObject(c->doc, key, item);
}

/* Show the history (human) and record it in the --json document. */
static void
hist_show(struct rc *c, const struct rc_hist *h, const char *title)
{
	const struct refund *r;
	char a[MONEY_MAX_TEXT + 8], id[RC_SAFE_MAX], d[64], st[32];
	size_t i;

	doc_set(c, "history", hist_json(h));
	say(c, "%s of charge %s:\n", title, c->o->charge);
	if (h->n == 0)
		say(c, "  no refunds yet\n");
	for (i = 0; i < h->n; i++) {
		r = &h->v[i];
		say(c, "  %-28s %-27s %-10s %14s %.3s\n", term_safe(r->id, id,
		    sizeof(id)), term_safe(r->created_date != NULL ?
		    r->created_date : "-", d, sizeof(d)), term_safe(r->status, st,
		    sizeof(st)), fmt_refund_amount(r, a, sizeof(a)),
		    r->currency);
	}
	if (h->summed)
		say(c, "  refunded so far (SUCCEEDED): %s %s in %zu refund%s"
		    "%s\n", fmt_minor(h->succeeded, h->exponent, a, sizeof(a)),
		    h->currency[0] != '\0' ? h->currency : c->currency,
		    h->nsucceeded, h->nsucceeded == 1 ? "" : "s",
		    h->npending > 0 ? "; one is still PENDING" : "");
}

/* The PENDING refunds of h, for CHARGE_REFUND_IN_PROGRESS. */
static void
hist_show_pending(struct rc *c, const struct rc_hist *h)
{
	const struct refund *r;
	char a[MONEY_MAX_TEXT + 8], id[RC_SAFE_MAX], d[64];
	size_t i, n = 0;

	for (i = 0; i < h->n; i++) {
		r = &h->v[i];
		if (strcmp(r->status, "PENDING") != 0)
			continue;
		n++;
		fprintf(c->err, "  still PENDING: refund %s of %s %.3s, "
		    "created %s\n", term_safe(r->id, id, sizeof(id)),
		    fmt_refund_amount(r, a, sizeof(a)), r->currency,
		    term_safe(r->created_date != NULL ? r->created_date : "-", d,
		    sizeof(d)));
	}
	if (n == 0)
		fprintf(c->err, "  (Query Refunds does not show it yet: its "
		    "results can lag behind)\n");
}

/*
 * Read the history again after a refusal and show it as "up to date".
 * Returns true if it could be read (then *h is filled; caller cleans).
 */
static bool
hist_refresh(struct rc *c, struct rc_hist *h)
{
	char *why = NULL;

	if (hist_fetch(c, h, &why) != RS_OK) {
		complain(c, "could not read the charge's refund history: %s",
		    why);
		free(why);
		return false;
	}
	if (!c->full && hist_sum(c, h, &why) != RS_OK) {
		complain(c, "%s", why);
		free(why);
	}
	hist_show(c, h, "Up-to-date refund history");
	return true;
}

/* ---- sending and answers -------------------------------------------- */

/* Ask a yes/no question on the terminal; default no. */
static bool
ask(struct rc *c, const char *question)
{
	char line[64];
	size_t n;

	/* A prompt: if the terminal is gone, fgets() below says so. */
	(void)fflush(c->out);
	fprintf(c->err, "%s [y/N] ", question);
	(void)fflush(c->err);
	if (fgets(line, sizeof(line), c->in) == NULL)
		return false;
	n = strlen(line);
	while (n > 0 && isspace((unsigned char)line[n - 1]))
		line[--n] = '\0';
	return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0;
}

static bool
may_ask(const struct rc *c)
{
	return c->o->interactive && !c->o->yes && !c->o->json;
}

/* Send one Create Refund; prev is previouslyRefundedAmount or NULL. */
static enum rs_status
send_create(struct rc *c, const char *prev, struct wixapi_http_response *resp,
    struct wixapi_error *err)
{
	cJSON *root = cJSON_CreateObject(), *r;
	char *body;
	uint64_t before;
	enum rs_status s;

	r = cJSON_AddObjectToObject(root, "refund");
	cJSON_AddStringToObject(r, "chargeId", c->o->charge);
	if (!c->full) {
		cJSON_AddStringToObject(r, "currencyCode", c->currency);
		cJSON_AddStringToObject(r, "amount", c->amount);
	}
	if (c->o->reason != NULL)
		cJSON_AddStringToObject(r, "reason", c->o->reason);
	if (c->o->note != NULL)
		cJSON_AddStringToObject(r, "note", c->o->note);
	if (prev != NULL)
		cJSON_AddStringToObject(root, "previouslyRefundedAmount", prev);
	body = json_print(root);
	cJSON_Delete(root);
	if (c->full)
		log_info("refund create: sending Create Refund: a full refund "
		    "of charge %s", c->o->charge);
	else
		log_info("refund create: sending Create Refund: %s %s of "
		    "charge %s, previouslyRefundedAmount %s", c->amount,
		    c->currency, c->o->charge, prev);
	before = wixapi_requests_sent(c->w, c->o->instance);
	s = wixapi_call(c->w, c->o->instance, "POST", RC_PATH_CREATE, body,
	    resp, err);
	c->retried = wixapi_requests_sent(c->w, c->o->instance) - before > 1;
	free(body);
	return s;
}

/* The --json form of a refusal. */
static cJSON *
error_json(const struct wixapi_error *e, enum rs_status s)
{
	cJSON *o = cJSON_CreateObject();

	if (e->code != NULL)
		cJSON_AddStringToObject(o, "code", e->code);
	if (e->description != NULL)
		cJSON_AddStringToObject(o, "description", e->description);
	if (e->message != NULL)
		cJSON_AddStringToObject(o, "message", e->message);
	if (e->violations != NULL)
		cJSON_AddStringToObject(o, "violations", e->violations);
	if (e->http_status != 0)
		rc_json_int(o, "httpStatus", (int64_t)e->http_status);
	if (e->request_id != NULL)
		cJSON_AddStringToObject(o, "requestId", e->request_id);
	if (s != RS_ERR_INPUT)
		cJSON_AddStringToObject(o, "status", rs_strstatus(s));
	return o;
}

/* Record a created refund in the store.  true if stored (or already
 * newer there). */
static bool
record(struct rc *c, const struct refund *r)
{
	enum store_outcome oc;
	enum rs_status s;

	if ((s = store_begin(c->st)) == RS_OK &&
	    (s = store_apply_refund(c->st, r, c->o->instance, false, 0, "cli",
	    &oc)) == RS_OK)
		s = store_commit(c->st);
	if (s != RS_OK) {
		store_rollback(c->st);
		complain(c, "the refund WAS created at Wix, but the store "
		    "could not record it (%s); the Refund Created webhook "
		    "will bring it, or `refundsync reconcile --heal "
		    "--instance %s` once the store is writable",
		    rs_strstatus(s), c->o->instance);
		return false;
	}
	log_info("refund create: refund %s stored (%s)", r->id,
	    store_outcome_name(oc));
	return true;
}

/* A 2xx answer: show, record, and return the exit status. */
static int
created(struct rc *c, const struct wixapi_http_response *resp)
{
	const cJSON *ent, *si;
	cJSON *root = NULL;
	struct refund r;
	const char *why = NULL;
	char a[MONEY_MAX_TEXT + 8], id[RC_SAFE_MAX], sc[RC_SAFE_MAX],
	    sd[RC_SAFE_MAX], st[64], rid[RC_SAFE_MAX];
	int rc = CLI_EXIT_FAILURE;
	bool stored;

	memset(&r, 0, sizeof(r));
	if (resp->body == NULL || json_parse_strict(resp->body,
	    resp->body_len, 64, &root, &why) != RS_OK ||
	    (ent = json_get_object(root, "refund")) == NULL ||
	    refund_from_json(ent, &r, &why) != RS_OK) {
		complain(c, "Wix accepted the request (HTTP %ld) but its "
		    "answer could not be read (%s): the refund was probably "
		    "created; the Refund Created webhook will bring it",
		    resp->status, why != NULL ? why : "no refund in it");
		log_warnx("refund create: Wix answered HTTP %ld with an "
		    "unreadable body (x-wix-request-id %s)", resp->status,
		    term_safe(resp->request_id != NULL ? resp->request_id :
		    "none", rid, sizeof(rid)));
		doc_set(c, "outcome", cJSON_CreateString("unknown"));
		goto out;
	}
	doc_set(c, "refund", cJSON_Duplicate(ent, true));
	term_safe(r.id, id, sizeof(id));
	term_safe(r.status, st, sizeof(st));
	fmt_refund_amount(&r, a, sizeof(a));
	si = json_get_object(ent, "statusInfo");
	term_safe(json_get_string(si, "code"), sc, sizeof(sc));
	term_safe(json_get_string(si, "description"), sd, sizeof(sd));
	term_safe(resp->request_id != NULL ? resp->request_id : "none", rid,
	    sizeof(rid));
	log_info("refund create: Wix answered HTTP %ld: refund %s of %s %.3s, "
	    "status %s%s%s%s%s (x-wix-request-id %s)", resp->status, id, a,
	    r.currency, st, sc[0] != '\0' ? ", statusInfo " : "", sc,
	    sd[0] != '\0' ? ": " : "", sd, rid);
	stored = record(c, &r);
	if (strcmp(r.status, "SUCCEEDED") == 0) {
		say(c, "Refund %s of %s %.3s SUCCEEDED.\n", id, a, r.currency);
		doc_set(c, "outcome", cJSON_CreateString("succeeded"));
		rc = CLI_EXIT_OK;
	} else if (strcmp(r.status, "PENDING") == 0) {
		say(c, "Refund %s of %s %.3s is PENDING: the payment provider "
		    "is processing it.  The Refund Updated webhook will "
		    "complete it in the store.\n", id, a, r.currency);
		doc_set(c, "outcome", cJSON_CreateString("pending"));
		rc = CLI_EXIT_OK;
	} else if (strcmp(r.status, "FAILED") == 0) {
		say(c, "Refund %s of %s %.3s FAILED", id, a, r.currency);
		say(c, "%s%s%s%s.\n", sc[0] != '\0' || sd[0] != '\0' ?
		    ": statusInfo " : " (no statusInfo)", sc, sc[0] != '\0' &&
		    sd[0] != '\0' ? ": " : "", sd);
		complain(c, "the refund FAILED%s%s%s%s", sc[0] != '\0' ||
		    sd[0] != '\0' ? ": " : "", sc, sc[0] != '\0' &&
		    sd[0] != '\0' ? ": " : "", sd);
		doc_set(c, "outcome", cJSON_CreateString("failed"));
		rc = CLI_EXIT_FAILURE;
	} else {
		say(c, "Refund %s of %s %.3s was created with status %s.\n",
		    id, a, r.currency, st);
		doc_set(c, "outcome", cJSON_CreateString("created"));
		rc = CLI_EXIT_OK;
	}
	if (!stored)
		rc = CLI_EXIT_FAILURE;
out:
	refund_cleanup(&r);
	cJSON_Delete(root);
	return rc;
}

/* After a retried request was refused: point at refunds that appeared
 * since before (NULL: none known) with our amount. */
static void
explain_retry(struct rc *c, const struct rc_hist *before,
    const struct rc_hist *now)
{
	const struct refund *r;
	char id[RC_SAFE_MAX], a[MONEY_MAX_TEXT + 8], st[32];
	size_t i, j;
	bool seen;

	complain(c, "this request was sent more than once (after a network "
	    "error or a 5xx), so an earlier attempt may well have succeeded "
	    "with its answer lost");
	if (before == NULL || now == NULL)
		return;
	for (i = 0; i < now->n; i++) {
		r = &now->v[i];
		seen = false;
		for (j = 0; j < before->n && !seen; j++)
			seen = strcmp(before->v[j].id, r->id) == 0;
		if (seen || (!c->full && (!r->amount_exact ||
		    r->amount_minor != c->minor ||
		    strcmp(r->currency, c->currency) != 0)))
			continue;
		complain(c, "refund %s (%s %.3s, %s) is new since this request "
		    "began: most likely it is this request's own",
		    term_safe(r->id, id, sizeof(id)), fmt_refund_amount(r, a,
		    sizeof(a)), r->currency, term_safe(r->status, st, sizeof(st)));
	}
}

/*
 * "; refunded so far: 100.00 USD in 1 SUCCEEDED refund" from h (the
 * history the request was computed from) into buf, or "" when h could
 * not be summed.
 */
static void
sofar_text(const struct rc *c, const struct rc_hist *h, char *buf,
    size_t len)
{
	char t[MONEY_MAX_TEXT + 8];

	buf[0] = '\0';
	if (h != NULL && h->summed)
		snprintf(buf, len, "; refunded so far: %s %s in %zu SUCCEEDED "
		    "refund%s", fmt_minor(h->succeeded, h->exponent, t,
		    sizeof(t)), h->currency[0] != '\0' ? h->currency :
		    c->currency, h->nsucceeded, h->nsucceeded == 1 ? "" : "s");
}

/* refused() asks for a fresh attempt with this. */
#define RC_AGAIN	(-1)

/* The plan, before a send. */
static void
show_plan(struct rc *c, const struct rc_hist *h, const char *prev)
{
	say(c, "Will refund %s %s now, on top of %s %s refunded so far "
	    "(previouslyRefundedAmount %s).\n", c->amount, c->currency, prev,
	    h->currency[0] != '\0' ? h->currency : c->currency, prev);
}

/*
 * Create Refund did not answer 2xx: say why and return the exit status,
 * or RC_AGAIN when the operator confirmed a fresh attempt after a
 * mismatch (*confirmed is then the SUCCEEDED total shown to them).
 * before is the history the request was computed from (NULL for a full
 * refund).
 */
static int
refused(struct rc *c, enum rs_status s, const struct wixapi_error *e,
    const struct rc_hist *before, int64_t *confirmed)
{
	char code[RC_SAFE_MAX], desc[RC_SAFE_MAX], rid[128], t[MONEY_MAX_TEXT +
	    8], sofar[MONEY_MAX_TEXT + 80], *why, *q;
	struct rc_hist now;
	bool got;
	int rc = REFUNDCMD_EXIT_REFUSED;

	memset(&now, 0, sizeof(now));
	doc_set(c, "error", error_json(e, s));
	term_safe(e->code, code, sizeof(code));
	term_safe(e->description != NULL ? e->description : e->message, desc,
	    sizeof(desc));
	term_safe(e->request_id != NULL ? e->request_id : "-", rid, sizeof(rid));
	if (s == RS_ERR_INPUT && e->code != NULL && e->http_status != 401 &&
	    e->http_status != 403) {
		/* Already fully refunded: by how much, as read just before
		 * sending. */
		sofar[0] = '\0';
		if (strcmp(e->code, "CHARGE_REFUNDED") == 0)
			sofar_text(c, before, sofar, sizeof(sofar));
		log_warnx("refund create: Wix refused: %s: %s (HTTP %ld, "
		    "x-wix-request-id %s)%s", code, desc, e->http_status, rid,
		    sofar);
		complain(c, "Wix refused the refund: %s: %s%s", code, desc,
		    sofar);
		doc_set(c, "outcome", cJSON_CreateString("refused"));
		if (strcmp(e->code, "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH") ==
		    0) {
			if (!c->retried)
				complain(c, "another refund of this charge "
				    "landed between reading its history and "
				    "sending this one");
			got = hist_refresh(c, &now);
			if (c->retried)
				explain_retry(c, before, got ? &now : NULL);
			if (got && now.summed) {
				fmt_minor(now.succeeded, now.exponent, t,
				    sizeof(t));
				complain(c, "refunded so far now: %s %s in %zu "
				    "SUCCEEDED refund%s%s", t, now.currency[0]
				    != '\0' ? now.currency : c->currency,
				    now.nsucceeded, now.nsucceeded == 1 ? "" :
				    "s", now.npending > 0 ? ", and one is "
				    "PENDING" : "");
			}
			if (got && now.summed && may_ask(c)) {
				q = xasprintf("Refund %s %s now, on top of %s "
				    "%s refunded so far?", c->amount,
				    c->currency, t, now.currency[0] != '\0' ?
				    now.currency : c->currency);
				if (ask(c, q)) {
					*confirmed = now.succeeded;
					rc = RC_AGAIN;
				} else {
					complain(c, "nothing more was sent");
					doc_set(c, "outcome",
					    cJSON_CreateString("declined"));
				}
				free(q);
			} else
				complain(c, "nothing more was sent: check the "
				    "history above, then run the command "
				    "again if the refund is still wanted");
		} else if (strcmp(e->code, "CHARGE_REFUND_IN_PROGRESS") == 0) {
			/* After a retry the pending refund may well be this
			 * request's own: "try again" would refund twice. */
			complain(c, "a refund of this charge is still PENDING; "
			    "only one may be pending at a time.  Wait until it "
			    "settles (the Refund Updated webhook completes it "
			    "in the store), then %s", c->retried ? "check the "
			    "charge's history before trying again" : "try "
			    "again");
			got = hist_refresh(c, &now);
			if (got)
				hist_show_pending(c, &now);
			if (c->retried)
				explain_retry(c, before, got ? &now : NULL);
		} else if (c->retried) {
			got = hist_refresh(c, &now);
			explain_retry(c, before, got ? &now : NULL);
		}
		goto out;
	}
	if (s == RS_ERR_INPUT && e->violations != NULL) {
		term_safe(e->violations, desc, sizeof(desc));
		log_warnx("refund create: Wix rejected the request as invalid "
		    "(HTTP %ld, x-wix-request-id %s): %s", e->http_status, rid,
		    desc);
		complain(c, "Wix rejected the request as invalid: %s", desc);
		doc_set(c, "outcome", cJSON_CreateString("invalid"));
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	why = api_why(s, e);
	log_warnx("refund create: Create Refund failed: %s", why);
	complain(c, "Create Refund failed: %s", why);
	free(why);
	doc_set(c, "outcome", cJSON_CreateString("error"));
	rc = CLI_EXIT_FAILURE;
	if (s != RS_ERR_INPUT && s != RS_ERR_AUTH) {
		/* The request may have landed with its answer lost. */
		complain(c, "the refund may or may not have been created: "
		    "check the charge's history before trying again");
		(void)hist_refresh(c, &now);
	}
out:
	hist_cleanup(&now);
	return rc;
}

int
refundcmd_create(struct wixapi *w, struct store *st,
    const struct refundcmd_options *o, FILE *in, FILE *out, FILE *err)
{
	struct wixapi_http_response resp;
	struct wixapi_error e;
	struct rc_hist h;
	struct rc c;
	char *why = NULL, *q, prev[MONEY_MAX_TEXT + 8], id[RC_SAFE_MAX],
	    ch[RC_SAFE_MAX];
	int64_t confirmed = -1;
	enum rs_status s;
	bool confirm = false;
	int rc, round;

	if ((rc = refundcmd_check(o, err)) != 0)
		return rc;
	memset(&c, 0, sizeof(c));
	memset(&h, 0, sizeof(h));
	memset(&resp, 0, sizeof(resp));
	memset(&e, 0, sizeof(e));
	c.o = o;
	c.w = w;
	c.st = st;
	c.in = in;
	c.out = out;
	c.err = err;
	c.full = o->amount == NULL;
	if (!c.full && (check_money(o->amount, o->currency, c.currency,
	    &c.exponent, &c.minor, err) != 0 || money_format(c.minor,
	    c.exponent, c.amount, sizeof(c.amount)) != RS_OK))
		return CLI_EXIT_USAGE;
	who_asked(c.who, sizeof(c.who));
	c.doc = cJSON_CreateObject();
	cJSON_AddStringToObject(c.doc, "instanceId", o->instance);
	cJSON_AddStringToObject(c.doc, "chargeId", o->charge);
	cJSON_AddBoolToObject(c.doc, "full", c.full);
	if (!c.full) {
		cJSON_AddStringToObject(c.doc, "amount", c.amount);
		cJSON_AddStringToObject(c.doc, "currency", c.currency);
	}
	log_info("refund create: asked by %s: instance %s, charge %s, %s%s%s",
	    c.who, term_safe(o->instance, id, sizeof(id)), term_safe(o->charge, ch,
	    sizeof(ch)), c.full ? "a full refund" : c.amount, c.full ? "" :
	    " ", c.full ? "" : c.currency);

	if (c.full) {
		if (hist_fetch(&c, &h, &why) != RS_OK) {
			complain(&c, "could not read the charge's refund "
			    "history, so nothing was sent: %s", why);
			doc_set(&c, "outcome", cJSON_CreateString("error"));
			rc = CLI_EXIT_FAILURE;
			goto out;
		}
		if (hist_sum(&c, &h, &why) != RS_OK) {
			free(why);
			why = NULL;
		}
		hist_show(&c, &h, "Refund history");
		say(&c, "Will refund everything of charge %s not refunded yet "
		    "(a full refund: Wix rejects a second one).\n", ch);
		s = send_create(&c, NULL, &resp, &e);
		rc = s == RS_OK ? created(&c, &resp) : refused(&c, s, &e, &h,
		    &confirmed);
		if (rc == RC_AGAIN)
			rc = REFUNDCMD_EXIT_REFUSED;
		goto out;
	}

	for (round = 0;; round++) {
		/* Immediately before each send: the whole history. */
		hist_cleanup(&h);
		if (hist_fetch(&c, &h, &why) != RS_OK) {
			complain(&c, "could not read the charge's refund "
			    "history, so nothing was sent: %s", why);
			doc_set(&c, "outcome", cJSON_CreateString("error"));
			rc = CLI_EXIT_FAILURE;
			goto out;
		}
		if (hist_sum(&c, &h, &why) != RS_OK) {
			hist_show(&c, &h, "Refund history");
			complain(&c, "%s; nothing was sent", why);
			doc_set(&c, "outcome", cJSON_CreateString("error"));
			rc = CLI_EXIT_FAILURE;
			goto out;
		}
		fmt_minor(h.succeeded, h.exponent, prev, sizeof(prev));
		if (confirm && h.succeeded != confirmed) {
			/* It moved again since the operator said yes. */
			hist_show(&c, &h, "The refund history changed again");
			q = xasprintf("Refund %s %s now, on top of %s %s "
			    "refunded so far?", c.amount, c.currency, prev,
			    h.currency[0] != '\0' ? h.currency : c.currency);
			if (round >= RC_MAX_ROUNDS || !ask(&c, q)) {
				free(q);
				complain(&c, "nothing more was sent");
				doc_set(&c, "outcome",
				    cJSON_CreateString("declined"));
				rc = REFUNDCMD_EXIT_REFUSED;
				goto out;
			}
			free(q);
			confirmed = h.succeeded;
			continue;
		}
		if (!confirm)
			hist_show(&c, &h, "Refund history");
		if (h.other[0] != '\0')
			complain(&c, "warning: the charge's previous refunds "
			    "are in %s, not %s: Wix will probably refuse "
			    "(REFUND_CURRENCY_MISMATCH)", h.other, c.currency);
		show_plan(&c, &h, prev);
		doc_set(&c, "previouslyRefundedAmount",
		    cJSON_CreateString(prev));
		wixapi_http_response_cleanup(&resp);
		wixapi_error_cleanup(&e);
		s = send_create(&c, prev, &resp, &e);
		if (s == RS_OK) {
			rc = created(&c, &resp);
			goto out;
		}
		rc = refused(&c, s, &e, &h, &confirmed);
		if (rc != RC_AGAIN)
			goto out;
		if (round + 1 >= RC_MAX_ROUNDS) {
			complain(&c, "giving up after %d attempts",
			    RC_MAX_ROUNDS);
			rc = REFUNDCMD_EXIT_REFUSED;
			goto out;
		}
		confirm = true;
	}
out:
	cJSON_AddNumberToObject(c.doc, "exitCode", rc);
	if (o->json) {
		char *text = json_print(c.doc);

		fprintf(out, "%s\n", text);
		free(text);
	}
	/* The refund's outcome is decided and stays the exit code; a
	 * result that could not be written is still worth a line. */
	if (fflush(out) != 0)
		log_warn("refund create: writing the result");
	cJSON_Delete(c.doc);
	free(why);
	hist_cleanup(&h);
	wixapi_http_response_cleanup(&resp);
	wixapi_error_cleanup(&e);
	return rc;
}

/* ---- the command line ------------------------------------------------ */

static const char refund_usage[] =
"usage: refundsync refund [-c FILE] create --instance ID --charge ID\n"
"                         [--amount DEC --currency CUR] [--reason TEXT]\n"
"                         [--note TEXT] [--yes] [--json]\n";

static const struct option refund_opts[] = {
	{ "config",	required_argument,	NULL, 'c' },
	{ "instance",	required_argument,	NULL, 'i' },
	{ "charge",	required_argument,	NULL, 'C' },
	{ "amount",	required_argument,	NULL, 'a' },
	{ "currency",	required_argument,	NULL, 'u' },
	{ "reason",	required_argument,	NULL, 'r' },
	{ "note",	required_argument,	NULL, 'n' },
	{ "yes",	no_argument,		NULL, 'y' },
	{ "json",	no_argument,		NULL, 'j' },
	{ "help",	no_argument,		NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

static int
refund_usage_exit(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "refundsync: refund: %s\n", why);
	fputs(refund_usage, stderr);
	return CLI_EXIT_USAGE;
}

int
refundcmd_main(int argc, char *argv[])
{
	struct refundcmd_options o;
	struct store_options so;
	struct config *cfg = NULL;
	struct wixapi *w = NULL;
	struct store *st = NULL;
	const char *config = NULL;
	char *errors = NULL, *why = NULL;
	enum rs_status s;
	int ch, rc = CLI_EXIT_FAILURE;

	memset(&o, 0, sizeof(o));
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "c:yh", refund_opts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			/* Not the default: an unset variable in -c "$CONF"
			 * must not pick the production file, least of all
			 * for a command that sends money back. */
			if (optarg[0] == '\0')
				return refund_usage_exit("option -c: the path "
				    "is empty");
			config = optarg;
			break;
		case 'i':
			o.instance = optarg;
			break;
		case 'C':
			o.charge = optarg;
			break;
		case 'a':
			o.amount = optarg;
			break;
		case 'u':
			o.currency = optarg;
			break;
		case 'r':
			o.reason = optarg;
			break;
		case 'n':
			o.note = optarg;
			break;
		case 'y':
			o.yes = true;
			break;
		case 'j':
			o.json = true;
			break;
		case 'h':
			fputs(refund_usage, stdout);
			return CLI_EXIT_OK;
		default:
			fprintf(stderr, "refundsync refund: unknown option or "
			    "missing value '%s'\n", argv[optind - 1]);
			return refund_usage_exit(NULL);
		}
	}
	if (argc - optind != 1 || strcmp(argv[optind], "create") != 0)
		return refund_usage_exit("the only subcommand is create");
	if ((rc = refundcmd_check(&o, stderr)) != 0)
		return rc;
	o.interactive = isatty(STDIN_FILENO) == 1;
	if (config_load(config_path_choose(config), &cfg, &errors) != RS_OK) {
		fprintf(stderr, "%s", errors != NULL ? errors : "");
		if (errors == NULL || errors[0] == '\0' ||
		    errors[strlen(errors) - 1] != '\n')
			fputc('\n', stderr);
		free(errors);
		return CLI_EXIT_USAGE;
	}
	s = backfill_wixapi_new(cfg, &w, &why);
	if (s == RS_ERR_NOTFOUND) {
		fprintf(stderr, "refundsync: refund create: %s: no Wix "
		    "credentials: set [wix] app_id and app_secret_file (or "
		    "api_key_file and site_id)\n", cfg->path);
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	if (s == RS_ERR_IO) {
		/* The store's directory, as a store that cannot be
		 * opened below. */
		fprintf(stderr, "refundsync: refund create: %s (nothing was "
		    "sent)\n", why);
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	if (s != RS_OK) {
		fprintf(stderr, "refundsync: refund create: %s: %s\n",
		    cfg->path, why != NULL ? why : rs_strstatus(s));
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	/* Open the store first: a refund made must be recorded. */
	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = (int)cfg->busy_timeout_ms;
	free(why);
	why = NULL;
	if (store_open(cfg->store_path, &so, &st, &why) != RS_OK) {
		fprintf(stderr, "refundsync: refund create: store: %s "
		    "(nothing was sent)\n", why != NULL ? why :
		    "cannot open");
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	rc = refundcmd_create(w, st, &o, stdin, stdout, stderr);
out:
	free(why);
	store_close(st);
	wixapi_free(w);
	config_free(cfg);
	return rc;
}
