/*
 * check_power_loss.c: the store under power loss (issue #7).
 *
 * check_crash.c kills the daemon with kill -9, which spares the kernel's
 * page cache: every write SQLite made survives it.  A power cut does not
 * spare it: what fsync has not made durable may be lost, whole or in
 * part.  This test shows that the store's commit protocol (WAL with
 * synchronous=FULL, src/adapters/store_sqlite.c) never loses a commit it
 * acknowledged when that happens.
 *
 * The disk model.  A test VFS, "powercut", is registered as SQLite's
 * default before any store is opened, so the production store runs
 * unchanged through store.h.  It wraps the "unix" VFS and passes every
 * write through to the real files, but for each database, WAL and
 * rollback journal it keeps an undo record of every write, truncation
 * and size change made since that file's last xSync (the bytes
 * overwritten, the size before); xSync forgets them.  The directory is
 * modelled too: a file created and a file deleted since the directory
 * was last synced are pending.  SQLite 3.40's unix VFS syncs the
 * directory on the first xSync of a WAL or journal it opened with
 * SQLITE_OPEN_CREATE, and in xDelete when asked to (it is not, for a WAL
 * deleted at close nor for a rollback journal in DELETE mode); the shim
 * does the same bookkeeping.  A deleted file is kept through a hard link
 * in a stash directory, so that it can come back.  The shim does not
 * spend a real fsync on a sync (the model decides what survives; set
 * RS_POWER_REAL_FSYNC=1 to pass them through).
 *
 * A round.  Three connections, as in the daemon: the webhook writer
 * (group commits exactly as run_batch() in src/core/ingest.c: BEGIN,
 * store_apply_event() per webhook, COMMIT), the backfill's (its start,
 * pages through store_backfill_page() and store_backfill_pages(), its
 * finish) and an exporter's (lazy_sync, as src/core/export.c opens it:
 * it reads the change log and records deliveries).  Between them: CLI
 * runs that open a connection of their own for one store_apply_refund(),
 * readiness probes, and now and then a restart (every connection closed,
 * which checkpoints and empties the WAL, and opened again).  Webhooks
 * are new versions, older versions under new event ids, revisions that
 * skip ahead, exact duplicates, and AppInstalled events.  Some rounds
 * lower wal_autocheckpoint on the connections (the daemon keeps
 * SQLite's 1000 pages) so that checkpoints and WAL restarts happen
 * within a round.  Every call that returned success is recorded as
 * acknowledged.
 *
 * The cut.  At a random mutating operation (create, write, truncate,
 * sync, delete, size hint; in a quarter of the rounds, the first sync
 * from a random point on) the power goes: that operation and every
 * later one fail with an I/O error (reads too), so nothing more reaches
 * the files.  A few more steps run (what they get acknowledged, a
 * commit that needed no write, is checked like the rest) and the
 * connections are closed (closing writes nothing: every write fails).
 * Then the loss: for each file its unsynced records
 * are undone in reverse order, each write split at 512-byte sector
 * boundaries and each piece kept, lost or torn (a prefix or a suffix of
 * it kept: SQLite assumes no atomic sector, only linear writes); space a
 * lost write had added holds zeros or garbage; the file's size becomes,
 * in some rounds, one it had at some moment since its last sync.  The
 * pending directory operations survive as a prefix in order (a journaled
 * file system), the rest is undone: a new file vanishes, a deleted one
 * comes back.  The -shm file is sometimes overwritten with garbage.
 * How much is lost varies from round to round (nothing, a quarter, half,
 * most, everything unsynced).
 *
 * The checks.  store_open() on the plain "unix" VFS recovers the
 * database, then: PRAGMA integrity_check is ok; every acknowledged event
 * id is in webhook_events; every acknowledged refund is stored at its
 * newest acknowledged revision or a newer one; every acknowledged
 * applied version is in the change log; every acknowledged install and
 * backfill page and finish is there; the change log has no gap
 * (count = max(seq), min(seq) = 1); every stored refund's version is in
 * the change log; the exporter's position and delivery log point at no
 * change the log lost; and new commits (webhooks, a CLI upsert, a
 * backfill page, a probe) succeed and read back.  What was found is
 * taken as the new durable state, and the next round cuts the same
 * database again (eight rounds per database), so earlier acknowledged
 * data is checked again after every later cut.  A quarter of the time
 * the power goes twice before the checks: the second round recovers
 * the database through the shim and writes after what the first cut
 * left (a torn WAL tail, say) before its own cut.
 *
 * That the checks can fail: three more tests run the same rounds where
 * durability is missing on purpose, and each must find acknowledged
 * commits lost: a shim that treats every xSync as if it had not
 * happened, a shim that never makes a directory entry durable, and the
 * store's own lazy_sync (synchronous=NORMAL) on every connection.
 *
 * RS_POWER_SEED=N repeats a run (the seed is printed first; the
 * controls use N + 1); RS_POWER_CUTS=N changes the number of cuts (200);
 * RS_KEEP_TMP=1 keeps the files (a failing run keeps its last database
 * anyway).  It prints "power: seed=N cuts=N ... acknowledged=N found=N
 * lost=0 ...", then where the cuts fell and what they destroyed.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
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
#include "domain/event.h"
#include "domain/json.h"
#include "domain/refund.h"
#include "util/clock.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define PL_SECTOR	512	/* the unit of a lost or torn write */
#define PL_CUTS		200	/* cuts per run (RS_POWER_CUTS) */
#define PL_LINE_ROUNDS	8	/* rounds (cuts) per database */
#define PL_MAX_STEPS	4000	/* steps of a round that is never cut */
#define PL_AFTER_CUT	3	/* steps run after the cut */
#define PL_BUSY_MS	20
#define PL_NREF		64	/* refund ids per database */
#define PL_NAPP		4	/* app instances (AppInstalled) */
#define PL_BATCH_MAX	12	/* webhooks per group commit */
#define PL_PAGE_MAX	16	/* refunds per backfill page */
#define PL_BF_PAGES	6	/* pages per backfill run */
#define PL_PAD_MAX	700	/* filler in a refund body */
#define PL_EXPORT_MAX	32	/* changes per export step */
#define PL_EXPORTER	"pl-export"
#define PL_CONTROL_CUTS	16	/* cuts per control */

/* ---- a random number generator that a seed repeats (splitmix64) ---- */

struct pl_rng {
	uint64_t	s;
};

static uint64_t
rng_next(struct pl_rng *r)
{
	uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* A number in [0, n); 0 if n is 0. */
static uint64_t
rng_below(struct pl_rng *r, uint64_t n)
{
	return n == 0 ? 0 : rng_next(r) % n;
}

static bool
rng_pct(struct pl_rng *r, unsigned pct)
{
	return rng_below(r, 100) < pct;
}

/* ---- the power-cut VFS ------------------------------------------------ */

/* The operations a cut can land on, and the files they touch. */
enum pl_op {
	PL_OP_CREATE, PL_OP_WRITE, PL_OP_TRUNCATE, PL_OP_SYNC, PL_OP_DELETE,
	PL_OP_GROW, PL_NOPS
};
static const char *const pl_op_names[PL_NOPS] = {
	"create", "write", "truncate", "sync", "delete", "grow"
};
enum pl_ftype {
	PL_FT_DB, PL_FT_WAL, PL_FT_JOURNAL, PL_NFT
};
static const char *const pl_ft_names[PL_NFT] = { "db", "wal", "journal" };

/* What the workload was doing when the power went. */
enum pl_phase {
	PL_PH_OPEN, PL_PH_INGEST, PL_PH_BACKFILL, PL_PH_CLI, PL_PH_EXPORT,
	PL_PH_PROBE, PL_PH_RESTART, PL_NPHASES
};
static const char *const pl_phase_names[PL_NPHASES] = {
	"open", "ingest", "backfill", "cli", "export", "probe", "restart"
};

/* One change to a file since its last sync, to undo. */
struct pl_rec {
	bool		 write;		/* a write; else a size change */
	int64_t		 off;		/* the bytes it changed: */
	int64_t		 len;		/* [off, off + len) */
	unsigned char	*before;	/* what [off, min(off + len,
					   before_size)) held; may be NULL */
	int64_t		 before_size;	/* the file's size before */
	int64_t		 after_size;	/* and after */
};

/* A file (an inode) the shim tracks. */
struct pl_obj {
	char		*name;		/* its name, as SQLite knows it */
	char		*path;		/* where it is: name, or the stash */
	int		 ftype;		/* enum pl_ftype */
	bool		 deleted;	/* xDelete'd: path is in the stash */
	bool		 gone;		/* its deletion is durable, or its
					   creation was lost: ignore it */
	int64_t		 size;		/* now */
	int64_t		 synced_size;	/* at its last sync */
	struct pl_rec	*recs;		/* since then, oldest first */
	size_t		 nrecs;
	struct pl_obj	*next;
};

/* A directory operation not yet made durable. */
struct pl_nsop {
	bool		 create;	/* else a delete */
	struct pl_obj	*obj;
};

/* What SQLite holds for an open file. */
struct pl_file {
	sqlite3_file	 base;		/* first: SQLite's view */
	sqlite3_file	*real;		/* the unix VFS's file, just after */
	struct pl_obj	*obj;		/* NULL: not tracked (temp files) */
	bool		 dirsync;	/* its first xSync syncs the dir */
};

struct pl_stats {
	int64_t	 cut_at[PL_NFT][PL_NOPS];	/* where the power went */
	int64_t	 cut_in[PL_NPHASES];	/* and during what */
	int64_t	 cut_idle;	/* rounds the workload ended uncut */
	int64_t	 kept;		/* 512-byte pieces of unsynced writes */
	int64_t	 lost;
	int64_t	 torn;
	int64_t	 resized;	/* files left at another size */
	int64_t	 vanished;	/* new files whose entry was lost */
	int64_t	 reappeared;	/* deleted files that came back */
	int64_t	 syncs;
	int64_t	 dirsyncs;
	int64_t	 shm_garbled;
};

/* How a round's power cut treats what was not synced. */
struct pl_profile {
	unsigned	 lose_pct;	/* a piece is lost... */
	unsigned	 tear_pct;	/* ...or, that often, torn */
	bool		 garbage;	/* lost new space: random bytes, not
					   zeros */
	unsigned	 resize_pct;	/* the size is an older one */
};

static struct {
	sqlite3_vfs	 vfs;		/* the shim */
	sqlite3_vfs	*real;		/* "unix" */
	struct pl_obj	*objs;
	struct pl_nsop	*ns;		/* pending directory operations */
	size_t		 nns;
	char		*stash;		/* where deleted files wait */
	unsigned	 nstash;
	uint64_t	 ops;		/* mutating operations this round */
	uint64_t	 cut_at;	/* the one the power goes at; 0: none */
	bool		 cut_on_sync;	/* no: the first sync from cut_at on */
	bool		 cut;		/* the power is off */
	enum pl_phase	 phase;
	bool		 ignore_sync;	/* controls: xSync makes nothing */
	bool		 ignore_dirsync; /* durable, the directory neither */
	bool		 real_fsync;
	struct pl_stats	 st;
} pl;


/* "seed S lineage L round R", for messages. */
static char pl_where[128];

static int
pl_ftype_of(int flags)
{
	switch (flags & 0x0FFF00) {
	case SQLITE_OPEN_MAIN_DB:
		return PL_FT_DB;
	case SQLITE_OPEN_WAL:
		return PL_FT_WAL;
	case SQLITE_OPEN_MAIN_JOURNAL:
	case SQLITE_OPEN_SUPER_JOURNAL:
		return PL_FT_JOURNAL;
	default:
		return -1;
	}
}

/* The unix VFS syncs the directory on the first xSync of these when it
 * opened them with SQLITE_OPEN_CREATE (os_unix.c, isNewJrnl). */
static bool
pl_dirsync_on_sync(int flags)
{
	int type = flags & 0x0FFF00;

	return (flags & SQLITE_OPEN_CREATE) != 0 &&
	    (type == SQLITE_OPEN_WAL || type == SQLITE_OPEN_MAIN_JOURNAL ||
	    type == SQLITE_OPEN_SUPER_JOURNAL);
}

static int
pl_ftype_of_name(const char *name)
{
	size_t n = strlen(name);

	if (n >= 4 && strcmp(name + n - 4, "-wal") == 0)
		return PL_FT_WAL;
	if (n >= 8 && strcmp(name + n - 8, "-journal") == 0)
		return PL_FT_JOURNAL;
	return PL_FT_DB;
}

/*
 * Count one mutating operation; true if the power is off (it just went,
 * or went before).
 */
static bool
pl_tick(int ftype, enum pl_op op)
{
	if (pl.cut)
		return true;
	pl.ops++;
	if (pl.cut_at != 0 && pl.ops >= pl.cut_at &&
	    (!pl.cut_on_sync || op == PL_OP_SYNC)) {
		pl.cut = true;
		pl.st.cut_at[ftype][op]++;
		pl.st.cut_in[pl.phase]++;
		return true;
	}
	return false;
}

static struct pl_obj *
pl_obj_find(const char *name)
{
	struct pl_obj *o;

	for (o = pl.objs; o != NULL; o = o->next)
		if (!o->deleted && !o->gone && strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

/* A file first seen now: what it holds is durable (the round's start). */
static struct pl_obj *
pl_obj_new(const char *name, int ftype, int64_t size)
{
	struct pl_obj *o = xcalloc(1, sizeof(*o));

	o->name = xstrdup(name);
	o->path = xstrdup(name);
	o->ftype = ftype;
	o->size = o->synced_size = size;
	o->next = pl.objs;
	pl.objs = o;
	return o;
}

static void
pl_obj_forget_recs(struct pl_obj *o)
{
	size_t i;

	for (i = 0; i < o->nrecs; i++)
		free(o->recs[i].before);
	free(o->recs);
	o->recs = NULL;
	o->nrecs = 0;
}

/* Read n bytes at off through the real file (within its size). */
static void
pl_read_real(sqlite3_file *real, unsigned char *buf, int64_t n, int64_t off)
{
	int64_t done = 0, k;
	int rc;

	while (done < n) {
		k = n - done > (1 << 20) ? (1 << 20) : n - done;
		rc = real->pMethods->xRead(real, buf + done, (int)k,
		    off + done);
		if (rc != SQLITE_OK)
			ck_abort_msg("%s: shim: reading %lld bytes at %lld for "
			    "an undo record: sqlite code %d", pl_where,
			    (long long)k, (long long)(off + done), rc);
		done += k;
	}
}

/*
 * Record that [off, off + len) of o is about to change and its size to
 * become after; the bytes it holds now are read through real (NULL: no
 * bytes to keep, the range lies past the end).
 */
static void
pl_record(struct pl_obj *o, sqlite3_file *real, bool write, int64_t off,
    int64_t len, int64_t after)
{
	struct pl_rec *rec;
	int64_t end = off + len < o->size ? off + len : o->size;

	o->recs = xreallocarray(o->recs, o->nrecs + 1, sizeof(*o->recs));
	rec = &o->recs[o->nrecs++];
	memset(rec, 0, sizeof(*rec));
	rec->write = write;
	rec->off = off;
	rec->len = len;
	rec->before_size = o->size;
	rec->after_size = after;
	if (real != NULL && end > off) {
		rec->before = xmalloc((size_t)(end - off));
		pl_read_real(real, rec->before, end - off, off);
	}
}

static void
pl_ns_push(bool create, struct pl_obj *o)
{
	pl.ns = xreallocarray(pl.ns, pl.nns + 1, sizeof(*pl.ns));
	pl.ns[pl.nns].create = create;
	pl.ns[pl.nns].obj = o;
	pl.nns++;
}

/* The directory was synced: every pending operation is durable. */
static void
pl_dir_synced(void)
{
	size_t i;

	pl.st.dirsyncs++;
	for (i = 0; i < pl.nns; i++) {
		struct pl_obj *o = pl.ns[i].obj;

		if (!pl.ns[i].create && o->deleted && !o->gone) {
			(void)unlink(o->path);
			o->gone = true;
		}
	}
	pl.nns = 0;
}

/* ---- the file methods ---- */

static int
pl_close(sqlite3_file *file)
{
	struct pl_file *f = (struct pl_file *)file;

	/* Closing writes nothing, with the power on or off. */
	return f->real->pMethods->xClose(f->real);
}

static int
pl_read(sqlite3_file *file, void *buf, int n, sqlite3_int64 off)
{
	struct pl_file *f = (struct pl_file *)file;

	if (pl.cut)
		return SQLITE_IOERR_READ;
	return f->real->pMethods->xRead(f->real, buf, n, off);
}

static int
pl_write(sqlite3_file *file, const void *buf, int n, sqlite3_int64 off)
{
	struct pl_file *f = (struct pl_file *)file;
	struct pl_obj *o = f->obj;
	int rc;

	if (o == NULL)
		return pl.cut ? SQLITE_IOERR_WRITE :
		    f->real->pMethods->xWrite(f->real, buf, n, off);
	if (pl_tick(o->ftype, PL_OP_WRITE))
		return SQLITE_IOERR_WRITE;
	pl_record(o, f->real, true, off, n,
	    off + n > o->size ? off + n : o->size);
	rc = f->real->pMethods->xWrite(f->real, buf, n, off);
	if (rc == SQLITE_OK && off + n > o->size)
		o->size = off + n;
	return rc;
}

static int
pl_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct pl_file *f = (struct pl_file *)file;
	struct pl_obj *o = f->obj;
	sqlite3_int64 now = 0;
	int rc;

	if (o == NULL)
		return pl.cut ? SQLITE_IOERR_TRUNCATE :
		    f->real->pMethods->xTruncate(f->real, size);
	if (pl_tick(o->ftype, PL_OP_TRUNCATE))
		return SQLITE_IOERR_TRUNCATE;
	if (size < o->size)
		pl_record(o, f->real, false, size, o->size - size, size);
	else if (size > o->size)
		pl_record(o, NULL, false, o->size, size - o->size, size);
	rc = f->real->pMethods->xTruncate(f->real, size);
	if (f->real->pMethods->xFileSize(f->real, &now) == SQLITE_OK)
		o->size = now;
	return rc;
}

static int
pl_sync(sqlite3_file *file, int flags)
{
	struct pl_file *f = (struct pl_file *)file;
	struct pl_obj *o = f->obj;
	int rc = SQLITE_OK;

	if (o == NULL) {
		if (pl.cut)
			return SQLITE_IOERR_FSYNC;
		return pl.real_fsync ?
		    f->real->pMethods->xSync(f->real, flags) : SQLITE_OK;
	}
	if (pl_tick(o->ftype, PL_OP_SYNC))
		return SQLITE_IOERR_FSYNC;
	if (pl.real_fsync &&
	    (rc = f->real->pMethods->xSync(f->real, flags)) != SQLITE_OK)
		return rc;
	pl.st.syncs++;
	if (!pl.ignore_sync) {
		pl_obj_forget_recs(o);
		o->synced_size = o->size;
	}
	if (f->dirsync) {
		f->dirsync = false;
		if (!pl.ignore_dirsync)
			pl_dir_synced();
	}
	return SQLITE_OK;
}

static int
pl_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct pl_file *f = (struct pl_file *)file;

	if (pl.cut)
		return SQLITE_IOERR_FSTAT;
	return f->real->pMethods->xFileSize(f->real, size);
}

static int
pl_lock(sqlite3_file *file, int level)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xLock(f->real, level);
}

static int
pl_unlock(sqlite3_file *file, int level)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xUnlock(f->real, level);
}

static int
pl_check_reserved(sqlite3_file *file, int *out)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

/*
 * A size hint may grow the file without a write (the unix VFS does when
 * it has a chunk size or maps the file): record any size it changes.
 */
static int
pl_file_control(sqlite3_file *file, int op, void *arg)
{
	struct pl_file *f = (struct pl_file *)file;
	struct pl_obj *o = f->obj;
	sqlite3_int64 now = 0;
	int64_t before;
	int rc;

	if (op != SQLITE_FCNTL_SIZE_HINT || o == NULL)
		return f->real->pMethods->xFileControl(f->real, op, arg);
	if (pl_tick(o->ftype, PL_OP_GROW))
		return SQLITE_IOERR_TRUNCATE;
	before = o->size;
	rc = f->real->pMethods->xFileControl(f->real, op, arg);
	if (f->real->pMethods->xFileSize(f->real, &now) == SQLITE_OK &&
	    now != before) {
		if (now < before)
			ck_abort_msg("%s: shim: a size hint shrank %s",
			    pl_where, o->name);
		pl_record(o, NULL, false, before, now - before, now);
		o->size = now;
	}
	return rc;
}

static int
pl_sector_size(sqlite3_file *file)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xSectorSize(f->real);
}

static int
pl_device_chars(sqlite3_file *file)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* The -shm file is not durable state (SQLite rebuilds it): passed on. */
static int
pl_shm_map(sqlite3_file *file, int pg, int pgsz, int extend,
    void volatile **pp)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}

static int
pl_shm_lock(sqlite3_file *file, int off, int n, int flags)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xShmLock(f->real, off, n, flags);
}

static void
pl_shm_barrier(sqlite3_file *file)
{
	struct pl_file *f = (struct pl_file *)file;

	f->real->pMethods->xShmBarrier(f->real);
}

static int
pl_shm_unmap(sqlite3_file *file, int del)
{
	struct pl_file *f = (struct pl_file *)file;

	return f->real->pMethods->xShmUnmap(f->real, del);
}

/* Version 2: no xFetch, so SQLite never maps a file (mmap_size is 0 in
 * the store anyway) and every read and write comes through here. */
static const sqlite3_io_methods pl_io = {
	2,
	pl_close,
	pl_read,
	pl_write,
	pl_truncate,
	pl_sync,
	pl_file_size,
	pl_lock,
	pl_unlock,
	pl_check_reserved,
	pl_file_control,
	pl_sector_size,
	pl_device_chars,
	pl_shm_map,
	pl_shm_lock,
	pl_shm_barrier,
	pl_shm_unmap,
	NULL,
	NULL
};

/* ---- the VFS methods ---- */

static int
pl_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
    int *outflags)
{
	struct pl_file *f = (struct pl_file *)file;
	int ftype = name != NULL ? pl_ftype_of(flags) : -1;
	bool existed = true;
	sqlite3_int64 size = 0;
	struct pl_obj *o;
	int rc;

	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	if (pl.cut)
		return SQLITE_CANTOPEN;
	if (ftype >= 0 && (flags & SQLITE_OPEN_CREATE) != 0) {
		existed = access(name, F_OK) == 0;
		if (!existed && pl_tick(ftype, PL_OP_CREATE))
			return SQLITE_CANTOPEN;
	}
	rc = pl.real->xOpen(pl.real, name, f->real, flags, outflags);
	if (rc != SQLITE_OK)
		return rc;
	f->base.pMethods = &pl_io;
	if (ftype < 0)
		return SQLITE_OK;
	if ((o = pl_obj_find(name)) != NULL && !existed) {
		/* Known, yet it was not there: it went behind our back. */
		ck_abort_msg("%s: shim: %s vanished", pl_where, name);
	}
	if (o == NULL) {
		if (f->real->pMethods->xFileSize(f->real, &size) != SQLITE_OK)
			ck_abort_msg("%s: shim: size of %s", pl_where, name);
		o = pl_obj_new(name, ftype, size);
	}
	f->obj = o;
	if (!existed)
		pl_ns_push(true, o);
	f->dirsync = pl_dirsync_on_sync(flags);
	return SQLITE_OK;
}

static int
pl_delete(sqlite3_vfs *vfs, const char *name, int dirsync)
{
	struct pl_obj *o = pl_obj_find(name);
	struct stat sb;
	char *stash;
	int rc;

	if (pl_tick(o != NULL ? o->ftype : pl_ftype_of_name(name),
	    PL_OP_DELETE))
		return SQLITE_IOERR_DELETE;
	if (o == NULL) {
		if (stat(name, &sb) == -1)
			return pl.real->xDelete(pl.real, name, 0);
		o = pl_obj_new(name, pl_ftype_of_name(name),
		    (int64_t)sb.st_size);
	}
	stash = xasprintf("%s/%u", pl.stash, pl.nstash++);
	if (link(name, stash) == -1)
		ck_abort_msg("%s: shim: link %s %s: %s", pl_where, name,
		    stash, strerror(errno));
	rc = pl.real->xDelete(pl.real, name, pl.real_fsync ? dirsync : 0);
	if (rc != SQLITE_OK) {
		(void)unlink(stash);
		free(stash);
		return rc;
	}
	free(o->path);
	o->path = stash;
	o->deleted = true;
	pl_ns_push(false, o);
	if ((dirsync & 1) != 0 && !pl.ignore_dirsync)
		pl_dir_synced();
	return SQLITE_OK;
}

static int
pl_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	if (pl.cut)
		return SQLITE_IOERR_ACCESS;
	return pl.real->xAccess(pl.real, name, flags, out);
}

static int
pl_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return pl.real->xFullPathname(pl.real, name, n, out);
}

static void *
pl_dlopen(sqlite3_vfs *vfs, const char *name)
{
	return pl.real->xDlOpen(pl.real, name);
}

static void
pl_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	pl.real->xDlError(pl.real, n, msg);
}

static void
(*pl_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	return pl.real->xDlSym(pl.real, h, sym);
}

static void
pl_dlclose(sqlite3_vfs *vfs, void *h)
{
	pl.real->xDlClose(pl.real, h);
}

static int
pl_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	return pl.real->xRandomness(pl.real, n, out);
}

static int
pl_sleep(sqlite3_vfs *vfs, int us)
{
	return pl.real->xSleep(pl.real, us);
}

static int
pl_current_time(sqlite3_vfs *vfs, double *out)
{
	return pl.real->xCurrentTime(pl.real, out);
}

static int
pl_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	return pl.real->xGetLastError(pl.real, n, out);
}

static int
pl_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	return pl.real->xCurrentTimeInt64(pl.real, out);
}

/* Set the shim up once (registered, not yet the default). */
static void
pl_vfs_init(void)
{
	const char *env = getenv("RS_POWER_REAL_FSYNC");

	if (pl.real != NULL)
		return;
	pl.real = sqlite3_vfs_find("unix");
	ck_assert_ptr_nonnull(pl.real);
	memset(&pl.vfs, 0, sizeof(pl.vfs));
	pl.vfs.iVersion = 2;
	pl.vfs.szOsFile = (int)sizeof(struct pl_file) + pl.real->szOsFile;
	pl.vfs.mxPathname = pl.real->mxPathname;
	pl.vfs.zName = "powercut";
	pl.vfs.xOpen = pl_open;
	pl.vfs.xDelete = pl_delete;
	pl.vfs.xAccess = pl_access;
	pl.vfs.xFullPathname = pl_full_pathname;
	pl.vfs.xDlOpen = pl_dlopen;
	pl.vfs.xDlError = pl_dlerror;
	pl.vfs.xDlSym = pl_dlsym;
	pl.vfs.xDlClose = pl_dlclose;
	pl.vfs.xRandomness = pl_randomness;
	pl.vfs.xSleep = pl_sleep;
	pl.vfs.xCurrentTime = pl_current_time;
	pl.vfs.xGetLastError = pl_last_error;
	pl.vfs.xCurrentTimeInt64 = pl_current_time64;
	ck_assert_int_eq(sqlite3_vfs_register(&pl.vfs, 0), SQLITE_OK);
	pl.real_fsync = env != NULL && strcmp(env, "1") == 0;
}

/* Which VFS store_open() gets: the shim, or the plain unix one. */
static void
pl_vfs_default(bool shim)
{
	ck_assert_int_eq(sqlite3_vfs_register(shim ? &pl.vfs : pl.real, 1),
	    SQLITE_OK);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), shim ? &pl.vfs : pl.real);
}

/* Forget every file and pending operation; the power is on. */
static void
pl_forget(void)
{
	struct pl_obj *o, *next;

	for (o = pl.objs; o != NULL; o = next) {
		next = o->next;
		if (o->deleted && !o->gone)
			(void)unlink(o->path);
		pl_obj_forget_recs(o);
		free(o->name);
		free(o->path);
		free(o);
	}
	pl.objs = NULL;
	free(pl.ns);
	pl.ns = NULL;
	pl.nns = 0;
	pl.ops = 0;
	pl.cut_at = 0;
	pl.cut_on_sync = false;
	pl.cut = false;
	pl.phase = PL_PH_OPEN;
}

/* ---- the power cut ---- */

static unsigned char
pl_garbage(struct pl_rng *r, const struct pl_profile *pf)
{
	return pf->garbage ? (unsigned char)rng_next(r) : 0;
}

/* Put back what [a, b) held before rec (garbage where it did not
 * exist). */
static void
pl_restore(unsigned char *img, const struct pl_rec *rec, int64_t a,
    int64_t b, struct pl_rng *r, const struct pl_profile *pf)
{
	int64_t i;

	for (i = a; i < b; i++)
		img[i] = i < rec->before_size ? rec->before[i - rec->off] :
		    pl_garbage(r, pf);
}

static void
pl_cut_file(struct pl_obj *o, struct pl_rng *r, const struct pl_profile *pf)
{
	unsigned char *img;
	int64_t max = o->size, final = o->size, a, b, t, got;
	struct stat sb;
	size_t k;
	int fd;

	if (o->nrecs == 0)
		return;
	for (k = 0; k < o->nrecs; k++) {
		if (o->recs[k].before_size > max)
			max = o->recs[k].before_size;
		if (o->recs[k].after_size > max)
			max = o->recs[k].after_size;
	}
	if ((fd = open(o->path, O_RDWR | O_CLOEXEC)) == -1)
		ck_abort_msg("%s: cut: open %s: %s", pl_where, o->path,
		    strerror(errno));
	if (fstat(fd, &sb) == -1 || (int64_t)sb.st_size != o->size)
		ck_abort_msg("%s: cut: %s is %lld bytes, the shim says %lld",
		    pl_where, o->path, (long long)sb.st_size,
		    (long long)o->size);
	img = xmalloc((size_t)max + 1);
	for (a = 0; a < o->size; a += got)
		if ((got = pread(fd, img + a, (size_t)(o->size - a), a)) <= 0)
			ck_abort_msg("%s: cut: read %s", pl_where, o->path);
	for (a = o->size; a < max; a++)
		img[a] = pl_garbage(r, pf);

	/* Newest first: each write or size change kept, lost or torn. */
	for (k = o->nrecs; k-- > 0;) {
		const struct pl_rec *rec = &o->recs[k];

		if (!rec->write) {
			if (rng_pct(r, pf->lose_pct))
				pl_restore(img, rec, rec->off,
				    rec->off + rec->len, r, pf);
			continue;
		}
		for (a = rec->off; a < rec->off + rec->len; a = b) {
			b = (a / PL_SECTOR + 1) * PL_SECTOR;
			if (b > rec->off + rec->len)
				b = rec->off + rec->len;
			if (!rng_pct(r, pf->lose_pct)) {
				pl.st.kept++;
				continue;
			}
			if (b - a > 1 && rng_pct(r, pf->tear_pct)) {
				/* Torn: one end of it made it. */
				t = 1 + (int64_t)rng_below(r,
				    (uint64_t)(b - a - 1));
				if (rng_below(r, 2) == 0)
					pl_restore(img, rec, a + t, b, r, pf);
				else
					pl_restore(img, rec, a, b - t, r, pf);
				pl.st.torn++;
			} else {
				pl_restore(img, rec, a, b, r, pf);
				pl.st.lost++;
			}
		}
	}
	/* The size: the one it had at some moment since its last sync. */
	if (rng_pct(r, pf->resize_pct)) {
		k = (size_t)rng_below(r, o->nrecs + 1);
		final = k == 0 ? o->synced_size : o->recs[k - 1].after_size;
		if (final != o->size)
			pl.st.resized++;
	}
	for (a = 0; a < final; a += got)
		if ((got = pwrite(fd, img + a, (size_t)(final - a), a)) <= 0)
			ck_abort_msg("%s: cut: write %s", pl_where, o->path);
	if (ftruncate(fd, final) == -1)
		ck_abort_msg("%s: cut: truncate %s", pl_where, o->path);
	close(fd);
	free(img);
}

/*
 * The power is off and every connection closed: make the files what a
 * disk could hold after the cut, then forget the round.
 */
static void
pl_cut_apply(const char *db, struct pl_rng *r, const struct pl_profile *pf)
{
	struct pl_obj *o;
	struct stat sb;
	size_t keep, i;
	char *shm;

	ck_assert(pl.cut);
	for (o = pl.objs; o != NULL; o = o->next)
		if (!o->gone)
			pl_cut_file(o, r, pf);
	/* The directory: a prefix of its pending operations survives. */
	keep = (size_t)rng_below(r, pl.nns + 1);
	for (i = pl.nns; i-- > keep;) {
		o = pl.ns[i].obj;
		if (pl.ns[i].create) {
			if (unlink(o->path) == -1)
				ck_abort_msg("%s: cut: unlink %s: %s", pl_where,
				    o->path, strerror(errno));
			o->gone = true;
			pl.st.vanished++;
		} else {
			if (rename(o->path, o->name) == -1)
				ck_abort_msg("%s: cut: rename %s %s: %s",
				    pl_where, o->path, o->name,
				    strerror(errno));
			free(o->path);
			o->path = xstrdup(o->name);
			o->deleted = false;
			pl.st.reappeared++;
		}
	}
	/* The wal-index is memory SQLite rebuilds: after a reboot it may
	 * hold anything. */
	shm = xasprintf("%s-shm", db);
	if (rng_below(r, 2) == 0 && stat(shm, &sb) == 0 && sb.st_size > 0) {
		unsigned char *junk = xmalloc((size_t)sb.st_size);
		int64_t j;
		int fd;

		for (j = 0; j < (int64_t)sb.st_size; j++)
			junk[j] = (unsigned char)rng_next(r);
		if ((fd = open(shm, O_WRONLY | O_CLOEXEC)) != -1) {
			if (pwrite(fd, junk, (size_t)sb.st_size, 0) ==
			    (ssize_t)sb.st_size)
				pl.st.shm_garbled++;
			close(fd);
		}
		free(junk);
	}
	free(shm);
	pl_forget();
}

/* ---- what the store was told, and acknowledged ------------------------- */

struct pl_ref {
	int64_t	 wix;		/* newest revision made so far */
	int64_t	 acked;		/* newest revision acknowledged; 0: none */
	int64_t	 checked;	/* acked when last checked */
	int64_t	 dup_key;	/* the last event sent for it; 0: none */
	int64_t	 dup_rev;	/* its revision */
};

/* An acknowledged APPLIED version: it has a change-log entry. */
struct pl_change {
	int	 ref;
	int64_t	 rev;
};

/* A database that is cut round after round. */
struct pl_line {
	int		 no;
	int		 rounds;
	char		*dir;
	char		*db;
	struct pl_ref	 refs[PL_NREF];
	int64_t		*events;	/* acknowledged event keys */
	size_t		 nevents;
	size_t		 events_checked;
	struct pl_change *changes;
	size_t		 nchanges;
	size_t		 changes_checked;
	bool		 installed[PL_NAPP];	/* acknowledged */
	bool		 installed_checked[PL_NAPP];
	int64_t		 next_key;
	/* The backfill: instance inst-bf-<bf_gen>; earlier ones are done. */
	int		 bf_gen;
	bool		 bf_started;	/* its start acknowledged */
	int64_t		 bf_pages;	/* its pages acknowledged */
	int64_t		 bf_checked;
	bool		 verify_started;	/* inst-verify's start */
	int64_t		 verify_pages;
};

struct pl_tally {
	int64_t	 cuts;
	int	 lines;
	int64_t	 commits;	/* durable commits acknowledged */
	int64_t	 exports;	/* the exporter's (lazy) commits */
	int64_t	 post_cut;	/* acknowledged after the cut (no I/O) */
	int64_t	 restarts;
	int64_t	 twice;		/* cuts right after a cut, unchecked */
	int64_t	 acknowledged;	/* items first checked */
	int64_t	 found;		/* of those, found */
	int64_t	 rechecked;	/* items checked again later */
	int64_t	 lost;		/* any check that failed */
	int64_t	 behind;	/* stored, at an older revision */
	int64_t	 damaged;	/* integrity, gaps, reopen, new commits */
	char	*problem;	/* the first failure, or NULL */
};

/* How a run goes. */
struct pl_opts {
	int64_t		 cuts;
	int		 line_rounds;
	bool		 control;	/* a loss is the expected result */
	bool		 ignore_sync;
	bool		 ignore_dirsync;
	bool		 lazy;		/* every connection lazy_sync */
};

/* One round's working state. */
struct pl_round {
	struct pl_line	*line;
	struct pl_rng	*rng;
	struct pl_tally	*t;
	const struct pl_opts *o;
	struct store	*w;		/* the webhook writer */
	struct store	*b;		/* the backfill */
	struct store	*e;		/* an exporter (lazy_sync) */
	bool		 e_ready;	/* its row exists */
	bool		 bf_loaded;	/* the backfill read its position */
	int		 ckpt;		/* wal_autocheckpoint; 0: SQLite's */
};

static void pl_problem(struct pl_tally *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

/* Keep the first problem; a non-control run stops at the round's end. */
static void
pl_problem(struct pl_tally *t, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	if (t->problem != NULL)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	t->problem = xasprintf("%s: %s", pl_where, msg);
}

/* Before the cut every call must succeed (one thread: no contention). */
static void
pl_expect(struct pl_round *r, enum rs_status rc, const char *what)
{
	if (rc == RS_OK || pl.cut)
		return;
	r->t->damaged++;
	pl_problem(r->t, "%s failed before the power cut: %s", what,
	    rs_strstatus(rc));
}

static void
pl_acked_commit(struct pl_round *r)
{
	r->t->commits++;
	if (pl.cut)
		r->t->post_cut++;
}

static void
pl_ack_refund(struct pl_line *L, int ref, int64_t rev, bool applied)
{
	if (rev > L->refs[ref].acked)
		L->refs[ref].acked = rev;
	if (applied) {
		L->changes = xreallocarray(L->changes, L->nchanges + 1,
		    sizeof(*L->changes));
		L->changes[L->nchanges].ref = ref;
		L->changes[L->nchanges].rev = rev;
		L->nchanges++;
	}
}

static void
pl_ack_event(struct pl_line *L, int64_t key)
{
	L->events = xreallocarray(L->events, L->nevents + 1,
	    sizeof(*L->events));
	L->events[L->nevents++] = key;
}

/* ---- refunds and events ---- */

static const char *const pl_statuses[] = {
	"PENDING", "SUCCEEDED", "REVERSED", "FAILED", "SUCCEEDED"
};

static void
pl_refund_id(int ref, char *buf, size_t len)
{
	snprintf(buf, len, "pl-%03d", ref);
}

static void
pl_event_key(int64_t key, char *buf, size_t len)
{
	snprintf(buf, len, "ev-%06" PRId64, key);
}

/* Version rev of refund ref, as Wix would send it (the same every time:
 * a duplicate is the same event again). */
static void
pl_mk_refund(struct refund *r, int ref, int64_t rev)
{
	char *text, pad[PL_PAD_MAX + 1];
	size_t npad = (size_t)((ref * 131 + rev * 17) % PL_PAD_MAX);
	const char *why = NULL;
	cJSON *json = NULL;

	memset(pad, 'a' + (int)(rev % 26), npad);
	pad[npad] = '\0';
	text = xasprintf("{\"id\":\"pl-%03d\",\"chargeId\":\"ch-%03d\","
	    "\"currencyCode\":\"USD\",\"amount\":\"%d.%02d\","
	    "\"status\":\"%s\",\"revision\":\"%" PRId64 "\","
	    "\"createdDate\":\"2025-03-01T10:00:00.000Z\","
	    "\"updatedDate\":\"2025-03-01T11:%02d:%02d.000Z\","
	    "\"note\":\"%s\"}", ref, ref, 10 + ref, (int)(rev % 100),
	    pl_statuses[rev % 5], rev, (int)(rev / 60 % 60), (int)(rev % 60),
	    pad);
	ck_assert_int_eq(json_parse_strict(text, strlen(text), JSON_MAX_DEPTH,
	    &json, &why), RS_OK);
	ck_assert_msg(refund_from_json(json, r, &why) == RS_OK, "%s: %s",
	    text, why);
	cJSON_Delete(json);
	free(text);
}

/* One webhook of a group commit. */
struct pl_job {
	struct event	 ev;
	char		 key[32];
	int64_t		 keyno;
	int		 ref;		/* -1: an AppInstalled */
	int		 app;
	int64_t		 rev;
	enum rs_status	 status;
	enum store_outcome out;
};

static void
pl_job_make(struct pl_round *r, struct pl_job *j)
{
	struct pl_line *L = r->line;
	struct pl_ref *rf;
	unsigned act;

	memset(j, 0, sizeof(*j));
	j->status = RS_ERR_BUSY;
	if (rng_pct(r->rng, 6)) {
		/* AppInstalled, under a key the daemon derives. */
		j->ref = -1;
		j->app = (int)rng_below(r->rng, PL_NAPP);
		j->keyno = ++L->next_key;
		pl_event_key(j->keyno, j->key, sizeof(j->key));
		j->ev.kind = EVENT_APP_INSTALLED;
		j->ev.event_type = xstrdup(EVENT_TYPE_APP_INSTALLED);
		j->ev.instance_id = xasprintf("inst-app-%d", j->app);
		j->ev.app_id = xstrdup("pl-app");
		return;
	}
	j->ref = (int)rng_below(r->rng, PL_NREF);
	rf = &L->refs[j->ref];
	act = (unsigned)rng_below(r->rng, 100);
	if (act < 12 && rf->dup_key != 0) {
		/* The same event again. */
		j->keyno = rf->dup_key;
		j->rev = rf->dup_rev;
	} else {
		if (act < 25 && rf->wix > 1)	/* an older version, late */
			j->rev = 1 + (int64_t)rng_below(r->rng,
			    (uint64_t)(rf->wix - 1));
		else if (act < 35)		/* skip ahead */
			j->rev = rf->wix += 2;
		else
			j->rev = ++rf->wix;
		j->keyno = ++L->next_key;
		rf->dup_key = j->keyno;
		rf->dup_rev = j->rev;
	}
	pl_event_key(j->keyno, j->key, sizeof(j->key));
	j->ev.kind = EVENT_REFUND;
	j->ev.event_type = xstrdup(j->rev == 1 ? EVENT_TYPE_REFUND_CREATED :
	    EVENT_TYPE_REFUND_UPDATED);
	j->ev.instance_id = xasprintf("inst-wh-%d", j->ref % 3);
	j->ev.event_id = xstrdup(j->key);
	j->ev.entity_id = xasprintf("pl-%03d", j->ref);
	j->ev.event_time = xstrdup("2025-03-01T11:00:00.000Z");
	j->ev.has_sequence = true;
	j->ev.sequence = j->rev;
	pl_mk_refund(&j->ev.refund, j->ref, j->rev);
}

/*
 * One group commit, as run_batch() in src/core/ingest.c makes it: a
 * batch transaction, without a savepoint per event (no event here fails
 * on its own, so the writer's isolated redo never runs).  A job is
 * acknowledged (answered 200) when the commit succeeded and its own
 * apply did.
 */
static enum rs_status
pl_ingest(struct pl_round *r, struct store *st, struct pl_job *jobs,
    size_t n)
{
	enum rs_status rc;
	size_t i;

	rc = store_begin_batch(st);
	for (i = 0; rc == RS_OK && i < n; i++) {
		jobs[i].status = store_apply_event(st, &jobs[i].ev,
		    jobs[i].key, &jobs[i].out);
		if (jobs[i].status == RS_ERR_BUSY ||
		    jobs[i].status == RS_ERR_IO)
			rc = jobs[i].status;
		else if (jobs[i].status != RS_OK) {
			r->t->damaged++;
			pl_problem(r->t, "event %s: %s", jobs[i].key,
			    rs_strstatus(jobs[i].status));
		}
	}
	if (rc == RS_OK)
		rc = store_commit(st);
	else
		store_rollback(st);
	if (rc != RS_OK)
		return rc;
	pl_acked_commit(r);
	for (i = 0; i < n; i++) {
		struct pl_job *j = &jobs[i];

		if (j->status != RS_OK)
			continue;
		pl_ack_event(r->line, j->keyno);
		if (j->ref < 0)
			r->line->installed[j->app] = true;
		else
			pl_ack_refund(r->line, j->ref, j->rev,
			    j->out == STORE_APPLIED);
	}
	return RS_OK;
}

/* ---- the workload's steps ---- */

static struct store *
pl_store_open(const char *db, bool lazy, int ckpt, char **why)
{
	struct store_options so;
	struct store *st = NULL;

	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = PL_BUSY_MS;
	so.lazy_sync = lazy;
	*why = NULL;
	if (store_open(db, &so, &st, why) != RS_OK)
		return NULL;
	if (ckpt > 0)
		(void)sqlite3_wal_autocheckpoint(store_sqlite_handle(st), ckpt);
	return st;
}

static void
pl_conns_open(struct pl_round *r)
{
	struct store **conns[3];
	char *why = NULL;
	int i;

	conns[0] = &r->w;
	conns[1] = &r->b;
	conns[2] = &r->e;
	for (i = 0; i < 3; i++) {
		*conns[i] = pl_store_open(r->line->db, i == 2 || r->o->lazy,
		    r->ckpt, &why);
		if (*conns[i] == NULL && !pl.cut) {
			r->t->damaged++;
			pl_problem(r->t, "store_open before the power cut: %s",
			    why != NULL ? why : "?");
		}
		free(why);
		why = NULL;
	}
	r->e_ready = false;
}

static void
pl_conns_close(struct pl_round *r)
{
	struct store **conns[3];
	unsigned first = (unsigned)rng_below(r->rng, 3), i;

	conns[0] = &r->w;
	conns[1] = &r->b;
	conns[2] = &r->e;
	for (i = 0; i < 3; i++) {
		store_close(*conns[(first + i) % 3]);
		*conns[(first + i) % 3] = NULL;
	}
}

static void
step_ingest(struct pl_round *r)
{
	struct pl_job jobs[PL_BATCH_MAX];
	size_t n = 1 + (size_t)rng_below(r->rng, PL_BATCH_MAX), i;

	if (r->w == NULL)
		return;
	for (i = 0; i < n; i++)
		pl_job_make(r, &jobs[i]);
	pl_expect(r, pl_ingest(r, r->w, jobs, n), "a group commit");
	for (i = 0; i < n; i++)
		event_cleanup(&jobs[i].ev);
}

/* A CLI command (refund create, reconcile): its own connection. */
static void
step_cli(struct pl_round *r)
{
	struct pl_line *L = r->line;
	enum store_outcome out = STORE_STALE;
	struct refund rf;
	struct store *st;
	enum rs_status rc;
	char *why = NULL;
	int ref = (int)rng_below(r->rng, PL_NREF);
	int64_t rev = ++L->refs[ref].wix;

	st = pl_store_open(L->db, r->o->lazy, r->ckpt, &why);
	if (st == NULL) {
		if (!pl.cut) {
			r->t->damaged++;
			pl_problem(r->t, "CLI store_open before the power "
			    "cut: %s", why != NULL ? why : "?");
		}
		free(why);
		return;
	}
	pl_mk_refund(&rf, ref, rev);
	if ((rc = store_begin(st)) == RS_OK) {
		rc = store_apply_refund(st, &rf, "inst-cli", false, 0,
		    rng_below(r->rng, 2) == 0 ? "cli" : "reconcile", &out);
		if (rc == RS_OK)
			rc = store_commit(st);
		else
			store_rollback(st);
	}
	pl_expect(r, rc, "a CLI upsert");
	if (rc == RS_OK) {
		pl_acked_commit(r);
		pl_ack_refund(L, ref, rev, out == STORE_APPLIED);
	}
	refund_cleanup(&rf);
	store_close(st);
}

static void
step_backfill(struct pl_round *r)
{
	struct pl_line *L = r->line;
	struct store_bf_page pages[3];
	struct store_instance in;
	struct refund *rfs[3] = { NULL, NULL, NULL };
	int *refs[3] = { NULL, NULL, NULL };
	char id[32], cursors[3][32];
	size_t np, p, i;
	enum rs_status rc;

	if (r->b == NULL)
		return;
	snprintf(id, sizeof(id), "inst-bf-%d", L->bf_gen);
	if (!r->bf_loaded) {
		/*
		 * A run takes its position from the store, as the daemon's
		 * backfill does when it starts (bf_load): a commit the cut
		 * left unacknowledged may have been kept, and when the power
		 * went twice no check has brought the model up to it.
		 */
		memset(&in, 0, sizeof(in));
		rc = store_instance_get(r->b, id, &in);
		if (rc != RS_OK && rc != RS_ERR_NOTFOUND) {
			pl_expect(r, rc, "backfill position");
			return;
		}
		r->bf_loaded = true;
		if (rc == RS_OK && in.backfill == STORE_BACKFILL_DONE) {
			/* Finished, unacknowledged, yet kept: go on. */
			L->bf_gen++;
			L->bf_started = false;
			L->bf_pages = L->bf_checked = 0;
			store_instance_cleanup(&in);
			return;
		}
		if (rc == RS_OK && in.backfill == STORE_BACKFILL_RUNNING) {
			L->bf_started = true;
			if (in.backfill_pages > L->bf_pages)
				L->bf_pages = in.backfill_pages;
		}
		if (rc == RS_OK)
			store_instance_cleanup(&in);
	}
	if (!L->bf_started) {
		rc = store_backfill_start(r->b, id, false);
		pl_expect(r, rc, "backfill start");
		if (rc == RS_OK) {
			pl_acked_commit(r);
			L->bf_started = true;
		}
		return;
	}
	if (L->bf_pages >= PL_BF_PAGES) {
		rc = store_backfill_finish(r->b, id, true, NULL);
		pl_expect(r, rc, "backfill finish");
		if (rc == RS_OK) {
			pl_acked_commit(r);
			L->bf_gen++;
			L->bf_started = false;
			L->bf_pages = L->bf_checked = 0;
		}
		return;
	}
	/* One page, or (as the daemon's backfill does when pages wait)
	 * several in one transaction. */
	np = rng_pct(r->rng, 30) ? 2 + (size_t)rng_below(r->rng, 2) : 1;
	for (p = 0; p < np; p++) {
		int64_t q = L->bf_pages + (int64_t)p;
		size_t n = 1 + (size_t)rng_below(r->rng, PL_PAGE_MAX);

		rfs[p] = xcalloc(n, sizeof(*rfs[p]));
		refs[p] = xcalloc(n, sizeof(*refs[p]));
		for (i = 0; i < n; i++) {
			struct pl_ref *rf;
			int64_t rev;

			refs[p][i] = (int)((q * 7 + (int64_t)i * 5 +
			    L->bf_gen * 3) % PL_NREF);
			rf = &L->refs[refs[p][i]];
			if (rf->wix == 0)
				rf->wix = 1;
			/* Wix's current version, or one just before it. */
			rev = rf->wix > 1 && rng_below(r->rng, 3) == 0 ?
			    rf->wix - 1 : rf->wix;
			pl_mk_refund(&rfs[p][i], refs[p][i], rev);
		}
		snprintf(cursors[p], sizeof(cursors[p]), "c-%d-%" PRId64,
		    L->bf_gen, q + 1);
		pages[p].refunds = rfs[p];
		pages[p].n = n;
		pages[p].next_cursor = cursors[p];
	}
	if (np == 1)
		rc = store_backfill_page(r->b, id, rfs[0], pages[0].n,
		    cursors[0], NULL);
	else
		rc = store_backfill_pages(r->b, id, pages, np, NULL);
	pl_expect(r, rc, "a backfill page");
	if (rc == RS_OK) {
		pl_acked_commit(r);
		L->bf_pages += (int64_t)np;
		for (p = 0; p < np; p++)
			for (i = 0; i < pages[p].n; i++)
				pl_ack_refund(L, refs[p][i],
				    rfs[p][i].revision, false);
	}
	for (p = 0; p < np; p++) {
		for (i = 0; i < pages[p].n; i++)
			refund_cleanup(&rfs[p][i]);
		free(rfs[p]);
		free(refs[p]);
	}
}

/* An exporter's turn: read the change log, record the deliveries. */
static void
step_export(struct pl_round *r)
{
	struct store_change ch[PL_EXPORT_MAX];
	int64_t seqs[PL_EXPORT_MAX];
	struct store_export x;
	enum rs_status rc;
	size_t n = 0, i;

	if (r->e == NULL)
		return;
	if (!r->e_ready) {
		rc = store_export_ensure(r->e, PL_EXPORTER);
		pl_expect(r, rc, "exporter ensure");
		if (rc != RS_OK)
			return;
		r->e_ready = true;
	}
	memset(&x, 0, sizeof(x));
	if ((rc = store_export_get(r->e, PL_EXPORTER, &x)) != RS_OK) {
		pl_expect(r, rc, "exporter read");
		return;
	}
	memset(ch, 0, sizeof(ch));
	rc = store_changes_read(r->e, x.position, PL_EXPORT_MAX, ch, &n);
	pl_expect(r, rc, "change log read");
	if (rc == RS_OK && n > 0) {
		for (i = 0; i < n; i++)
			seqs[i] = ch[i].seq;
		rc = store_export_delivered(r->e, PL_EXPORTER, x.epoch, seqs,
		    n, seqs[n - 1]);
		pl_expect(r, rc, "exporter delivery");
		if (rc == RS_OK)
			r->t->exports++;
	}
	for (i = 0; i < n; i++)
		store_change_cleanup(&ch[i]);
	store_export_cleanup(&x);
}

static void
step_probe(struct pl_round *r)
{
	enum rs_status rc;

	if (r->w == NULL)
		return;
	rc = store_probe(r->w);
	pl_expect(r, rc, "readiness probe");
	if (rc == RS_OK)
		pl_acked_commit(r);
}

/* Every connection closed (the last close checkpoints and deletes the
 * WAL) and opened again. */
static void
step_restart(struct pl_round *r)
{
	pl_conns_close(r);
	r->t->restarts++;
	pl_conns_open(r);
}

/* ---- a round ---- */

static const struct {
	enum pl_phase	 phase;
	unsigned	 weight;
	void		(*fn)(struct pl_round *);
} pl_steps[] = {
	{ PL_PH_INGEST, 50, step_ingest },
	{ PL_PH_BACKFILL, 16, step_backfill },
	{ PL_PH_EXPORT, 16, step_export },
	{ PL_PH_CLI, 8, step_cli },
	{ PL_PH_PROBE, 6, step_probe },
	{ PL_PH_RESTART, 4, step_restart }
};

static void
pl_profile_pick(struct pl_rng *r, bool control, struct pl_profile *pf)
{
	static const unsigned lose[] = { 0, 25, 50, 90, 100 };

	pf->lose_pct = control ? lose[2 + rng_below(r, 3)] :
	    lose[rng_below(r, 5)];
	pf->tear_pct = rng_below(r, 2) == 0 ? 0 : 30;
	pf->garbage = rng_below(r, 2) == 0;
	pf->resize_pct = rng_below(r, 2) == 0 ? 0 : 50;
}

/*
 * Run the workload on the shim until the power goes, apply the loss,
 * and put the plain VFS back.
 */
static void
pl_round_run(struct pl_round *r)
{
	static const uint64_t budgets[] = { 12, 25, 100, 400, 1500 };
	static const int ckpts[] = { 0, 0, 100, 20, 5 };
	struct pl_profile pf;
	unsigned total = 0, pick, i;
	int steps, after = 0;

	for (i = 0; i < sizeof(pl_steps) / sizeof(pl_steps[0]); i++)
		total += pl_steps[i].weight;
	pl_profile_pick(r->rng, r->o->control, &pf);
	r->bf_loaded = false;
	r->ckpt = ckpts[rng_below(r->rng, sizeof(ckpts) / sizeof(ckpts[0]))];
	pl_forget();
	pl.ignore_sync = r->o->ignore_sync;
	pl.ignore_dirsync = r->o->ignore_dirsync;
	pl.cut_at = 1 + rng_below(r->rng,
	    budgets[rng_below(r->rng, sizeof(budgets) / sizeof(budgets[0]))]);
	/* A quarter of the cuts wait for a sync: the moment a commit's
	 * frames are all written and none is durable yet. */
	pl.cut_on_sync = rng_below(r->rng, 4) == 0;

	pl_vfs_default(true);
	pl.phase = PL_PH_OPEN;
	pl_conns_open(r);
	for (steps = 0; steps < PL_MAX_STEPS; steps++) {
		if (pl.cut && after++ >= PL_AFTER_CUT)
			break;
		pick = (unsigned)rng_below(r->rng, total);
		for (i = 0; pick >= pl_steps[i].weight; i++)
			pick -= pl_steps[i].weight;
		pl.phase = pl_steps[i].phase;
		pl_steps[i].fn(r);
	}
	if (!pl.cut) {
		pl.cut = true;
		pl.st.cut_idle++;
	}
	pl_conns_close(r);
	pl_cut_apply(r->line->db, r->rng, &pf);
	pl_vfs_default(false);
	r->t->cuts++;
}

/* ---- after the cut: the checks ---------------------------------------- */

static int64_t
pl_sql_int(sqlite3 *db, const char *sql, int64_t dflt)
{
	sqlite3_stmt *stmt = NULL;
	int64_t v = dflt;

	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
	    sqlite3_step(stmt) == SQLITE_ROW &&
	    sqlite3_column_type(stmt, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return v;
}

/* Does the one-row query sql, with text a and integer b bound (b < 0:
 * none), find a row? */
static bool
pl_sql_exists(sqlite3_stmt *stmt, const char *a, int64_t b)
{
	bool yes;

	sqlite3_reset(stmt);
	sqlite3_bind_text(stmt, 1, a, -1, SQLITE_TRANSIENT);
	if (b >= 0)
		sqlite3_bind_int64(stmt, 2, b);
	yes = sqlite3_step(stmt) == SQLITE_ROW &&
	    sqlite3_column_int64(stmt, 0) != 0;
	sqlite3_reset(stmt);
	return yes;
}

/* Count one check of an item; first: the item's first check. */
static void
pl_count(struct pl_tally *t, bool first, bool ok)
{
	if (first) {
		t->acknowledged++;
		if (ok)
			t->found++;
	} else
		t->rechecked++;
	if (!ok)
		t->lost++;
}

/* Everything acknowledged in L, for a store that does not open. */
static void
pl_all_lost(struct pl_line *L, struct pl_tally *t)
{
	size_t i;

	for (i = 0; i < L->nevents; i++)
		pl_count(t, i >= L->events_checked, false);
	for (i = 0; i < PL_NREF; i++)
		if (L->refs[i].acked > 0)
			pl_count(t, L->refs[i].checked != L->refs[i].acked,
			    false);
}

/* The change log, the refunds and the exporter agree with each other. */
static void
pl_check_invariants(sqlite3 *db, struct pl_tally *t)
{
	int64_t n = pl_sql_int(db, "SELECT count(*) FROM changes", -1);
	int64_t lo = pl_sql_int(db, "SELECT coalesce(min(seq), 0) FROM"
	    " changes", -1);
	int64_t hi = pl_sql_int(db, "SELECT coalesce(max(seq), 0) FROM"
	    " changes", -1);
	int64_t v;

	if (n < 0 || n != hi || (n > 0 && lo != 1)) {
		t->damaged++;
		pl_problem(t, "the change log has a gap: %" PRId64 " entries,"
		    " seqs %" PRId64 "..%" PRId64, n, lo, hi);
	}
	v = pl_sql_int(db, "SELECT count(*) FROM refunds r WHERE NOT EXISTS"
	    " (SELECT 1 FROM changes c WHERE c.refund_id = r.id AND"
	    " c.revision IS r.revision)", -1);
	if (v != 0) {
		t->damaged++;
		pl_problem(t, "%" PRId64 " stored refunds have no change-log "
		    "entry for their version", v);
	}
	v = pl_sql_int(db, "SELECT coalesce(max(position), 0) FROM"
	    " exporter_positions", -1);
	if (v < 0 || v > hi) {
		t->damaged++;
		pl_problem(t, "the exporter is at %" PRId64 ", past the change"
		    " log's end %" PRId64, v, hi);
	}
	v = pl_sql_int(db, "SELECT count(*) FROM exporter_deliveries d"
	    " WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.seq ="
	    " d.seq)", -1);
	if (v != 0) {
		t->damaged++;
		pl_problem(t, "%" PRId64 " deliveries name changes the log "
		    "lost", v);
	}
}

static void
pl_check_integrity(sqlite3 *db, struct pl_tally *t)
{
	sqlite3_stmt *stmt = NULL;
	const unsigned char *v = NULL;

	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt,
	    NULL) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
		v = sqlite3_column_text(stmt, 0);
	if (v == NULL || strcmp((const char *)v, "ok") != 0) {
		t->damaged++;
		pl_problem(t, "integrity_check: %s", v != NULL ?
		    (const char *)v : sqlite3_errmsg(db));
	}
	sqlite3_finalize(stmt);
}

/* An applied version: refund number and revision. */
struct pl_pair {
	int64_t	 ref;
	int64_t	 rev;
};

static int
pl_pair_cmp(const void *a, const void *b)
{
	const struct pl_pair *x = a, *y = b;

	if (x->ref != y->ref)
		return x->ref < y->ref ? -1 : 1;
	if (x->rev != y->rev)
		return x->rev < y->rev ? -1 : 1;
	return 0;
}

/* Every version in the change log, sorted.  Caller frees. */
static struct pl_pair *
pl_load_changes(sqlite3 *db, size_t *n)
{
	struct pl_pair *v = NULL;
	sqlite3_stmt *stmt = NULL;

	*n = 0;
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT CAST(substr("
	    "refund_id, 4) AS INTEGER), revision FROM changes", -1, &stmt,
	    NULL), SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW) {
		v = xreallocarray(v, *n + 1, sizeof(*v));
		v[*n].ref = sqlite3_column_int64(stmt, 0);
		v[*n].rev = sqlite3_column_type(stmt, 1) == SQLITE_NULL ? -1 :
		    sqlite3_column_int64(stmt, 1);
		(*n)++;
	}
	sqlite3_finalize(stmt);
	if (*n > 1)
		qsort(v, *n, sizeof(*v), pl_pair_cmp);
	return v;
}

/* The acknowledged items: events, refunds, applied versions. */
static void
pl_check_items(struct pl_line *L, struct store *st, sqlite3 *db,
    struct pl_tally *t)
{
	struct store_refund_row row;
	struct pl_pair *log, want;
	sqlite3_stmt *ev = NULL;
	char key[32], id[16];
	enum rs_status rc;
	size_t i, nlog;
	bool ok;

	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM"
	    " webhook_events WHERE event_id = ?1", -1, &ev, NULL), SQLITE_OK);
	for (i = 0; i < L->nevents; i++) {
		pl_event_key(L->events[i], key, sizeof(key));
		ok = pl_sql_exists(ev, key, -1);
		pl_count(t, i >= L->events_checked, ok);
		if (!ok)
			pl_problem(t, "acknowledged event %s lost", key);
	}
	L->events_checked = L->nevents;
	sqlite3_finalize(ev);

	log = pl_load_changes(db, &nlog);
	for (i = 0; i < L->nchanges; i++) {
		want.ref = L->changes[i].ref;
		want.rev = L->changes[i].rev;
		ok = nlog > 0 && bsearch(&want, log, nlog, sizeof(*log),
		    pl_pair_cmp) != NULL;
		pl_count(t, i >= L->changes_checked, ok);
		if (!ok) {
			pl_refund_id(L->changes[i].ref, id, sizeof(id));
			pl_problem(t, "acknowledged version %" PRId64 " of %s "
			    "is not in the change log", L->changes[i].rev,
			    id);
		}
	}
	L->changes_checked = L->nchanges;
	free(log);

	for (i = 0; i < PL_NREF; i++) {
		struct pl_ref *rf = &L->refs[i];

		if (rf->acked == 0)
			continue;
		pl_refund_id((int)i, id, sizeof(id));
		memset(&row, 0, sizeof(row));
		rc = store_refund_get(st, id, &row);
		if (rc != RS_OK) {
			pl_count(t, rf->checked != rf->acked, false);
			pl_problem(t, "acknowledged refund %s lost: %s", id,
			    rs_strstatus(rc));
		} else if (!row.refund.has_revision ||
		    row.refund.revision < rf->acked) {
			/* There, but older: behind, not lost. */
			if (rf->checked != rf->acked)
				t->acknowledged++;
			else
				t->rechecked++;
			t->behind++;
			pl_problem(t, "refund %s stored at revision %" PRId64
			    ", %" PRId64 " was acknowledged", id,
			    row.refund.revision, rf->acked);
		} else
			pl_count(t, rf->checked != rf->acked, true);
		if (rc == RS_OK) {
			/* What survived is the durable state now. */
			if (row.refund.revision > rf->acked)
				rf->acked = row.refund.revision;
			if (rf->acked > rf->wix)
				rf->wix = rf->acked;
			store_refund_row_cleanup(&row);
		}
		rf->checked = rf->acked;
	}
}

/* Installs and backfill runs. */
static void
pl_check_instances(struct pl_line *L, struct store *st, struct pl_tally *t)
{
	struct store_instance in;
	char id[32], cursor[48];
	bool ok;
	int i;

	for (i = 0; i < PL_NAPP; i++) {
		if (!L->installed[i])
			continue;
		snprintf(id, sizeof(id), "inst-app-%d", i);
		memset(&in, 0, sizeof(in));
		ok = store_instance_get(st, id, &in) == RS_OK &&
		    in.installed_at != NULL;
		pl_count(t, !L->installed_checked[i], ok);
		if (!ok)
			pl_problem(t, "acknowledged install of %s lost", id);
		L->installed_checked[i] = true;
		store_instance_cleanup(&in);
	}
	for (i = 0; i <= L->bf_gen; i++) {
		snprintf(id, sizeof(id), "inst-bf-%d", i);
		memset(&in, 0, sizeof(in));
		if (store_instance_get(st, id, &in) != RS_OK) {
			if (i < L->bf_gen || L->bf_started) {
				pl_count(t, false, false);
				pl_problem(t, "backfill of %s lost", id);
			}
			continue;
		}
		if (i < L->bf_gen) {
			/* Its finish was acknowledged. */
			ok = in.backfill == STORE_BACKFILL_DONE;
			pl_count(t, false, ok);
			if (!ok)
				pl_problem(t, "finished backfill of %s is "
				    "%s", id, store_backfill_name(in.backfill));
		} else if (in.backfill == STORE_BACKFILL_DONE) {
			/* Finished, unacknowledged, yet kept: go on. */
			L->bf_gen++;
			L->bf_started = false;
			L->bf_pages = L->bf_checked = 0;
		} else {
			ok = in.backfill == STORE_BACKFILL_RUNNING &&
			    in.backfill_pages >= L->bf_pages;
			if (L->bf_started)
				pl_count(t, L->bf_checked != L->bf_pages, ok);
			if (L->bf_started && !ok)
				pl_problem(t, "backfill of %s is %s with %"
				    PRId64 " pages, %" PRId64 " were "
				    "acknowledged", id,
				    store_backfill_name(in.backfill),
				    in.backfill_pages, L->bf_pages);
			if (in.backfill == STORE_BACKFILL_RUNNING) {
				L->bf_started = true;
				if (in.backfill_pages > L->bf_pages)
					L->bf_pages = in.backfill_pages;
			}
			L->bf_checked = L->bf_pages;
		}
		/* A page and the cursor after it are never split: the
		 * cursor names the first page not stored. */
		snprintf(cursor, sizeof(cursor), "c-%d-%" PRId64, i,
		    in.backfill_pages);
		if (in.backfill == STORE_BACKFILL_RUNNING &&
		    in.backfill_pages > 0 && (in.backfill_cursor == NULL ||
		    strcmp(in.backfill_cursor, cursor) != 0)) {
			t->damaged++;
			pl_problem(t, "backfill of %s has %" PRId64 " pages "
			    "and cursor %s", id, in.backfill_pages,
			    in.backfill_cursor != NULL ? in.backfill_cursor :
			    "(none)");
		}
		store_instance_cleanup(&in);
	}
}

/* After recovery the store takes new commits, and they read back. */
static void
pl_check_new_commits(struct pl_round *r, struct store *st)
{
	struct pl_line *L = r->line;
	struct store_refund_row row;
	struct pl_job jobs[2];
	struct refund rf;
	enum store_outcome out = STORE_STALE;
	enum rs_status rc;
	size_t i;
	bool ok;

	pl.phase = PL_PH_INGEST;
	for (i = 0; i < 2; i++)
		pl_job_make(r, &jobs[i]);
	rc = pl_ingest(r, st, jobs, 2);
	for (i = 0; i < 2; i++) {
		if (rc == RS_OK && jobs[i].ref >= 0) {
			memset(&row, 0, sizeof(row));
			ok = store_refund_get(st, jobs[i].ev.refund.id, &row) ==
			    RS_OK && row.refund.revision >= jobs[i].rev;
			store_refund_row_cleanup(&row);
			if (!ok)
				rc = RS_ERR_NOTFOUND;
		}
		event_cleanup(&jobs[i].ev);
	}
	if (rc == RS_OK) {
		int ref = (int)rng_below(r->rng, PL_NREF);
		int64_t rev = ++L->refs[ref].wix;

		pl_mk_refund(&rf, ref, rev);
		if ((rc = store_begin(st)) == RS_OK) {
			rc = store_apply_refund(st, &rf, NULL, false, 0, "cli",
			    &out);
			if (rc == RS_OK)
				rc = store_commit(st);
			else
				store_rollback(st);
		}
		if (rc == RS_OK) {
			pl_acked_commit(r);
			pl_ack_refund(L, ref, rev, out == STORE_APPLIED);
		}
		refund_cleanup(&rf);
	}
	if (rc == RS_OK && !L->verify_started) {
		rc = store_backfill_start(st, "inst-verify", true);
		L->verify_started = rc == RS_OK;
	}
	if (rc == RS_OK) {
		struct store_instance in;
		char cursor[32];
		int ref = (int)rng_below(r->rng, PL_NREF);
		int64_t rev = L->refs[ref].wix > 0 ? L->refs[ref].wix : 1;

		L->refs[ref].wix = rev;
		pl_mk_refund(&rf, ref, rev);
		snprintf(cursor, sizeof(cursor), "v-%" PRId64,
		    L->verify_pages + 1);
		rc = store_backfill_page(st, "inst-verify", &rf, 1, cursor,
		    NULL);
		if (rc == RS_OK) {
			pl_acked_commit(r);
			pl_ack_refund(L, ref, rev, false);
			L->verify_pages++;
			memset(&in, 0, sizeof(in));
			rc = store_instance_get(st, "inst-verify", &in);
			if (rc == RS_OK && (in.backfill_pages !=
			    L->verify_pages || in.backfill_cursor == NULL ||
			    strcmp(in.backfill_cursor, cursor) != 0))
				rc = RS_ERR_NOTFOUND;
			store_instance_cleanup(&in);
		}
		refund_cleanup(&rf);
	}
	if (rc == RS_OK && (rc = store_probe(st)) == RS_OK)
		pl_acked_commit(r);
	if (rc != RS_OK) {
		r->t->damaged++;
		pl_problem(r->t, "a commit after recovery failed or did not "
		    "read back: %s", rs_strstatus(rc));
	}
}

/* Recover with the plain VFS and check everything acknowledged. */
static void
pl_verify(struct pl_round *r)
{
	struct pl_line *L = r->line;
	struct pl_tally *t = r->t;
	struct store *st;
	sqlite3 *db = NULL;
	char *why = NULL;

	st = pl_store_open(L->db, false, 0, &why);
	if (st == NULL) {
		t->damaged++;
		pl_problem(t, "the store does not open after the power cut: "
		    "%s", why != NULL ? why : "?");
		free(why);
		pl_all_lost(L, t);
		return;
	}
	ck_assert_int_eq(sqlite3_open_v2(L->db, &db, SQLITE_OPEN_READONLY,
	    NULL), SQLITE_OK);
	pl_check_integrity(db, t);
	pl_check_items(L, st, db, t);
	pl_check_instances(L, st, t);
	pl_check_invariants(db, t);
	sqlite3_close(db);
	/* After a failure, add nothing to the database. */
	if (r->o->control || t->problem == NULL)
		pl_check_new_commits(r, st);
	store_close(st);
}

/* ---- runs ---- */

static uint64_t
pl_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	int64_t n;

	if (v == NULL || *v == '\0')
		return dflt;
	if (strnum_i64(v, 0, INT64_MAX, &n) != NULL)
		ck_abort_msg("%s: not a number: %s", name, v);
	return (uint64_t)n;
}

/* Send stderr to path; returns what to give pl_stderr_back(). */
static int
pl_stderr_to(const char *path)
{
	int saved, fd;

	(void)fflush(stderr);
	saved = dup(STDERR_FILENO);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
	close(fd);
	return saved;
}

static void
pl_stderr_back(int saved)
{
	(void)fflush(stderr);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
}

static void
pl_line_free(struct pl_line *L)
{
	if (L == NULL)
		return;
	tu_rmtree(L->dir);
	free(L->dir);
	free(L->db);
	free(L->events);
	free(L->changes);
	free(L);
}

static struct pl_line *
pl_line_new(const char *base, int no)
{
	struct pl_line *L = xcalloc(1, sizeof(*L));

	L->no = no;
	L->dir = xasprintf("%s/db%03d", base, no);
	L->db = xasprintf("%s/refundsync.db", L->dir);
	ck_assert_int_eq(mkdir(L->dir, 0700), 0);
	free(pl.stash);
	pl.stash = xasprintf("%s/stash", L->dir);
	ck_assert_int_eq(mkdir(pl.stash, 0700), 0);
	return L;
}

/*
 * Cut o->cuts times, each database o->line_rounds times.  A run that is
 * not a control stops at the first problem; a control goes on, with a
 * new database after each round that found a loss.
 */
static void
pl_run(const struct pl_opts *o, uint64_t seed, struct pl_tally *t,
    char **basep)
{
	struct pl_line *L = NULL;
	struct pl_round r;
	struct pl_rng rng;
	struct store *st = NULL;
	char *base = tu_tempdir(), *warm, *why = NULL;
	int64_t i;
	int saved;

	memset(t, 0, sizeof(*t));
	/* One plain open first, as the daemon's first: the store sets
	 * SQLite's process-wide options before the library starts. */
	warm = xasprintf("%s/warm-up.log", base);
	saved = pl_stderr_to(warm);
	free(warm);
	warm = xasprintf("%s/warm-up.db", base);
	st = pl_store_open(warm, false, 0, &why);
	pl_stderr_back(saved);
	ck_assert_msg(st != NULL, "%s", why != NULL ? why : "?");
	store_close(st);
	free(warm);
	pl_vfs_init();

	for (i = 0; i < o->cuts; i++) {
		int64_t lost = t->lost + t->damaged;
		char *logpath;

		if (L == NULL || L->rounds >= o->line_rounds) {
			pl_line_free(L);
			L = pl_line_new(base, t->lines++);
		}
		rng.s = seed ^ ((uint64_t)i * UINT64_C(0x2545f4914f6cdd1d));
		(void)rng_next(&rng);
		snprintf(pl_where, sizeof(pl_where), "seed %" PRIu64 ", cut %"
		    PRId64 " (database %d, round %d)", seed, i, L->no,
		    L->rounds);
		memset(&r, 0, sizeof(r));
		r.line = L;
		r.rng = &rng;
		r.t = t;
		r.o = o;

		/* The store's warnings (a failing disk, a recovery) go to
		 * the database's directory. */
		logpath = xasprintf("%s/store.log", L->dir);
		saved = pl_stderr_to(logpath);
		free(logpath);

		pl_round_run(&r);
		L->rounds++;
		if (i + 1 < o->cuts && rng_below(&rng, 4) == 0) {
			/* The power goes again before anything checked: the
			 * next round opens (recovers) the database through
			 * the shim and writes after what the cut left. */
			i++;
			snprintf(pl_where, sizeof(pl_where), "seed %" PRIu64
			    ", cuts %" PRId64 " and %" PRId64 " (database %d, "
			    "rounds %d and %d)", seed, i - 1, i, L->no,
			    L->rounds - 1, L->rounds);
			pl_round_run(&r);
			L->rounds++;
			t->twice++;
		}
		pl_verify(&r);

		pl_stderr_back(saved);
		if (!o->control && t->problem != NULL)
			break;
		/* A control's database may be beyond use: a new one. */
		if (o->control && t->lost + t->damaged > lost)
			L->rounds = o->line_rounds;
	}
	if (t->problem != NULL && !o->control && L != NULL) {
		/* Keep the files of the failing round for a look. */
		fprintf(stderr, "power: files kept in %s\n", base);
		*basep = base;
		free(L->dir);
		free(L->db);
		free(L->events);
		free(L->changes);
		free(L);
		return;
	}
	pl_line_free(L);
	tu_rmtree(base);
	free(base);
	*basep = NULL;
}

static void
pl_print_stats(const char *what)
{
	char buf[1024];
	size_t len = 0;
	int f, op, ph;

	for (f = 0; f < PL_NFT; f++)
		for (op = 0; op < PL_NOPS; op++)
			if (pl.st.cut_at[f][op] > 0 && len < sizeof(buf))
				len += (size_t)snprintf(buf + len,
				    sizeof(buf) - len, " %s-%s=%" PRId64,
				    pl_ft_names[f], pl_op_names[op],
				    pl.st.cut_at[f][op]);
	if (len < sizeof(buf))
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
		    " idle=%" PRId64 ";", pl.st.cut_idle);
	for (ph = 0; ph < PL_NPHASES; ph++)
		if (len < sizeof(buf))
			len += (size_t)snprintf(buf + len, sizeof(buf) - len,
			    " %s=%" PRId64, pl_phase_names[ph],
			    pl.st.cut_in[ph]);
	fprintf(stderr, "%s: cut at:%s\n", what, buf);
	fprintf(stderr, "%s: unsynced 512-byte pieces kept=%" PRId64
	    " lost=%" PRId64 " torn=%" PRId64 "; files resized=%" PRId64
	    " vanished=%" PRId64 " reappeared=%" PRId64 "; shm garbled=%"
	    PRId64 "; syncs=%" PRId64 " dirsyncs=%" PRId64 "\n", what,
	    pl.st.kept, pl.st.lost, pl.st.torn, pl.st.resized,
	    pl.st.vanished, pl.st.reappeared, pl.st.shm_garbled, pl.st.syncs,
	    pl.st.dirsyncs);
}

static void
pl_print_tally(const char *what, uint64_t seed, const struct pl_tally *t,
    int64_t ms)
{
	fprintf(stderr, "%s: seed=%" PRIu64 " cuts=%" PRId64 " databases=%d "
	    "commits=%" PRId64 " acknowledged=%" PRId64 " found=%" PRId64
	    " lost=%" PRId64 " behind=%" PRId64 " rechecked=%" PRId64
	    " damaged=%" PRId64 " exports=%" PRId64 " restarts=%" PRId64
	    " post-cut=%" PRId64 " cut-again=%" PRId64 " in %" PRId64
	    " ms\n", what, seed, t->cuts, t->lines, t->commits,
	    t->acknowledged, t->found, t->lost, t->behind, t->rechecked,
	    t->damaged, t->exports, t->restarts, t->post_cut, t->twice, ms);
}

static uint64_t
pl_seed(void)
{
	uint64_t dflt = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);

	return pl_env_u64("RS_POWER_SEED", dflt);
}

/* ---- the tests ---------------------------------------------------------- */

START_TEST(test_power_loss)
{
	struct pl_opts o;
	struct pl_tally t;
	uint64_t seed = pl_seed();
	int64_t t0 = clock_mono_ms();
	char *kept = NULL;

	memset(&o, 0, sizeof(o));
	o.cuts = (int64_t)pl_env_u64("RS_POWER_CUTS", PL_CUTS);
	o.line_rounds = PL_LINE_ROUNDS;
	fprintf(stderr, "power: seed %" PRIu64 "\n", seed);
	memset(&pl.st, 0, sizeof(pl.st));
	pl_run(&o, seed, &t, &kept);
	pl_print_tally("power", seed, &t, clock_mono_ms() - t0);
	pl_print_stats("power");
	ck_assert_msg(t.problem == NULL, "%s (files in %s)", t.problem,
	    kept != NULL ? kept : "?");
	ck_assert_int_eq(t.lost, 0);
	ck_assert_int_eq(t.behind, 0);
	ck_assert_int_eq(t.damaged, 0);
	ck_assert_int_eq(t.found, t.acknowledged);
	ck_assert_int_eq(t.cuts, o.cuts);
	if (o.cuts >= PL_CUTS) {
		/* The run did what it claims: unsynced writes were lost and
		 * torn, the power went while commits were being made
		 * durable and while checkpoints wrote the database, and
		 * much was acknowledged and checked again later. */
		ck_assert_int_gt(pl.st.lost, 0);
		ck_assert_int_gt(pl.st.torn, 0);
		ck_assert_int_gt(pl.st.cut_at[PL_FT_WAL][PL_OP_SYNC], 0);
		ck_assert_int_gt(pl.st.cut_at[PL_FT_WAL][PL_OP_WRITE], 0);
		ck_assert_int_gt(pl.st.cut_at[PL_FT_DB][PL_OP_WRITE] +
		    pl.st.cut_at[PL_FT_DB][PL_OP_SYNC], 0);
		ck_assert_int_gt(t.acknowledged, 1000);
		ck_assert_int_gt(t.rechecked, t.acknowledged);
	}
	free(t.problem);
	free(kept);
}
END_TEST

/*
 * The same rounds where durability is missing on purpose: the checks
 * must find acknowledged commits lost.
 */
static void
pl_control(const char *what, bool ignore_sync, bool ignore_dirsync,
    bool lazy, int line_rounds)
{
	struct pl_opts o;
	struct pl_tally t;
	uint64_t seed = pl_seed() + 1;
	int64_t t0 = clock_mono_ms();
	char *kept = NULL;

	memset(&o, 0, sizeof(o));
	o.cuts = PL_CONTROL_CUTS;
	o.line_rounds = line_rounds;
	o.control = true;
	o.ignore_sync = ignore_sync;
	o.ignore_dirsync = ignore_dirsync;
	o.lazy = lazy;
	memset(&pl.st, 0, sizeof(pl.st));
	pl_run(&o, seed, &t, &kept);
	pl_print_tally(what, seed, &t, clock_mono_ms() - t0);
	fprintf(stderr, "%s: first problem: %s\n", what,
	    t.problem != NULL ? t.problem : "none");
	ck_assert_msg(t.lost > 0, "%s: no loss found in %" PRId64 " cuts",
	    what, t.cuts);
	ck_assert_int_eq(t.cuts, o.cuts);
	free(t.problem);
	free(kept);
}

/* A shim that treats every xSync as if it had not happened. */
START_TEST(test_control_no_sync)
{
	pl_control("power-control(xSync ignored)", true, false, false, 4);
}
END_TEST

/*
 * A shim that never makes directory entries durable: a new database or
 * WAL, with every commit in it, can vanish.  The WAL outlives a clean
 * close (SQLITE_FCNTL_PERSIST_WAL), so it is new only with its database:
 * a new database each cut, or few cuts would find a new one to lose.
 */
START_TEST(test_control_no_dirsync)
{
	pl_control("power-control(directory never synced)", false, true,
	    false, 1);
}
END_TEST

/* The store's own lazy_sync (synchronous=NORMAL) on every connection:
 * commits are acknowledged before the WAL is synced. */
START_TEST(test_control_lazy_sync)
{
	pl_control("power-control(synchronous=NORMAL)", false, false, true,
	    4);
}
END_TEST

static Suite *
power_suite(void)
{
	Suite *s = suite_create("power_loss");
	TCase *tc = tcase_create("power_loss");
	TCase *ctl = tcase_create("controls");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_power_loss);
	suite_add_tcase(s, tc);
	tcase_set_timeout(ctl, 300);
	tcase_add_test(ctl, test_control_no_sync);
	tcase_add_test(ctl, test_control_no_dirsync);
	tcase_add_test(ctl, test_control_lazy_sync);
	suite_add_tcase(s, ctl);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(power_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? 1 : 0;
}
