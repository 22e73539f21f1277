/*
 * check_accounting.c: the ledger and beancount exporters, read by the
 * real tools (Debian packages hledger and beancount, installed by
 * scripts/deps.sh test).
 *
 * A real store gets refunds in USD, EUR, JPY (no minor units), KWD and
 * BHD (three) with fees and random status walks; the change log is read
 * back in seq order, turned into exporter records exactly as the engine
 * does (posting from status and prev_status, idempotency keys) and
 * delivered to both exporters through their ops tables.  Then:
 *  - `hledger check --strict` and `bean-check` accept the files;
 *  - the balance of every account per currency, by `hledger bal` and by
 *    `bean-query`, equals the sums computed from the store's refunds
 *    table (SUCCEEDED refunds: amount, fees, amount minus fees), as
 *    exact decimal strings;
 *  - PENDING -> SUCCEEDED -> REVERSED -> SUCCEEDED produces exactly a
 *    posting, its reversal and a posting again, checked in the journal
 *    text and through `hledger register`;
 *  - redelivering the whole log after a "crash" changes nothing.
 */
#include <sys/stat.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "adapters/store.h"
#include "domain/money.h"
#include "domain/refund.h"
#include "exporters/builtin.h"
#include "exporters/posting.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define NAME		"books"
#define NRANDOM		150	/* refunds with random status walks */
#define MAXVERS		5	/* versions per refund at most */
#define TOOL_MS		60000

static const char *const accounts_order[4] = { POSTING_DEFAULT_REFUND,
    POSTING_DEFAULT_APP_FEE, POSTING_DEFAULT_PROC_FEE,
    POSTING_DEFAULT_CLEARING };

/* ---- tools ------------------------------------------------------------- */

static const char *
tool(const char *name)
{
	static char path[256];
	static const char *const dirs[] = { "/usr/bin", "/usr/local/bin",
	    "/bin" };
	size_t i;

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dirs[i], name);
		if (access(path, X_OK) == 0)
			return path;
	}
	ck_abort_msg("%s is not installed: run scripts/deps.sh test "
	    "(Debian packages hledger and beancount)", name);
	return NULL;
}

/* Run a tool; assert exit 0; return its stdout (caller frees). */
static char *
run_ok(const char *const *args)
{
	char *argv[16], *out = NULL, *err = NULL;
	size_t i;
	int rc;

	for (i = 0; i < 15 && args[i] != NULL; i++)
		argv[i] = xstrdup(i == 0 ? tool(args[0]) : args[i]);
	argv[i] = NULL;
	rc = tu_run(argv, TOOL_MS, &out, &err);
	ck_assert_msg(rc == 0, "%s exited %d:\n%s\n%s", args[0], rc,
	    out != NULL ? out : "", err != NULL ? err : "");
	for (i = 0; argv[i] != NULL; i++)
		free(argv[i]);
	free(err);
	return out;
}

/* ---- the store --------------------------------------------------------- */

struct fixture {
	char		*dir;
	char		*db;
	char		*ledger;
	char		*beancount;
	struct store	*st;
};

static struct fixture fx;

static void
setup(void)
{
	struct store_options opt = { .busy_timeout_ms = 5000 };
	char *why = NULL;

	fx.dir = tu_tempdir();
	fx.db = xasprintf("%s/rs.db", fx.dir);
	fx.ledger = xasprintf("%s/books.journal", fx.dir);
	fx.beancount = xasprintf("%s/books.beancount", fx.dir);
	ck_assert_msg(store_open(fx.db, &opt, &fx.st, &why) == RS_OK, "%s",
	    why != NULL ? why : "?");
}

static void
teardown(void)
{
	store_close(fx.st);
	tu_rmtree(fx.dir);
	free(fx.dir);
	free(fx.db);
	free(fx.ledger);
	free(fx.beancount);
	memset(&fx, 0, sizeof(fx));
}

/* Apply one version of a refund, as JSON, in its own transaction. */
static void
apply(const char *id, const char *currency, const char *amount,
    const char *app_fee, const char *proc_fee, const char *status,
    int64_t revision, int day)
{
	struct refund r;
	enum store_outcome out;
	const char *why = NULL;
	cJSON *o = cJSON_CreateObject();
	char rev[24], date[40];

	snprintf(rev, sizeof(rev), "%lld", (long long)revision);
	snprintf(date, sizeof(date), "2024-%02d-%02dT10:00:00Z",
	    1 + day / 28 % 12, 1 + day % 28);
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "chargeId", "ch-of-refund");
	cJSON_AddStringToObject(o, "currencyCode", currency);
	cJSON_AddStringToObject(o, "amount", amount);
	cJSON_AddStringToObject(o, "status", status);
	cJSON_AddStringToObject(o, "revision", rev);
	cJSON_AddStringToObject(o, "createdDate", "2024-01-01T00:00:00Z");
	cJSON_AddStringToObject(o, "updatedDate", date);
	if (app_fee != NULL)
		cJSON_AddStringToObject(o, "returnedApplicationFee", app_fee);
	if (proc_fee != NULL)
		cJSON_AddStringToObject(o, "returnedProcessingFee", proc_fee);
	ck_assert_msg(refund_from_json(o, &r, &why) == RS_OK, "%s", why);
	cJSON_Delete(o);
	ck_assert_int_eq(store_begin(fx.st), RS_OK);
	ck_assert_int_eq(store_apply_refund(fx.st, &r, "inst-1", false, 0,
	    "cli", &out), RS_OK);
	ck_assert_int_eq(out, STORE_APPLIED);
	ck_assert_int_eq(store_commit(fx.st), RS_OK);
	refund_cleanup(&r);
}

/* A small deterministic generator (xorshift64). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

struct walk {
	char		 id[32];
	const char	*currency;
	char		 amount[48];
	char		 app[48];
	char		 proc[48];
	bool		 has_app, has_proc;
	int		 nvers;
	const char	*status[MAXVERS];
};

/* Refunds with random status walks, applied interleaved by round. */
static void
apply_random(void)
{
	static const char *const currencies[] = { "USD", "EUR", "JPY", "KWD",
	    "BHD" };
	static const char *const statuses[] = { "PENDING", "SUCCEEDED",
	    "FAILED", "REVERSED", "SUCCEEDED" };
	struct walk *w = xcalloc(NRANDOM, sizeof(*w));
	int i, v, e;
	int64_t minor;

	for (i = 0; i < NRANDOM; i++) {
		snprintf(w[i].id, sizeof(w[i].id), "rnd-%03d", i);
		w[i].currency = currencies[rng() % 5];
		e = money_exponent(w[i].currency);
		minor = (int64_t)(rng() % 5000000) + 1;
		ck_assert_int_eq(money_format(minor, e, w[i].amount,
		    sizeof(w[i].amount)), RS_OK);
		if ((w[i].has_app = rng() % 3 == 0))
			ck_assert_int_eq(money_format((int64_t)(rng() %
			    (uint64_t)minor), e, w[i].app, sizeof(w[i].app)),
			    RS_OK);
		if ((w[i].has_proc = rng() % 2 == 0))
			ck_assert_int_eq(money_format((int64_t)(rng() %
			    (uint64_t)minor), e, w[i].proc,
			    sizeof(w[i].proc)), RS_OK);
		w[i].nvers = 1 + (int)(rng() % MAXVERS);
		for (v = 0; v < w[i].nvers; v++)
			w[i].status[v] = statuses[rng() % 5];
	}
	for (v = 0; v < MAXVERS; v++)
		for (i = 0; i < NRANDOM; i++)
			if (v < w[i].nvers)
				apply(w[i].id, w[i].currency, w[i].amount,
				    w[i].has_app ? w[i].app : NULL,
				    w[i].has_proc ? w[i].proc : NULL,
				    w[i].status[v], v + 1, i + v);
	free(w);
}

/* The fixed cases, the state sequence first. */
static void
apply_fixed(void)
{
	apply("seq-1", "USD", "12.95", "0.10", "0.40", "PENDING", 1, 1);
	apply("seq-1", "USD", "12.95", "0.10", "0.40", "SUCCEEDED", 2, 2);
	apply("jpy-1", "JPY", "1500", NULL, "45", "SUCCEEDED", 1, 2);
	apply("seq-1", "USD", "12.95", "0.10", "0.40", "REVERSED", 3, 3);
	apply("kwd-1", "KWD", "1.234", NULL, "0.005", "PENDING", 1, 3);
	apply("kwd-1", "KWD", "1.234", NULL, "0.005", "SUCCEEDED", 2, 4);
	apply("seq-1", "USD", "12.95", "0.10", "0.40", "SUCCEEDED", 4, 4);
	apply("kwd-2", "KWD", "0.001", NULL, NULL, "SUCCEEDED", 1, 5);
	apply("kwd-1", "KWD", "1.234", NULL, "0.005", "FAILED", 3, 5);
	apply("eur-1", "EUR", "100", NULL, NULL, "FAILED", 1, 6);
	apply("eur-1", "EUR", "100", NULL, NULL, "SUCCEEDED", 2, 7);
	apply("pend-1", "USD", "7.00", NULL, NULL, "PENDING", 1, 7);
	apply("same-1", "USD", "3.33", NULL, NULL, "SUCCEEDED", 1, 8);
	apply("same-1", "USD", "3.33", NULL, NULL, "SUCCEEDED", 2, 9);
	apply("odd id; \"x\"\n; rs-seq: 999", "BHD", "2.5", NULL, NULL,
	    "SUCCEEDED", 1, 9);
}

/* ---- the change log as exporter records -------------------------------- */

struct recset {
	struct rs_export_record	*r;
	size_t			 n;
	struct refund		*refunds;	/* parsed bodies, owned */
	char			**keys;		/* owned */
	char			**strs;		/* owned column copies */
	size_t			 nstrs;
};

static const char *
keep(struct recset *rs, const unsigned char *s)
{
	if (s == NULL)
		return NULL;
	rs->strs = xreallocarray(rs->strs, rs->nstrs + 1, sizeof(char *));
	return rs->strs[rs->nstrs++] = xstrdup((const char *)s);
}

/* What the engine hands every exporter, built from the changes table. */
static void
load_records(struct recset *rs)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	const char *why = NULL;
	size_t cap = 0;
	int rc;

	memset(rs, 0, sizeof(*rs));
	ck_assert_int_eq(sqlite3_open_v2(fx.db, &db, SQLITE_OPEN_READONLY,
	    NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT seq, refund_id, "
	    "instance_id, revision, status, prev_status, currency, amount, "
	    "amount_minor, amount_exponent, source, changed_at, body "
	    "FROM changes ORDER BY seq", -1, &q, NULL), SQLITE_OK);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct rs_export_record *r;
		struct refund *f;
		cJSON *body;

		if (rs->n == cap) {
			cap = cap ? cap * 2 : 256;
			rs->r = xreallocarray(rs->r, cap, sizeof(*rs->r));
			rs->refunds = xreallocarray(rs->refunds, cap,
			    sizeof(*rs->refunds));
			rs->keys = xreallocarray(rs->keys, cap,
			    sizeof(*rs->keys));
		}
		r = &rs->r[rs->n];
		f = &rs->refunds[rs->n];
		memset(r, 0, sizeof(*r));
		body = cJSON_Parse((const char *)sqlite3_column_text(q, 12));
		ck_assert_ptr_nonnull(body);
		ck_assert_msg(refund_from_json(body, f, &why) == RS_OK, "%s",
		    why);
		cJSON_Delete(body);
		r->seq = sqlite3_column_int64(q, 0);
		r->refund_id = keep(rs, sqlite3_column_text(q, 1));
		r->instance_id = keep(rs, sqlite3_column_text(q, 2));
		r->charge_id = f->charge_id;
		r->has_revision = sqlite3_column_type(q, 3) != SQLITE_NULL;
		r->revision = sqlite3_column_int64(q, 3);
		r->status = keep(rs, sqlite3_column_text(q, 4));
		r->prev_status = keep(rs, sqlite3_column_text(q, 5));
		r->currency = keep(rs, sqlite3_column_text(q, 6));
		r->amount = keep(rs, sqlite3_column_text(q, 7));
		r->amount_exact = sqlite3_column_type(q, 8) != SQLITE_NULL;
		r->amount_minor = sqlite3_column_int64(q, 8);
		r->exponent = sqlite3_column_int(q, 9);
		r->source = keep(rs, sqlite3_column_text(q, 10));
		r->changed_at = keep(rs, sqlite3_column_text(q, 11));
		r->returned_application_fee = f->returned_application_fee;
		r->returned_processing_fee = f->returned_processing_fee;
		r->created_date = f->created_date;
		r->updated_date = f->updated_date;
		r->body = f->body;
		r->posting = posting_classify(r->status, r->prev_status);
		rs->keys[rs->n] = xasprintf("%s:%s:%lld%s", NAME, r->refund_id,
		    (long long)r->revision, r->posting == RS_POSTING_REVERSE ?
		    ":reverse" : "");
		r->idempotency_key = rs->keys[rs->n];
		rs->n++;
	}
	ck_assert_int_eq(rc, SQLITE_DONE);
	sqlite3_finalize(q);
	sqlite3_close(db);
}

static void
free_records(struct recset *rs)
{
	size_t i;

	for (i = 0; i < rs->n; i++) {
		refund_cleanup(&rs->refunds[i]);
		free(rs->keys[i]);
	}
	for (i = 0; i < rs->nstrs; i++)
		free(rs->strs[i]);
	free(rs->strs);
	free(rs->refunds);
	free(rs->keys);
	free(rs->r);
}

/* Deliver all records in batches of 37 to a new instance. */
static void
export_all(const struct rs_exporter_ops *ops, const char *path,
    const struct recset *rs)
{
	struct rs_export_kv kv[2] = { { "type", ops->name }, { "path", path } };
	char err[512] = "";
	void *ctx = NULL;
	size_t i, n, done;
	int64_t last = -1;

	ck_assert_msg(ops->open(&ctx, NAME, kv, 2, err, sizeof(err)) ==
	    RS_EXPORT_OK, "%s", err);
	ck_assert_int_eq(ops->recover(ctx, &last, err, sizeof(err)),
	    RS_EXPORT_OK);
	for (i = 0; i < rs->n; i += n) {
		n = rs->n - i < 37 ? rs->n - i : 37;
		/* Skip what the file holds, as the engine fast-forwards. */
		ck_assert_msg(ops->deliver(ctx, rs->r + i, n, &done, err,
		    sizeof(err)) == RS_EXPORT_OK, "%s", err);
		ck_assert_uint_eq(done, n);
	}
	ops->close(ctx);
}

/* ---- expected balances from the store ---------------------------------- */

struct balance {
	char	 account[64];
	char	 currency[4];
	int	 exponent;
	int64_t	 minor;
};

struct balances {
	struct balance	 b[64];
	size_t		 n;
};

static struct balance *
bal_get(struct balances *bs, const char *account, const char *currency,
    int exponent)
{
	size_t i;

	for (i = 0; i < bs->n; i++)
		if (strcmp(bs->b[i].account, account) == 0 &&
		    strcmp(bs->b[i].currency, currency) == 0)
			return &bs->b[i];
	ck_assert_uint_lt(bs->n, 64);
	snprintf(bs->b[bs->n].account, sizeof(bs->b[0].account), "%s",
	    account);
	snprintf(bs->b[bs->n].currency, sizeof(bs->b[0].currency), "%s",
	    currency);
	bs->b[bs->n].exponent = exponent;
	bs->b[bs->n].minor = 0;
	return &bs->b[bs->n++];
}

static int64_t
fee_of(const char *text, const char *currency)
{
	int64_t m = 0;

	if (text != NULL)
		ck_assert_int_eq(money_to_minor(text, currency, &m), RS_OK);
	return m;
}

/*
 * The balances the journals must show, from the refunds table alone:
 * every refund whose stored status is SUCCEEDED, nothing else.
 */
static void
expected_balances(struct balances *bs)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	const char *why = NULL;
	int rc;

	memset(bs, 0, sizeof(*bs));
	ck_assert_int_eq(sqlite3_open_v2(fx.db, &db, SQLITE_OPEN_READONLY,
	    NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT currency, "
	    "amount_minor, amount_exponent, body FROM refunds "
	    "WHERE status = 'SUCCEEDED'", -1, &q, NULL), SQLITE_OK);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		const char *cur = (const char *)sqlite3_column_text(q, 0);
		int64_t amount = sqlite3_column_int64(q, 1);
		int e = sqlite3_column_int(q, 2);
		struct refund f;
		cJSON *body = cJSON_Parse((const char *)
		    sqlite3_column_text(q, 3));
		int64_t app, proc;

		ck_assert_msg(refund_from_json(body, &f, &why) == RS_OK, "%s",
		    why);
		cJSON_Delete(body);
		app = fee_of(f.returned_application_fee, cur);
		proc = fee_of(f.returned_processing_fee, cur);
		refund_cleanup(&f);
		bal_get(bs, accounts_order[0], cur, e)->minor += amount;
		bal_get(bs, accounts_order[1], cur, e)->minor -= app;
		bal_get(bs, accounts_order[2], cur, e)->minor -= proc;
		bal_get(bs, accounts_order[3], cur, e)->minor -=
		    amount - app - proc;
	}
	ck_assert_int_eq(rc, SQLITE_DONE);
	sqlite3_finalize(q);
	sqlite3_close(db);
}

/* A tool's decimal text in minor units of exponent e (exact). */
static int64_t
text_minor(const char *text, const char *currency)
{
	int64_t m = 0;
	bool neg = *text == '-';

	ck_assert_msg(money_to_minor(text + neg, currency, &m) == RS_OK,
	    "%s %s is not exact", text, currency);
	return neg ? -m : m;
}

/*
 * Compare what a tool says (account, currency, text) with bs: a
 * non-zero expected balance must be the exact decimal string, a zero
 * one may be absent or any zero.  Marks what it saw.
 */
static void
check_row(struct balances *bs, bool *seen, const char *tool_name,
    const char *account, const char *currency, const char *text)
{
	char want[48];
	size_t i;

	for (i = 0; i < bs->n; i++) {
		if (strcmp(bs->b[i].account, account) != 0 ||
		    strcmp(bs->b[i].currency, currency) != 0)
			continue;
		seen[i] = true;
		if (bs->b[i].minor == 0) {
			ck_assert_int_eq(text_minor(text, currency), 0);
			return;
		}
		ck_assert_int_eq(money_format(bs->b[i].minor,
		    bs->b[i].exponent, want, sizeof(want)), RS_OK);
		ck_assert_msg(strcmp(text, want) == 0, "%s: %s %s is %s, "
		    "the store says %s", tool_name, account, currency, text,
		    want);
		return;
	}
	ck_assert_msg(text_minor(text, currency) == 0, "%s: %s %s is %s, "
	    "the store says nothing", tool_name, account, currency, text);
}

static void
check_all_seen(const struct balances *bs, const bool *seen,
    const char *tool_name)
{
	size_t i;

	for (i = 0; i < bs->n; i++)
		ck_assert_msg(seen[i] || bs->b[i].minor == 0, "%s shows no "
		    "balance for %s %s", tool_name, bs->b[i].account,
		    bs->b[i].currency);
}

/*
 * Split a CSV line into at most max fields, each stripped of spaces and
 * of one pair of double quotes.  The values we read (accounts, currency
 * codes, numbers) hold no comma.
 */
static size_t
csv_split(char *line, char **f, size_t max)
{
	size_t n = 0, len;
	char *p = line, *comma;

	while (n < max) {
		comma = strchr(p, ',');
		if (comma != NULL)
			*comma = '\0';
		while (*p == ' ')
			p++;
		len = strlen(p);
		while (len > 0 && p[len - 1] == ' ')
			p[--len] = '\0';
		if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
			p[len - 1] = '\0';
			p++;
		}
		f[n++] = p;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return n;
}

/* `hledger bal` per account and currency against the store. */
static void
check_hledger_balances(struct balances *bs)
{
	static const char *const args[] = { "hledger", "-f", NULL, "bal",
	    "--layout=bare", "-O", "csv", "-N", NULL };
	const char *a[9];
	char *out, *line, *nl, *f[4];
	bool seen[64] = { false };
	size_t rows = 0;

	memcpy(a, args, sizeof(a));
	a[2] = fx.ledger;
	out = run_ok(a);
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
		check_row(bs, seen, "hledger bal", f[0], f[1], f[2]);
	}
	ck_assert_uint_gt(rows, 10);
	check_all_seen(bs, seen, "hledger bal");
	free(out);
}

/* bean-query's sums per account and currency against the store. */
static void
check_bean_balances(struct balances *bs)
{
	static const char *const args[] = { "bean-query", "-f", "csv", NULL,
	    "SELECT account, currency, str(sum(number)) GROUP BY account, "
	    "currency", NULL };
	const char *a[6];
	char *out, *line, *nl, *f[4], *num, *q;
	bool seen[64] = { false };
	size_t rows = 0;

	memcpy(a, args, sizeof(a));
	a[3] = fx.beancount;
	out = run_ok(a);
	for (line = out; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		*nl = '\0';
		if (nl > line && nl[-1] == '\r')
			nl[-1] = '\0';
		if (rows++ == 0)
			continue;	/* the header */
		ck_assert_uint_eq(csv_split(line, f, 4), 3);
		/* Decimal('12.95') */
		ck_assert_msg(strncmp(f[2], "Decimal('", 9) == 0, "%s", f[2]);
		num = f[2] + 9;
		ck_assert_ptr_nonnull(q = strchr(num, '\''));
		*q = '\0';
		check_row(bs, seen, "bean-query", f[0], f[1], num);
	}
	ck_assert_uint_gt(rows, 10);
	check_all_seen(bs, seen, "bean-query");
	free(out);
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(test_tools_accept_and_balance)
{
	static const char *hcheck[] = { "hledger", "-f", NULL, "check",
	    "--strict", NULL };
	static const char *bcheck[] = { "bean-check", NULL, NULL };
	struct recset rs;
	struct balances bs;
	size_t i, posts = 0, reverses = 0;

	apply_fixed();
	apply_random();
	load_records(&rs);
	ck_assert_uint_gt(rs.n, 300);
	for (i = 0; i < rs.n; i++) {
		posts += rs.r[i].posting == RS_POSTING_POST;
		reverses += rs.r[i].posting == RS_POSTING_REVERSE;
	}
	ck_assert_uint_gt(posts, 50);
	ck_assert_uint_gt(reverses, 20);

	export_all(&exporter_ledger_ops, fx.ledger, &rs);
	export_all(&exporter_beancount_ops, fx.beancount, &rs);
	hcheck[2] = fx.ledger;
	free(run_ok(hcheck));
	bcheck[1] = fx.beancount;
	free(run_ok(bcheck));

	expected_balances(&bs);
	check_hledger_balances(&bs);
	check_bean_balances(&bs);
	free_records(&rs);
}
END_TEST

/* After a crash the engine redelivers from its older position: the
 * files and therefore the balances do not change. */
START_TEST(test_redelivery_changes_nothing)
{
	struct recset rs;
	struct balances bs;
	char *before_l, *before_b, *after;
	size_t len_l, len_b, len;

	apply_fixed();
	load_records(&rs);
	export_all(&exporter_ledger_ops, fx.ledger, &rs);
	export_all(&exporter_beancount_ops, fx.beancount, &rs);
	before_l = tu_read_file(fx.ledger, &len_l);
	before_b = tu_read_file(fx.beancount, &len_b);
	export_all(&exporter_ledger_ops, fx.ledger, &rs);
	export_all(&exporter_beancount_ops, fx.beancount, &rs);
	after = tu_read_file(fx.ledger, &len);
	ck_assert(len == len_l && memcmp(after, before_l, len) == 0);
	free(after);
	after = tu_read_file(fx.beancount, &len);
	ck_assert(len == len_b && memcmp(after, before_b, len) == 0);
	free(after);
	free(before_l);
	free(before_b);
	expected_balances(&bs);
	check_hledger_balances(&bs);
	check_bean_balances(&bs);
	free_records(&rs);
}
END_TEST

/* The journal text of refund seq-1's transactions. */
static char *
blocks_of(const char *path, const char *tagline)
{
	char *text = tu_read_file(path, NULL), *p, *start, *end;
	struct buf out;

	ck_assert_ptr_nonnull(text);
	buf_init(&out, 1 << 20);
	for (p = text; (p = strstr(p, tagline)) != NULL; p = end) {
		/* From the blank line before to the commit line after. */
		for (start = p; start > text + 1 && !(start[-1] == '\n' &&
		    start[-2] == '\n'); start--)
			;
		end = strstr(p, "\n; rs-seq: ");
		ck_assert_ptr_nonnull(end);
		end = strchr(end + 1, '\n') + 1;
		ck_assert_int_eq(buf_append(&out, start, (size_t)(end - start)),
		    RS_OK);
	}
	free(text);
	return buf_detach(&out, NULL);
}

START_TEST(test_state_sequence_postings)
{
	static const char *const want_ledger =
	    "2024-01-03 * Wix refund seq-1\n"
	    "    ; rs-seq: 2\n"
	    "    ; rs-key: books:seq-1:2\n"
	    "    ; rs-posting: post\n"
	    "    ; rs-refund-id: seq-1\n"
	    "    ; rs-charge-id: ch-of-refund\n"
	    "    ; rs-revision: 2\n"
	    "    ; rs-instance-id: inst-1\n"
	    "    ; rs-status: SUCCEEDED\n"
	    "    Expenses:Refunds                                   12.95 USD\n"
	    "    Income:Wix:Fees:Returned:Application               -0.10 USD\n"
	    "    Income:Wix:Fees:Returned:Processing                -0.40 USD\n"
	    "    Assets:Wix:Clearing                               -12.45 USD\n"
	    "; rs-seq: 2\n"
	    "2024-01-04 * Wix refund seq-1 reversed\n"
	    "    ; rs-seq: 4\n"
	    "    ; rs-key: books:seq-1:3:reverse\n"
	    "    ; rs-posting: reverse\n"
	    "    ; rs-refund-id: seq-1\n"
	    "    ; rs-charge-id: ch-of-refund\n"
	    "    ; rs-revision: 3\n"
	    "    ; rs-instance-id: inst-1\n"
	    "    ; rs-status: REVERSED\n"
	    "    Expenses:Refunds                                  -12.95 USD\n"
	    "    Income:Wix:Fees:Returned:Application                0.10 USD\n"
	    "    Income:Wix:Fees:Returned:Processing                 0.40 USD\n"
	    "    Assets:Wix:Clearing                                12.45 USD\n"
	    "; rs-seq: 4\n"
	    "2024-01-05 * Wix refund seq-1\n"
	    "    ; rs-seq: 7\n"
	    "    ; rs-key: books:seq-1:4\n"
	    "    ; rs-posting: post\n"
	    "    ; rs-refund-id: seq-1\n"
	    "    ; rs-charge-id: ch-of-refund\n"
	    "    ; rs-revision: 4\n"
	    "    ; rs-instance-id: inst-1\n"
	    "    ; rs-status: SUCCEEDED\n"
	    "    Expenses:Refunds                                   12.95 USD\n"
	    "    Income:Wix:Fees:Returned:Application               -0.10 USD\n"
	    "    Income:Wix:Fees:Returned:Processing                -0.40 USD\n"
	    "    Assets:Wix:Clearing                               -12.45 USD\n"
	    "; rs-seq: 7\n";
	static const char *const want_reg =
	    "\"txnidx\",\"date\",\"code\",\"description\",\"account\","
	    "\"amount\",\"total\"\n"
	    "\"1\",\"2024-01-03\",\"\",\"Wix refund seq-1\","
	    "\"Expenses:Refunds\",\"12.95 USD\",\"12.95 USD\"\n"
	    "\"3\",\"2024-01-04\",\"\",\"Wix refund seq-1 reversed\","
	    "\"Expenses:Refunds\",\"-12.95 USD\",\"0\"\n"
	    "\"5\",\"2024-01-05\",\"\",\"Wix refund seq-1\","
	    "\"Expenses:Refunds\",\"12.95 USD\",\"12.95 USD\"\n";
	static const char *reg[] = { "hledger", "-f", NULL, "reg",
	    "Expenses:Refunds", "tag:rs-refund-id=^seq-1$", "-O", "csv",
	    NULL };
	struct recset rs;
	char *got, *nocommodity, *out;
	size_t i;

	apply_fixed();
	load_records(&rs);
	/* The records themselves: none, post, reverse, post. */
	for (i = 0; i < rs.n; i++) {
		if (strcmp(rs.r[i].refund_id, "seq-1") != 0)
			continue;
		switch (rs.r[i].revision) {
		case 1:
			ck_assert_int_eq(rs.r[i].posting, RS_POSTING_NONE);
			break;
		case 3:
			ck_assert_int_eq(rs.r[i].posting, RS_POSTING_REVERSE);
			break;
		default:
			ck_assert_int_eq(rs.r[i].posting, RS_POSTING_POST);
		}
	}
	export_all(&exporter_ledger_ops, fx.ledger, &rs);
	export_all(&exporter_beancount_ops, fx.beancount, &rs);

	/* Exactly these three transactions (the commodity directive of
	 * the first USD one aside). */
	got = blocks_of(fx.ledger, "    ; rs-refund-id: seq-1\n");
	nocommodity = strstr(got, "2024-01-03");
	ck_assert_ptr_nonnull(nocommodity);
	ck_assert_str_eq(nocommodity, want_ledger);
	free(got);

	got = blocks_of(fx.beancount, "  rs-refund-id: \"seq-1\"\n");
	ck_assert_ptr_nonnull(strstr(got, "2024-01-03 * \"Wix\" \"Refund "
	    "seq-1\"\n  rs-seq: 2\n"));
	ck_assert_ptr_nonnull(strstr(got, "2024-01-04 * \"Wix\" \"Refund "
	    "seq-1 reversed\"\n  rs-seq: 4\n"));
	ck_assert_ptr_nonnull(strstr(got, "  Expenses:Refunds"
	    "                                  -12.95 USD\n"));
	ck_assert_ptr_nonnull(strstr(got, "2024-01-05 * \"Wix\" \"Refund "
	    "seq-1\"\n  rs-seq: 7\n"));
	ck_assert_ptr_null(strstr(got, "rs-seq: 1\n"));
	free(got);

	/* And hledger reads it the same way. */
	reg[2] = fx.ledger;
	out = run_ok(reg);
	ck_assert_str_eq(out, want_reg);
	free(out);
	free_records(&rs);
}
END_TEST

static Suite *
accounting_suite(void)
{
	Suite *s = suite_create("accounting");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_tools_accept_and_balance);
	tcase_add_test(tc, test_redelivery_changes_nothing);
	tcase_add_test(tc, test_state_sequence_postings);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(accounting_suite());
	int failed;

	xmalloc_init_json();
	log_init(0, false);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
