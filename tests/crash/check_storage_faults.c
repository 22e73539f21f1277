/*
 * check_storage_faults.c: the store under storage faults (issue #7), on
 * the real daemon: a full disk, a read-only database file, and a
 * database locked by another process for longer than busy_timeout.
 * Each must answer webhooks 503 with Retry-After, /readyz 503 (and
 * /healthz still 200), commit nothing of a refused webhook, and recover
 * without a restart once the fault clears: /readyz 200 again without
 * traffic, and Wix's retry of the same webhook lands.
 *
 * The full disk is real: the database lives on a small tmpfs that the
 * test mounts (root only), and a filler file takes the rest of it.  The
 * daemon is started on its usual directory, stopped, its database moved
 * onto the tmpfs with a symlink left at the old path (SQLite follows it,
 * so the -wal and -shm files live on the tmpfs too), and started again.
 *
 * The read-only file is made with the immutable attribute (chattr +i),
 * the one thing that makes an open file refuse writes even for root and
 * can be undone while the daemon runs; see test_read_only.
 *
 * The same faults present when the daemon starts (the *_at_start tests):
 * a database file, -wal file, directory or mount that cannot be
 * written.  The daemon must start all the same, say so in one log line
 * naming the file, answer as above while it lasts, and start its writer
 * (and its exporters and backfills) by itself once the fault clears.  A
 * database that does not exist and cannot be created is a clear refusal
 * to start (exit 1).
 *
 * Without root, the right to mount, or a temporary directory on a file
 * system that enforces the immutable flag (ext4, xfs, btrfs), the test
 * exits 77, which automake reports as SKIP, unless
 * RS_REQUIRE_STORAGE_FAULTS is set.  CI runs as root on ext4, where it
 * always runs.
 */
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <linux/fs.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <sqlite3.h>

#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define INST		"inst-faults"
#define INST_BF		"inst-faults-bf"

/* ---- helpers ------------------------------------------------------------- */

static struct tu_daemon *
start(const char *store)
{
	struct tu_conf conf;
	struct tu_daemon *d;

	memset(&conf, 0, sizeof(conf));
	conf.store = store;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	return d;
}

/* A refund webhook for id at rev, with event id evid.  Caller frees. */
static char *
webhook(const struct tu_daemon *d, const char *evid, const char *id,
    int64_t rev)
{
	struct tu_refund r;
	struct tu_event ev;
	char *tok;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-faults";
	r.currency = "USD";
	r.amount = "25.00";
	r.status = "SUCCEEDED";
	r.revision = rev;
	r.created_date = "2025-08-09T15:26:24.000Z";
	r.updated_date = "2025-08-09T15:26:25.000Z";
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = rev > 1 ? TU_UPDATED : TU_CREATED;
	ev.form = TU_FORM_OBJECT;
	ev.seq = -1;
	tok = tu_refund_webhook(d->key.priv_pem, &ev, &r, INST);
	ck_assert_ptr_nonnull(tok);
	return tok;
}

static int
post(const struct tu_daemon *d, const char *evid, const char *id,
    int64_t rev, struct tu_http_resp *resp)
{
	char *tok = webhook(d, evid, id, rev);
	int st;

	st = tu_daemon_post(d, tok, resp);
	free(tok);
	return st;
}

/* The row counts of the tables a webhook writes, as one string. */
static char *
counts(const struct tu_daemon *d)
{
	char *v = tu_sqlf(d, "SELECT (SELECT count(*) FROM refunds) || '/' ||"
	    " (SELECT count(*) FROM webhook_events) || '/' ||"
	    " (SELECT count(*) FROM changes) || '/' ||"
	    " (SELECT coalesce(max(seq), 0) FROM changes)");

	ck_assert_ptr_nonnull(v);
	return v;
}

/* The one log line of webhook evid's 503 names the store's reason
 * (NULL: any reason, but not the vague "busy, retry later"). */
static void
assert_503_line(const struct tu_daemon *d, const char *evid,
    const char *reason)
{
	const char *line[] = { evid, "503: store cannot commit: ", reason,
	    NULL };
	char *log, *p, *eol;

	ck_assert_msg(tu_daemon_wait_log(d, 0, line, 5000),
	    "no 503 line for %s with '%s'", evid, reason != NULL ? reason :
	    "");
	log = tu_daemon_log(d);
	for (p = log; (p = strstr(p, evid)) != NULL; p++) {
		eol = strchr(p, '\n');
		if (eol != NULL)
			*eol = '\0';
		ck_assert_msg(strstr(p, "busy, retry later") == NULL,
		    "vague 503 line: %s", p);
		if (eol == NULL)
			break;
		p = eol;
	}
	free(log);
}

/* How many times needle occurs in the log of d's current run. */
static int
log_count(const struct tu_daemon *d, const char *needle)
{
	char *log = tu_daemon_log(d);
	const char *p;
	int n = 0;

	ck_assert_ptr_nonnull(log);
	if (d->log_mark <= strlen(log))
		for (p = log + d->log_mark; (p = strstr(p, needle)) != NULL;
		    p += strlen(needle))
			n++;
	free(log);
	return n;
}

/*
 * The log of d's current run, while the store has been bad for reason
 * (as SQLite says it: "database or disk is full"): one line said it went
 * bad, each of the refused webhooks had exactly one line, and nothing
 * else repeated it: not the store's line per failed statement ("sqlite
 * code"), not the writer's per failed batch, not the probe's once a
 * second.
 */
static void
assert_quiet_while_bad(const struct tu_daemon *d, const char *reason,
    int refused)
{
	char *n503 = xasprintf("503: store cannot commit: %s", reason);
	char *down = xasprintf("store: not ready: %s;", reason);

	ck_assert_int_eq(log_count(d, n503), refused);
	ck_assert_int_eq(log_count(d, down), 1);
	ck_assert_int_eq(log_count(d, reason), refused + 1);
	ck_assert_int_eq(log_count(d, "sqlite code"), 0);
	ck_assert_int_eq(log_count(d, "not committed"), 0);
	ck_assert_int_eq(log_count(d, "busy, retry later"), 0);
	ck_assert_int_eq(log_count(d, "still not ready"), 0);
	ck_assert_int_eq(log_count(d, "ready again"), 0);
	free(n503);
	free(down);
}

/* The recovery is said once. */
static void
assert_ready_said_once(const struct tu_daemon *d)
{
	static const char *const line[] = { "store: ready again after ",
	    NULL };

	ck_assert_msg(tu_daemon_wait_log(d, d->log_mark, line, 5000),
	    "no 'store: ready again' line");
	ck_assert_int_eq(log_count(d, "ready again"), 1);
}

/* A 503 with Retry-After and a JSON error body. */
static void
assert_503(struct tu_http_resp *resp, int st, const char *what)
{
	char *retry;

	ck_assert_msg(st == 503, "%s: HTTP %d, want 503", what, st);
	retry = tu_http_header(resp, "Retry-After");
	ck_assert_msg(retry != NULL && strtol(retry, NULL, 10) > 0,
	    "%s: no Retry-After", what);
	free(retry);
	ck_assert(tu_is_error_json(resp->body));
}

/* Wait up to ms for /readyz to answer want. */
static bool
readyz_becomes(const struct tu_daemon *d, int want, int ms)
{
	int64_t end = clock_mono_ms() + ms;

	for (;;) {
		if (tu_http_get(d->admin_port, "/readyz", NULL) == want)
			return true;
		if (clock_mono_ms() > end)
			return false;
		tu_sleep_ms(100);
	}
}

static void
assert_stored(const struct tu_daemon *d, const char *evid, const char *id,
    int64_t rev)
{
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " webhook_events WHERE event_id = '%s'", evid), 1);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT revision FROM refunds"
	    " WHERE id = '%s'", id), rev);
}

static void
assert_absent(const struct tu_daemon *d, const char *evid, const char *id)
{
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " webhook_events WHERE event_id = '%s'", evid), 0);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM refunds"
	    " WHERE id = '%s'", id), 0);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM changes"
	    " WHERE refund_id = '%s'", id), 0);
}

static void
assert_integrity(const struct tu_daemon *d)
{
	char *v = tu_sql(d->db_path, "PRAGMA integrity_check");

	ck_assert_msg(v != NULL && strcmp(v, "ok") == 0,
	    "integrity_check: %s", v != NULL ? v : "(null)");
	free(v);
}

/* Copy the file at from to to (which must not exist).  false on error. */
static bool
copy_file(const char *from, const char *to)
{
	char buf[65536];
	ssize_t n;
	int in, out;
	bool ok = false;

	if ((in = open(from, O_RDONLY | O_CLOEXEC)) == -1)
		return false;
	if ((out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0644)) == -1) {
		close(in);
		return false;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			goto out;
	ok = n == 0 && fsync(out) == 0;
out:
	close(in);
	if (close(out) != 0)
		ok = false;
	return ok;
}

/* Remove the -wal and -shm files the clean stop of d left. */
static void
unlink_sidecars(const struct tu_daemon *d)
{
	static const char *const sfx[] = { "-wal", "-shm" };
	char *side;

	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		side = xasprintf("%s%s", d->db_path, sfx[i]);
		ck_assert_msg(unlink(side) == 0, "%s: %s", side,
		    strerror(errno));
		free(side);
	}
}

/*
 * Mount a tmpfs of size bytes at d->dir/mnt and move d's (stopped)
 * database onto it, leaving a symlink.  Returns the mount point.
 */
static char *
db_onto_tmpfs(struct tu_daemon *d, const char *size)
{
	char *mnt = xasprintf("%s/mnt", d->dir), *opts, *target, *side;
	struct stat sb;

	ck_assert_int_eq(d->pid, 0);
	ck_assert_int_eq(mkdir(mnt, 0755), 0);
	opts = xasprintf("size=%s,mode=0755", size);
	ck_assert_msg(mount("tmpfs", mnt, "tmpfs", 0, opts) == 0,
	    "mount tmpfs on %s: %s", mnt, strerror(errno));
	free(opts);
	target = xasprintf("%s/refundsync.db", mnt);
	/* A clean stop checkpoints the WAL and empties it; the -wal and
	 * -shm stay for readers that may not create them.  Nothing in
	 * them is needed: the copy starts without. */
	side = xasprintf("%s-wal", d->db_path);
	ck_assert_msg(stat(side, &sb) == 0 && sb.st_size == 0,
	    "%s is not there and empty", side);
	free(side);
	unlink_sidecars(d);
	ck_assert(copy_file(d->db_path, target));
	ck_assert_int_eq(unlink(d->db_path), 0);
	ck_assert_int_eq(symlink(target, d->db_path), 0);
	free(target);
	return mnt;
}

static void
unmount(char *mnt)
{
	if (umount2(mnt, MNT_DETACH) != 0)
		fprintf(stderr, "umount %s: %s\n", mnt, strerror(errno));
	free(mnt);
}

/* Fill the file system holding dir: a file "filler" until ENOSPC.  The
 * bytes written. */
static int64_t
fill(const char *dir)
{
	char *path = xasprintf("%s/filler", dir), buf[4096];
	int64_t total = 0;
	ssize_t n;
	int fd;

	memset(buf, 0xa5, sizeof(buf));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	while ((n = write(fd, buf, sizeof(buf))) > 0)
		total += n;
	ck_assert_msg(n == -1 && errno == ENOSPC, "filler: %s",
	    n == -1 ? strerror(errno) : "short write");
	/* The last partial page, too. */
	while (write(fd, buf, 1) == 1)
		total++;
	(void)fsync(fd);
	close(fd);
	free(path);
	return total;
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(test_disk_full)
{
	struct tu_daemon *d = start("busy_timeout = 200\n");
	struct tu_http_resp resp;
	char *mnt, *before, *after, *filler, evid[32], id[32];
	char *refused_ev[4], *refused_id[4];
	int64_t filled;
	int i, st = 200, first_503 = -1, n200 = 0;

	ck_assert_int_eq(post(d, "ev-full-0", "rf-full-0", 1, NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	mnt = db_onto_tmpfs(d, "4m");
	ck_assert_msg(tu_daemon_restart(d), "restart on the tmpfs failed");
	ck_assert_int_eq(post(d, "ev-full-1", "rf-full-1", 1, NULL), 200);
	assert_stored(d, "ev-full-1", "rf-full-1", 1);

	/* The disk fills up. */
	filled = fill(mnt);
	ck_assert_int_gt(filled, 0);
	/* A little slack may be left inside the WAL's last page: the
	 * first refusal comes within a few webhooks. */
	for (i = 0; i < 40; i++) {
		snprintf(evid, sizeof(evid), "ev-fill-%02d", i);
		snprintf(id, sizeof(id), "rf-fill-%02d", i);
		memset(&resp, 0, sizeof(resp));
		st = post(d, evid, id, 1, &resp);
		if (st == 503) {
			assert_503(&resp, st, "disk full");
			assert_503_line(d, evid, "database or disk is full");
			first_503 = i;
			tu_http_resp_cleanup(&resp);
			break;
		}
		ck_assert_int_eq(st, 200);
		n200++;
		tu_http_resp_cleanup(&resp);
	}
	ck_assert_msg(first_503 >= 0, "no 503 after %d webhooks on a full "
	    "disk", n200);
	assert_absent(d, evid, id);
	refused_ev[0] = xstrdup(evid);
	refused_id[0] = xstrdup(id);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);

	/* More webhooks while full: each refused, nothing committed. */
	before = counts(d);
	for (i = 1; i < 4; i++) {
		snprintf(evid, sizeof(evid), "ev-full-x%d", i);
		snprintf(id, sizeof(id), "rf-full-x%d", i);
		memset(&resp, 0, sizeof(resp));
		st = post(d, evid, id, 1, &resp);
		assert_503(&resp, st, "still full");
		tu_http_resp_cleanup(&resp);
		assert_absent(d, evid, id);
		refused_ev[i] = xstrdup(evid);
		refused_id[i] = xstrdup(id);
	}
	/* An update of a stored refund is refused whole as well. */
	memset(&resp, 0, sizeof(resp));
	st = post(d, "ev-full-upd", "rf-full-1", 2, &resp);
	assert_503(&resp, st, "update while full");
	tu_http_resp_cleanup(&resp);
	after = counts(d);
	ck_assert_str_eq(after, before);
	free(after);
	assert_stored(d, "ev-full-1", "rf-full-1", 1);
	/* It stays not ready while the disk is full (the probe fails). */
	tu_sleep_ms(1500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	/* Five webhooks refused, the probe failed at least once: one line
	 * each, and one for the store going bad. */
	assert_quiet_while_bad(d, "database or disk is full", 5);

	/* Space comes back: ready again without traffic or a restart. */
	filler = xasprintf("%s/filler", mnt);
	ck_assert_int_eq(unlink(filler), 0);
	free(filler);
	ck_assert_msg(readyz_becomes(d, 200, 10000), "/readyz stays 503");
	assert_ready_said_once(d);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(post(d, refused_ev[i], refused_id[i], 1,
		    NULL), 200);
		assert_stored(d, refused_ev[i], refused_id[i], 1);
		free(refused_ev[i]);
		free(refused_id[i]);
	}
	ck_assert_int_eq(post(d, "ev-full-upd", "rf-full-1", 2, NULL), 200);
	assert_stored(d, "ev-full-upd", "rf-full-1", 2);
	ck_assert_int_eq(log_count(d, "ready again"), 1);
	fprintf(stderr, "storage faults: disk full: filler %lld bytes, %d "
	    "webhooks fitted after it, then 503 + Retry-After; recovered "
	    "without a restart\n", (long long)filled, n200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	free(before);
	unmount(mnt);
	tu_daemon_free(d);
}
END_TEST

/* Another process holds the write lock for longer than busy_timeout. */
START_TEST(test_locked)
{
	struct tu_daemon *d = start("busy_timeout = 200\n");
	struct tu_http_resp resp;
	char *before, *after;
	sqlite3 *db;
	int st, i;

	ck_assert_int_eq(post(d, "ev-lock-0", "rf-lock-0", 1, NULL), 200);
	ck_assert_int_eq(sqlite3_open(d->db_path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL,
	    NULL), SQLITE_OK);
	/* Not ready before any webhook fails: the idle writer probes. */
	ck_assert_msg(readyz_becomes(d, 503, 20000), "/readyz stays 200 "
	    "while the store is locked and no webhook comes");
	{
		static const char *const line[] = { "store: not ready: "
		    "database is locked", NULL };

		ck_assert(tu_daemon_wait_log(d, 0, line, 1000));
	}
	for (i = 1; i <= 3; i++) {
		char evid[32], id[32];

		snprintf(evid, sizeof(evid), "ev-lock-%d", i);
		snprintf(id, sizeof(id), "rf-lock-%d", i);
		memset(&resp, 0, sizeof(resp));
		st = post(d, evid, id, 1, &resp);
		assert_503(&resp, st, "locked");
		assert_503_line(d, evid, "database is locked");
		tu_http_resp_cleanup(&resp);
	}
	memset(&resp, 0, sizeof(resp));
	st = post(d, "ev-lock-upd", "rf-lock-0", 2, &resp);
	assert_503(&resp, st, "update while locked");
	tu_http_resp_cleanup(&resp);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	/* Held well past busy_timeout: still not ready. */
	tu_sleep_ms(1500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	assert_quiet_while_bad(d, "database is locked", 4);
	ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);

	/* Nothing of the refused webhooks was kept. */
	before = xstrdup("1/1/1/1");
	after = counts(d);
	ck_assert_str_eq(after, before);
	free(after);
	free(before);
	assert_absent(d, "ev-lock-1", "rf-lock-1");
	ck_assert_msg(readyz_becomes(d, 200, 10000), "/readyz stays 503");
	assert_ready_said_once(d);
	for (i = 1; i <= 3; i++) {
		char evid[32], id[32];

		snprintf(evid, sizeof(evid), "ev-lock-%d", i);
		snprintf(id, sizeof(id), "rf-lock-%d", i);
		ck_assert_int_eq(post(d, evid, id, 1, NULL), 200);
		assert_stored(d, evid, id, 1);
	}
	ck_assert_int_eq(post(d, "ev-lock-upd", "rf-lock-0", 2, NULL), 200);
	assert_stored(d, "ev-lock-upd", "rf-lock-0", 2);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	tu_daemon_free(d);
}
END_TEST

/* Set or clear the immutable attribute of path (chattr +i / -i). */
static bool
set_immutable(const char *path, bool on)
{
	int fd, flags;
	bool ok = false;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1)
		return false;
	if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
		if (on)
			flags |= FS_IMMUTABLE_FL;
		else
			flags &= ~FS_IMMUTABLE_FL;
		ok = ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
	}
	close(fd);
	return ok;
}

/*
 * A read-only database file: the database and its WAL made immutable
 * while the daemon has them open.  In WAL mode a commit writes only the
 * -wal file, so that one matters most; the main file keeps checkpoints
 * out.  (The -shm index is shared memory, not data: it stays writable,
 * so readers still work.)  chmod 0444 would mean nothing here: root
 * ignores it, and permissions are checked at open only.  The immutable
 * flag is checked at every write, for root too, by ext4, xfs and btrfs;
 * main() checks that the temporary directory's file system enforces it.
 */
START_TEST(test_read_only)
{
	struct tu_daemon *d = start("busy_timeout = 200\n");
	struct tu_http_resp resp;
	char *wal = NULL, *after;
	int st, i;

	ck_assert_int_eq(post(d, "ev-ro-0", "rf-ro-0", 1, NULL), 200);
	wal = xasprintf("%s-wal", d->db_path);
	ck_assert_msg(access(wal, F_OK) == 0, "no %s", wal);
	ck_assert(set_immutable(d->db_path, true));
	ck_assert(set_immutable(wal, true));
	ck_assert_msg(readyz_becomes(d, 503, 20000), "/readyz stays 200 "
	    "while the WAL is read-only and no webhook comes");

	for (i = 1; i <= 3; i++) {
		char evid[32], id[32];

		snprintf(evid, sizeof(evid), "ev-ro-%d", i);
		snprintf(id, sizeof(id), "rf-ro-%d", i);
		memset(&resp, 0, sizeof(resp));
		st = post(d, evid, id, 1, &resp);
		assert_503(&resp, st, "read-only");
		assert_503_line(d, evid, NULL);
		tu_http_resp_cleanup(&resp);
		assert_absent(d, evid, id);
	}
	memset(&resp, 0, sizeof(resp));
	st = post(d, "ev-ro-upd", "rf-ro-0", 2, &resp);
	assert_503(&resp, st, "update while read-only");
	tu_http_resp_cleanup(&resp);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	after = counts(d);
	ck_assert_str_eq(after, "1/1/1/1");
	free(after);
	assert_stored(d, "ev-ro-0", "rf-ro-0", 1);
	tu_sleep_ms(1500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);

	/* Writable again: ready without a restart; the retries land. */
	ck_assert(set_immutable(wal, false));
	ck_assert(set_immutable(d->db_path, false));
	ck_assert_msg(readyz_becomes(d, 200, 10000), "/readyz stays 503");
	for (i = 1; i <= 3; i++) {
		char evid[32], id[32];

		snprintf(evid, sizeof(evid), "ev-ro-%d", i);
		snprintf(id, sizeof(id), "rf-ro-%d", i);
		ck_assert_int_eq(post(d, evid, id, 1, NULL), 200);
		assert_stored(d, evid, id, 1);
	}
	ck_assert_int_eq(post(d, "ev-ro-upd", "rf-ro-0", 2, NULL), 200);
	assert_stored(d, "ev-ro-upd", "rf-ro-0", 2);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	free(wal);
	tu_daemon_free(d);
}
END_TEST

/* Wait up to ms for the file d->dir/name to contain needle. */
static bool
file_gets(const struct tu_daemon *d, const char *name, const char *needle,
    int ms)
{
	char *path = xasprintf("%s/%s", d->dir, name), *text;
	int64_t end = clock_mono_ms() + ms;
	bool found;

	for (;;) {
		text = tu_read_file(path, NULL);
		found = text != NULL && strstr(text, needle) != NULL;
		free(text);
		if (found || clock_mono_ms() > end)
			break;
		tu_sleep_ms(50);
	}
	free(path);
	return found;
}

/*
 * Start the stopped d on a store it cannot write because of file
 * (reason: the errno text): it must come up, say so in one log line,
 * answer /healthz 200, /readyz 503 naming file, and webhooks 503 with
 * Retry-After (a new refund, evid/id, and an update of upd_id).
 */
static void
restart_unwritable(struct tu_daemon *d, const char *file, const char *reason,
    const char *evid, const char *id, const char *upd_id)
{
	struct tu_http_resp resp;
	char *named = xasprintf("%s: %s", file, reason);
	const char *const line[] = { "store ", d->db_path,
	    " cannot be written (", named, "starting without it", NULL };
	int st;

	ck_assert_msg(tu_daemon_restart(d), "no start on a store that "
	    "cannot be written");
	ck_assert_msg(tu_daemon_wait_log(d, d->log_mark, line, 1000),
	    "no log line naming %s", named);
	ck_assert_int_eq(log_count(d, "cannot be written ("), 1);
	ck_assert_int_eq(tu_http_get(d->port, "/healthz", NULL), 200);
	memset(&resp, 0, sizeof(resp));
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", &resp), 503);
	ck_assert(tu_is_error_json(resp.body));
	ck_assert_msg(strstr(resp.body, "store cannot be written: ") != NULL &&
	    strstr(resp.body, named) != NULL, "/readyz: %s", resp.body);
	tu_http_resp_cleanup(&resp);
	memset(&resp, 0, sizeof(resp));
	st = post(d, evid, id, 1, &resp);
	assert_503(&resp, st, "unwritable at start");
	tu_http_resp_cleanup(&resp);
	memset(&resp, 0, sizeof(resp));
	st = post(d, "ev-start-upd", upd_id, 2, &resp);
	assert_503(&resp, st, "update, unwritable at start");
	tu_http_resp_cleanup(&resp);
	free(named);
}

/* Once the fault is gone: ready without a restart, said once, and Wix's
 * retries of the refused webhooks land. */
static void
assert_recovers(struct tu_daemon *d, const char *evid, const char *id,
    const char *upd_id)
{
	ck_assert_msg(readyz_becomes(d, 200, 10000), "/readyz stays 503");
	ck_assert_int_eq(log_count(d, "can be written again"), 1);
	ck_assert_int_eq(post(d, evid, id, 1, NULL), 200);
	assert_stored(d, evid, id, 1);
	ck_assert_int_eq(post(d, "ev-start-upd", upd_id, 2, NULL), 200);
	assert_stored(d, "ev-start-upd", upd_id, 2);
}

/*
 * The database file is read-only when the daemon starts.  SQLite opens
 * it all the same, for reading only, and such a connection would never
 * write: the daemon must not keep it, and must open the store again
 * once the file can be written.  The exporters start with the writer.
 */
START_TEST(test_read_only_at_start)
{
	struct tu_conf conf;
	struct tu_daemon *d;
	char *after;

	memset(&conf, 0, sizeof(conf));
	conf.store = "busy_timeout = 200";
	conf.tail = "[exporter j]\ntype = jsonl\npath = out.jsonl\n"
	    "poll_ms = 20";
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	ck_assert_int_eq(post(d, "ev-ros-0", "rf-ros-0", 1, NULL), 200);
	ck_assert(file_gets(d, "out.jsonl", "rf-ros-0", 10000));
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	ck_assert(set_immutable(d->db_path, true));

	restart_unwritable(d, d->db_path, "Operation not permitted",
	    "ev-ros-1", "rf-ros-1", "rf-ros-0");
	after = counts(d);
	ck_assert_str_eq(after, "1/1/1/1");
	free(after);
	assert_absent(d, "ev-ros-1", "rf-ros-1");
	assert_stored(d, "ev-ros-0", "rf-ros-0", 1);
	/* Readers still read; the exporters wait for the writer. */
	ck_assert_int_eq(tu_http_get(d->admin_port, "/status", NULL), 200);
	ck_assert_int_eq(log_count(d, "exporter started"), 0);
	/* It keeps trying, without a line per try. */
	tu_sleep_ms(2500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(log_count(d, "cannot be written ("), 1);
	ck_assert_int_eq(log_count(d, "still cannot be written"), 0);
	ck_assert_int_eq(log_count(d, "can be written again"), 0);

	ck_assert(set_immutable(d->db_path, false));
	assert_recovers(d, "ev-ros-1", "rf-ros-1", "rf-ros-0");
	ck_assert_int_eq(log_count(d, "exporter started"), 1);
	ck_assert_msg(file_gets(d, "out.jsonl", "rf-ros-1", 10000),
	    "the exporter did not deliver after the recovery");
	fprintf(stderr, "storage faults: read-only database at start: 503 "
	    "+ Retry-After, /readyz 503 with the reason; recovered without "
	    "a restart\n");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	tu_daemon_free(d);
}
END_TEST

/* The -wal file is read-only at start (the database file is not):
 * SQLite says nothing at open, and the first write would fail. */
START_TEST(test_wal_read_only_at_start)
{
	struct tu_daemon *d = start("busy_timeout = 200\n");
	char *wal = xasprintf("%s-wal", d->db_path), *after;
	int fd;

	ck_assert_int_eq(post(d, "ev-rws-0", "rf-rws-0", 1, NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	/* A clean stop leaves it empty, as a crash can. */
	fd = open(wal, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert(set_immutable(wal, true));

	restart_unwritable(d, wal, "Operation not permitted", "ev-rws-1",
	    "rf-rws-1", "rf-rws-0");
	after = counts(d);
	ck_assert_str_eq(after, "1/1/1/1");
	free(after);
	assert_absent(d, "ev-rws-1", "rf-rws-1");
	tu_sleep_ms(1500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(log_count(d, "cannot be written ("), 1);

	ck_assert(set_immutable(wal, false));
	assert_recovers(d, "ev-rws-1", "rf-rws-1", "rf-rws-0");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	free(wal);
	tu_daemon_free(d);
}
END_TEST

/*
 * The directory is read-only at start: the database cannot even be
 * opened for reading, its -wal and -shm files cannot be created.  (The
 * daemon's log and config are there already, and stay usable.)
 */
START_TEST(test_dir_read_only_at_start)
{
	struct tu_daemon *d = start("busy_timeout = 200\n");
	char *after;

	ck_assert_int_eq(post(d, "ev-rds-0", "rf-rds-0", 1, NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	/* The -wal and -shm a clean stop leaves would let it open: this
	 * is a store whose last close was another program's, which
	 * removed them. */
	unlink_sidecars(d);
	ck_assert(set_immutable(d->dir, true));

	restart_unwritable(d, d->dir, "Operation not permitted", "ev-rds-1",
	    "rf-rds-1", "rf-rds-0");
	/* Nothing reads it now: the status page says so, and lives. */
	ck_assert_int_eq(tu_http_get(d->admin_port, "/status", NULL), 503);
	tu_sleep_ms(1500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(log_count(d, "cannot be written ("), 1);
	ck_assert_int_eq(log_count(d, "still cannot be written"), 0);

	ck_assert(set_immutable(d->dir, false));
	ck_assert_msg(readyz_becomes(d, 200, 10000), "/readyz stays 503");
	/* Nothing of the refused webhooks was committed meanwhile. */
	after = counts(d);
	ck_assert_str_eq(after, "1/1/1/1");
	free(after);
	assert_recovers(d, "ev-rds-1", "rf-rds-1", "rf-rds-0");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	tu_daemon_free(d);
}
END_TEST

/*
 * The database on a file system mounted read-only at start (a tmpfs,
 * remounted read-only while the daemon is stopped; the kernel refuses
 * that while a file is open for writing), then remounted read-write.
 */
START_TEST(test_ro_mount_at_start)
{
	struct tu_daemon *d = start("busy_timeout = 200\n");
	char *mnt, *file, *after;

	ck_assert_int_eq(post(d, "ev-rom-0", "rf-rom-0", 1, NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	mnt = db_onto_tmpfs(d, "4m");
	ck_assert_msg(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT | MS_RDONLY,
	    "size=4m") == 0, "remount %s read-only: %s", mnt,
	    strerror(errno));
	/* SQLite follows the symbolic link: the file it names is there. */
	file = xasprintf("%s/refundsync.db", mnt);
	restart_unwritable(d, file, "Read-only file system", "ev-rom-1",
	    "rf-rom-1", "rf-rom-0");
	tu_sleep_ms(1500);
	ck_assert_int_eq(tu_http_get(d->admin_port, "/readyz", NULL), 503);
	ck_assert_int_eq(log_count(d, "cannot be written ("), 1);
	ck_assert_int_eq(log_count(d, "still cannot be written"), 0);

	ck_assert_msg(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=4m") ==
	    0, "remount %s read-write: %s", mnt, strerror(errno));
	ck_assert_msg(readyz_becomes(d, 200, 10000), "/readyz stays 503");
	after = counts(d);
	ck_assert_str_eq(after, "1/1/1/1");
	free(after);
	assert_recovers(d, "ev-rom-1", "rf-rom-1", "rf-rom-0");
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	free(file);
	unmount(mnt);
	tu_daemon_free(d);
}
END_TEST

/*
 * Wix credentials, and an instance to backfill that the store has not
 * seen yet, with the database read-only at start: the backfill waits
 * for the writer (nothing reaches Wix meanwhile, nothing spins), and
 * runs to the end once the store can be written.
 */
START_TEST(test_backfill_at_start)
{
	struct tu_sandbox sb;
	struct tu_conf conf;
	struct tu_daemon *d;
	char *sbdir = tu_tempdir(), *keys, *wix;
	int64_t end;
	bool done = false;

	ck_assert_msg(tu_sandbox_start(&sb, sbdir, 5, INST_BF, NULL),
	    "the sandbox did not start");
	keys = tu_sandbox_wix_keys(&sb, sbdir);
	ck_assert_ptr_nonnull(keys);
	memset(&conf, 0, sizeof(conf));
	conf.store = "busy_timeout = 200";
	conf.wix = keys;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	ck_assert_int_eq(post(d, "ev-bfs-0", "rf-bfs-0", 1, NULL), 200);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	wix = xasprintf("%sinstances = %s", keys, INST_BF);
	conf.wix = wix;
	ck_assert(tu_daemon_write_config(d, &conf));
	ck_assert(set_immutable(d->db_path, true));

	restart_unwritable(d, d->db_path, "Operation not permitted",
	    "ev-bfs-1", "rf-bfs-1", "rf-bfs-0");
	tu_sleep_ms(1500);
	ck_assert_int_eq(log_count(d, "backfill " INST_BF ":"), 0);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM instances"
	    " WHERE instance_id = '%s'", INST_BF), 0);

	ck_assert(set_immutable(d->db_path, false));
	assert_recovers(d, "ev-bfs-1", "rf-bfs-1", "rf-bfs-0");
	for (end = clock_mono_ms() + 30000; !done && clock_mono_ms() < end;) {
		done = tu_sql_int(d, -1, "SELECT count(*) FROM instances"
		    " WHERE instance_id = '%s' AND backfill = 'done'",
		    INST_BF) == 1;
		if (!done)
			tu_sleep_ms(100);
	}
	ck_assert_msg(done, "the backfill did not run after the recovery");
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM refunds"
	    " WHERE instance_id = '%s'", INST_BF), 5);
	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	assert_integrity(d);
	tu_daemon_free(d);
	tu_sandbox_stop(&sb);
	tu_rmtree(sbdir);
	free(sbdir);
	free(wix);
	free(keys);
}
END_TEST

/*
 * No database, and a directory where none can be created: a wrong path
 * or a missing state directory, not a passing fault.  serve refuses to
 * start, exit 1, with a line naming the database and the directory.
 */
START_TEST(test_missing_unwritable_at_start)
{
	struct tu_daemon *d = start(NULL);
	char *argv[5], *bin = xstrdup(tu_binary()), *out = NULL, *err = NULL;
	char *named;
	int st;

	ck_assert_int_eq(tu_daemon_stop(d, 10000), 0);
	ck_assert_int_eq(unlink(d->db_path), 0);
	named = xasprintf("%s-wal", d->db_path);
	(void)unlink(named);
	free(named);
	named = xasprintf("%s-shm", d->db_path);
	(void)unlink(named);
	free(named);
	ck_assert(set_immutable(d->dir, true));
	argv[0] = bin;
	argv[1] = (char *)"serve";
	argv[2] = (char *)"-c";
	argv[3] = d->conf_path;
	argv[4] = NULL;
	st = tu_run(argv, 10000, &out, &err);
	ck_assert(set_immutable(d->dir, false));
	ck_assert_msg(st == 1, "exit %d, want 1; stderr: %s", st,
	    err != NULL ? err : "");
	named = xasprintf("%s: Operation not permitted", d->dir);
	ck_assert_msg(err != NULL && strstr(err, "cannot start: store: ") !=
	    NULL && strstr(err, d->db_path) != NULL &&
	    strstr(err, "cannot create it") != NULL &&
	    strstr(err, named) != NULL, "stderr: %s", err);
	ck_assert_int_eq(access(d->db_path, F_OK), -1);
	free(named);
	free(out);
	free(err);
	free(bin);
	tu_daemon_free(d);
}
END_TEST

/*
 * Does the file system of the temporary directory refuse writes to an
 * open file once it is immutable (ext4, xfs, btrfs do; tmpfs does not)?
 */
static bool
can_immutable(char *why, size_t len)
{
	char *dir = tu_tempdir(), *path = xasprintf("%s/probe", dir);
	bool ok = false;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd == -1 || write(fd, "x", 1) != 1) {
		snprintf(why, len, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!set_immutable(path, true)) {
		snprintf(why, len, "chattr +i: %s", strerror(errno));
		goto out;
	}
	ok = pwrite(fd, "y", 1, 0) == -1 && errno == EPERM;
	if (!ok)
		snprintf(why, len, "the file system of %s ignores the "
		    "immutable flag on an open file", dir);
	(void)set_immutable(path, false);
out:
	if (fd != -1)
		close(fd);
	tu_rmtree(dir);
	free(path);
	free(dir);
	return ok;
}

/* Can this process mount a tmpfs?  Why not, in why. */
static bool
can_mount(char *why, size_t len)
{
	char *dir;
	bool ok;

	if (geteuid() != 0) {
		snprintf(why, len, "not root");
		return false;
	}
	dir = tu_tempdir();
	ok = mount("tmpfs", dir, "tmpfs", 0, "size=64k") == 0;
	if (!ok)
		snprintf(why, len, "mount tmpfs: %s", strerror(errno));
	else
		(void)umount2(dir, MNT_DETACH);
	tu_rmtree(dir);
	free(dir);
	return ok;
}

static Suite *
storage_faults_suite(bool mounts, bool immutable)
{
	Suite *s = suite_create("storage_faults");
	TCase *tc = tcase_create("faults");

	tcase_set_timeout(tc, 120);
	if (mounts) {
		tcase_add_test(tc, test_disk_full);
		tcase_add_test(tc, test_ro_mount_at_start);
	}
	if (immutable) {
		tcase_add_test(tc, test_read_only);
		tcase_add_test(tc, test_read_only_at_start);
		tcase_add_test(tc, test_wal_read_only_at_start);
		tcase_add_test(tc, test_dir_read_only_at_start);
		tcase_add_test(tc, test_backfill_at_start);
		tcase_add_test(tc, test_missing_unwritable_at_start);
	}
	tcase_add_test(tc, test_locked);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	char why[256];
	bool mounts, immutable;
	int failed;

	mounts = can_mount(why, sizeof(why));
	if (!mounts)
		fprintf(stderr, "storage faults: cannot mount a tmpfs (%s)\n",
		    why);
	immutable = can_immutable(why, sizeof(why));
	if (!immutable)
		fprintf(stderr, "storage faults: no read-only file (%s)\n",
		    why);
	if (!mounts || !immutable) {
		if (getenv("RS_REQUIRE_STORAGE_FAULTS") == NULL)
			return 77;
		return 1;
	}
	sr = srunner_create(storage_faults_suite(mounts, immutable));
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? 1 : 0;
}
