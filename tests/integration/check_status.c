/*
 * check_status.c: the observability contract of the real daemon (SPEC §1
 * `refundsync status`, §3 admin GET /status and GET /metrics).
 *
 * Each test starts the Wix sandbox (tests/sandbox/wix-sandbox) with 250
 * seeded refunds for one instance and the daemon with a jsonl exporter,
 * installs that instance (a backfill of 3 pages), installs a second
 * instance whose id is hostile HTML, and posts refund webhooks created
 * today and yesterday, one of them twice (a duplicate) and one in an
 * older version (stale).  Then:
 *   - GET /status is 200 text/html, refreshes itself, shows the exact
 *     backfill, exporter and per-day figures, and escapes the hostile id;
 *   - `refundsync status --json` is one JSON document with the same
 *     numbers (and the hostile id as it was), and the text form runs;
 *   - /metrics is valid Prometheus text (every line parsed, names,
 *     labels and escapes, histogram buckets) and has every series SPEC
 *     §3 names.
 * Below those, the pieces in-process: the ring of recent warnings, the
 * per-day totals of the store, and the escaping of the HTML renderer.
 */
#include <sys/types.h>

#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "adapters/store.h"
#include "adapters/store_backend.h"
#include "core/statuspage.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST		"inst-status"
#define SEED		250
/* An instance id no page may show as markup, nor a label leave as is. */
#define HOSTILE		"<script>alert(\"x\")</script>&'"
#define HOSTILE_HTML \
	"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"

/* ---- the sandbox and the daemon --------------------------------------- */

struct env {
	char		*dir;		/* the sandbox's and the secret's */
	struct tu_sandbox sb;
	struct tu_daemon *d;
	char		 today[11];
	char		 yesterday[11];
};

static void
day_of(time_t t, char out[11])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	ck_assert(strftime(out, 11, "%Y-%m-%d", &tm) == 10);
}

/* Post one refund version of INST; the HTTP status. */
static int
post_refund(const struct env *e, const char *evid, const char *id,
    const char *currency, const char *amount, int64_t rev, int64_t seq,
    const char *day)
{
	struct tu_refund r;
	struct tu_event ev;
	char created[40], *tok;
	int st;

	snprintf(created, sizeof(created), "%sT10:00:00.000Z", day);
	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-status";
	r.currency = currency;
	r.amount = amount;
	r.status = "SUCCEEDED";
	r.revision = rev;
	r.created_date = created;
	r.updated_date = created;
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = rev > 1 ? TU_UPDATED : TU_CREATED;
	ev.seq = seq;
	tok = tu_refund_webhook(e->d->key.priv_pem, &ev, &r, INST);
	ck_assert_ptr_nonnull(tok);
	st = tu_daemon_post(e->d, tok, NULL);
	free(tok);
	return st;
}

static void
install(const struct env *e, const char *instance)
{
	char *tok = tu_installed_webhook(e->d->key.priv_pem, instance,
	    TU_SANDBOX_APP_ID);

	ck_assert_ptr_nonnull(tok);
	ck_assert_int_eq(tu_daemon_post(e->d, tok, NULL), 200);
	free(tok);
}

/* Wait up to ms for the first cell of sql to be want. */
static bool
wait_sql(const struct env *e, const char *sql, int64_t want, int ms)
{
	int64_t end = clock_mono_ms() + ms;

	do {
		if (tu_sql_int(e->d, -1, "%s", sql) == want)
			return true;
		tu_sleep_ms(20);
	} while (clock_mono_ms() < end);
	return false;
}

static void
env_up(struct env *e)
{
	struct tu_conf conf;
	char *wix, *tok;
	struct tu_http_resp resp;

	memset(e, 0, sizeof(*e));
	day_of(time(NULL), e->today);
	day_of(time(NULL) - 86400, e->yesterday);
	e->dir = tu_tempdir();
	ck_assert_msg(tu_sandbox_start(&e->sb, e->dir, SEED, INST, NULL),
	    "the sandbox did not start");
	wix = tu_sandbox_wix_keys(&e->sb, e->dir);
	ck_assert_ptr_nonnull(wix);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = "[backfill]\npage_size = 100\n"
	    "[exporter j]\ntype = jsonl\npath = out.jsonl\npoll_ms = 20\n";
	e->d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(e->d != NULL, "the daemon did not start");
	free(wix);

	install(e, INST);
	install(e, HOSTILE);
	ck_assert(wait_sql(e, "SELECT count(*) FROM instances WHERE "
	    "instance_id = '" INST "' AND backfill = 'done'", 1, 60000));

	/* Today: USD 10.00 (twice, then an older version) and 2.50, EUR
	 * 7.05; yesterday: USD 0.05. */
	ck_assert_int_eq(post_refund(e, "ev-1", "rf-st-1", "USD", "10.00", 2,
	    5, e->today), 200);
	ck_assert_int_eq(post_refund(e, "ev-1", "rf-st-1", "USD", "10.00", 2,
	    5, e->today), 200);
	ck_assert_int_eq(post_refund(e, "ev-2", "rf-st-1", "USD", "10.00", 1,
	    3, e->today), 200);
	ck_assert_int_eq(post_refund(e, "ev-3", "rf-st-2", "USD", "2.50", 1,
	    1, e->today), 200);
	ck_assert_int_eq(post_refund(e, "ev-4", "rf-st-3", "EUR", "7.05", 1,
	    1, e->today), 200);
	ck_assert_int_eq(post_refund(e, "ev-5", "rf-st-4", "USD", "0.05", 1,
	    1, e->yesterday), 200);
	/* A forged one: a verify failure. */
	tok = tu_jwt_rs256(e->d->key.priv_pem, "{\"alg\":\"RS256\"}",
	    "{\"data\":\"x\"}");
	memset(&resp, 0, sizeof(resp));
	tok[strlen(tok) - 3] = tok[strlen(tok) - 3] == 'A' ? 'B' : 'A';
	ck_assert_int_eq(tu_daemon_post(e->d, tok, &resp), 401);
	tu_http_resp_cleanup(&resp);
	free(tok);

	ck_assert(wait_sql(e, "SELECT count(*) FROM refunds", SEED + 4,
	    10000));
	/* The exporter has caught up with the whole change log. */
	ck_assert(wait_sql(e, "SELECT (SELECT max(seq) FROM changes) - "
	    "(SELECT position FROM exporter_positions WHERE exporter = 'j')",
	    0, 20000));
}

static void
env_down(struct env *e)
{
	ck_assert_int_eq(tu_daemon_stop(e->d, 15000), 0);
	tu_daemon_free(e->d);
	tu_sandbox_stop(&e->sb);
	tu_rmtree(e->dir);
	free(e->dir);
}

/* ---- GET /status and `refundsync status` --------------------------------- */

static void
has(const char *body, const char *what)
{
	ck_assert_msg(strstr(body, what) != NULL, "no %s in:\n%s", what,
	    body);
}

static cJSON *
find(const cJSON *arr, const char *key, const char *val, const char *key2,
    const char *val2)
{
	const cJSON *o;

	cJSON_ArrayForEach(o, arr) {
		const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(o,
		    key));
		const char *v2 = key2 != NULL ? cJSON_GetStringValue(
		    cJSON_GetObjectItem(o, key2)) : NULL;

		if (v != NULL && strcmp(v, val) == 0 && (key2 == NULL ||
		    (v2 != NULL && strcmp(v2, val2) == 0)))
			return (cJSON *)(uintptr_t)o;
	}
	ck_abort_msg("no %s = %s in the status", key, val);
	return NULL;
}

static int64_t
num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(o, key);

	ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", key);
	return (int64_t)v->valuedouble;
}

static const char *
str(const cJSON *o, const char *key)
{
	const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(o, key));

	ck_assert_msg(v != NULL, "%s is not a string", key);
	return v;
}

static void
check_day(const cJSON *days, const char *day, const char *cur,
    int64_t count, const char *amount)
{
	const cJSON *o = find(days, "day", day, "currency", cur);

	ck_assert_int_eq(num(o, "refunds"), count);
	ck_assert_str_eq(str(o, "amount"), amount);
	ck_assert_int_eq(num(o, "not_summed"), 0);
}

START_TEST(status_page_and_cli)
{
	struct env e;
	struct tu_http_resp resp;
	char *ct, *want, *out = NULL, *err = NULL, *argv[6];
	cJSON *doc, *o, *arr;
	int64_t last;

	env_up(&e);
	last = tu_sql_int(e.d, -1, "SELECT max(seq) FROM changes");
	/* 250 backfilled, 4 from webhooks; one stale, none for dups. */
	ck_assert_int_eq(last, SEED + 4);

	memset(&resp, 0, sizeof(resp));
	ck_assert_int_eq(tu_http_get(e.d->admin_port, "/status", &resp), 200);
	ct = tu_http_header(&resp, "Content-Type");
	ck_assert_ptr_nonnull(ct);
	ck_assert_str_eq(ct, "text/html; charset=utf-8");
	free(ct);
	has(resp.body, "<!DOCTYPE html>");
	has(resp.body, "<meta http-equiv=\"refresh\" content=\"5\">");
	/* The page uses no script at all. */
	ck_assert_ptr_null(strstr(resp.body, "<script"));
	ck_assert_ptr_null(strstr(resp.body, "http://"));
	ck_assert_ptr_null(strstr(resp.body, "https://"));
	has(resp.body, "<td>" HOSTILE_HTML "</td>");
	has(resp.body, "<td>" INST "</td><td><span class=\"bar done\"><span>"
	    "</span></span><span class=\"state\">done</span></td>"
	    "<td class=\"n\">3</td><td class=\"n\">250</td>");
	want = xasprintf("<td>j</td><td class=\"n\">%lld</td>"
	    "<td class=\"n ok\">0</td><td class=\"n\">%lld</td>"
	    "<td class=\"n\">0</td><td class=\"n ok\">0</td>",
	    (long long)last, (long long)last);
	has(resp.body, want);
	free(want);
	want = xasprintf("<td>%s</td><td>USD</td><td class=\"n\">2</td>"
	    "<td class=\"n\">12.50</td>", e.today);
	has(resp.body, want);
	free(want);
	want = xasprintf("<td>%s</td><td>EUR</td><td class=\"n\">1</td>"
	    "<td class=\"n\">7.05</td>", e.today);
	has(resp.body, want);
	free(want);
	want = xasprintf("<td>%s</td><td>USD</td><td class=\"n\">1</td>"
	    "<td class=\"n\">0.05</td>", e.yesterday);
	has(resp.body, want);
	free(want);
	want = xasprintf("<div class=\"card\">Refunds<b id=\"refunds\">%d"
	    "</b></div>", SEED + 4);
	has(resp.body, want);
	free(want);
	has(resp.body, "Recent warnings and errors");
	tu_http_resp_cleanup(&resp);

	/* Not on the public listener. */
	ck_assert_int_eq(tu_http_get(e.d->port, "/status", NULL), 404);

	/* The command line, read-only, says the same. */
	argv[0] = xstrdup(tu_binary());
	argv[1] = (char *)"status";
	argv[2] = (char *)"-c";
	argv[3] = e.d->conf_path;
	argv[4] = (char *)"--json";
	argv[5] = NULL;
	ck_assert_int_eq(tu_run(argv, 30000, &out, &err), 0);
	doc = cJSON_Parse(out);
	ck_assert_msg(doc != NULL, "not JSON: %s", out);
	ck_assert_int_eq(num(cJSON_GetObjectItem(doc, "store"), "refunds"),
	    SEED + 4);
	ck_assert_int_eq(num(cJSON_GetObjectItem(doc, "store"),
	    "last_change"), last);
	arr = cJSON_GetObjectItem(doc, "instances");
	ck_assert_int_eq(cJSON_GetArraySize(arr), 2);
	o = find(arr, "instance_id", INST, NULL, NULL);
	ck_assert_str_eq(str(o, "backfill"), "done");
	ck_assert_int_eq(num(o, "pages"), 3);
	ck_assert_int_eq(num(o, "refunds"), SEED);
	(void)find(arr, "instance_id", HOSTILE, NULL, NULL);
	arr = cJSON_GetObjectItem(doc, "exporters");
	ck_assert_int_eq(cJSON_GetArraySize(arr), 1);
	o = find(arr, "exporter", "j", NULL, NULL);
	ck_assert_int_eq(num(o, "position"), last);
	ck_assert_int_eq(num(o, "lag"), 0);
	ck_assert_int_eq(num(o, "delivered"), last);
	ck_assert_int_eq(num(o, "dead_letters"), 0);
	ck_assert_int_eq(num(o, "failures"), 0);
	arr = cJSON_GetObjectItem(doc, "days");
	ck_assert_int_eq(cJSON_GetArraySize(arr), 3);
	check_day(arr, e.today, "USD", 2, "12.50");
	check_day(arr, e.today, "EUR", 1, "7.05");
	check_day(arr, e.yesterday, "USD", 1, "0.05");
	/* Newest day first. */
	ck_assert_str_eq(str(cJSON_GetArrayItem(arr, 0), "day"), e.today);
	ck_assert_str_eq(str(cJSON_GetArrayItem(arr, 2), "day"),
	    e.yesterday);
	/* Another process has no log of the daemon's. */
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(doc,
	    "recent_errors")), 0);
	cJSON_Delete(doc);
	free(out);
	free(err);

	/* The text form: aligned, and no raw control bytes. */
	argv[4] = NULL;
	ck_assert_int_eq(tu_run(argv, 30000, &out, &err), 0);
	has(out, "BACKFILL");
	has(out, INST);
	has(out, HOSTILE);
	has(out, "EXPORTERS");
	has(out, "REFUNDS PER DAY");
	want = xasprintf("%s  %-8s %7d %18s", e.today, "USD", 2, "12.50");
	has(out, want);
	free(want);
	free(out);
	free(err);

	/* Usage errors exit 2. */
	argv[4] = (char *)"extra";
	argv[5] = NULL;
	ck_assert_int_eq(tu_run(argv, 30000, NULL, NULL), 2);
	free(argv[0]);
	env_down(&e);
}
END_TEST

/* ---- /metrics: the Prometheus text format -------------------------------- */

/*
 * A parser of the text exposition format (0.0.4) that never asserts: it
 * returns false with the reason in x->err, so that the tests below can
 * show it refuses broken input.
 */
#define MAX_FAMILIES	128
#define MAX_HIST	256

struct family {
	char	name[128];
	char	type[16];
	bool	help;
	bool	done;		/* its samples are over */
};

struct hist_series {
	char	key[700];	/* family + labels without le */
	double	last_le;
	double	last_count;
	double	inf_count;
	bool	has_inf;
	double	count;
	bool	has_count;
	bool	has_sum;
};

struct expo {
	struct family	 fam[MAX_FAMILIES];
	size_t		 nfam;
	struct family	*cur;		/* the family of the last sample */
	struct hist_series hs[MAX_HIST];
	size_t		 nhs;
	int		 line;
	char		 err[256];
};

#define EXPECT(x, cond, ...) do {					\
	if (!(cond)) {							\
		int off_ = snprintf((x)->err, sizeof((x)->err),		\
		    "line %d: ", (x)->line);				\
		if (off_ > 0 && (size_t)off_ < sizeof((x)->err))	\
			snprintf((x)->err + off_, sizeof((x)->err) -	\
			    (size_t)off_, __VA_ARGS__);			\
		return false;						\
	}								\
} while (0)

static bool
metric_name_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' ||
	    s[0] == ':'))
		return false;
	for (i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' ||
		    s[i] == ':'))
			return false;
	return true;
}

static bool
label_name_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	if (n >= 2 && s[0] == '_' && s[1] == '_')
		return false;
	for (i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

static bool
value_ok(const char *s, double *out)
{
	char *end;

	if (strcmp(s, "+Inf") == 0) {
		*out = INFINITY;
		return true;
	}
	if (strcmp(s, "-Inf") == 0) {
		*out = -INFINITY;
		return true;
	}
	if (strcmp(s, "NaN") == 0) {
		*out = NAN;
		return true;
	}
	if (s[0] == '\0' || isspace((unsigned char)s[0]))
		return false;
	*out = strtod(s, &end);
	return end != s && *end == '\0';
}

static struct family *
fam_get(struct expo *x, const char *name, size_t n, bool create)
{
	size_t i;

	for (i = 0; i < x->nfam; i++)
		if (strlen(x->fam[i].name) == n &&
		    strncmp(x->fam[i].name, name, n) == 0)
			return &x->fam[i];
	if (!create || x->nfam == MAX_FAMILIES ||
	    n >= sizeof(x->fam[0].name))
		return NULL;
	memcpy(x->fam[x->nfam].name, name, n);
	x->fam[x->nfam].name[n] = '\0';
	return &x->fam[x->nfam++];
}

static struct hist_series *
hist_get(struct expo *x, const char *key)
{
	size_t i;

	for (i = 0; i < x->nhs; i++)
		if (strcmp(x->hs[i].key, key) == 0)
			return &x->hs[i];
	if (x->nhs == MAX_HIST)
		return NULL;
	memset(&x->hs[x->nhs], 0, sizeof(x->hs[0]));
	snprintf(x->hs[x->nhs].key, sizeof(x->hs[0].key), "%s", key);
	x->hs[x->nhs].last_le = -INFINITY;
	return &x->hs[x->nhs++];
}

/*
 * Parse the labels at *pp ("{...}" or nothing); put the le value in le
 * (empty if none) and the others, as written, in rest.
 */
static bool
parse_labels(struct expo *x, const char **pp, char *le, size_t lelen,
    char *rest, size_t restlen)
{
	const char *p = *pp;
	size_t rn = 0;

	le[0] = '\0';
	rest[0] = '\0';
	if (*p != '{')
		return true;
	p++;
	while (*p != '}') {
		const char *name = p, *vstart;
		size_t nlen;
		int r;

		while (*p != '\0' && *p != '=')
			p++;
		nlen = (size_t)(p - name);
		EXPECT(x, *p == '=' && label_name_ok(name, nlen),
		    "bad label name");
		p++;
		EXPECT(x, *p == '"', "label value unquoted");
		vstart = ++p;
		while (*p != '"') {
			EXPECT(x, *p != '\0', "unterminated label value");
			if (*p == '\\') {
				p++;
				EXPECT(x, *p == '\\' || *p == '"' || *p == 'n',
				    "bad escape in a label value");
			}
			p++;
		}
		if (nlen == 2 && strncmp(name, "le", 2) == 0)
			snprintf(le, lelen, "%.*s", (int)(p - vstart), vstart);
		else {
			r = snprintf(rest + rn, restlen - rn, "%.*s=\"%.*s\",",
			    (int)nlen, name, (int)(p - vstart), vstart);
			EXPECT(x, r > 0 && (size_t)r < restlen - rn,
			    "labels too long");
			rn += (size_t)r;
		}
		p++;
		if (*p == ',')
			p++;
		else
			EXPECT(x, *p == '}', "expected , or }");
	}
	*pp = p + 1;
	return true;
}

static bool
parse_hist(struct expo *x, const char *fam, const char *suffix,
    const char *le, const char *rest, double v)
{
	struct hist_series *h;
	char key[700];
	double lev;

	snprintf(key, sizeof(key), "%s{%s}", fam, rest);
	h = hist_get(x, key);
	EXPECT(x, h != NULL, "too many histogram series");
	if (strcmp(suffix, "_bucket") == 0) {
		EXPECT(x, le[0] != '\0', "a bucket without le");
		EXPECT(x, !h->has_inf, "a bucket after +Inf");
		EXPECT(x, value_ok(le, &lev) && !isnan(lev), "bad le");
		EXPECT(x, lev > h->last_le, "le not ascending");
		EXPECT(x, v >= h->last_count, "bucket counts fall");
		h->last_le = lev;
		h->last_count = v;
		if (isinf(lev) && lev > 0) {
			EXPECT(x, strcmp(le, "+Inf") == 0, "le %s", le);
			h->has_inf = true;
			h->inf_count = v;
		}
	} else if (strcmp(suffix, "_sum") == 0) {
		EXPECT(x, le[0] == '\0', "le on a _sum");
		h->has_sum = true;
	} else {
		EXPECT(x, le[0] == '\0', "le on a _count");
		h->has_count = true;
		h->count = v;
	}
	return true;
}

static bool
parse_sample(struct expo *x, const char *line)
{
	static const char *const sfx[] = { "_bucket", "_sum", "_count" };
	const char *p = line, *sp, *suffix = "";
	char le[64], rest[512], value[64];
	struct family *f;
	size_t i, n;
	double v;

	while (*p != '\0' && *p != '{' && *p != ' ')
		p++;
	n = (size_t)(p - line);
	EXPECT(x, metric_name_ok(line, n), "bad metric name");
	f = fam_get(x, line, n, false);
	for (i = 0; i < 3 && f == NULL; i++) {
		size_t sl = strlen(sfx[i]);

		if (n > sl && strncmp(line + n - sl, sfx[i], sl) == 0 &&
		    (f = fam_get(x, line, n - sl, false)) != NULL) {
			EXPECT(x, strcmp(f->type, "histogram") == 0,
			    "%s on a %s", sfx[i], f->type);
			suffix = sfx[i];
		}
	}
	EXPECT(x, f != NULL && f->type[0] != '\0', "a sample before its "
	    "# TYPE");
	EXPECT(x, strcmp(f->type, "histogram") != 0 || suffix[0] != '\0',
	    "a histogram sample without _bucket, _sum or _count");
	/* The samples of a family come together. */
	if (f != x->cur) {
		EXPECT(x, !f->done, "the samples of %s are not together",
		    f->name);
		if (x->cur != NULL)
			x->cur->done = true;
		x->cur = f;
	}
	if (!parse_labels(x, &p, le, sizeof(le), rest, sizeof(rest)))
		return false;
	EXPECT(x, *p == ' ', "no space before the value");
	p++;
	sp = strchr(p, ' ');
	n = sp != NULL ? (size_t)(sp - p) : strlen(p);
	EXPECT(x, n < sizeof(value), "value too long");
	memcpy(value, p, n);
	value[n] = '\0';
	EXPECT(x, value_ok(value, &v), "bad value '%s'", value);
	if (sp != NULL) {
		char *end;

		(void)strtoll(sp + 1, &end, 10);
		EXPECT(x, *end == '\0' && end != sp + 1, "bad timestamp");
	}
	EXPECT(x, strcmp(f->type, "counter") != 0 || v >= 0,
	    "a negative counter");
	EXPECT(x, suffix[0] != '\0' || le[0] == '\0' ||
	    strcmp(f->type, "histogram") == 0, "le outside a histogram");
	if (suffix[0] == '\0')
		return true;
	return parse_hist(x, f->name, suffix, le, rest, v);
}

/* The # HELP or # TYPE line at line (after "# HELP " or "# TYPE "). */
static bool
parse_meta(struct expo *x, const char *rest, bool help)
{
	const char *sp = strchr(rest, ' '), *q;
	struct family *f;

	EXPECT(x, sp != NULL && metric_name_ok(rest, (size_t)(sp - rest)),
	    "bad metric name in # HELP/# TYPE");
	f = fam_get(x, rest, (size_t)(sp - rest), true);
	EXPECT(x, f != NULL, "too many families");
	EXPECT(x, !f->done && f != x->cur, "# HELP/# TYPE of %s after its "
	    "samples", f->name);
	if (help) {
		EXPECT(x, !f->help, "a second # HELP of %s", f->name);
		f->help = true;
		for (q = sp + 1; *q != '\0'; q++)
			if (*q == '\\') {
				q++;
				EXPECT(x, *q == '\\' || *q == 'n',
				    "bad escape in # HELP");
			}
		return true;
	}
	EXPECT(x, strcmp(sp + 1, "counter") == 0 ||
	    strcmp(sp + 1, "gauge") == 0 || strcmp(sp + 1, "histogram") == 0,
	    "type %s", sp + 1);
	EXPECT(x, f->type[0] == '\0', "a second # TYPE of %s", f->name);
	snprintf(f->type, sizeof(f->type), "%s", sp + 1);
	return true;
}

static bool
parse_exposition(struct expo *x, const char *text)
{
	const char *p = text, *nl;
	char line[4096];
	size_t i, n;

	memset(x, 0, sizeof(*x));
	EXPECT(x, text[0] != '\0', "empty exposition");
	EXPECT(x, text[strlen(text) - 1] == '\n', "no final newline");
	for (; *p != '\0'; p = nl + 1) {
		nl = strchr(p, '\n');
		n = (size_t)(nl - p);
		x->line++;
		EXPECT(x, n > 0, "an empty line");
		EXPECT(x, n < sizeof(line), "line too long");
		memcpy(line, p, n);
		line[n] = '\0';
		if (strncmp(line, "# HELP ", 7) == 0) {
			if (!parse_meta(x, line + 7, true))
				return false;
		} else if (strncmp(line, "# TYPE ", 7) == 0) {
			if (!parse_meta(x, line + 7, false))
				return false;
		} else if (line[0] != '#' && !parse_sample(x, line))
			return false;
	}
	x->line = 0;
	for (i = 0; i < x->nfam; i++)
		EXPECT(x, x->fam[i].help && x->fam[i].type[0] != '\0',
		    "%s lacks # HELP or # TYPE", x->fam[i].name);
	for (i = 0; i < x->nhs; i++) {
		EXPECT(x, x->hs[i].has_inf && x->hs[i].has_sum &&
		    x->hs[i].has_count, "%s: +Inf, _sum or _count missing",
		    x->hs[i].key);
		EXPECT(x, x->hs[i].inf_count == x->hs[i].count,
		    "%s: the +Inf bucket is not _count", x->hs[i].key);
	}
	return true;
}

static const char *
type_of(const struct expo *x, const char *name)
{
	size_t i;

	for (i = 0; i < x->nfam; i++)
		if (strcmp(x->fam[i].name, name) == 0)
			return x->fam[i].type;
	ck_abort_msg("no family %s", name);
	return NULL;
}

/* The value of the one series of name with these labels (must exist). */
static double
series(const char *text, const char *name, const char *l1,
    const char *l2)
{
	const char *labels[3] = { l1, l2, NULL };
	double v = tu_metric(text, name, labels);

	ck_assert_msg(v >= 0, "no %s{%s,%s} in:\n%s", name,
	    l1 != NULL ? l1 : "", l2 != NULL ? l2 : "", text);
	return v;
}

START_TEST(metrics_exposition)
{
	struct env e;
	struct expo *x;
	char *text;
	int64_t last;

	env_up(&e);
	last = tu_sql_int(e.d, -1, "SELECT max(seq) FROM changes");
	/* GET /status once so that its route is counted too. */
	ck_assert_int_eq(tu_http_get(e.d->admin_port, "/status", NULL), 200);
	text = tu_daemon_metrics(e.d);
	x = xcalloc(1, sizeof(*x));
	ck_assert_msg(parse_exposition(x, text), "%s in:\n%s", x->err, text);

	ck_assert_str_eq(type_of(x, "refundsync_http_requests_total"),
	    "counter");
	ck_assert(series(text, "refundsync_http_requests_total",
	    "route=\"webhook\"", "code=\"200\"") == 8);
	ck_assert(series(text, "refundsync_http_requests_total",
	    "route=\"webhook\"", "code=\"401\"") == 1);
	ck_assert(series(text, "refundsync_http_requests_total",
	    "route=\"status\"", "code=\"200\"") == 1);
	ck_assert_str_eq(type_of(x, "refundsync_verify_failures_total"),
	    "counter");
	ck_assert(series(text, "refundsync_verify_failures_total", NULL,
	    NULL) == 1);
	ck_assert_ptr_nonnull(strstr(text,
	    "refundsync_verify_failures_total{reason=\""));
	ck_assert_str_eq(type_of(x, "refundsync_events_total"), "counter");
	/* 2 installs and 4 refund versions applied, 1 stale, 1 dup. */
	ck_assert(series(text, "refundsync_events_total",
	    "outcome=\"applied\"", NULL) == 6);
	ck_assert(series(text, "refundsync_events_total",
	    "outcome=\"stale\"", NULL) == 1);
	ck_assert(series(text, "refundsync_events_total",
	    "outcome=\"duplicate\"", NULL) == 1);
	ck_assert_str_eq(type_of(x, "refundsync_commit_seconds"),
	    "histogram");
	ck_assert(series(text, "refundsync_commit_seconds_count", NULL,
	    NULL) >= 1);
	ck_assert(series(text, "refundsync_commit_seconds_bucket",
	    "le=\"+Inf\"", NULL) == series(text,
	    "refundsync_commit_seconds_count", NULL, NULL));
	(void)series(text, "refundsync_commit_seconds_sum", NULL, NULL);
	ck_assert_str_eq(type_of(x, "refundsync_backfill_pages_total"),
	    "counter");
	ck_assert(series(text, "refundsync_backfill_pages_total",
	    "instance=\"" INST "\"", NULL) == 3);
	ck_assert(series(text, "refundsync_backfill_refunds_total",
	    "instance=\"" INST "\"", NULL) == SEED);
	/* The hostile id is a label value with its quote escaped. */
	ck_assert_ptr_nonnull(strstr(text, "instance=\"<script>alert("
	    "\\\"x\\\")</script>&'\""));
	ck_assert_str_eq(type_of(x, "refundsync_export_lag"), "gauge");
	ck_assert(series(text, "refundsync_export_lag", "exporter=\"j\"",
	    NULL) == 0);
	ck_assert(series(text, "refundsync_export_delivered_total",
	    "exporter=\"j\"", NULL) == (double)last);
	ck_assert(series(text, "refundsync_export_failures_total",
	    "exporter=\"j\"", NULL) == 0);
	ck_assert(series(text, "refundsync_export_dead_letters",
	    "exporter=\"j\"", NULL) == 0);
	free(x);
	free(text);
	env_down(&e);
}
END_TEST

/* The parser itself refuses broken expositions... */
static const char *const bad_expositions[] = {
	"m 1\n",				/* no TYPE */
	"# HELP m h\n# TYPE m counter\nm{a=\"x} 1\n",
	"# HELP m h\n# TYPE m counter\nm{1a=\"x\"} 1\n",
	"# HELP m h\n# TYPE m counter\nm{a=\"\\q\"} 1\n",
	"# HELP m h\n# TYPE m counter\nm one\n",
	"# HELP m h\n# TYPE m bogus\n",
	"# HELP m h\n# TYPE m counter\nm -1\n",
	"# HELP m h\n# TYPE m counter\n# HELP n h\n# TYPE n gauge\n"
	    "m 1\nn 1\nm 2\n",			/* not together */
	"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\n"
	    "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
	    "h_sum 1\nh_count 1\n",		/* le descending */
	"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
	    "h_sum 1\nh_count 1\n",		/* no +Inf */
	"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
	    "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
	"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
	    "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
	"# HELP h h\n# TYPE h histogram\nh 1\n",
	"# TYPE m counter\nm 1\n",		/* no HELP */
	"# HELP m h\n# TYPE m counter\nm 1",	/* no final newline */
};
#define NBAD	((int)(sizeof(bad_expositions) / sizeof(bad_expositions[0])))

START_TEST(parser_rejects)
{
	struct expo *x = xcalloc(1, sizeof(*x));

	ck_assert_msg(!parse_exposition(x, bad_expositions[_i]),
	    "bad exposition %d accepted", _i);
	ck_assert(x->err[0] != '\0');
	free(x);
}
END_TEST

/* ... and takes good ones. */
START_TEST(parser_accepts)
{
	struct expo *x = xcalloc(1, sizeof(*x));

	ck_assert_msg(parse_exposition(x, "# HELP m a \\\\ help\\n\n"
	    "# TYPE m counter\nm{a=\"q\\\"\\\\\\n\",b=\"\"} 3\nm 0\n"
	    "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\n"
	    "h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n"), "%s",
	    x->err);
	ck_assert_uint_eq(x->nfam, 2);
	ck_assert_uint_eq(x->nhs, 1);
	free(x);
}
END_TEST

/* ---- the pieces, in-process -------------------------------------------- */

START_TEST(log_ring)
{
	char *lines[LOG_RECENT_MAX + 5];
	size_t n, i;
	char want[32];
	int saved = dup(STDERR_FILENO), nul;

	/* Keep the 25 warnings off the test's output. */
	nul = open("/dev/null", O_WRONLY);
	ck_assert_int_ge(nul, 0);
	ck_assert_int_ge(dup2(nul, STDERR_FILENO), 0);
	log_recent_clear();
	ck_assert_uint_eq(log_recent_copy(lines, LOG_RECENT_MAX), 0);
	log_info("info is not kept");
	log_debug("debug is not kept");
	for (i = 0; i < LOG_RECENT_MAX + 5; i++)
		log_warnx("warning %zu\nsecond line", i);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	close(nul);

	n = log_recent_copy(lines, LOG_RECENT_MAX + 5);
	ck_assert_uint_eq(n, LOG_RECENT_MAX);
	for (i = 0; i < n; i++) {
		/* The oldest five are gone; the rest in order, on one line. */
		snprintf(want, sizeof(want), "warning %zu second line", i + 5);
		ck_assert_msg(strstr(lines[i], want) != NULL, "%s", lines[i]);
		ck_assert_ptr_nonnull(strstr(lines[i], "Z warning: "));
		ck_assert_ptr_null(strchr(lines[i], '\n'));
		free(lines[i]);
	}
	/* A copy of fewer takes the newest ones. */
	ck_assert_uint_eq(log_recent_copy(lines, 2), 2);
	ck_assert_ptr_nonnull(strstr(lines[0], "warning 23 "));
	ck_assert_ptr_nonnull(strstr(lines[1], "warning 24 "));
	free(lines[0]);
	free(lines[1]);
	log_recent_clear();
	ck_assert_uint_eq(log_recent_copy(lines, 2), 0);
}
END_TEST

struct day_rows {
	char	text[1024];
	size_t	len;
};

static enum rs_status
day_row(void *arg, const struct store_day_total *d)
{
	struct day_rows *r = arg;
	int n;

	n = snprintf(r->text + r->len, sizeof(r->text) - r->len,
	    "%s %s %lld %lld %d %lld%s;", d->day, d->currency,
	    (long long)d->count, (long long)d->sum_minor, d->exponent,
	    (long long)d->inexact, d->overflow ? " overflow" : "");
	ck_assert(n > 0 && (size_t)n < sizeof(r->text) - r->len);
	r->len += (size_t)n;
	return RS_OK;
}

static enum rs_status
day_stop(void *arg, const struct store_day_total *d)
{
	(void)arg;
	(void)d;
	return RS_ERR_RANGE;
}

START_TEST(store_per_day)
{
	struct store_options opt = { .busy_timeout_ms = 1000 };
	struct store *st = NULL;
	struct day_rows rows;
	char *dir = tu_tempdir(), *path, *why = NULL;
	sqlite3 *db;

	path = xasprintf("%s/s.db", dir);
	ck_assert_int_eq(store_open(path, &opt, &st, &why), RS_OK);
	db = store_sqlite_handle(st);
	ck_assert_ptr_nonnull(db);
#define RF(id, cur, amount, minor, exp, created, stored)		\
	"INSERT INTO refunds (id, charge_id, currency, amount,"		\
	" amount_minor, amount_exponent, status, created_date, body,"	\
	" source, stored_at) VALUES ('" id "', 'c', '" cur "', '"	\
	amount "', " minor ", " exp ", 'SUCCEEDED', " created ", '{}',"	\
	" 'cli', '" stored "');"
	ck_assert_int_eq(sqlite3_exec(db,
	    RF("a", "USD", "1.25", "125", "2", "'2026-03-02T10:00:00Z'",
	    "2026-03-05T00:00:00Z")
	    RF("b", "USD", "2.00", "200", "2", "'2026-03-02T23:59:59Z'",
	    "2026-03-05T00:00:00Z")
	    RF("c", "JPY", "500", "500", "0", "'2026-03-02T01:00:00Z'",
	    "2026-03-05T00:00:00Z")
	    RF("d", "XXY", "3.5", "NULL", "NULL", "'2026-03-03T01:00:00Z'",
	    "2026-03-05T00:00:00Z")
	    /* No createdDate: the day it was stored. */
	    RF("e", "USD", "0.01", "1", "2", "NULL", "2026-03-04T08:00:00Z")
	    /* Before the window. */
	    RF("f", "USD", "9.99", "999", "2", "'2026-02-28T10:00:00Z'",
	    "2026-03-05T00:00:00Z")
	    /* Two amounts that add up past INT64_MAX minor units: the
	     * day says so, and the query still answers (sum() used to
	     * fail it, and with it the status page and command). */
	    RF("g", "EUR", "50000000000000000.00", "5000000000000000000",
	    "2", "'2026-03-05T01:00:00Z'", "2026-03-05T02:00:00Z")
	    RF("h", "EUR", "50000000000000000.00", "5000000000000000000",
	    "2", "'2026-03-05T03:00:00Z'", "2026-03-05T04:00:00Z")
	    /* Large, but the sum fits. */
	    RF("i", "GBP", "46116860184273879.03", "4611686018427387903",
	    "2", "'2026-03-05T01:00:00Z'", "2026-03-05T02:00:00Z")
	    RF("j", "GBP", "46116860184273879.04", "4611686018427387904",
	    "2", "'2026-03-05T03:00:00Z'", "2026-03-05T04:00:00Z"),
	    NULL, NULL, NULL), SQLITE_OK);
#undef RF
	memset(&rows, 0, sizeof(rows));
	ck_assert_int_eq(store_refunds_by_day(st, "2026-03-01", day_row,
	    &rows), RS_OK);
	ck_assert_str_eq(rows.text,
	    "2026-03-05 EUR 2 0 2 0 overflow;"
	    "2026-03-05 GBP 2 9223372036854775807 2 0;"
	    "2026-03-04 USD 1 1 2 0;"
	    "2026-03-03 XXY 1 0 -1 1;"
	    "2026-03-02 JPY 1 500 0 0;"
	    "2026-03-02 USD 2 325 2 0;");
	memset(&rows, 0, sizeof(rows));
	ck_assert_int_eq(store_refunds_by_day(st, "2026-03-04", day_row,
	    &rows), RS_OK);
	ck_assert_str_eq(rows.text, "2026-03-05 EUR 2 0 2 0 overflow;"
	    "2026-03-05 GBP 2 9223372036854775807 2 0;"
	    "2026-03-04 USD 1 1 2 0;");
	ck_assert_int_eq(store_refunds_by_day(st, "2026-03-01", day_stop,
	    NULL), RS_ERR_RANGE);
	ck_assert_int_eq(store_refunds_by_day(st, "2026-3-1", day_row,
	    &rows), RS_ERR_INPUT);
	store_close(st);
	tu_rmtree(dir);
	free(dir);
	free(path);
}
END_TEST

START_TEST(html_escapes)
{
	struct status_snapshot s;
	struct status_instance in;
	struct status_exporter ex;
	struct status_day day;
	char *err = xstrdup("a <b> & \"c\" 'd'");
	struct buf b;
	cJSON *doc;
	char *text;

	memset(&s, 0, sizeof(s));
	memset(&in, 0, sizeof(in));
	memset(&ex, 0, sizeof(ex));
	snprintf(s.generated_at, sizeof(s.generated_at), "<now>");
	snprintf(s.since, sizeof(s.since), "2026-01-01");
	in.instance_id = (char *)"<i>";
	in.backfill = STORE_BACKFILL_FAILED;
	in.pages = 4;
	in.refunds = 321;
	in.last_error = (char *)"<e&>";
	ex.name = (char *)"x\"y";
	ex.lag = 7;
	ex.dead = 2;
	ex.queued = 1;
	ex.last_error = (char *)"</td><script>";
	day.day = (char *)"2026-01-02";
	day.currency = (char *)"<C>";
	day.count = 3;
	day.sum_minor = -5;
	day.exponent = 2;
	day.inexact = 0;
	day.overflow = false;
	s.instances = &in;
	s.ninstances = 1;
	s.exporters = &ex;
	s.nexporters = 1;
	s.days = &day;
	s.ndays = 1;
	s.errors[0] = err;
	s.nerrors = 1;

	buf_init(&b, 1024 * 1024);
	ck_assert_int_eq(statuspage_html(&s, &b), RS_OK);
	ck_assert_ptr_null(strstr(b.data, "<i>"));
	ck_assert_ptr_null(strstr(b.data, "<script"));
	ck_assert_ptr_null(strstr(b.data, "<C>"));
	ck_assert_ptr_null(strstr(b.data, "<now>"));
	has(b.data, "<td>&lt;i&gt;</td>");
	has(b.data, "<span class=\"bar failed\">");
	has(b.data, "<td class=\"n\">4</td><td class=\"n\">321</td>");
	has(b.data, "<td class=\"err\">&lt;e&amp;&gt;</td>");
	has(b.data, "<td>x&quot;y</td>");
	has(b.data, "<td class=\"n bad\">3 (1 queued)</td>");
	has(b.data, "&lt;/td&gt;&lt;script&gt;");
	has(b.data, "<td>&lt;C&gt;</td><td class=\"n\">3</td>"
	    "<td class=\"n\">-0.05</td>");
	has(b.data, "<li>a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;</li>");
	has(b.data, "&lt;now&gt;");
	buf_cleanup(&b);

	doc = statuspage_json(&s);
	text = cJSON_PrintUnformatted(doc);
	has(text, "\"instance_id\":\"<i>\"");
	has(text, "\"dead_letters\":2,\"queued\":1");
	has(text, "\"amount\":\"-0.05\"");
	cJSON_free(text);
	cJSON_Delete(doc);

	/* A day whose sum does not fit says so, never a wrong total. */
	day.overflow = true;
	day.sum_minor = 0;
	doc = statuspage_json(&s);
	text = cJSON_PrintUnformatted(doc);
	has(text, "\"amount\":\"overflow\"");
	cJSON_free(text);
	cJSON_Delete(doc);
	free(err);
}
END_TEST

static Suite *
status_suite(void)
{
	Suite *s = suite_create("status");
	TCase *tc = tcase_create("daemon");

	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, status_page_and_cli);
	tcase_add_test(tc, metrics_exposition);
	suite_add_tcase(s, tc);
	tc = tcase_create("pieces");
	tcase_add_test(tc, log_ring);
	tcase_add_test(tc, store_per_day);
	tcase_add_test(tc, html_escapes);
	suite_add_tcase(s, tc);
	tc = tcase_create("parser");
	tcase_add_loop_test(tc, parser_rejects, 0, NBAD);
	tcase_add_test(tc, parser_accepts);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	sr = srunner_create(status_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
