/*
 * httpd.c: libmicrohttpd listener with limits, deadlines and deferral.
 *
 * Each of the `threads` workers is a libmicrohttpd daemon with one
 * polling thread and a listening socket of its own, all bound to the same
 * address with SO_REUSEPORT, so the kernel spreads new connections evenly
 * over the workers.  (MHD's own thread pool shares one listening socket,
 * and whichever worker wakes first takes a whole burst of connections:
 * under load one worker did 80% of the verifying while the other idled.)
 * The connection limits are therefore the listener's, not MHD's: every
 * connection is counted here, per address and in all, and one over either
 * limit is shut down at once.  A port another process listens on, with or
 * without SO_REUSEPORT, is refused before the workers bind it.
 *
 * Each connection gets a struct conn (MHD's socket context) that records
 * when its current request began; a sweeper thread shuts down the socket
 * of any connection whose request outlives the absolute deadline, which
 * MHD's idle timeout alone cannot do (a byte per interval keeps it
 * alive).  shutdown(2) is safe against fd reuse because the conn is
 * unlinked, under the same mutex, in the CLOSED notification, which MHD
 * sends before it closes the socket.  Suspended (deferred) requests are
 * never swept: their answer is on its way from the writer.
 *
 * Each request has a struct httpd_request (MHD's con_cls), freed when MHD
 * reports the request completed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "adapters/httpd.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

/* Memory pool per connection: request headers must fit in it. */
#define HTTPD_CONN_MEMORY	(32 * 1024)
#define HTTPD_SWEEP_MS		250

struct conn {
	MHD_socket		 fd;
	_Atomic int64_t		 since;		/* mono ms: request began, or
						   CONN_DONE */
	atomic_bool		 suspended;
	struct conn		*prev, *next;	/* all connections */
	struct conn		*ip_prev, *ip_next; /* the same hash bucket */
	sa_family_t		 family;	/* AF_INET, AF_INET6, or 0 */
	unsigned char		 ip[16];	/* the peer's address */
	size_t			 bucket;
	bool			 refused;	/* over a limit: not counted */
};

/*
 * conn.since once the connection's cut-off is logged (or it was refused):
 * the sweeper passes it by, and whichever of the sweeper and the idle
 * timeout sets it first (compare-and-swap) logs the cut-off, once.
 */
#define CONN_DONE	(INT64_MAX / 2)

/* Claim the logging of c's cut-off: true for the first caller only. */
static bool
conn_claim_cutoff(struct conn *c)
{
	int64_t s = atomic_load(&c->since);

	return s != CONN_DONE &&
	    atomic_compare_exchange_strong(&c->since, &s, CONN_DONE);
}

struct httpd_request {
	struct httpd		*h;
	struct MHD_Connection	*mc;
	struct conn		*conn;
	const struct httpd_route *route;
	struct buf		 body;
	bool			 too_big;
	bool			 deferred;
	bool			 answered;	/* httpd_respond() was called */
	bool			 queued;	/* response handed to MHD */
	bool			 close;		/* add Connection: close */
	unsigned		 status;
	char			*resp_body;
	size_t			 resp_len;
	const char		*resp_type;
	const char		*hname;
	char			*hvalue;
	char			 peer[INET6_ADDRSTRLEN];
};

struct httpd {
	char			*name;
	struct sockaddr_storage	 addr;		/* what we bind */
	struct MHD_Daemon	**mhd;		/* nmhd workers */
	size_t			 nmhd;
	uint16_t		 port;
	unsigned		 max_conns;
	unsigned		 max_per_ip;
	size_t			 max_body;
	int64_t			 deadline_ms;
	const struct httpd_route *routes;
	size_t			 nroutes;
	atomic_bool		 draining;
	_Atomic size_t		 inflight;
	pthread_mutex_t		 mtx;		/* guards conns to nbuckets */
	struct conn		*conns;
	size_t			 nconns;
	struct conn		**buckets;	/* by peer address */
	size_t			 nbuckets;	/* a power of two */
	uint32_t		 seed;		/* of the bucket hash */
	pthread_t		 sweeper;
	bool			 sweeping;
	pthread_mutex_t		 stop_mtx;
	pthread_cond_t		 stop_cond;
	bool			 stop;
};

static void
httpd_define_metrics(void)
{
	metrics_define("refundsync_http_requests_total", METRIC_COUNTER,
	    "HTTP requests answered, by listener, route and status code.");
	metrics_define("refundsync_http_deadline_closed_total", METRIC_COUNTER,
	    "Connections closed for outliving the request deadline.");
	metrics_define("refundsync_http_connections_refused_total",
	    METRIC_COUNTER,
	    "Connections closed at once for going over a connection limit, "
	    "by limit.");
	/* Shown from the start, at 0, so a rate over them has a first
	 * sample. */
	metrics_add("refundsync_http_connections_refused_total",
	    "limit=\"max_connections\"", 0);
	metrics_add("refundsync_http_connections_refused_total",
	    "limit=\"max_connections_per_ip\"", 0);
}

static void mhd_logger(void *, const char *, va_list)
    __attribute__((format(printf, 2, 0)));

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	struct httpd *h = cls;
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_info("http %s: %s", h->name, msg);
}

static const struct httpd_route *
route_find(const struct httpd *h, const char *method, const char *url,
    const char **allow)
{
	*allow = NULL;
	for (size_t i = 0; i < h->nroutes; i++) {
		if (strcmp(h->routes[i].path, url) != 0)
			continue;
		*allow = h->routes[i].method;
		if (strcmp(h->routes[i].method, method) == 0)
			return &h->routes[i];
	}
	return NULL;
}

void
httpd_respond(struct httpd_request *req, unsigned status,
    const char *content_type, const char *body, size_t len,
    const char *hname, const char *hvalue)
{
	if (req->answered)
		RS_PANIC("request answered twice");
	req->status = status;
	req->resp_type = content_type;
	req->resp_body = xmalloc(len + 1);
	if (len > 0)
		memcpy(req->resp_body, body, len);
	req->resp_len = len;
	req->hname = hname;
	req->hvalue = hvalue != NULL ? xstrdup(hvalue) : NULL;
	req->answered = true;
	if (req->deferred) {
		atomic_store(&req->conn->suspended, false);
		MHD_resume_connection(req->mc);
	}
}

void
httpd_respond_error(struct httpd_request *req, unsigned status,
    const char *error, const char *reason)
{
	cJSON *o = cJSON_CreateObject();
	char *body;

	cJSON_AddStringToObject(o, "error", error);
	cJSON_AddStringToObject(o, "reason", reason);
	body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	httpd_respond(req, status, "application/json", body, strlen(body),
	    status == 503 ? "Retry-After" : NULL, status == 503 ? "5" : NULL);
	free(body);
}

void
httpd_defer(struct httpd_request *req)
{
	req->deferred = true;
	atomic_store(&req->conn->suspended, true);
	MHD_suspend_connection(req->mc);
}

const char *
httpd_req_body(const struct httpd_request *req, size_t *len)
{
	*len = req->body.len;
	return req->body.data != NULL ? req->body.data : "";
}

const char *
httpd_req_peer(const struct httpd_request *req)
{
	return req->peer;
}

/* Hand the stored answer to MHD. */
static enum MHD_Result
queue_answer(struct httpd_request *req)
{
	struct MHD_Response *resp;
	enum MHD_Result r;
	char label[128];

	resp = MHD_create_response_from_buffer(req->resp_len, req->resp_body,
	    MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
		return MHD_NO;
	req->resp_body = NULL;
	if (req->resp_type != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		    req->resp_type);
	if (req->hname != NULL && req->hvalue != NULL)
		MHD_add_response_header(resp, req->hname, req->hvalue);
	if (req->close)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION,
		    "close");
	r = MHD_queue_response(req->mc, req->status, resp);
	MHD_destroy_response(resp);
	req->queued = true;
	snprintf(label, sizeof(label),
	    "listener=\"%s\",route=\"%s\",code=\"%u\"", req->h->name,
	    req->route != NULL ? req->route->name : "other", req->status);
	metrics_add("refundsync_http_requests_total", label, 1);
	return r;
}

static void
peer_name(struct MHD_Connection *mc, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci;
	const struct sockaddr *sa;

	snprintf(out, outlen, "?");
	ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || (sa = ci->client_addr) == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    out, (socklen_t)outlen);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		    out, (socklen_t)outlen);
}

struct cl_count {
	const char	*first;		/* the first Content-Length value */
	bool		 conflict;	/* a later one differs */
};

static enum MHD_Result
cl_each(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct cl_count *c = cls;

	(void)kind;
	if (key == NULL || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) != 0)
		return MHD_YES;
	if (value == NULL)
		value = "";
	if (c->first == NULL)
		c->first = value;
	else if (strcmp(c->first, value) != 0)
		c->conflict = true;
	return MHD_YES;
}

/* First call for a request: headers are in.  Decide early answers. */
static void
request_begin(struct httpd *h, struct httpd_request *req, const char *method,
    const char *url)
{
	const char *te, *cl, *allow;
	int64_t clen;

	req->route = route_find(h, method, url, &allow);
	if (atomic_load(&h->draining)) {
		req->close = true;
		log_info("http %s: %s %s from %s: 503: draining", h->name,
		    method, url, req->peer);
		httpd_respond_error(req, 503, "unavailable", "draining");
		return;
	}
	if (req->route == NULL && allow != NULL) {
		log_info("http %s: %s %s from %s: 405: method not allowed",
		    h->name, method, url, req->peer);
		static const char body[] =
		    "{\"error\":\"method not allowed\",\"reason\":\"method\"}";

		httpd_respond(req, 405, "application/json", body,
		    sizeof(body) - 1, "Allow", allow);
		return;
	}
	if (req->route == NULL) {
		log_info("http %s: %s %s from %s: 404: no such path", h->name,
		    method, url, req->peer);
		httpd_respond_error(req, 404, "not found", "path");
		return;
	}
	te = MHD_lookup_connection_value(req->mc, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_TRANSFER_ENCODING);
	cl = MHD_lookup_connection_value(req->mc, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL) {
		/* MHD frames the body by the first Content-Length; a client
		 * that sends two different ones means another reading of the
		 * stream (request smuggling, RFC 9112 6.3). */
		struct cl_count c = { NULL, false };

		(void)MHD_get_connection_values(req->mc, MHD_HEADER_KIND,
		    cl_each, &c);
		if (c.conflict) {
			req->close = true;
			log_info("http %s: %s %s from %s: 400: conflicting "
			    "Content-Length headers", h->name, method, url,
			    req->peer);
			httpd_respond_error(req, 400, "bad request",
			    "conflicting content-length");
			return;
		}
	}
	if (te != NULL && cl != NULL) {
		req->close = true;
		log_info("http %s: %s %s from %s: 400: Transfer-Encoding with "
		    "Content-Length", h->name, method, url, req->peer);
		httpd_respond_error(req, 400, "bad request",
		    "transfer-encoding with content-length");
		return;
	}
	if (te != NULL && strcasecmp(te, "chunked") != 0) {
		req->close = true;
		log_info("http %s: %s %s from %s: 400: transfer coding '%.32s' "
		    "not supported", h->name, method, url, req->peer, te);
		httpd_respond_error(req, 400, "bad request",
		    "unsupported transfer-encoding");
		return;
	}
	if (cl != NULL && (strnum_i64(cl, 0, INT64_MAX, &clen) != NULL ||
	    (uint64_t)clen > h->max_body)) {
		req->close = true;
		log_info("http %s: %s %s from %s: 413: Content-Length %.24s "
		    "over max_body %zu", h->name, method, url, req->peer, cl,
		    h->max_body);
		httpd_respond_error(req, 413, "payload too large", "max_body");
		return;
	}
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *mc, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct httpd *h = cls;
	struct httpd_request *req = *con_cls;
	const union MHD_ConnectionInfo *ci;

	if (req == NULL) {
		req = xcalloc(1, sizeof(*req));
		req->h = h;
		req->mc = mc;
		ci = MHD_get_connection_info(mc,
		    MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		req->conn = ci != NULL ? ci->socket_context : NULL;
		if (req->conn == NULL)
			RS_PANIC("connection without context");
		buf_init(&req->body, h->max_body);
		peer_name(mc, req->peer, sizeof(req->peer));
		*con_cls = req;
		atomic_fetch_add(&h->inflight, 1);
		request_begin(h, req, method, url);
		if (req->answered)
			return queue_answer(req);
		return MHD_YES;
	}
	if (req->queued) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (!req->too_big &&
		    buf_append(&req->body, upload_data, *upload_data_size) !=
		    RS_OK) {
			req->too_big = true;
			buf_cleanup(&req->body);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->answered)
		return queue_answer(req);
	if (req->deferred)
		return MHD_YES;	/* spurious call while suspended */
	if (req->too_big) {
		req->close = true;
		log_info("http %s: %s %s from %s: 413: body over max_body %zu",
		    h->name, method, url, req->peer, h->max_body);
		httpd_respond_error(req, 413, "payload too large", "max_body");
		return queue_answer(req);
	}
	req->route->fn(req->route->arg, req);
	/*
	 * A deferred request may be answered by another thread at any
	 * moment from here on; MHD calls us again after the resume.
	 */
	if (req->deferred)
		return MHD_YES;
	if (!req->answered)
		RS_PANIC("handler neither answered nor deferred");
	return queue_answer(req);
}

static void
on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct httpd *h = cls;
	struct httpd_request *req = *con_cls;

	if (req == NULL)
		return;
	if (req->deferred && !req->answered)
		RS_PANIC("deferred request completed before its answer");
	/*
	 * A request whose client stopped sending (a body cut short, then
	 * silence) ends on MHD's idle timeout, which is request_timeout
	 * too and usually comes before the sweeper's next pass: the same
	 * cut-off, so the same log line and count, or it goes unlogged.
	 */
	if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && !req->answered &&
	    req->route != NULL && conn_claim_cutoff(req->conn)) {
		log_info("http %s: %s %s from %s: request not complete within "
		    "the %lld s request deadline: closed", h->name,
		    req->route->method, req->route->path, req->peer,
		    (long long)(h->deadline_ms / 1000));
		metrics_add("refundsync_http_deadline_closed_total", "", 1);
	}
	atomic_store(&req->conn->since, clock_mono_ms());
	buf_cleanup(&req->body);
	free(req->resp_body);
	free(req->hvalue);
	free(req);
	*con_cls = NULL;
	atomic_fetch_sub(&h->inflight, 1);
}

/* The peer's address, without the port, into c->family and c->ip. */
static void
conn_peer(struct conn *c, struct MHD_Connection *mc)
{
	const union MHD_ConnectionInfo *ci;
	const struct sockaddr *sa;

	ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || (sa = ci->client_addr) == NULL)
		return;
	if (sa->sa_family == AF_INET) {
		c->family = AF_INET;
		memcpy(c->ip, &((const struct sockaddr_in *)(const void *)sa)->
		    sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		c->family = AF_INET6;
		memcpy(c->ip, &((const struct sockaddr_in6 *)(const void *)sa)->
		    sin6_addr, 16);
	}
}

/* FNV-1a over the address, seeded per process so that the buckets
 * cannot be worked out from outside.  However the addresses fall, a
 * bucket's chain is never longer than max_connections. */
static size_t
conn_bucket(const struct httpd *h, const struct conn *c)
{
	uint32_t x = 2166136261u ^ h->seed;

	for (size_t i = 0; i < sizeof(c->ip); i++) {
		x ^= c->ip[i];
		x *= 16777619u;
	}
	x ^= c->family;
	return (size_t)(x * 16777619u) & (h->nbuckets - 1);
}

/*
 * Link c and, unless it goes over a limit, count it.  Returns the name of
 * the limit it goes over (c->refused is then set), or NULL.  A refused
 * connection is not counted: it is on its way out, and the connections
 * that come after it must not find the limit taken by it.  Called with
 * h->mtx held.
 */
static const char *
conn_link(struct httpd *h, struct conn *c, unsigned *limit)
{
	struct conn *o;
	unsigned same = 1;

	c->next = h->conns;
	if (h->conns != NULL)
		h->conns->prev = c;
	h->conns = c;
	c->bucket = conn_bucket(h, c);
	for (o = h->buckets[c->bucket]; o != NULL; o = o->ip_next)
		if (o->family == c->family &&
		    memcmp(o->ip, c->ip, sizeof(c->ip)) == 0)
			same++;
	if (h->nconns >= h->max_conns) {
		c->refused = true;
		*limit = h->max_conns;
		return "max_connections";
	}
	if (c->family != 0 && same > h->max_per_ip) {
		c->refused = true;
		*limit = h->max_per_ip;
		return "max_connections_per_ip";
	}
	h->nconns++;
	c->ip_next = h->buckets[c->bucket];
	if (c->ip_next != NULL)
		c->ip_next->ip_prev = c;
	h->buckets[c->bucket] = c;
	return NULL;
}

/* Called with h->mtx held. */
static void
conn_unlink(struct httpd *h, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->refused)
		return;
	if (c->ip_prev != NULL)
		c->ip_prev->ip_next = c->ip_next;
	else
		h->buckets[c->bucket] = c->ip_next;
	if (c->ip_next != NULL)
		c->ip_next->ip_prev = c->ip_prev;
	h->nconns--;
}

/* Log and count the cut-off of a connection whose request was not
 * known, once per connection (the caller claimed it). */
static void
log_cutoff(struct httpd *h)
{
	log_info("http %s: connection past the %lld s request deadline: "
	    "closed", h->name, (long long)(h->deadline_ms / 1000));
	metrics_add("refundsync_http_deadline_closed_total", "", 1);
}

static void
on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	struct httpd *h = cls;
	struct conn *c;
	const union MHD_ConnectionInfo *ci;
	const char *over;
	unsigned limit = 0;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		c = xcalloc(1, sizeof(*c));
		ci = MHD_get_connection_info(mc,
		    MHD_CONNECTION_INFO_CONNECTION_FD);
		c->fd = ci != NULL ? ci->connect_fd : MHD_INVALID_SOCKET;
		atomic_init(&c->since, clock_mono_ms());
		atomic_init(&c->suspended, false);
		conn_peer(c, mc);
		pthread_mutex_lock(&h->mtx);
		over = conn_link(h, c, &limit);
		pthread_mutex_unlock(&h->mtx);
		*socket_context = c;
		if (over != NULL) {
			char peer[INET6_ADDRSTRLEN] = "?";

			if (c->family != 0)
				inet_ntop(c->family, c->ip, peer,
				    sizeof(peer));
			log_info("http %s: connection from %s over %s (%u): "
			    "closed", h->name, peer, over, limit);
			metrics_add("refundsync_http_connections_refused_total",
			    strcmp(over, "max_connections") == 0 ?
			    "limit=\"max_connections\"" :
			    "limit=\"max_connections_per_ip\"", 1);
			/* MHD reads the end of the stream, closes the
			 * connection and tells us (CLOSED, below).  The
			 * sweeper leaves it alone. */
			atomic_store(&c->since, CONN_DONE);
			if (c->fd != MHD_INVALID_SOCKET)
				(void)shutdown(c->fd, SHUT_RDWR);
		}
		return;
	}
	if ((c = *socket_context) == NULL)
		return;
	/*
	 * A connection whose request never reached us (headers cut short,
	 * then silence) and that MHD's idle timeout, which is
	 * request_timeout too, closes before the sweeper's next pass: only
	 * its close is seen.  Nothing else closes a connection that old
	 * before the sweeper does, unless its client gives up in the same
	 * instant; the same cut-off, so the same line.
	 */
	if (clock_mono_ms() - atomic_load(&c->since) >= h->deadline_ms &&
	    conn_claim_cutoff(c))
		log_cutoff(h);
	pthread_mutex_lock(&h->mtx);
	conn_unlink(h, c);
	pthread_mutex_unlock(&h->mtx);
	free(c);
	*socket_context = NULL;
}

static void *
sweeper_main(void *arg)
{
	struct httpd *h = arg;

	(void)pthread_setname_np(pthread_self(), "rs-sweeper");
	pthread_mutex_lock(&h->stop_mtx);
	while (!h->stop) {
		struct timespec ts;
		int64_t now;
		struct conn *c;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += HTTPD_SWEEP_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->stop_cond, &h->stop_mtx, &ts);
		if (h->stop)
			break;
		now = clock_mono_ms();
		pthread_mutex_lock(&h->mtx);
		for (c = h->conns; c != NULL; c = c->next) {
			if (atomic_load(&c->suspended) ||
			    c->fd == MHD_INVALID_SOCKET ||
			    now - atomic_load(&c->since) <= h->deadline_ms ||
			    !conn_claim_cutoff(c))
				continue;
			log_cutoff(h);
			/* Not again on the next sweep: since is CONN_DONE. */
			(void)shutdown(c->fd, SHUT_RDWR);
		}
		pthread_mutex_unlock(&h->mtx);
	}
	pthread_mutex_unlock(&h->stop_mtx);
	return NULL;
}

static uint16_t
sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)ss)->
		    sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)ss)->
		    sin6_port);
	return 0;
}

static void
sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)(void *)ss)->sin_port = htons(port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)ss)->sin6_port = htons(port);
}

static socklen_t
sockaddr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in);
}

/*
 * Bind a plain socket (SO_REUSEADDR, as MHD does, but not SO_REUSEPORT)
 * to the address, so that a port already listened on by anyone is
 * refused, and learn the port when 0 was asked for.  The socket is
 * closed again; the workers bind next.  Returns the port, or 0 with
 * errno set.
 */
static uint16_t
probe_port(const struct sockaddr_storage *addr)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd, on = 1, e;

	fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (addr->ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on,
		    sizeof(on));
	memset(&ss, 0, sizeof(ss));
	if (bind(fd, (const struct sockaddr *)addr, sockaddr_len(addr)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
		e = errno;
		close(fd);
		errno = e;
		return 0;
	}
	close(fd);
	return sockaddr_port(&ss);
}

static uint16_t
bound_port(struct MHD_Daemon *mhd)
{
	const union MHD_DaemonInfo *di;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	memset(&ss, 0, sizeof(ss));
	di = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_LISTEN_FD);
	if (di == NULL || getsockname(di->listen_fd, (struct sockaddr *)&ss,
	    &len) != 0)
		return 0;
	return sockaddr_port(&ss);
}

/* One worker: an MHD daemon with one polling thread. */
static struct MHD_Daemon *
worker_start(struct httpd *h, const struct httpd_options *opt, bool reuse)
{
	unsigned flags;

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	    MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	if (h->addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	{
		/* The logger goes first, so MHD never prints on its own.
		 * MHD's connection limits count per worker, and count a
		 * refused connection until it is closed; set at twice
		 * ours, they are only a backstop against a flood, and
		 * conn_link() (which logs) refuses first. */
		struct MHD_OptionItem ops[] = {
			{ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, h },
			{ MHD_OPTION_SOCK_ADDR, 0, &h->addr },
			{ MHD_OPTION_CONNECTION_LIMIT,
			    (intptr_t)opt->max_connections * 2, NULL },
			{ MHD_OPTION_PER_IP_CONNECTION_LIMIT,
			    (intptr_t)opt->max_connections_per_ip * 2, NULL },
			{ MHD_OPTION_CONNECTION_TIMEOUT,
			    (intptr_t)opt->request_timeout, NULL },
			{ MHD_OPTION_CONNECTION_MEMORY_LIMIT,
			    (intptr_t)HTTPD_CONN_MEMORY, NULL },
			{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed,
			    h },
			{ MHD_OPTION_NOTIFY_CONNECTION,
			    (intptr_t)on_connection, h },
			{ MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL },
			{ MHD_OPTION_END, 0, NULL }
		};

		if (!reuse)
			ops[8].option = MHD_OPTION_END;
		return MHD_start_daemon(flags, 0, NULL, NULL, on_access, h,
		    MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
	}
}

enum rs_status
httpd_start(const struct httpd_options *opt, struct httpd **out, char **why)
{
	struct httpd *h;
	size_t n = opt->threads > 1 ? opt->threads : 1;
	int r;

	httpd_define_metrics();
	h = xcalloc(1, sizeof(*h));
	h->name = xstrdup(opt->name);
	h->addr = opt->addr;
	h->max_body = opt->max_body;
	h->deadline_ms = (int64_t)opt->request_timeout * 1000;
	h->routes = opt->routes;
	h->nroutes = opt->nroutes;
	h->max_conns = opt->max_connections;
	h->max_per_ip = opt->max_connections_per_ip;
	for (h->nbuckets = 16; h->nbuckets < opt->max_connections &&
	    h->nbuckets < 65536; h->nbuckets *= 2)
		;
	/* Arrays of pointers: sizeof(struct conn *) and
	 * sizeof(struct MHD_Daemon *) are meant. */
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	h->buckets = xcalloc(h->nbuckets, sizeof(*h->buckets));
	h->seed = arc4random();
	/* NOLINTNEXTLINE(bugprone-sizeof-expression) */
	h->mhd = xcalloc(n, sizeof(*h->mhd));
	atomic_init(&h->draining, false);
	atomic_init(&h->inflight, 0);
	pthread_mutex_init(&h->mtx, NULL);
	pthread_mutex_init(&h->stop_mtx, NULL);
	{
		/* Timed waits count on the monotonic clock, like every
		 * deadline here. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&h->stop_cond, &ca);
		pthread_condattr_destroy(&ca);
	}

	if (n > 1) {
		uint16_t port = probe_port(&h->addr);

		if (port == 0) {
			*why = xasprintf("%s listener: cannot bind port %u: "
			    "%s", opt->name, (unsigned)sockaddr_port(&h->addr),
			    strerror(errno));
			goto fail;
		}
		sockaddr_set_port(&h->addr, port);
	}
	for (h->nmhd = 0; h->nmhd < n; h->nmhd++) {
		h->mhd[h->nmhd] = worker_start(h, opt, n > 1);
		if (h->mhd[h->nmhd] == NULL) {
			*why = xasprintf("%s listener: cannot start: %s "
			    "(address in use, or not permitted?)", opt->name,
			    strerror(errno));
			goto fail;
		}
	}
	h->port = bound_port(h->mhd[0]);
	if ((r = pthread_create(&h->sweeper, NULL, sweeper_main, h)) != 0) {
		*why = xasprintf("%s listener: pthread_create: %s", opt->name,
		    strerror(r));
		goto fail;
	}
	h->sweeping = true;
	*out = h;
	return RS_OK;
fail:
	while (h->nmhd > 0)
		MHD_stop_daemon(h->mhd[--h->nmhd]);
	pthread_cond_destroy(&h->stop_cond);
	pthread_mutex_destroy(&h->stop_mtx);
	pthread_mutex_destroy(&h->mtx);
	free(h->mhd);
	free(h->buckets);
	free(h->name);
	free(h);
	return RS_ERR_IO;
}

uint16_t
httpd_port(const struct httpd *h)
{
	return h->port;
}

void
httpd_drain(struct httpd *h)
{
	MHD_socket s;

	if (atomic_exchange(&h->draining, true))
		return;
	for (size_t i = 0; i < h->nmhd; i++) {
		s = MHD_quiesce_daemon(h->mhd[i]);
		if (s != MHD_INVALID_SOCKET)
			close(s);
	}
}

size_t
httpd_inflight(struct httpd *h)
{
	return atomic_load(&h->inflight);
}

void
httpd_stop(struct httpd *h)
{
	if (h == NULL)
		return;
	if (h->sweeping) {
		pthread_mutex_lock(&h->stop_mtx);
		h->stop = true;
		pthread_cond_signal(&h->stop_cond);
		pthread_mutex_unlock(&h->stop_mtx);
		pthread_join(h->sweeper, NULL);
	}
	for (size_t i = 0; i < h->nmhd; i++)
		MHD_stop_daemon(h->mhd[i]);
	pthread_cond_destroy(&h->stop_cond);
	pthread_mutex_destroy(&h->stop_mtx);
	pthread_mutex_destroy(&h->mtx);
	free(h->mhd);
	free(h->buckets);
	free(h->name);
	free(h);
}
