/*
 * ingest.c: the writer thread and its group commit.
 *
 * Thread ownership: the queues are shared (one mutex, two condition
 * variables); the store and everything done with it belong to the writer
 * thread alone.  done() callbacks run on the responder thread, after the
 * batch's fate is known, so the writer can start the next transaction
 * while the last batch's answers go out; they must not block.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ingest.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/xmalloc.h"

/* While the store is not ready, probe it this often. */
#define INGEST_PROBE_MS	1000
/* While it is ready and no commit has shown it still is, this often, so
 * that /readyz turns 503 for a lock, a read-only file or a full disk
 * without waiting for a webhook to fail first. */
#define INGEST_IDLE_PROBE_MS	5000
/* While it is not ready, a reminder in the log this often: the failed
 * probes in between are not logged. */
#define INGEST_REMIND_MS	60000

struct ingest {
	struct store		*st;
	size_t			 max_batch;
	pthread_t		 thread;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cond;
	struct ingest_job	*head;		/* queue, oldest first */
	struct ingest_job	*tail;
	pthread_t		 responder;
	pthread_cond_t		 done_cond;	/* with mtx */
	struct ingest_job	*done_head;	/* decided, not yet answered */
	struct ingest_job	*done_tail;
	size_t			 answering;	/* jobs on the done list */
	bool			 writer_done;	/* the writer has exited */
	size_t			 queued;
	size_t			 inbatch;
	bool			 stopping;
	atomic_bool		 ready;
	/* The writer thread's alone: why the store is not ready (a static
	 * string), since when, and when the log last said so. */
	const char		*down_why;
	int64_t			 down_since;
	int64_t			 down_said;
};

static const int64_t commit_bounds_us[] = { 500, 1000, 2500, 5000, 10000,
    25000, 50000, 100000, 250000, 500000, 1000000, 2500000 };
static const int64_t batch_bounds[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256,
    512, 1024 };

static void
ingest_define_metrics(void)
{
	metrics_define("refundsync_events_total", METRIC_COUNTER,
	    "Webhook events committed, by outcome.");
	metrics_define("refundsync_store_errors_total", METRIC_COUNTER,
	    "Write transactions the store could not commit.");
	metrics_define("refundsync_batch_redos_total", METRIC_COUNTER,
	    "Batches applied again event by event because one event "
	    "failed on its own.");
	metrics_define("refundsync_store_ready", METRIC_GAUGE,
	    "1 when the store can take writes, else 0.");
	metrics_define_histogram("refundsync_commit_seconds",
	    "Time to commit one group of webhooks durably.",
	    commit_bounds_us, sizeof(commit_bounds_us) /
	    sizeof(commit_bounds_us[0]), 1000000);
	metrics_define_histogram("refundsync_commit_batch_size",
	    "Webhooks made durable by one commit.", batch_bounds,
	    sizeof(batch_bounds) / sizeof(batch_bounds[0]), 1);
	/* Counters without labels are shown from the start, at 0, so a
	 * rate over them has a first sample. */
	metrics_add("refundsync_store_errors_total", "", 0);
	metrics_add("refundsync_batch_redos_total", "", 0);
}

/*
 * Record whether the store can take writes (writer thread only), and log
 * its changes: one line when it goes bad, with the reason; one when the
 * reason changes; a reminder every INGEST_REMIND_MS while it stays bad;
 * one line when it recovers.  Each failed probe or batch calls this, so
 * the log does not repeat itself once a second.
 */
static void
set_ready(struct ingest *in, bool ready, enum rs_status why)
{
	bool was = atomic_exchange(&in->ready, ready);
	int64_t now = clock_mono_ms();

	if (!ready) {
		const char *e = store_last_error(in->st);

		if (e == NULL)
			e = rs_strstatus(why);
		if (was) {
			log_warnx("store: not ready: %s; answering 503 until "
			    "it recovers", e);
			in->down_since = now;
		} else if (strcmp(e, in->down_why) != 0)
			log_warnx("store: still not ready, now: %s", e);
		else if (now - in->down_said >= INGEST_REMIND_MS)
			log_warnx("store: still not ready after %lld s: %s",
			    (long long)(now - in->down_since) / 1000, e);
		else
			e = NULL;
		if (e != NULL) {
			in->down_why = e;
			in->down_said = now;
		}
	} else if (!was)
		log_info("store: ready again after %lld s",
		    (long long)(now - in->down_since) / 1000);
	metrics_set("refundsync_store_ready", "", ready ? 1 : 0);
}

/*
 * Apply the batch in one transaction and commit it; fill each job's
 * status and outcome.  Not isolated: the events go without their own
 * savepoints (store_begin_batch), and the first that fails on its own
 * (bad input, say, not a store that cannot write) rolls everything back
 * and sets *redo; the caller then applies the batch again, isolated,
 * where that event fails alone and the others are kept.  Failures are
 * rare, so most batches save a savepoint and its statement journal per
 * event.
 */
static enum rs_status
apply_batch(struct ingest *in, struct ingest_job *batch, bool isolated,
    bool *redo)
{
	struct ingest_job *j;
	enum rs_status st;

	*redo = false;
	st = isolated ? store_begin(in->st) : store_begin_batch(in->st);
	for (j = batch; st == RS_OK && j != NULL; j = j->next) {
		j->status = store_apply_event(in->st, &j->ev, j->key,
		    &j->outcome);
		if (j->status == RS_ERR_BUSY || j->status == RS_ERR_IO)
			st = j->status;
		else if (j->status != RS_OK && !isolated) {
			*redo = true;
			break;
		} else if (j->status != RS_OK)
			log_warnx("ingest: event %s: %s", j->key,
			    rs_strstatus(j->status));
	}
	if (st == RS_OK && !*redo)
		st = store_commit(in->st);
	else
		store_rollback(in->st);
	return st;
}

/* Apply and commit one batch; fill each job's status and outcome. */
static void
run_batch(struct ingest *in, struct ingest_job *batch, size_t n)
{
	struct ingest_job *j;
	enum rs_status st;
	int64_t t0 = clock_mono_ms();
	struct timespec a, b;
	bool redo;

	clock_gettime(CLOCK_MONOTONIC, &a);
	st = apply_batch(in, batch, false, &redo);
	if (st == RS_OK && redo) {
		log_debug("ingest: an event of a batch of %zu failed; "
		    "applying the batch again, each event on its own", n);
		metrics_add("refundsync_batch_redos_total", "", 1);
		st = apply_batch(in, batch, true, &redo);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);

	if (st != RS_OK) {
		const char *why = store_last_error(in->st);

		if (why == NULL)
			why = rs_strstatus(st);
		metrics_add("refundsync_store_errors_total", "", 1);
		for (j = batch; j != NULL; j = j->next) {
			j->status = RS_ERR_BUSY;
			j->why = why;
		}
		set_ready(in, false, st);
		/* Each refused webhook gets its line (its done()), and the
		 * store's state its own (set_ready). */
		log_debug("ingest: batch of %zu not committed: %s", n, why);
		return;
	}
	set_ready(in, true, RS_OK);
	metrics_observe("refundsync_commit_seconds", "",
	    (int64_t)(b.tv_sec - a.tv_sec) * 1000000 +
	    (b.tv_nsec - a.tv_nsec) / 1000);
	metrics_observe("refundsync_commit_batch_size", "", (int64_t)n);
	for (j = batch; j != NULL; j = j->next) {
		char label[32];

		if (j->status != RS_OK)
			continue;
		snprintf(label, sizeof(label), "outcome=\"%s\"",
		    store_outcome_name(j->outcome));
		metrics_add("refundsync_events_total", label, 1);
	}
	log_debug("ingest: committed %zu events in %lld ms", n,
	    (long long)(clock_mono_ms() - t0));
}

static void *
writer_main(void *arg)
{
	struct ingest *in = arg;
	int64_t last_probe = 0;

	(void)pthread_setname_np(pthread_self(), "rs-writer");
	pthread_mutex_lock(&in->mtx);
	for (;;) {
		struct ingest_job *batch, *last;
		size_t n;

		while (in->head == NULL && !in->stopping) {
			if (atomic_load(&in->ready)) {
				int64_t due = last_probe + INGEST_IDLE_PROBE_MS;
				struct timespec ts;
				enum rs_status st;

				if (clock_mono_ms() < due) {
					clock_gettime(CLOCK_MONOTONIC, &ts);
					ts.tv_sec += (due - clock_mono_ms()) /
					    1000 + 1;
					pthread_cond_timedwait(&in->cond,
					    &in->mtx, &ts);
					continue;
				}
				/* Idle, and no commit for a while: does a
				 * write still go through? */
				pthread_mutex_unlock(&in->mtx);
				st = store_probe(in->st);
				last_probe = clock_mono_ms();
				if (st != RS_OK)
					set_ready(in, false, st);
				pthread_mutex_lock(&in->mtx);
				continue;
			}
			/* Not ready: probe now and then, so /readyz comes
			 * back without waiting for traffic. */
			if (clock_mono_ms() - last_probe >= INGEST_PROBE_MS) {
				enum rs_status st;

				pthread_mutex_unlock(&in->mtx);
				st = store_probe(in->st);
				last_probe = clock_mono_ms();
				set_ready(in, st == RS_OK, st);
				pthread_mutex_lock(&in->mtx);
				continue;
			}
			{
				struct timespec ts;

				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_nsec += 200 * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&in->cond, &in->mtx,
				    &ts);
			}
		}
		if (in->head == NULL && in->stopping)
			break;
		/* Up to max_batch jobs, and at least one: head is set. */
		batch = last = in->head;
		for (n = 1; last->next != NULL && n < in->max_batch; n++)
			last = last->next;
		in->head = last->next;
		if (in->head == NULL)
			in->tail = NULL;
		last->next = NULL;
		in->queued -= n;
		in->inbatch = n;
		pthread_mutex_unlock(&in->mtx);

		run_batch(in, batch, n);
		/* A commit, or its failure, tells as much as a probe. */
		last_probe = clock_mono_ms();

		pthread_mutex_lock(&in->mtx);
		in->inbatch = 0;
		if (in->done_tail != NULL)
			in->done_tail->next = batch;
		else
			in->done_head = batch;
		in->done_tail = last;
		in->answering += n;
		pthread_cond_signal(&in->done_cond);
	}
	in->writer_done = true;
	pthread_cond_signal(&in->done_cond);
	pthread_mutex_unlock(&in->mtx);
	return NULL;
}

/* Calls done() for every decided job, in commit order. */
static void *
responder_main(void *arg)
{
	struct ingest *in = arg;

	(void)pthread_setname_np(pthread_self(), "rs-responder");
	pthread_mutex_lock(&in->mtx);
	for (;;) {
		struct ingest_job *j, *next;
		size_t n = 0;

		while (in->done_head == NULL && !in->writer_done)
			pthread_cond_wait(&in->done_cond, &in->mtx);
		if (in->done_head == NULL)
			break;
		j = in->done_head;
		in->done_head = in->done_tail = NULL;
		pthread_mutex_unlock(&in->mtx);
		for (; j != NULL; j = next) {
			next = j->next;
			j->next = NULL;
			j->done(j, j->arg);
			n++;
		}
		pthread_mutex_lock(&in->mtx);
		in->answering -= n;
	}
	pthread_mutex_unlock(&in->mtx);
	return NULL;
}

enum rs_status
ingest_start(struct store *st, size_t max_batch, struct ingest **out)
{
	struct ingest *in;
	int r;

	ingest_define_metrics();
	in = xcalloc(1, sizeof(*in));
	in->st = st;
	in->max_batch = max_batch > 0 ? max_batch : 1;
	atomic_init(&in->ready, true);
	pthread_mutex_init(&in->mtx, NULL);
	pthread_cond_init(&in->done_cond, NULL);
	{
		/* Timed waits count on the monotonic clock: a jump of the
		 * wall clock must not stretch or cut the probe interval. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&in->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	metrics_set("refundsync_store_ready", "", 1);
	if ((r = pthread_create(&in->responder, NULL, responder_main,
	    in)) != 0) {
		log_warnx("%s: pthread_create: %s", __func__, strerror(r));
		store_close(st);
		pthread_cond_destroy(&in->done_cond);
		pthread_cond_destroy(&in->cond);
		pthread_mutex_destroy(&in->mtx);
		free(in);
		return RS_ERR_IO;
	}
	if ((r = pthread_create(&in->thread, NULL, writer_main, in)) != 0) {
		log_warnx("%s: pthread_create: %s", __func__, strerror(r));
		pthread_mutex_lock(&in->mtx);
		in->writer_done = true;
		pthread_cond_signal(&in->done_cond);
		pthread_mutex_unlock(&in->mtx);
		pthread_join(in->responder, NULL);
		store_close(st);
		pthread_cond_destroy(&in->done_cond);
		pthread_cond_destroy(&in->cond);
		pthread_mutex_destroy(&in->mtx);
		free(in);
		return RS_ERR_IO;
	}
	*out = in;
	return RS_OK;
}

enum rs_status
ingest_submit(struct ingest *in, struct ingest_job *job)
{
	pthread_mutex_lock(&in->mtx);
	if (in->stopping) {
		pthread_mutex_unlock(&in->mtx);
		return RS_ERR_STOPPING;
	}
	job->next = NULL;
	if (in->tail != NULL)
		in->tail->next = job;
	else
		in->head = job;
	in->tail = job;
	in->queued++;
	pthread_cond_signal(&in->cond);
	pthread_mutex_unlock(&in->mtx);
	return RS_OK;
}

bool
ingest_ready(struct ingest *in)
{
	return atomic_load(&in->ready);
}

size_t
ingest_pending(struct ingest *in)
{
	size_t n;

	pthread_mutex_lock(&in->mtx);
	n = in->queued + in->inbatch + in->answering;
	pthread_mutex_unlock(&in->mtx);
	return n;
}

void
ingest_stop(struct ingest *in)
{
	if (in == NULL)
		return;
	pthread_mutex_lock(&in->mtx);
	in->stopping = true;
	pthread_cond_signal(&in->cond);
	pthread_mutex_unlock(&in->mtx);
	pthread_join(in->thread, NULL);
	/* The writer has handed over its last batch; wait for the answers. */
	pthread_join(in->responder, NULL);
	store_close(in->st);
	pthread_cond_destroy(&in->done_cond);
	pthread_cond_destroy(&in->cond);
	pthread_mutex_destroy(&in->mtx);
	free(in);
}

void
ingest_job_cleanup(struct ingest_job *job)
{
	if (job == NULL)
		return;
	event_cleanup(&job->ev);
	free(job->key);
	job->key = NULL;
}
