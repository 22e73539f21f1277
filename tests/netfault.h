/*
 * netfault.h: network faults on loopback, for the tests of the Wix API
 * client (tests/unit/check_wixapi.c) and of the http exporter.
 *
 * Five parts:
 *   - an unresolvable host name (DNS failure);
 *   - a "blackhole" listener whose SYNs are dropped, so a connect()
 *     towards it hangs until the client's connect timeout;
 *   - a TLS server (libmicrohttpd with GnuTLS) whose certificate is
 *     good, self-signed, expired or for the wrong host name, made at run
 *     time with libcrypto, and a test CA that issued the good, expired
 *     and wrong-host ones (for clients that take a CA file);
 *   - a raw TCP server that plays a script of answers per connection:
 *     send bytes and close, send bytes and reset (RST), send bytes and
 *     hold the connection open, or send bytes and then stream filler
 *     forever; it records every request it reads;
 *   - an HTTP date (IMF-fixdate) for a Retry-After.
 *
 * Everything listens on 127.0.0.1, port 0 (the kernel picks it), runs
 * its own thread where it needs one, and stops cleanly in its _stop()
 * function (which also frees it; NULL is fine).  Every wait inside is
 * bounded.  This file is part of tests/libtestutil.a, which does not
 * link check: nothing here asserts.  Failures come back as NULL or false
 * with the reason on stderr, like tests/testutil.h.  Strings returned
 * are owned by the caller (free()) unless a prototype says "borrowed".
 * Servers count what they see with atomics, so a test may read the
 * counters while a client runs in another thread.
 *
 * Ownership of this file: the Wix-side network fault tests.  The http
 * exporter tests use it too: the API below is stable; add to it, do not
 * change it.
 */
#ifndef RS_NETFAULT_H
#define RS_NETFAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- DNS ----------------------------------------------------------- */

/*
 * A host name that never resolves: RFC 6761 reserves ".invalid", so a
 * resolver answers NXDOMAIN (here at once, from the local resolver; the
 * test's bound still applies if it had to ask the network).
 */
#define NF_UNRESOLVABLE_HOST	"refundsync-netfault.invalid"

/*
 * true if getaddrinfo() of NF_UNRESOLVABLE_HOST fails, and *ms (may be
 * NULL) says how long it took.  A test can use it to check that the
 * machine fails the name quickly before relying on it.
 */
bool	nf_unresolvable_check(int64_t *ms /* OUT, may be NULL */);

/* ---- connect timeout ----------------------------------------------- */

/*
 * A listening socket on 127.0.0.1 with listen(fd, 0) whose accept queue
 * is filled by connections that are never accepted: Linux then drops
 * every new SYN, so a connect() to port hangs (the client retransmits
 * its SYN) until the client gives up.  nf_blackhole_start() checks that
 * a probe connect does hang for 200 ms before returning.
 */
struct nf_blackhole {
	int	 port;		/* on 127.0.0.1 */
	int	 lfd;		/* the listener (private) */
	int	 fill[4];	/* queued and pending connects (private) */
	int	 nfill;
};

/* NULL (stderr says why) if no blackhole could be made. */
struct nf_blackhole *nf_blackhole_start(void);
/* Close everything and free.  NULL is fine. */
void	nf_blackhole_stop(struct nf_blackhole *b);

/* ---- TLS ----------------------------------------------------------- */

enum nf_cert {
	NF_CERT_GOOD,		/* issued by the test CA for DNS:localhost
				   and IP:127.0.0.1, valid from a day ago to
				   a day ahead */
	NF_CERT_SELF_SIGNED,	/* the same names and dates, signed by its
				   own key: untrusted even with the CA */
	NF_CERT_EXPIRED,	/* issued by the test CA, the right names,
				   expired since yesterday */
	NF_CERT_WRONG_HOST	/* issued by the test CA, valid, for
				   DNS:wrong-host.invalid only */
};

/*
 * The test CA's certificate as PEM (made once per process, EC P-256,
 * on first use).  Borrowed, valid until exit; NULL on failure.
 */
const char *nf_tls_ca_pem(void);
/* Write it to dir/netfault-ca.pem.  Returns the path (caller frees), or
 * NULL on failure. */
char	*nf_tls_ca_file(const char *dir);

struct nf_tls_server;

/*
 * An HTTPS server on 127.0.0.1:0 presenting a certificate of kind kind,
 * answering every request with status and body (NUL-terminated; NULL:
 * empty), Content-Type application/json.  NULL (stderr says why) if the
 * certificate cannot be made or libmicrohttpd has no TLS.
 */
struct nf_tls_server *nf_tls_start(enum nf_cert kind, int status,
	    const char *body);
/* Its port.  */
int	nf_tls_port(const struct nf_tls_server *s);
/* TCP connections accepted so far (handshakes tried). */
unsigned nf_tls_connections(const struct nf_tls_server *s);
/* HTTP requests that got through the handshake and were answered. */
unsigned nf_tls_requests(const struct nf_tls_server *s);
/* Stop the server (waits for its thread) and free.  NULL is fine. */
void	nf_tls_stop(struct nf_tls_server *s);

/* ---- raw server ---------------------------------------------------- */

enum nf_raw_action {
	NF_RAW_CLOSE,		/* send data, then close normally (FIN),
				   reading until the client closes too (at
				   most 2 s), so no reset follows */
	NF_RAW_RESET,		/* send data, wait 100 ms (so the peer has
				   read it), then close with SO_LINGER
				   {1, 0}: the peer sees a reset */
	NF_RAW_HOLD,		/* send data, then keep the connection open
				   (reading and discarding) until the client
				   closes it or the server stops */
	NF_RAW_STREAM		/* send data, then filler bytes ('x') as
				   fast as the client reads them, until it
				   closes or the server stops */
};

/* One connection's answer.  data: the bytes sent once the request is in
 * (NULL: none); len: how many (0: strlen(data)). */
struct nf_raw_step {
	enum nf_raw_action	 action;
	const char		*data;
	size_t			 len;
};

struct nf_raw_server;

/*
 * A TCP server on 127.0.0.1:0 that serves connections one at a time:
 * the k-th connection (from 0) plays steps[min(k, n - 1)].  Before it
 * answers, it reads the request: the head up to the blank line and
 * then Content-Length bytes of body (at most 1 MiB, within 5 s); if the
 * first bytes are not HTTP (such as a TLS ClientHello), it answers at
 * once.  steps is copied (the data too).  NULL (stderr says why) on
 * failure.
 */
struct nf_raw_server *nf_raw_start(const struct nf_raw_step *steps,
	    size_t n);
int	nf_raw_port(const struct nf_raw_server *s);
/* Connections accepted so far. */
unsigned nf_raw_connections(const struct nf_raw_server *s);
/*
 * The bytes read on connection k (the request head and body, as
 * received; "" if it sent nothing), or NULL if there was no such
 * connection yet.  Caller frees.
 */
char	*nf_raw_request(const struct nf_raw_server *s, unsigned k);
/* Stop (closes a held connection, waits for its thread) and free.  NULL
 * is fine. */
void	nf_raw_stop(struct nf_raw_server *s);

/* ---- misc ---------------------------------------------------------- */

/* The wall-clock time now + offset_s as an HTTP date (RFC 9110
 * IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT").  Caller frees. */
char	*nf_http_date(int64_t offset_s);

#endif
