/*
 * budget.h: a request budget shared by every process on one host, in a
 * small file mapped with mmap(MAP_SHARED).
 *
 * The budget is exact and sliding, like the REST client's in-process
 * one: for each id (an app instance), at most rpm requests may count in
 * any window of window_ms.  The file holds, per id, the times of the
 * last requests on CLOCK_MONOTONIC, which is system-wide on Linux and so
 * comparable between processes.  A time that is a whole window old, or
 * in the future (CLOCK_MONOTONIC restarts at a reboot), has expired.
 *
 * Mutual exclusion: flock(LOCK_EX) on the file between processes (and
 * between two struct budget of one process), and a mutex inside each
 * struct budget between its threads (flock is per open file
 * description).  The locks are held only to read or change the file,
 * never while a caller waits for room.
 *
 * Every process applies its own rpm to the log shared by all: the file
 * keeps, per id, room for the largest rpm any process opened it with
 * (it grows and never shrinks; delete it while no process runs to
 * shrink it), so processes configured with different rpm (a config
 * edit one of them has not reloaded yet) never send more than the
 * largest of them in a window, and none more than its own.  The window
 * is not stored: every process must use the same one (production always
 * uses 60 s; only tests shorten it).
 *
 * The file holds no secrets: ids and times only.  It is created with
 * mode 0600; opened by root, it is given to the owner of its directory
 * (so a daemon with its own user can open what a root command made).
 * A file with a bad header or size is rebuilt empty, with a log line.
 * A struct budget must not be used across fork(): the child shares the
 * parent's open file description, hence its lock; a child opens its
 * own.
 */
#ifndef RS_BUDGET_H
#define RS_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

struct budget;

/* Bytes of an id, without the NUL. */
#define BUDGET_ID_MAX	271
/* The largest rpm (requests per window per id). */
#define BUDGET_MAX_RPM	100000

/* The clock: milliseconds on CLOCK_MONOTONIC (or a test's fake clock).
 * ctx first.  Called with the budget's locks held: it must not call
 * back into the budget. */
typedef int64_t	(*budget_now_fn)(void *ctx);

/*
 * Open the budget file at path, creating it (mode 0600) if needed, for a
 * process allowing rpm (1..BUDGET_MAX_RPM) requests per id in any window
 * of window_ms (1..3600000).  now is the clock, read only with the locks
 * held (so no other process wrote a time later than the one read); NULL:
 * CLOCK_MONOTONIC.  path, now_ctx borrowed (path is copied; now_ctx must
 * outlive the budget).
 * RS_OK and *out (caller owns; budget_close()), RS_ERR_INPUT for a bad
 * argument, or RS_ERR_IO when the file cannot be opened, locked, sized or
 * mapped; then *why says why (caller frees).
 */
enum rs_status	budget_open(const char *path, int64_t rpm, int64_t window_ms,
		    budget_now_fn now, void *now_ctx,
		    struct budget **out /* OUT */, char **why /* OUT */);
/* Unmap and close.  No call may be running.  NULL is fine.  The file
 * stays for the next process. */
void		budget_close(struct budget *b);

/*
 * Try to take room for one request for id (1..BUDGET_ID_MAX bytes).
 * RS_OK and *wait_ms 0: taken; *slot names the time to hand to
 * budget_done() when the answer arrives.  RS_OK and *wait_ms > 0: no
 * room; try again after that long (the locks are released: sleep as
 * you like).  RS_ERR_INPUT: a bad id.  RS_ERR_IO: the file could not be
 * locked, grown or mapped, or has no room for another id (logged with
 * the file's name); nothing was taken.
 */
enum rs_status	budget_try_take(struct budget *b, const char *id,
		    int64_t *wait_ms /* OUT */, size_t *slot /* OUT */);

/*
 * The request of slot (from budget_try_take() for id) has its answer:
 * count it from now, not from when it was sent (the server counts a
 * request when it arrives, which is never later than the answer).  Never
 * moves a time back.  Errors are logged and otherwise ignored.
 */
void		budget_done(struct budget *b, const char *id, size_t slot);

/* The file's path.  Borrowed; valid until budget_close(). */
const char	*budget_path(const struct budget *b);

/*
 * Claim (claim true) or give back the right to run id's one job on this
 * host, say its backfill: the processes sharing the file then never run
 * it twice at once.  The claim is an OFD write lock (fcntl F_OFD_SETLK)
 * on one byte far past the budget's data, chosen by a hash of id; it
 * touches no data and is independent of the flock() above, and the
 * kernel drops it when the file is closed, also when the process dies.
 * Claims belong to the open file, so the threads of one struct budget
 * share them: a process must not run one id twice itself.  RS_OK:
 * claimed (or given back); RS_ERR_BUSY: another open of the file holds
 * it (or, one time in 2^30, another id's that hashes alike);
 * RS_ERR_INPUT: a bad id; RS_ERR_IO: fcntl failed (logged).
 */
enum rs_status	budget_claim(struct budget *b, const char *id, bool claim);

#endif
