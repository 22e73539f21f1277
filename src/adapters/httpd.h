/*
 * httpd.h: one HTTP listener on libmicrohttpd, with the limits from
 * HARDENING.md built in.
 *
 * A listener has a route table.  Before a handler runs, httpd enforces:
 * 404 for an unknown path and 405 (with Allow) for a known path with the
 * wrong method; 400 for Transfer-Encoding together with Content-Length
 * or any transfer coding but chunked; 413 for a body over max_body (at
 * once by Content-Length, or at the end for chunked, without buffering
 * past the cap); an idle timeout and an absolute per-request deadline on
 * the monotonic clock (a sweeper shuts down connections past it, so a
 * trickle cannot hold a slot); connection, per-IP and per-connection
 * memory limits (a header block over the pool gets 431 from MHD).  The
 * connection limits hold for the listener as a whole, however many
 * workers share its port.
 *
 * Handlers run on MHD's pool threads and must not block.  A handler
 * either answers at once with httpd_respond(), or calls httpd_defer()
 * and hands the request to another thread, which later calls
 * httpd_respond() exactly once; the connection stays suspended in
 * between, holding no thread.
 */
#ifndef RS_HTTPD_H
#define RS_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/status.h"

struct httpd;
struct httpd_request;

/* Called once per request, with the whole body read. */
typedef void (*httpd_handler)(void *arg, struct httpd_request *req);

struct httpd_route {
	const char	*method;	/* "GET", "POST" */
	const char	*path;		/* exact match */
	const char	*name;		/* metrics label: "webhook", ... */
	httpd_handler	 fn;
	void		*arg;
};

struct httpd_options {
	const char		*name;		/* "public", "admin" */
	struct sockaddr_storage	 addr;
	socklen_t		 addrlen;
	unsigned		 threads;	/* workers, >= 1; see httpd.c */
	size_t			 max_body;	/* bytes */
	unsigned		 request_timeout; /* seconds */
	unsigned		 max_connections;
	unsigned		 max_connections_per_ip;
	const struct httpd_route *routes;	/* borrowed; must outlive */
	size_t			 nroutes;
};

/*
 * Bind and start serving.  RS_OK and *out (caller owns; httpd_stop()),
 * or RS_ERR_IO with a message in *why (caller frees).
 */
enum rs_status	httpd_start(const struct httpd_options *opt,
		    struct httpd **out /* OUT */, char **why /* OUT */);
/* The bound port (useful when 0 was asked for). */
uint16_t	httpd_port(const struct httpd *h);
/*
 * Draining: stop accepting connections (the listening socket is closed),
 * and answer any new request on a kept-alive connection with 503 and
 * Connection: close.  Requests already under way continue.
 */
void		httpd_drain(struct httpd *h);
/* Requests started and not yet completed (including deferred ones). */
size_t		httpd_inflight(struct httpd *h);
/* Stop and free.  No request may be deferred any more.  NULL is fine. */
void		httpd_stop(struct httpd *h);

/* The body, NUL-terminated for convenience (len excludes the NUL).
 * Borrowed; valid until httpd_respond(). */
const char	*httpd_req_body(const struct httpd_request *req,
		    size_t *len /* OUT */);
/* The client's address as text ("127.0.0.1"), for logs. */
const char	*httpd_req_peer(const struct httpd_request *req);

/*
 * Answer req: status, a body (copied; may be NULL for none) of
 * content_type, and optionally one more header (name NULL for none).
 * From the handler, or, after httpd_defer(), from any thread exactly once.
 */
void		httpd_respond(struct httpd_request *req, unsigned status,
		    const char *content_type, const char *body, size_t len,
		    const char *hname, const char *hvalue);
/* Answer with a short JSON error body {"error":...,"reason":...}. */
void		httpd_respond_error(struct httpd_request *req,
		    unsigned status, const char *error, const char *reason);
/* Keep the connection suspended after the handler returns. */
void		httpd_defer(struct httpd_request *req);

#endif
