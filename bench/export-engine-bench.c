/*
 * export-engine-bench.c: records per second of the whole export path for
 * each file exporter, from a change log in SQLite to a file on disk: the
 * export engine's worker (core/export.h) reads batches from the store,
 * hands them to the exporter (which writes and fsync()s), and records its
 * position and the delivery log in the store, exactly as in the daemon.
 * (bench/export-bench measures the exporters alone.)
 *
 * usage: export-engine-bench [-n CHANGES] [-b BATCH] [-r ROUNDS] [-d DIR]
 *	    [TYPE...]
 *	defaults: 1000000 changes, each type's default batch, 5 rounds,
 *	$TMPDIR or /tmp, types jsonl, csv and ledger.
 *
 * The machine is shared and noisy (BENCHMARKS.md), so each figure is the
 * median of ROUNDS runs, and each comes with two baselines measured in
 * the same rounds, alternating with the engine runs:
 *  - read: the change log alone, read through the store in batches
 *    (store_changes_read(), as the worker reads it), nothing written;
 *  - write+fsync: per type, write() and fdatasync() of as many bytes as
 *    that type's file got, in as many chunks as the engine made batches:
 *    the disk's ceiling for that output.
 * Round r runs: read, then for each type the engine and its write+fsync.
 * Between two engine runs of a type, its delivery log and position are
 * deleted and the WAL checkpointed (not timed), so every run starts from
 * the same state.
 *
 * The change log is written straight into a fresh database (the store's
 * schema, its rows as the store writes them): refunds that go PENDING
 * then SUCCEEDED, one in ten then REVERSED, with a 300-byte entity.
 *
 * Output: one line per run on stdout ("round R/N: WHAT: ..."), then a
 * summary block to paste into BENCHMARKS.md: per type the median
 * records/s, each round's, bytes per record, the medians of the
 * baselines and the ratios of the medians.  Exit 1 if an exporter fails
 * or stops short.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "adapters/store.h"
#include "core/export.h"
#include "exporters/registry.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#define BENCH_ROUNDS_MAX	99
#define BENCH_TYPES_MAX		16

/* What one exporter type measured, round by round. */
struct bench_type {
	const char	*type;			/* borrowed from argv */
	size_t		 batch;			/* records per deliver() */
	double		 engine[BENCH_ROUNDS_MAX]; /* records/s */
	double		 write[BENCH_ROUNDS_MAX]; /* records/s */
	int64_t		 bytes;			/* the file, last round */
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of v[0..n), n >= 1; v is left as it was. */
static double
median(const double *v, int n)
{
	double s[BENCH_ROUNDS_MAX];

	memcpy(s, v, (size_t)n * sizeof(s[0]));
	qsort(s, (size_t)n, sizeof(s[0]), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Create the database at db with the store's schema and n changes. */
static int
fill(const char *db, int64_t n)
{
	struct store_options so = { .busy_timeout_ms = 5000 };
	struct store *st = NULL;
	sqlite3 *h = NULL;
	sqlite3_stmt *ins = NULL;
	char *why = NULL, id[32], body[512];
	const char *status, *prev;
	int64_t i, r, rev;
	int rc = 1;

	(void)unlink(db);
	if (store_open(db, &so, &st, &why) != RS_OK) {
		fprintf(stderr, "export-engine-bench: %s\n", why);
		free(why);
		return 1;
	}
	store_close(st);
	if (sqlite3_open(db, &h) != SQLITE_OK ||
	    sqlite3_exec(h, "PRAGMA synchronous = OFF; BEGIN", NULL, NULL,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h, "INSERT INTO changes (refund_id,"
	    " instance_id, revision, status, prev_status, currency, amount,"
	    " amount_minor, source, changed_at, body, amount_exponent,"
	    " charge_id, created_date, updated_date,"
	    " returned_application_fee) VALUES (?1, 'inst-bench', ?2, ?3,"
	    " ?4, 'USD', '12.95', 1295, 'webhook',"
	    " '2025-08-09T15:26:25.000Z', ?5, 2, ?6,"
	    " '2025-08-09T15:26:24.000Z', '2025-08-09T15:26:25.000Z', ?7)",
	    -1, &ins, NULL) != SQLITE_OK)
		goto out;
	for (i = 0, r = 0; i < n; r++) {
		snprintf(id, sizeof(id), "r-%010" PRId64, r);
		for (rev = 1; rev <= 3 && i < n; rev++, i++) {
			if (rev == 3 && r % 10 != 0)
				break;
			status = rev == 1 ? "PENDING" : rev == 2 ?
			    "SUCCEEDED" : "REVERSED";
			prev = rev == 1 ? NULL : rev == 2 ? "PENDING" :
			    "SUCCEEDED";
			snprintf(body, sizeof(body), "{\"id\":\"%s\","
			    "\"chargeId\":\"ch-%s\",\"currencyCode\":\"USD\","
			    "\"amount\":\"12.95\",\"status\":\"%s\","
			    "\"revision\":\"%" PRId64 "\",\"reason\":\"The "
			    "customer asked for the refund.\",\"createdDate\":"
			    "\"2025-08-09T15:26:24.000Z\",\"updatedDate\":"
			    "\"2025-08-09T15:26:25.000Z\"}", id, id, status,
			    rev);
			sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(ins, 2, rev);
			sqlite3_bind_text(ins, 3, status, -1, SQLITE_STATIC);
			if (prev != NULL)
				sqlite3_bind_text(ins, 4, prev, -1,
				    SQLITE_STATIC);
			else
				sqlite3_bind_null(ins, 4);
			sqlite3_bind_text(ins, 5, body, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 6, id, -1, SQLITE_TRANSIENT);
			if (r % 3 == 0)
				sqlite3_bind_text(ins, 7, "0.39", -1,
				    SQLITE_STATIC);
			else
				sqlite3_bind_null(ins, 7);
			if (sqlite3_step(ins) != SQLITE_DONE)
				goto out;
			sqlite3_reset(ins);
		}
	}
	if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "export-engine-bench: %s: %s\n", db,
		    h != NULL ? sqlite3_errmsg(h) : "cannot open");
	sqlite3_finalize(ins);
	sqlite3_close(h);
	return rc;
}

/*
 * Forget everything the exporter name did in db (delivery log, dead
 * letters, position) and checkpoint the WAL, so its next run starts as
 * the first one did.  0 or 1.
 */
static int
reset(const char *db, const char *name)
{
	static const char *const sql[] = {
		"DELETE FROM exporter_deliveries WHERE exporter = ?1",
		"DELETE FROM exporter_dead_letters WHERE exporter = ?1",
		"DELETE FROM exporter_positions WHERE exporter = ?1",
	};
	sqlite3 *h = NULL;
	sqlite3_stmt *stmt = NULL;
	size_t i;
	int rc = 1;

	if (sqlite3_open(db, &h) != SQLITE_OK ||
	    sqlite3_busy_timeout(h, 5000) != SQLITE_OK ||
	    sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	for (i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
		if (sqlite3_prepare_v2(h, sql[i], -1, &stmt, NULL) !=
		    SQLITE_OK ||
		    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC) !=
		    SQLITE_OK ||
		    sqlite3_step(stmt) != SQLITE_DONE)
			goto out;
		sqlite3_finalize(stmt);
		stmt = NULL;
	}
	if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_wal_checkpoint_v2(h, NULL, SQLITE_CHECKPOINT_TRUNCATE,
	    NULL, NULL) != SQLITE_OK)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "export-engine-bench: reset %s: %s\n", name,
		    h != NULL ? sqlite3_errmsg(h) : "cannot open");
	sqlite3_finalize(stmt);
	sqlite3_close(h);
	return rc;
}

/*
 * Baseline: read the whole change log of db through the store in batches
 * of batch, as a worker reads it, and set *rps.  0 or 1.
 */
static int
run_read(const char *db, size_t batch, int64_t n, double *rps)
{
	struct store_options so = { .busy_timeout_ms = 5000 };
	struct store *st = NULL;
	struct store_change *chg;
	char *why = NULL;
	int64_t after = 0, total = 0;
	size_t got, i;
	double t0, dt;
	int rc = 1;

	chg = xcalloc(batch, sizeof(*chg));
	if (store_open(db, &so, &st, &why) != RS_OK)
		goto out;
	t0 = now_s();
	for (;;) {
		if (store_changes_read(st, after, batch, chg, &got) !=
		    RS_OK) {
			why = xstrdup("store_changes_read failed");
			goto out;
		}
		if (got == 0)
			break;
		after = chg[got - 1].seq;
		total += (int64_t)got;
		for (i = 0; i < got; i++)
			store_change_cleanup(&chg[i]);
	}
	dt = now_s() - t0;
	if (total != n) {
		why = xasprintf("read %" PRId64 " of %" PRId64 " changes",
		    total, n);
		goto out;
	}
	*rps = (double)n / dt;
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "export-engine-bench: read: %s\n",
		    why != NULL ? why : "failed");
	free(why);
	store_close(st);
	free(chg);
	return rc;
}

/*
 * Baseline: write() and fdatasync() bytes into a new file in dir, in as
 * many chunks as n records make batches of batch, and set *rps to n over
 * the time it took.  0 or 1.
 */
static int
run_write(const char *dir, int64_t bytes, size_t batch, int64_t n,
    double *rps)
{
	char *path, *chunk = NULL;
	int64_t nchunks, each, left, len;
	ssize_t w;
	double t0, dt;
	int fd = -1, rc = 1;

	path = xasprintf("%s/bench.write", dir);
	nchunks = (n + (int64_t)batch - 1) / (int64_t)batch;
	each = bytes / nchunks + 1;
	chunk = xmalloc((size_t)each);
	memset(chunk, 'x', (size_t)each);
	chunk[each - 1] = '\n';
	(void)unlink(path);
	t0 = now_s();
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0640)) == -1)
		goto out;
	for (left = bytes; left > 0; left -= len) {
		len = left < each ? left : each;
		w = write(fd, chunk, (size_t)len);
		if (w != (ssize_t)len) {
			if (w >= 0)
				errno = EIO;
			goto out;
		}
		if (fdatasync(fd) != 0)
			goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	dt = now_s() - t0;
	*rps = (double)n / dt;
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "export-engine-bench: %s: %s\n", path,
		    strerror(errno));
	if (fd != -1)
		(void)close(fd);
	(void)unlink(path);
	free(chunk);
	free(path);
	return rc;
}

/*
 * Export the whole log of db with bt's type into dir, set *rps and
 * bt->bytes, and reset the exporter's state for the next round.  0 or 1.
 */
static int
run_engine(const char *db, const char *dir, struct bench_type *bt,
    int64_t n, double *rps)
{
	struct registry_entry *re = NULL;
	struct export_spec spec;
	struct export_worker *w = NULL;
	struct rs_export_kv kv[2];
	struct store_options so = { .busy_timeout_ms = 5000 };
	struct store *st = NULL;
	struct store_export e;
	struct stat sb;
	enum export_step r;
	char *why = NULL, *path, *name;
	int64_t next;
	double t0, dt;
	int rc = 1;

	path = xasprintf("%s/bench.%s", dir, bt->type);
	name = xasprintf("bench-%s", bt->type);
	(void)unlink(path);
	if (registry_open(bt->type, NULL, &re, &why) != RS_OK)
		goto out;
	kv[0].key = "type";
	kv[0].value = bt->type;
	kv[1].key = "path";
	kv[1].value = path;
	export_spec_init(&spec, name, re->ops);
	spec.kv = kv;
	spec.nkv = 2;
	spec.batch = bt->batch;
	if (export_worker_new(db, 5000, &spec, &w, &why) != RS_OK)
		goto out;
	t0 = now_s();
	while ((r = export_worker_step(w, clock_mono_ms(), &next)) ==
	    EXPORT_STEP_PROGRESS)
		;
	dt = now_s() - t0;
	export_worker_free(w);
	w = NULL;
	if (store_open(db, &so, &st, &why) != RS_OK ||
	    store_export_get(st, name, &e) != RS_OK)
		goto out;
	if (r != EXPORT_STEP_IDLE || e.position != n) {
		why = xasprintf("stopped at %" PRId64 " of %" PRId64 " (%s)",
		    e.position, n, e.last_error != NULL ? e.last_error : "?");
		store_export_cleanup(&e);
		goto out;
	}
	store_export_cleanup(&e);
	store_close(st);
	st = NULL;
	if (stat(path, &sb) != 0) {
		why = xasprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	bt->bytes = (int64_t)sb.st_size;
	*rps = (double)n / dt;
	(void)unlink(path);
	if (reset(db, name) != 0)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "export-engine-bench: %s: %s\n", bt->type,
		    why != NULL ? why : "failed");
	free(why);
	store_close(st);
	export_worker_free(w);
	registry_close(re);
	(void)unlink(path);
	free(path);
	free(name);
	return rc;
}

/* Print v[0..n) as "a, b, c" with no decimals. */
static void
print_rounds(const double *v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		printf("%s%.0f", i > 0 ? ", " : "", v[i]);
}

/* The block to paste into BENCHMARKS.md. */
static void
summary(const struct bench_type *bt, int ntypes, const double *readrs,
    int rounds, int64_t n, size_t rbatch)
{
	double e, rd, wr;
	int i;

	rd = median(readrs, rounds);
	printf("\n==== export-engine-bench summary ====\n");
	printf("%" PRId64 " changes; %d rounds, alternating (read, then "
	    "per type: engine, write+fsync); medians\n\n", n, rounds);
	printf("| exporter | batch | records/s (median of %d) | per round |"
	    " bytes/record | write+fsync of the same bytes, records/s |"
	    " engine / read alone | engine / write+fsync | target |\n",
	    rounds);
	printf("|---|---|---|---|---|---|---|---|---|\n");
	for (i = 0; i < ntypes; i++) {
		e = median(bt[i].engine, rounds);
		wr = median(bt[i].write, rounds);
		printf("| %s | %zu | %.0f | ", bt[i].type, bt[i].batch, e);
		print_rounds(bt[i].engine, rounds);
		printf(" | %.0f | %.0f | %.3f | %.3f | >= 100000 %s |\n",
		    (double)bt[i].bytes / (double)n, wr, e / rd, e / wr,
		    e >= 100000 ? "(met)" : "(NOT met)");
	}
	printf("\nbaseline, change log read alone (store_changes_read, "
	    "batch %zu): %.0f records/s (median); per round: ", rbatch, rd);
	print_rounds(readrs, rounds);
	printf("\nbaseline, write+fsync per round:");
	for (i = 0; i < ntypes; i++) {
		printf(" %s ", bt[i].type);
		print_rounds(bt[i].write, rounds);
		printf(";");
	}
	printf("\n==== end ====\n");
	fflush(stdout);
}

int
main(int argc, char *argv[])
{
	static const char *const deftypes[] = { "jsonl", "csv", "ledger" };
	struct bench_type bt[BENCH_TYPES_MAX];
	double readrs[BENCH_ROUNDS_MAX];
	const char *tmp = getenv("TMPDIR"), *why;
	char *dir = NULL, *db = NULL, *base = NULL;
	int64_t n = 1000000, b = 0, rounds = 5;
	size_t rbatch;
	int ch, i, ntypes = 0, r, rc = 0;

	log_init(0, false);
	xmalloc_init_json();
	memset(bt, 0, sizeof(bt));
	while ((ch = getopt(argc, argv, "n:b:r:d:")) != -1) {
		switch (ch) {
		case 'n':
			if ((why = strnum_i64(optarg, 1, INT64_MAX / 4, &n)) !=
			    NULL) {
				fprintf(stderr, "-n %s: %s\n", optarg, why);
				return 2;
			}
			break;
		case 'b':
			if ((why = strnum_i64(optarg, 1, 100000, &b)) !=
			    NULL) {
				fprintf(stderr, "-b %s: %s\n", optarg, why);
				return 2;
			}
			break;
		case 'r':
			if ((why = strnum_i64(optarg, 1, BENCH_ROUNDS_MAX,
			    &rounds)) != NULL) {
				fprintf(stderr, "-r %s: %s\n", optarg, why);
				return 2;
			}
			break;
		case 'd':
			tmp = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind > BENCH_TYPES_MAX)
		goto usage;
	for (i = optind; i < argc; i++)
		bt[ntypes++].type = argv[i];
	if (ntypes == 0)
		for (i = 0; i < 3; i++)
			bt[ntypes++].type = deftypes[i];
	for (i = 0; i < ntypes; i++)
		bt[i].batch = b > 0 ? (size_t)b :
		    registry_default_batch(bt[i].type);
	rbatch = bt[0].batch;

	base = xasprintf("%s/rs-export-engine-bench.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if ((dir = mkdtemp(base)) == NULL) {
		perror(base);
		free(base);
		return 1;
	}
	db = xasprintf("%s/bench.db", dir);
	fprintf(stderr, "export-engine-bench: writing a change log of %"
	    PRId64 " entries...\n", n);
	if (fill(db, n) != 0) {
		rc = 1;
		goto out;
	}
	for (r = 0; r < (int)rounds; r++) {
		if (run_read(db, rbatch, n, &readrs[r]) != 0) {
			rc = 1;
			goto out;
		}
		printf("round %d/%d: read alone: %" PRId64 " records: %.0f "
		    "records/s (batch %zu)\n", r + 1, (int)rounds, n,
		    readrs[r], rbatch);
		fflush(stdout);
		for (i = 0; i < ntypes; i++) {
			if (run_engine(db, dir, &bt[i], n, &bt[i].engine[r]) !=
			    0 || run_write(dir, bt[i].bytes, bt[i].batch, n,
			    &bt[i].write[r]) != 0) {
				rc = 1;
				goto out;
			}
			printf("round %d/%d: %s: %.0f records/s (batch %zu, "
			    "%" PRId64 " bytes); write+fsync of the same "
			    "bytes: %.0f records/s\n", r + 1, (int)rounds,
			    bt[i].type, bt[i].engine[r], bt[i].batch,
			    bt[i].bytes, bt[i].write[r]);
			fflush(stdout);
		}
	}
	summary(bt, ntypes, readrs, (int)rounds, n, rbatch);
out:
	(void)unlink(db);
	free(db);
	db = xasprintf("%s/bench.db-wal", dir);
	(void)unlink(db);
	free(db);
	db = xasprintf("%s/bench.db-shm", dir);
	(void)unlink(db);
	free(db);
	(void)rmdir(dir);
	free(base);
	return rc;
usage:
	fprintf(stderr, "usage: export-engine-bench [-n CHANGES] [-b BATCH] "
	    "[-r ROUNDS] [-d DIR] [TYPE...]\n");
	return 2;
}
