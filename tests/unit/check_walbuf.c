/*
 * check_walbuf.c: the VFS that gathers a transaction's WAL writes
 * (adapters/walbuf).
 *
 * The tests watch the file system through a "spy" VFS of their own,
 * layered over "unix" and made SQLite's default before walbuf_vfs() is
 * first called, so that walbuf wraps the spy.  The spy logs what reaches
 * it for WAL and database files (each write's offset, length and the
 * commit frames it holds, syncs, reads, truncates, size queries, file
 * controls, closes, shared-memory maps) and can make one WAL write
 * fail.  With it the tests check that a commit's frames come down as
 * one gathering (in 64 KiB writes, the unix VFS taking at most 128 KiB
 * - 1 per call) just before the WAL's sync, over exactly the bytes that
 * SQLite writes on its own with two calls per frame; that a commit over
 * 1 MiB is written out when the buffer fills; that another connection,
 * a copy of the files recovered from the WAL and a reopened database
 * hold every committed row, across spills, checkpoints and WAL
 * restarts; that a failed write fails the commit and leaves nothing of
 * it behind; that each other operation on the WAL file writes the
 * buffer out first; that files other than WAL files are the wrapped
 * VFS's own; how walbuf_vfs() names, registers and limits its layers;
 * and (test case "rollback") why walbuf.h asks for cache_spill=OFF: a
 * large transaction rolled back then writes nothing to the WAL, so no
 * frame of it can go down later over another writer's commit.
 *
 * Rows are checked byte for byte: row id holds ROW_LEN characters
 * computed from id (row_text()).  Databases are read back through
 * separate connections on the plain "unix" VFS, which the spy does not
 * see.  Every test works in its own directory under one directory per
 * test case ($TMPDIR or /tmp), removed at the end.  RS_WALBUF_DUMP=1
 * prints the spy's log of the windows the tests look at.
 */
#include <sys/stat.h>

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

#include "adapters/walbuf.h"

#include "../testutil.h"

/* walbuf's own limits (walbuf.c): it gathers at most WB_MAX bytes and
 * writes them out in pieces of WB_CHUNK. */
#define WB_MAX		(1024 * 1024)
#define WB_CHUNK	(64 * 1024)
/* The most the unix VFS writes in one call: it masks the length to 17
 * bits and takes a shorter write for a full disk. */
#define UNIX_MAX_WRITE	0x1ffff

/* The WAL layout for the default page size, which every test uses. */
#define PAGE_SIZE	4096
#define WAL_HDR		32
#define FRAME_HDR	24
#define FRAME		(FRAME_HDR + PAGE_SIZE)

/* The characters in each row's x. */
#define ROW_LEN		300

/* ---- the per-test-case directory ----------------------------------- */

/* Made by an unchecked fixture in the parent (static storage, so forked
 * tests do not see it as a leak). */
static char case_dir[512];
static int test_seq;

static void
case_setup(void)
{
	char *d = tu_tempdir();
	int n;

	if (d == NULL) {
		fprintf(stderr, "check_walbuf: no temporary directory\n");
		exit(2);
	}
	n = snprintf(case_dir, sizeof(case_dir), "%s", d);
	free(d);
	if (n < 0 || (size_t)n >= sizeof(case_dir)) {
		fprintf(stderr, "check_walbuf: TMPDIR too long\n");
		exit(2);
	}
}

static void
case_teardown(void)
{
	tu_rmtree(case_dir);
	case_dir[0] = '\0';
}

/* path := a new directory for this test, plus "/" name. */
static void
test_path(char *path, size_t size, const char *name)
{
	char dir[600];
	int n;

	n = snprintf(dir, sizeof(dir), "%s/t%d-%ld", case_dir, ++test_seq,
	    (long)getpid());
	ck_assert(n > 0 && (size_t)n < sizeof(dir));
	ck_assert_msg(mkdir(dir, 0700) == 0, "mkdir %s: %s", dir,
	    strerror(errno));
	n = snprintf(path, size, "%s/%s", dir, name);
	ck_assert(n > 0 && (size_t)n < size);
}

/* ---- the spy VFS --------------------------------------------------- */

enum ev_kind {
	EV_WRITE,
	EV_SYNC,
	EV_READ,
	EV_TRUNC,
	EV_SIZE,
	EV_FCNTL,
	EV_SHMMAP,
	EV_CLOSE
};

enum ft {
	FT_WAL,
	FT_DB,
	FT_OTHER
};

/* One call that reached the spy. */
struct ev {
	enum ev_kind	 kind;
	enum ft		 type;		/* the file's kind */
	int		 spy;		/* which spy (index in spies[]) */
	int		 fid;		/* which open file (1, 2, ...) */
	sqlite3_int64	 off;		/* write/read offset; truncate size */
	int		 len;		/* write/read length */
	int		 ncommit;	/* commit frame headers in a write */
	int		 rc;		/* what the spy answered */
};

#define EV_MAX		65536

static struct ev	evs[EV_MAX];
static size_t		nev;
static bool		ev_overflow;

/* The failure to inject: the next WAL write of at least min_len bytes
 * through any spy returns rc (0: none armed) instead of writing; once. */
static int	inj_rc;
static int	inj_min_len;
static int	inj_skip;	/* matching writes to let pass first */
static int	inj_fired;

struct spy {
	sqlite3_vfs	 vfs;		/* pAppData = this */
	sqlite3_vfs	*real;		/* "unix" */
	int		 id;		/* index in spies[] */
	char		 name[16];
};

/* spies[0] is the default throughout; [1] replaces it in the naming
 * tests; [2] is a version-1 VFS, which walbuf cannot wrap. */
#define NSPIES		3
static struct spy	spies[NSPIES];
static int		spy_nfiles;

struct spy_file {
	sqlite3_file	 base;		/* pMethods = &spy_io */
	sqlite3_file	*real;		/* the unix file, after us */
	int		 spy;
	int		 fid;
	enum ft		 type;
};

#define SPY_HDR		((sizeof(struct spy_file) + 7) & ~(size_t)7)

static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* How many frame headers in len bytes written at off mark a commit (a
 * non-zero database size after the commit, bytes 4-7). */
static int
commit_frames(const unsigned char *p, sqlite3_int64 off, int len)
{
	sqlite3_int64 pos, end = off + len;
	int n = 0;

	if (off <= WAL_HDR)
		pos = WAL_HDR;
	else
		pos = WAL_HDR + (off - WAL_HDR + FRAME - 1) / FRAME * FRAME;
	for (; pos + FRAME_HDR <= end; pos += FRAME)
		if (be32(p + (pos - off) + 4) != 0)
			n++;
	return n;
}

static void
ev_add(const struct spy_file *f, enum ev_kind kind, sqlite3_int64 off,
    int len, int ncommit, int rc)
{
	struct ev *e;

	if (f->type == FT_OTHER)
		return;
	if (nev == EV_MAX) {
		ev_overflow = true;
		return;
	}
	e = &evs[nev++];
	e->kind = kind;
	e->type = f->type;
	e->spy = f->spy;
	e->fid = f->fid;
	e->off = off;
	e->len = len;
	e->ncommit = ncommit;
	e->rc = rc;
}

static void
ev_reset(void)
{
	nev = 0;
	ev_overflow = false;
	inj_rc = 0;
	inj_min_len = 0;
	inj_skip = 0;
	inj_fired = 0;
}

static const char *
ev_name(enum ev_kind k)
{
	static const char *const names[] = { "write", "sync", "read",
	    "truncate", "size", "fcntl", "shmmap", "close" };

	return names[k];
}

/* With RS_WALBUF_DUMP set, print the log from a to b. */
static void
ev_dump(const char *what, size_t a, size_t b)
{
	const char *e = getenv("RS_WALBUF_DUMP");
	size_t i;

	if (e == NULL || *e == '\0')
		return;
	fprintf(stderr, "== %s: events %zu..%zu\n", what, a, b);
	for (i = a; i < b; i++)
		fprintf(stderr, "  %s spy%d f%d %-8s off=%lld len=%d "
		    "commit=%d rc=%d\n", evs[i].type == FT_WAL ? "wal" : "db ",
		    evs[i].spy, evs[i].fid, ev_name(evs[i].kind),
		    (long long)evs[i].off, evs[i].len, evs[i].ncommit,
		    evs[i].rc);
}

static int
spy_close(sqlite3_file *file)
{
	struct spy_file *f = (struct spy_file *)file;

	ev_add(f, EV_CLOSE, 0, 0, 0, SQLITE_OK);
	return f->real->pMethods->xClose(f->real);
}

static int
spy_read(sqlite3_file *file, void *p, int amt, sqlite3_int64 off)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	rc = f->real->pMethods->xRead(f->real, p, amt, off);
	ev_add(f, EV_READ, off, amt, 0, rc);
	return rc;
}

static int
spy_write(sqlite3_file *file, const void *p, int amt, sqlite3_int64 off)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc, ncommit = 0;

	if (f->type == FT_WAL)
		ncommit = commit_frames(p, off, amt);
	if (f->type == FT_WAL && inj_rc != 0 && amt >= inj_min_len &&
	    inj_skip-- == 0) {
		rc = inj_rc;
		inj_rc = 0;
		inj_fired++;
	} else
		rc = f->real->pMethods->xWrite(f->real, p, amt, off);
	ev_add(f, EV_WRITE, off, amt, ncommit, rc);
	return rc;
}

static int
spy_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	rc = f->real->pMethods->xTruncate(f->real, size);
	ev_add(f, EV_TRUNC, size, 0, 0, rc);
	return rc;
}

static int
spy_sync(sqlite3_file *file, int flags)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	rc = f->real->pMethods->xSync(f->real, flags);
	ev_add(f, EV_SYNC, 0, flags, 0, rc);
	return rc;
}

static int
spy_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	rc = f->real->pMethods->xFileSize(f->real, size);
	ev_add(f, EV_SIZE, rc == SQLITE_OK ? *size : -1, 0, 0, rc);
	return rc;
}

static int
spy_lock(sqlite3_file *file, int lock)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xLock(f->real, lock);
}

static int
spy_unlock(sqlite3_file *file, int lock)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xUnlock(f->real, lock);
}

static int
spy_check_reserved(sqlite3_file *file, int *out)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int
spy_file_control(sqlite3_file *file, int op, void *arg)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	rc = f->real->pMethods->xFileControl(f->real, op, arg);
	ev_add(f, EV_FCNTL, op, 0, 0, rc);
	return rc;
}

static int
spy_sector_size(sqlite3_file *file)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xSectorSize(f->real);
}

static int
spy_device_characteristics(sqlite3_file *file)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int
spy_shm_map(sqlite3_file *file, int pg, int pgsz, int extend,
    void volatile **pp)
{
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	rc = f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
	ev_add(f, EV_SHMMAP, pg, pgsz, 0, rc);
	return rc;
}

static int
spy_shm_lock(sqlite3_file *file, int off, int n, int flags)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xShmLock(f->real, off, n, flags);
}

static void
spy_shm_barrier(sqlite3_file *file)
{
	struct spy_file *f = (struct spy_file *)file;

	f->real->pMethods->xShmBarrier(f->real);
}

static int
spy_shm_unmap(sqlite3_file *file, int del)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xShmUnmap(f->real, del);
}

static int
spy_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **pp)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xFetch(f->real, off, amt, pp);
}

static int
spy_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
	struct spy_file *f = (struct spy_file *)file;

	return f->real->pMethods->xUnfetch(f->real, off, p);
}

/* Version 3, as unix's own files are (the database needs the shared
 * memory methods for WAL mode). */
static const sqlite3_io_methods spy_io = {
	.iVersion = 3,
	.xClose = spy_close,
	.xRead = spy_read,
	.xWrite = spy_write,
	.xTruncate = spy_truncate,
	.xSync = spy_sync,
	.xFileSize = spy_file_size,
	.xLock = spy_lock,
	.xUnlock = spy_unlock,
	.xCheckReservedLock = spy_check_reserved,
	.xFileControl = spy_file_control,
	.xSectorSize = spy_sector_size,
	.xDeviceCharacteristics = spy_device_characteristics,
	.xShmMap = spy_shm_map,
	.xShmLock = spy_shm_lock,
	.xShmBarrier = spy_shm_barrier,
	.xShmUnmap = spy_shm_unmap,
	.xFetch = spy_fetch,
	.xUnfetch = spy_unfetch
};

static struct spy *
spy_of(sqlite3_vfs *vfs)
{
	return vfs->pAppData;
}

static int
spy_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
    int flags, int *out_flags)
{
	struct spy *s = spy_of(vfs);
	struct spy_file *f = (struct spy_file *)file;
	int rc;

	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(void *)((char *)f + SPY_HDR);
	f->spy = s->id;
	f->fid = ++spy_nfiles;
	if (flags & SQLITE_OPEN_WAL)
		f->type = FT_WAL;
	else if (flags & SQLITE_OPEN_MAIN_DB)
		f->type = FT_DB;
	else
		f->type = FT_OTHER;
	rc = s->real->xOpen(s->real, name, f->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		if (f->real->pMethods != NULL)
			(void)f->real->pMethods->xClose(f->real);
		f->base.pMethods = NULL;
		return rc;
	}
	f->base.pMethods = &spy_io;
	return SQLITE_OK;
}

static int
spy_delete(sqlite3_vfs *vfs, const char *name, int dirsync)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xDelete(r, name, dirsync);
}

static int
spy_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xAccess(r, name, flags, out);
}

static int
spy_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xFullPathname(r, name, n, out);
}

static void *
spy_dlopen(sqlite3_vfs *vfs, const char *name)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xDlOpen(r, name);
}

static void
spy_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	r->xDlError(r, n, msg);
}

static void
(*spy_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xDlSym(r, h, sym);
}

static void
spy_dlclose(sqlite3_vfs *vfs, void *h)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	r->xDlClose(r, h);
}

static int
spy_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xRandomness(r, n, out);
}

static int
spy_sleep(sqlite3_vfs *vfs, int us)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xSleep(r, us);
}

static int
spy_current_time(sqlite3_vfs *vfs, double *out)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xCurrentTime(r, out);
}

static int
spy_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xGetLastError(r, n, out);
}

static int
spy_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	sqlite3_vfs *r = spy_of(vfs)->real;

	return r->xCurrentTimeInt64(r, out);
}

/* Fill in spies[i] (not registered yet). */
static void
spy_init(int i, int version)
{
	struct spy *s = &spies[i];
	sqlite3_vfs *v = &s->vfs, *real;

	real = sqlite3_vfs_find("unix");
	ck_assert_ptr_nonnull(real);
	if (s->real != NULL)
		return;
	s->real = real;
	s->id = i;
	(void)snprintf(s->name, sizeof(s->name), "rs-spy%d", i);
	v->iVersion = version;
	v->szOsFile = (int)SPY_HDR + real->szOsFile;
	v->mxPathname = real->mxPathname;
	v->zName = s->name;
	v->pAppData = s;
	v->xOpen = spy_open;
	v->xDelete = spy_delete;
	v->xAccess = spy_access;
	v->xFullPathname = spy_full_pathname;
	v->xDlOpen = spy_dlopen;
	v->xDlError = spy_dlerror;
	v->xDlSym = spy_dlsym;
	v->xDlClose = spy_dlclose;
	v->xRandomness = spy_randomness;
	v->xSleep = spy_sleep;
	v->xCurrentTime = spy_current_time;
	v->xGetLastError = spy_last_error;
	if (version >= 2)
		v->xCurrentTimeInt64 = spy_current_time64;
}

/* Make spies[i] SQLite's default VFS. */
static void
spy_make_default(int i)
{
	ck_assert_int_eq(sqlite3_vfs_register(&spies[i].vfs, 1), SQLITE_OK);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), &spies[i].vfs);
}

/* Checked fixture: spies[0] is the default, its log empty. */
static void
spy_setup(void)
{
	spy_init(0, 2);
	spy_init(1, 2);
	spy_init(2, 1);
	spy_make_default(0);
	ev_reset();
}

/* The number of events of kind on type files in [a, b) (fid 0: any). */
static int
ev_count(size_t a, size_t b, enum ev_kind kind, enum ft type, int fid)
{
	int n = 0;
	size_t i;

	for (i = a; i < b; i++)
		if (evs[i].kind == kind && evs[i].type == type &&
		    (fid == 0 || evs[i].fid == fid))
			n++;
	return n;
}

/* Copy the WAL events of [a, b) into out (at most max); their count. */
static size_t
ev_wal(size_t a, size_t b, struct ev *out, size_t max)
{
	size_t i, n = 0;

	for (i = a; i < b; i++)
		if (evs[i].type == FT_WAL && evs[i].kind != EV_CLOSE &&
		    n < max)
			out[n++] = evs[i];
	ck_assert_msg(!ev_overflow, "spy log overflowed");
	return n;
}

/* Whether check runs each test in a child process of its own. */
static bool
forked(void)
{
	const char *e = getenv("CK_FORK");

	return e == NULL || strcmp(e, "no") != 0;
}

/* ---- SQL helpers --------------------------------------------------- */

static void
exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc;

	rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s (%d)", sql,
	    err != NULL ? err : sqlite3_errstr(rc), rc);
	sqlite3_free(err);
}

/* The first column of the first row of sql as an integer. */
static sqlite3_int64
q_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	sqlite3_int64 v;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	rc = sqlite3_step(st);
	ck_assert_msg(rc == SQLITE_ROW, "%s: %s (%d)", sql,
	    sqlite3_errmsg(db), rc);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* The same as text, into buf. */
static const char *
q_text(sqlite3 *db, const char *sql, char *buf, size_t size)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *t;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	rc = sqlite3_step(st);
	ck_assert_msg(rc == SQLITE_ROW, "%s: %s (%d)", sql,
	    sqlite3_errmsg(db), rc);
	t = sqlite3_column_text(st, 0);
	(void)snprintf(buf, size, "%s", t != NULL ? (const char *)t : "");
	sqlite3_finalize(st);
	return buf;
}

/* A connection to path through vfs (NULL: the default), in WAL mode
 * with synchronous=FULL, as refundsync's writer runs. */
static sqlite3 *
db_open(const char *path, const char *vfs)
{
	sqlite3 *db = NULL;
	char mode[32];
	int rc;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE, vfs);
	ck_assert_msg(rc == SQLITE_OK, "open %s via %s: %s", path,
	    vfs != NULL ? vfs : "default", sqlite3_errstr(rc));
	ck_assert_str_eq(q_text(db, "PRAGMA journal_mode=WAL", mode,
	    sizeof(mode)), "wal");
	exec(db, "PRAGMA synchronous=FULL");
	ck_assert_int_eq(q_int(db, "PRAGMA synchronous"), 2);
	return db;
}

/* A reader on the plain unix VFS, which the spy does not see. */
static sqlite3 *
reader_open(const char *path)
{
	sqlite3 *db = NULL;
	int rc;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix");
	ck_assert_msg(rc == SQLITE_OK, "open %s: %s", path,
	    sqlite3_errstr(rc));
	return db;
}

static void
db_close(sqlite3 *db)
{
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

static void
create_schema(sqlite3 *db)
{
	exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL,"
	    " x TEXT NOT NULL);"
	    "CREATE INDEX t_k ON t(k);");
	ck_assert_int_eq(q_int(db, "PRAGMA page_size"), PAGE_SIZE);
}

/* Row id's x: len letters that depend on id. */
static void
row_text(sqlite3_int64 id, size_t len, char *out)
{
	size_t j;

	for (j = 0; j < len; j++)
		out[j] = (char)('a' + (id * 7 + (sqlite3_int64)j * 3) % 26);
	out[len] = '\0';
}

/* Row id's k: scattered, so that rows land all over the index. */
static sqlite3_int64
row_key(sqlite3_int64 id)
{
	return id * 2654435761LL % 1000003;
}

/* Insert rows first .. first + n - 1 of len characters; returns the
 * first error (extended code), or SQLITE_OK. */
static int
insert_rows(sqlite3 *db, sqlite3_int64 first, int n, size_t len)
{
	static char text[8192];
	sqlite3_stmt *st = NULL;
	sqlite3_int64 id;
	int rc;

	ck_assert_uint_lt(len, sizeof(text));
	rc = sqlite3_prepare_v2(db, "INSERT INTO t(id, k, x) VALUES "
	    "(?, ?, ?)", -1, &st, NULL);
	ck_assert_int_eq(rc, SQLITE_OK);
	for (id = first; id < first + n; id++) {
		row_text(id, len, text);
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, row_key(id));
		sqlite3_bind_text(st, 3, text, (int)len, SQLITE_STATIC);
		if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
			rc = sqlite3_extended_errcode(db);
			break;
		}
		rc = SQLITE_OK;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	return rc;
}

/* db holds exactly rows 1 .. n, each of len characters, byte for byte,
 * and passes integrity_check. */
static void
check_rows(sqlite3 *db, sqlite3_int64 n, size_t len)
{
	static char want[8192];
	sqlite3_stmt *st = NULL;
	sqlite3_int64 id = 0;
	char ok[64];
	int rc;

	rc = sqlite3_prepare_v2(db, "SELECT id, k, x FROM t ORDER BY id",
	    -1, &st, NULL);
	ck_assert_int_eq(rc, SQLITE_OK);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		id++;
		ck_assert_int_eq(sqlite3_column_int64(st, 0), id);
		ck_assert_int_eq(sqlite3_column_int64(st, 1), row_key(id));
		row_text(id, len, want);
		ck_assert_int_eq(sqlite3_column_bytes(st, 2), (int)len);
		ck_assert_msg(memcmp(sqlite3_column_text(st, 2), want,
		    len) == 0, "row %lld differs", (long long)id);
	}
	ck_assert_msg(rc == SQLITE_DONE, "select: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	ck_assert_int_eq(id, n);
	ck_assert_str_eq(q_text(db, "PRAGMA integrity_check", ok,
	    sizeof(ok)), "ok");
}

/* The row count seen by a new reader of path. */
static sqlite3_int64
fresh_count(const char *path)
{
	sqlite3 *r = reader_open(path);
	sqlite3_int64 n;

	n = q_int(r, "SELECT count(*) FROM t");
	db_close(r);
	return n;
}

static void
copy_file(const char *from, const char *to)
{
	char buf[65536];
	ssize_t n;
	int in, out;

	in = open(from, O_RDONLY);
	ck_assert_msg(in != -1, "%s: %s", from, strerror(errno));
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_msg(out != -1, "%s: %s", to, strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(close(in), 0);
	ck_assert_int_eq(close(out), 0);
}

static off_t
file_size(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) == -1)
		return -1;
	return sb.st_size;
}

/*
 * As if the machine stopped now: copy the database and its WAL (not the
 * index, which SQLite rebuilds) to a new name, open the copy so SQLite
 * recovers it from the WAL, and check that it holds rows 1 .. n.
 */
static void
check_recovered(const char *path, sqlite3_int64 n, size_t len)
{
	char from[700], to[700], wal[700];
	sqlite3 *r;

	(void)snprintf(to, sizeof(to), "%s.copy", path);
	(void)snprintf(from, sizeof(from), "%s-wal", path);
	(void)snprintf(wal, sizeof(wal), "%s.copy-wal", path);
	ck_assert_int_gt(file_size(from), WAL_HDR);
	copy_file(path, to);
	copy_file(from, wal);
	r = reader_open(to);
	check_rows(r, n, len);
	db_close(r);
	(void)unlink(to);
	(void)unlink(wal);
}

/*
 * The last check of a test: rows 1 .. n, each of ROW_LEN characters,
 * for a plain reader and in a recovered copy; then db (the writer) is
 * closed, and a new reader counts n.
 */
static void
check_everywhere(sqlite3 *db, const char *path, sqlite3_int64 n)
{
	sqlite3 *r = reader_open(path);

	check_rows(r, n, ROW_LEN);
	db_close(r);
	check_recovered(path, n, ROW_LEN);
	db_close(db);
	ck_assert_int_eq(fresh_count(path), n);
}

/* How many times db's page cache spilled dirty pages (to the WAL). */
static int
spills(sqlite3 *db)
{
	int cur = 0, hi = 0;

	ck_assert_int_eq(sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_SPILL,
	    &cur, &hi, 0), SQLITE_OK);
	return cur;
}

/* The spy's number for the WAL file it saw last. */
static int
last_wal_fid(void)
{
	size_t i;

	for (i = nev; i > 0 && evs[i - 1].type != FT_WAL; i--)
		continue;
	ck_assert_msg(i > 0, "no WAL file seen");
	return evs[i - 1].fid;
}

/* ---- gathering ----------------------------------------------------- */

/* Append the pieces in which walbuf writes out len gathered bytes at
 * off to out (n used of max); the new count. */
static size_t
expect_flush(sqlite3_int64 off, sqlite3_int64 len, struct ev *out,
    size_t n, size_t max)
{
	sqlite3_int64 c;

	while (len > 0) {
		c = len < WB_CHUNK ? len : WB_CHUNK;
		ck_assert_uint_lt(n, max);
		memset(&out[n], 0, sizeof(out[n]));
		out[n].kind = EV_WRITE;
		out[n].off = off;
		out[n].len = (int)c;
		n++;
		off += c;
		len -= c;
	}
	return n;
}

/*
 * The writes walbuf should hand down when SQLite writes the frames in
 * [start, end) (each a header, then a page, back to back) and then
 * syncs: it gathers them until one would take it past WB_MAX and at the
 * sync, and writes each gathering out in pieces of WB_CHUNK.  Fills out
 * (at most max); returns the count.
 */
static size_t
expect_writes(sqlite3_int64 start, sqlite3_int64 end, struct ev *out,
    size_t max)
{
	sqlite3_int64 off = start, boff = start, len = 0;
	size_t n = 0;
	int amt, k = 0;

	ck_assert_int_eq((start - WAL_HDR) % FRAME, 0);
	ck_assert_int_eq((end - start) % FRAME, 0);
	while (off < end) {
		amt = k++ % 2 == 0 ? FRAME_HDR : PAGE_SIZE;
		if (len + amt > WB_MAX) {
			n = expect_flush(boff, len, out, n, max);
			boff = off;
			len = 0;
		}
		len += amt;
		off += amt;
	}
	return expect_flush(boff, len, out, n, max);
}

/* The writes in w[0 .. n - 1] are exactly those of want[0 .. nwant - 1]
 * (offsets and lengths), and each fits one unix write. */
static void
same_writes(const struct ev *w, size_t n, const struct ev *want,
    size_t nwant)
{
	size_t i;

	ck_assert_uint_eq(n, nwant);
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(w[i].kind, EV_WRITE);
		ck_assert_int_eq(w[i].off, want[i].off);
		ck_assert_int_eq(w[i].len, want[i].len);
		ck_assert_int_le(w[i].len, UNIX_MAX_WRITE);
		ck_assert_int_eq(w[i].rc, SQLITE_OK);
	}
}

/* What one commit did to the WAL. */
struct commit_obs {
	size_t		 nwal;		/* WAL events in the commit */
	int		 nwrites;	/* of which writes */
	int		 nsyncs;	/* of which syncs */
	sqlite3_int64	 start;		/* lowest byte written */
	sqlite3_int64	 end;		/* one past the highest */
	int		 ncommit;	/* commit frames written */
	int		 before;	/* WAL writes before COMMIT ran */
	int		 db_ckpt_writes; /* database writes of a checkpoint */
};

/*
 * Insert nrows rows of ROW_LEN in one transaction through vfs on a new
 * database path, check them through another connection and a recovered
 * copy, then checkpoint, and describe the commit in *o.  The commit's
 * WAL events are left in evo (at most max).
 */
static void
one_commit(const char *path, const char *vfs, int nrows,
    struct commit_obs *o, struct ev *evo, size_t max)
{
	sqlite3 *db, *r;
	size_t m0, m1, m2, i, n;

	memset(o, 0, sizeof(*o));
	db = db_open(path, vfs);
	create_schema(db);
	m0 = nev;
	exec(db, "BEGIN");
	ck_assert_int_eq(insert_rows(db, 1, nrows, ROW_LEN), SQLITE_OK);
	m1 = nev;
	exec(db, "COMMIT");
	m2 = nev;
	ev_dump(vfs != NULL ? "commit via walbuf" : "commit direct", m1,
	    m2);
	o->before = ev_count(m0, m1, EV_WRITE, FT_WAL, 0);
	n = ev_wal(m1, m2, evo, max);
	ck_assert_uint_lt(n, max);
	o->nwal = n;
	o->start = -1;
	for (i = 0; i < n; i++) {
		if (evo[i].kind == EV_SYNC)
			o->nsyncs++;
		if (evo[i].kind != EV_WRITE)
			continue;
		ck_assert_int_eq(evo[i].rc, SQLITE_OK);
		o->nwrites++;
		o->ncommit += evo[i].ncommit;
		if (o->start == -1 || evo[i].off < o->start)
			o->start = evo[i].off;
		if (evo[i].off + evo[i].len > o->end)
			o->end = evo[i].off + evo[i].len;
	}

	/* Every row is there for another connection, and in the files. */
	r = reader_open(path);
	check_rows(r, nrows, ROW_LEN);
	db_close(r);
	check_recovered(path, nrows, ROW_LEN);

	m0 = nev;
	exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	o->db_ckpt_writes = ev_count(m0, nev, EV_WRITE, FT_DB, 0);
	ck_assert_int_eq(ev_count(m0, nev, EV_WRITE, FT_WAL, 0), 0);
	ck_assert_int_eq(file_size(path) % PAGE_SIZE, 0);
	db_close(db);
	r = reader_open(path);
	check_rows(r, nrows, ROW_LEN);
	db_close(r);
}

/*
 * A commit of dozens of frames reaches the file system in a couple of
 * 64 KiB writes, back to back, right before the WAL's one sync, over
 * the same bytes that SQLite writes on its own with two calls per frame;
 * the database file sees the same checkpoint either way.
 */
START_TEST(test_gather_one_write)
{
	struct ev w[64], want[64], *d;
	struct commit_obs ow, od;
	char pw[700], pd[700];
	const char *name;
	size_t nwant;
	int frames, i;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(pw, sizeof(pw), "walbuf.db");
	test_path(pd, sizeof(pd), "direct.db");
	d = calloc(4096, sizeof(*d));
	ck_assert_ptr_nonnull(d);

	one_commit(pd, NULL, 400, &od, d, 4096);
	/* On its own SQLite writes the header and the page of each frame
	 * apart, in order, after the create's frames, then syncs once. */
	ck_assert_int_eq(od.before, 0);
	ck_assert_int_gt(od.start, WAL_HDR);
	ck_assert_int_eq((od.end - od.start) % FRAME, 0);
	frames = (int)((od.end - od.start) / FRAME);
	ck_assert_int_ge(frames, 36);
	ck_assert_int_eq(od.nwrites, 2 * frames);
	ck_assert_int_eq(od.nsyncs, 1);
	ck_assert_uint_eq(od.nwal, (size_t)od.nwrites + 1);
	ck_assert_int_eq(d[od.nwal - 1].kind, EV_SYNC);
	for (i = 0; i < od.nwrites; i++) {
		ck_assert_int_eq(d[i].kind, EV_WRITE);
		ck_assert_int_eq(d[i].len, i % 2 == 0 ? FRAME_HDR :
		    PAGE_SIZE);
		ck_assert_int_eq(d[i].off, i == 0 ? od.start :
		    d[i - 1].off + d[i - 1].len);
		ck_assert_int_eq(d[i].ncommit, i == od.nwrites - 2 ? 1 : 0);
	}

	one_commit(pw, name, 400, &ow, w, 64);
	/* Nothing reached the WAL before COMMIT; then the same bytes in a
	 * few writes, and the sync. */
	ck_assert_int_eq(ow.before, 0);
	ck_assert_int_eq(ow.start, od.start);
	ck_assert_int_eq(ow.end, od.end);
	nwant = expect_writes(od.start, od.end, want, 64);
	ck_assert_uint_eq(nwant, (size_t)((od.end - od.start + WB_CHUNK -
	    1) / WB_CHUNK));
	ck_assert_uint_eq(ow.nwal, nwant + 1);
	same_writes(w, nwant, want, nwant);
	ck_assert_int_eq(w[nwant].kind, EV_SYNC);
	ck_assert_int_eq(w[nwant].rc, SQLITE_OK);
	ck_assert_int_eq(w[nwant - 1].ncommit, 1);
	ck_assert_int_eq(ow.ncommit, 1);
	ck_assert_int_lt(ow.nwrites, od.nwrites / 10);

	/* The database file is the wrapped VFS's own either way. */
	ck_assert_int_gt(ow.db_ckpt_writes, 0);
	ck_assert_int_eq(ow.db_ckpt_writes, od.db_ckpt_writes);
	if (getenv("RS_WALBUF_DUMP") != NULL)
		fprintf(stderr, "%d frames: %d WAL writes via walbuf, %d "
		    "direct; checkpoint: %d database writes each\n", frames,
		    ow.nwrites, od.nwrites, ow.db_ckpt_writes);
	free(d);
}
END_TEST

/*
 * A commit larger than walbuf's buffer: it writes out WB_MAX (less what
 * would not fit) when the buffer is full, the rest at the sync, always
 * in pieces the unix VFS takes, back to back over the whole commit.
 */
START_TEST(test_big_commit_chunks)
{
	struct ev w[128], want[128];
	struct commit_obs o;
	char path[700];
	const char *name;
	size_t nwant, i;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(path, sizeof(path), "big.db");
	one_commit(path, name, 4000, &o, w, 128);
	ck_assert_int_eq(o.before, 0);
	ck_assert_int_gt(o.end - o.start, WB_MAX);
	nwant = expect_writes(o.start, o.end, want, 128);
	/* More than one gathering: a piece shorter than WB_CHUNK ends the
	 * first, before the end of the commit. */
	for (i = 0; i + 1 < nwant && want[i].len == WB_CHUNK; i++)
		continue;
	ck_assert_uint_lt(i, nwant - 1);
	ck_assert_int_gt(want[i].len, WB_CHUNK - PAGE_SIZE);
	ck_assert_uint_eq(o.nwal, nwant + 1);
	same_writes(w, nwant, want, nwant);
	ck_assert_int_eq(w[nwant].kind, EV_SYNC);
	ck_assert_int_eq(w[nwant - 1].ncommit, 1);
	ck_assert_int_eq(o.ncommit, 1);
	if (getenv("RS_WALBUF_DUMP") != NULL)
		fprintf(stderr, "big commit: %lld bytes in %zu writes\n",
		    (long long)(o.end - o.start), nwant);
}
END_TEST

/*
 * Many small commits with the default wal_autocheckpoint: checkpoints
 * run and the WAL restarts from its start.  For each commit, walbuf
 * hands down its frames as one gathering that holds the commit frame and
 * precedes the commit's sync, with nothing written after it; another
 * connection sees the rows at once; a copy of the files recovers them
 * all; and so does the database reopened.
 */
START_TEST(test_many_commits)
{
	struct ev want[16], *e, *fw;
	char path[700];
	const char *name;
	sqlite3 *db, *r;
	size_t m0, m1, i, j, n, nw, nwant, last_s;
	int c, restarts = 0, ckpt_writes = 0, wal_writes = 0;
	int rows = 4, ncommits = 300;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(path, sizeof(path), "many.db");
	e = calloc(4096, sizeof(*e));
	fw = calloc(4096, sizeof(*fw));
	ck_assert(e != NULL && fw != NULL);
	db = db_open(path, name);
	create_schema(db);
	ck_assert_int_eq(q_int(db, "PRAGMA wal_autocheckpoint"), 1000);
	r = reader_open(path);
	for (c = 0; c < ncommits; c++) {
		m0 = nev;
		exec(db, "BEGIN");
		ck_assert_int_eq(insert_rows(db, (sqlite3_int64)c * rows + 1,
		    rows, ROW_LEN), SQLITE_OK);
		exec(db, "COMMIT");
		m1 = nev;
		ckpt_writes += ev_count(m0, m1, EV_WRITE, FT_DB, 0);
		n = ev_wal(m0, m1, e, 4096);
		ck_assert_uint_lt(n, 4096);
		nw = 0;
		last_s = SIZE_MAX;
		for (i = 0; i < n; i++) {
			if (e[i].kind == EV_SYNC && nw > 0 &&
			    last_s == SIZE_MAX)
				last_s = i;
			if (e[i].kind != EV_WRITE)
				continue;
			ck_assert_int_eq(e[i].rc, SQLITE_OK);
			/* A write at 0 is the header of a restarted WAL,
			 * synced before any frame. */
			if (e[i].off == 0) {
				ck_assert_int_eq(e[i].len, WAL_HDR);
				ck_assert_uint_eq(nw, 0);
				ck_assert_uint_lt(i + 1, n);
				ck_assert_int_eq(e[i + 1].kind, EV_SYNC);
				restarts++;
				continue;
			}
			ck_assert_uint_eq(last_s, SIZE_MAX);
			fw[nw++] = e[i];
		}
		if (nw == 0 || last_s == SIZE_MAX)
			ev_dump("odd commit", m0, m1);
		ck_assert_msg(nw > 0, "commit %d: no frames written", c);
		/* The commit's sync follows its writes, and nothing is
		 * written to the WAL after that. */
		ck_assert_msg(last_s != SIZE_MAX, "commit %d: no sync after "
		    "the frames", c);
		for (j = last_s; j < n; j++)
			ck_assert_int_ne(e[j].kind, EV_WRITE);
		nwant = expect_writes(fw[0].off, fw[nw - 1].off +
		    fw[nw - 1].len, want, 16);
		same_writes(fw, nw, want, nwant);
		ck_assert_int_eq(fw[nw - 1].ncommit, 1);
		wal_writes += (int)nw;
		ck_assert_int_eq(q_int(r, "SELECT count(*) FROM t"),
		    (c + 1) * rows);
		ck_assert_int_eq(q_int(r, "SELECT sum(length(x)) FROM t"),
		    (c + 1) * rows * ROW_LEN);
	}
	/* The WAL was checkpointed and started over at least once. */
	ck_assert_int_gt(ckpt_writes, 0);
	ck_assert_int_ge(restarts, 1);
	if (getenv("RS_WALBUF_DUMP") != NULL)
		fprintf(stderr, "%d commits: %d frame writes, %d restarts, "
		    "%d checkpoint writes\n", ncommits, wal_writes, restarts,
		    ckpt_writes);
	check_rows(r, (sqlite3_int64)ncommits * rows, ROW_LEN);
	check_recovered(path, (sqlite3_int64)ncommits * rows, ROW_LEN);
	db_close(r);
	db_close(db);

	/* Reopened through walbuf, and by a plain connection. */
	db = db_open(path, name);
	check_rows(db, (sqlite3_int64)ncommits * rows, ROW_LEN);
	ck_assert_int_eq(insert_rows(db, (sqlite3_int64)ncommits * rows + 1,
	    rows, ROW_LEN), SQLITE_OK);
	check_recovered(path, (sqlite3_int64)(ncommits + 1) * rows,
	    ROW_LEN);
	db_close(db);
	r = reader_open(path);
	check_rows(r, (sqlite3_int64)(ncommits + 1) * rows, ROW_LEN);
	db_close(r);
	free(e);
	free(fw);
}
END_TEST

/*
 * A transaction larger than the page cache spills frames into the WAL
 * before COMMIT (one frame at a time), reads them back, rewrites some
 * of them in place (some still in walbuf's buffer) and fixes their
 * checksums at COMMIT: what SQLite reads and syncs must be what it
 * wrote, at the offsets it wrote it.
 */
START_TEST(test_spill_then_commit)
{
	char path[700];
	const char *name;
	sqlite3 *db;
	size_t m0, m1;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(path, sizeof(path), "spill.db");
	db = db_open(path, name);
	create_schema(db);
	exec(db, "PRAGMA cache_size=10");
	m0 = nev;
	exec(db, "BEGIN");
	ck_assert_int_eq(insert_rows(db, 1, 600, ROW_LEN), SQLITE_OK);
	/* Change every page again, and back. */
	exec(db, "UPDATE t SET x = upper(x) WHERE id % 7 = 0");
	exec(db, "UPDATE t SET x = lower(x) WHERE id % 7 = 0");
	m1 = nev;
	ck_assert_int_gt(spills(db), 0);
	ck_assert_int_gt(ev_count(m0, m1, EV_WRITE, FT_WAL, 0), 0);
	exec(db, "COMMIT");
	ev_dump("spill commit", m1, nev);
	ck_assert_int_ge(ev_count(m1, nev, EV_SYNC, FT_WAL, 0), 1);
	check_everywhere(db, path, 600);
}
END_TEST

/*
 * A large transaction rolled back leaves nothing to write: once
 * ROLLBACK returns, the connection writes nothing more to the WAL until
 * its next write transaction.  Frames held back past the rollback would
 * go down later (at the next read of the WAL, say) over frames that
 * another connection has committed since at the same offsets; so
 * walbuf.h asks for cache_spill=OFF, with which SQLite writes the WAL
 * only in a commit.  (With spilling on, this test fails: walbuf then
 * writes about 177 KiB of the rolled-back frames over the other
 * writer's, and the database reads as SQLITE_NOTADB.)
 */
START_TEST(test_spill_rollback_then_other_writer)
{
	char path[700];
	const char *name;
	sqlite3 *db, *other;
	size_t m1, m2;
	int fid;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(path, sizeof(path), "rollback.db");
	db = db_open(path, name);
	create_schema(db);
	ck_assert_int_eq(insert_rows(db, 1, 20, ROW_LEN), SQLITE_OK);
	exec(db, "PRAGMA cache_size=10");
	exec(db, "PRAGMA cache_spill=OFF");
	/* Everything committed in the database file, the WAL empty: the
	 * rollback has no reason to read the WAL. */
	exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	fid = last_wal_fid();
	m1 = nev;
	exec(db, "BEGIN");
	ck_assert_int_eq(insert_rows(db, 21, 600, ROW_LEN), SQLITE_OK);
	/* Far over the cache (about 190 KiB of pages), yet nothing
	 * spilled and nothing reached the WAL. */
	ck_assert_int_eq(spills(db), 0);
	ck_assert_int_eq(ev_count(m1, nev, EV_WRITE, FT_WAL, fid), 0);
	m1 = nev;
	exec(db, "ROLLBACK");
	m2 = nev;
	ev_dump("rollback", m1, m2);

	/* Another writer commits over the same part of the WAL. */
	other = db_open(path, "unix");
	ck_assert_int_eq(insert_rows(other, 21, 300, ROW_LEN), SQLITE_OK);
	db_close(other);

	/* The rolled-back connection reads: no write of its own. */
	m1 = nev;
	ck_assert_int_eq(q_int(db, "SELECT count(*) FROM t"), 320);
	ck_assert_int_eq(q_int(db, "SELECT sum(length(x)) FROM t"),
	    320 * ROW_LEN);
	ev_dump("read after rollback", m1, nev);
	ck_assert_int_eq(ev_count(m2, nev, EV_WRITE, FT_WAL, fid), 0);
	check_everywhere(db, path, 320);
}
END_TEST

/* ---- failures ------------------------------------------------------ */

/*
 * The spy fails one WAL write of a commit with SQLITE_FULL (even _i) or
 * SQLITE_IOERR_WRITE (odd _i): through walbuf, the first (_i 0, 1) or
 * second (2, 3) piece of the gathered frames, the first half of the
 * commit then on disk; without walbuf (4, 5), the first frame write,
 * for comparison.  COMMIT fails with that code, and the transaction is
 * gone for this connection, a new one and a recovered copy; the same
 * transaction then commits.
 */
START_TEST(test_write_failure)
{
	static const int codes[] = { SQLITE_FULL, SQLITE_IOERR_WRITE };
	int code = codes[_i % 2], skip = _i / 2 == 1 ? 1 : 0;
	bool gathered = _i < 4;
	char path[700];
	const char *name = NULL;
	sqlite3 *db;
	size_t m0, m1;
	char *err = NULL;
	int rc;

	if (gathered) {
		name = walbuf_vfs();
		ck_assert_ptr_nonnull(name);
	}
	test_path(path, sizeof(path), "fail.db");
	db = db_open(path, name);
	sqlite3_extended_result_codes(db, 1);
	create_schema(db);
	ck_assert_int_eq(insert_rows(db, 1, 10, ROW_LEN), SQLITE_OK);

	exec(db, "BEGIN");
	ck_assert_int_eq(insert_rows(db, 11, 200, ROW_LEN), SQLITE_OK);
	inj_rc = code;
	inj_skip = skip;
	m0 = nev;
	rc = sqlite3_exec(db, "COMMIT", NULL, NULL, &err);
	m1 = nev;
	ev_dump("failed commit", m0, m1);
	ck_assert_msg(rc == code, "COMMIT: %d (%s), want %d", rc,
	    err != NULL ? err : "", code);
	sqlite3_free(err);
	ck_assert_int_eq(inj_fired, 1);
	inj_rc = 0;
	/* The failed write was the last WAL write of the commit, and
	 * nothing was synced. */
	ck_assert_int_eq(ev_count(m0, m1, EV_WRITE, FT_WAL, 0), skip + 1);
	ck_assert_int_eq(ev_count(m0, m1, EV_SYNC, FT_WAL, 0), 0);
	/* SQLite rolled the transaction back. */
	ck_assert_int_eq(sqlite3_get_autocommit(db), 1);
	ck_assert_int_eq(q_int(db, "SELECT count(*) FROM t"), 10);
	ck_assert_int_eq(fresh_count(path), 10);
	check_recovered(path, 10, ROW_LEN);

	/* The same transaction again. */
	exec(db, "BEGIN");
	ck_assert_int_eq(insert_rows(db, 11, 200, ROW_LEN), SQLITE_OK);
	exec(db, "COMMIT");
	ck_assert_int_eq(inj_fired, 1);
	check_rows(db, 210, ROW_LEN);
	check_everywhere(db, path, 210);
}
END_TEST

/* ---- other files --------------------------------------------------- */

/*
 * Only the WAL file is walbuf's: the database file is the spy's own
 * object (and so is its shared-memory index, mapped through it), while
 * the WAL is a version-1 file of walbuf's that passes to the spy below.
 */
START_TEST(test_other_files_unwrapped)
{
	char path[700];
	const char *name;
	sqlite3 *db, *plain;
	sqlite3_file *fp;
	size_t m0;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(path, sizeof(path), "files.db");
	m0 = nev;
	db = db_open(path, name);
	create_schema(db);
	ck_assert_int_gt(ev_count(m0, nev, EV_SHMMAP, FT_DB, 0), 0);
	ck_assert_int_gt(ev_count(m0, nev, EV_WRITE, FT_WAL, 0), 0);

	fp = NULL;
	ck_assert_int_eq(sqlite3_file_control(db, "main",
	    SQLITE_FCNTL_FILE_POINTER, &fp), SQLITE_OK);
	ck_assert_ptr_nonnull(fp);
	ck_assert_ptr_eq(fp->pMethods, &spy_io);

	fp = NULL;
	ck_assert_int_eq(sqlite3_file_control(db, "main",
	    SQLITE_FCNTL_JOURNAL_POINTER, &fp), SQLITE_OK);
	ck_assert_ptr_nonnull(fp);
	ck_assert_ptr_nonnull(fp->pMethods);
	ck_assert_ptr_ne(fp->pMethods, &spy_io);
	ck_assert_int_eq(fp->pMethods->iVersion, 1);

	/* Through the spy alone, the WAL is the spy's. */
	plain = db_open(path, NULL);
	fp = NULL;
	ck_assert_int_eq(sqlite3_file_control(plain, "main",
	    SQLITE_FCNTL_JOURNAL_POINTER, &fp), SQLITE_OK);
	ck_assert_ptr_nonnull(fp);
	ck_assert_ptr_eq(fp->pMethods, &spy_io);
	db_close(plain);
	db_close(db);
}
END_TEST

/*
 * The WAL file's own methods, called directly on a live connection's
 * WAL past its last frame (where SQLite never looks): a write waits in
 * the buffer, and each other operation first writes it out, so that a
 * size includes it, a read returns it, a truncate cuts it, a write
 * elsewhere or a close comes after it.
 */
START_TEST(test_wal_file_ops)
{
	static const int ops[] = { EV_SIZE, EV_READ, EV_TRUNC, EV_FCNTL,
	    EV_WRITE, EV_SYNC };
	unsigned char data[100], back[100];
	sqlite3_int64 s0, sz;
	char path[700], wal[720];
	const char *name;
	sqlite3 *db, *keep;
	sqlite3_file *fp;
	size_t k, m0, m1;
	int fid, arg, op;

	name = walbuf_vfs();
	ck_assert_ptr_nonnull(name);
	test_path(path, sizeof(path), "ops.db");
	(void)snprintf(wal, sizeof(wal), "%s-wal", path);
	db = db_open(path, name);
	create_schema(db);
	ck_assert_int_eq(insert_rows(db, 1, 10, ROW_LEN), SQLITE_OK);
	fid = last_wal_fid();
	fp = NULL;
	ck_assert_int_eq(sqlite3_file_control(db, "main",
	    SQLITE_FCNTL_JOURNAL_POINTER, &fp), SQLITE_OK);
	ck_assert_ptr_nonnull(fp);
	ck_assert_ptr_nonnull(fp->pMethods);
	s0 = file_size(wal);
	ck_assert_int_gt(s0, WAL_HDR);
	for (k = 0; k < sizeof(data); k++)
		data[k] = (unsigned char)(k * 13 + 1);

	for (k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
		op = ops[k];
		m0 = nev;
		ck_assert_int_eq(fp->pMethods->xWrite(fp, data, 60, s0),
		    SQLITE_OK);
		ck_assert_int_eq(fp->pMethods->xWrite(fp, data + 60, 40,
		    s0 + 60), SQLITE_OK);
		ck_assert_int_eq(ev_count(m0, nev, EV_WRITE, FT_WAL, fid), 0);
		ck_assert_int_eq(file_size(wal), s0);
		m1 = nev;
		switch (op) {
		case EV_SIZE:
			ck_assert_int_eq(fp->pMethods->xFileSize(fp, &sz),
			    SQLITE_OK);
			ck_assert_int_eq(sz, s0 + 100);
			break;
		case EV_READ:
			memset(back, 0, sizeof(back));
			ck_assert_int_eq(fp->pMethods->xRead(fp, back, 100,
			    s0), SQLITE_OK);
			ck_assert_mem_eq(back, data, 100);
			break;
		case EV_TRUNC:
			ck_assert_int_eq(fp->pMethods->xTruncate(fp, s0 + 50),
			    SQLITE_OK);
			ck_assert_int_eq(file_size(wal), s0 + 50);
			break;
		case EV_FCNTL:
			arg = 0;
			(void)fp->pMethods->xFileControl(fp,
			    SQLITE_FCNTL_HAS_MOVED, &arg);
			ck_assert_int_eq(arg, 0);
			break;
		case EV_WRITE:
			/* Not where the gathered bytes end. */
			ck_assert_int_eq(fp->pMethods->xWrite(fp, data, 10,
			    s0 + 200), SQLITE_OK);
			ck_assert_int_eq(fp->pMethods->xFileSize(fp, &sz),
			    SQLITE_OK);
			ck_assert_int_eq(sz, s0 + 210);
			break;
		case EV_SYNC:
			ck_assert_int_eq(fp->pMethods->xSync(fp,
			    SQLITE_SYNC_FULL), SQLITE_OK);
			break;
		default:
			ck_abort();
		}
		ev_dump("direct op", m1, nev);
		/* The gathered 100 bytes went down first, in one write. */
		ck_assert_uint_gt(nev, m1 + 1);
		ck_assert_int_eq(evs[m1].kind, EV_WRITE);
		ck_assert_int_eq(evs[m1].fid, fid);
		ck_assert_int_eq(evs[m1].off, s0);
		ck_assert_int_eq(evs[m1].len, 100);
		ck_assert_int_eq(evs[m1 + 1].kind, op);
		ck_assert_int_eq(evs[m1 + 1].fid, fid);
		if (op == EV_WRITE)
			ck_assert_int_eq(evs[m1 + 1].off, s0 + 200);
		ck_assert_int_eq(fp->pMethods->xTruncate(fp, s0), SQLITE_OK);
		ck_assert_int_eq(file_size(wal), s0);
	}

	/* A close writes the buffer out too.  (With another connection
	 * open, closing this one neither checkpoints nor reads the WAL.) */
	keep = reader_open(path);
	ck_assert_int_eq(q_int(keep, "SELECT count(*) FROM t"), 10);
	ck_assert_int_eq(fp->pMethods->xWrite(fp, data, 100, s0), SQLITE_OK);
	m1 = nev;
	db_close(db);
	ev_dump("close", m1, nev);
	ck_assert_int_eq(ev_count(m1, nev, EV_READ, FT_WAL, fid), 0);
	for (k = 0; m1 < nev; m1++) {
		if (evs[m1].fid != fid)
			continue;
		ck_assert_uint_lt(k, 2);
		ck_assert_int_eq(evs[m1].kind, k == 0 ? EV_WRITE : EV_CLOSE);
		if (k++ == 0) {
			ck_assert_int_eq(evs[m1].off, s0);
			ck_assert_int_eq(evs[m1].len, 100);
		}
	}
	ck_assert_uint_eq(k, 2);
	ck_assert_int_eq(file_size(wal), s0 + 100);
	/* Bytes past the last frame change nothing. */
	check_rows(keep, 10, ROW_LEN);
	db_close(keep);
	ck_assert_int_eq(fresh_count(path), 10);
}
END_TEST

/* ---- naming and registration --------------------------------------- */

/*
 * One layer per wrapped default: the same name while the default stays,
 * another for another default, the first again when it comes back; the
 * layer is registered, wraps the default of its time and never becomes
 * the default itself; a layer that is the default is not wrapped again.
 */
START_TEST(test_vfs_names)
{
	const char *a, *a2, *b, *c;
	char na[64], path[700];
	sqlite3_vfs *va, *vb;
	sqlite3 *db;
	size_t m0;

	a = walbuf_vfs();
	ck_assert_ptr_nonnull(a);
	(void)snprintf(na, sizeof(na), "%s", a);
	a2 = walbuf_vfs();
	ck_assert_ptr_nonnull(a2);
	ck_assert_str_eq(a2, na);
	ck_assert_ptr_eq(a2, a);
	va = sqlite3_vfs_find(a);
	ck_assert_ptr_nonnull(va);
	ck_assert_str_eq(va->zName, na);
	ck_assert_ptr_eq(va->pAppData, &spies[0].vfs);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), &spies[0].vfs);
	ck_assert_ptr_ne(va, &spies[0].vfs);

	spy_make_default(1);
	b = walbuf_vfs();
	ck_assert_ptr_nonnull(b);
	ck_assert_str_ne(b, na);
	vb = sqlite3_vfs_find(b);
	ck_assert_ptr_nonnull(vb);
	ck_assert_ptr_ne(vb, va);
	ck_assert_ptr_eq(vb->pAppData, &spies[1].vfs);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), &spies[1].vfs);

	/* A database through b reaches spy 1, not spy 0. */
	test_path(path, sizeof(path), "names.db");
	m0 = nev;
	db = db_open(path, b);
	create_schema(db);
	db_close(db);
	ck_assert_int_gt(ev_count(m0, nev, EV_WRITE, FT_WAL, 0), 0);
	for (; m0 < nev; m0++)
		ck_assert_int_eq(evs[m0].spy, 1);

	spy_make_default(0);
	ck_assert_str_eq(walbuf_vfs(), na);

	/* The layer itself as the default is not wrapped again. */
	ck_assert_int_eq(sqlite3_vfs_register(va, 1), SQLITE_OK);
	c = walbuf_vfs();
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c, na);
	spy_make_default(0);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), &spies[0].vfs);
}
END_TEST

/*
 * walbuf registers at most four layers; past that, and for a default VFS
 * of version 1 (no xCurrentTimeInt64), it answers NULL, while the
 * layers it has keep their names.
 */
START_TEST(test_vfs_limit)
{
	static sqlite3_vfs extra[4];
	static char names[4][16];
	const char *seen[8], *a, *got;
	size_t nseen = 0, i, k;
	int nnull = 0;

	a = walbuf_vfs();
	ck_assert_ptr_nonnull(a);
	seen[nseen++] = a;

	spy_make_default(2);
	ck_assert_ptr_null(walbuf_vfs());

	/* Copies of spy 0 under other names: other defaults. */
	for (k = 0; k < 4; k++) {
		extra[k] = spies[0].vfs;
		(void)snprintf(names[k], sizeof(names[k]), "rs-extra%zu", k);
		extra[k].zName = names[k];
		ck_assert_int_eq(sqlite3_vfs_register(&extra[k], 1),
		    SQLITE_OK);
		got = walbuf_vfs();
		if (got == NULL) {
			nnull++;
			continue;
		}
		ck_assert_int_eq(nnull, 0);
		for (i = 0; i < nseen; i++)
			ck_assert_str_ne(got, seen[i]);
		ck_assert_ptr_eq(sqlite3_vfs_find(got)->pAppData, &extra[k]);
		seen[nseen++] = got;
	}
	/* Four layers in all, so at least one default went without.  A
	 * forked test starts with none; otherwise earlier tests may have
	 * made some. */
	if (forked())
		ck_assert_uint_eq(nseen, 4);
	else
		ck_assert_uint_le(nseen, 4);
	ck_assert_int_ge(nnull, 1);
	spy_make_default(0);
	ck_assert_str_eq(walbuf_vfs(), seen[0]);
	for (k = 0; k < 4; k++)
		ck_assert_int_eq(sqlite3_vfs_unregister(&extra[k]),
		    SQLITE_OK);
}
END_TEST

static Suite *
walbuf_suite(void)
{
	Suite *s = suite_create("walbuf");
	TCase *tc = tcase_create("walbuf");

	tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
	tcase_add_checked_fixture(tc, spy_setup, NULL);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_gather_one_write);
	tcase_add_test(tc, test_big_commit_chunks);
	tcase_add_test(tc, test_many_commits);
	tcase_add_test(tc, test_spill_then_commit);
	tcase_add_loop_test(tc, test_write_failure, 0, 6);
	tcase_add_test(tc, test_other_files_unwrapped);
	tcase_add_test(tc, test_wal_file_ops);
	tcase_add_test(tc, test_vfs_names);
	tcase_add_test(tc, test_vfs_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("rollback");
	tcase_add_unchecked_fixture(tc, case_setup, case_teardown);
	tcase_add_checked_fixture(tc, spy_setup, NULL);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_spill_rollback_then_other_writer);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(walbuf_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
