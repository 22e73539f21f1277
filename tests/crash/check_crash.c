/*
 * check_crash.c: the crash harness (issue #7).  The real daemon takes
 * signed webhooks from several client threads at once (creates, updates
 * with rising revisions, duplicates, out-of-order older versions) while
 * it backfills an instance from the Wix sandbox and exports its change
 * log through jsonl, csv, ledger and http exporters.  A killer sends it
 * SIGKILL at random moments, at least 24 times, and starts it again each
 * time.
 *
 * Afterwards: every event that got a 200 is in webhook_events, every
 * refund is stored at a revision no older than the newest one that got a
 * 200, PRAGMA integrity_check says ok (after every kill and at the end),
 * the change log has no gap, the backfill brought every sandbox refund,
 * every file exporter holds each change once, in order, and the http
 * sink (which honours Idempotency-Key) applied each key's effect once.
 * It prints "crash: sent=N acknowledged=N found=N lost=0 kills=N ...".
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <sqlite3.h>

#include "core/export.h"
#include "exporters/posting.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define NCLIENTS	4
#define NREFUNDS	150
#define NKILLS		24
#define BF_INST		"inst-bf"
#define BF_SEED		1200
#define APP_ID		"sandbox-app"
#define APP_SECRET	"sandbox-secret"
#define SINK_MAX_KEYS	65536
#define SINK_MAX_BODY	(1024 * 1024)

/* ---- the http sink (as in check_export_daemon.c) ------------------- */

struct sink_key {
	char	*key;
	int64_t	 seq;		/* from the first body */
	int	 posts;		/* POSTs with this key that got 2xx */
};

struct sink {
	struct MHD_Daemon *d;
	int		 port;
	pthread_mutex_t	 mu;
	struct sink_key	*keys;		/* SINK_MAX_KEYS */
	int		 nkeys;
	int64_t		 effects;	/* keys applied (first 2xx) */
	int64_t		 requests;
	int64_t		 conflicts;	/* a key with another seq */
	int64_t		 bad;		/* no key, or no seq */
	int		 fail_every;	/* every Nth request: 503 */
};

struct sink_req {
	char	*body;
	size_t	 len;
	bool	 toobig;
};

static enum MHD_Result
sink_answer(struct MHD_Connection *c, unsigned code, const char *text)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(strlen(text),
	    (void *)(uintptr_t)text, MHD_RESPMEM_MUST_COPY);
	ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
sink_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct sink *s = cls;
	struct sink_req *rq = *con_cls;
	const char *key;
	cJSON *doc = NULL, *seqj;
	int64_t seq = -1;
	unsigned code = 200;
	int i;

	(void)url;
	(void)version;
	if (rq == NULL) {
		rq = xcalloc(1, sizeof(*rq));
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (rq->len + *upload_size > SINK_MAX_BODY)
			rq->toobig = true;
		else {
			rq->body = xrealloc(rq->body, rq->len + *upload_size +
			    1);
			memcpy(rq->body + rq->len, upload, *upload_size);
			rq->len += *upload_size;
			rq->body[rq->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "POST") != 0 || rq->toobig || rq->body == NULL)
		return sink_answer(c, 400, "{\"error\":\"bad request\"}");
	key = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Idempotency-Key");
	if ((doc = cJSON_Parse(rq->body)) != NULL &&
	    (seqj = cJSON_GetObjectItem(doc, "seq")) != NULL &&
	    cJSON_IsNumber(seqj))
		seq = (int64_t)seqj->valuedouble;
	cJSON_Delete(doc);

	pthread_mutex_lock(&s->mu);
	s->requests++;
	if (s->fail_every > 0 && s->requests % s->fail_every == 0)
		code = 503;
	else if (key == NULL || seq < 0) {
		s->bad++;
		code = 400;
	} else {
		for (i = 0; i < s->nkeys; i++)
			if (strcmp(s->keys[i].key, key) == 0)
				break;
		if (i == s->nkeys && s->nkeys < SINK_MAX_KEYS) {
			/* The effect, once per key. */
			s->keys[i].key = xstrdup(key);
			s->keys[i].seq = seq;
			s->keys[i].posts = 0;
			s->nkeys++;
			s->effects++;
		}
		if (i < s->nkeys) {
			if (s->keys[i].seq != seq)
				s->conflicts++;
			s->keys[i].posts++;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (code == 503)
		return sink_answer(c, 503, "{\"error\":\"busy\"}");
	if (code == 400)
		return sink_answer(c, 400, "{\"error\":\"refused\"}");
	return sink_answer(c, 200, "{\"ok\":true}");
}

static void
sink_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct sink_req *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (rq != NULL) {
		free(rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

static struct sink *
sink_start(void)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sin;
	struct sink *s = xcalloc(1, sizeof(*s));

	s->keys = xcalloc(SINK_MAX_KEYS, sizeof(*s->keys));
	pthread_mutex_init(&s->mu, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, sink_handler, s,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
	    MHD_OPTION_NOTIFY_COMPLETED, sink_completed, s,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
	    MHD_OPTION_END);
	ck_assert_ptr_nonnull(s->d);
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	ck_assert_ptr_nonnull(info);
	s->port = (int)info->port;
	ck_assert_int_gt(s->port, 0);
	return s;
}

static void
sink_stop(struct sink *s)
{
	int i;

	MHD_stop_daemon(s->d);
	for (i = 0; i < s->nkeys; i++)
		free(s->keys[i].key);
	free(s->keys);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* Posts that got 2xx for key, 0 if never. */
static int
sink_posts(struct sink *s, const char *key)
{
	int i, n = 0;

	pthread_mutex_lock(&s->mu);
	for (i = 0; i < s->nkeys; i++)
		if (strcmp(s->keys[i].key, key) == 0)
			n = s->keys[i].posts;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* ---- the sandbox (as in check_backfill_sandbox.c) ------------------ */

struct sandbox {
	pid_t	 pid;
	int	 port;
	char	*log_path;
	char	*base;		/* "http://127.0.0.1:PORT" */
};

static char *
sandbox_binary(void)
{
	const char *env = getenv("RS_SANDBOX"), *bin = tu_binary();
	const char *slash = strrchr(bin, '/');

	if (env != NULL && *env != '\0')
		return xstrdup(env);
	if (slash == NULL)
		return xstrdup("./tests/sandbox/wix-sandbox");
	return xasprintf("%.*s/tests/sandbox/wix-sandbox",
	    (int)(slash - bin), bin);
}

static void
sandbox_start(struct sandbox *sb, const char *dir)
{
	char *argv[14], seeds[16], *text, *p;
	pid_t parent = getpid();
	int64_t end;
	int fd, nul;

	memset(sb, 0, sizeof(*sb));
	sb->log_path = xasprintf("%s/sandbox.log", dir);
	snprintf(seeds, sizeof(seeds), "%d", BF_SEED);
	argv[0] = sandbox_binary();
	argv[1] = (char *)"--listen";
	argv[2] = (char *)"127.0.0.1:0";
	argv[3] = (char *)"--seed";
	argv[4] = seeds;
	argv[5] = (char *)"--instances";
	argv[6] = (char *)BF_INST;
	argv[7] = (char *)"--rate-limit";
	argv[8] = (char *)"1000000";
	argv[9] = (char *)"--max-seconds";
	argv[10] = (char *)"600";
	argv[11] = NULL;
	fd = open(sb->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	    0644);
	nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ge(nul, 0);
	sb->pid = fork();
	ck_assert_int_ge(sb->pid, 0);
	if (sb->pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (dup2(nul, STDIN_FILENO) == -1 ||
		    dup2(fd, STDOUT_FILENO) == -1 ||
		    dup2(fd, STDERR_FILENO) == -1)
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fd);
	close(nul);
	free(argv[0]);
	end = clock_mono_ms() + 10000;
	while (sb->port == 0 && clock_mono_ms() < end) {
		text = tu_read_file(sb->log_path, NULL);
		p = text != NULL ? strstr(text,
		    "wix-sandbox listening on 127.0.0.1:") : NULL;
		if (p != NULL && strchr(p, '\n') != NULL)
			sb->port = (int)strtol(p + strlen(
			    "wix-sandbox listening on 127.0.0.1:"), NULL, 10);
		free(text);
		if (sb->port == 0)
			tu_sleep_ms(10);
	}
	ck_assert_msg(sb->port > 0, "the sandbox did not start (see %s)",
	    sb->log_path);
	sb->base = xasprintf("http://127.0.0.1:%d", sb->port);
}

static void
sandbox_stop(struct sandbox *sb)
{
	int status;

	if (sb->pid > 0) {
		kill(sb->pid, SIGKILL);
		(void)waitpid(sb->pid, &status, 0);
	}
	free(sb->log_path);
	free(sb->base);
	memset(sb, 0, sizeof(*sb));
}

/* Arm a sandbox fault (the JSON of POST /_sandbox/faults). */
static void
sb_fault(const struct sandbox *sb, const char *json)
{
	char *req;
	int st;

	req = xasprintf("POST /_sandbox/faults HTTP/1.1\r\n"
	    "Host: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", sb->port,
	    strlen(json), json);
	st = tu_http_raw(sb->port, req, strlen(req), 10000, NULL);
	free(req);
	ck_assert_msg(st == 200, "fault %s: HTTP %d", json, st);
}

/* ---- the clients ----------------------------------------------------- */

struct refstate {
	int64_t	 next_rev;	/* highest revision sent so far */
	int64_t	 acked_rev;	/* newest revision with a 200 */
	char	*last_tok;	/* the last token sent, for duplicates */
	char	*last_evid;
	int64_t	 last_rev;
};

struct crash {
	pthread_mutex_t	 mu;
	struct refstate	 refs[NREFUNDS];
	char		**acked;	/* event ids that got a 200 */
	size_t		 nacked;
	int64_t		 sent, n503, noanswer, other;
	int64_t		 dups, olds;
	atomic_int	 port;		/* 0 while the daemon is down */
	atomic_bool	 stop;
	const char	*priv;		/* signs webhooks; borrowed */
	unsigned	 seed;
};

struct client {
	struct crash	*c;
	int		 idx;
	pthread_t	 tid;
};

static const char *const statuses[] = {
	"PENDING", "SUCCEEDED", "REVERSED", "FAILED", "SUCCEEDED"
};

static char *
make_token(const struct crash *c, int ri, int64_t rev, const char *evid,
    int inst)
{
	struct tu_refund r;
	struct tu_event ev;
	char id[32], amount[32], instance[32];

	snprintf(id, sizeof(id), "cr-%03d", ri);
	snprintf(amount, sizeof(amount), "%d.%02d", 10 + ri, (int)(rev % 100));
	snprintf(instance, sizeof(instance), "inst-client-%d", inst);
	memset(&r, 0, sizeof(r));
	r.id = id;
	r.charge_id = "ch-crash";
	r.currency = "USD";
	r.amount = amount;
	r.status = statuses[rev % 5];
	r.revision = rev;
	r.created_date = "2025-08-09T15:26:24.000Z";
	r.updated_date = "2025-08-09T15:26:25.000Z";
	memset(&ev, 0, sizeof(ev));
	ev.id = evid;
	ev.slug = rev > 1 ? TU_UPDATED : TU_CREATED;
	ev.form = rev % 2 == 0 ? TU_FORM_STRING : TU_FORM_OBJECT;
	ev.seq = rev;
	return tu_refund_webhook(c->priv, &ev, &r, instance);
}

static void *
client_main(void *arg)
{
	struct client *cl = arg;
	struct crash *c = cl->c;
	struct refstate *rs;
	unsigned seed = c->seed ^ (unsigned)(cl->idx * 7919 + 1);
	char *tok, *evid;
	int64_t rev;
	int port, ri, act, st;
	bool dup;

	while (!atomic_load(&c->stop)) {
		if ((port = atomic_load(&c->port)) == 0) {
			tu_sleep_ms(5);
			continue;
		}
		ri = (int)(rand_r(&seed) % NREFUNDS);
		act = (int)(rand_r(&seed) % 10);
		dup = false;
		tok = evid = NULL;
		pthread_mutex_lock(&c->mu);
		rs = &c->refs[ri];
		if (act < 2 && rs->last_tok != NULL) {
			/* A duplicate: the same event again. */
			tok = xstrdup(rs->last_tok);
			evid = xstrdup(rs->last_evid);
			rev = rs->last_rev;
			dup = true;
			c->dups++;
		} else if (act < 4 && rs->next_rev > 1) {
			/* Out of order: an older version, a new event. */
			rev = 1 + (int64_t)(rand_r(&seed) %
			    (unsigned)(rs->next_rev - 1));
			c->olds++;
		} else if (act < 5) {
			/* Skip ahead: the versions between come later. */
			rev = rs->next_rev = rs->next_rev + 2;
		} else
			rev = ++rs->next_rev;
		pthread_mutex_unlock(&c->mu);
		if (!dup) {
			evid = tu_random_id("ev-crash-");
			tok = make_token(c, ri, rev, evid, ri % 3);
			ck_assert_ptr_nonnull(tok);
			pthread_mutex_lock(&c->mu);
			free(rs->last_tok);
			free(rs->last_evid);
			rs->last_tok = xstrdup(tok);
			rs->last_evid = xstrdup(evid);
			rs->last_rev = rev;
			pthread_mutex_unlock(&c->mu);
		}
		st = tu_http_post(port, "/webhooks", tok, strlen(tok), NULL);
		pthread_mutex_lock(&c->mu);
		c->sent++;
		if (st == 200) {
			c->acked = xreallocarray(c->acked, c->nacked + 1,
			    sizeof(*c->acked));
			c->acked[c->nacked++] = evid;
			evid = NULL;
			if (rev > rs->acked_rev)
				rs->acked_rev = rev;
		} else if (st == 503)
			c->n503++;
		else if (st == -1)
			c->noanswer++;
		else
			c->other++;
		pthread_mutex_unlock(&c->mu);
		free(tok);
		free(evid);
	}
	return NULL;
}

/* ---- the daemon's store and exporters -------------------------------- */

static const char *const names[] = { "j", "c", "l", "h" };
#define NEXP	(sizeof(names) / sizeof(names[0]))

static int64_t
last_seq(const struct tu_daemon *d)
{
	return tu_sql_int(d, 0, "SELECT coalesce(max(seq), 0) FROM changes");
}

static int64_t
position(const struct tu_daemon *d, const char *name)
{
	return tu_sql_int(d, -1, "SELECT position FROM exporter_positions"
	    " WHERE exporter = '%s'", name);
}

static bool
caught_up(const struct tu_daemon *d, int timeout_ms)
{
	int64_t deadline = clock_mono_ms() + timeout_ms, last;
	size_t i;

	for (;;) {
		last = last_seq(d);
		for (i = 0; i < NEXP; i++)
			if (position(d, names[i]) != last)
				break;
		if (i == NEXP)
			return true;
		if (clock_mono_ms() > deadline) {
			for (i = 0; i < NEXP; i++)
				fprintf(stderr, "exporter %s at %lld of %lld\n",
				    names[i], (long long)position(d, names[i]),
				    (long long)last);
			return false;
		}
		tu_sleep_ms(50);
	}
}

/* Does any exporter have work outstanding? */
static bool
exporting(const struct tu_daemon *d)
{
	int64_t last = last_seq(d);
	size_t i;

	for (i = 0; i < NEXP; i++)
		if (position(d, names[i]) < last)
			return true;
	return false;
}

static bool
backfill_state_is(const struct tu_daemon *d, const char *state)
{
	char *v = tu_sqlf(d, "SELECT backfill FROM instances WHERE"
	    " instance_id = '" BF_INST "'");
	bool yes = v != NULL && strcmp(v, state) == 0;

	free(v);
	return yes;
}

static void
assert_integrity(const struct tu_daemon *d, const char *when)
{
	char *v = tu_sql(d->db_path, "PRAGMA integrity_check");

	ck_assert_msg(v != NULL && strcmp(v, "ok") == 0,
	    "integrity_check %s: %s", when, v != NULL ? v : "(null)");
	free(v);
}

struct expect {
	int64_t	*seqs;
	size_t	 n;
	int64_t	*posting;
	size_t	 nposting;
	char	**hkeys;
};

static void
expect_load(const struct tu_daemon *d, struct expect *x)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	enum rs_posting p;

	memset(x, 0, sizeof(*x));
	ck_assert_int_eq(sqlite3_open_v2(d->db_path, &db,
	    SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT seq, refund_id,"
	    " revision, status, prev_status FROM changes ORDER BY seq", -1,
	    &stmt, NULL), SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW) {
		x->seqs = xreallocarray(x->seqs, x->n + 1, sizeof(*x->seqs));
		x->hkeys = xreallocarray(x->hkeys, x->n + 1,
		    sizeof(*x->hkeys));
		x->posting = xreallocarray(x->posting, x->n + 1,
		    sizeof(*x->posting));
		x->seqs[x->n] = sqlite3_column_int64(stmt, 0);
		p = posting_classify((const char *)sqlite3_column_text(stmt,
		    3), (const char *)sqlite3_column_text(stmt, 4));
		x->hkeys[x->n] = export_idempotency_key("h",
		    (const char *)sqlite3_column_text(stmt, 1),
		    sqlite3_column_type(stmt, 2) != SQLITE_NULL,
		    sqlite3_column_int64(stmt, 2), p);
		if (p != RS_POSTING_NONE)
			x->posting[x->nposting++] = x->seqs[x->n];
		x->n++;
	}
	sqlite3_finalize(stmt);
	sqlite3_close(db);
}

static void
expect_free(struct expect *x)
{
	size_t i;

	for (i = 0; i < x->n; i++)
		free(x->hkeys[i]);
	free(x->hkeys);
	free(x->seqs);
	free(x->posting);
}

/* The seqs a file names, in order (see check_export_daemon.c). */
static size_t
file_seqs(const char *path, const char *prefix, size_t skip, int64_t **out)
{
	char *text = tu_read_file(path, NULL), *line, *nl;
	size_t n = 0, plen = strlen(prefix), lineno = 0;
	int64_t v;

	*out = NULL;
	ck_assert_msg(text != NULL, "%s: cannot read", path);
	for (line = text; *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		ck_assert_msg(nl != NULL, "%s: the last line is torn", path);
		*nl = '\0';
		if (lineno++ < skip || strncmp(line, prefix, plen) != 0)
			continue;
		v = strtoll(line + plen, NULL, 10);
		if (v == 0)
			continue;	/* the ledger's header commit */
		*out = xreallocarray(*out, n + 1, sizeof(**out));
		(*out)[n++] = v;
	}
	free(text);
	return n;
}

static void
assert_seqs(const char *what, const int64_t *got, size_t ngot,
    const int64_t *want, size_t nwant)
{
	size_t i;

	for (i = 0; i < ngot && i < nwant; i++)
		ck_assert_msg(got[i] == want[i], "%s: entry %zu is seq %lld, "
		    "want %lld (a duplicate or a gap)", what, i,
		    (long long)got[i], (long long)want[i]);
	ck_assert_msg(ngot == nwant, "%s: %zu entries, want %zu", what, ngot,
	    nwant);
}

static void
assert_targets(const struct tu_daemon *d, struct sink *s)
{
	struct expect x;
	int64_t *got;
	char *path;
	size_t n, i;

	expect_load(d, &x);
	ck_assert_uint_gt(x.n, 0);

	path = xasprintf("%s/out.jsonl", d->dir);
	n = file_seqs(path, "{\"seq\":", 0, &got);
	assert_seqs("jsonl", got, n, x.seqs, x.n);
	free(got);
	free(path);

	path = xasprintf("%s/out.csv", d->dir);
	n = file_seqs(path, "", 1, &got);
	assert_seqs("csv", got, n, x.seqs, x.n);
	free(got);
	free(path);

	path = xasprintf("%s/out.journal", d->dir);
	n = file_seqs(path, "; rs-seq: ", 0, &got);
	assert_seqs("ledger", got, n, x.posting, x.nposting);
	free(got);
	free(path);

	pthread_mutex_lock(&s->mu);
	ck_assert_int_eq(s->conflicts, 0);
	ck_assert_int_eq(s->bad, 0);
	ck_assert_int_eq(s->effects, (int64_t)x.n);
	ck_assert_int_eq(s->nkeys, (int)x.n);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < x.n; i++)
		ck_assert_msg(sink_posts(s, x.hkeys[i]) >= 1, "the sink never "
		    "got %s", x.hkeys[i]);
	expect_free(&x);
}

/* ---- the test -------------------------------------------------------- */

START_TEST(test_crash_harness)
{
	static struct crash c;
	struct client cl[NCLIENTS];
	struct sink *s = sink_start();
	struct sandbox sb;
	struct tu_conf conf;
	struct tu_daemon *d;
	sqlite3 *db = NULL;
	sqlite3_stmt *stmt = NULL;
	char *sbdir = tu_tempdir(), *secret, *wix, *tail, id[32];
	int64_t t0 = clock_mono_ms(), found = 0, lost = 0, behind = 0;
	int kills = 0, kills_bf = 0, kills_exp = 0, i;
	size_t k;

	memset(&c, 0, sizeof(c));
	pthread_mutex_init(&c.mu, NULL);
	c.seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	fprintf(stderr, "crash: seed %u\n", c.seed);
	srand(c.seed);

	/* The sandbox, each Query Refunds page slowed down, so the
	 * backfill spans several of the daemon's lives. */
	sandbox_start(&sb, sbdir);
	sb_fault(&sb, "{\"fault\":\"stall\",\"count\":-1,\"ms\":120,"
	    "\"endpoint\":\"query\"}");
	secret = xasprintf("%s/app-secret", sbdir);
	ck_assert(tu_write_file(secret, APP_SECRET "\n", true));
	wix = xasprintf("app_id = " APP_ID "\napp_secret_file = %s\n"
	    "api_base = %s\ninstances = " BF_INST, secret, sb.base);
	s->fail_every = 11;
	tail = xasprintf("[backfill]\npage_size = 20\n"
	    "requests_per_minute = 100000\n"
	    "[exporter j]\ntype = jsonl\npath = out.jsonl\nbatch = 16\n"
	    "poll_ms = 20\n"
	    "[exporter c]\ntype = csv\npath = out.csv\nbatch = 9\n"
	    "poll_ms = 20\n"
	    "[exporter l]\ntype = ledger\npath = out.journal\nbatch = 7\n"
	    "poll_ms = 20\n"
	    "[exporter h]\ntype = http\nurl = http://127.0.0.1:%d/hook\n"
	    "batch = 8\npoll_ms = 20\nretry_initial_ms = 20\n"
	    "retry_max_ms = 200\ntimeout = 5\n", s->port);
	memset(&conf, 0, sizeof(conf));
	conf.wix = wix;
	conf.tail = tail;
	d = tu_daemon_start(&conf, NULL);
	ck_assert_msg(d != NULL, "the daemon did not start");
	c.priv = d->key.priv_pem;
	atomic_store(&c.port, d->port);

	for (i = 0; i < NCLIENTS; i++) {
		cl[i].c = &c;
		cl[i].idx = i;
		ck_assert_int_eq(pthread_create(&cl[i].tid, NULL, client_main,
		    &cl[i]), 0);
	}

	/* The killer. */
	while (kills < NKILLS) {
		tu_sleep_ms(250 + rand() % 900);
		tu_daemon_kill9(d);
		atomic_store(&c.port, 0);
		kills++;
		if (backfill_state_is(d, "running"))
			kills_bf++;
		if (exporting(d))
			kills_exp++;
		assert_integrity(d, "after a kill");
		ck_assert_msg(tu_daemon_restart(d), "restart %d failed",
		    kills);
		atomic_store(&c.port, d->port);
	}
	/* Some more traffic on the last life, then stop the clients. */
	tu_sleep_ms(500);
	atomic_store(&c.stop, true);
	for (i = 0; i < NCLIENTS; i++)
		ck_assert_int_eq(pthread_join(cl[i].tid, NULL), 0);

	/* Let the backfill and the exporters finish; stop cleanly. */
	sb_fault(&sb, "{\"fault\":\"stall\",\"count\":-1,\"ms\":1,"
	    "\"endpoint\":\"query\"}");
	{
		int64_t end = clock_mono_ms() + 60000;

		while (!backfill_state_is(d, "done") &&
		    clock_mono_ms() < end)
			tu_sleep_ms(50);
	}
	ck_assert_msg(backfill_state_is(d, "done"), "the backfill did not "
	    "finish");
	ck_assert(caught_up(d, 60000));
	ck_assert_int_eq(tu_daemon_stop(d, 20000), 0);

	/* The store. */
	assert_integrity(d, "at the end");
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) = max(seq) AND"
	    " min(seq) = 1 FROM changes"), 1);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM refunds"
	    " WHERE instance_id = '" BF_INST "'"), BF_SEED);
	ck_assert_int_eq(tu_sql_int(d, -1, "SELECT count(*) FROM"
	    " exporter_dead_letters"), 0);

	/* Every acknowledged event is there. */
	ck_assert_int_eq(sqlite3_open_v2(d->db_path, &db,
	    SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM"
	    " webhook_events WHERE event_id = ?1", -1, &stmt, NULL),
	    SQLITE_OK);
	for (k = 0; k < c.nacked; k++) {
		sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, c.acked[k], -1, SQLITE_STATIC);
		if (sqlite3_step(stmt) == SQLITE_ROW &&
		    sqlite3_column_int64(stmt, 0) == 1)
			found++;
		else {
			lost++;
			fprintf(stderr, "crash: lost event %s\n", c.acked[k]);
		}
	}
	sqlite3_finalize(stmt);
	/* Every refund at its newest acknowledged version or newer. */
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT revision FROM"
	    " refunds WHERE id = ?1", -1, &stmt, NULL), SQLITE_OK);
	for (i = 0; i < NREFUNDS; i++) {
		if (c.refs[i].acked_rev == 0)
			continue;
		snprintf(id, sizeof(id), "cr-%03d", i);
		sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, id, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(stmt) != SQLITE_ROW ||
		    sqlite3_column_int64(stmt, 0) < c.refs[i].acked_rev) {
			behind++;
			fprintf(stderr, "crash: %s stored behind revision "
			    "%lld\n", id, (long long)c.refs[i].acked_rev);
		}
	}
	sqlite3_finalize(stmt);
	sqlite3_close(db);

	/* The exporters. */
	assert_targets(d, s);

	fprintf(stderr, "crash: sent=%lld acknowledged=%zu found=%lld "
	    "lost=%lld kills=%d (during backfill %d, with exports pending "
	    "%d) 503=%lld unanswered=%lld duplicates=%lld older=%lld "
	    "changes=%lld sink_requests=%lld behind=%lld in %lld ms\n",
	    (long long)c.sent, c.nacked, (long long)found, (long long)lost,
	    kills, kills_bf, kills_exp, (long long)c.n503,
	    (long long)c.noanswer, (long long)c.dups, (long long)c.olds,
	    (long long)last_seq(d), (long long)s->requests, (long long)behind,
	    (long long)(clock_mono_ms() - t0));
	ck_assert_int_eq(lost, 0);
	ck_assert_int_eq(behind, 0);
	ck_assert_int_eq(c.other, 0);
	ck_assert_int_ge(kills, 20);
	ck_assert_int_ge(kills_bf, 3);
	ck_assert_int_ge(kills_exp, 3);
	ck_assert_int_gt(c.nacked, 200);
	ck_assert_int_gt(c.dups, 0);
	ck_assert_int_gt(c.olds, 0);

	for (k = 0; k < c.nacked; k++)
		free(c.acked[k]);
	free(c.acked);
	for (i = 0; i < NREFUNDS; i++) {
		free(c.refs[i].last_tok);
		free(c.refs[i].last_evid);
	}
	pthread_mutex_destroy(&c.mu);
	tu_daemon_free(d);
	sandbox_stop(&sb);
	tu_rmtree(sbdir);
	sink_stop(s);
	free(sbdir);
	free(secret);
	free(wix);
	free(tail);
}
END_TEST

static Suite *
crash_suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc = tcase_create("crash");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_crash_harness);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(crash_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? 1 : 0;
}
