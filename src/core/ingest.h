/*
 * ingest.h: the single writer that makes webhooks durable.
 *
 * HTTP threads decode and verify a webhook, then hand it here as a job
 * and suspend the connection.  One writer thread takes every queued job
 * (up to commit_batch) into one write transaction, commits it with
 * synchronous=FULL, and only then reports each job's outcome through its
 * done() callback, which answers the request.  So many requests share one
 * fsync (group commit), no thread blocks per request, and nothing is
 * acknowledged before it is on disk.
 *
 * When a commit fails (locked, full, read-only, I/O), every job of the
 * batch gets RS_ERR_BUSY (503, Wix retries), nothing of the batch is
 * kept, and the writer marks the store not ready.  It then probes the
 * store every second, and the next successful probe or commit marks it
 * ready again: the daemon recovers by itself.
 */
#ifndef RS_INGEST_H
#define RS_INGEST_H

#include <stdbool.h>
#include <stddef.h>

#include "adapters/store.h"
#include "domain/event.h"
#include "util/status.h"

struct ingest;

struct ingest_job {
	struct event	 ev;		/* the decoded event; owned by the job */
	char		*key;		/* dedupe key; owned by the job */
	/* Set by the writer before done() is called: */
	enum rs_status	 status;	/* RS_OK, RS_ERR_BUSY, RS_ERR_INPUT... */
	enum store_outcome outcome;	/* meaningful when status is RS_OK */
	const char	*why;		/* static: the store's reason for a
					 * failed commit, or NULL */
	/* Called once, from the ingest's responder thread, after the
	 * commit (or the failure), in commit order.  The job is the
	 * callee's again from then on. */
	void		(*done)(struct ingest_job *job, void *arg);
	void		*arg;
	struct ingest_job *next;	/* queue link: private to ingest */
};

/*
 * Start the writer over st with at most max_batch jobs per transaction.
 * Takes ownership of st, even on failure (store_close()d by
 * ingest_stop()).  Returns RS_OK and *out.
 */
enum rs_status	ingest_start(struct store *st, size_t max_batch,
		    struct ingest **out /* OUT */);

/*
 * Queue job.  RS_OK: the job belongs to the writer until its done()
 * runs.  RS_ERR_STOPPING: the writer is stopping; the job was not taken
 * and done() will not run.
 */
enum rs_status	ingest_submit(struct ingest *in, struct ingest_job *job);

/* Can the store take writes?  (last commit or probe succeeded) */
bool		ingest_ready(struct ingest *in);

/* Jobs queued or in the transaction under way. */
size_t		ingest_pending(struct ingest *in);

/*
 * Refuse new jobs, finish every queued one (commit and done()), join the
 * writer and the responder, and close the store.  NULL is fine.
 */
void		ingest_stop(struct ingest *in);

/* Release what a job owns (event and key), not the job itself. */
void		ingest_job_cleanup(struct ingest_job *job);

#endif
