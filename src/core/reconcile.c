/*
 * reconcile.c: compare Wix, the store and the exporters (reconcile.h).
 *
 * One run, per instance:
 *  1. the store view: every refund of the instance, as a compact
 *     summary, sorted by id;
 *  2. the Wix view: backfill_walk() hands each Query Refunds page to
 *     rc_page(), which keeps a summary of every refund and compares it
 *     at once with the store's (a discrepancy is checked again against
 *     the live row, so a webhook that landed meanwhile is no false
 *     alarm), healing right there when asked: the full Wix version is
 *     only at hand while its page is;
 *  3. gone: store refunds Wix did not return (stored before the run
 *     began, so a refund created meanwhile is not counted);
 *  4. the exporters: the change log of the instance, walked once,
 *     against each exporter's position, dead letters, delivery log and,
 *     for file exporters, the records the file holds (read once per run);
 *  5. the completeness table per (day, currency).
 *
 * The report is a cJSON document (the JSON form of reconcile.h); the text
 * form is printed from it.  Integers go into it as raw JSON numbers, so
 * no count ever passes through binary floating point, and money as
 * exact decimal strings.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "core/backfill.h"
#include "core/export.h"
#include "core/reconcile.h"
#include "domain/money.h"
#include "domain/refund.h"
#include "exporters/posting.h"
#include "exporters/readback.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/isotime.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/strnum.h"
#include "util/termsafe.h"
#include "util/xmalloc.h"

#define RC_BUSY_TRIES	10	/* a repair the store cannot commit now */
#define RC_BUSY_WAIT_MS	200
#define RC_REPORT_MAX	(1024 * 1024)	/* largest report kept in
					   reconcile_runs */
#define RC_WHY_MAX	2048		/* longest reason a csv or jsonl
					   record is damaged */
#define RC_SHOW_MAX	64		/* bytes of a value a reason shows */

#define M_RUNS		"refundsync_reconcile_runs_total"
#define M_DRIFT		"refundsync_reconcile_drift"
#define M_REPAIRS	"refundsync_reconcile_repairs_total"

/* Each element e of the JSON array or object arr (NULL: none).  Our own
 * cJSON_ArrayForEach, which static analysers without cJSON's headers
 * cannot expand. */
#define RC_EACH(e, arr)							\
	for ((e) = (arr) != NULL ? (arr)->child : NULL; (e) != NULL;	\
	    (e) = (e)->next)

/* ---- small helpers ------------------------------------------------------- */

static void
rc_define_metrics(void)
{
	metrics_define(M_RUNS, METRIC_COUNTER,
	    "Reconcile runs of this process, by outcome.");
	metrics_define(M_DRIFT, METRIC_GAUGE,
	    "Discrepancies the last reconcile run of this process found, by "
	    "instance.");
	metrics_define(M_REPAIRS, METRIC_COUNTER,
	    "Repairs made by reconcile (every process, from the store's "
	    "reconcile_repairs), by kind.");
}

/* Add an integer to a JSON object without a double in between. */
static void
j_int(cJSON *o, const char *name, int64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%" PRId64, v);
	cJSON_AddRawToObject(o, name, tmp);
}

/* A revision, as a string like every amount and revision the CLI
 * prints (refundsync(8) --json), or null. */
static void
j_rev(cJSON *o, const char *name, bool has, int64_t v)
{
	char tmp[32];

	if (has) {
		snprintf(tmp, sizeof(tmp), "%" PRId64, v);
		cJSON_AddStringToObject(o, name, tmp);
	} else
		cJSON_AddNullToObject(o, name);
}

/* A string or null. */
static void
j_str(cJSON *o, const char *name, const char *s)
{
	if (s != NULL)
		cJSON_AddStringToObject(o, name, s);
	else
		cJSON_AddNullToObject(o, name);
}

/* The integer value of a raw or number item; 0 if absent. */
static int64_t
j_get_int(const cJSON *o, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
	int64_t v;

	if (cJSON_IsRaw(it) && it->valuestring != NULL &&
	    strnum_i64(it->valuestring, INT64_MIN, INT64_MAX, &v) == NULL)
		return v;
	return 0;
}

static const char *
j_get_str(const cJSON *o, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* "YYYY-MM-DD" (UTC) of an ISO-8601 text into day[11]; "unknown" if it
 * does not parse. */
static void
rc_day_of(const char *iso, char day[11])
{
	struct isotime t;
	struct tm tm;
	time_t s;

	if (iso != NULL && isotime_parse(iso, &t) == RS_OK) {
		s = (time_t)t.sec;
		if (gmtime_r(&s, &tm) != NULL &&
		    strftime(day, 11, "%Y-%m-%d", &tm) == 10)
			return;
	}
	snprintf(day, 11, "unknown");
}

/* a + b into *sum; false on overflow. */
static bool
rc_add(int64_t a, int64_t b, int64_t *sum)
{
	return !__builtin_add_overflow(a, b, sum);
}

/* Minor units as exact decimal text ("?" for an unknown exponent). */
static void
rc_money(int64_t minor, int exponent, char *out, size_t len)
{
	if (exponent < 0 || money_format(minor, exponent, out, len) != RS_OK)
		snprintf(out, len, "%" PRId64 " (minor units)", minor);
}

/* qsort(), which must not be handed a NULL base even for no element. */
static void
rc_qsort(void *base, size_t n, size_t size,
    int (*cmp)(const void *, const void *))
{
	if (n > 1)
		qsort(base, n, size, cmp);
}

static void
rc_sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000),
	    (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- a refund as a view sees it ------------------------------------------ */

struct rc_ref {
	char	*id;
	char	*charge_id;
	char	*status;
	char	*amount;		/* decimal text */
	char	*updated_date;
	char	 currency[4];
	char	 day[11];		/* createdDate's UTC day */
	bool	 has_revision;
	int64_t	 revision;
	bool	 has_seq;
	int64_t	 seq;
	bool	 amount_exact;
	int64_t	 amount_minor;
	int	 exponent;
	bool	 seen;			/* store view: Wix returned it */
	bool	 fresh;			/* store view: stored after the run
					   began */
};

struct rc_refs {
	struct rc_ref	*v;
	size_t		 n;
	size_t		 cap;
};

static void
rc_ref_fill(struct rc_ref *x, const struct refund *r)
{
	memset(x, 0, sizeof(*x));
	x->id = xstrdup(r->id);
	x->charge_id = r->charge_id != NULL ? xstrdup(r->charge_id) : NULL;
	x->status = xstrdup(r->status != NULL ? r->status : "");
	x->amount = xstrdup(r->amount != NULL ? r->amount : "");
	x->updated_date = r->updated_date != NULL ?
	    xstrdup(r->updated_date) : NULL;
	snprintf(x->currency, sizeof(x->currency), "%s",
	    r->currency != NULL ? r->currency : "???");
	rc_day_of(r->created_date, x->day);
	x->has_revision = r->has_revision;
	x->revision = r->revision;
	x->amount_exact = r->amount_exact;
	x->amount_minor = r->amount_minor;
	x->exponent = money_exponent(x->currency);
}

static void
rc_ref_cleanup(struct rc_ref *x)
{
	free(x->id);
	free(x->charge_id);
	free(x->status);
	free(x->amount);
	free(x->updated_date);
	memset(x, 0, sizeof(*x));
}

static struct rc_ref *
rc_refs_push(struct rc_refs *a)
{
	if (a->n == a->cap) {
		a->cap = a->cap == 0 ? 256 : 2 * a->cap;
		a->v = xreallocarray(a->v, a->cap, sizeof(*a->v));
	}
	return &a->v[a->n++];
}

static void
rc_refs_clear(struct rc_refs *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		rc_ref_cleanup(&a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

static int
rc_ref_cmp(const void *a, const void *b)
{
	return strcmp(((const struct rc_ref *)a)->id,
	    ((const struct rc_ref *)b)->id);
}

static struct rc_ref *
rc_refs_find(const struct rc_refs *a, const char *id)
{
	size_t lo = 0, hi = a->n, mid;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strcmp(id, a->v[mid].id);
		if (c == 0)
			return &a->v[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static struct refund_version
rc_version(const struct rc_ref *x)
{
	struct refund_version v;

	memset(&v, 0, sizeof(v));
	v.has_revision = x->has_revision;
	v.revision = x->revision;
	v.has_sequence = x->has_seq;
	v.sequence = x->seq;
	v.updated_date = x->updated_date;
	return v;
}

/* ---- the completeness table ---------------------------------------------- */

struct rc_cell {
	char	*status;		/* NULL for a ledger column */
	int64_t	 count;
	int64_t	 sum;
	int64_t	 inexact;		/* counted, not summed */
	bool	 overflow;
};

struct rc_cells {
	struct rc_cell	*v;
	size_t		 n;
};

struct rc_day {
	char		 day[11];
	char		 currency[4];
	int		 exponent;
	struct rc_cells	 wix;
	struct rc_cells	 store;
	struct rc_cell	*ledgers;	/* one per ledger exporter */
};

struct rc_days {
	struct rc_day	*v;
	size_t		 n;
	size_t		 cap;
	size_t		 nledgers;
};

static void
rc_cell_add(struct rc_cell *c, bool exact, int64_t minor)
{
	c->count++;
	if (!exact)
		c->inexact++;
	else if (!rc_add(c->sum, minor, &c->sum))
		c->overflow = true;
}

static struct rc_cell *
rc_cells_get(struct rc_cells *cs, const char *status)
{
	size_t i;

	for (i = 0; i < cs->n; i++)
		if (strcmp(cs->v[i].status, status) == 0)
			return &cs->v[i];
	cs->v = xreallocarray(cs->v, cs->n + 1, sizeof(*cs->v));
	memset(&cs->v[cs->n], 0, sizeof(cs->v[cs->n]));
	cs->v[cs->n].status = xstrdup(status);
	return &cs->v[cs->n++];
}

static void
rc_cells_clear(struct rc_cells *cs)
{
	size_t i;

	for (i = 0; i < cs->n; i++)
		free(cs->v[i].status);
	free(cs->v);
	memset(cs, 0, sizeof(*cs));
}

static int
rc_day_key_cmp(const struct rc_day *d, const char *day, const char *cur)
{
	int c = strcmp(d->day, day);

	return c != 0 ? c : strcmp(d->currency, cur);
}

/* The row of (day, currency), made if absent; rows stay sorted. */
static struct rc_day *
rc_days_get(struct rc_days *t, const char *day, const char *cur)
{
	size_t lo = 0, hi = t->n, mid;
	struct rc_day *d;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = rc_day_key_cmp(&t->v[mid], day, cur);
		if (c == 0)
			return &t->v[mid];
		if (c > 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (t->n == t->cap) {
		t->cap = t->cap == 0 ? 64 : 2 * t->cap;
		t->v = xreallocarray(t->v, t->cap, sizeof(*t->v));
	}
	memmove(&t->v[lo + 1], &t->v[lo], (t->n - lo) * sizeof(*t->v));
	t->n++;
	d = &t->v[lo];
	memset(d, 0, sizeof(*d));
	snprintf(d->day, sizeof(d->day), "%s", day);
	snprintf(d->currency, sizeof(d->currency), "%s", cur);
	d->exponent = money_exponent(cur);
	d->ledgers = t->nledgers > 0 ? xcalloc(t->nledgers,
	    sizeof(*d->ledgers)) : NULL;
	return d;
}

static void
rc_days_clear(struct rc_days *t)
{
	size_t i;

	for (i = 0; i < t->n; i++) {
		rc_cells_clear(&t->v[i].wix);
		rc_cells_clear(&t->v[i].store);
		free(t->v[i].ledgers);
	}
	free(t->v);
	t->v = NULL;
	t->n = t->cap = 0;
}

static bool
rc_cell_eq(const struct rc_cell *a, const struct rc_cell *b)
{
	int64_t ac = a != NULL ? a->count : 0, bc = b != NULL ? b->count : 0;
	int64_t as = a != NULL ? a->sum : 0, bs = b != NULL ? b->sum : 0;
	int64_t ai = a != NULL ? a->inexact : 0, bi = b != NULL ? b->inexact :
	    0;

	if ((a != NULL && a->overflow) || (b != NULL && b->overflow))
		return false;
	return ac == bc && as == bs && ai == bi;
}

static const struct rc_cell *
rc_cells_find(const struct rc_cells *cs, const char *status)
{
	size_t i;

	for (i = 0; i < cs->n; i++)
		if (strcmp(cs->v[i].status, status) == 0)
			return &cs->v[i];
	return NULL;
}

/* Does the store equal Wix for every status, and each ledger Wix's
 * SUCCEEDED?  A ledger with skip[i] set (records still pending) is not
 * held to it. */
static bool
rc_day_match(const struct rc_day *d, size_t nledgers, const bool *skip)
{
	const struct rc_cell *w;
	size_t i;

	for (i = 0; i < d->wix.n; i++)
		if (!rc_cell_eq(&d->wix.v[i], rc_cells_find(&d->store,
		    d->wix.v[i].status)))
			return false;
	for (i = 0; i < d->store.n; i++)
		if (!rc_cell_eq(&d->store.v[i], rc_cells_find(&d->wix,
		    d->store.v[i].status)))
			return false;
	w = rc_cells_find(&d->wix, POSTING_STATUS_SUCCEEDED);
	for (i = 0; i < nledgers; i++)
		if (!skip[i] && !rc_cell_eq(&d->ledgers[i], w))
			return false;
	return true;
}

static cJSON *
rc_cell_json(const struct rc_cell *c, int exponent)
{
	cJSON *o = cJSON_CreateObject();
	char sum[64];

	j_int(o, "count", c->count);
	if (c->overflow)
		cJSON_AddStringToObject(o, "sum", "overflow");
	else {
		rc_money(c->sum, exponent, sum, sizeof(sum));
		cJSON_AddStringToObject(o, "sum", sum);
	}
	if (c->inexact > 0)
		j_int(o, "inexact", c->inexact);
	return o;
}

/* ---- a file exporter's records, read once per run ------------------------ */

struct rc_fentry {
	int64_t		 seq;
	int64_t		 line;
	char		*refund_id;	/* may be NULL (damaged) */
	char		*why;		/* damaged: what is wrong */
	char		*text;		/* csv, jsonl: the key, status,
					   currency and amount as written
					   (RC_FT_*), each NUL-terminated,
					   in one block; NULL for the
					   journals */
	int64_t		 revision;	/* if has_revision */
	enum rs_posting	 posting;
	bool		 has_amount;
	int64_t		 amount_minor;	/* signed for ledger/beancount;
					   csv, jsonl: as written */
	int		 exponent;	/* of amount_minor */
	char		 currency[4];	/* "" if unknown */
	bool		 has_revision;
	bool		 damaged;
	bool		 matched;	/* a change claimed it */
	bool		 reported;	/* damaged: in an instance's
					   report */
};

/* The strings of rc_fentry.text, in order. */
enum {
	RC_FT_KEY,
	RC_FT_STATUS,
	RC_FT_CURRENCY,
	RC_FT_AMOUNT,
	RC_FT_N
};

/* One configured exporter, with what the run learnt of it. */
struct rc_exp {
	const struct config_exporter *cfg;
	bool		 accounting;	/* ledger or beancount */
	bool		 file;		/* readback_supports() */
	bool		 any_order;	/* takes a re-queued older record */
	int		 ledger_col;	/* its column in the table, or -1 */
	/* the file */
	bool		 file_read;
	char		*file_error;	/* why it could not be read */
	struct rc_fentry *ent;
	size_t		 nent;
	size_t		 capent;
	size_t		*by_seq;	/* indices, sorted by seq */
	size_t		*by_ref;	/* indices, sorted by refund id */
	/* the store's view of it */
	bool		 state_read;
	int64_t		 position;
	int64_t		*delivered;	/* sorted seqs */
	size_t		 ndelivered;
	size_t		 capdelivered;
	int64_t		*dead;		/* sorted seqs, not queued */
	size_t		 ndead;
	int64_t		*queued;	/* sorted seqs, queued */
	size_t		 nqueued;
	/* per instance */
	cJSON		*j;		/* its object in the instance */
	int64_t		 pending;
	char		**lag;		/* refunds with a change pending
					   since before the run, sorted */
	size_t		 nlag;
	size_t		 caplag;
};

static const struct rc_fentry *rc_sort_base;

static int
rc_by_seq_cmp(const void *a, const void *b)
{
	const struct rc_fentry *x = &rc_sort_base[*(const size_t *)a];
	const struct rc_fentry *y = &rc_sort_base[*(const size_t *)b];

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->line < y->line ? -1 : x->line > y->line;
}

static int
rc_by_ref_cmp(const void *a, const void *b)
{
	const struct rc_fentry *x = &rc_sort_base[*(const size_t *)a];
	const struct rc_fentry *y = &rc_sort_base[*(const size_t *)b];
	int c;

	c = strcmp(x->refund_id != NULL ? x->refund_id : "",
	    y->refund_id != NULL ? y->refund_id : "");
	if (c != 0)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

/* The texts of a csv or jsonl entry, packed for rc_fentry.text. */
static char *
rc_ftext_pack(const struct readback_entry *e)
{
	const char *v[RC_FT_N];
	size_t len[RC_FT_N], total = 0, i;
	char *block, *p;

	v[RC_FT_KEY] = e->key;
	v[RC_FT_STATUS] = e->status;
	v[RC_FT_CURRENCY] = e->currency;
	v[RC_FT_AMOUNT] = e->amount;
	for (i = 0; i < RC_FT_N; i++) {
		if (v[i] == NULL)
			v[i] = "";
		len[i] = strlen(v[i]) + 1;
		total += len[i];
	}
	p = block = xmalloc(total);
	for (i = 0; i < RC_FT_N; i++) {
		memcpy(p, v[i], len[i]);
		p += len[i];
	}
	return block;
}

/* String k (RC_FT_*) of f's texts. */
static const char *
rc_ftext(const struct rc_fentry *f, int k)
{
	const char *p = f->text;

	while (k-- > 0)
		p += strlen(p) + 1;
	return p;
}

static enum rs_status
rc_file_entry(void *arg, const struct readback_entry *e)
{
	struct rc_exp *x = arg;
	struct rc_fentry *f;

	if (x->nent == x->capent) {
		x->capent = x->capent == 0 ? 1024 : 2 * x->capent;
		x->ent = xreallocarray(x->ent, x->capent, sizeof(*x->ent));
	}
	f = &x->ent[x->nent++];
	memset(f, 0, sizeof(*f));
	f->seq = e->seq;
	f->line = e->line;
	f->refund_id = e->refund_id != NULL ? xstrdup(e->refund_id) : NULL;
	f->damaged = e->damaged;
	f->why = e->damaged && e->why != NULL ? xstrdup(e->why) : NULL;
	f->posting = e->posting;
	f->has_revision = e->has_revision;
	f->revision = e->revision;
	f->has_amount = e->has_amount;
	f->amount_minor = e->amount_minor;
	f->exponent = e->exponent;
	if (e->currency != NULL && strlen(e->currency) == 3)
		memcpy(f->currency, e->currency, 4);
	/* csv and jsonl records are compared with their change field by
	 * field (rc_row_check()): keep the texts. */
	if (!x->accounting)
		f->text = rc_ftext_pack(e);
	return RS_OK;
}

/* Read x's file once. */
static void
rc_file_read(struct rc_exp *x)
{
	struct rs_export_kv *kv;
	char *why = NULL;
	size_t i;

	if (x->file_read || !x->file)
		return;
	x->file_read = true;
	kv = xcalloc(x->cfg->nkv + 1, sizeof(*kv));
	for (i = 0; i < x->cfg->nkv; i++) {
		kv[i].key = x->cfg->kv[i].key;
		kv[i].value = x->cfg->kv[i].value;
	}
	if (readback_file(x->cfg->type, kv, x->cfg->nkv, rc_file_entry, x,
	    &why) != RS_OK) {
		x->file_error = why != NULL ? why : xstrdup("cannot read");
		log_warnx("reconcile: exporter %s: %s", x->cfg->name,
		    x->file_error);
		why = NULL;
	}
	free(why);
	free(kv);
	x->by_seq = xcalloc(x->nent + 1, sizeof(*x->by_seq));
	x->by_ref = xcalloc(x->nent + 1, sizeof(*x->by_ref));
	for (i = 0; i < x->nent; i++)
		x->by_seq[i] = x->by_ref[i] = i;
	rc_sort_base = x->ent;
	rc_qsort(x->by_seq, x->nent, sizeof(*x->by_seq), rc_by_seq_cmp);
	rc_qsort(x->by_ref, x->nent, sizeof(*x->by_ref), rc_by_ref_cmp);
	rc_sort_base = NULL;
}

/* The first index in by_seq with seq >= s. */
static size_t
rc_file_lower(const struct rc_exp *x, int64_t s)
{
	size_t lo = 0, hi = x->nent, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (x->ent[x->by_seq[mid]].seq < s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool
rc_seqs_has(const int64_t *v, size_t n, int64_t s)
{
	size_t lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (v[mid] == s)
			return true;
		if (v[mid] < s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static void
rc_seqs_push(int64_t **v, size_t *n, size_t *cap, int64_t s)
{
	if (*n == *cap) {
		*cap = *cap == 0 ? 1024 : 2 * *cap;
		*v = xreallocarray(*v, *cap, sizeof(**v));
	}
	(*v)[(*n)++] = s;
}

static enum rs_status
rc_delivery(void *arg, int64_t seq)
{
	struct rc_exp *x = arg;

	rc_seqs_push(&x->delivered, &x->ndelivered, &x->capdelivered, seq);
	return RS_OK;
}

static enum rs_status
rc_dead_row(void *arg, const struct store_dead_row *d)
{
	struct rc_exp *x = arg;
	size_t cap;

	if (d->queued) {
		cap = x->nqueued;
		x->queued = xreallocarray(x->queued, cap + 1,
		    sizeof(*x->queued));
		x->queued[x->nqueued++] = d->seq;
	} else {
		cap = x->ndead;
		x->dead = xreallocarray(x->dead, cap + 1, sizeof(*x->dead));
		x->dead[x->ndead++] = d->seq;
	}
	return RS_OK;
}

static int
rc_i64_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Read x's position, delivery log and dead letters (once per run). */
static enum rs_status
rc_exp_state(struct store *st, struct rc_exp *x)
{
	struct store_export e;
	enum rs_status rc;

	if (x->state_read)
		return RS_OK;
	rc = store_export_get(st, x->cfg->name, &e);
	if (rc == RS_OK) {
		x->position = e.position;
		store_export_cleanup(&e);
	} else if (rc == RS_ERR_NOTFOUND)
		x->position = 0;
	else
		return rc;
	if ((rc = store_export_deliveries_foreach(st, x->cfg->name,
	    rc_delivery, x)) != RS_OK)
		return rc;
	if ((rc = store_dead_foreach(st, x->cfg->name, rc_dead_row, x)) !=
	    RS_OK)
		return rc;
	rc_qsort(x->delivered, x->ndelivered, sizeof(*x->delivered),
	    rc_i64_cmp);
	rc_qsort(x->dead, x->ndead, sizeof(*x->dead), rc_i64_cmp);
	rc_qsort(x->queued, x->nqueued, sizeof(*x->queued), rc_i64_cmp);
	x->state_read = true;
	return RS_OK;
}

static void
rc_exp_lag_clear(struct rc_exp *x)
{
	size_t i;

	for (i = 0; i < x->nlag; i++)
		free(x->lag[i]);
	free(x->lag);
	x->lag = NULL;
	x->nlag = x->caplag = 0;
}

static int
rc_strp_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Has refund id a change x had not reached when the run began? */
static bool
rc_exp_lags(const struct rc_exp *x, const char *id)
{
	return x->nlag > 0 && bsearch(&id, x->lag, x->nlag, sizeof(*x->lag),
	    rc_strp_cmp) != NULL;
}

static void
rc_exp_cleanup(struct rc_exp *x)
{
	size_t i;

	rc_exp_lag_clear(x);
	for (i = 0; i < x->nent; i++) {
		free(x->ent[i].refund_id);
		free(x->ent[i].why);
		free(x->ent[i].text);
	}
	free(x->ent);
	free(x->by_seq);
	free(x->by_ref);
	free(x->file_error);
	free(x->delivered);
	free(x->dead);
	free(x->queued);
	memset(x, 0, sizeof(*x));
}

/* ---- the report ---------------------------------------------------------- */

struct reconcile_report {
	cJSON		*doc;
	int64_t		 drift;
	int64_t		 repaired;
	int		 worst;		/* 0 clean, 1 drift, 2 failed */
};

static const char *const rc_outcomes[] = { "clean", "drift", "failed" };

/* The ending of "discrepanc-" for n of them. */
static const char *
rc_ies(int64_t n)
{
	return n == 1 ? "y" : "ies";
}

/* ---- one run ------------------------------------------------------------- */

struct rc_run {
	const struct config	*cfg;
	struct store		*st;
	struct wixapi		*w;
	const struct reconcile_options *opt;
	struct isotime		 began;
	char			 began_iso[32];
	struct rc_exp		*exps;
	size_t			 nexps;
	size_t			 nledgers;
	/* the instance at hand */
	const char		*instance;
	int64_t			 last_seq;	/* the change log's end when
						   the run began */
	struct rc_refs		 store;		/* sorted by id */
	struct rc_refs		 wix;		/* sorted by id at the end */
	int64_t			 ahead;		/* store newer than Wix */
	int64_t			 pages;
	int64_t			 drift;
	int64_t			 repaired;
	cJSON			*ji;		/* the instance's object */
	cJSON			*missing;
	cJSON			*stale;
	cJSON			*gone;
	cJSON			*conflict;
	struct rc_days		 days;
};

static void
rc_repair_metric(const char *kind)
{
	char label[96];

	snprintf(label, sizeof(label), "kind=\"%s\"", kind);
	metrics_add(M_REPAIRS, label, 1);
}

/*
 * Upsert Wix's version r with source reconcile, logging the repair in the
 * same transaction.  *applied: it was stored (a newer version may have
 * landed meanwhile: then nothing changes).
 */
static enum rs_status
rc_heal_refund(struct rc_run *run, const struct refund *r, const char *kind,
    const char *detail, bool *applied)
{
	struct store_repair rep;
	enum store_outcome out = STORE_STALE;
	enum rs_status rc = RS_ERR_BUSY;
	int n;

	*applied = false;
	memset(&rep, 0, sizeof(rep));
	rep.instance_id = run->instance;
	rep.kind = kind;
	rep.refund_id = r->id;
	rep.detail = detail;
	for (n = 1; n <= RC_BUSY_TRIES; n++) {
		if ((rc = store_begin(run->st)) == RS_OK &&
		    (rc = store_apply_refund(run->st, r, run->instance, false,
		    0, "reconcile", &out)) == RS_OK &&
		    (out != STORE_APPLIED ||
		    (rc = store_repair_log(run->st, &rep)) == RS_OK) &&
		    (rc = store_commit(run->st)) == RS_OK)
			break;
		store_rollback(run->st);
		if (rc != RS_ERR_BUSY)
			break;
		rc_sleep_ms(RC_BUSY_WAIT_MS);
	}
	if (rc != RS_OK) {
		log_warnx("reconcile %s: cannot repair refund %s: %s",
		    run->instance, r->id, rs_strstatus(rc));
		return rc;
	}
	if (out == STORE_APPLIED) {
		*applied = true;
		run->repaired++;
		rc_repair_metric(kind);
		log_info("reconcile %s: repaired refund %s: %s", run->instance,
		    r->id, detail);
	}
	return RS_OK;
}

/*
 * Is Wix's r still newer than what the store holds now (or absent)?  The
 * store view was read before the Wix pass: a webhook may have landed
 * since, and that is no discrepancy.
 */
static bool
rc_still_newer(struct rc_run *run, const struct refund *r)
{
	struct store_refund_row row;
	struct refund_version in, have;
	bool newer;

	if (store_refund_get(run->st, r->id, &row) != RS_OK)
		return true;
	memset(&in, 0, sizeof(in));
	in.has_revision = r->has_revision;
	in.revision = r->revision;
	in.updated_date = r->updated_date;
	memset(&have, 0, sizeof(have));
	have.has_revision = row.refund.has_revision;
	have.revision = row.refund.revision;
	have.has_sequence = row.has_sequence;
	have.sequence = row.sequence;
	have.updated_date = row.refund.updated_date;
	newer = refund_version_newer(&in, &have);
	store_refund_row_cleanup(&row);
	return newer;
}

/* Wix's refund r is not in the store view. */
static void
rc_missing(struct rc_run *run, const struct refund *r)
{
	bool healed = false;
	cJSON *o;
	char *detail;

	if (!rc_still_newer(run, r))
		return;		/* stored meanwhile, by a webhook */
	run->drift++;
	if (run->opt->heal) {
		detail = xasprintf("missing locally: stored Wix's version (%s)",
		    r->status);
		(void)rc_heal_refund(run, r, "refund_missing", detail,
		    &healed);
		free(detail);
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "refund_id", r->id);
	j_rev(o, "wix_revision", r->has_revision, r->revision);
	j_str(o, "wix_status", r->status);
	cJSON_AddBoolToObject(o, "healed", healed);
	cJSON_AddItemToArray(run->missing, o);
}

/* Wix's r is newer than the store's s. */
static void
rc_stale(struct rc_run *run, const struct refund *r, const struct rc_ref *s)
{
	bool healed = false;
	cJSON *o;
	char *detail;

	if (!rc_still_newer(run, r))
		return;		/* caught up meanwhile */
	run->drift++;
	if (run->opt->heal) {
		detail = xasprintf("stale: %s -> Wix's %s", s->status,
		    r->status);
		(void)rc_heal_refund(run, r, "refund_stale", detail, &healed);
		free(detail);
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "refund_id", r->id);
	j_rev(o, "store_revision", s->has_revision, s->revision);
	j_rev(o, "wix_revision", r->has_revision, r->revision);
	cJSON_AddStringToObject(o, "store_status", s->status);
	j_str(o, "wix_status", r->status);
	cJSON_AddBoolToObject(o, "healed", healed);
	cJSON_AddItemToArray(run->stale, o);
}

static void
rc_conflict(struct rc_run *run, const struct rc_ref *s,
    const struct rc_ref *w, const char *field, const char *sv,
    const char *wv)
{
	cJSON *o = cJSON_CreateObject();

	run->drift++;
	cJSON_AddStringToObject(o, "refund_id", s->id);
	j_rev(o, "revision", s->has_revision, s->revision);
	cJSON_AddStringToObject(o, "field", field);
	j_str(o, "store", sv);
	j_str(o, "wix", wv);
	cJSON_AddItemToArray(run->conflict, o);
	(void)w;
}

static bool
rc_same_amount(const struct rc_ref *a, const struct rc_ref *b)
{
	if (a->amount_exact && b->amount_exact)
		return a->amount_minor == b->amount_minor;
	return strcmp(a->amount, b->amount) == 0;
}

/* Same version in both: compare what must not differ. */
static void
rc_compare(struct rc_run *run, const struct rc_ref *s, const struct rc_ref *w)
{
	if (strcmp(s->status, w->status) != 0)
		rc_conflict(run, s, w, "status", s->status, w->status);
	if (strcmp(s->currency, w->currency) != 0)
		rc_conflict(run, s, w, "currency", s->currency, w->currency);
	else if (!rc_same_amount(s, w))
		rc_conflict(run, s, w, "amount", s->amount, w->amount);
	if ((s->charge_id == NULL) != (w->charge_id == NULL) ||
	    (s->charge_id != NULL && strcmp(s->charge_id, w->charge_id) != 0))
		rc_conflict(run, s, w, "charge_id", s->charge_id,
		    w->charge_id);
}

/* backfill_walk(): one page of Wix's refunds. */
static enum rs_status
rc_page(void *arg, const struct wixapi_page *p)
{
	struct rc_run *run = arg;
	struct refund_version wv, sv;
	struct rc_ref *s, *x;
	size_t i;

	run->pages++;
	for (i = 0; i < p->n; i++) {
		const struct refund *r = &p->refunds[i];

		x = rc_refs_push(&run->wix);
		rc_ref_fill(x, r);
		s = rc_refs_find(&run->store, r->id);
		if (s == NULL) {
			rc_missing(run, r);
			continue;
		}
		s->seen = true;
		wv = rc_version(x);
		sv = rc_version(s);
		if (refund_version_newer(&wv, &sv))
			rc_stale(run, r, s);
		else if (refund_version_newer(&sv, &wv))
			run->ahead++;
		else
			rc_compare(run, s, x);
	}
	if (run->opt->stop != NULL && atomic_load(run->opt->stop))
		return RS_ERR_STOPPING;
	return RS_OK;
}

/* backfill_walk(): Wix rejected the cursor; the pass starts over. */
static void
rc_restart(void *arg)
{
	struct rc_run *run = arg;
	size_t i;

	rc_refs_clear(&run->wix);
	for (i = 0; i < run->store.n; i++)
		run->store.v[i].seen = false;
	run->drift = 0;
	run->ahead = 0;
	cJSON_DeleteItemFromObject(run->ji, "missing");
	cJSON_DeleteItemFromObject(run->ji, "stale");
	cJSON_DeleteItemFromObject(run->ji, "conflict");
	run->missing = cJSON_AddArrayToObject(run->ji, "missing");
	run->stale = cJSON_AddArrayToObject(run->ji, "stale");
	run->conflict = cJSON_AddArrayToObject(run->ji, "conflict");
}

/* Progress on a terminal. */
static void
rc_progress(void *arg, const struct backfill_progress *p)
{
	const struct rc_run *run = arg;

	if (!run->opt->progress)
		return;
	if (p->finished)
		fprintf(stderr, "\r\033[K");
	else
		fprintf(stderr, "\r\033[Kreconcile %s: Wix page %lld, %lld "
		    "refunds, %llu requests", p->instance_id,
		    (long long)p->run_pages, (long long)p->refunds,
		    (unsigned long long)p->requests);
	(void)fflush(stderr);
}

static enum rs_status
rc_store_row(void *arg, const struct store_refund_row *row)
{
	struct rc_run *run = arg;
	struct rc_ref *x = rc_refs_push(&run->store);
	struct isotime t;

	rc_ref_fill(x, &row->refund);
	x->has_seq = row->has_sequence;
	x->seq = row->sequence;
	if (row->refund.created_date == NULL)
		rc_day_of(row->stored_at, x->day);
	x->fresh = row->stored_at != NULL &&
	    isotime_parse(row->stored_at, &t) == RS_OK &&
	    isotime_cmp(&t, &run->began) >= 0;
	return RS_OK;
}

/* ---- the exporters, over the instance's change log ----------------------- */

struct rc_walk {
	struct rc_run	*run;
};

static cJSON *
rc_exp_list(struct rc_exp *x, const char *name)
{
	cJSON *a = cJSON_GetObjectItemCaseSensitive(x->j, name);

	return a != NULL ? a : cJSON_AddArrayToObject(x->j, name);
}

/* Re-queue change c for x.  *note: why not, when it was not. */
static bool
rc_requeue(struct rc_run *run, struct rc_exp *x, const struct store_change *c,
    enum rs_posting posting, const char *key, const char *where,
    const char **note)
{
	struct store_dead_letter dl;
	struct store_repair rep;
	enum rs_status rc = RS_ERR_BUSY;
	char *reason, *detail;
	int n;

	*note = NULL;
	if (x->file && !x->any_order && strcmp(where, "file") == 0) {
		*note = "the file is in seq order: move it away and run "
		    "`refundsync export replay`";
		return false;
	}
	reason = xasprintf("reconcile: %s", strcmp(where, "file") == 0 ?
	    "missing from the file" : strcmp(where, "dead") == 0 ?
	    "a dead letter" : "not in the delivery log");
	detail = xasprintf("seq %" PRId64 " (%s, %s) re-queued: %s", c->seq,
	    key, posting_name(posting), reason + strlen("reconcile: "));
	memset(&dl, 0, sizeof(dl));
	dl.seq = c->seq;
	dl.refund_id = c->refund_id;
	dl.has_revision = c->has_revision;
	dl.revision = c->revision;
	dl.idempotency_key = key;
	dl.reason = reason;
	memset(&rep, 0, sizeof(rep));
	rep.instance_id = run->instance;
	rep.kind = "posting_requeued";
	rep.refund_id = c->refund_id;
	rep.exporter = x->cfg->name;
	rep.seq = c->seq;
	rep.detail = detail;
	for (n = 1; n <= RC_BUSY_TRIES; n++) {
		rc = store_export_requeue(run->st, x->cfg->name, &dl, &rep);
		if (rc != RS_ERR_BUSY)
			break;
		rc_sleep_ms(RC_BUSY_WAIT_MS);
	}
	if (rc == RS_OK) {
		run->repaired++;
		rc_repair_metric("posting_requeued");
		log_info("reconcile %s: exporter %s: %s", run->instance,
		    x->cfg->name, detail);
	} else {
		log_warnx("reconcile %s: exporter %s: cannot re-queue seq %"
		    PRId64 ": %s", run->instance, x->cfg->name, c->seq,
		    rs_strstatus(rc));
		*note = "the store could not record it";
	}
	free(reason);
	free(detail);
	return rc == RS_OK;
}

static void
rc_exp_missing(struct rc_run *run, struct rc_exp *x,
    const struct store_change *c, enum rs_posting posting, const char *key,
    const char *where)
{
	const char *note = NULL;
	bool requeued = false;
	cJSON *o;

	run->drift++;
	if (run->opt->heal)
		requeued = rc_requeue(run, x, c, posting, key, where, &note);
	o = cJSON_CreateObject();
	j_int(o, "seq", c->seq);
	cJSON_AddStringToObject(o, "refund_id", c->refund_id);
	j_rev(o, "revision", c->has_revision, c->revision);
	cJSON_AddStringToObject(o, "posting", posting_name(posting));
	cJSON_AddStringToObject(o, "key", key);
	cJSON_AddStringToObject(o, "where", where);
	cJSON_AddBoolToObject(o, "requeued", requeued);
	if (note != NULL)
		cJSON_AddStringToObject(o, "note", note);
	cJSON_AddItemToArray(rc_exp_list(x, "missing"), o);
}

/* Report damaged record f, once a run. */
static void
rc_exp_damaged(struct rc_run *run, struct rc_exp *x, struct rc_fentry *f,
    const char *why)
{
	cJSON *o;

	if (f->reported)
		return;
	f->reported = true;
	o = cJSON_CreateObject();
	run->drift++;
	j_int(o, "line", f->line);
	j_int(o, "seq", f->seq);
	j_str(o, "refund_id", f->refund_id);
	cJSON_AddStringToObject(o, "why", why);
	cJSON_AddItemToArray(rc_exp_list(x, "damaged"), o);
}

/*
 * The cnt records of ledger or beancount exporter x's file at by_seq[j..]
 * hold change c, which posts rec: each must be what the exporter wrote
 * for it, the same refund, posting and amount on the refund account.
 * One that is not was edited by hand: it is marked damaged, so it counts
 * neither as the posting nor in the table.  A change whose transaction
 * cannot be built (the exporter sent it to dead letters) is not checked.
 */
static void
rc_file_check(struct rc_exp *x, const struct store_change *c,
    const struct rs_export_record *rec, size_t j, size_t cnt)
{
	struct posting_accounts acc;
	struct posting_txn t;
	struct rc_fentry *f;
	char have[64], want[64];
	int64_t minor = 0;
	size_t i;

	posting_accounts_default(&acc);
	if (posting_build(rec, &acc, &t, NULL) != RS_OK ||
	    t.kind == RS_POSTING_NONE)
		return;
	for (i = 0; i < t.nlines; i++)
		if (strcmp(t.lines[i].account, acc.refund) == 0)
			minor = t.lines[i].minor;
	for (; cnt > 0; cnt--, j++) {
		f = &x->ent[x->by_seq[j]];
		if (f->damaged)
			continue;
		if (f->refund_id == NULL ||
		    strcmp(f->refund_id, c->refund_id) != 0)
			f->why = xasprintf("rs-refund-id is %s, but rs-seq %"
			    PRId64 " is a change of refund %s",
			    f->refund_id != NULL ? f->refund_id : "-", c->seq,
			    c->refund_id);
		else if (f->posting != rec->posting)
			f->why = xasprintf("rs-posting is %s, but rs-seq %"
			    PRId64 " posts %s", posting_name(f->posting),
			    c->seq, posting_name(rec->posting));
		else if (f->has_amount && (f->exponent != t.exponent ||
		    strcmp(f->currency, t.currency) != 0 ||
		    f->amount_minor != minor)) {
			rc_money(f->amount_minor, f->exponent, have,
			    sizeof(have));
			rc_money(minor, t.exponent, want, sizeof(want));
			f->why = xasprintf("the refund account holds %s %s, "
			    "but rs-seq %" PRId64 " posts %s %s", have,
			    f->currency[0] != '\0' ? f->currency : "?",
			    c->seq, want, t.currency);
		}
		if (f->why != NULL)
			f->damaged = true;
	}
}

/*
 * Does text read back from a file (have) say what the exporter wrote for
 * want?  NULL and "" are both empty (csv writes both as an empty field),
 * and csv writes a control byte as a space (filejournal_put_csv()).
 */
static bool
rc_text_eq(const char *have, const char *want, bool csv)
{
	const unsigned char *h = (const unsigned char *)(have != NULL ?
	    have : "");
	const unsigned char *w = (const unsigned char *)(want != NULL ?
	    want : "");
	unsigned char c;

	for (;; h++, w++) {
		c = *w;
		if (csv && c != '\0' && (c < 0x20 || c == 0x7f))
			c = ' ';
		if (*h != c)
			return false;
		if (c == '\0')
			return true;
	}
}

/* s (NULL: empty) quoted, cut to RC_SHOW_MAX bytes on a character
 * boundary, into out. */
static void
rc_show(const char *s, char *out, size_t len)
{
	size_t n = s != NULL ? strlen(s) : 0;
	bool cut = n > RC_SHOW_MAX;

	if (cut) {
		n = RC_SHOW_MAX;
		/* Not inside a UTF-8 sequence. */
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	snprintf(out, len, "\"%.*s%s\"", (int)n, n > 0 ? s : "",
	    cut ? "..." : "");
}

/* Add "name is HAVE, but seq S has WANT" to why, when the text read
 * back is not what was written. */
static void
rc_row_text(struct buf *why, const char *name, const char *have,
    const char *want, bool csv, int64_t seq)
{
	char h[RC_SHOW_MAX + 8], w[RC_SHOW_MAX + 8];

	if (rc_text_eq(have, want, csv))
		return;
	rc_show(have, h, sizeof(h));
	rc_show(want, w, sizeof(w));
	(void)buf_printf(why, "%s%s is %s, but seq %" PRId64 " has %s",
	    why->len > 0 ? "; " : "", name, h, seq, w);
}

/* An integer, or "null", into out. */
static void
rc_show_int(bool has, int64_t v, char *out, size_t len)
{
	if (has)
		snprintf(out, len, "%" PRId64, v);
	else
		snprintf(out, len, "null");
}

/*
 * The cnt records of csv or jsonl exporter x's file at by_seq[j..] hold
 * change c, written as rec with idempotency key key: each must say what
 * the exporter wrote for it, field by field: refund id, key, revision,
 * status, posting, currency, the amount as text and in minor units with
 * their exponent (the other columns, instance, charge, previous status,
 * fees, dates, source and the embedded entity, are not compared).  One
 * that does not was edited by hand, or corrupted: it is marked damaged,
 * with every difference, so it counts as the change's record (neither
 * missing nor foreign) and is reported.
 */
static void
rc_row_check(struct rc_exp *x, const struct store_change *c,
    const struct rs_export_record *rec, const char *key, size_t j,
    size_t cnt)
{
	bool csv = strcmp(x->cfg->type, "csv") == 0;
	struct rc_fentry *f;
	struct buf why;
	char have[48], want[48];

	for (; cnt > 0; cnt--, j++) {
		f = &x->ent[x->by_seq[j]];
		if (f->damaged || f->text == NULL)
			continue;
		buf_init(&why, RC_WHY_MAX);
		rc_row_text(&why, "refund_id", f->refund_id, rec->refund_id,
		    csv, c->seq);
		rc_row_text(&why, "idempotency_key", rc_ftext(f, RC_FT_KEY),
		    key, csv, c->seq);
		if (f->has_revision != (rec->has_revision != 0) ||
		    (f->has_revision && f->revision != rec->revision)) {
			rc_show_int(f->has_revision, f->revision, have,
			    sizeof(have));
			rc_show_int(rec->has_revision, rec->revision, want,
			    sizeof(want));
			(void)buf_printf(&why, "%srevision is %s, but seq %"
			    PRId64 " has %s", why.len > 0 ? "; " : "", have,
			    c->seq, want);
		}
		rc_row_text(&why, "status", rc_ftext(f, RC_FT_STATUS),
		    rec->status, csv, c->seq);
		if (f->posting != rec->posting)
			(void)buf_printf(&why, "%sposting is %s, but seq %"
			    PRId64 " posts %s", why.len > 0 ? "; " : "",
			    posting_name(f->posting), c->seq,
			    posting_name(rec->posting));
		rc_row_text(&why, "currency", rc_ftext(f, RC_FT_CURRENCY),
		    rec->currency, csv, c->seq);
		rc_row_text(&why, "amount", rc_ftext(f, RC_FT_AMOUNT),
		    rec->amount, csv, c->seq);
		if (f->has_amount != (rec->amount_exact != 0) ||
		    (f->has_amount && (f->amount_minor != rec->amount_minor ||
		    f->exponent != rec->exponent))) {
			if (f->has_amount)
				snprintf(have, sizeof(have), "%" PRId64 "/%d",
				    f->amount_minor, f->exponent);
			else
				snprintf(have, sizeof(have), "null");
			if (rec->amount_exact)
				snprintf(want, sizeof(want), "%" PRId64 "/%d",
				    rec->amount_minor, rec->exponent);
			else
				snprintf(want, sizeof(want), "null");
			(void)buf_printf(&why, "%samount_minor/exponent are "
			    "%s, but seq %" PRId64 " has %s", why.len > 0 ?
			    "; " : "", have, c->seq, want);
		}
		if (why.len > 0) {
			f->why = buf_detach(&why, NULL);
			f->damaged = true;
		}
		buf_cleanup(&why);
	}
}

/*
 * Mark the records x's file holds for change c (which posts rec, with
 * x's idempotency key key) as claimed, and check them; returns how many
 * there are, the first at by_seq[*j].
 */
static size_t
rc_file_claim(struct rc_exp *x, const struct store_change *c,
    const struct rs_export_record *rec, const char *key, size_t *j)
{
	size_t cnt;

	*j = rc_file_lower(x, c->seq);
	for (cnt = 0; *j + cnt < x->nent && x->ent[x->by_seq[*j +
	    cnt]].seq == c->seq; cnt++)
		x->ent[x->by_seq[*j + cnt]].matched = true;
	if (cnt > 0 && x->accounting)
		rc_file_check(x, c, rec, *j, cnt);
	else if (cnt > 0)
		rc_row_check(x, c, rec, key, *j, cnt);
	return cnt;
}

/* One change of the instance, against every exporter. */
static enum rs_status
rc_change(void *arg, const struct store_change *c)
{
	struct rc_walk *wk = arg;
	struct rc_run *run = wk->run;
	enum rs_posting posting;
	struct rc_exp *x;
	size_t k, j, cnt;
	char *key;
	struct rs_export_record rec;
	cJSON *o, *lines;
	bool queued, dead;

	export_record_fill(&rec, c);
	posting = rec.posting;
	for (k = 0; k < run->nexps; k++) {
		x = &run->exps[k];
		if (x->accounting && posting == RS_POSTING_NONE)
			continue;
		key = export_idempotency_key(x->cfg->name, c, posting);
		queued = rc_seqs_has(x->queued, x->nqueued, c->seq);
		dead = !queued && rc_seqs_has(x->dead, x->ndead, c->seq);
		/* Queued for another try, or not reached yet: lag.  A file
		 * exporter writes a record before it records its position,
		 * so after a crash its file can hold records above the
		 * position (it skips them when it starts again): they are
		 * those changes', not foreign ones. */
		if (queued || (!dead && c->seq > x->position &&
		    !rc_seqs_has(x->delivered, x->ndelivered, c->seq))) {
			x->pending++;
			if (x->file && x->file_error == NULL)
				(void)rc_file_claim(x, c, &rec, key, &j);
			if (c->seq <= run->last_seq) {
				if (x->nlag == x->caplag) {
					x->caplag = x->caplag == 0 ? 64 :
					    2 * x->caplag;
					x->lag = xreallocarray(x->lag,
					    x->caplag, sizeof(*x->lag));
				}
				x->lag[x->nlag++] = xstrdup(c->refund_id);
			}
		} else if (dead) {
			rc_exp_missing(run, x, c, posting, key, "dead");
		} else if (x->file && x->file_error == NULL) {
			cnt = rc_file_claim(x, c, &rec, key, &j);
			if (cnt == 0)
				rc_exp_missing(run, x, c, posting, key, "file");
			else if (cnt > 1) {
				run->drift++;
				o = cJSON_CreateObject();
				j_int(o, "seq", c->seq);
				cJSON_AddStringToObject(o, "refund_id",
				    c->refund_id);
				j_rev(o, "revision", c->has_revision,
				    c->revision);
				cJSON_AddStringToObject(o, "posting",
				    posting_name(posting));
				cJSON_AddStringToObject(o, "key", key);
				j_int(o, "count", (int64_t)cnt);
				lines = cJSON_AddArrayToObject(o, "lines");
				for (; cnt > 0; cnt--, j++) {
					cJSON *n = cJSON_CreateRaw("0");

					free(n->valuestring);
					n->valuestring = xasprintf("%" PRId64,
					    x->ent[x->by_seq[j]].line);
					cJSON_AddItemToArray(lines, n);
				}
				cJSON_AddItemToArray(rc_exp_list(x, "doubled"),
				    o);
			}
		} else if (!x->file &&
		    !rc_seqs_has(x->delivered, x->ndelivered, c->seq)) {
			rc_exp_missing(run, x, c, posting, key, "log");
		}
		free(key);
	}
	return RS_OK;
}

/* The latest status of refund id: Wix's, else the store's. */
static const struct rc_ref *
rc_current(const struct rc_run *run, const char *id)
{
	const struct rc_ref *r = rc_refs_find(&run->wix, id);

	return r != NULL ? r : rc_refs_find(&run->store, id);
}

/*
 * The records x's file holds for the instance's refunds: damaged or
 * unclaimed ones, refunds still posted though no longer SUCCEEDED, and
 * the ledger column of the table.
 */
static void
rc_exp_file_refunds(struct rc_run *run, struct rc_exp *x)
{
	const struct rc_ref *cur;
	struct rc_fentry *f;
	struct rc_day *d;
	struct rc_cell *cell;
	size_t i, j;
	int64_t net, sum;
	bool exact, over;
	cJSON *o;

	for (i = 0; i < x->nent; i = j) {
		const char *id = x->ent[x->by_ref[i]].refund_id;

		for (j = i + 1; j < x->nent; j++) {
			const char *o2 = x->ent[x->by_ref[j]].refund_id;

			if ((id == NULL) != (o2 == NULL) ||
			    (id != NULL && strcmp(id, o2) != 0))
				break;
		}
		if (id == NULL) {
			/* Whose it was cannot be told: the first instance
			 * of the run reports it. */
			for (; i < j; i++) {
				f = &x->ent[x->by_ref[i]];
				rc_exp_damaged(run, x, f, f->why != NULL ?
				    f->why : "damaged");
			}
			continue;
		}
		cur = rc_current(run, id);
		if (cur == NULL) {
			/* Another instance's; but a record a change of
			 * this one claimed, under a refund id no view
			 * has, was edited. */
			for (; i < j; i++) {
				f = &x->ent[x->by_ref[i]];
				if (f->damaged && f->matched)
					rc_exp_damaged(run, x, f, f->why !=
					    NULL ? f->why : "damaged");
			}
			continue;
		}
		net = sum = 0;
		exact = true;
		over = false;
		for (; i < j; i++) {
			f = &x->ent[x->by_ref[i]];
			if (f->damaged) {
				rc_exp_damaged(run, x, f, f->why != NULL ?
				    f->why : "damaged");
				continue;
			}
			if (!f->matched) {
				rc_exp_damaged(run, x, f, "not a change "
				    "refundsync made for this exporter");
				continue;
			}
			/* An adjustment moves the sum, not the count. */
			if (f->posting == RS_POSTING_POST)
				net++;
			else if (f->posting == RS_POSTING_REVERSE)
				net--;
			else if (f->posting != RS_POSTING_ADJUST)
				continue;
			if (!f->has_amount)
				exact = false;
			else if (!rc_add(sum, f->amount_minor, &sum))
				over = true;
		}
		if (!x->accounting)
			continue;
		/* Not reversed yet is lag while the exporter has a change
		 * of the refund still to deliver; one this run made by
		 * healing is the stale refund just reported. */
		if (net > 0 && strcmp(cur->status,
		    POSTING_STATUS_SUCCEEDED) != 0 && !rc_exp_lags(x, id)) {
			run->drift++;
			o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "refund_id", id);
			cJSON_AddStringToObject(o, "status", cur->status);
			j_int(o, "net", net);
			cJSON_AddItemToArray(rc_exp_list(x, "not_reversed"),
			    o);
		}
		/* A refund posted and reversed nets to 0; one whose
		 * reversal took away more or less than was posted does
		 * not, and the table shows it. */
		if ((net == 0 && (!exact || over || sum == 0)) ||
		    x->ledger_col < 0)
			continue;
		d = rc_days_get(&run->days, cur->day, cur->currency);
		cell = &d->ledgers[x->ledger_col];
		cell->count += net;
		if (!exact)
			cell->inexact++;
		else if (over || !rc_add(cell->sum, sum, &cell->sum))
			cell->overflow = true;
	}
}

/* Evaluate every exporter for the instance. */
static enum rs_status
rc_exporters(struct rc_run *run, cJSON *arr)
{
	struct rc_walk wk;
	enum rs_status rc;
	struct rc_exp *x;
	size_t k;

	for (k = 0; k < run->nexps; k++) {
		x = &run->exps[k];
		if ((rc = rc_exp_state(run->st, x)) != RS_OK)
			return rc;
		rc_file_read(x);
		x->pending = 0;
		rc_exp_lag_clear(x);
		x->j = cJSON_CreateObject();
		cJSON_AddStringToObject(x->j, "exporter", x->cfg->name);
		cJSON_AddStringToObject(x->j, "type", x->cfg->type);
		cJSON_AddStringToObject(x->j, "view", x->file ? "file" :
		    "log");
		if (x->file_error != NULL)
			cJSON_AddStringToObject(x->j, "error", x->file_error);
		(void)rc_exp_list(x, "missing");
		(void)rc_exp_list(x, "doubled");
		(void)rc_exp_list(x, "not_reversed");
		(void)rc_exp_list(x, "damaged");
		cJSON_AddItemToArray(arr, x->j);
	}
	wk.run = run;
	if ((rc = store_changes_foreach(run->st, run->instance, rc_change,
	    &wk)) != RS_OK)
		return rc;
	for (k = 0; k < run->nexps; k++) {
		x = &run->exps[k];
		rc_qsort(x->lag, x->nlag, sizeof(*x->lag), rc_strp_cmp);
		if (x->file && x->file_error != NULL)
			run->drift++;	/* a file we cannot read */
		else if (x->file)
			rc_exp_file_refunds(run, x);
		j_int(x->j, "position", x->position);
		j_int(x->j, "pending", x->pending);
		x->j = NULL;
	}
	return RS_OK;
}

/* ---- the table ----------------------------------------------------------- */

/* One difference: what minus Wix, for status. */
static void
rc_diff(cJSON *arr, const char *what, const char *status,
    const struct rc_cell *have, const struct rc_cell *wix, int exponent)
{
	struct rc_cell d;
	cJSON *o;
	char sum[64];

	memset(&d, 0, sizeof(d));
	d.count = (have != NULL ? have->count : 0) -
	    (wix != NULL ? wix->count : 0);
	d.inexact = (have != NULL ? have->inexact : 0) -
	    (wix != NULL ? wix->inexact : 0);
	d.overflow = (have != NULL && have->overflow) ||
	    (wix != NULL && wix->overflow) ||
	    __builtin_sub_overflow(have != NULL ? have->sum : 0,
	    wix != NULL ? wix->sum : 0, &d.sum);
	if (d.count == 0 && d.sum == 0 && d.inexact == 0 && !d.overflow)
		return;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "source", what);
	cJSON_AddStringToObject(o, "status", status);
	j_int(o, "count", d.count);
	if (d.overflow)
		cJSON_AddStringToObject(o, "sum", "overflow");
	else {
		rc_money(d.sum, exponent, sum, sizeof(sum));
		cJSON_AddStringToObject(o, "sum", sum);
	}
	if (d.inexact != 0)
		j_int(o, "inexact", d.inexact);
	cJSON_AddItemToArray(arr, o);
}

/*
 * The differences of row d against Wix: the store per status (store
 * minus Wix), and each ledger against Wix's SUCCEEDED, unless its records
 * are still pending (skip).
 */
static void
rc_day_differences(const struct rc_run *run, const struct rc_day *d,
    const bool *skip, cJSON *arr)
{
	const struct rc_cell *w;
	char *what;
	size_t i, k;

	for (i = 0; i < d->wix.n; i++)
		rc_diff(arr, "store", d->wix.v[i].status, rc_cells_find(
		    &d->store, d->wix.v[i].status), &d->wix.v[i], d->exponent);
	for (i = 0; i < d->store.n; i++)
		if (rc_cells_find(&d->wix, d->store.v[i].status) == NULL)
			rc_diff(arr, "store", d->store.v[i].status,
			    &d->store.v[i], NULL, d->exponent);
	w = rc_cells_find(&d->wix, POSTING_STATUS_SUCCEEDED);
	for (k = 0; k < run->nexps; k++) {
		int col = run->exps[k].ledger_col;

		if (col < 0 || skip[col])
			continue;
		what = xasprintf("ledger %s", run->exps[k].cfg->name);
		rc_diff(arr, what, POSTING_STATUS_SUCCEEDED, &d->ledgers[col],
		    w, d->exponent);
		free(what);
	}
}

static void
rc_table(struct rc_run *run, cJSON *arr)
{
	struct rc_day *d;
	size_t i, k;
	cJSON *o, *w, *s, *l, *c;
	bool match, *skip;

	for (i = 0; i < run->wix.n; i++) {
		const struct rc_ref *x = &run->wix.v[i];

		d = rc_days_get(&run->days, x->day, x->currency);
		rc_cell_add(rc_cells_get(&d->wix, x->status), x->amount_exact,
		    x->amount_minor);
	}
	for (i = 0; i < run->store.n; i++) {
		const struct rc_ref *x = &run->store.v[i];

		d = rc_days_get(&run->days, x->day, x->currency);
		rc_cell_add(rc_cells_get(&d->store, x->status),
		    x->amount_exact, x->amount_minor);
	}
	/* A ledger that has not caught up cannot match yet: that is lag,
	 * which export status shows, not drift. */
	skip = xcalloc(run->nledgers + 1, sizeof(*skip));
	for (k = 0; k < run->nexps; k++)
		if (run->exps[k].ledger_col >= 0)
			skip[run->exps[k].ledger_col] =
			    run->exps[k].pending > 0;
	for (i = 0; i < run->days.n; i++) {
		d = &run->days.v[i];
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "day", d->day);
		cJSON_AddStringToObject(o, "currency", d->currency);
		j_int(o, "exponent", d->exponent);
		w = cJSON_AddObjectToObject(o, "wix");
		for (k = 0; k < d->wix.n; k++)
			cJSON_AddItemToObject(w, d->wix.v[k].status,
			    rc_cell_json(&d->wix.v[k], d->exponent));
		s = cJSON_AddObjectToObject(o, "store");
		for (k = 0; k < d->store.n; k++)
			cJSON_AddItemToObject(s, d->store.v[k].status,
			    rc_cell_json(&d->store.v[k], d->exponent));
		l = cJSON_AddObjectToObject(o, "ledgers");
		for (k = 0; k < run->nexps; k++)
			if (run->exps[k].ledger_col >= 0) {
				c = rc_cell_json(
				    &d->ledgers[run->exps[k].ledger_col],
				    d->exponent);
				if (run->exps[k].pending > 0)
					cJSON_AddTrueToObject(c, "pending");
				cJSON_AddItemToObject(l,
				    run->exps[k].cfg->name, c);
			}
		match = rc_day_match(d, run->nledgers, skip);
		cJSON_AddBoolToObject(o, "match", match);
		rc_day_differences(run, d, skip, cJSON_AddArrayToObject(o,
		    "differences"));
		cJSON_AddItemToArray(arr, o);
	}
	free(skip);
}

/* ---- an instance --------------------------------------------------------- */

static enum rs_status
rc_instance(struct rc_run *run, const char *id, struct reconcile_report *rep)
{
	struct backfill_options bo;
	struct store_reconcile_run sr;
	enum rs_status rc;
	char *why = NULL, *text = NULL, *ilabel, label[160];
	cJSON *arr;
	size_t i;
	int outcome;

	memset(&run->store, 0, sizeof(run->store));
	memset(&run->wix, 0, sizeof(run->wix));
	memset(&run->days, 0, sizeof(run->days));
	run->days.nledgers = run->nledgers;
	run->instance = id;
	run->ahead = run->pages = run->drift = run->repaired = 0;
	clock_wall_iso(run->began_iso);
	(void)isotime_parse(run->began_iso, &run->began);

	run->ji = cJSON_CreateObject();
	cJSON_AddStringToObject(run->ji, "instance_id", id);
	run->missing = cJSON_AddArrayToObject(run->ji, "missing");
	run->stale = cJSON_AddArrayToObject(run->ji, "stale");
	run->gone = cJSON_AddArrayToObject(run->ji, "gone");
	run->conflict = cJSON_AddArrayToObject(run->ji, "conflict");

	/* 1. the store */
	rc = store_changes_last(run->st, &run->last_seq);
	if (rc == RS_OK)
		rc = store_refund_foreach(run->st, id, NULL, rc_store_row,
		    run);
	if (rc != RS_OK) {
		why = xasprintf("cannot read the store: %s",
		    rs_strstatus(rc));
		goto failed;
	}
	rc_qsort(run->store.v, run->store.n, sizeof(*run->store.v), rc_ref_cmp);

	/* 2. Wix */
	memset(&bo, 0, sizeof(bo));
	bo.page_size = (int)run->cfg->page_size;
	bo.stop = run->opt->stop;
	bo.progress = rc_progress;
	bo.progress_arg = run;
	log_info("reconcile %s: reading every refund from Wix", id);
	rc = backfill_walk(run->w, id, &bo, rc_page, rc_restart, run, &why);
	if (rc == RS_ERR_STOPPING)
		goto out;
	if (rc != RS_OK) {
		char *t = xasprintf("cannot read Wix: %s", why != NULL ? why :
		    rs_strstatus(rc));

		free(why);
		why = t;
		goto failed;
	}
	rc_qsort(run->wix.v, run->wix.n, sizeof(*run->wix.v), rc_ref_cmp);

	/* 3. gone */
	for (i = 0; i < run->store.n; i++) {
		const struct rc_ref *s = &run->store.v[i];
		cJSON *o;

		if (s->seen || s->fresh || rc_refs_find(&run->wix, s->id) !=
		    NULL)
			continue;
		run->drift++;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "refund_id", s->id);
		j_rev(o, "store_revision", s->has_revision, s->revision);
		cJSON_AddStringToObject(o, "store_status", s->status);
		cJSON_AddItemToArray(run->gone, o);
	}

	/* 4. the exporters */
	arr = cJSON_AddArrayToObject(run->ji, "exporters");
	if ((rc = rc_exporters(run, arr)) != RS_OK) {
		why = xasprintf("cannot read the exporters' state: %s",
		    rs_strstatus(rc));
		goto failed;
	}

	/* 5. the table */
	rc_table(run, cJSON_AddArrayToObject(run->ji, "days"));
	outcome = run->drift > 0 ? 1 : 0;
	goto record;

failed:
	outcome = 2;
	log_warnx("reconcile %s: failed: %s", id, why);
	rc = RS_OK;
record:
	cJSON_AddStringToObject(run->ji, "outcome", rc_outcomes[outcome]);
	j_str(run->ji, "error", why);
	j_int(run->ji, "wix_refunds", (int64_t)run->wix.n);
	j_int(run->ji, "store_refunds", (int64_t)run->store.n);
	j_int(run->ji, "ahead", run->ahead);
	j_int(run->ji, "drift", run->drift);
	j_int(run->ji, "repaired", run->repaired);
	if (outcome > rep->worst)
		rep->worst = outcome;
	rep->drift += run->drift;
	rep->repaired += run->repaired;
	/* The id as it is, escaped: a quote or backslash in it would make
	 * the whole scrape unreadable, and a cut one could merge two. */
	ilabel = metrics_label("instance", id);
	metrics_set(M_DRIFT, ilabel, run->drift);
	free(ilabel);
	snprintf(label, sizeof(label), "outcome=\"%s\"", rc_outcomes[outcome]);
	metrics_add(M_RUNS, label, 1);
	if (outcome < 2)
		log_info("reconcile %s: %s: Wix %zu refunds, store %zu, %"
		    PRId64 " discrepanc%s, %" PRId64 " repaired", id,
		    rc_outcomes[outcome], run->wix.n, run->store.n,
		    run->drift, rc_ies(run->drift), run->repaired);

	memset(&sr, 0, sizeof(sr));
	sr.instance_id = id;
	sr.started_at = run->began_iso;
	sr.outcome = rc_outcomes[outcome];
	sr.heal = run->opt->heal;
	sr.wix_refunds = (int64_t)run->wix.n;
	sr.store_refunds = (int64_t)run->store.n;
	sr.drift = run->drift;
	sr.repaired = run->repaired;
	sr.error = why;
	text = cJSON_PrintUnformatted(run->ji);
	sr.report = text != NULL && strlen(text) <= RC_REPORT_MAX ? text :
	    NULL;
	if (store_reconcile_record(run->st, &sr) != RS_OK)
		log_warnx("reconcile %s: cannot record the run", id);
	free(text);
	cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(rep->doc,
	    "instances"), run->ji);
	run->ji = NULL;
out:
	cJSON_Delete(run->ji);
	run->ji = NULL;
	free(why);
	rc_refs_clear(&run->store);
	rc_refs_clear(&run->wix);
	rc_days_clear(&run->days);
	return rc;
}

/* ---- which instances ----------------------------------------------------- */

struct rc_ids {
	char	**v;
	size_t	  n;
};

static void
rc_ids_add(struct rc_ids *ids, const char *id)
{
	size_t i;

	for (i = 0; i < ids->n; i++)
		if (strcmp(ids->v[i], id) == 0)
			return;
	ids->v = xreallocarray(ids->v, ids->n + 1, sizeof(*ids->v));
	ids->v[ids->n++] = xstrdup(id);
}

static bool
rc_ids_has(const struct rc_ids *ids, const char *id)
{
	size_t i;

	for (i = 0; i < ids->n; i++)
		if (strcmp(ids->v[i], id) == 0)
			return true;
	return false;
}

/* The instances to reconcile, and those AppRemoved took away. */
struct rc_which {
	struct rc_ids	 ids;
	struct rc_ids	 removed;
};

static enum rs_status
rc_instance_row(void *arg, const struct store_instance *in)
{
	struct rc_which *w = arg;

	if (in->removed_at == NULL)
		rc_ids_add(&w->ids, in->instance_id);
	else
		rc_ids_add(&w->removed, in->instance_id);
	return RS_OK;
}

/* An instance the store holds refunds of counts too, even without an
 * instances row (its AppInstalled came before refundsync did), unless
 * it was removed. */
static enum rs_status
rc_refund_instance(void *arg, const char *id)
{
	struct rc_which *w = arg;

	if (!rc_ids_has(&w->removed, id))
		rc_ids_add(&w->ids, id);
	return RS_OK;
}

static void
rc_ids_free(struct rc_ids *ids)
{
	size_t i;

	for (i = 0; i < ids->n; i++)
		free(ids->v[i]);
	free(ids->v);
	memset(ids, 0, sizeof(*ids));
}

/* ---- the API ------------------------------------------------------------- */

enum rs_status
reconcile_run(const struct config *cfg, struct store *st, struct wixapi *w,
    const struct reconcile_options *opt, struct reconcile_report **out,
    char **why)
{
	struct reconcile_report *rep;
	struct rc_run run;
	struct rc_ids ids;
	enum rs_status rc = RS_OK;
	size_t i, k;

	*out = NULL;
	*why = NULL;
	rc_define_metrics();
	memset(&ids, 0, sizeof(ids));
	if (opt->instance_id != NULL)
		rc_ids_add(&ids, opt->instance_id);
	else {
		struct rc_which which;

		memset(&which, 0, sizeof(which));
		for (i = 0; i < cfg->ninstances; i++)
			rc_ids_add(&which.ids, cfg->instances[i]);
		if ((rc = store_instance_foreach(st, rc_instance_row,
		    &which)) == RS_OK)
			rc = store_refund_instances(st, rc_refund_instance,
			    &which);
		rc_ids_free(&which.removed);
		ids = which.ids;
		if (rc != RS_OK) {
			*why = xasprintf("cannot list the instances: %s",
			    rs_strstatus(rc));
			goto done;
		}
		rc_qsort(ids.v, ids.n, sizeof(*ids.v), rc_strp_cmp);
	}

	memset(&run, 0, sizeof(run));
	run.cfg = cfg;
	run.st = st;
	run.w = w;
	run.opt = opt;
	run.nexps = cfg->nexporters;
	run.exps = run.nexps > 0 ? xcalloc(run.nexps, sizeof(*run.exps)) :
	    NULL;
	for (k = 0; k < run.nexps; k++) {
		struct rc_exp *x = &run.exps[k];

		x->cfg = &cfg->exporters[k];
		x->accounting = strcmp(x->cfg->type, "ledger") == 0 ||
		    strcmp(x->cfg->type, "beancount") == 0;
		x->file = readback_supports(x->cfg->type);
		x->any_order = x->accounting;
		x->ledger_col = x->accounting && x->file ?
		    (int)run.nledgers++ : -1;
	}

	rep = xcalloc(1, sizeof(*rep));
	rep->doc = cJSON_CreateObject();
	cJSON_AddBoolToObject(rep->doc, "heal", opt->heal);
	cJSON_AddArrayToObject(rep->doc, "instances");
	for (i = 0; i < ids.n; i++) {
		if (opt->stop != NULL && atomic_load(opt->stop)) {
			rc = RS_ERR_STOPPING;
			break;
		}
		if ((rc = rc_instance(&run, ids.v[i], rep)) != RS_OK)
			break;
	}
	for (k = 0; k < run.nexps; k++)
		rc_exp_cleanup(&run.exps[k]);
	free(run.exps);
	if (rc != RS_OK) {
		*why = xstrdup(rc == RS_ERR_STOPPING ? "stopped" :
		    rs_strstatus(rc));
		reconcile_report_free(rep);
		goto done;
	}
	cJSON_AddStringToObject(rep->doc, "outcome", rc_outcomes[rep->worst]);
	j_int(rep->doc, "drift", rep->drift);
	j_int(rep->doc, "repaired", rep->repaired);
	*out = rep;
done:
	rc_ids_free(&ids);
	return rc;
}

void
reconcile_report_free(struct reconcile_report *r)
{
	if (r == NULL)
		return;
	cJSON_Delete(r->doc);
	free(r);
}

const char *
reconcile_report_outcome(const struct reconcile_report *r)
{
	return rc_outcomes[r->worst];
}

int64_t
reconcile_report_drift(const struct reconcile_report *r)
{
	return r->drift;
}

int64_t
reconcile_report_repaired(const struct reconcile_report *r)
{
	return r->repaired;
}

void
reconcile_report_json(const struct reconcile_report *r, FILE *out)
{
	char *s = cJSON_Print(r->doc);

	if (s != NULL) {
		fputs(s, out);
		fputc('\n', out);
	}
	free(s);
}

/* ---- the text report ----------------------------------------------------- */

static const char *
rc_revtext(const cJSON *o, const char *name, char *buf, size_t len)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	if (cJSON_IsString(it))
		snprintf(buf, len, "revision %s", it->valuestring);
	else
		snprintf(buf, len, "no revision");
	return buf;
}

static void
rc_print_cells(FILE *out, const char *what, const cJSON *cells)
{
	const cJSON *c;

	fprintf(out, " %s", what);
	if (cJSON_GetArraySize(cells) == 0)
		fprintf(out, " -");
	RC_EACH(c, cells)
		fprintf(out, " %s %" PRId64 "=%s", c->string,
		    j_get_int(c, "count"), j_get_str(c, "sum"));
	fputc(';', out);
}

static void
rc_print_instance(const cJSON *in, FILE *out)
{
	const cJSON *o, *x, *e, *l;
	char b1[48], b2[48];
	int bad = 0;

	fprintf(out, "instance %s: %s", j_get_str(in, "instance_id"),
	    j_get_str(in, "outcome"));
	if (j_get_str(in, "error") != NULL) {
		fprintf(out, ": %s\n", j_get_str(in, "error"));
		return;
	}
	fprintf(out, " (Wix %" PRId64 " refunds, store %" PRId64 "; %" PRId64
	    " discrepanc%s, %" PRId64 " repaired", j_get_int(in,
	    "wix_refunds"), j_get_int(in, "store_refunds"), j_get_int(in,
	    "drift"), rc_ies(j_get_int(in, "drift")), j_get_int(in,
	    "repaired"));
	/* Not drift: a webhook that came after Wix's page was read, or a
	 * version Wix never had.  Said, so the second can be looked into. */
	if (j_get_int(in, "ahead") > 0)
		fprintf(out, "; %" PRId64 " newer in the store than in Wix",
		    j_get_int(in, "ahead"));
	fputs(")\n", out);
	RC_EACH(o, cJSON_GetObjectItemCaseSensitive(in,
	    "missing"))
		fprintf(out, "  missing   %s: in Wix (%s, %s), not in the "
		    "store%s\n", j_get_str(o, "refund_id"),
		    rc_revtext(o, "wix_revision", b1, sizeof(b1)),
		    j_get_str(o, "wix_status"), cJSON_IsTrue(
		    cJSON_GetObjectItemCaseSensitive(o, "healed")) ?
		    " [healed]" : "");
	RC_EACH(o, cJSON_GetObjectItemCaseSensitive(in, "stale"))
		fprintf(out, "  stale     %s: store %s %s, Wix %s %s%s\n",
		    j_get_str(o, "refund_id"),
		    rc_revtext(o, "store_revision", b1, sizeof(b1)),
		    j_get_str(o, "store_status"),
		    rc_revtext(o, "wix_revision", b2, sizeof(b2)),
		    j_get_str(o, "wix_status"), cJSON_IsTrue(
		    cJSON_GetObjectItemCaseSensitive(o, "healed")) ?
		    " [healed]" : "");
	RC_EACH(o, cJSON_GetObjectItemCaseSensitive(in, "gone"))
		fprintf(out, "  gone      %s: in the store (%s, %s), Wix no "
		    "longer returns it\n", j_get_str(o, "refund_id"),
		    rc_revtext(o, "store_revision", b1, sizeof(b1)),
		    j_get_str(o, "store_status"));
	RC_EACH(o, cJSON_GetObjectItemCaseSensitive(in,
	    "conflict"))
		fprintf(out, "  conflict  %s (%s): %s is %s in the store, %s "
		    "in Wix\n", j_get_str(o, "refund_id"),
		    rc_revtext(o, "revision", b1, sizeof(b1)),
		    j_get_str(o, "field"), j_get_str(o, "store") != NULL ?
		    j_get_str(o, "store") : "null", j_get_str(o, "wix") !=
		    NULL ? j_get_str(o, "wix") : "null");
	RC_EACH(x, cJSON_GetObjectItemCaseSensitive(in,
	    "exporters")) {
		fprintf(out, "  exporter %s (%s, %s view): position %" PRId64
		    ", %" PRId64 " pending%s%s\n", j_get_str(x, "exporter"),
		    j_get_str(x, "type"), j_get_str(x, "view"),
		    j_get_int(x, "position"), j_get_int(x, "pending"),
		    j_get_str(x, "error") != NULL ? ": " : "",
		    j_get_str(x, "error") != NULL ? j_get_str(x, "error") :
		    "");
		RC_EACH(e, cJSON_GetObjectItemCaseSensitive(x,
		    "missing"))
			fprintf(out, "    missing      seq %" PRId64 " %s (%s):"
			    " %s%s%s\n", j_get_int(e, "seq"),
			    j_get_str(e, "key"), j_get_str(e, "posting"),
			    strcmp(j_get_str(e, "where"), "file") == 0 ?
			    "not in the file" : strcmp(j_get_str(e, "where"),
			    "dead") == 0 ? "a dead letter" :
			    "not in the delivery log", cJSON_IsTrue(
			    cJSON_GetObjectItemCaseSensitive(e, "requeued")) ?
			    " [re-queued]" : "", j_get_str(e, "note") != NULL ?
			    " (cannot re-queue)" : "");
		RC_EACH(e, cJSON_GetObjectItemCaseSensitive(x,
		    "doubled")) {
			fprintf(out, "    doubled      seq %" PRId64 " %s (%s):"
			    " %" PRId64 " times, lines", j_get_int(e, "seq"),
			    j_get_str(e, "key"), j_get_str(e, "posting"),
			    j_get_int(e, "count"));
			RC_EACH(l,
			    cJSON_GetObjectItemCaseSensitive(e, "lines"))
				fprintf(out, " %s", l->valuestring);
			fputc('\n', out);
		}
		RC_EACH(e, cJSON_GetObjectItemCaseSensitive(x,
		    "not_reversed"))
			fprintf(out, "    not reversed %s: %s, still posted "
			    "(net %" PRId64 ")\n", j_get_str(e, "refund_id"),
			    j_get_str(e, "status"), j_get_int(e, "net"));
		RC_EACH(e, cJSON_GetObjectItemCaseSensitive(x,
		    "damaged")) {
			/* The reason may quote what the file holds. */
			fprintf(out, "    damaged      line %" PRId64 ": ",
			    j_get_int(e, "line"));
			(void)term_fputs(j_get_str(e, "why"), out);
			fputc('\n', out);
		}
	}
	RC_EACH(o, cJSON_GetObjectItemCaseSensitive(in, "days")) {
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o,
		    "match")))
			continue;
		if (bad++ == 0)
			fprintf(out, "  days that do not match (count=sum by "
			    "status):\n");
		fprintf(out, "    %s %s:", j_get_str(o, "day"),
		    j_get_str(o, "currency"));
		rc_print_cells(out, "Wix", cJSON_GetObjectItemCaseSensitive(o,
		    "wix"));
		rc_print_cells(out, "store",
		    cJSON_GetObjectItemCaseSensitive(o, "store"));
		RC_EACH(l, cJSON_GetObjectItemCaseSensitive(o,
		    "ledgers"))
			fprintf(out, " %s %" PRId64 "=%s%s;", l->string,
			    j_get_int(l, "count"), j_get_str(l, "sum"),
			    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l,
			    "pending")) ? " (records pending)" : "");
		if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o,
		    "differences")) > 0)
			fprintf(out, " minus Wix:");
		RC_EACH(l, cJSON_GetObjectItemCaseSensitive(o,
		    "differences"))
			fprintf(out, " %s %s %+" PRId64 "=%s;",
			    j_get_str(l, "source"), j_get_str(l, "status"),
			    j_get_int(l, "count"), j_get_str(l, "sum"));
		fputc('\n', out);
	}
}

/* Each control byte of s (may be NULL) as '?', the way term_safe()
 * shows them, in place. */
static void
rc_term_mask_str(char *s)
{
	unsigned char *p;

	for (p = (unsigned char *)s; p != NULL && *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
}

/*
 * The same for every string and member name of j.
 * NOLINTBEGIN(misc-no-recursion): the report is ours, a few levels deep.
 */
static void
rc_term_mask(cJSON *j)
{
	cJSON *c;

	if (j == NULL)
		return;
	rc_term_mask_str(j->string);
	if (cJSON_IsString(j))
		rc_term_mask_str(j->valuestring);
	for (c = j->child; c != NULL; c = c->next)
		rc_term_mask(c);
}
/* NOLINTEND(misc-no-recursion) */

void
reconcile_report_print(const struct reconcile_report *r, FILE *out)
{
	const cJSON *in;
	cJSON *doc;
	int n = 0;

	/* Refund ids, statuses and errors come from Wix, the store and the
	 * files: none may drive the operator's terminal. */
	doc = cJSON_Duplicate(r->doc, true);
	rc_term_mask(doc);
	RC_EACH(in, cJSON_GetObjectItemCaseSensitive(doc, "instances")) {
		rc_print_instance(in, out);
		n++;
	}
	cJSON_Delete(doc);
	if (n == 0)
		fprintf(out, "no instance to reconcile: none is known to the "
		    "store and [wix] instances is empty\n");
	fprintf(out, "reconcile: %s: %" PRId64 " discrepanc%s, %" PRId64
	    " repaired\n", rc_outcomes[r->worst], r->drift, rc_ies(r->drift),
	    r->repaired);
}

/* ---- metrics from the store ---------------------------------------------- */

static enum rs_status
rc_kind_count(void *arg, const char *kind, int64_t count)
{
	char label[96];

	(void)arg;
	snprintf(label, sizeof(label), "kind=\"%.60s\"", kind);
	metrics_set(M_REPAIRS, label, count);
	return RS_OK;
}

void
reconcile_metrics_refresh(struct store *st)
{
	rc_define_metrics();
	if (st != NULL)
		(void)store_repair_counts(st, rc_kind_count, NULL);
}

/* ---- the daemon's periodic job ------------------------------------------- */

struct reconciler {
	pthread_t	 tid;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	atomic_bool	 stop;
	bool		 finished;	/* the thread is about to return */
	struct config	*cfg;		/* its own copy: the daemon's is
					   replaced by a reload */
	struct wixapi	*w;
	int64_t		 interval_ms;
};

/* The CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait()
 * on a condition made with that clock. */
static void
rc_deadline(int64_t ms, struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Wait up to ms, or until stopped: false when stopped. */
static bool
rc_wait(struct reconciler *rc, int64_t ms)
{
	struct timespec ts;
	bool stopped;

	rc_deadline(ms, &ts);
	pthread_mutex_lock(&rc->mu);
	while (!(stopped = atomic_load(&rc->stop)) &&
	    pthread_cond_timedwait(&rc->cv, &rc->mu, &ts) == 0)
		;
	pthread_mutex_unlock(&rc->mu);
	return !stopped && !atomic_load(&rc->stop);
}

static void *
rc_thread(void *arg)
{
	struct reconciler *rc = arg;
	struct reconcile_options opt;
	struct reconcile_report *rep;
	struct store_options so;
	struct store *st;
	char *why;

	while (rc_wait(rc, rc->interval_ms)) {
		memset(&so, 0, sizeof(so));
		so.busy_timeout_ms = (int)rc->cfg->busy_timeout_ms;
		why = NULL;
		if (store_open(rc->cfg->store_path, &so, &st, &why) !=
		    RS_OK) {
			log_warnx("reconcile: cannot open the store: %s",
			    why != NULL ? why : "?");
			free(why);
			continue;
		}
		memset(&opt, 0, sizeof(opt));
		opt.heal = rc->cfg->reconcile_heal;
		opt.stop = &rc->stop;
		rep = NULL;
		if (reconcile_run(rc->cfg, st, rc->w, &opt, &rep, &why) ==
		    RS_OK) {
			log_info("reconcile: %s: %" PRId64 " discrepanc%s, %"
			    PRId64 " repaired", reconcile_report_outcome(rep),
			    reconcile_report_drift(rep),
			    rc_ies(reconcile_report_drift(rep)),
			    reconcile_report_repaired(rep));
			reconcile_metrics_refresh(st);
		} else if (!atomic_load(&rc->stop) && !wixapi_stopped(rc->w))
			/* (The daemon stops the client just before rc.) */
			log_warnx("reconcile: %s", why != NULL ? why :
			    "failed");
		reconcile_report_free(rep);
		free(why);
		store_close(st);
	}
	pthread_mutex_lock(&rc->mu);
	rc->finished = true;
	pthread_cond_broadcast(&rc->cv);
	pthread_mutex_unlock(&rc->mu);
	return NULL;
}

struct reconciler *
reconciler_start(const struct config *cfg, struct wixapi *w)
{
	struct reconciler *rc;
	pthread_condattr_t ca;
	char *why = NULL;

	if (cfg->reconcile_interval <= 0)
		return NULL;
	if (w == NULL) {
		log_warnx("reconcile: [reconcile] interval is set but no Wix "
		    "credentials are configured: the periodic reconcile is "
		    "off");
		return NULL;
	}
	rc_define_metrics();
	rc = xcalloc(1, sizeof(*rc));
	if (config_load(cfg->path, &rc->cfg, &why) != RS_OK) {
		log_warnx("reconcile: cannot read %s again: %s; the periodic "
		    "reconcile is off", cfg->path, why != NULL ? why : "?");
		free(why);
		free(rc);
		return NULL;
	}
	rc->w = w;
	rc->interval_ms = cfg->reconcile_interval * 1000;
	atomic_init(&rc->stop, false);
	pthread_mutex_init(&rc->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rc->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&rc->tid, NULL, rc_thread, rc) != 0) {
		log_warn("reconcile: cannot start its thread");
		pthread_cond_destroy(&rc->cv);
		pthread_mutex_destroy(&rc->mu);
		config_free(rc->cfg);
		free(rc);
		return NULL;
	}
	log_info("reconcile: every %" PRId64 " s%s", cfg->reconcile_interval,
	    cfg->reconcile_heal ? ", healing" : "");
	return rc;
}

bool
reconciler_stop(struct reconciler *rc, int64_t wait_ms)
{
	struct timespec ts;
	bool finished;

	if (rc == NULL)
		return true;
	rc_deadline(wait_ms, &ts);
	pthread_mutex_lock(&rc->mu);
	atomic_store(&rc->stop, true);
	pthread_cond_broadcast(&rc->cv);
	while (!rc->finished &&
	    pthread_cond_timedwait(&rc->cv, &rc->mu, &ts) == 0)
		;
	finished = rc->finished;
	pthread_mutex_unlock(&rc->mu);
	if (!finished) {
		/* Inside a long Wix wait: leave it to the exiting process. */
		log_warnx("reconcile: still waiting for Wix after %" PRId64
		    " ms; not waiting longer", wait_ms);
		pthread_detach(rc->tid);
		return false;
	}
	pthread_join(rc->tid, NULL);
	pthread_cond_destroy(&rc->cv);
	pthread_mutex_destroy(&rc->mu);
	config_free(rc->cfg);
	free(rc);
	return true;
}
