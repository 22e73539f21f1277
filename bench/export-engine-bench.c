/*
 * export-engine-bench.c: records per second of the whole export path for
 * each file exporter, from a change log in SQLite to a file on disk: the
 * export engine's worker (core/export.h) reads batches from the store,
 * hands them to the exporter (which writes and fsync()s), and records its
 * position and the delivery log in the store, exactly as in the daemon.
 * (bench/export-bench measures the exporters alone.)
 *
 * usage: export-engine-bench [-n CHANGES] [-b BATCH] [-d DIR] [TYPE...]
 *	defaults: 1000000 changes, each type's default batch, $TMPDIR or
 *	/tmp, types jsonl, csv and ledger.
 *
 * The change log is written straight into a fresh database (the store's
 * schema, its rows as the store writes them): refunds that go PENDING
 * then SUCCEEDED, one in ten then REVERSED, with a 300-byte entity.  One
 * line per type: "TYPE: N records in S s: R records/s (batch B)".
 * Exit 1 if an exporter fails or stops short.
 */
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

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* Export the whole log of db with type into dir; 0 or 1. */
static int
run(const char *db, const char *dir, const char *type, size_t batch,
    int64_t n)
{
	struct registry_entry *re = NULL;
	struct export_spec spec;
	struct export_worker *w = NULL;
	struct rs_export_kv kv[2];
	struct store_options so = { .busy_timeout_ms = 5000 };
	struct store *st = NULL;
	struct store_export e;
	enum export_step r;
	char *why = NULL, *path, *name;
	int64_t next;
	double t0, dt;
	int rc = 1;

	path = xasprintf("%s/bench.%s", dir, type);
	name = xasprintf("bench-%s", type);
	(void)unlink(path);
	if (registry_open(type, NULL, &re, &why) != RS_OK)
		goto out;
	kv[0].key = "type";
	kv[0].value = type;
	kv[1].key = "path";
	kv[1].value = path;
	export_spec_init(&spec, name, re->ops);
	spec.kv = kv;
	spec.nkv = 2;
	spec.batch = batch > 0 ? batch : registry_default_batch(type);
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
	printf("%s: %" PRId64 " records in %.2f s: %.0f records/s "
	    "(batch %zu)\n", type, n, dt, (double)n / dt, spec.batch);
	fflush(stdout);
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "export-engine-bench: %s: %s\n", type,
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

int
main(int argc, char *argv[])
{
	static const char *const deftypes[] = { "jsonl", "csv", "ledger" };
	const char *tmp = getenv("TMPDIR"), *why;
	char *dir = NULL, *db = NULL, *base = NULL;
	int64_t n = 1000000, b = 0;
	int ch, i, rc = 0;

	log_init(0, false);
	xmalloc_init_json();
	while ((ch = getopt(argc, argv, "n:b:d:")) != -1) {
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
		case 'd':
			tmp = optarg;
			break;
		default:
			fprintf(stderr, "usage: export-engine-bench "
			    "[-n CHANGES] [-b BATCH] [-d DIR] [TYPE...]\n");
			return 2;
		}
	}
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
	if (optind == argc) {
		for (i = 0; i < 3; i++)
			rc |= run(db, dir, deftypes[i], (size_t)b, n);
	} else {
		for (i = optind; i < argc; i++)
			rc |= run(db, dir, argv[i], (size_t)b, n);
	}
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
}
