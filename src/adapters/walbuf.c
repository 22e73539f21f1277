/*
 * walbuf.c: a SQLite VFS that gathers a transaction's WAL writes (see
 * walbuf.h for why, and for which connections may use it).
 *
 * A WAL file opened through this VFS is a struct wb_file: SQLite's file
 * object, then the wrapped VFS's own file object right after it, which
 * does the real work.  Writes that continue the previous one are copied
 * into a buffer; any other operation on the file first writes the buffer
 * out, in 64 KiB writes, so SQLite never observes the difference: a read
 * sees what was written, a sync makes it durable, a size includes it.
 * A failed write-out is reported by the operation that caused it (a
 * sync, most often), which SQLite treats as a failed commit; the buffer
 * is dropped either way, exactly as the bytes of a failed write are.
 *
 * Files other than WAL files are opened by the wrapped VFS straight
 * into the space SQLite gives us, with the wrapped VFS's methods: this
 * VFS costs them nothing.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "adapters/walbuf.h"

/* Gather at most this much before writing it out (a batch of webhooks
 * makes a few hundred KiB of frames). */
#define WB_MAX		(1024 * 1024)
/* The first buffer; it doubles up to WB_MAX. */
#define WB_FIRST	(64 * 1024)
/* The most one write hands down: SQLite's unix VFS takes at most 128
 * KiB - 1 bytes per call (it masks the length to 17 bits and calls a
 * shorter write a full disk). */
#define WB_CHUNK	(64 * 1024)
/* Distinct wrapped VFSes we register a layer for (the default is
 * usually "unix" for the process's life; tests swap it). */
#define WB_NSHIMS	4

struct wb_file {
	sqlite3_file	 base;		/* pMethods = &wb_io */
	sqlite3_file	*real;		/* the wrapped file, after us */
	unsigned char	*buf;		/* gathered bytes, or NULL */
	size_t		 len;		/* bytes in buf */
	size_t		 cap;		/* bytes allocated */
	sqlite3_int64	 off;		/* file offset of buf[0] */
};

struct wb_shim {
	sqlite3_vfs	 vfs;		/* pAppData = the wrapped VFS */
	char		 name[32];
};

/* Our part of a WAL file's object, rounded as SQLite rounds sizes. */
#define WB_HDR		((sizeof(struct wb_file) + 7) & ~(size_t)7)

static pthread_mutex_t	wb_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct wb_shim	wb_shims[WB_NSHIMS];
static int		wb_nshims;

static sqlite3_vfs *
wb_real_vfs(sqlite3_vfs *vfs)
{
	return vfs->pAppData;
}

/* Write the gathered bytes out; the buffer is empty afterwards. */
static int
wb_flush(struct wb_file *f)
{
	size_t done, n;
	int rc = SQLITE_OK;

	for (done = 0; done < f->len && rc == SQLITE_OK; done += n) {
		n = f->len - done < WB_CHUNK ? f->len - done : WB_CHUNK;
		rc = f->real->pMethods->xWrite(f->real, f->buf + done, (int)n,
		    f->off + (sqlite3_int64)done);
	}
	f->len = 0;
	return rc;
}

static int
wb_close(sqlite3_file *file)
{
	struct wb_file *f = (struct wb_file *)file;
	int rc = wb_flush(f), rc2;

	rc2 = f->real->pMethods->xClose(f->real);
	free(f->buf);
	f->buf = NULL;
	f->cap = 0;
	return rc != SQLITE_OK ? rc : rc2;
}

static int
wb_read(sqlite3_file *file, void *p, int amt, sqlite3_int64 off)
{
	struct wb_file *f = (struct wb_file *)file;
	int rc;

	if ((rc = wb_flush(f)) != SQLITE_OK)
		return rc;
	return f->real->pMethods->xRead(f->real, p, amt, off);
}

/* Room for need more bytes in buf; false if there is none to be had. */
static bool
wb_reserve(struct wb_file *f, size_t need)
{
	size_t cap = f->cap != 0 ? f->cap : WB_FIRST;
	unsigned char *nb;

	if (f->len + need <= f->cap)
		return true;
	while (cap < f->len + need)
		cap *= 2;
	if (cap > WB_MAX)
		return false;
	if ((nb = realloc(f->buf, cap)) == NULL)
		return false;
	f->buf = nb;
	f->cap = cap;
	return true;
}

static int
wb_write(sqlite3_file *file, const void *p, int amt, sqlite3_int64 off)
{
	struct wb_file *f = (struct wb_file *)file;
	size_t n = amt > 0 ? (size_t)amt : 0;
	int rc;

	if (n == 0)
		return SQLITE_OK;

	/* Only a write that continues the gathered ones joins them. */
	if (f->len > 0 && off != f->off + (sqlite3_int64)f->len &&
	    (rc = wb_flush(f)) != SQLITE_OK)
		return rc;
	if (!wb_reserve(f, n)) {
		if ((rc = wb_flush(f)) != SQLITE_OK)
			return rc;
		if (!wb_reserve(f, n))	/* too big to gather at all */
			return f->real->pMethods->xWrite(f->real, p, amt,
			    off);
	}
	if (f->len == 0)
		f->off = off;
	memcpy(f->buf + f->len, p, n);
	f->len += n;
	return SQLITE_OK;
}

static int
wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct wb_file *f = (struct wb_file *)file;
	int rc;

	if ((rc = wb_flush(f)) != SQLITE_OK)
		return rc;
	return f->real->pMethods->xTruncate(f->real, size);
}

static int
wb_sync(sqlite3_file *file, int flags)
{
	struct wb_file *f = (struct wb_file *)file;
	int rc;

	if ((rc = wb_flush(f)) != SQLITE_OK)
		return rc;
	return f->real->pMethods->xSync(f->real, flags);
}

static int
wb_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct wb_file *f = (struct wb_file *)file;
	int rc;

	if ((rc = wb_flush(f)) != SQLITE_OK)
		return rc;
	return f->real->pMethods->xFileSize(f->real, size);
}

static int
wb_lock(sqlite3_file *file, int lock)
{
	struct wb_file *f = (struct wb_file *)file;

	return f->real->pMethods->xLock(f->real, lock);
}

static int
wb_unlock(sqlite3_file *file, int lock)
{
	struct wb_file *f = (struct wb_file *)file;

	return f->real->pMethods->xUnlock(f->real, lock);
}

static int
wb_check_reserved(sqlite3_file *file, int *out)
{
	struct wb_file *f = (struct wb_file *)file;

	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int
wb_file_control(sqlite3_file *file, int op, void *arg)
{
	struct wb_file *f = (struct wb_file *)file;
	int rc;

	/* Some controls look at or change the file (a size hint, say):
	 * let them see it whole. */
	if ((rc = wb_flush(f)) != SQLITE_OK)
		return rc;
	return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int
wb_sector_size(sqlite3_file *file)
{
	struct wb_file *f = (struct wb_file *)file;

	return f->real->pMethods->xSectorSize(f->real);
}

static int
wb_device_characteristics(sqlite3_file *file)
{
	struct wb_file *f = (struct wb_file *)file;

	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/*
 * Version 1: SQLite maps and shares the database file and its index,
 * never a WAL file, so a WAL file needs none of the later methods.
 */
static const sqlite3_io_methods wb_io = {
	.iVersion = 1,
	.xClose = wb_close,
	.xRead = wb_read,
	.xWrite = wb_write,
	.xTruncate = wb_truncate,
	.xSync = wb_sync,
	.xFileSize = wb_file_size,
	.xLock = wb_lock,
	.xUnlock = wb_unlock,
	.xCheckReservedLock = wb_check_reserved,
	.xFileControl = wb_file_control,
	.xSectorSize = wb_sector_size,
	.xDeviceCharacteristics = wb_device_characteristics
};

static int
wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
    int *out_flags)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);
	struct wb_file *f = (struct wb_file *)file;
	int rc;

	if ((flags & SQLITE_OPEN_WAL) == 0)
		return real->xOpen(real, name, file, flags, out_flags);
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(void *)((char *)f + WB_HDR);
	rc = real->xOpen(real, name, f->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		if (f->real->pMethods != NULL)
			(void)f->real->pMethods->xClose(f->real);
		f->base.pMethods = NULL;
		return rc;
	}
	f->base.pMethods = &wb_io;
	return SQLITE_OK;
}

static int
wb_delete(sqlite3_vfs *vfs, const char *name, int dirsync)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xDelete(real, name, dirsync);
}

static int
wb_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xAccess(real, name, flags, out);
}

static int
wb_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xFullPathname(real, name, n, out);
}

static void *
wb_dlopen(sqlite3_vfs *vfs, const char *name)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xDlOpen(real, name);
}

static void
wb_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	real->xDlError(real, n, msg);
}

static void
(*wb_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xDlSym(real, h, sym);
}

static void
wb_dlclose(sqlite3_vfs *vfs, void *h)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	real->xDlClose(real, h);
}

static int
wb_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xRandomness(real, n, out);
}

static int
wb_sleep(sqlite3_vfs *vfs, int us)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xSleep(real, us);
}

static int
wb_current_time(sqlite3_vfs *vfs, double *out)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xCurrentTime(real, out);
}

static int
wb_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xGetLastError != NULL ?
	    real->xGetLastError(real, n, out) : 0;
}

static int
wb_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	sqlite3_vfs *real = wb_real_vfs(vfs);

	return real->xCurrentTimeInt64(real, out);
}

const char *
walbuf_vfs(void)
{
	sqlite3_vfs *real, *v;
	struct wb_shim *sh;
	const char *name = NULL;
	int i;

	if ((real = sqlite3_vfs_find(NULL)) == NULL)
		return NULL;
	pthread_mutex_lock(&wb_mtx);
	for (i = 0; i < wb_nshims; i++) {
		sh = &wb_shims[i];
		if (&sh->vfs == real || wb_real_vfs(&sh->vfs) == real) {
			name = sh->name;
			goto out;
		}
	}
	/* A wrapped VFS of version 1 lacks xCurrentTimeInt64. */
	if (wb_nshims == WB_NSHIMS || real->iVersion < 2)
		goto out;
	sh = &wb_shims[wb_nshims];
	memset(sh, 0, sizeof(*sh));
	(void)snprintf(sh->name, sizeof(sh->name), "rs-walbuf-%d",
	    wb_nshims);
	v = &sh->vfs;
	v->iVersion = 2;
	v->szOsFile = (int)WB_HDR + real->szOsFile;
	v->mxPathname = real->mxPathname;
	v->zName = sh->name;
	v->pAppData = real;
	v->xOpen = wb_open;
	v->xDelete = wb_delete;
	v->xAccess = wb_access;
	v->xFullPathname = wb_full_pathname;
	v->xDlOpen = wb_dlopen;
	v->xDlError = wb_dlerror;
	v->xDlSym = wb_dlsym;
	v->xDlClose = wb_dlclose;
	v->xRandomness = wb_randomness;
	v->xSleep = wb_sleep;
	v->xCurrentTime = wb_current_time;
	v->xGetLastError = wb_last_error;
	v->xCurrentTimeInt64 = wb_current_time64;
	if (sqlite3_vfs_register(v, 0) != SQLITE_OK)
		goto out;
	wb_nshims++;
	name = sh->name;
out:
	pthread_mutex_unlock(&wb_mtx);
	return name;
}
