/*
 * budget.c: the request budget shared by every process on one host.
 *
 * The file is a header and one fixed-size slot per id, mapped with
 * mmap(MAP_SHARED) by every process that uses it:
 *
 *	header	magic "RSWIXBGT", version, id field size, cap (times per
 *		slot), nslots; 64 bytes
 *	slot	id (NUL-terminated, "" when free), then cap int64 times on
 *		CLOCK_MONOTONIC in ms (INT64_MIN when unused)
 *
 * The file is exactly header + nslots * slot size; anything else is
 * damage, and the file is rebuilt empty (with a log line).  Native byte
 * order: the file never leaves the host.
 *
 * Key decision: a slot is a set of send times, not an ordered ring.  A
 * request may go when fewer than rpm of the slot's times are live (less
 * than a window old and not in the future); it then overwrites a time
 * that is not live.  So every request counted in the last window still
 * has its time in the slot, and no window ever holds more than rpm: the
 * same bound as the REST client's in-process ring, without its order.
 * That lets processes with different rpm share one slot (cap is the
 * largest of them; each applies its own rpm), lets budget_done() move a
 * time forward in place, and makes a time left in the future by a
 * reboot (CLOCK_MONOTONIC restarts) simply not live and free to reuse.
 * (One such time not reused by then comes back into the window once the
 * new uptime reaches it; that can only hold requests back, for one
 * window at most.)  Each take scans the slot: cap is 200 for Wix, so
 * that is a few hundred loads.
 *
 * Every access to the map happens with the struct's mutex and the
 * file's flock held, and re-reads the file's size first: another
 * process may have grown (or rebuilt) it since, so no pointer into the
 * map is kept across an unlock, and the map is redone when the size
 * changed.  The file only changes size under the lock.  Growth uses
 * posix_fallocate(), so a full disk is an error here rather than a
 * SIGBUS on the first write through the map.  The clock is read with
 * the locks held, so no other process can have written a time later
 * than the one read.
 *
 * Why by hand: nothing in our stack (libcurl, SQLite, OpenSSL, cJSON,
 * the C library) offers a rate limit shared between processes, let alone
 * an exact sliding window.  SQLite could hold the times, but a write
 * transaction per request would contend with the store's own writers
 * and fsync on every request; a shared map under flock costs three
 * syscalls (flock, fstat, unlock) and no I/O.
 *
 * Threads: any thread may call; the mutex serialises the threads of one
 * struct budget, flock everything else.  No lock is held on return.
 */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapters/budget.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xmalloc.h"

#define BUDGET_MAGIC		"RSWIXBGT"	/* 8 bytes, no NUL */
#define BUDGET_VERSION		1
#define BUDGET_ID_SIZE		(BUDGET_ID_MAX + 1)
#define BUDGET_MAX_WINDOW_MS	3600000
/* Bounds the file (ids idle for a window are reused first): 122 MiB
 * holds 65000 ids at rpm 200, 335 at the largest rpm. */
#define BUDGET_MAX_FILE		((size_t)256 * 1024 * 1024)
#define BUDGET_NEVER		INT64_MIN	/* an unused time */

/* The file's header. */
struct budget_hdr {
	char		magic[8];	/* BUDGET_MAGIC */
	uint32_t	version;	/* BUDGET_VERSION */
	uint32_t	id_size;	/* BUDGET_ID_SIZE */
	int64_t		cap;		/* times per slot: the largest rpm */
	int64_t		nslots;		/* slots in the file */
	uint8_t		spare[32];	/* zero */
};

/* One id's times. */
struct budget_slot {
	char		id[BUDGET_ID_SIZE];	/* NUL-terminated; "" free */
	int64_t		times[];		/* cap of them */
};

_Static_assert(sizeof(struct budget_hdr) == 64, "header size");
_Static_assert(BUDGET_ID_SIZE % 8 == 0, "times stay aligned");
_Static_assert(offsetof(struct budget_slot, times) == BUDGET_ID_SIZE,
    "no padding before the times");

struct budget {
	pthread_mutex_t	 mu;		/* everything below, and the flock */
	char		*path;
	int		 fd;
	unsigned char	*map;		/* the first maplen bytes, or NULL */
	size_t		 maplen;
	int64_t		 rpm;
	int64_t		 window;	/* ms */
	budget_now_fn	 now;
	void		*now_ctx;
	pid_t		 pid;		/* the opener's */
	char		 err[256];	/* the last failure, under mu */
};

static int64_t
real_now(void *ctx)
{
	(void)ctx;
	return clock_mono_ms();
}

/* Record why an operation failed, for the caller to log or return. */
static void __attribute__((format(printf, 2, 3)))
b_error(struct budget *b, const char *fmt, ...)
{
	char what[160];
	va_list ap;
	int e = errno;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(b->err, sizeof(b->err), "%s: %s: %s", b->path, what,
	    strerror(e));
}

static size_t
slot_size(int64_t cap)
{
	return sizeof(struct budget_slot) + (size_t)cap * sizeof(int64_t);
}

static size_t
max_slots(int64_t cap)
{
	return (BUDGET_MAX_FILE - sizeof(struct budget_hdr)) / slot_size(cap);
}

/* The header and slots, valid until the next unlock or resize. */
static struct budget_hdr *
hdr_of(struct budget *b)
{
	return (struct budget_hdr *)(void *)b->map;
}

static struct budget_slot *
slot_at(struct budget *b, int64_t cap, int64_t i)
{
	return (struct budget_slot *)(void *)(b->map +
	    sizeof(struct budget_hdr) + (size_t)i * slot_size(cap));
}

/* Times after this one, and not after now, are live. */
static int64_t
window_start(int64_t now, int64_t window)
{
	return now < INT64_MIN + window ? INT64_MIN : now - window;
}

static bool
live(int64_t t, int64_t lo, int64_t now)
{
	return t > lo && t <= now;
}

/* Map the file's first len bytes (0: none).  The file must be that
 * long. */
static enum rs_status
b_map(struct budget *b, size_t len)
{
	void *p;

	if (b->map != NULL && b->maplen == len)
		return RS_OK;
	if (b->map != NULL)
		(void)munmap(b->map, b->maplen);
	b->map = NULL;
	b->maplen = 0;
	if (len == 0)
		return RS_OK;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (p == MAP_FAILED) {
		b_error(b, "mmap of %zu bytes", len);
		return RS_ERR_IO;
	}
	b->map = p;
	b->maplen = len;
	return RS_OK;
}

/* Grow the file from maplen to len bytes (what is added reads as zeros,
 * with its blocks allocated) and map all of it. */
static enum rs_status
b_grow(struct budget *b, size_t len)
{
	size_t old = b->maplen;
	int e;

	if (len > old) {
		e = posix_fallocate(b->fd, (off_t)old, (off_t)(len - old));
		if (e != 0) {
			/* Leave the size as it was, not half grown. */
			(void)ftruncate(b->fd, (off_t)old);
			errno = e;
			b_error(b, "growing to %zu bytes", len);
			return RS_ERR_IO;
		}
	}
	return b_map(b, len);
}

/* Why the mapped file is not a budget file, or NULL. */
static const char *
b_check(struct budget *b)
{
	const struct budget_hdr *h;

	if (b->maplen < sizeof(*h))
		return "shorter than its header";
	h = hdr_of(b);
	if (memcmp(h->magic, BUDGET_MAGIC, sizeof(h->magic)) != 0)
		return "bad magic";
	if (h->version != BUDGET_VERSION || h->id_size != BUDGET_ID_SIZE)
		return "unknown version";
	if (h->cap < 1 || h->cap > BUDGET_MAX_RPM)
		return "bad capacity";
	if (h->nslots < 0 || (uint64_t)h->nslots > max_slots(h->cap))
		return "bad number of slots";
	if (b->maplen != sizeof(*h) + (size_t)h->nslots * slot_size(h->cap))
		return "size does not match its header";
	return NULL;
}

/* Empty the file and write a header with no slots.  reason NULL: a new
 * file, not worth a log line. */
static enum rs_status
b_rebuild(struct budget *b, int64_t cap, const char *reason)
{
	struct budget_hdr *h;
	enum rs_status st;

	if (reason != NULL)
		log_warnx("budget %s: %s: rebuilding it empty", b->path,
		    reason);
	/* Whatever its size: a file too large was never mapped. */
	(void)b_map(b, 0);
	if (ftruncate(b->fd, 0) == -1) {
		b_error(b, "ftruncate");
		return RS_ERR_IO;
	}
	if ((st = b_grow(b, sizeof(*h))) != RS_OK)
		return st;
	h = hdr_of(b);
	memcpy(h->magic, BUDGET_MAGIC, sizeof(h->magic));
	h->version = BUDGET_VERSION;
	h->id_size = BUDGET_ID_SIZE;
	h->cap = cap;
	h->nslots = 0;
	return RS_OK;
}

/* Give every slot room for cap times, keeping the times it has. */
static enum rs_status
b_widen(struct budget *b, int64_t cap)
{
	struct budget_slot *s;
	unsigned char *from;
	enum rs_status st;
	int64_t old, n, i, k;
	size_t olds;

	old = hdr_of(b)->cap;
	n = hdr_of(b)->nslots;
	if ((uint64_t)n > max_slots(cap)) {
		errno = EFBIG;
		b_error(b, "%lld ids of %lld times each", (long long)n,
		    (long long)cap);
		return RS_ERR_IO;
	}
	olds = slot_size(old);
	if ((st = b_grow(b, sizeof(struct budget_hdr) +
	    (size_t)n * slot_size(cap))) != RS_OK)
		return st;
	/* Last slot first: each moves up, over slots already moved. */
	for (i = n - 1; i >= 0; i--) {
		from = b->map + sizeof(struct budget_hdr) + (size_t)i * olds;
		s = slot_at(b, cap, i);
		memmove(s, from, olds);
		for (k = old; k < cap; k++)
			s->times[k] = BUDGET_NEVER;
	}
	hdr_of(b)->cap = cap;
	log_info("budget %s: room for %lld requests per window and id (was "
	    "%lld)", b->path, (long long)cap, (long long)old);
	return RS_OK;
}

/*
 * Take the mutex and the flock, then bring the map up to date with the
 * file: redo it if another process resized the file, rebuild a damaged
 * file, widen the slots to this process's rpm.  Whatever the result,
 * the caller calls b_leave(); on failure b->err says why.
 */
static enum rs_status
b_enter(struct budget *b)
{
	struct stat sb;
	const char *bad = NULL;
	enum rs_status st;

	if (getpid() != b->pid)
		RS_PANIC("a budget used across fork()");
	pthread_mutex_lock(&b->mu);
	while (flock(b->fd, LOCK_EX) == -1) {
		if (errno != EINTR) {
			b_error(b, "flock");
			return RS_ERR_IO;
		}
	}
	if (fstat(b->fd, &sb) == -1) {
		b_error(b, "fstat");
		return RS_ERR_IO;
	}
	if (sb.st_size < 0 || (uintmax_t)sb.st_size > BUDGET_MAX_FILE) {
		(void)b_map(b, 0);
		bad = "too large";
	} else if ((st = b_map(b, (size_t)sb.st_size)) != RS_OK)
		return st;
	else if (sb.st_size != 0)
		bad = b_check(b);
	if (sb.st_size == 0 || bad != NULL) {
		if ((st = b_rebuild(b, b->rpm, bad)) != RS_OK)
			return st;
	}
	if (hdr_of(b)->cap < b->rpm)
		return b_widen(b, b->rpm);
	return RS_OK;
}

static void
b_leave(struct budget *b)
{
	(void)flock(b->fd, LOCK_UN);
	pthread_mutex_unlock(&b->mu);
}

static struct budget_slot *
b_find(struct budget *b, const char *id, size_t len)
{
	struct budget_slot *s;
	int64_t i, cap = hdr_of(b)->cap, n = hdr_of(b)->nslots;

	/* len + 1 <= BUDGET_ID_SIZE: the NUL must match too, and a field
	 * without one (damage) matches nothing. */
	for (i = 0; i < n; i++) {
		s = slot_at(b, cap, i);
		if (memcmp(s->id, id, len + 1) == 0)
			return s;
	}
	return NULL;
}

static void
slot_init(struct budget_slot *s, int64_t cap, const char *id, size_t len)
{
	int64_t k;

	memset(s->id, 0, sizeof(s->id));
	memcpy(s->id, id, len);
	for (k = 0; k < cap; k++)
		s->times[k] = BUDGET_NEVER;
}

/* A slot for id: a free one, one whose times have all expired, or a new
 * one at the end of the file.  NULL and b->err on failure. */
static struct budget_slot *
b_add(struct budget *b, const char *id, size_t len, int64_t lo, int64_t now)
{
	struct budget_slot *s;
	int64_t i, k, cap = hdr_of(b)->cap, n = hdr_of(b)->nslots;

	for (i = 0; i < n; i++) {
		s = slot_at(b, cap, i);
		for (k = 0; k < cap; k++)
			if (live(s->times[k], lo, now))
				break;
		if (s->id[0] == '\0' || k == cap) {
			slot_init(s, cap, id, len);
			return s;
		}
	}
	if ((uint64_t)n + 1 > max_slots(cap)) {
		errno = ENOSPC;
		b_error(b, "%lld ids active in the last window, no room for "
		    "more", (long long)n);
		return NULL;
	}
	if (b_grow(b, b->maplen + slot_size(cap)) != RS_OK || b->map == NULL)
		return NULL;
	s = slot_at(b, cap, n);
	slot_init(s, cap, id, len);
	hdr_of(b)->nslots = n + 1;
	return s;
}

/* The length of a usable id, or 0. */
static size_t
id_len(const char *id)
{
	size_t len;

	if (id == NULL)
		return 0;
	len = strnlen(id, BUDGET_ID_MAX + 1);
	return len <= BUDGET_ID_MAX ? len : 0;
}

enum rs_status
budget_try_take(struct budget *b, const char *id, int64_t *wait_ms,
    size_t *slot)
{
	struct budget_slot *s;
	enum rs_status st;
	int64_t now, lo, first, cap, i, live_n, free_i;
	size_t len;

	*wait_ms = 0;
	*slot = 0;
	if ((len = id_len(id)) == 0)
		return RS_ERR_INPUT;
	if ((st = b_enter(b)) != RS_OK)
		goto out;
	now = b->now(b->now_ctx);
	lo = window_start(now, b->window);
	if ((s = b_find(b, id, len)) == NULL &&
	    (s = b_add(b, id, len, lo, now)) == NULL) {
		st = RS_ERR_IO;
		goto out;
	}
	cap = hdr_of(b)->cap;
	live_n = 0;
	free_i = -1;
	first = INT64_MAX;
	for (i = 0; i < cap; i++) {
		if (live(s->times[i], lo, now)) {
			live_n++;
			if (s->times[i] < first)
				first = s->times[i];
		} else if (free_i == -1)
			free_i = i;
	}
	if (live_n < b->rpm) {
		/* live_n < rpm <= cap, so some time is not live. */
		if (free_i == -1)
			RS_PANIC("no free time in a slot with room");
		s->times[free_i] = now;
		*slot = (size_t)free_i;
	} else
		*wait_ms = first + b->window - now;	/* 1 .. window */
out:
	if (st == RS_ERR_IO)
		log_warnx("budget %s", b->err);
	b_leave(b);
	return st;
}

void
budget_done(struct budget *b, const char *id, size_t slot)
{
	struct budget_slot *s;
	int64_t now;
	size_t len;

	if ((len = id_len(id)) == 0)
		return;
	if (b_enter(b) != RS_OK) {
		log_warnx("budget %s", b->err);
		goto out;
	}
	/* Gone (rebuilt, or idle for a window and reused): nothing to
	 * move. */
	if ((s = b_find(b, id, len)) == NULL ||
	    slot >= (size_t)hdr_of(b)->cap)
		goto out;
	now = b->now(b->now_ctx);
	if (s->times[slot] < now)
		s->times[slot] = now;
out:
	b_leave(b);
}

/*
 * Run as root (a command beside a daemon that has its own user), give the
 * file to the owner of its directory, as SQLite gives a -wal file the
 * database's owner: else a daemon started after root created the file
 * could not open it.
 */
static void
b_chown_like_dir(struct budget *b, const struct stat *sb)
{
	const char *slash = strrchr(b->path, '/');
	struct stat db;
	char *dir;

	if (slash == NULL)
		dir = xstrdup(".");
	else if (slash == b->path)
		dir = xstrdup("/");
	else
		dir = xstrndup(b->path, (size_t)(slash - b->path));
	if (stat(dir, &db) == 0 && (db.st_uid != sb->st_uid ||
	    db.st_gid != sb->st_gid) &&
	    fchown(b->fd, db.st_uid, db.st_gid) == -1)
		log_warn("budget %s: fchown", b->path);
	free(dir);
}

enum rs_status
budget_open(const char *path, int64_t rpm, int64_t window_ms,
    budget_now_fn now, void *now_ctx, struct budget **out, char **why)
{
	struct budget *b = NULL;
	struct stat sb;
	enum rs_status st;

	*out = NULL;
	*why = NULL;
	if (path == NULL || path[0] == '\0' || rpm < 1 ||
	    rpm > BUDGET_MAX_RPM || window_ms < 1 ||
	    window_ms > BUDGET_MAX_WINDOW_MS) {
		*why = xstrdup("budget_open: no path, or rpm or window out of "
		    "range");
		return RS_ERR_INPUT;
	}
	b = xcalloc(1, sizeof(*b));
	b->path = xstrdup(path);
	b->rpm = rpm;
	b->window = window_ms;
	b->now = now != NULL ? now : real_now;
	b->now_ctx = now_ctx;
	b->pid = getpid();
	if (pthread_mutex_init(&b->mu, NULL) != 0)
		fatalx("%s: pthread_mutex_init failed", __func__);
	b->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
	    O_NOCTTY, 0600);
	if (b->fd == -1) {
		*why = xasprintf("%s: %s", path, strerror(errno));
		st = RS_ERR_IO;
		goto fail;
	}
	if (fstat(b->fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
		*why = xasprintf("%s: not a regular file", path);
		st = RS_ERR_IO;
		goto fail;
	}
	if (geteuid() == 0)
		b_chown_like_dir(b, &sb);
	/* Create, check, repair or widen it now, so a problem shows at
	 * startup rather than on the first request. */
	st = b_enter(b);
	if (st != RS_OK)
		*why = xstrdup(b->err);
	b_leave(b);
	if (st != RS_OK)
		goto fail;
	*out = b;
	return RS_OK;
fail:
	budget_close(b);
	return st;
}

void
budget_close(struct budget *b)
{
	if (b == NULL)
		return;
	(void)b_map(b, 0);
	if (b->fd != -1)
		close(b->fd);
	pthread_mutex_destroy(&b->mu);
	free(b->path);
	free(b);
}

const char *
budget_path(const struct budget *b)
{
	return b->path;
}

/* Claims live at CLAIM_BASE + (hash % CLAIM_SPAN): past any size the
 * budget's data can reach, inside a 64-bit off_t. */
#define CLAIM_BASE	((off_t)1 << 40)
#define CLAIM_SPAN	((uint64_t)1 << 30)

enum rs_status
budget_claim(struct budget *b, const char *id, bool claim)
{
	struct flock fl;
	uint64_t h = 14695981039346656037ull;	/* FNV-1a, 64 bits */
	size_t len;

	if (id == NULL || (len = strlen(id)) == 0 || len > BUDGET_ID_MAX)
		return RS_ERR_INPUT;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)id[i];
		h *= 1099511628211ull;
	}
	memset(&fl, 0, sizeof(fl));
	fl.l_type = claim ? F_WRLCK : F_UNLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = CLAIM_BASE + (off_t)(h % CLAIM_SPAN);
	fl.l_len = 1;
	if (fcntl(b->fd, F_OFD_SETLK, &fl) == 0)
		return RS_OK;
	if (claim && (errno == EAGAIN || errno == EACCES))
		return RS_ERR_BUSY;
	log_warn("budget %s: fcntl(F_OFD_SETLK) for %s", b->path,
	    claim ? "a claim" : "giving a claim back");
	return RS_ERR_IO;
}
