/*
 * export-bench.c: records per second of the file exporters (jsonl, csv,
 * ledger, beancount) over a synthetic change log, driven through their
 * ops tables the way the export engine drives them: batches in seq
 * order, each batch written and fsync()ed before it counts as done.
 *
 * usage: export-bench [-n RECORDS] [-b BATCH] [-r ROUNDS] [-d DIR] [TYPE...]
 *	defaults: 1000000 records, batches of 1000, 3 rounds, $TMPDIR or
 *	/tmp, all four types.
 *
 * The log models real refunds: each refund goes PENDING -> SUCCEEDED,
 * one in ten is then REVERSED and one in twenty of those SUCCEEDED
 * again; currencies USD, EUR, JPY and KWD; fees on a third; a 300-byte
 * entity body.  So about half the records post a transaction in the
 * journals.  Each round writes a new file; the median round is printed
 * as one line per type: "TYPE records/s (median of R rounds, min..max)".
 * Exit 1 if an exporter fails.
 */
#include <sys/stat.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "domain/money.h"
#include "exporters/builtin.h"
#include "exporters/posting.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#define MAX_ROUNDS	15

struct synth {
	struct rs_export_record	*r;
	size_t			 n;
	char			*text;		/* all strings, one block */
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Append a NUL-terminated copy of s to the arena; return its offset. */
static size_t
arena_put(char **arena, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s) + 1, off = *len;

	if (*len + n > *cap) {
		*cap = (*cap + n) * 2;
		*arena = xrealloc(*arena, *cap);
	}
	memcpy(*arena + off, s, n);
	*len += n;
	return off;
}

/*
 * Build n records.  Strings are kept as offsets while the arena grows
 * and turned into pointers at the end.
 */
static void
synth_make(struct synth *s, size_t n)
{
	static const char *const cur[] = { "USD", "EUR", "JPY", "KWD" };
	static const char *const status[] = { "PENDING", "SUCCEEDED",
	    "REVERSED", "SUCCEEDED" };
	struct off {
		size_t key, id, charge, amount, fee, upd, body;
	} *o = xcalloc(n, sizeof(*o));
	char *arena = NULL, buf[512], amt[48], fee[48];
	size_t len = 0, cap = 0, i, refund = 0;
	size_t k_inst, k_created, k_changed, k_src;
	int v = 0, nvers = 2, e;
	int64_t minor = 0;
	const char *c = NULL;

	s->r = xcalloc(n, sizeof(*s->r));
	s->n = n;
	k_inst = arena_put(&arena, &len, &cap, "a1b2c3d4-inst");
	k_created = arena_put(&arena, &len, &cap, "2024-04-30T09:00:00Z");
	k_changed = arena_put(&arena, &len, &cap,
	    "2024-05-01T10:20:31.000000Z");
	k_src = arena_put(&arena, &len, &cap, "webhook");
	for (i = 0; i < n; i++) {
		struct rs_export_record *r = &s->r[i];

		if (v == nvers) {
			refund++;
			v = 0;
			nvers = refund % 10 != 0 ? 2 : refund % 20 == 0 ?
			    4 : 3;
		}
		if (v == 0) {
			c = cur[refund % 4];
			e = money_exponent(c);
			minor = (int64_t)(refund * 7919 % 500000) + 100;
			money_format(minor, e, amt, sizeof(amt));
			money_format(minor / 40, e, fee, sizeof(fee));
		}
		r->seq = (int64_t)i + 1;
		r->has_revision = 1;
		r->revision = v + 1;
		r->status = status[v];
		r->prev_status = v > 0 ? status[v - 1] : NULL;
		r->posting = posting_classify(r->status, r->prev_status);
		r->currency = c;
		r->amount_exact = 1;
		r->amount_minor = minor;
		r->exponent = money_exponent(c);
		snprintf(buf, sizeof(buf), "bench:%08zx-7e1f-4c2a-9d3b-%012zx:"
		    "%d%s", refund, refund, v + 1,
		    r->posting == RS_POSTING_REVERSE ? ":reverse" : "");
		o[i].key = arena_put(&arena, &len, &cap, buf);
		snprintf(buf, sizeof(buf), "%08zx-7e1f-4c2a-9d3b-%012zx",
		    refund, refund);
		o[i].id = arena_put(&arena, &len, &cap, buf);
		snprintf(buf, sizeof(buf), "ch-%012zx", refund);
		o[i].charge = arena_put(&arena, &len, &cap, buf);
		o[i].amount = arena_put(&arena, &len, &cap, amt);
		o[i].fee = refund % 3 != 0 ? SIZE_MAX :
		    arena_put(&arena, &len, &cap, fee);
		snprintf(buf, sizeof(buf), "2024-05-%02zuT10:%02d:00.123Z",
		    1 + refund % 28, v);
		o[i].upd = arena_put(&arena, &len, &cap, buf);
		snprintf(buf, sizeof(buf), "{\"id\":\"%08zx-7e1f-4c2a-9d3b-"
		    "%012zx\",\"revision\":\"%d\",\"createdDate\":"
		    "\"2024-04-30T09:00:00Z\",\"updatedDate\":\"2024-05-01T10:"
		    "%02d:00.123Z\",\"chargeId\":\"ch-%012zx\","
		    "\"currencyCode\":"
		    "\"%s\",\"amount\":\"%s\",\"status\":\"%s\",\"full\":false,"
		    "\"reason\":\"customer request\",\"statusInfo\":{\"code\":"
		    "\"1013\"}}", refund, refund, v + 1, v, refund, c, amt,
		    status[v]);
		o[i].body = arena_put(&arena, &len, &cap, buf);
		v++;
	}
	for (i = 0; i < n; i++) {
		struct rs_export_record *r = &s->r[i];

		r->idempotency_key = arena + o[i].key;
		r->refund_id = arena + o[i].id;
		r->instance_id = arena + k_inst;
		r->charge_id = arena + o[i].charge;
		r->amount = arena + o[i].amount;
		r->returned_processing_fee = o[i].fee == SIZE_MAX ? NULL :
		    arena + o[i].fee;
		r->created_date = arena + k_created;
		r->updated_date = arena + o[i].upd;
		r->changed_at = arena + k_changed;
		r->source = arena + k_src;
		r->body = arena + o[i].body;
	}
	s->text = arena;
	free(o);
}

static const struct rs_exporter_ops *
ops_named(const char *type)
{
	static const struct rs_exporter_ops *const all[] = {
	    &exporter_jsonl_ops, &exporter_csv_ops, &exporter_ledger_ops,
	    &exporter_beancount_ops };
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(all[i]->name, type) == 0)
			return all[i];
	return NULL;
}

/* One round: a new file, all records.  Returns seconds, or < 0. */
static double
run_round(const struct rs_exporter_ops *ops, const char *path,
    const struct synth *s, size_t batch)
{
	struct rs_export_kv kv[2] = { { "type", ops->name },
	    { "path", path } };
	char err[512];
	void *ctx = NULL;
	size_t i, n, done;
	double t0, t;

	unlink(path);
	t0 = now_s();
	if (ops->open(&ctx, "bench", kv, 2, err, sizeof(err)) !=
	    RS_EXPORT_OK) {
		fprintf(stderr, "export-bench: %s: open: %s\n", ops->name,
		    err);
		return -1;
	}
	for (i = 0; i < s->n; i += n) {
		n = s->n - i < batch ? s->n - i : batch;
		if (ops->deliver(ctx, s->r + i, n, &done, err, sizeof(err)) !=
		    RS_EXPORT_OK || done != n) {
			fprintf(stderr, "export-bench: %s: deliver: %s\n",
			    ops->name, err);
			ops->close(ctx);
			return -1;
		}
	}
	ops->close(ctx);
	t = now_s() - t0;
	return t;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int64_t
num_arg(const char *s, int64_t min, int64_t max)
{
	int64_t v;

	if (strnum_i64(s, min, max, &v) != NULL) {
		fprintf(stderr, "export-bench: bad number %s\n", s);
		exit(2);
	}
	return v;
}

int
main(int argc, char *argv[])
{
	static const char *const all_types[] = { "jsonl", "csv", "ledger",
	    "beancount", NULL };
	const char *dir = getenv("TMPDIR");
	const char *const *types = all_types;
	size_t nrec = 1000000, batch = 1000, rounds = 3, r, t;
	double secs[MAX_ROUNDS];
	struct synth s;
	struct stat sb;
	char *path;
	int ch, rc = 0;

	while ((ch = getopt(argc, argv, "n:b:r:d:")) != -1) {
		switch (ch) {
		case 'n':
			nrec = (size_t)num_arg(optarg, 1, 100000000);
			break;
		case 'b':
			batch = (size_t)num_arg(optarg, 1, 1000000);
			break;
		case 'r':
			rounds = (size_t)num_arg(optarg, 1, MAX_ROUNDS);
			break;
		case 'd':
			dir = optarg;
			break;
		default:
			fprintf(stderr, "usage: export-bench [-n RECORDS] "
			    "[-b BATCH] [-r ROUNDS] [-d DIR] [TYPE...]\n");
			return 2;
		}
	}
	if (optind < argc)
		types = (const char *const *)(argv + optind);
	if (dir == NULL || *dir == '\0')
		dir = "/tmp";
	synth_make(&s, nrec);
	printf("export-bench: %zu records, batches of %zu, %zu rounds, "
	    "in %s\n", nrec, batch, rounds, dir);
	for (t = 0; types[t] != NULL; t++) {
		const struct rs_exporter_ops *ops = ops_named(types[t]);

		if (ops == NULL) {
			fprintf(stderr, "export-bench: unknown type %s\n",
			    types[t]);
			rc = 1;
			continue;
		}
		path = xasprintf("%s/export-bench.%d.%s", dir, (int)getpid(),
		    types[t]);
		for (r = 0; r < rounds; r++)
			if ((secs[r] = run_round(ops, path, &s, batch)) < 0)
				break;
		if (r < rounds) {
			rc = 1;
		} else {
			qsort(secs, rounds, sizeof(secs[0]), cmp_double);
			if (stat(path, &sb) != 0)
				sb.st_size = 0;
			printf("%-10s %10.0f records/s (median of %zu rounds, "
			    "%.0f..%.0f), %.1f MB\n", types[t],
			    (double)nrec / secs[rounds / 2], rounds,
			    (double)nrec / secs[rounds - 1],
			    (double)nrec / secs[0],
			    (double)sb.st_size / 1e6);
		}
		unlink(path);
		free(path);
	}
	free(s.text);
	free(s.r);
	return rc;
}
