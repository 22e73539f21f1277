/*
 * check_reconcile.c: `refundsync reconcile` (issue #8; the contract is
 * the comment in src/core/reconcile.h), the real binary against the real
 * Wix sandbox (tests/sandbox/wix-sandbox) and the files of the daemon's
 * ledger, csv and jsonl exporters.
 *
 * The story:
 *  1. Clean.  The sandbox holds NSEED refunds of one instance (USD, all
 *     created on 2024-01-01); `refundsync backfill` stores them while
 *     the daemon runs a ledger exporter ("books") and a csv exporter
 *     ("rows") until `export status --json` says both hold everything.
 *     reconcile says clean, exit 0, with the exact completeness table,
 *     and `hledger bal` equals Wix's SUCCEEDED total.
 *  2. Drift, one of each kind: three refunds added in Wix only (dropped
 *     webhooks; one of them in JPY, so the table and the balances are
 *     per currency), two changed in Wix only with a higher revision (the
 *     store is stale; one went SUCCEEDED -> REVERSED, which the ledger
 *     still holds posted: "not_reversed"), one refund the store got by
 *     webhook and Wix does not return ("gone"), one ledger transaction
 *     deleted, another duplicated, and one csv row duplicated.  reconcile
 *     exits 4 and lists exactly those.
 *  3. --heal makes the safe repairs (the store takes Wix's versions with
 *     source "reconcile"; the deleted posting is requeued) and changes
 *     no file: doubled records are for a human.  The daemon then catches
 *     up (the requeued posting, the reversal and the new refunds reach
 *     the files), the "human" removes the doubled records, and a second
 *     run is clean, exit 0.
 *  4. After healing, hledger's Expenses:Refunds balance per currency
 *     equals the sum of the SUCCEEDED refunds Wix returns, read by our
 *     own Query Refunds walk, in exact minor units.
 *  5. Usage and config errors exit 2; an instance whose Wix view cannot
 *     be built is "failed", exit 1.
 * And the daemon's periodic job ([reconcile] interval, heal = yes) heals
 * dropped webhooks on its own.
 *
 * The records of the csv and jsonl files are held to their changes
 * field by field, as the journals are (tcase "rows"): an edited amount,
 * amount text or status, a jsonl line cut in half or stripped of its
 * members, a csv row a line break runs over two lines, each in a record
 * above the exporter's position too, are damaged (exit 4, --heal changes
 * nothing); values that need csv quoting or hold a control character
 * compare clean.
 *
 * The gone refund.  "gone" is reported and never healed: a refund Wix no
 * longer returns may be one Wix lost or one that should never have been
 * stored, and only a human can tell.  For the second run to be clean, as
 * the issue asks, the test plays the resolution in which Wix does have
 * it after all: it is added through the control API with the very
 * version the store holds (revision, status, amount, currency, charge,
 * and a createdDate of the same UTC day).  The alternative, a second run
 * that reports only the gone refund (drift 1, exit 4), would not show
 * that everything healed is clean in one clean run.
 *
 * File edits are made with the daemon stopped, and away from the end of
 * each file: a file exporter recovers its position from the file's last
 * commit line, so changing the tail would change what it writes next.
 *
 * All servers bind 127.0.0.1 port 0; the sandbox exits by itself after
 * 300 s.  The file runs in well under a minute.
 */
#include <sys/types.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "domain/money.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST		"shop"
#define NSEED		250
#define CLI_MS		60000		/* one command's limit */
#define WAIT_MS		30000		/* exporters catching up */
#define SEED_DAY	"2024-01-01"	/* every seeded refund's day */
#define END		((const char *)NULL)
#define ARGS(...)	((const char *const[]){ __VA_ARGS__, NULL })

/* The refund the store holds and Wix does not (until step 3). */
#define GONE_ID		"storeonly-1"
#define GONE_CHARGE	"ch-storeonly"
#define GONE_AMOUNT	"4.56"

/* What the ledger exporter writes (ledger.c). */
#define TXN_DESC	" * Wix refund "
#define COMMIT_PREFIX	"; rs-seq: "

/* A ledger journal, a csv file and a jsonl file, in the daemon's
 * directory. */
#define EXPORTERS							\
	"[exporter books]\ntype = ledger\npath = books.journal\n"	\
	"poll_ms = 20\n"						\
	"[exporter rows]\ntype = csv\npath = rows.csv\npoll_ms = 20\n"	\
	"[exporter lines]\ntype = jsonl\npath = lines.jsonl\n"		\
	"poll_ms = 20\n"
#define NEXPORTERS	3
#define BACKFILL	"[backfill]\npage_size = 100\n"			\
	"requests_per_minute = 100000\n"

/* ---- the refundsync command line ----------------------------------------- */

/*
 * Run `refundsync CMD -c CONF ARGS...` (args NULL-terminated, or NULL);
 * the exit status, with the output in *out and *err (caller frees; either
 * may be NULL).
 */
static int
rs_argv(const char *conf, char **out, char **err, const char *cmd,
    const char *const *args)
{
	char *argv[24], *o = NULL, *e = NULL;
	int n = 0, i, rc;

	argv[n++] = xstrdup(tu_binary());
	argv[n++] = xstrdup(cmd);
	argv[n++] = xstrdup("-c");
	argv[n++] = xstrdup(conf);
	for (; args != NULL && *args != NULL && n < 23; args++)
		argv[n++] = xstrdup(*args);
	argv[n] = NULL;
	rc = tu_run(argv, CLI_MS, &o, &e);
	if (getenv("RS_TEST_VERBOSE") != NULL)
		fprintf(stderr, "refundsync %s: exit %d\n%s%s", cmd, rc, o, e);
	for (i = 0; i < n; i++)
		free(argv[i]);
	if (out != NULL)
		*out = o;
	else
		free(o);
	if (err != NULL)
		*err = e;
	else
		free(e);
	return rc;
}

/* The same with the arguments in the call, ending with END. */
static int
rs(const char *conf, char **out, char **err, const char *cmd, ...)
{
	const char *args[20];
	va_list ap;
	size_t n = 0;

	va_start(ap, cmd);
	while (n < 19 && (args[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	args[n] = NULL;
	return rs_argv(conf, out, err, cmd, args);
}

/*
 * `reconcile --json` plus args (may be NULL): asserts the exit status and
 * that stdout is exactly one JSON object, and returns it (caller
 * deletes).
 */
static cJSON *
reconcile_json(const char *conf, int want, const char *const *args)
{
	const char *all[16];
	const char *end = NULL;
	char *out = NULL, *err = NULL;
	cJSON *doc;
	size_t n = 0;
	int rc;

	for (; args != NULL && *args != NULL && n < 14; args++)
		all[n++] = *args;
	all[n++] = "--json";
	all[n] = NULL;
	rc = rs_argv(conf, &out, &err, "reconcile", all);
	ck_assert_msg(rc == want, "reconcile%s%s --json: exit %d, want %d\n"
	    "stdout: %.6000s\nstderr: %.3000s", n > 1 ? " " : "",
	    n > 1 ? all[0] : "", rc, want, out, err);
	doc = cJSON_ParseWithOpts(out, &end, true);
	ck_assert_msg(cJSON_IsObject(doc), "not one JSON object: %.3000s",
	    out);
	free(out);
	free(err);
	return doc;
}

/* ---- reading the report -------------------------------------------------- */

static const cJSON *
member(const cJSON *o, const char *name)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);

	ck_assert_msg(m != NULL, "no \"%s\" in %s", name,
	    o != NULL && o->string != NULL ? o->string : "the object");
	return m;
}

static int64_t
jint(const cJSON *o, const char *name)
{
	const cJSON *m = member(o, name);

	ck_assert_msg(cJSON_IsNumber(m), "\"%s\" is not a number", name);
	return (int64_t)m->valuedouble;
}

/*
 * A revision field: a string of decimal digits (reconcile.h: "revision
 * fields are strings ("3", as every revision and amount the CLI prints)
 * or null").  Returns its value.
 */
static int64_t
jrev(const cJSON *o, const char *name)
{
	const cJSON *m = member(o, name);
	const char *p;

	ck_assert_msg(cJSON_IsString(m) && m->valuestring[0] != '\0',
	    "revision \"%s\" is not a string", name);
	for (p = m->valuestring; *p != '\0'; p++)
		ck_assert_msg(*p >= '0' && *p <= '9', "revision \"%s\" is "
		    "\"%s\"", name, m->valuestring);
	return strtoll(m->valuestring, NULL, 10);
}

static const char *
jstr(const cJSON *o, const char *name)
{
	const cJSON *m = member(o, name);

	ck_assert_msg(cJSON_IsString(m), "\"%s\" is not a string", name);
	return m->valuestring;
}

static bool
jbool(const cJSON *o, const char *name)
{
	const cJSON *m = member(o, name);

	ck_assert_msg(cJSON_IsBool(m), "\"%s\" is not a boolean", name);
	return cJSON_IsTrue(m);
}

static const cJSON *
jarr(const cJSON *o, const char *name)
{
	const cJSON *m = member(o, name);

	ck_assert_msg(cJSON_IsArray(m), "\"%s\" is not an array", name);
	return m;
}

/* The element of array list whose string member key is value. */
static const cJSON *
find_in(const cJSON *list, const char *key, const char *value)
{
	const cJSON *e, *m;

	cJSON_ArrayForEach(e, list) {
		m = cJSON_GetObjectItemCaseSensitive(e, key);
		if (cJSON_IsString(m) && strcmp(m->valuestring, value) == 0)
			return e;
	}
	ck_abort_msg("no element with %s \"%s\"", key, value);
	return NULL;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The string member key of every element of list, sorted and joined
 * with ','.  Caller frees. */
static char *
keys_of(const cJSON *list, const char *key)
{
	const char *v[64];
	const cJSON *e;
	struct buf b;
	size_t n = 0, i;

	cJSON_ArrayForEach(e, list) {
		ck_assert_uint_lt(n, 64);
		v[n++] = jstr(e, key);
	}
	qsort(v, n, sizeof(v[0]), cmp_str);
	buf_init(&b, 1 << 20);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(buf_printf(&b, "%s%s", i > 0 ? "," : "",
		    v[i]), RS_OK);
	ck_assert_int_eq(buf_append(&b, "", 0), RS_OK);
	return buf_detach(&b, NULL);
}

#define ck_keys(list, key, want) do {					\
	char *g_ = keys_of((list), (key));				\
	ck_assert_msg(strcmp(g_, (want)) == 0, "%s of %s: got \"%s\", "	\
	    "want \"%s\"", (key), #list, g_, (want));			\
	free(g_);							\
} while (0)

/* The one instance of the report, which must be name. */
static const cJSON *
only_instance(const cJSON *doc, const char *name)
{
	const cJSON *list = jarr(doc, "instances");

	ck_assert_int_eq(cJSON_GetArraySize(list), 1);
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(list, 0), "instance_id"),
	    name);
	return cJSON_GetArrayItem(list, 0);
}

/* The report's entry for exporter name, of type and view. */
static const cJSON *
exporter_of(const cJSON *inst, const char *name, const char *type,
    const char *view)
{
	const cJSON *x = find_in(jarr(inst, "exporters"), "exporter", name);

	ck_assert_str_eq(jstr(x, "type"), type);
	ck_assert_str_eq(jstr(x, "view"), view);
	return x;
}

/* Each of the NULL-terminated names is an empty array in o. */
static void
empty_lists(const cJSON *o, const char *const *names)
{
	for (; *names != NULL; names++)
		ck_assert_msg(cJSON_GetArraySize(jarr(o, *names)) == 0,
		    "\"%s\" is not empty: %s", *names,
		    cJSON_PrintUnformatted(member(o, *names)));
}

/* An instance's lists of refunds Wix and the store disagree on. */
static const char *const refund_lists[] = { "missing", "stale", "gone",
    "conflict", NULL };

/* An exporter's lists of records its file holds wrongly. */
static const char *const record_lists[] = { "missing", "doubled",
    "not_reversed", "damaged", NULL };

/* The exporters of EXPORTERS, in that order, and their types. */
static const char *const exporter_names[NEXPORTERS] = { "books", "rows",
    "lines" };
static const char *const exporter_types[NEXPORTERS] = { "ledger", "csv",
    "jsonl" };

/*
 * The report's entry for file exporter name, of type: its only
 * discrepancies are n damaged records.
 */
static const cJSON *
only_damaged(const cJSON *inst, const char *name, const char *type, int n)
{
	static const char *const others[] = { "missing", "doubled",
	    "not_reversed", NULL };
	const cJSON *x = exporter_of(inst, name, type, "file");

	empty_lists(x, others);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(x, "damaged")), n);
	return x;
}

/* Every exporter is at position, with nothing pending and no
 * discrepancy. */
static void
exporters_clean(const cJSON *inst, int64_t position)
{
	const cJSON *x;
	size_t i;

	for (i = 0; i < NEXPORTERS; i++) {
		x = exporter_of(inst, exporter_names[i], exporter_types[i],
		    "file");
		ck_assert_int_eq(jint(x, "position"), position);
		ck_assert_int_eq(jint(x, "pending"), 0);
		empty_lists(x, record_lists);
	}
}

/* The top of a report and its one instance; returns the instance. */
static const cJSON *
check_head(const cJSON *doc, const char *outcome, bool heal, int64_t drift,
    int64_t repaired, int64_t wix, int64_t store)
{
	const cJSON *inst;

	ck_assert_str_eq(jstr(doc, "outcome"), outcome);
	ck_assert(jbool(doc, "heal") == heal);
	ck_assert_int_eq(jint(doc, "drift"), drift);
	ck_assert_int_eq(jint(doc, "repaired"), repaired);
	inst = only_instance(doc, INST);
	ck_assert_str_eq(jstr(inst, "outcome"), outcome);
	ck_assert(cJSON_IsNull(member(inst, "error")));
	ck_assert_int_eq(jint(inst, "wix_refunds"), wix);
	ck_assert_int_eq(jint(inst, "store_refunds"), store);
	/* No webhook came after Wix's page in any of these runs. */
	ck_assert_int_eq(jint(inst, "ahead"), 0);
	ck_assert_int_eq(jint(inst, "drift"), drift);
	ck_assert_int_eq(jint(inst, "repaired"), repaired);
	return inst;
}

/* ---- views of the refunds ------------------------------------------------ */

struct ref {
	char	*id;
	char	*status;
	char	*currency;
	char	*amount;	/* as Wix or the store has it */
	char	 day[11];	/* createdDate's YYYY-MM-DD */
	int64_t	 minor;
	int64_t	 revision;
};

struct view {
	struct ref	*v;
	size_t		 n;
};

static void
view_free(struct view *w)
{
	size_t i;

	for (i = 0; i < w->n; i++) {
		free(w->v[i].id);
		free(w->v[i].status);
		free(w->v[i].currency);
		free(w->v[i].amount);
	}
	free(w->v);
	memset(w, 0, sizeof(*w));
}

static struct ref *
view_add(struct view *w, const char *id, const char *status,
    const char *currency, const char *amount, const char *created,
    int64_t revision)
{
	struct ref *r;

	w->v = xreallocarray(w->v, w->n + 1, sizeof(*w->v));
	r = &w->v[w->n++];
	r->id = xstrdup(id);
	r->status = xstrdup(status);
	r->currency = xstrdup(currency);
	r->amount = xstrdup(amount);
	ck_assert_msg(strlen(created) >= 10, "createdDate %s", created);
	snprintf(r->day, sizeof(r->day), "%.10s", created);
	ck_assert_msg(money_to_minor(amount, currency, &r->minor) == RS_OK,
	    "%s: %s %s is not exact", id, amount, currency);
	r->revision = revision;
	return r;
}

static const struct ref *
view_find(const struct view *w, const char *id)
{
	size_t i;

	for (i = 0; i < w->n; i++)
		if (strcmp(w->v[i].id, id) == 0)
			return &w->v[i];
	ck_abort_msg("no refund %s in the view", id);
	return NULL;
}

/* Wix's view: our own Query Refunds walk. */
static void
wix_view(const struct tu_sandbox *sb, struct view *w)
{
	cJSON *all = tu_sandbox_refunds(sb, INST, 100);
	const cJSON *r;

	memset(w, 0, sizeof(*w));
	ck_assert_msg(all != NULL, "Query Refunds failed");
	cJSON_ArrayForEach(r, all) {
		view_add(w, jstr(r, "id"), jstr(r, "status"),
		    jstr(r, "currencyCode"), jstr(r, "amount"),
		    jstr(r, "createdDate"), strtoll(jstr(r, "revision"), NULL,
		    10));
	}
	cJSON_Delete(all);
}

/* The store's view: `refunds list --json`, one object a line. */
static void
store_view(const char *conf, struct view *w)
{
	char *out = NULL, *line, *nl;
	const cJSON *rev;
	cJSON *o;

	memset(w, 0, sizeof(*w));
	ck_assert_int_eq(rs(conf, &out, NULL, "refunds", "list", "--json",
	    END), 0);
	for (line = out; *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		ck_assert_ptr_nonnull(nl);
		*nl = '\0';
		o = cJSON_Parse(line);
		ck_assert_msg(o != NULL, "refunds list: %s", line);
		rev = member(o, "revision");
		view_add(w, jstr(o, "id"), jstr(o, "status"),
		    jstr(o, "currency"), jstr(o, "amount"),
		    jstr(o, "created_date"), cJSON_IsString(rev) ?
		    strtoll(rev->valuestring, NULL, 10) : -1);
		cJSON_Delete(o);
	}
	free(out);
}

/* Count and sum of the refunds of w on day in currency with status
 * (NULL: any). */
static int64_t
tally(const struct view *w, const char *day, const char *currency,
    const char *status, int64_t *sum)
{
	int64_t n = 0;
	size_t i;

	*sum = 0;
	for (i = 0; i < w->n; i++)
		if (strcmp(w->v[i].day, day) == 0 &&
		    strcmp(w->v[i].currency, currency) == 0 &&
		    (status == NULL || strcmp(w->v[i].status, status) == 0)) {
			n++;
			*sum += w->v[i].minor;
		}
	return n;
}

/* {"count": n, "sum": "exact"} is cs. */
static void
check_count_sum(const cJSON *cs, const char *what, int64_t n, int64_t sum,
    const char *currency)
{
	char want[48];

	ck_assert_int_eq(money_format(sum, money_exponent(currency), want,
	    sizeof(want)), RS_OK);
	ck_assert_msg(jint(cs, "count") == n && strcmp(jstr(cs, "sum"),
	    want) == 0, "%s: count %lld sum %s, want %lld %s", what,
	    (long long)jint(cs, "count"), jstr(cs, "sum"), (long long)n,
	    want);
}

/*
 * A status map of the table ({"STATUS": {"count","sum"}, ...}) holds
 * exactly the count and sum of each status of w's refunds on day in
 * currency.  A status w has none of may be listed only as a zero.
 */
static void
check_status_map(const cJSON *map, const struct view *w, const char *day,
    const char *currency, const char *what)
{
	const cJSON *m;
	int64_t n, sum;
	size_t i;
	char label[96];

	ck_assert_msg(cJSON_IsObject(map), "%s is not an object", what);
	cJSON_ArrayForEach(m, map) {
		snprintf(label, sizeof(label), "%s %s %s %s", what, day,
		    currency, m->string);
		n = tally(w, day, currency, m->string, &sum);
		check_count_sum(m, label, n, sum, currency);
	}
	for (i = 0; i < w->n; i++)
		if (strcmp(w->v[i].day, day) == 0 &&
		    strcmp(w->v[i].currency, currency) == 0)
			ck_assert_msg(cJSON_GetObjectItemCaseSensitive(map,
			    w->v[i].status) != NULL, "%s %s %s: no %s", what,
			    day, currency, w->v[i].status);
}

enum ledger_check {
	LEDGER_EQUALS_WIX,	/* "books" holds Wix's SUCCEEDED */
	LEDGER_PRESENT		/* "books" is there (drift: not checked) */
};

/* A (day, currency) of the completeness table. */
struct daycur {
	char	day[11];
	char	cur[4];
	char	label[16];	/* "DAY CUR" */
};

/* Add r's (day, currency) to v[0..*n) unless it is there already. */
static struct daycur *
daycur_add(struct daycur *v, size_t *n, const struct ref *r)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if (strcmp(v[i].day, r->day) == 0 &&
		    strcmp(v[i].cur, r->currency) == 0)
			return v;
	v = xreallocarray(v, *n + 1, sizeof(*v));
	snprintf(v[*n].day, sizeof(v[*n].day), "%s", r->day);
	snprintf(v[*n].cur, sizeof(v[*n].cur), "%s", r->currency);
	snprintf(v[*n].label, sizeof(v[*n].label), "%s %s", r->day,
	    r->currency);
	(*n)++;
	return v;
}

/* The row of days for dc. */
static const cJSON *
day_row(const cJSON *days, const struct daycur *dc)
{
	const cJSON *row;

	cJSON_ArrayForEach(row, days) {
		if (strcmp(jstr(row, "day"), dc->day) == 0 &&
		    strcmp(jstr(row, "currency"), dc->cur) == 0)
			return row;
	}
	ck_abort_msg("no row for %s", dc->label);
	return NULL;
}

/*
 * The "differences" of a table row: for each status in its "wix" or
 * "store" map, one {"source": "store"} entry with the store's count and
 * sum minus Wix's, exactly when they differ, and none otherwise.
 */
static void
check_store_differences(const cJSON *row, const struct view *wix,
    const struct view *store, const struct daycur *dc)
{
	const cJSON *diffs = jarr(row, "differences"), *maps[2], *m, *d;
	int64_t nw, ns, sw, ss, found;
	char what[96];
	int k;

	maps[0] = member(row, "wix");
	maps[1] = member(row, "store");
	for (k = 0; k < 2; k++) {
		cJSON_ArrayForEach(m, maps[k]) {
			nw = tally(wix, dc->day, dc->cur, m->string, &sw);
			ns = tally(store, dc->day, dc->cur, m->string, &ss);
			found = 0;
			cJSON_ArrayForEach(d, diffs) {
				if (strcmp(jstr(d, "source"), "store") != 0 ||
				    strcmp(jstr(d, "status"), m->string) != 0)
					continue;
				found++;
				snprintf(what, sizeof(what), "%s store minus Wix "
				    "%s", dc->label, m->string);
				check_count_sum(d, what, ns - nw, ss - sw,
				    dc->cur);
			}
			ck_assert_msg(found == (ns != nw || ss != sw ? 1 : 0),
			    "%s: %lld store differences for %s, want %d",
			    dc->label, (long long)found, m->string,
			    ns != nw || ss != sw);
		}
	}
}

/*
 * The completeness table of inst: one row per (day, currency) of the
 * refunds of wix and store; each row's "wix" and "store" exact; its match
 * false exactly for the "DAY CUR" strings of mismatched (NULL-terminated;
 * NULL: none).
 */
static void
check_days(const cJSON *inst, const struct view *wix,
    const struct view *store, const char *const *mismatched,
    enum ledger_check lc)
{
	const cJSON *days = jarr(inst, "days"), *row, *ledgers;
	struct daycur *seen = NULL, *dc;
	size_t nseen = 0, i, j;
	bool want_match;
	int64_t n, sum;

	for (i = 0; i < wix->n; i++)
		seen = daycur_add(seen, &nseen, &wix->v[i]);
	for (i = 0; i < store->n; i++)
		seen = daycur_add(seen, &nseen, &store->v[i]);
	ck_assert_msg((size_t)cJSON_GetArraySize(days) == nseen, "days: %d "
	    "rows, want %zu", cJSON_GetArraySize(days), nseen);
	for (j = 0; j < nseen; j++) {
		dc = &seen[j];
		row = day_row(days, dc);
		ck_assert_int_eq(jint(row, "exponent"),
		    money_exponent(dc->cur));
		check_status_map(member(row, "wix"), wix, dc->day, dc->cur,
		    "wix");
		check_status_map(member(row, "store"), store, dc->day, dc->cur,
		    "store");
		ledgers = member(row, "ledgers");
		ck_assert_int_eq(cJSON_GetArraySize(ledgers), 1);
		if (lc == LEDGER_EQUALS_WIX) {
			n = tally(wix, dc->day, dc->cur, "SUCCEEDED", &sum);
			check_count_sum(member(ledgers, "books"), dc->label, n,
			    sum, dc->cur);
			ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(
			    member(ledgers, "books"), "pending"));
		} else
			(void)member(ledgers, "books");
		check_store_differences(row, wix, store, dc);
		want_match = true;
		for (i = 0; mismatched != NULL && mismatched[i] != NULL; i++)
			if (strcmp(mismatched[i], dc->label) == 0)
				want_match = false;
		ck_assert_msg(jbool(row, "match") == want_match, "%s: match "
		    "%d, want %d", dc->label, !want_match, want_match);
	}
	free(seen);
}

/* ---- the files ----------------------------------------------------------- */

struct lines {
	char	**v;
	size_t	  n;
};

static void
lines_read(struct lines *l, const char *path)
{
	char *text = tu_read_file(path, NULL), *p, *nl;

	ck_assert_msg(text != NULL, "%s: cannot read", path);
	memset(l, 0, sizeof(*l));
	for (p = text; *p != '\0'; p = nl + 1) {
		nl = strchr(p, '\n');
		ck_assert_msg(nl != NULL, "%s: the last line is torn", path);
		l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
		l->v[l->n++] = xstrndup(p, (size_t)(nl - p));
	}
	free(text);
}

static void
lines_write(const struct lines *l, const char *path)
{
	struct buf b;
	char *text;
	size_t i;

	buf_init(&b, 64u * 1024 * 1024);
	for (i = 0; i < l->n; i++)
		ck_assert_int_eq(buf_printf(&b, "%s\n", l->v[i]), RS_OK);
	ck_assert_int_eq(buf_append(&b, "", 0), RS_OK);
	text = buf_detach(&b, NULL);
	ck_assert(tu_write_file(path, text, false));
	free(text);
}

static void
lines_free(struct lines *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* Insert copies of lines [from, to] after line to. */
static void
lines_dup(struct lines *l, size_t from, size_t to)
{
	size_t k = to - from + 1, i;

	l->v = xreallocarray(l->v, l->n + k, sizeof(*l->v));
	memmove(&l->v[to + 1 + k], &l->v[to + 1], (l->n - to - 1) *
	    sizeof(*l->v));
	for (i = 0; i < k; i++)
		l->v[to + 1 + i] = xstrdup(l->v[from + i]);
	l->n += k;
}

/* Remove lines [from, to]. */
static void
lines_cut(struct lines *l, size_t from, size_t to)
{
	size_t i;

	for (i = from; i <= to; i++)
		free(l->v[i]);
	memmove(&l->v[from], &l->v[to + 1], (l->n - to - 1) *
	    sizeof(*l->v));
	l->n -= to - from + 1;
}

/* Is line i the date line of a ledger transaction posting refund id? */
static bool
is_post_of(const struct lines *l, size_t i, const char *id)
{
	const char *p = strstr(l->v[i], TXN_DESC);

	return p != NULL && isdigit((unsigned char)l->v[i][0]) &&
	    strcmp(p + strlen(TXN_DESC), id) == 0;
}

/* How many ledger transactions post refund id. */
static int
posts_of(const struct lines *l, const char *id)
{
	size_t i;
	int n = 0;

	for (i = 0; i < l->n; i++)
		n += is_post_of(l, i, id);
	return n;
}

/*
 * The nth (0-based) ledger transaction posting refund id: its date line
 * *first and its commit line *last (0-based); returns its seq.
 */
static int64_t
post_block(const struct lines *l, const char *id, int nth, size_t *first,
    size_t *last)
{
	size_t i, j;

	for (i = 0; i < l->n; i++) {
		if (!is_post_of(l, i, id) || nth-- > 0)
			continue;
		for (j = i + 1; j < l->n && strncmp(l->v[j], COMMIT_PREFIX,
		    strlen(COMMIT_PREFIX)) != 0; j++)
			;
		ck_assert_msg(j < l->n, "the transaction of %s has no commit "
		    "line", id);
		*first = i;
		*last = j;
		return strtoll(l->v[j] + strlen(COMMIT_PREFIX), NULL, 10);
	}
	ck_abort_msg("no ledger transaction posts %s", id);
	return -1;
}

/* Does the file at path hold line exactly? */
static bool
has_line(const char *path, const char *line)
{
	struct lines l;
	size_t i;
	bool yes = false;

	lines_read(&l, path);
	for (i = 0; i < l.n && !yes; i++)
		yes = strcmp(l.v[i], line) == 0;
	lines_free(&l);
	return yes;
}

/* The 0-based indexes of the csv rows holding key, into at[0..2);
 * returns how many there are. */
static int
csv_rows(const struct lines *l, const char *key, size_t at[2])
{
	char *needle = xasprintf(",%s,", key);
	size_t i;
	int n = 0;

	for (i = 0; i < l->n; i++)
		if (strstr(l->v[i], needle) != NULL) {
			if (n < 2)
				at[n] = i;
			n++;
		}
	free(needle);
	return n;
}

/* The 0-based index of the one csv row of refund id's first posting,
 * which is not the file's last; its seq into *seq. */
static size_t
csv_row_of(const struct lines *l, const char *id, int64_t *seq)
{
	char *key = xasprintf("rows:%s:2", id);
	size_t at[2];

	ck_assert_int_eq(csv_rows(l, key, at), 1);
	ck_assert_uint_lt(at[0] + 1, l->n);
	*seq = strtoll(l->v[at[0]], NULL, 10);
	free(key);
	return at[0];
}

/* ---- hledger ------------------------------------------------------------- */

static const char *
hledger(void)
{
	static const char *const paths[] = { "/usr/bin/hledger",
	    "/usr/local/bin/hledger" };
	size_t i;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	ck_abort_msg("hledger is not installed: run scripts/deps.sh test");
	return NULL;
}

/* Run hledger -f path args...; assert exit 0; its stdout (caller
 * frees). */
static char *
hledger_run(const char *path, const char *const *args)
{
	char *argv[16], *out = NULL, *err = NULL;
	const char *what = args[0];
	int n = 0, rc;

	argv[n++] = (char *)(uintptr_t)hledger();
	argv[n++] = (char *)"-f";
	argv[n++] = (char *)(uintptr_t)path;
	for (; *args != NULL && n < 15; args++)
		argv[n++] = (char *)(uintptr_t)*args;
	argv[n] = NULL;
	rc = tu_run(argv, CLI_MS, &out, &err);
	ck_assert_msg(rc == 0, "hledger %s: exit %d\n%s\n%s", what, rc, out,
	    err);
	free(err);
	return out;
}

/* Split a CSV line into at most max fields, unquoting. */
static size_t
csv_split(char *line, char **f, size_t max)
{
	char *r = line, *w = line;
	size_t n = 0;
	bool quoted;

	while (n < max) {
		f[n++] = w;
		quoted = *r == '"';
		if (quoted)
			r++;
		while (*r != '\0') {
			if (quoted && r[0] == '"' && r[1] == '"') {
				*w++ = '"';
				r += 2;
			} else if (quoted && *r == '"') {
				quoted = false;
				r++;
			} else if (!quoted && *r == ',')
				break;
			else
				*w++ = *r++;
		}
		if (*r != ',') {
			*w = '\0';
			break;
		}
		r++;
		*w++ = '\0';
	}
	return n;
}

/*
 * The journal is valid (hledger check --strict), and its Expenses:Refunds
 * balance per commodity is exactly the sum of the SUCCEEDED refunds of
 * wix in that currency.
 */
static void
check_hledger(const char *ledger, const struct view *wix)
{
	char *out, *line, *nl, *f[4], want[48];
	const char *curs[8];
	int64_t sums[8] = { 0 };
	size_t ncur = 0, i, j, rows = 0;

	for (i = 0; i < wix->n; i++) {
		if (strcmp(wix->v[i].status, "SUCCEEDED") != 0)
			continue;
		for (j = 0; j < ncur; j++)
			if (strcmp(curs[j], wix->v[i].currency) == 0)
				break;
		if (j == ncur) {
			ck_assert_uint_lt(ncur, 8);
			curs[ncur++] = wix->v[i].currency;
		}
		sums[j] += wix->v[i].minor;
	}
	free(hledger_run(ledger, ARGS("check", "--strict")));
	out = hledger_run(ledger, ARGS("bal", "Expenses:Refunds",
	    "--layout=bare", "-O", "csv", "-N"));
	for (line = out; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		*nl = '\0';
		if (nl > line && nl[-1] == '\r')
			nl[-1] = '\0';
		if (rows++ == 0) {
			ck_assert_str_eq(line,
			    "\"account\",\"commodity\",\"balance\"");
			continue;
		}
		ck_assert_uint_eq(csv_split(line, f, 4), 3);
		ck_assert_str_eq(f[0], "Expenses:Refunds");
		for (j = 0; j < ncur; j++)
			if (strcmp(curs[j], f[1]) == 0)
				break;
		ck_assert_msg(j < ncur, "hledger: a balance in %s, Wix has "
		    "no SUCCEEDED refund in it", f[1]);
		ck_assert_int_eq(money_format(sums[j], money_exponent(f[1]),
		    want, sizeof(want)), RS_OK);
		ck_assert_msg(strcmp(f[2], want) == 0, "hledger: %s %s, Wix's "
		    "SUCCEEDED refunds sum to %s", f[2], f[1], want);
	}
	ck_assert_uint_eq(rows, ncur + 1);
	free(out);
}

/* ---- the world: a sandbox, a daemon with three exporters ----------------- */

struct world {
	char		 *dir;		/* the sandbox's */
	struct tu_sandbox sb;
	struct tu_daemon *d;
	const char	 *conf;		/* the daemon's, borrowed */
	char		 *ledger;
	char		 *csv;
	char		 *jsonl;
};

/* A sandbox with seed refunds and a daemon using it; tail is appended
 * to the daemon's config after the backfill and exporter sections. */
static void
world_open(struct world *w, int seed, const char *tail)
{
	struct tu_conf conf;
	char *keys, *all;

	memset(w, 0, sizeof(*w));
	w->dir = tu_tempdir();
	ck_assert_msg(tu_sandbox_start(&w->sb, w->dir, seed, INST, NULL),
	    "the sandbox did not start");
	keys = tu_sandbox_wix_keys(&w->sb, w->dir);
	ck_assert_ptr_nonnull(keys);
	all = xasprintf(BACKFILL EXPORTERS "%s", tail != NULL ? tail : "");
	memset(&conf, 0, sizeof(conf));
	conf.wix = keys;
	conf.tail = all;
	w->d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(w->d != NULL, "the daemon did not start");
	free(keys);
	free(all);
	w->conf = w->d->conf_path;
	w->ledger = xasprintf("%s/books.journal", w->d->dir);
	w->csv = xasprintf("%s/rows.csv", w->d->dir);
	w->jsonl = xasprintf("%s/lines.jsonl", w->d->dir);
}

static void
world_close(struct world *w)
{
	tu_daemon_free(w->d);
	tu_sandbox_stop(&w->sb);
	tu_rmtree(w->dir);
	free(w->dir);
	free(w->ledger);
	free(w->csv);
	free(w->jsonl);
	memset(w, 0, sizeof(*w));
}

/* Does `export status --json` say the last change is last and every
 * exporter is there, with no lag and no dead letter? */
static bool
exported(const char *text, int64_t last)
{
	const cJSON *x, *lc;
	cJSON *doc = cJSON_Parse(text);
	int n = 0;
	bool ok = false;

	lc = cJSON_GetObjectItemCaseSensitive(doc, "last_change");
	if (!cJSON_IsNumber(lc) || (int64_t)lc->valuedouble != last)
		goto out;
	cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(doc,
	    "exporters")) {
		if (jint(x, "position") != last || jint(x, "lag") != 0 ||
		    jint(x, "dead_letters") != 0)
			goto out;
		n++;
	}
	ok = n == NEXPORTERS;
out:
	cJSON_Delete(doc);
	return ok;
}

/* Wait until every exporter has delivered changes 1..last, polling
 * `export status --json`. */
static void
wait_exported(const struct world *w, int64_t last)
{
	int64_t deadline = clock_mono_ms() + WAIT_MS;
	char *out = NULL, *log;
	size_t len;

	for (;;) {
		free(out);
		out = NULL;
		if (rs(w->conf, &out, NULL, "export", "status", "--json",
		    END) == 0 && exported(out, last))
			break;
		if (clock_mono_ms() >= deadline) {
			log = tu_daemon_log(w->d);
			len = strlen(log);
			ck_abort_msg("the exporters did not reach change %lld: "
			    "%s\nthe daemon's log ends:\n%s", (long long)last,
			    out, len > 3000 ? log + len - 3000 : log);
		}
		tu_sleep_ms(100);
	}
	free(out);
}

/*
 * Step 1: backfill the sandbox's NSEED refunds with the daemon running,
 * let both exporters deliver them, stop the daemon; then reconcile is
 * clean and hledger agrees with Wix.
 */
static void
step_clean(struct world *w)
{
	struct view wix, store;
	const cJSON *inst;
	char *out = NULL, *err = NULL;
	cJSON *doc;
	int rc;

	rc = rs(w->conf, &out, &err, "backfill", "--instance", INST, END);
	ck_assert_msg(rc == 0, "backfill: exit %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, INST ": done:"));
	free(out);
	free(err);
	wait_exported(w, NSEED);
	ck_assert_int_eq(tu_daemon_stop(w->d, 20000), 0);

	wix_view(&w->sb, &wix);
	store_view(w->conf, &store);
	ck_assert_uint_eq(wix.n, NSEED);
	ck_assert_uint_eq(store.n, NSEED);
	doc = reconcile_json(w->conf, 0, NULL);
	inst = check_head(doc, "clean", false, 0, 0, NSEED, NSEED);
	empty_lists(inst, refund_lists);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(inst, "exporters")),
	    NEXPORTERS);
	exporters_clean(inst, NSEED);
	/* Every seeded refund was created on one day: one row. */
	check_days(inst, &wix, &store, NULL, LEDGER_EQUALS_WIX);
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(jarr(inst, "days"), 0),
	    "day"), SEED_DAY);
	cJSON_Delete(doc);

	/* The text report agrees. */
	ck_assert_int_eq(rs(w->conf, NULL, NULL, "reconcile", END), 0);
	check_hledger(w->ledger, &wix);
	view_free(&wix);
	view_free(&store);
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(test_clean)
{
	struct world w;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	world_close(&w);
}
END_TEST

/* The refunds the drift is made of. */
struct picks {
	char	*reversed;	/* REVERSED in Wix only (stale) */
	char	*bumped;	/* a newer SUCCEEDED revision in Wix only */
	char	*deleted;	/* its ledger transaction deleted */
	char	*doubled;	/* its ledger transaction duplicated */
	char	*csv_doubled;	/* its csv row duplicated */
	int64_t	 deleted_seq;
	int64_t	 doubled_seq;
	int64_t	 csv_seq;
	int64_t	 doubled_lines[2];	/* 1-based date lines */
	int64_t	 csv_lines[2];		/* 1-based */
	char	 today[11];	/* the day of refunds created now */
};

static void
picks_free(struct picks *p)
{
	free(p->reversed);
	free(p->bumped);
	free(p->deleted);
	free(p->doubled);
	free(p->csv_doubled);
}

/* The store's SUCCEEDED refunds, sorted by id (= by seq): the ones at
 * 10, 20, ... are well inside the files. */
static void
pick(const struct view *store, struct picks *p)
{
	char **ids = xcalloc(store->n + 1, sizeof(*ids));
	size_t n = 0, i;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < store->n; i++)
		if (strcmp(store->v[i].status, "SUCCEEDED") == 0)
			ids[n++] = store->v[i].id;
	ck_assert_uint_gt(n, 60);
	qsort(ids, n, sizeof(*ids), cmp_str);
	p->reversed = xstrdup(ids[10]);
	p->bumped = xstrdup(ids[20]);
	p->deleted = xstrdup(ids[30]);
	p->doubled = xstrdup(ids[40]);
	p->csv_doubled = xstrdup(ids[50]);
	free(ids);
}

/* Pick p among the refunds the store holds. */
static void
pick_stored(const struct world *w, struct picks *p)
{
	struct view store;

	store_view(w->conf, &store);
	pick(&store, p);
	view_free(&store);
}

/* The store gets version r of a refund by a signed webhook of kind slug
 * (TU_CREATED, TU_UPDATED). */
static void
post_version(const struct world *w, const struct tu_refund *r,
    enum tu_slug slug)
{
	struct tu_event ev;
	char *evid = tu_random_id("ev-"), *tok;

	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = slug;
	ev.form = TU_FORM_OBJECT;
	ev.seq = -1;
	tok = tu_refund_webhook(w->d->key.priv_pem, &ev, r, INST);
	ck_assert_ptr_nonnull(tok);
	ck_assert_int_eq(tu_daemon_post(w->d, tok, NULL), 200);
	free(tok);
	free(evid);
}

/* The store gets USD refund id of charge, revision 1 created now, by a
 * signed webhook. */
static void
post_refund(const struct world *w, const char *id, const char *charge,
    const char *amount, const char *status)
{
	struct tu_refund r;
	char *now = tu_now_iso();

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = charge;
	r.currency = "USD";
	r.amount = amount;
	r.status = status;
	r.revision = 1;
	r.created_date = now;
	r.updated_date = now;
	post_version(w, &r, TU_CREATED);
	free(now);
}

/* The store gets a refund by a signed webhook that Wix never heard of. */
static void
post_store_only(const struct world *w)
{
	post_refund(w, GONE_ID, GONE_CHARGE, GONE_AMOUNT, "SUCCEEDED");
}

/* Edit the files as described at the top, with the daemon stopped. */
static void
edit_files(const struct world *w, struct picks *p)
{
	struct lines l;
	size_t first, last, row;

	lines_read(&l, w->ledger);
	ck_assert_int_eq(posts_of(&l, p->deleted), 1);
	ck_assert_int_eq(posts_of(&l, p->doubled), 1);
	p->deleted_seq = post_block(&l, p->deleted, 0, &first, &last);
	ck_assert_uint_lt(last + 1, l.n);
	lines_cut(&l, first, last);
	p->doubled_seq = post_block(&l, p->doubled, 0, &first, &last);
	ck_assert_uint_lt(last + 1, l.n);
	lines_dup(&l, first, last);
	p->doubled_lines[0] = (int64_t)first + 1;
	p->doubled_lines[1] = (int64_t)last + 2;
	ck_assert(is_post_of(&l, last + 1, p->doubled));
	lines_write(&l, w->ledger);
	lines_free(&l);

	lines_read(&l, w->csv);
	row = csv_row_of(&l, p->csv_doubled, &p->csv_seq);
	lines_dup(&l, row, row);
	p->csv_lines[0] = (int64_t)row + 1;
	p->csv_lines[1] = (int64_t)row + 2;
	lines_write(&l, w->csv);
	lines_free(&l);
}

/* Drift in Wix through the control API (no webhooks). */
static void
drift_wix(const struct world *w, const struct picks *p)
{
	char *json;

	ck_assert(tu_sandbox_control(&w->sb, "/_sandbox/charges",
	    "{\"instance\":\"" INST "\",\"id\":\"ch-wixonly-jpy\","
	    "\"total\":\"10000\",\"currency\":\"JPY\"}"));
	ck_assert(tu_sandbox_control(&w->sb, "/_sandbox/refunds",
	    "{\"instance\":\"" INST "\",\"refunds\":["
	    "{\"id\":\"wixonly-1\",\"chargeId\":\"ch-wixonly-1\","
	    "\"amount\":\"1.01\",\"status\":\"SUCCEEDED\"},"
	    "{\"id\":\"wixonly-2\",\"chargeId\":\"ch-wixonly-2\","
	    "\"amount\":\"2.02\",\"status\":\"SUCCEEDED\"},"
	    "{\"id\":\"wixonly-3\",\"chargeId\":\"ch-wixonly-jpy\","
	    "\"amount\":\"303\",\"status\":\"SUCCEEDED\"}]}"));
	/* Each change bumps the revision: 2 -> 3. */
	json = xasprintf("{\"instance\":\"" INST "\",\"refunds\":["
	    "{\"id\":\"%s\",\"status\":\"REVERSED\"},"
	    "{\"id\":\"%s\",\"note\":\"edited in Wix\"}]}", p->reversed,
	    p->bumped);
	ck_assert(tu_sandbox_control(&w->sb, "/_sandbox/refunds", json));
	free(json);
}

/*
 * The exporter x's list (an array of postings) holds exactly one entry:
 * refund id's first SUCCEEDED version (revision 2, posted) at seq, with
 * exporter name's key.  Returns it.
 */
static const cJSON *
only_posting(const cJSON *x, const char *list, const char *name,
    const char *id, int64_t seq)
{
	const cJSON *e;
	char key[96];

	ck_keys(jarr(x, list), "refund_id", id);
	e = cJSON_GetArrayItem(jarr(x, list), 0);
	ck_assert_int_eq(jint(e, "seq"), seq);
	ck_assert_int_eq(jrev(e, "revision"), 2);
	ck_assert_str_eq(jstr(e, "posting"), "post");
	snprintf(key, sizeof(key), "%s:%s:2", name, id);
	ck_assert_str_eq(jstr(e, "key"), key);
	return e;
}

/* x's "doubled" holds that posting of id twice, at lines[0..2). */
static void
check_doubled(const cJSON *x, const char *name, const char *id,
    int64_t seq, const int64_t lines[2])
{
	const cJSON *e = only_posting(x, "doubled", name, id, seq), *l;

	ck_assert_int_eq(jint(e, "count"), 2);
	l = jarr(e, "lines");
	ck_assert_int_eq(cJSON_GetArraySize(l), 2);
	ck_assert_int_eq((int64_t)cJSON_GetArrayItem(l, 0)->valuedouble,
	    lines[0]);
	ck_assert_int_eq((int64_t)cJSON_GetArrayItem(l, 1)->valuedouble,
	    lines[1]);
}

/* Step 2's report, healing or not. */
static void
check_drift(const cJSON *doc, const struct picks *p, bool heal,
    const struct view *wix, const struct view *store)
{
	static const char *const csv_clean[] = { "missing", "not_reversed",
	    "damaged", NULL };
	char today_usd[32], today_jpy[32], want[64];
	int i;
	const char *const mismatched[] = { SEED_DAY " USD", today_usd,
	    today_jpy, NULL };
	const cJSON *inst, *x, *e;

	inst = check_head(doc, "drift", heal, 10, heal ? 6 : 0, NSEED + 3,
	    NSEED + 1);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(inst, "conflict")), 0);

	ck_keys(jarr(inst, "missing"), "refund_id",
	    "wixonly-1,wixonly-2,wixonly-3");
	cJSON_ArrayForEach(e, jarr(inst, "missing")) {
		ck_assert_int_eq(jrev(e, "wix_revision"), 1);
		ck_assert_str_eq(jstr(e, "wix_status"), "SUCCEEDED");
		ck_assert(jbool(e, "healed") == heal);
	}

	snprintf(want, sizeof(want), "%s,%s", strcmp(p->reversed,
	    p->bumped) < 0 ? p->reversed : p->bumped, strcmp(p->reversed,
	    p->bumped) < 0 ? p->bumped : p->reversed);
	ck_keys(jarr(inst, "stale"), "refund_id", want);
	for (i = 0; i < 2; i++) {
		e = find_in(jarr(inst, "stale"), "refund_id", i == 0 ?
		    p->reversed : p->bumped);
		ck_assert_int_eq(jrev(e, "store_revision"), 2);
		ck_assert_int_eq(jrev(e, "wix_revision"), 3);
		ck_assert_str_eq(jstr(e, "store_status"), "SUCCEEDED");
		ck_assert_str_eq(jstr(e, "wix_status"), i == 0 ? "REVERSED" :
		    "SUCCEEDED");
		ck_assert(jbool(e, "healed") == heal);
	}

	ck_keys(jarr(inst, "gone"), "refund_id", GONE_ID);
	e = cJSON_GetArrayItem(jarr(inst, "gone"), 0);
	ck_assert_int_eq(jrev(e, "store_revision"), 1);
	ck_assert_str_eq(jstr(e, "store_status"), "SUCCEEDED");

	/* The ledger: the deleted posting, the doubled one, and the
	 * reversal it never got. */
	x = exporter_of(inst, "books", "ledger", "file");
	ck_assert_int_eq(jint(x, "position"), NSEED + 1);
	/* Healing made 5 changes above the position (lag, not drift): the
	 * 3 missing refunds and the reversal post, the bumped revision does
	 * not. */
	ck_assert_int_eq(jint(x, "pending"), heal ? 4 : 0);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(x, "damaged")), 0);
	e = only_posting(x, "missing", "books", p->deleted, p->deleted_seq);
	ck_assert_str_eq(jstr(e, "where"), "file");
	ck_assert(jbool(e, "requeued") == heal);
	check_doubled(x, "books", p->doubled, p->doubled_seq,
	    p->doubled_lines);
	ck_keys(jarr(x, "not_reversed"), "refund_id", p->reversed);
	e = cJSON_GetArrayItem(jarr(x, "not_reversed"), 0);
	ck_assert_str_eq(jstr(e, "status"), "REVERSED");
	/* Net postings in the file: one post, no reversal. */
	ck_assert_int_eq(jint(e, "net"), 1);

	/* The csv file: the doubled row, nothing else. */
	x = exporter_of(inst, "rows", "csv", "file");
	ck_assert_int_eq(jint(x, "position"), NSEED + 1);
	ck_assert_int_eq(jint(x, "pending"), heal ? 5 : 0);
	empty_lists(x, csv_clean);
	check_doubled(x, "rows", p->csv_doubled, p->csv_seq, p->csv_lines);

	/* The jsonl file was not edited. */
	x = exporter_of(inst, "lines", "jsonl", "file");
	ck_assert_int_eq(jint(x, "position"), NSEED + 1);
	ck_assert_int_eq(jint(x, "pending"), heal ? 5 : 0);
	empty_lists(x, record_lists);

	/* The table: the seeded day (a reversal, a lost and a doubled
	 * posting) and today's rows (the refunds Wix or the store lacks)
	 * do not match. */
	snprintf(today_usd, sizeof(today_usd), "%s USD", p->today);
	snprintf(today_jpy, sizeof(today_jpy), "%s JPY", p->today);
	check_days(inst, wix, store, mismatched, LEDGER_PRESENT);
}

/* `refunds show ID --json` is Wix's version of it, stored by source. */
static void
check_stored(const struct world *w, const struct view *wix, const char *id,
    const char *source)
{
	const struct ref *r = view_find(wix, id);
	char *out = NULL, rev[24];
	cJSON *o;

	ck_assert_int_eq(rs(w->conf, &out, NULL, "refunds", "show", id,
	    "--json", END), 0);
	o = cJSON_Parse(out);
	ck_assert_msg(o != NULL, "refunds show %s: %s", id, out);
	snprintf(rev, sizeof(rev), "%lld", (long long)r->revision);
	ck_assert_str_eq(jstr(o, "revision"), rev);
	ck_assert_str_eq(jstr(o, "status"), r->status);
	ck_assert_str_eq(jstr(o, "currency"), r->currency);
	ck_assert_str_eq(jstr(o, "amount"), r->amount);
	ck_assert_str_eq(jstr(o, "source"), source);
	cJSON_Delete(o);
	free(out);
}

/* The first cell of sql on the store is want. */
static void
check_sql(const struct world *w, const char *sql, const char *want)
{
	char *got = tu_sql(w->d->db_path, sql);

	ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s:\n got "
	    "%s\nwant %s", sql, got != NULL ? got : "(nothing)", want);
	free(got);
}

/* The file at path still holds before, which is freed. */
static void
check_unchanged(const char *path, char *before)
{
	char *text = tu_read_file(path, NULL);

	ck_assert_str_eq(text, before);
	free(text);
	free(before);
}

/*
 * Every exporter's deliveries above position were never committed, as a
 * crash between writing a record and recording it delivered leaves
 * them: the files hold records above the exporters' positions.
 */
static void
uncommit_above(const struct world *w, int64_t position)
{
	char *sql;

	sql = xasprintf("UPDATE exporter_positions SET position = %lld; "
	    "DELETE FROM exporter_deliveries WHERE seq > %lld;",
	    (long long)position, (long long)position);
	tu_sql_exec(w->d->db_path, sql);
	free(sql);
}

/* The "human": remove the second copy of the doubled ledger transaction
 * and csv row. */
static void
fix_doubles(const struct world *w, const struct picks *p)
{
	struct lines l;
	size_t f0, l0, f1, l1, i, at[2];
	char *key;

	lines_read(&l, w->ledger);
	ck_assert_int_eq(posts_of(&l, p->doubled), 2);
	(void)post_block(&l, p->doubled, 0, &f0, &l0);
	(void)post_block(&l, p->doubled, 1, &f1, &l1);
	ck_assert_uint_eq(l1 - f1, l0 - f0);
	for (i = 0; i <= l0 - f0; i++)
		ck_assert_str_eq(l.v[f0 + i], l.v[f1 + i]);
	lines_cut(&l, f1, l1);
	lines_write(&l, w->ledger);
	lines_free(&l);

	lines_read(&l, w->csv);
	key = xasprintf("rows:%s:2", p->csv_doubled);
	ck_assert_int_eq(csv_rows(&l, key, at), 2);
	ck_assert_str_eq(l.v[at[0]], l.v[at[1]]);
	lines_cut(&l, at[1], at[1]);
	lines_write(&l, w->csv);
	lines_free(&l);
	free(key);
}

/*
 * Steps 2-4: drift of every kind, reported exactly; --heal repairs the
 * safe part and no file; after the exporters caught up and a human
 * removed the doubles (and Wix turned out to have the gone refund), a
 * second run is clean and hledger equals Wix per currency.
 */
START_TEST(test_drift_heal)
{
	struct world w;
	struct picks p;
	struct view wix, store;
	char *ledger_before, *csv_before, *jsonl_before, *now, *line;
	char *out = NULL;
	const cJSON *inst;
	cJSON *doc;
	size_t i;

	world_open(&w, NSEED, NULL);
	step_clean(&w);

	/* Step 2: drift.  The store-only refund comes by webhook. */
	ck_assert(tu_daemon_restart(w.d));
	post_store_only(&w);
	wait_exported(&w, NSEED + 1);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	pick_stored(&w, &p);
	edit_files(&w, &p);
	drift_wix(&w, &p);
	wix_view(&w.sb, &wix);
	store_view(w.conf, &store);
	snprintf(p.today, sizeof(p.today), "%s",
	    view_find(&wix, "wixonly-1")->day);
	ck_assert_str_eq(view_find(&store, GONE_ID)->day, p.today);
	ck_assert_str_eq(view_find(&wix, "wixonly-3")->currency, "JPY");

	doc = reconcile_json(w.conf, 4, NULL);
	check_drift(doc, &p, false, &wix, &store);
	cJSON_Delete(doc);
	/* The text report: exit 4, and it names every discrepancy. */
	ck_assert_int_eq(rs(w.conf, &out, NULL, "reconcile", END), 4);
	{
		const char *const named[] = { "wixonly-1", "wixonly-2",
		    "wixonly-3", p.reversed, p.bumped, GONE_ID, p.deleted,
		    p.doubled, p.csv_doubled, NULL };

		for (i = 0; named[i] != NULL; i++)
			ck_assert_msg(strstr(out, named[i]) != NULL, "the "
			    "text report does not name %s:\n%s", named[i],
			    out);
	}
	free(out);
	out = NULL;
	/* Nothing changed. */
	view_free(&store);
	store_view(w.conf, &store);
	ck_assert_uint_eq(store.n, NSEED + 1);

	/* Step 3: heal. */
	ledger_before = tu_read_file(w.ledger, NULL);
	csv_before = tu_read_file(w.csv, NULL);
	jsonl_before = tu_read_file(w.jsonl, NULL);
	doc = reconcile_json(w.conf, 4, ARGS("--heal"));
	check_drift(doc, &p, true, &wix, &store);
	cJSON_Delete(doc);
	/* Each repair and each run is on record. */
	check_sql(&w, "SELECT group_concat(kind || '=' || n, ',') FROM "
	    "(SELECT kind, count(*) AS n FROM reconcile_repairs GROUP BY kind "
	    "ORDER BY kind)", "posting_requeued=1,refund_missing=3,"
	    "refund_stale=2");
	check_sql(&w, "SELECT group_concat(refund_id, ',') FROM (SELECT "
	    "refund_id FROM reconcile_repairs WHERE kind = 'refund_missing' "
	    "ORDER BY refund_id)", "wixonly-1,wixonly-2,wixonly-3");
	check_sql(&w, "SELECT outcome || ' ' || heal || ' ' || drift || ' ' || "
	    "repaired || ' ' || wix_refunds || ' ' || store_refunds FROM "
	    "reconcile_runs ORDER BY id DESC LIMIT 1", "drift 1 10 6 253 251");
	/* Doubled records are for a human: no file was touched. */
	check_unchanged(w.ledger, ledger_before);
	check_unchanged(w.csv, csv_before);
	check_unchanged(w.jsonl, jsonl_before);
	/* The store took Wix's versions; the gone refund stays. */
	check_stored(&w, &wix, "wixonly-1", "reconcile");
	check_stored(&w, &wix, "wixonly-2", "reconcile");
	check_stored(&w, &wix, "wixonly-3", "reconcile");
	check_stored(&w, &wix, p.reversed, "reconcile");
	check_stored(&w, &wix, p.bumped, "reconcile");
	check_stored(&w, &wix, p.deleted, "backfill");
	view_free(&store);
	store_view(w.conf, &store);
	ck_assert_uint_eq(store.n, NSEED + 4);
	ck_assert_str_eq(view_find(&store, GONE_ID)->status, "SUCCEEDED");

	/* The exporters follow: 5 new changes, and the requeued posting. */
	ck_assert(tu_daemon_restart(w.d));
	wait_exported(&w, NSEED + 1 + 5);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	line = xasprintf("    ; rs-key: books:%s:2", p.deleted);
	ck_assert_msg(has_line(w.ledger, line), "the requeued posting of %s "
	    "is not in the ledger", p.deleted);
	free(line);
	line = xasprintf("    ; rs-key: books:%s:3:reverse", p.reversed);
	ck_assert_msg(has_line(w.ledger, line), "no reversal of %s",
	    p.reversed);
	free(line);
	fix_doubles(&w, &p);
	/* Wix has the gone refund after all, at the store's version. */
	now = tu_now_iso();
	ck_assert_msg(strncmp(now, p.today, 10) == 0, "the test ran across "
	    "midnight UTC (%s, %s): run it again", p.today, now);
	free(now);
	ck_assert(tu_sandbox_control(&w.sb, "/_sandbox/refunds",
	    "{\"instance\":\"" INST "\",\"id\":\"" GONE_ID "\","
	    "\"chargeId\":\"" GONE_CHARGE "\",\"amount\":\"" GONE_AMOUNT "\","
	    "\"status\":\"SUCCEEDED\",\"revision\":1}"));

	/* The second run is clean. */
	view_free(&wix);
	view_free(&store);
	wix_view(&w.sb, &wix);
	store_view(w.conf, &store);
	ck_assert_uint_eq(wix.n, NSEED + 4);
	doc = reconcile_json(w.conf, 0, NULL);
	inst = check_head(doc, "clean", false, 0, 0, NSEED + 4, NSEED + 4);
	empty_lists(inst, refund_lists);
	exporters_clean(inst, NSEED + 6);
	check_days(inst, &wix, &store, NULL, LEDGER_EQUALS_WIX);
	cJSON_Delete(doc);

	/* Step 4: the books equal Wix, per currency. */
	check_hledger(w.ledger, &wix);

	view_free(&wix);
	view_free(&store);
	picks_free(&p);
	world_close(&w);
}
END_TEST

/*
 * Add delta minor units to the USD amount on the posting line of
 * account within lines [first, last] of l.
 */
static void
bump_posting(struct lines *l, size_t first, size_t last, const char *account,
    int64_t delta)
{
	char *p, *end, text[64], amount[64];
	int64_t minor;
	size_t i, n;
	bool neg;

	for (i = first; i <= last; i++) {
		p = l->v[i];
		while (*p == ' ')
			p++;
		if (strncmp(p, account, strlen(account)) != 0 ||
		    p[strlen(account)] != ' ')
			continue;
		p += strlen(account);
		while (*p == ' ')
			p++;
		end = strstr(p, " USD");
		ck_assert_ptr_nonnull(end);
		neg = *p == '-';
		n = (size_t)(end - p) - (neg ? 1 : 0);
		ck_assert_uint_lt(n, sizeof(text));
		memcpy(text, p + (neg ? 1 : 0), n);
		text[n] = '\0';
		ck_assert_int_eq(money_to_minor(text, "USD", &minor), RS_OK);
		minor = (neg ? -minor : minor) + delta;
		ck_assert_int_eq(money_format(minor, 2, amount,
		    sizeof(amount)), RS_OK);
		*p = '\0';
		p = xasprintf("%s%s USD", l->v[i], amount);
		free(l->v[i]);
		l->v[i] = p;
		return;
	}
	ck_abort_msg("no %s line in lines %zu-%zu", account, first + 1,
	    last + 1);
}

/*
 * A ledger transaction whose amount was edited by hand (still balanced)
 * is a damaged record: the books no longer hold what Wix says, so the
 * run is drift, exit 4, and names the line.
 */
START_TEST(test_edited_amount)
{
	struct world w;
	struct picks p;
	struct lines l;
	size_t first, last;
	int64_t seq;
	const cJSON *inst, *x, *e;
	cJSON *doc;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	pick_stored(&w, &p);
	lines_read(&l, w.ledger);
	seq = post_block(&l, p.deleted, 0, &first, &last);
	ck_assert_uint_lt(last + 1, l.n);
	bump_posting(&l, first, last, "Expenses:Refunds", 100);
	bump_posting(&l, first, last, "Assets:Wix:Clearing", -100);
	lines_write(&l, w.ledger);
	lines_free(&l);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, 1, 0, NSEED, NSEED);
	empty_lists(inst, refund_lists);
	x = only_damaged(inst, "books", "ledger", 1);
	e = cJSON_GetArrayItem(jarr(x, "damaged"), 0);
	ck_assert_int_eq(jint(e, "line"), (int64_t)first + 1);
	ck_assert_int_eq(jint(e, "seq"), seq);
	ck_assert_str_eq(jstr(e, "refund_id"), p.deleted);
	ck_assert_msg(strstr(jstr(e, "why"), "refund account") != NULL,
	    "why: %s", jstr(e, "why"));
	(void)only_damaged(inst, "rows", "csv", 0);
	(void)only_damaged(inst, "lines", "jsonl", 0);
	ck_assert(!jbool(cJSON_GetArrayItem(jarr(inst, "days"), 0), "match"));
	cJSON_Delete(doc);
	ck_assert_int_eq(rs(w.conf, NULL, NULL, "reconcile", END), 4);
	picks_free(&p);
	world_close(&w);
}
END_TEST

/*
 * A transaction added to the journal by hand, with no rs- metadata at
 * all, moves the refund account: reconcile reports it as damaged, once,
 * and the run is drift, exit 4.  So is a transaction whose rs-refund-id
 * was changed to a refund no view has.
 */
START_TEST(test_foreign_transaction)
{
	struct world w;
	struct picks p;
	struct lines l;
	size_t first, last, renamed, i;
	char *meta;
	const cJSON *inst, *x, *e;
	cJSON *doc;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	pick_stored(&w, &p);
	lines_read(&l, w.ledger);
	(void)post_block(&l, p.deleted, 0, &first, &last);
	ck_assert_uint_lt(last + 1, l.n);
	/* After the commit line: a blank line, then the transaction. */
	lines_dup(&l, last, last);
	lines_dup(&l, last, last);
	lines_dup(&l, last, last);
	lines_dup(&l, last, last);
	free(l.v[last + 1]);
	l.v[last + 1] = xstrdup("");
	free(l.v[last + 2]);
	l.v[last + 2] = xstrdup(SEED_DAY " * refund by hand");
	free(l.v[last + 3]);
	l.v[last + 3] = xstrdup("    Expenses:Refunds    5.00 USD");
	free(l.v[last + 4]);
	l.v[last + 4] = xstrdup("    Assets:Wix:Clearing    -5.00 USD");
	(void)post_block(&l, p.doubled, 0, &renamed, &i);
	meta = xasprintf("    ; rs-refund-id: %s", p.doubled);
	for (; renamed < i && strcmp(l.v[renamed], meta) != 0; renamed++)
		;
	ck_assert_uint_lt(renamed, i);
	free(l.v[renamed]);
	l.v[renamed] = xstrdup("    ; rs-refund-id: rf-nobody");
	free(meta);
	(void)post_block(&l, p.doubled, 0, &renamed, &i);
	lines_write(&l, w.ledger);
	lines_free(&l);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, 2, 0, NSEED, NSEED);
	x = only_damaged(inst, "books", "ledger", 2);
	cJSON_ArrayForEach(e, jarr(x, "damaged")) {
		if (cJSON_IsNull(member(e, "refund_id")))
			ck_assert_int_eq(jint(e, "line"), (int64_t)last + 3);
		else {
			ck_assert_str_eq(jstr(e, "refund_id"), "rf-nobody");
			ck_assert_int_eq(jint(e, "line"),
			    (int64_t)renamed + 1);
		}
	}
	cJSON_Delete(doc);
	picks_free(&p);
	world_close(&w);
}
END_TEST

/*
 * A file exporter writes a record before the store records it delivered,
 * so a crash (or a store that cannot commit) in between leaves its file
 * holding records above its position, which it skips when it starts
 * again.  Until then those changes are pending, and the records the file
 * already holds for them are theirs: not damaged, not drift.
 */
START_TEST(test_file_ahead)
{
	struct world w;
	char *ledger_before, *csv_before, *jsonl_before;
	const cJSON *inst, *x;
	cJSON *doc;
	size_t i;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	/* The last two deliveries of each exporter were never committed. */
	uncommit_above(&w, NSEED - 2);
	ledger_before = tu_read_file(w.ledger, NULL);
	csv_before = tu_read_file(w.csv, NULL);
	jsonl_before = tu_read_file(w.jsonl, NULL);

	doc = reconcile_json(w.conf, 0, NULL);
	inst = check_head(doc, "clean", false, 0, 0, NSEED, NSEED);
	for (i = 0; i < NEXPORTERS; i++) {
		x = exporter_of(inst, exporter_names[i], exporter_types[i],
		    "file");
		ck_assert_int_eq(jint(x, "position"), NSEED - 2);
		/* The ledger holds only the changes that post. */
		if (i == 0)
			ck_assert_int_ge(jint(x, "pending"), 1);
		ck_assert_int_le(jint(x, "pending"), 2);
		if (i > 0)
			ck_assert_int_eq(jint(x, "pending"), 2);
		empty_lists(x, record_lists);
	}
	cJSON_Delete(doc);

	/* The exporters catch up without writing anything twice. */
	ck_assert(tu_daemon_restart(w.d));
	wait_exported(&w, NSEED);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	check_unchanged(w.ledger, ledger_before);
	check_unchanged(w.csv, csv_before);
	check_unchanged(w.jsonl, jsonl_before);
	doc = reconcile_json(w.conf, 0, NULL);
	(void)check_head(doc, "clean", false, 0, 0, NSEED, NSEED);
	cJSON_Delete(doc);
	world_close(&w);
}
END_TEST

/*
 * A refund that left SUCCEEDED in Wix only: --heal stores Wix's version,
 * whose reversal the ledger has not reached yet.  Until the exporter
 * catches up the refund is pending there, not "not reversed": a second
 * run, with the daemon still stopped, is clean.
 */
START_TEST(test_reversal_pending)
{
	struct world w;
	struct picks p;
	const cJSON *inst, *x;
	char *json, *line;
	cJSON *doc;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	pick_stored(&w, &p);
	json = xasprintf("{\"instance\":\"" INST "\",\"id\":\"%s\","
	    "\"status\":\"REVERSED\"}", p.reversed);
	ck_assert(tu_sandbox_control(&w.sb, "/_sandbox/refunds", json));
	free(json);

	/* The healing run reports what it found: stale, not reversed. */
	doc = reconcile_json(w.conf, 4, ARGS("--heal"));
	inst = check_head(doc, "drift", true, 2, 1, NSEED, NSEED);
	ck_keys(jarr(inst, "stale"), "refund_id", p.reversed);
	x = exporter_of(inst, "books", "ledger", "file");
	ck_keys(jarr(x, "not_reversed"), "refund_id", p.reversed);
	cJSON_Delete(doc);

	/* The reversal is queued: lag, not drift. */
	doc = reconcile_json(w.conf, 0, NULL);
	inst = check_head(doc, "clean", false, 0, 0, NSEED, NSEED);
	empty_lists(inst, refund_lists);
	x = exporter_of(inst, "books", "ledger", "file");
	ck_assert_int_eq(jint(x, "pending"), 1);
	empty_lists(x, record_lists);
	cJSON_Delete(doc);

	/* And it comes. */
	ck_assert(tu_daemon_restart(w.d));
	wait_exported(&w, NSEED + 1);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	line = xasprintf("    ; rs-key: books:%s:3:reverse", p.reversed);
	ck_assert_msg(has_line(w.ledger, line), "no reversal of %s",
	    p.reversed);
	free(line);
	doc = reconcile_json(w.conf, 0, NULL);
	inst = check_head(doc, "clean", false, 0, 0, NSEED, NSEED);
	x = exporter_of(inst, "books", "ledger", "file");
	ck_assert_int_eq(jint(x, "pending"), 0);
	empty_lists(x, record_lists);
	cJSON_Delete(doc);
	picks_free(&p);
	world_close(&w);
}
END_TEST

/* ---- csv rows and jsonl lines edited by hand ----------------------------- */

/* What the records of a csv and a jsonl file hold before their seq. */
#define CSV_LEAD	""
#define JSONL_LEAD	"{\"seq\":"

/* The csv columns the tests edit, of the csv exporter's 19 (csv.c). */
#define CSV_STATUS	6
#define CSV_AMOUNT	10
#define CSV_MINOR	11
#define CSV_NCOLS	19

/* Field col of csv row, unquoted.  Caller frees. */
static char *
csv_get(const char *row, int col)
{
	char *copy = xstrdup(row), *f[CSV_NCOLS], *v;

	ck_assert_uint_eq(csv_split(copy, f, CSV_NCOLS), CSV_NCOLS);
	v = xstrdup(f[col]);
	free(copy);
	return v;
}

/*
 * Replace field col of csv row *row with value, quoted as RFC 4180 wants
 * (a value with a comma, a quote or a line break is quoted; its quotes
 * doubled).
 */
static void
csv_put(char **row, int col, const char *value)
{
	char *copy = xstrdup(*row), *f[CSV_NCOLS], *text;
	const char *p;
	struct buf b;
	int i;

	ck_assert_uint_eq(csv_split(copy, f, CSV_NCOLS), CSV_NCOLS);
	f[col] = (char *)(uintptr_t)value;
	buf_init(&b, 1 << 20);
	for (i = 0; i < CSV_NCOLS; i++) {
		if (i > 0)
			ck_assert_int_eq(buf_append(&b, ",", 1), RS_OK);
		if (strpbrk(f[i], ",\"\n") == NULL) {
			ck_assert_int_eq(buf_appends(&b, f[i]), RS_OK);
			continue;
		}
		ck_assert_int_eq(buf_append(&b, "\"", 1), RS_OK);
		for (p = f[i]; *p != '\0'; p++) {
			ck_assert_int_eq(buf_append(&b, p, 1), RS_OK);
			if (*p == '"')
				ck_assert_int_eq(buf_append(&b, "\"", 1),
				    RS_OK);
		}
		ck_assert_int_eq(buf_append(&b, "\"", 1), RS_OK);
	}
	ck_assert_int_eq(buf_append(&b, "", 0), RS_OK);
	text = buf_detach(&b, NULL);
	free(copy);
	free(*row);
	*row = text;
}

/* The 0-based index of the one line of l that holds needle. */
static size_t
line_with(const struct lines *l, const char *needle)
{
	size_t i, at = 0;
	int n = 0;

	for (i = 0; i < l->n; i++)
		if (strstr(l->v[i], needle) != NULL) {
			at = i;
			n++;
		}
	ck_assert_msg(n == 1, "%d lines hold %s", n, needle);
	return at;
}

/* The 0-based index of the one jsonl line of refund id's first posting,
 * which is not the file's last; its seq into *seq. */
static size_t
jsonl_line_of(const struct lines *l, const char *id, int64_t *seq)
{
	char *key = xasprintf("\"idempotency_key\":\"lines:%s:2\"", id);
	size_t at = line_with(l, key);

	ck_assert_uint_lt(at + 1, l->n);
	*seq = strtoll(l->v[at] + strlen(JSONL_LEAD), NULL, 10);
	free(key);
	return at;
}

/*
 * The 0-based index of the record of seq in l, a file whose records each
 * start with lead, their seq and a comma.
 */
static size_t
record_of_seq(const struct lines *l, const char *lead, int64_t seq)
{
	char *pre = xasprintf("%s%lld,", lead, (long long)seq);
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strncmp(l->v[i], pre, strlen(pre)) == 0)
			break;
	ck_assert_msg(i < l->n, "no record starts with %s", pre);
	free(pre);
	return i;
}

/* The raw text of the first member name of jsonl line: [*start, *end). */
static void
jsonl_find(const char *line, const char *name, const char **start,
    const char **end)
{
	char *key = xasprintf("\"%s\":", name);
	const char *p = strstr(line, key);

	ck_assert_msg(p != NULL, "no %s in %s", key, line);
	p += strlen(key);
	*start = p;
	if (*p == '"') {
		for (p++; *p != '"'; p++)
			if (*p == '\\')
				p++;
		p++;
	} else
		while (*p != ',' && *p != '}')
			p++;
	*end = p;
	free(key);
}

/* The raw text of member name of jsonl line.  Caller frees. */
static char *
jsonl_get(const char *line, const char *name)
{
	const char *s, *e;

	jsonl_find(line, name, &s, &e);
	return xstrndup(s, (size_t)(e - s));
}

/* Replace the raw text of member name of jsonl line *line with text. */
static void
jsonl_put(char **line, const char *name, const char *text)
{
	const char *s, *e;
	char *n;

	jsonl_find(*line, name, &s, &e);
	n = xasprintf("%.*s%s%s", (int)(s - *line), *line, text, e);
	free(*line);
	*line = n;
}

/* USD amount text plus delta minor units, into out; returns its minor
 * units. */
static int64_t
usd_plus(const char *text, int64_t delta, char *out, size_t len)
{
	int64_t minor;

	ck_assert_int_eq(money_to_minor(text, "USD", &minor), RS_OK);
	minor += delta;
	ck_assert_int_eq(money_format(minor, 2, out, len), RS_OK);
	return minor;
}

/* Add a dollar to the amount (text and minor units) of csv row *row. */
static void
csv_add_dollar(char **row)
{
	char *was = csv_get(*row, CSV_AMOUNT), amount[48], minor[24];

	snprintf(minor, sizeof(minor), "%lld", (long long)usd_plus(was, 100,
	    amount, sizeof(amount)));
	csv_put(row, CSV_AMOUNT, amount);
	csv_put(row, CSV_MINOR, minor);
	free(was);
}

/* Add a dollar to the amount (text and minor units) of jsonl line
 * *line. */
static void
jsonl_add_dollar(char **line)
{
	char *was = jsonl_get(*line, "amount"), amount[48], text[64];
	int64_t minor;

	/* The raw text: "12.34" with its quotes. */
	was[strlen(was) - 1] = '\0';
	minor = usd_plus(was + 1, 100, amount, sizeof(amount));
	snprintf(text, sizeof(text), "\"%s\"", amount);
	jsonl_put(line, "amount", text);
	snprintf(text, sizeof(text), "%lld", (long long)minor);
	jsonl_put(line, "amount_minor", text);
	free(was);
}

/* The entry of x's "damaged" at line (1-based), which must be there
 * once, with seq and a why that holds why. */
static const cJSON *
damaged_at(const cJSON *x, int64_t line, int64_t seq, const char *why)
{
	const cJSON *e, *found = NULL;
	int n = 0;

	cJSON_ArrayForEach(e, jarr(x, "damaged"))
		if (jint(e, "line") == line) {
			found = e;
			n++;
		}
	ck_assert_msg(n == 1, "%s: %d damaged records at line %lld: %s",
	    jstr(x, "exporter"), n, (long long)line,
	    cJSON_PrintUnformatted(jarr(x, "damaged")));
	ck_assert_int_eq(jint(found, "seq"), seq);
	ck_assert_msg(strstr(jstr(found, "why"), why) != NULL, "%s line "
	    "%lld: why \"%s\", want \"%s\" in it", jstr(x, "exporter"),
	    (long long)line, jstr(found, "why"), why);
	return found;
}

/*
 * Hand edits of the csv and jsonl files that keep every record in place:
 * an amount changed, text and minor units alike (in both files); an
 * amount whose text alone changed, to one that needs quoting; a status
 * changed (in both).  Each record is damaged, named by its line, seq and
 * refund; the run is drift, exit 4.  --heal repairs nothing and changes
 * no file: damaged records are for a human.
 */
START_TEST(test_edited_rows)
{
	struct world w;
	struct picks p;
	struct lines l;
	size_t amt, txt, st, jamt, jst;
	char *csv_before, *jsonl_before, *text, *out = NULL;
	const cJSON *inst, *x, *e;
	cJSON *doc;
	int64_t s_amt, s_txt, s_st, s_jamt, s_jst;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	pick_stored(&w, &p);

	lines_read(&l, w.csv);
	amt = csv_row_of(&l, p.deleted, &s_amt);
	csv_add_dollar(&l.v[amt]);
	txt = csv_row_of(&l, p.bumped, &s_txt);
	csv_put(&l.v[txt], CSV_AMOUNT, "1,000.00");
	st = csv_row_of(&l, p.doubled, &s_st);
	text = csv_get(l.v[st], CSV_STATUS);
	ck_assert_str_eq(text, "SUCCEEDED");
	free(text);
	csv_put(&l.v[st], CSV_STATUS, "REVERSED");
	lines_write(&l, w.csv);
	lines_free(&l);

	lines_read(&l, w.jsonl);
	jamt = jsonl_line_of(&l, p.deleted, &s_jamt);
	jsonl_add_dollar(&l.v[jamt]);
	jst = jsonl_line_of(&l, p.doubled, &s_jst);
	jsonl_put(&l.v[jst], "status", "\"FAILED\"");
	lines_write(&l, w.jsonl);
	lines_free(&l);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, 5, 0, NSEED, NSEED);
	empty_lists(inst, refund_lists);
	empty_lists(exporter_of(inst, "books", "ledger", "file"),
	    record_lists);
	x = only_damaged(inst, "rows", "csv", 3);
	e = damaged_at(x, (int64_t)amt + 1, s_amt, "amount");
	ck_assert_str_eq(jstr(e, "refund_id"), p.deleted);
	e = damaged_at(x, (int64_t)txt + 1, s_txt, "1,000.00");
	ck_assert_str_eq(jstr(e, "refund_id"), p.bumped);
	e = damaged_at(x, (int64_t)st + 1, s_st, "status is \"REVERSED\"");
	ck_assert_str_eq(jstr(e, "refund_id"), p.doubled);
	x = only_damaged(inst, "lines", "jsonl", 2);
	e = damaged_at(x, (int64_t)jamt + 1, s_jamt, "amount");
	ck_assert_str_eq(jstr(e, "refund_id"), p.deleted);
	e = damaged_at(x, (int64_t)jst + 1, s_jst, "status is \"FAILED\"");
	ck_assert_str_eq(jstr(e, "refund_id"), p.doubled);
	cJSON_Delete(doc);

	/* The text report names them. */
	ck_assert_int_eq(rs(w.conf, &out, NULL, "reconcile", END), 4);
	ck_assert_msg(strstr(out, "damaged") != NULL &&
	    strstr(out, "1,000.00") != NULL, "the text report:\n%s", out);
	free(out);

	/* --heal: nothing to repair, no file touched. */
	csv_before = tu_read_file(w.csv, NULL);
	jsonl_before = tu_read_file(w.jsonl, NULL);
	doc = reconcile_json(w.conf, 4, ARGS("--heal"));
	inst = check_head(doc, "drift", true, 5, 0, NSEED, NSEED);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(exporter_of(inst, "rows",
	    "csv", "file"), "damaged")), 3);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(exporter_of(inst, "lines",
	    "jsonl", "file"), "damaged")), 2);
	cJSON_Delete(doc);
	check_unchanged(w.csv, csv_before);
	check_unchanged(w.jsonl, jsonl_before);
	check_sql(&w, "SELECT count(*) FROM reconcile_repairs", "0");
	picks_free(&p);
	world_close(&w);
}
END_TEST

/*
 * Records corrupted rather than edited: a jsonl line cut in half (not
 * JSON), a jsonl line that is JSON but lost most of its members, and a
 * csv row whose status was given a line break inside a quoted field (so
 * the row runs over two lines, as RFC 4180 allows and the exporter never
 * writes).  Each is one damaged record at the line it starts on; none is
 * missing or doubled, and nothing crashes.
 */
START_TEST(test_corrupted_rows)
{
	struct world w;
	struct picks p;
	struct lines l;
	size_t cut, thin, row;
	char *t;
	const cJSON *inst, *x, *e;
	cJSON *doc;
	int64_t s_cut, s_thin, s_row;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	pick_stored(&w, &p);

	lines_read(&l, w.jsonl);
	cut = jsonl_line_of(&l, p.deleted, &s_cut);
	l.v[cut][strlen(l.v[cut]) / 2] = '\0';
	thin = jsonl_line_of(&l, p.doubled, &s_thin);
	free(l.v[thin]);
	l.v[thin] = xasprintf("{\"seq\":%lld,\"refund_id\":\"%s\","
	    "\"posting\":\"post\"}", (long long)s_thin, p.doubled);
	lines_write(&l, w.jsonl);
	lines_free(&l);

	lines_read(&l, w.csv);
	row = csv_row_of(&l, p.bumped, &s_row);
	csv_put(&l.v[row], CSV_STATUS, "SUCC\nEEDED");
	lines_write(&l, w.csv);
	lines_free(&l);
	t = tu_read_file(w.csv, NULL);
	ck_assert_ptr_nonnull(strstr(t, ",\"SUCC\nEEDED\","));
	free(t);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, 3, 0, NSEED, NSEED);
	empty_lists(inst, refund_lists);
	x = only_damaged(inst, "lines", "jsonl", 2);
	e = damaged_at(x, (int64_t)cut + 1, s_cut, "not a JSON object");
	ck_assert(cJSON_IsNull(member(e, "refund_id")));
	e = damaged_at(x, (int64_t)thin + 1, s_thin, "idempotency_key");
	ck_assert_str_eq(jstr(e, "refund_id"), p.doubled);
	x = only_damaged(inst, "rows", "csv", 1);
	e = damaged_at(x, (int64_t)row + 1, s_row, "line break");
	ck_assert_str_eq(jstr(e, "refund_id"), p.bumped);
	cJSON_Delete(doc);
	ck_assert_int_eq(rs(w.conf, NULL, NULL, "reconcile", END), 4);
	picks_free(&p);
	world_close(&w);
}
END_TEST

/*
 * Records above an exporter's position (written, the position not yet
 * recorded: test_file_ahead) are pending, and their content is checked
 * all the same: an edited amount in the csv file and an edited status in
 * the jsonl file are damaged, while the changes stay pending, not
 * missing.
 */
START_TEST(test_rows_pending)
{
	struct world w;
	struct lines l;
	size_t row, line;
	const cJSON *inst, *x;
	cJSON *doc;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	uncommit_above(&w, NSEED - 2);

	lines_read(&l, w.csv);
	row = record_of_seq(&l, CSV_LEAD, NSEED);
	csv_add_dollar(&l.v[row]);
	lines_write(&l, w.csv);
	lines_free(&l);
	lines_read(&l, w.jsonl);
	line = record_of_seq(&l, JSONL_LEAD, NSEED - 1);
	jsonl_put(&l.v[line], "status", "\"REVERSED\"");
	lines_write(&l, w.jsonl);
	lines_free(&l);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, 2, 0, NSEED, NSEED);
	empty_lists(exporter_of(inst, "books", "ledger", "file"),
	    record_lists);
	x = only_damaged(inst, "rows", "csv", 1);
	ck_assert_int_eq(jint(x, "position"), NSEED - 2);
	ck_assert_int_eq(jint(x, "pending"), 2);
	(void)damaged_at(x, (int64_t)row + 1, NSEED, "amount");
	x = only_damaged(inst, "lines", "jsonl", 1);
	ck_assert_int_eq(jint(x, "position"), NSEED - 2);
	ck_assert_int_eq(jint(x, "pending"), 2);
	(void)damaged_at(x, (int64_t)line + 1, NSEED - 1,
	    "status is \"REVERSED\"");
	cJSON_Delete(doc);
	world_close(&w);
}
END_TEST

/* A refund id with a comma and quotes, and a status with a tab. */
#define ODD_ID		"odd,\"quoted\" id"
#define ODD_STATUS	"ODD\tSTATUS"

/*
 * Values that need quoting in csv and escaping in jsonl compare equal to
 * the change log: a refund id with a comma and quotes, a status with a
 * control character (the csv exporter writes it as a space), an amount
 * not exact in the currency (no minor units).  Wix does not have that
 * refund ("gone", which is the run's only drift); every exporter is
 * clean.
 */
START_TEST(test_quoted_values)
{
	struct world w;
	const cJSON *inst;
	char *text;
	cJSON *doc;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	ck_assert(tu_daemon_restart(w.d));
	post_refund(&w, ODD_ID, "ch-odd", "1.005", ODD_STATUS);
	wait_exported(&w, NSEED + 1);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	/* As the exporters wrote it: quoted, the tab a space, no minor
	 * units; escaped. */
	text = tu_read_file(w.csv, NULL);
	ck_assert_msg(strstr(text, ",\"odd,\"\"quoted\"\" id\",shop,ch-odd,1,"
	    "ODD STATUS,,none,USD,1.005,,,") != NULL, "csv:\n%s", text);
	free(text);
	text = tu_read_file(w.jsonl, NULL);
	ck_assert_ptr_nonnull(strstr(text, "\"refund_id\":\"odd,\\\"quoted"
	    "\\\" id\""));
	ck_assert_ptr_nonnull(strstr(text, "\"status\":\"ODD\\tSTATUS\""));
	ck_assert_ptr_nonnull(strstr(text, "\"amount_minor\":null,"));
	free(text);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, 1, 0, NSEED, NSEED + 1);
	ck_keys(jarr(inst, "gone"), "refund_id", ODD_ID);
	empty_lists(exporter_of(inst, "books", "ledger", "file"),
	    record_lists);
	empty_lists(exporter_of(inst, "rows", "csv", "file"), record_lists);
	empty_lists(exporter_of(inst, "lines", "jsonl", "file"),
	    record_lists);
	cJSON_Delete(doc);
	/* The text report shows the status's tab as '?', as the other
	 * commands do (termsafe.h). */
	ck_assert_int_eq(rs(w.conf, &text, NULL, "reconcile", NULL), 4);
	ck_assert_msg(strstr(text, ", ODD?STATUS)") != NULL &&
	    strchr(text, '\t') == NULL, "stdout: %s", text);
	free(text);
	world_close(&w);
}
END_TEST

/*
 * A refund whose stored version is newer than Wix's (a webhook after
 * Wix's page, or a version Wix never had) is not drift: it is counted
 * as "ahead", and the text report says so.
 */
START_TEST(test_store_ahead)
{
	struct tu_refund r;
	struct world w;
	const cJSON *inst;
	char *row, *f[7], *p, *now, *text = NULL;
	cJSON *doc;
	size_t i;

	world_open(&w, NSEED, NULL);
	step_clean(&w);
	row = tu_sql(w.d->db_path, "SELECT id || '|' || charge_id || '|' ||"
	    " currency || '|' || amount || '|' || status || '|' || revision"
	    " || '|' || created_date FROM refunds ORDER BY id LIMIT 1");
	ck_assert_ptr_nonnull(row);
	for (i = 0, p = row; i < 7; i++) {
		f[i] = p;
		if ((p = strchr(p, '|')) != NULL)
			*p++ = '\0';
		ck_assert(p != NULL || i == 6);
	}
	/* The same refund, one revision on: nothing else changes. */
	now = tu_now_iso();
	memset(&r, 0, sizeof(r));
	r.id = f[0];
	r.charge_id = f[1];
	r.currency = f[2];
	r.amount = f[3];
	r.status = f[4];
	r.revision = strtoll(f[5], NULL, 10) + 1;
	r.created_date = f[6];
	r.updated_date = now;
	ck_assert(tu_daemon_restart(w.d));
	post_version(&w, &r, TU_UPDATED);
	wait_exported(&w, NSEED + 1);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);

	doc = reconcile_json(w.conf, 0, NULL);
	ck_assert_str_eq(jstr(doc, "outcome"), "clean");
	inst = only_instance(doc, INST);
	ck_assert_int_eq(jint(inst, "ahead"), 1);
	ck_assert_int_eq(jint(inst, "drift"), 0);
	cJSON_Delete(doc);
	ck_assert_int_eq(rs(w.conf, &text, NULL, "reconcile", END), 0);
	ck_assert_msg(strstr(text, "0 repaired; 1 newer in the store than "
	    "in Wix)") != NULL, "stdout: %s", text);
	free(text);
	free(now);
	free(row);
	world_close(&w);
}
END_TEST

/*
 * An instance the store holds refunds of, without an instances row (its
 * AppInstalled came before refundsync, no backfill ran, [wix] instances
 * does not name it), is reconciled all the same: a plain run reports
 * Wix's refunds the store misses and the one Wix does not know.  After
 * an AppRemoved it is left out.
 */
START_TEST(test_instance_of_refunds)
{
	struct world w;
	const cJSON *inst;
	cJSON *doc;
	char *tok;

	world_open(&w, NSEED, NULL);
	post_store_only(&w);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);

	doc = reconcile_json(w.conf, 4, NULL);
	inst = check_head(doc, "drift", false, NSEED + 1, 0, NSEED, 1);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(inst, "missing")), NSEED);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(inst, "gone")), 1);
	cJSON_Delete(doc);

	/* AppRemoved: the instance is no longer reconciled. */
	ck_assert(tu_daemon_restart(w.d));
	tok = tu_webhook(w.d->key.priv_pem, "{\"appId\":\"app-1\"}", INST,
	    "AppRemoved");
	ck_assert_ptr_nonnull(tok);
	ck_assert_int_eq(tu_daemon_post(w.d, tok, NULL), 200);
	free(tok);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	doc = reconcile_json(w.conf, 0, NULL);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(doc, "instances")), 0);
	cJSON_Delete(doc);
	world_close(&w);
}
END_TEST

/*
 * The daemon's periodic job: with [reconcile] interval = 1 and heal =
 * yes, webhooks Wix never sent are healed within a few intervals, and
 * the exporters follow.
 */
START_TEST(test_daemon_job)
{
	struct world w;
	struct view wix;
	char *metrics, *log;
	int64_t deadline, healed;
	size_t len;

	world_open(&w, 20, "[reconcile]\ninterval = 1\nheal = yes\n");
	/* Backfill with the daemon stopped: a periodic run in the middle of
	 * the backfill would heal what the backfill is about to store. */
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	ck_assert_int_eq(rs(w.conf, NULL, NULL, "backfill", "--instance",
	    INST, END), 0);
	ck_assert(tu_daemon_restart(w.d));
	wait_exported(&w, 20);
	ck_assert(tu_sandbox_control(&w.sb, "/_sandbox/refunds",
	    "{\"instance\":\"" INST "\",\"refunds\":["
	    "{\"id\":\"wixonly-a\",\"amount\":\"7.00\"},"
	    "{\"id\":\"wixonly-b\",\"amount\":\"8.00\"}]}"));
	deadline = clock_mono_ms() + WAIT_MS;
	while ((healed = tu_sql_int(w.d, -1, "SELECT count(*) FROM refunds "
	    "WHERE source = 'reconcile'")) != 2 && clock_mono_ms() < deadline)
		tu_sleep_ms(100);
	if (healed != 2) {
		log = tu_daemon_log(w.d);
		len = strlen(log);
		ck_abort_msg("the daemon healed %lld of 2 refunds; its log "
		    "ends:\n%s", (long long)healed, len > 3000 ?
		    log + len - 3000 : log);
	}
	wait_exported(&w, 22);
	wix_view(&w.sb, &wix);
	check_stored(&w, &wix, "wixonly-a", "reconcile");
	check_stored(&w, &wix, "wixonly-b", "reconcile");
	metrics = tu_daemon_metrics(w.d);
	ck_assert_msg(tu_metric(metrics, "refundsync_reconcile_repairs_total",
	    NULL) == 2, "repairs: %s", metrics);
	free(metrics);
	ck_assert_int_eq(tu_daemon_stop(w.d, 20000), 0);
	check_hledger(w.ledger, &wix);
	view_free(&wix);
	world_close(&w);
}
END_TEST

/*
 * The periodic job's per-instance metric: an instance id with a quote
 * and a backslash (an AppInstalled can bring any id) is escaped in its
 * label, as the text format wants, or Prometheus refuses the whole
 * scrape.  Wix does not know that instance, so its runs fail; the
 * failure is recorded all the same.
 */
#define ODD_INST	"odd\"id\\x"

START_TEST(test_daemon_metric_labels)
{
	struct tu_sandbox sb;
	struct tu_daemon *d;
	struct tu_conf conf;
	char *dir, *keys, *wix, *metrics = NULL;
	int64_t deadline;

	dir = tu_tempdir();
	ck_assert_msg(tu_sandbox_start(&sb, dir, 5, INST, NULL),
	    "the sandbox did not start");
	keys = tu_sandbox_wix_keys(&sb, dir);
	ck_assert_ptr_nonnull(keys);
	wix = xasprintf("%sinstances = " INST ", " ODD_INST "\n", keys);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = BACKFILL "[reconcile]\ninterval = 1\n";
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	deadline = clock_mono_ms() + WAIT_MS;
	do {
		free(metrics);
		tu_sleep_ms(100);
		metrics = tu_daemon_metrics(d);
	} while (strstr(metrics, "refundsync_reconcile_runs_total{"
	    "outcome=\"failed\"}") == NULL && clock_mono_ms() < deadline);
	ck_assert_msg(strstr(metrics, "\nrefundsync_reconcile_drift{"
	    "instance=\"odd\\\"id\\\\x\"} 0\n") != NULL,
	    "no escaped drift label in:\n%s", metrics);
	ck_assert_msg(strstr(metrics, "instance=\"" ODD_INST "\"") == NULL,
	    "a raw label in:\n%s", metrics);
	free(metrics);
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);
	tu_daemon_free(d);
	tu_sandbox_stop(&sb);
	tu_rmtree(dir);
	free(wix);
	free(keys);
	free(dir);
}
END_TEST

/* Usage and config errors exit 2; a Wix view that fails is "failed",
 * exit 1; a run over no instance is clean. */
START_TEST(test_usage_and_failure)
{
	struct tu_sandbox sb;
	struct tu_keypair kp;
	char *dir = tu_tempdir(), *conf, *keys, *text, *bad, *pub, *out;
	const cJSON *inst;
	cJSON *doc;

	ck_assert(tu_sandbox_start(&sb, dir, 5, INST, NULL));
	keys = tu_sandbox_wix_keys(&sb, dir);
	ck_assert_ptr_nonnull(keys);
	tu_keypair_generate(&kp);
	pub = xasprintf("%s/wix-public.pem", dir);
	ck_assert(tu_write_file(pub, kp.pub_pem, false));
	conf = xasprintf("%s/refundsync.conf", dir);
	text = xasprintf("[store]\npath = %s/rs.db\n[wix]\npublic_key_file = "
	    "%s\n%s[reconcile]\ninterval = 0\nheal = no\n", dir, pub, keys);
	ck_assert(tu_write_file(conf, text, false));
	free(text);

	ck_assert_int_eq(rs(conf, NULL, NULL, "reconcile", "--bogus", END),
	    2);
	ck_assert_int_eq(rs(conf, NULL, NULL, "reconcile", "extra", END), 2);
	ck_assert_int_eq(rs(conf, NULL, NULL, "reconcile", "--instance",
	    END), 2);
	/* The [reconcile] section is valid config. */
	ck_assert_int_eq(rs(conf, NULL, NULL, "check", END), 0);
	bad = xasprintf("%s/bad.conf", dir);
	text = xasprintf("[store]\npath = %s/rs.db\n[wix]\npublic_key_file = "
	    "%s\n%s[reconcile]\ninterval = -1\n", dir, pub, keys);
	ck_assert(tu_write_file(bad, text, false));
	free(text);
	ck_assert_int_eq(rs(bad, NULL, NULL, "check", END), 1);
	ck_assert_int_eq(rs(bad, NULL, NULL, "reconcile", END), 2);
	/* No Wix credentials. */
	text = xasprintf("[store]\npath = %s/rs.db\n[wix]\npublic_key_file = "
	    "%s\n", dir, pub);
	ck_assert(tu_write_file(bad, text, false));
	free(text);
	ck_assert_int_eq(rs(bad, NULL, NULL, "reconcile", END), 2);

	/* No instance known anywhere: nothing to compare, clean. */
	doc = reconcile_json(conf, 0, NULL);
	ck_assert_str_eq(jstr(doc, "outcome"), "clean");
	ck_assert_int_eq(jint(doc, "drift"), 0);
	ck_assert_int_eq(cJSON_GetArraySize(jarr(doc, "instances")), 0);
	cJSON_Delete(doc);

	/* Wix refuses the credentials: the instance failed, exit 1. */
	ck_assert(tu_sandbox_control(&sb, "/_sandbox/faults",
	    "{\"fault\":\"token_401\",\"count\":-1}"));
	doc = reconcile_json(conf, 1, ARGS("--instance", "nope"));
	ck_assert_str_eq(jstr(doc, "outcome"), "failed");
	ck_assert(!jbool(doc, "heal"));
	inst = only_instance(doc, "nope");
	ck_assert_str_eq(jstr(inst, "outcome"), "failed");
	ck_assert_msg(strlen(jstr(inst, "error")) > 0, "no error text");
	cJSON_Delete(doc);
	out = NULL;
	ck_assert_int_eq(rs(conf, &out, NULL, "reconcile", "--instance",
	    "nope", "--heal", END), 1);
	free(out);

	tu_sandbox_stop(&sb);
	tu_keypair_cleanup(&kp);
	tu_rmtree(dir);
	free(dir);
	free(conf);
	free(bad);
	free(keys);
	free(pub);
}
END_TEST

static Suite *
reconcile_suite(void)
{
	Suite *s = suite_create("reconcile");
	TCase *tc = tcase_create("sandbox");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_clean);
	tcase_add_test(tc, test_drift_heal);
	tcase_add_test(tc, test_edited_amount);
	tcase_add_test(tc, test_foreign_transaction);
	tcase_add_test(tc, test_file_ahead);
	tcase_add_test(tc, test_reversal_pending);
	tcase_add_test(tc, test_instance_of_refunds);
	tcase_add_test(tc, test_store_ahead);
	tcase_add_test(tc, test_daemon_job);
	tcase_add_test(tc, test_daemon_metric_labels);
	tcase_add_test(tc, test_usage_and_failure);
	suite_add_tcase(s, tc);
	/* The content of csv and jsonl records. */
	tc = tcase_create("rows");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_edited_rows);
	tcase_add_test(tc, test_corrupted_rows);
	tcase_add_test(tc, test_rows_pending);
	tcase_add_test(tc, test_quoted_values);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	sr = srunner_create(reconcile_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
