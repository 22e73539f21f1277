/*
 * lag-load.c: the load and the measurements of bench/export-lag.sh
 * (delivery lag under a fixed webhook rate, issue #4).
 *
 * usage: lag-load run -p PORT -t TOKENS -r RATE -s SECONDS -o OUT
 *	      [-c CONNS] [-u PATH] [-f JSONL] [-w DRAIN_S]
 *	  lag-load report OUT DB EXPORTER...
 *
 * run: an open-loop, constant-rate HTTP/1.1 client (what wrk2 does, and
 * Debian has only wrk).  Request i is due at t0 + i / RATE on the
 * monotonic clock, whatever happened to the others; a timerfd wakes the
 * client at each due time and the request goes out on an idle keep-alive
 * connection of the CONNS it holds, the one idle longest (so none sits
 * idle into the server's connection timeout, which would close it under
 * a request).  When none is idle the request waits and its lateness is
 * counted (from its due time), so a server that cannot keep up shows as
 * a lower achieved rate and a growing latency from the due time, not as
 * a politely slower client.  Request i posts line i of TOKENS
 * (bench/gen-tokens: refund "bench-refund-<i>"), so every request is a
 * distinct refund.
 *
 * With -f, a second thread tails the jsonl exporter's file (inotify on
 * its folder; every event reads to the end) and stamps, for each
 * refund's line, the wall time it became readable (visible: before the
 * exporter's fdatasync() returns, a lower bound of the durable time),
 * then calls fdatasync() on the file itself and stamps the lines it had
 * read when that returns (durable: they are on disk by then, whoever's
 * fsync put them there; the exporter has called its own by then or is
 * in it).  After the load, run waits (up to DRAIN_S, 30) until every
 * refund that got its 200 is durable in the file.
 *
 * OUT gets one line per request: "i due_us sent_us answered_us
 * answered_wall_us visible_wall_us durable_wall_us status" (the first
 * three from t0 on the monotonic clock; wall times in microseconds since
 * the epoch, 0 if none; status 0 for a transport error).  stdout gets
 * one "LOAD key=value ..." line.
 *
 * report: joins OUT with the store (after the daemon stopped): for each
 * EXPORTER, the delivery log (exporter_deliveries.delivered_at, stamped
 * by the export worker once deliver() returned and the worker holds the
 * store's write lock to record it, in milliseconds) and the change log's
 * changed_at.  Per record:
 *  - recorded lag = delivered_at + 1 ms - the client's 200: when the
 *    engine had recorded the delivery (its position can move on);
 *  - stored lag = delivered_at - changed_at (both the daemon's, ±1 ms;
 *    changed_at is stamped before the ingest commit);
 * and for the tailed jsonl file:
 *  - durable lag = durable_wall - the 200 (an upper bound of "200 to on
 *    disk in the exporter's file", within one fdatasync);
 *  - visible lag = visible_wall - the 200 (a lower bound).
 * A lag may be negative: the exporter can have the record before the
 * client reads its 200.  stdout gets "LAG ..." lines and a "FILE ..."
 * line with p50, p99 and max in microseconds.
 *
 * Exit 0, 1 on a failure, 2 on usage.
 */
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "util/isotime.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#define LL_IN_MAX	8192		/* bytes of one response's head */
#define LL_TAIL_MAX	(1 << 20)	/* bytes of one jsonl line, at most */
/* Transport errors, as negative statuses for conn_done(). */
#define LL_ERR_WRITE	0		/* writing the request failed */
#define LL_ERR_CLOSED	(-1)		/* closed or reset before the answer */
#define LL_ERR_BAD	(-2)		/* an answer we do not understand */
#define LL_STUCK_S	120		/* give up on the server after */
#define LL_EV_TIMER	UINT64_MAX
#define LL_ID_PREFIX	"\"refund_id\":\"bench-refund-"

/* One request and what became of it. */
struct ll_req {
	int64_t	due_ns;		/* monotonic, from t0 */
	int64_t	sent_ns;	/* monotonic, from t0 */
	int64_t	answered_ns;	/* monotonic, from t0 */
	int64_t	answered_wall_us; /* wall, 0 if none */
	int64_t	visible_wall_us; /* wall, 0 if never seen */
	int64_t	durable_wall_us; /* wall, 0 if never seen */
	int	status;		/* HTTP status; 0: transport error */
};

/* One keep-alive connection. */
struct ll_conn {
	int	 fd;
	int64_t	 req;		/* the request in flight; -1: idle */
	char	*out;		/* the request being written */
	size_t	 outlen, outoff;
	char	 in[LL_IN_MAX];
	size_t	 inlen;
};

/* The tailer of the jsonl file: its own thread. */
struct ll_tail {
	const char	*path;
	struct ll_req	*req;		/* visible/durable: this thread's */
	int64_t		 n;
	int		 ifd, fd;
	char		*buf;
	size_t		 len;
	int64_t		*pending;	/* read, not yet fsync()ed */
	size_t		 npending;
	int64_t		 lines;
	atomic_llong	 durable;	/* refunds durable in the file */
	atomic_bool	 stop;
	pthread_t	 tid;
	bool		 started;
};

/* The whole client. */
struct ll {
	struct sockaddr_in addr;
	const char	*path;		/* the URL path */
	char		*host;		/* the Host header's value */
	char		**tok;		/* borrowed from tokbuf */
	size_t		*toklen;
	char		*tokbuf;
	int64_t		 n;		/* requests */
	struct ll_req	*req;
	struct ll_conn	*conn;
	int		 nconn;
	int		*idle;		/* a ring of idle connections: the
					   one idle longest goes next, so
					   none idles into the server's
					   timeout */
	int		 idlehead, nidle;
	int64_t		 inflight;
	int64_t		 ok, errors, non200;
	int64_t		 err[3];	/* errors by LL_ERR_* */
	int		 ep, tfd;
	struct ll_tail	 tail;
};

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank p-th percentile of sorted v[0..n); 0 if n is 0. */
static int64_t
pct(const int64_t *v, size_t n, int p)
{
	size_t k;

	if (n == 0)
		return 0;
	k = ((size_t)p * n + 99) / 100;
	return v[k > 0 ? k - 1 : 0];
}

/* Sort v[0..n) and print " NAME_p50_us=.. NAME_p99_us=.. NAME_max_us=..". */
static void
print_pcts(const char *name, int64_t *v, size_t n)
{
	qsort(v, n, sizeof(v[0]), cmp_i64);
	printf(" %s_p50_us=%" PRId64 " %s_p99_us=%" PRId64 " %s_max_us=%"
	    PRId64, name, pct(v, n, 50), name, pct(v, n, 99), name,
	    n > 0 ? v[n - 1] : 0);
}

/* ---- run: the constant-rate client ------------------------------------ */

/* Read the first n lines of path as tokens.  0 or 1. */
static int
load_tokens(struct ll *l, const char *path)
{
	FILE *f;
	long sz;
	char *p, *end, *nl;
	int64_t i;

	if ((f = fopen(path, "r")) == NULL) {
		log_warn("%s", path);
		return 1;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		log_warn("%s", path);
		fclose(f);
		return 1;
	}
	l->tokbuf = xmalloc((size_t)sz + 1);
	if (fread(l->tokbuf, 1, (size_t)sz, f) != (size_t)sz) {
		log_warnx("%s: short read", path);
		fclose(f);
		return 1;
	}
	fclose(f);
	l->tokbuf[sz] = '\0';
	l->tok = xcalloc((size_t)l->n, sizeof(*l->tok));
	l->toklen = xcalloc((size_t)l->n, sizeof(*l->toklen));
	p = l->tokbuf;
	end = l->tokbuf + sz;
	for (i = 0; i < l->n; i++) {
		if (p >= end || (nl = memchr(p, '\n', (size_t)(end - p))) ==
		    NULL || nl == p) {
			log_warnx("%s: %" PRId64 " tokens needed, %" PRId64
			    " found", path, l->n, i);
			return 1;
		}
		l->tok[i] = p;
		l->toklen[i] = (size_t)(nl - p);
		p = nl + 1;
	}
	return 0;
}

/* Open connection c (blocking connect on loopback, then non-blocking). */
static int
conn_open(struct ll *l, int c)
{
	struct ll_conn *k = &l->conn[c];
	struct epoll_event ev;
	int one = 1, fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		log_warn("socket");
		return 1;
	}
	if (connect(fd, (struct sockaddr *)&l->addr, sizeof(l->addr)) != 0) {
		log_warn("connect");
		close(fd);
		return 1;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1) {
		log_warn("fcntl");
		close(fd);
		return 1;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u64 = (uint64_t)c;
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
		log_warn("epoll_ctl");
		close(fd);
		return 1;
	}
	k->fd = fd;
	k->req = -1;
	k->inlen = 0;
	k->outlen = k->outoff = 0;
	return 0;
}

static void
conn_close(struct ll *l, int c)
{
	struct ll_conn *k = &l->conn[c];

	if (k->fd != -1) {
		(void)epoll_ctl(l->ep, EPOLL_CTL_DEL, k->fd, NULL);
		close(k->fd);
	}
	k->fd = -1;
}

static void
conn_want(struct ll *l, int c, uint32_t events)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.u64 = (uint64_t)c;
	if (epoll_ctl(l->ep, EPOLL_CTL_MOD, l->conn[c].fd, &ev) != 0)
		fatal("epoll_ctl");
}

static void
idle_push(struct ll *l, int c)
{
	l->idle[(l->idlehead + l->nidle++) % l->nconn] = c;
}

static int
idle_pop(struct ll *l)
{
	int c = l->idle[l->idlehead];

	l->idlehead = (l->idlehead + 1) % l->nconn;
	l->nidle--;
	return c;
}

/*
 * The request on c is over with an HTTP status, or with a transport
 * error (an LL_ERR_*, recorded as status 0).
 */
static void
conn_done(struct ll *l, int c, int status, bool reopen)
{
	struct ll_conn *k = &l->conn[c];
	struct ll_req *r = &l->req[k->req];

	r->answered_ns = mono_ns();
	r->answered_wall_us = wall_us();
	r->status = status > 0 ? status : 0;
	if (status == 200)
		l->ok++;
	else if (status <= 0) {
		l->errors++;
		l->err[-status]++;
	} else
		l->non200++;
	k->req = -1;
	k->inlen = 0;
	l->inflight--;
	if (reopen) {
		conn_close(l, c);
		if (conn_open(l, c) != 0)
			fatalx("cannot reconnect");
	}
	idle_push(l, c);
}

/* Write what is left of c's request; EPOLLOUT while some is. */
static void
conn_write(struct ll *l, int c)
{
	struct ll_conn *k = &l->conn[c];
	ssize_t w;

	while (k->outoff < k->outlen) {
		w = write(k->fd, k->out + k->outoff, k->outlen - k->outoff);
		if (w > 0) {
			k->outoff += (size_t)w;
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			conn_want(l, c, EPOLLIN | EPOLLOUT);
			return;
		}
		conn_done(l, c, LL_ERR_WRITE, true);
		return;
	}
	conn_want(l, c, EPOLLIN);
}

/* Send request i on the idle connection c. */
static void
conn_start(struct ll *l, int c, int64_t i)
{
	struct ll_conn *k = &l->conn[c];
	int h;

	k->req = i;
	k->inlen = 0;
	free(k->out);
	h = snprintf(NULL, 0, "POST %s HTTP/1.1\r\nHost: %s\r\n"
	    "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
	    l->path, l->host, l->toklen[i]);
	k->out = xmalloc((size_t)h + 1 + l->toklen[i]);
	snprintf(k->out, (size_t)h + 1, "POST %s HTTP/1.1\r\nHost: %s\r\n"
	    "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
	    l->path, l->host, l->toklen[i]);
	memcpy(k->out + h, l->tok[i], l->toklen[i]);
	k->outlen = (size_t)h + l->toklen[i];
	k->outoff = 0;
	l->inflight++;
	l->req[i].sent_ns = mono_ns();
	conn_write(l, c);
}

/*
 * Parse the response head in in[0..len): 0 while incomplete, 1 when the
 * whole response is there (*status, *close set), -1 if it is not one we
 * understand.
 */
static int
parse_response(const char *in, size_t len, int *status, bool *close_it)
{
	const char *end, *line, *nl;
	char num[24];
	int64_t clen = -1, v;
	size_t hlen, n;

	if ((end = memmem(in, len, "\r\n\r\n", 4)) == NULL)
		return len >= LL_IN_MAX ? -1 : 0;
	hlen = (size_t)(end - in) + 4;
	if (hlen < 12 || strncmp(in, "HTTP/1.", 7) != 0 || in[8] != ' ' ||
	    in[9] < '1' || in[9] > '5' || in[10] < '0' || in[10] > '9' ||
	    in[11] < '0' || in[11] > '9')
		return -1;
	*status = (in[9] - '0') * 100 + (in[10] - '0') * 10 + (in[11] - '0');
	*close_it = false;
	nl = memchr(in, '\n', hlen);
	for (line = nl + 1; line < end; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(end + 2 - line));
		n = (size_t)(nl - line);
		if (n > 15 && strncasecmp(line, "content-length:", 15) == 0) {
			line += 15;
			n -= 15;
			while (n > 0 && *line == ' ') {
				line++;
				n--;
			}
			while (n > 0 && (line[n - 1] == '\r' ||
			    line[n - 1] == ' '))
				n--;
			if (n == 0 || n >= sizeof(num))
				return -1;
			memcpy(num, line, n);
			num[n] = '\0';
			if (strnum_i64(num, 0, LL_IN_MAX, &v) != NULL)
				return -1;
			clen = v;
		} else if (n > 11 && strncasecmp(line, "connection:", 11) ==
		    0 && memmem(line, n, "close", 5) != NULL)
			*close_it = true;
	}
	if (clen < 0)
		return -1;
	if (len < hlen + (size_t)clen)
		return 0;
	if (len > hlen + (size_t)clen)
		return -1;	/* nothing was pipelined */
	return 1;
}

static void
conn_read(struct ll *l, int c)
{
	struct ll_conn *k = &l->conn[c];
	ssize_t r;
	bool close_it;
	int status, p;

	for (;;) {
		if (k->inlen == sizeof(k->in)) {
			if (k->req >= 0)
				conn_done(l, c, LL_ERR_BAD, true);
			return;
		}
		r = read(k->fd, k->in + k->inlen, sizeof(k->in) - k->inlen);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0 || k->req < 0) {
			/* Closed, failed, or talking out of turn. */
			if (k->req >= 0)
				conn_done(l, c, LL_ERR_CLOSED, true);
			else {
				conn_close(l, c);
				if (conn_open(l, c) != 0)
					fatalx("cannot reconnect");
			}
			return;
		}
		k->inlen += (size_t)r;
		p = parse_response(k->in, k->inlen, &status, &close_it);
		if (p < 0) {
			conn_done(l, c, LL_ERR_BAD, true);
			return;
		}
		if (p > 0) {
			conn_done(l, c, status, close_it);
			return;
		}
	}
}

/* Take the jsonl lines in the tail buffer, stamped now. */
static void
tail_lines(struct ll_tail *t, int64_t now)
{
	char *p = t->buf, *end = t->buf + t->len, *nl, *q;
	int64_t idx;

	while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		t->lines++;
		q = memmem(p, (size_t)(nl - p), LL_ID_PREFIX,
		    sizeof(LL_ID_PREFIX) - 1);
		if (q != NULL) {
			q += sizeof(LL_ID_PREFIX) - 1;
			for (idx = 0; q < nl && *q >= '0' && *q <= '9' &&
			    idx < t->n; q++)
				idx = idx * 10 + (*q - '0');
			if (q < nl && *q == '"' && idx < t->n &&
			    t->req[idx].visible_wall_us == 0) {
				t->req[idx].visible_wall_us = now;
				t->pending[t->npending++] = idx;
			}
		}
		p = nl + 1;
	}
	t->len = (size_t)(end - p);
	memmove(t->buf, p, t->len);
}

/*
 * Read the jsonl file to its end (opening it once it exists), then make
 * what was read durable and stamp it.
 */
static void
tail_read(struct ll_tail *t)
{
	ssize_t r;
	int64_t now;
	size_t i;

	if (t->fd == -1 && (t->fd = open(t->path, O_RDONLY | O_CLOEXEC)) ==
	    -1)
		return;
	for (;;) {
		if (t->len == LL_TAIL_MAX)
			t->len = 0;	/* not a jsonl line of ours */
		r = read(t->fd, t->buf + t->len, LL_TAIL_MAX - t->len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		t->len += (size_t)r;
		tail_lines(t, wall_us());
	}
	if (t->npending == 0)
		return;
	if (fdatasync(t->fd) != 0)
		fatal("fdatasync %s", t->path);
	now = wall_us();
	for (i = 0; i < t->npending; i++)
		t->req[t->pending[i]].durable_wall_us = now;
	atomic_fetch_add(&t->durable, (long long)t->npending);
	t->npending = 0;
}

static void *
tail_main(void *arg)
{
	struct ll_tail *t = arg;
	struct pollfd pfd;
	char buf[4096] __attribute__((aligned(__alignof__(
	    struct inotify_event))));

	pfd.fd = t->ifd;
	pfd.events = POLLIN;
	tail_read(t);
	while (!atomic_load(&t->stop)) {
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		while (read(t->ifd, buf, sizeof(buf)) > 0)
			;
		tail_read(t);
	}
	tail_read(t);
	return NULL;
}

/* Start the tailer of t->path.  0 or 1. */
static int
tail_start(struct ll_tail *t, struct ll_req *req, int64_t n)
{
	char *dir;
	int rc = 1;

	t->req = req;
	t->n = n;
	t->fd = -1;
	t->buf = xmalloc(LL_TAIL_MAX);
	t->pending = xcalloc((size_t)n, sizeof(*t->pending));
	atomic_init(&t->durable, 0);
	atomic_init(&t->stop, false);
	/* Watch the folder: the file may not exist yet. */
	dir = xstrdup(t->path);
	if ((t->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) == -1 ||
	    inotify_add_watch(t->ifd, dirname(dir), IN_CREATE | IN_MODIFY) ==
	    -1) {
		log_warn("inotify: %s", t->path);
		goto out;
	}
	if ((errno = pthread_create(&t->tid, NULL, tail_main, t)) != 0) {
		log_warn("pthread_create");
		goto out;
	}
	t->started = true;
	rc = 0;
out:
	free(dir);
	return rc;
}

/* Stop the tailer (after a last read) and release it.  Safe twice. */
static void
tail_stop(struct ll_tail *t)
{
	if (t->started) {
		atomic_store(&t->stop, true);
		pthread_join(t->tid, NULL);
		t->started = false;
	}
	if (t->ifd != -1)
		close(t->ifd);
	if (t->fd != -1)
		close(t->fd);
	t->ifd = t->fd = -1;
	free(t->buf);
	free(t->pending);
	t->buf = NULL;
	t->pending = NULL;
}

/* Arm the timer for monotonic time at (0: disarm). */
static void
timer_arm(struct ll *l, int64_t at)
{
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	if (at > 0) {
		its.it_value.tv_sec = at / 1000000000;
		its.it_value.tv_nsec = at % 1000000000;
	}
	if (timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
		fatal("timerfd_settime");
}

/* Percentiles and rates of the load, as one LOAD line. */
static void
load_report(struct ll *l, double rate, int64_t seconds, int64_t drain_ns)
{
	int64_t *late, *lat, *clat, last = 0;
	size_t nl = 0, na = 0;
	int64_t k;
	double span;

	late = xcalloc((size_t)l->n, sizeof(*late));
	lat = xcalloc((size_t)l->n, sizeof(*lat));
	clat = xcalloc((size_t)l->n, sizeof(*clat));
	for (k = 0; k < l->n; k++) {
		const struct ll_req *r = &l->req[k];

		late[nl++] = (r->sent_ns - r->due_ns) / 1000;
		if (r->status != 200)
			continue;
		lat[na] = (r->answered_ns - r->sent_ns) / 1000;
		clat[na++] = (r->answered_ns - r->due_ns) / 1000;
		if (r->answered_ns > last)
			last = r->answered_ns;
	}
	/* From the first due time (0) to the last 200. */
	span = (double)last / 1e9;
	printf("LOAD target_rps=%.0f seconds=%" PRId64 " conns=%d requests=%"
	    PRId64 " ok=%" PRId64 " non200=%" PRId64 " errors=%" PRId64
	    " achieved_rps=%.1f span_s=%.3f", rate, seconds, l->nconn, l->n,
	    l->ok, l->non200, l->errors, span > 0 ? (double)l->ok / span :
	    0.0, span);
	printf(" err_write=%" PRId64 " err_closed=%" PRId64 " err_bad=%"
	    PRId64, l->err[-LL_ERR_WRITE], l->err[-LL_ERR_CLOSED],
	    l->err[-LL_ERR_BAD]);
	print_pcts("late", late, nl);
	print_pcts("lat", lat, na);
	print_pcts("clat", clat, na);
	printf(" tailed=%s durable_lines=%lld lines=%" PRId64 " drain_ms=%"
	    PRId64 "\n", l->tail.path != NULL ? "yes" : "no",
	    (long long)atomic_load(&l->tail.durable), l->tail.lines,
	    drain_ns / 1000000);
	fflush(stdout);
	free(late);
	free(lat);
	free(clat);
}

static int
cmd_run(int argc, char *argv[])
{
	struct ll l;
	struct epoll_event evs[64], ev;
	const char *tokens = NULL, *outpath = NULL, *why;
	int64_t port = 0, rate = 0, seconds = 0, conns = 64, drain_s = 30;
	int64_t t0, now, next = 0, armed = -1, deadline = 0, loaded_at = 0;
	int64_t i, v, drain_ns = -1000000;
	FILE *out = NULL;
	bool loaded = false;
	int ch, c, nev, e, timeout, rc = 1;

	memset(&l, 0, sizeof(l));
	l.path = "/webhooks";
	l.ep = l.tfd = l.tail.ifd = l.tail.fd = -1;
	optind = 1;
	while ((ch = getopt(argc, argv, "p:t:r:s:o:c:u:f:w:")) != -1) {
		why = NULL;
		switch (ch) {
		case 'p':
			why = strnum_i64(optarg, 1, 65535, &port);
			break;
		case 't':
			tokens = optarg;
			break;
		case 'r':
			why = strnum_i64(optarg, 1, 1000000, &rate);
			break;
		case 's':
			why = strnum_i64(optarg, 1, 3600, &seconds);
			break;
		case 'o':
			outpath = optarg;
			break;
		case 'c':
			why = strnum_i64(optarg, 1, 4096, &conns);
			break;
		case 'u':
			l.path = optarg;
			break;
		case 'f':
			l.tail.path = optarg;
			break;
		case 'w':
			why = strnum_i64(optarg, 0, 3600, &drain_s);
			break;
		default:
			return 2;
		}
		if (why != NULL) {
			fprintf(stderr, "lag-load: -%c %s: %s\n", ch, optarg,
			    why);
			return 2;
		}
	}
	if (port == 0 || tokens == NULL || rate == 0 || seconds == 0 ||
	    outpath == NULL || optind != argc)
		return 2;

	l.n = rate * seconds;
	l.nconn = (int)conns;
	if (load_tokens(&l, tokens) != 0)
		goto out;
	l.req = xcalloc((size_t)l.n, sizeof(*l.req));
	l.conn = xcalloc((size_t)l.nconn, sizeof(*l.conn));
	l.idle = xcalloc((size_t)l.nconn, sizeof(*l.idle));
	l.addr.sin_family = AF_INET;
	l.addr.sin_port = htons((uint16_t)port);
	l.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l.host = xasprintf("127.0.0.1:%" PRId64, port);
	if ((l.ep = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (l.tfd = timerfd_create(CLOCK_MONOTONIC,
	    TFD_NONBLOCK | TFD_CLOEXEC)) == -1) {
		log_warn("epoll or timerfd");
		goto out;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u64 = LL_EV_TIMER;
	if (epoll_ctl(l.ep, EPOLL_CTL_ADD, l.tfd, &ev) != 0) {
		log_warn("epoll_ctl");
		goto out;
	}
	for (c = 0; c < l.nconn; c++)
		l.conn[c].fd = -1;
	for (c = 0; c < l.nconn; c++) {
		if (conn_open(&l, c) != 0)
			goto out;
		idle_push(&l, c);
	}
	if (l.tail.path != NULL && tail_start(&l.tail, l.req, l.n) != 0)
		goto out;

	/* Start in 100 ms, with every connection open. */
	t0 = mono_ns() + 100000000;
	for (i = 0; i < l.n; i++)
		l.req[i].due_ns = (int64_t)((double)i * 1e9 / (double)rate);
	for (;;) {
		now = mono_ns();
		while (next < l.n && t0 + l.req[next].due_ns <= now &&
		    l.nidle > 0) {
			c = idle_pop(&l);
			conn_start(&l, c, next);
			next++;
		}
		if (next == l.n && l.inflight == 0) {
			if (!loaded) {
				loaded = true;
				loaded_at = now;
				deadline = now + drain_s * 1000000000;
			}
			if (l.tail.path == NULL ||
			    atomic_load(&l.tail.durable) >= l.ok) {
				drain_ns = now - loaded_at;
				break;
			}
			if (now >= deadline) {
				log_warnx("drain: %lld of %" PRId64 " lines "
				    "durable after %" PRId64 " s",
				    (long long)atomic_load(&l.tail.durable),
				    l.ok, drain_s);
				break;
			}
		}
		if (!loaded && now > t0 + (seconds + LL_STUCK_S) * 1000000000) {
			log_warnx("%" PRId64 " requests still unanswered %d s "
			    "after the load's end", l.inflight, LL_STUCK_S);
			goto out;
		}
		v = next < l.n && l.nidle > 0 ? t0 + l.req[next].due_ns : 0;
		if (v != armed) {
			timer_arm(&l, v);
			armed = v;
		}
		timeout = loaded ? 5 : 1000;
		nev = epoll_wait(l.ep, evs, 64, timeout);
		if (nev == -1 && errno != EINTR) {
			log_warn("epoll_wait");
			goto out;
		}
		for (e = 0; e < nev; e++) {
			uint64_t u = evs[e].data.u64, x;
			ssize_t rr;

			if (u == LL_EV_TIMER) {
				rr = read(l.tfd, &x, sizeof(x));
				(void)rr;
				armed = -1;
				continue;
			}
			c = (int)u;
			if (l.conn[c].fd == -1)
				continue;
			if (evs[e].events & EPOLLOUT)
				conn_write(&l, c);
			if (l.conn[c].fd != -1 && (evs[e].events &
			    (EPOLLIN | EPOLLERR | EPOLLHUP)))
				conn_read(&l, c);
		}
	}
	tail_stop(&l.tail);	/* its last read, then its stamps are ours */
	for (i = 0; i < l.n; i++) {
		l.req[i].sent_ns -= t0;
		l.req[i].answered_ns -= t0;
	}

	if ((out = fopen(outpath, "w")) == NULL) {
		log_warn("%s", outpath);
		goto out;
	}
	for (i = 0; i < l.n; i++) {
		const struct ll_req *r = &l.req[i];

		fprintf(out, "%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
		    " %" PRId64 " %" PRId64 " %" PRId64 " %d\n", i,
		    r->due_ns / 1000, r->sent_ns / 1000, r->answered_ns / 1000,
		    r->answered_wall_us, r->visible_wall_us,
		    r->durable_wall_us, r->status);
	}
	if (fclose(out) != 0) {
		out = NULL;
		log_warn("%s", outpath);
		goto out;
	}
	out = NULL;
	load_report(&l, (double)rate, seconds, drain_ns);
	rc = l.ok == l.n ? 0 : 1;
out:
	tail_stop(&l.tail);
	if (out != NULL)
		fclose(out);
	for (c = 0; l.conn != NULL && c < l.nconn; c++) {
		conn_close(&l, c);
		free(l.conn[c].out);
	}
	if (l.tfd != -1)
		close(l.tfd);
	if (l.ep != -1)
		close(l.ep);
	free(l.host);
	free(l.idle);
	free(l.conn);
	free(l.req);
	free(l.tok);
	free(l.toklen);
	free(l.tokbuf);
	return rc;
}

/* ---- report: join the load with the store ----------------------------- */

/* Split the next space-separated field of *p into a number.  0 or 1. */
static int
next_i64(char **p, int64_t *v)
{
	char *s = *p, *e;

	while (*s == ' ')
		s++;
	for (e = s; *e != ' ' && *e != '\n' && *e != '\0'; e++)
		;
	if (e == s)
		return 1;
	if (*e != '\0')
		*e++ = '\0';
	*p = e;
	return strnum_i64(s, INT64_MIN, INT64_MAX, v) != NULL;
}

/* Read OUT back.  0 or 1. */
static int
read_out(const char *path, struct ll_req **reqs, int64_t *n)
{
	FILE *f;
	char line[256], *p;
	int64_t v[8];
	struct ll_req *r = NULL;
	size_t cap = 0;
	int k;

	*n = 0;
	if ((f = fopen(path, "r")) == NULL) {
		log_warn("%s", path);
		return 1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		p = line;
		for (k = 0; k < 8; k++)
			if (next_i64(&p, &v[k]) != 0)
				break;
		if (k < 8 || v[0] != *n) {
			log_warnx("%s: line %" PRId64 " is not ours", path,
			    *n + 1);
			fclose(f);
			free(r);
			return 1;
		}
		if ((size_t)*n == cap) {
			cap = cap > 0 ? cap * 2 : 65536;
			r = xreallocarray(r, cap, sizeof(*r));
		}
		r[*n].due_ns = v[1] * 1000;
		r[*n].sent_ns = v[2] * 1000;
		r[*n].answered_ns = v[3] * 1000;
		r[*n].answered_wall_us = v[4];
		r[*n].visible_wall_us = v[5];
		r[*n].durable_wall_us = v[6];
		r[*n].status = (int)v[7];
		(*n)++;
	}
	fclose(f);
	*reqs = r;
	return 0;
}

/* "…Z" text from the store to microseconds since the epoch.  0 or 1. */
static int
iso_us(const unsigned char *s, int64_t *us)
{
	struct isotime t;

	if (s == NULL || isotime_parse((const char *)s, &t) != RS_OK)
		return 1;
	*us = t.sec * 1000000 + t.nsec / 1000;
	return 0;
}

/* One exporter's lags.  0 or 1. */
static int
report_exporter(sqlite3 *db, const char *name, const struct ll_req *reqs,
    int64_t n)
{
	static const char sql[] = "SELECT c.refund_id, c.changed_at,"
	    " d.delivered_at FROM exporter_deliveries d JOIN changes c"
	    " ON c.seq = d.seq WHERE d.exporter = ?1";
	static const char prefix[] = "bench-refund-";
	sqlite3_stmt *stmt = NULL;
	int64_t *dur, *sto, idx, d, ch, rows = 0, unmatched = 0, ok = 0;
	size_t nd = 0, ns = 0;
	const char *id;
	int64_t i;
	int rc = 1, src;

	dur = xcalloc((size_t)n + 1, sizeof(*dur));
	sto = xcalloc((size_t)n + 1, sizeof(*sto));
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC) != SQLITE_OK)
		goto out;
	while ((src = sqlite3_step(stmt)) == SQLITE_ROW) {
		rows++;
		id = (const char *)sqlite3_column_text(stmt, 0);
		if (iso_us(sqlite3_column_text(stmt, 2), &d) != 0 ||
		    iso_us(sqlite3_column_text(stmt, 1), &ch) != 0) {
			log_warnx("%s: a timestamp is not ISO-8601", name);
			goto out;
		}
		if (ns <= (size_t)n)
			sto[ns++] = d - ch;
		if (id == NULL || strncmp(id, prefix, sizeof(prefix) - 1) !=
		    0 || strnum_i64(id + sizeof(prefix) - 1, 0, n - 1, &idx) !=
		    NULL || reqs[idx].status != 200 ||
		    reqs[idx].answered_wall_us == 0) {
			unmatched++;
			continue;
		}
		dur[nd++] = d + 1000 - reqs[idx].answered_wall_us;
	}
	if (src != SQLITE_DONE)
		goto out;
	for (i = 0; i < n; i++)
		if (reqs[i].status == 200)
			ok++;
	printf("LAG exporter=%s delivered=%" PRId64 " matched=%zu unmatched=%"
	    PRId64 " undelivered=%" PRId64, name, rows, nd, unmatched,
	    ok - (int64_t)nd);
	print_pcts("recorded", dur, nd);
	print_pcts("stored", sto, ns);
	printf("\n");
	rc = 0;
out:
	if (rc != 0)
		log_warnx("%s: %s", name, sqlite3_errmsg(db));
	sqlite3_finalize(stmt);
	free(dur);
	free(sto);
	return rc;
}

static int
cmd_report(int argc, char *argv[])
{
	struct ll_req *reqs = NULL;
	sqlite3 *db = NULL;
	int64_t n = 0, i, *vis = NULL, *dur = NULL;
	size_t nv = 0, nd = 0;
	int k, rc = 1;

	if (argc < 4)
		return 2;
	if (read_out(argv[1], &reqs, &n) != 0)
		goto out;
	if (sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		log_warnx("%s: %s", argv[2], db != NULL ?
		    sqlite3_errmsg(db) : "cannot open");
		goto out;
	}
	(void)sqlite3_busy_timeout(db, 5000);
	for (k = 3; k < argc; k++)
		if (report_exporter(db, argv[k], reqs, n) != 0)
			goto out;
	vis = xcalloc((size_t)n + 1, sizeof(*vis));
	dur = xcalloc((size_t)n + 1, sizeof(*dur));
	for (i = 0; i < n; i++) {
		if (reqs[i].status != 200)
			continue;
		if (reqs[i].visible_wall_us != 0)
			vis[nv++] = reqs[i].visible_wall_us -
			    reqs[i].answered_wall_us;
		if (reqs[i].durable_wall_us != 0)
			dur[nd++] = reqs[i].durable_wall_us -
			    reqs[i].answered_wall_us;
	}
	printf("FILE visible_records=%zu durable_records=%zu", nv, nd);
	print_pcts("visible", vis, nv);
	print_pcts("durable", dur, nd);
	printf("\n");
	rc = 0;
out:
	sqlite3_close(db);
	free(vis);
	free(dur);
	free(reqs);
	return rc;
}

int
main(int argc, char *argv[])
{
	int rc = 2;

	log_init(0, false);
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		rc = cmd_run(argc - 1, argv + 1);
	else if (argc >= 2 && strcmp(argv[1], "report") == 0)
		rc = cmd_report(argc - 1, argv + 1);
	if (rc == 2)
		fprintf(stderr, "usage: lag-load run -p PORT -t TOKENS -r RATE "
		    "-s SECONDS -o OUT [-c CONNS] [-u PATH] [-f JSONL] "
		    "[-w DRAIN_S]\n"
		    "       lag-load report OUT DB EXPORTER...\n");
	return rc;
}
