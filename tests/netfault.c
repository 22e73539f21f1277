/*
 * netfault.c: network faults on loopback (see netfault.h).
 *
 * Key decisions: every server binds 127.0.0.1 port 0 and every wait has
 * a deadline or a stop pipe, so a broken client fails a test instead of
 * hanging it.  Certificates are EC P-256 (fast to make, even under the
 * sanitizers) and made with libcrypto's X509 API; the TLS server is
 * libmicrohttpd with GnuTLS, so the client (libcurl on OpenSSL) and the
 * server share no TLS code.  The raw server serves one connection at a
 * time on its own thread: enough for a client that retries in sequence.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "util/clock.h"
#include "util/xmalloc.h"

#include "netfault.h"

#define NF_REQ_MAX	(1024u * 1024)	/* request bytes kept per connection */
#define NF_REQ_MS	5000		/* bound on reading one request */
#define NF_RESET_PAUSE	100		/* ms before the reset */
#define NF_PROBE_MS	200		/* a connect pending this long hangs */
#define NF_DRAIN_MS	2000		/* wait for the peer's close */

/* ---- DNS ----------------------------------------------------------- */

bool
nf_unresolvable_check(int64_t *ms)
{
	struct addrinfo	 hints, *res = NULL;
	int64_t		 t0;
	int		 rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	t0 = clock_mono_ms();
	rc = getaddrinfo(NF_UNRESOLVABLE_HOST, "443", &hints, &res);
	if (ms != NULL)
		*ms = clock_mono_ms() - t0;
	if (rc == 0) {
		freeaddrinfo(res);
		fprintf(stderr, "netfault: %s resolves\n",
		    NF_UNRESOLVABLE_HOST);
		return false;
	}
	return true;
}

/* ---- connect timeout ----------------------------------------------- */

static int
loopback_listener(int backlog, int *port)
{
	struct sockaddr_in	 sin;
	socklen_t		 sl = sizeof(sin);
	int			 fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		fprintf(stderr, "netfault: socket: %s\n", strerror(errno));
		return -1;
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, backlog) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) == -1) {
		fprintf(stderr, "netfault: listener: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

/* Start a non-blocking connect to 127.0.0.1:port.  Returns the socket and
 * in *done whether it completed within NF_PROBE_MS; -1 on error. */
static int
probe_connect(int port, bool *done)
{
	struct sockaddr_in	 sin;
	struct pollfd		 pfd;
	int			 fd, err = 0;
	socklen_t		 el = sizeof(err);

	*done = false;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
		*done = true;
		return fd;
	}
	if (errno != EINPROGRESS) {
		fprintf(stderr, "netfault: connect: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	pfd.fd = fd;
	pfd.events = POLLOUT;
	pfd.revents = 0;
	if (poll(&pfd, 1, NF_PROBE_MS) == 1) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1 ||
		    err != 0) {
			fprintf(stderr, "netfault: connect: %s\n",
			    strerror(err != 0 ? err : errno));
			close(fd);
			return -1;
		}
		*done = true;
	}
	return fd;
}

struct nf_blackhole *
nf_blackhole_start(void)
{
	struct nf_blackhole	*b;
	bool			 done;
	int			 fd;

	b = xcalloc(1, sizeof(*b));
	b->nfill = 0;
	if ((b->lfd = loopback_listener(0, &b->port)) == -1)
		goto fail;
	/* Fill the accept queue until a connect stays pending. */
	while (b->nfill < (int)(sizeof(b->fill) / sizeof(b->fill[0]))) {
		if ((fd = probe_connect(b->port, &done)) == -1)
			goto fail;
		b->fill[b->nfill++] = fd;
		if (!done)
			return b;
	}
	fprintf(stderr, "netfault: the kernel accepts every SYN: "
	    "no blackhole\n");
fail:
	nf_blackhole_stop(b);
	return NULL;
}

void
nf_blackhole_stop(struct nf_blackhole *b)
{
	int	 i;

	if (b == NULL)
		return;
	for (i = 0; i < b->nfill; i++)
		close(b->fill[i]);
	if (b->lfd >= 0)
		close(b->lfd);
	free(b);
}

/* ---- certificates -------------------------------------------------- */

static char *
bio_text(BIO *bio)
{
	char	*p, *s;
	long	 n;

	n = BIO_get_mem_data(bio, &p);
	if (n < 0)
		return NULL;
	s = xmalloc((size_t)n + 1);
	memcpy(s, p, (size_t)n);
	s[n] = '\0';
	return s;
}

static char *
key_pem(EVP_PKEY *k)
{
	BIO	*bio;
	char	*s = NULL;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	if (PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) == 1)
		s = bio_text(bio);
	BIO_free(bio);
	return s;
}

static char *
cert_pem(X509 *c)
{
	BIO	*bio;
	char	*s = NULL;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	if (PEM_write_bio_X509(bio, c) == 1)
		s = bio_text(bio);
	BIO_free(bio);
	return s;
}

static bool
add_ext(X509 *c, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX	 ctx;
	X509_EXTENSION	*ex;
	bool		 ok;

	X509V3_set_ctx(&ctx, issuer, c, NULL, NULL, 0);
	if ((ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		return false;
	ok = X509_add_ext(c, ex, -1) == 1;
	X509_EXTENSION_free(ex);
	return ok;
}

/*
 * A certificate for key with common name cn, valid from now + from_s to
 * now + to_s, signed by issuer_key (issuer: its certificate, NULL for a
 * self-signed one).  san NULL: a CA.  NULL on failure.
 */
static X509 *
cert_make(EVP_PKEY *key, const char *cn, const char *san, int64_t from_s,
    int64_t to_s, X509 *issuer, EVP_PKEY *issuer_key)
{
	X509		*c;
	X509_NAME	*name;
	BIGNUM		*bn = NULL;
	bool		 ok = false;

	if ((c = X509_new()) == NULL)
		return NULL;
	if (X509_set_version(c, 2) != 1 || (bn = BN_new()) == NULL ||
	    BN_rand(bn, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)) == NULL ||
	    X509_gmtime_adj(X509_getm_notBefore(c), (long)from_s) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(c), (long)to_s) == NULL ||
	    X509_set_pubkey(c, key) != 1)
		goto out;
	name = X509_get_subject_name(c);
	if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	    (const unsigned char *)"refundsync tests", -1, -1, 0) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0) != 1)
		goto out;
	if (X509_set_issuer_name(c, issuer != NULL ?
	    X509_get_subject_name(issuer) : name) != 1)
		goto out;
	if (!add_ext(c, issuer != NULL ? issuer : c,
	    NID_subject_key_identifier, "hash") ||
	    !add_ext(c, issuer != NULL ? issuer : c,
	    NID_authority_key_identifier, "keyid:always"))
		goto out;
	if (san == NULL) {
		if (!add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE") ||
		    !add_ext(c, c, NID_key_usage,
		    "critical,keyCertSign,cRLSign"))
			goto out;
	} else {
		if (!add_ext(c, c, NID_basic_constraints, "CA:FALSE") ||
		    !add_ext(c, c, NID_key_usage,
		    "critical,digitalSignature") ||
		    !add_ext(c, c, NID_ext_key_usage, "serverAuth") ||
		    !add_ext(c, c, NID_subject_alt_name, san))
			goto out;
	}
	if (X509_sign(c, issuer_key, EVP_sha256()) == 0)
		goto out;
	ok = true;
out:
	BN_free(bn);
	if (!ok) {
		fprintf(stderr, "netfault: cannot make a certificate\n");
		ERR_print_errors_fp(stderr);
		X509_free(c);
		c = NULL;
	}
	return c;
}

/* The test CA: made once, kept until exit. */
static pthread_once_t	 ca_once = PTHREAD_ONCE_INIT;
static EVP_PKEY		*ca_key;
static X509		*ca_cert;
static char		*ca_pem;

static void
ca_init(void)
{
	if ((ca_key = EVP_EC_gen("P-256")) == NULL)
		return;
	ca_cert = cert_make(ca_key, "refundsync netfault test CA", NULL,
	    -86400, 30 * 86400, NULL, ca_key);
	if (ca_cert != NULL)
		ca_pem = cert_pem(ca_cert);
}

const char *
nf_tls_ca_pem(void)
{
	pthread_once(&ca_once, ca_init);
	if (ca_pem == NULL)
		fprintf(stderr, "netfault: no test CA\n");
	return ca_pem;
}

char *
nf_tls_ca_file(const char *dir)
{
	const char	*pem;
	char		*path;
	FILE		*f;
	bool		 ok;

	if ((pem = nf_tls_ca_pem()) == NULL)
		return NULL;
	path = xasprintf("%s/netfault-ca.pem", dir);
	if ((f = fopen(path, "w")) == NULL) {
		fprintf(stderr, "netfault: %s: %s\n", path, strerror(errno));
		free(path);
		return NULL;
	}
	ok = fputs(pem, f) >= 0;
	if (fclose(f) != 0)
		ok = false;
	if (!ok) {
		fprintf(stderr, "netfault: %s: write failed\n", path);
		free(path);
		return NULL;
	}
	return path;
}

/* The key and certificate of kind as PEM into *key and *cert (caller
 * frees both).  false on failure. */
static bool
leaf_make(enum nf_cert kind, char **keyp, char **certp)
{
	static const char	 good[] = "DNS:localhost,IP:127.0.0.1";
	EVP_PKEY		*k;
	X509			*c = NULL;

	*keyp = *certp = NULL;
	if (nf_tls_ca_pem() == NULL)
		return false;
	if ((k = EVP_EC_gen("P-256")) == NULL) {
		fprintf(stderr, "netfault: cannot make a key\n");
		return false;
	}
	switch (kind) {
	case NF_CERT_GOOD:
		c = cert_make(k, "localhost", good, -86400, 86400, ca_cert,
		    ca_key);
		break;
	case NF_CERT_SELF_SIGNED:
		c = cert_make(k, "localhost", good, -86400, 86400, NULL, k);
		break;
	case NF_CERT_EXPIRED:
		c = cert_make(k, "localhost", good, -2 * 86400, -86400,
		    ca_cert, ca_key);
		break;
	case NF_CERT_WRONG_HOST:
		c = cert_make(k, "wrong-host.invalid",
		    "DNS:wrong-host.invalid", -86400, 86400, ca_cert, ca_key);
		break;
	}
	if (c != NULL) {
		*keyp = key_pem(k);
		*certp = cert_pem(c);
	}
	X509_free(c);
	EVP_PKEY_free(k);
	if (*keyp == NULL || *certp == NULL) {
		freezero_str(*keyp);
		free(*certp);
		*keyp = *certp = NULL;
		return false;
	}
	return true;
}

/* ---- TLS server ---------------------------------------------------- */

struct tls_counts {
	atomic_uint		 conns;
	atomic_uint		 reqs;
};

struct nf_tls_server {
	struct MHD_Daemon	*d;
	int			 port;
	int			 status;
	char			*body;
	char			*key;		/* PEM, kept while it runs */
	char			*cert;
	struct tls_counts	*n;		/* mutable through a const s */
};

static enum MHD_Result
tls_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct nf_tls_server	*s = cls;

	(void)addr;
	(void)addrlen;
	atomic_fetch_add(&s->n->conns, 1);
	return MHD_YES;
}

static enum MHD_Result
tls_handler(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	static int		 marker;
	struct nf_tls_server	*s = cls;
	struct MHD_Response	*r;
	enum MHD_Result		 ret;

	(void)url;
	(void)method;
	(void)version;
	(void)upload;
	if (*con_cls == NULL) {
		*con_cls = &marker;
		return MHD_YES;
	}
	if (*upload_size != 0) {
		*upload_size = 0;
		return MHD_YES;
	}
	atomic_fetch_add(&s->n->reqs, 1);
	r = MHD_create_response_from_buffer(strlen(s->body), s->body,
	    MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "application/json");
	ret = MHD_queue_response(conn, (unsigned)s->status, r);
	MHD_destroy_response(r);
	return ret;
}

struct nf_tls_server *
nf_tls_start(enum nf_cert kind, int status, const char *body)
{
	struct nf_tls_server	*s;
	struct sockaddr_in	 sin;
	const union MHD_DaemonInfo *di;

	if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		fprintf(stderr, "netfault: libmicrohttpd has no TLS\n");
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->n = xcalloc(1, sizeof(*s->n));
	atomic_init(&s->n->conns, 0);
	atomic_init(&s->n->reqs, 0);
	s->status = status;
	s->body = xstrdup(body != NULL ? body : "");
	if (!leaf_make(kind, &s->key, &s->cert))
		goto fail;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
	    MHD_USE_TLS, 0, tls_accept, s, tls_handler, s,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
	    MHD_OPTION_HTTPS_MEM_KEY, s->key,
	    MHD_OPTION_HTTPS_MEM_CERT, s->cert,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
	    MHD_OPTION_END);
	if (s->d == NULL) {
		fprintf(stderr, "netfault: the TLS server did not start\n");
		goto fail;
	}
	di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	if (di == NULL || di->port == 0) {
		fprintf(stderr, "netfault: the TLS server has no port\n");
		goto fail;
	}
	s->port = di->port;
	return s;
fail:
	nf_tls_stop(s);
	return NULL;
}

int
nf_tls_port(const struct nf_tls_server *s)
{
	return s->port;
}

unsigned
nf_tls_connections(const struct nf_tls_server *s)
{
	return atomic_load(&s->n->conns);
}

unsigned
nf_tls_requests(const struct nf_tls_server *s)
{
	return atomic_load(&s->n->reqs);
}

void
nf_tls_stop(struct nf_tls_server *s)
{
	if (s == NULL)
		return;
	if (s->d != NULL)
		MHD_stop_daemon(s->d);
	freezero_str(s->key);
	free(s->cert);
	free(s->body);
	free(s->n);
	free(s);
}

/* ---- raw server ---------------------------------------------------- */

/* A step with its own copy of the data. */
struct raw_step {
	enum nf_raw_action	 action;
	char			*data;
	size_t			 len;
};

/* What the thread records, mutable through a const server. */
struct raw_log {
	atomic_uint		 conns;
	pthread_mutex_t		 mu;		/* guards reqs, nreqs */
	char			**reqs;
	unsigned		 nreqs;
};

struct nf_raw_server {
	int			 lfd;
	int			 port;
	int			 stop[2];	/* a byte on stop[1]: stop */
	pthread_t		 thr;
	bool			 started;
	struct raw_step		*steps;
	size_t			 nsteps;
	struct raw_log		*log;
};

/* Wait for fd to be ready for events, or stop.  1: ready; 0: timeout;
 * -1: stop (or a poll error). */
static int
raw_wait(struct nf_raw_server *s, int fd, short events, int ms)
{
	struct pollfd	 p[2];
	int		 n;

	p[0].fd = fd;
	p[0].events = events;
	p[1].fd = s->stop[0];
	p[1].events = POLLIN;
	p[0].revents = p[1].revents = 0;
	do
		n = poll(p, 2, ms);
	while (n == -1 && errno == EINTR);
	if (n == -1 || p[1].revents != 0)
		return -1;
	return n == 0 ? 0 : 1;
}

/* The Content-Length in the head, or 0. */
static size_t
head_length(const char *head)
{
	const char	*p = head;
	char		*end;
	unsigned long	 v;

	while ((p = strchr(p, '\n')) != NULL) {
		p++;
		if (strncasecmp(p, "Content-Length:", 15) == 0) {
			errno = 0;
			v = strtoul(p + 15, &end, 10);
			if (errno != 0 || end == p + 15)
				return 0;
			return v > NF_REQ_MAX ? NF_REQ_MAX : (size_t)v;
		}
	}
	return 0;
}

static bool
head_expects_continue(const char *head)
{
	const char	*p = head;

	while ((p = strchr(p, '\n')) != NULL) {
		p++;
		if (strncasecmp(p, "Expect:", 7) == 0)
			return strncasecmp(p + 7 + strspn(p + 7, " \t"),
			    "100-continue", 12) == 0;
	}
	return false;
}

/* Read one request from fd into a new string.  false: stop. */
static bool
raw_read_request(struct nf_raw_server *s, int fd, char **out)
{
	char		*buf;
	const char	*eoh;
	size_t		 len = 0, want = 0;
	int64_t		 deadline = clock_mono_ms() + NF_REQ_MS, left;
	ssize_t		 n;
	bool		 head = false, ok = true;
	int		 w;

	buf = xmalloc(NF_REQ_MAX + 1);
	buf[0] = '\0';
	for (;;) {
		if (head && len >= want)
			break;
		if (len == NF_REQ_MAX)
			break;
		if ((left = deadline - clock_mono_ms()) <= 0)
			break;
		if ((w = raw_wait(s, fd, POLLIN, (int)left)) != 1) {
			ok = w == 0;
			break;
		}
		n = read(fd, buf + len, NF_REQ_MAX - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		/* Not HTTP (a TLS ClientHello): answer at once. */
		if (buf[0] < 'A' || buf[0] > 'Z')
			break;
		if (!head && (eoh = strstr(buf, "\r\n\r\n")) != NULL) {
			head = true;
			want = (size_t)(eoh + 4 - buf) + head_length(buf);
			if (want > NF_REQ_MAX)
				want = NF_REQ_MAX;
			if (len < want && head_expects_continue(buf))
				(void)send(fd, "HTTP/1.1 100 Continue\r\n\r\n",
				    25, MSG_NOSIGNAL);
		}
	}
	*out = buf;
	return ok;
}

static bool
raw_send(struct nf_raw_server *s, int fd, const char *data, size_t len)
{
	ssize_t	 n;

	while (len > 0) {
		if (raw_wait(s, fd, POLLOUT, NF_REQ_MS) != 1)
			return false;
		n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return false;
		data += n;
		len -= (size_t)n;
	}
	return true;
}

/*
 * After our FIN, read until the peer closes too (at most NF_DRAIN_MS):
 * closing with unread input would send a reset instead of a clean close.
 */
static void
raw_drain(struct nf_raw_server *s, int fd)
{
	char	 b[4096];
	int64_t	 end = clock_mono_ms() + NF_DRAIN_MS, left;
	ssize_t	 n;

	while ((left = end - clock_mono_ms()) > 0) {
		if (raw_wait(s, fd, POLLIN, (int)left) != 1)
			return;
		n = read(fd, b, sizeof(b));
		if (n == 0 || (n == -1 && errno != EINTR))
			return;
	}
}

/* Keep fd open, discarding input, until the peer closes it or stop. */
static void
raw_hold(struct nf_raw_server *s, int fd)
{
	char	 b[4096];
	ssize_t	 n;

	for (;;) {
		if (raw_wait(s, fd, POLLIN, -1) != 1)
			return;
		n = read(fd, b, sizeof(b));
		if (n == 0 || (n == -1 && errno != EINTR))
			return;
	}
}

/* Send filler until the peer closes fd or stop. */
static void
raw_stream(struct nf_raw_server *s, int fd)
{
	char	 b[16384];
	ssize_t	 n;
	int	 w;

	memset(b, 'x', sizeof(b));
	for (;;) {
		if ((w = raw_wait(s, fd, POLLOUT, 1000)) == -1)
			return;
		if (w == 0)
			continue;
		n = send(fd, b, sizeof(b), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return;
	}
}

static void *
raw_main(void *arg)
{
	struct nf_raw_server		*s = arg;
	const struct raw_step		*st;
	struct linger			 lg;
	char				*req;
	unsigned			 k;
	int				 fd, w;
	bool				 go;

	for (;;) {
		if ((w = raw_wait(s, s->lfd, POLLIN, -1)) == -1)
			break;
		if (w == 0)
			continue;
		fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd == -1)
			continue;
		k = atomic_fetch_add(&s->log->conns, 1);
		st = &s->steps[k < s->nsteps ? k : s->nsteps - 1];
		go = raw_read_request(s, fd, &req);
		pthread_mutex_lock(&s->log->mu);
		s->log->reqs = xreallocarray(s->log->reqs, s->log->nreqs + 1,
		    sizeof(*s->log->reqs));
		s->log->reqs[s->log->nreqs++] = req;
		pthread_mutex_unlock(&s->log->mu);
		if (go && st->data != NULL)
			go = raw_send(s, fd, st->data, st->len);
		if (go) {
			switch (st->action) {
			case NF_RAW_CLOSE:
				shutdown(fd, SHUT_WR);
				raw_drain(s, fd);
				break;
			case NF_RAW_RESET:
				(void)raw_wait(s, s->stop[0], POLLIN,
				    NF_RESET_PAUSE);
				lg.l_onoff = 1;
				lg.l_linger = 0;
				(void)setsockopt(fd, SOL_SOCKET, SO_LINGER,
				    &lg, sizeof(lg));
				break;
			case NF_RAW_HOLD:
				raw_hold(s, fd);
				break;
			case NF_RAW_STREAM:
				raw_stream(s, fd);
				break;
			}
		}
		close(fd);
	}
	return NULL;
}

struct nf_raw_server *
nf_raw_start(const struct nf_raw_step *steps, size_t n)
{
	struct nf_raw_server	*s;
	size_t			 i, len;
	char			*d;

	if (n == 0) {
		fprintf(stderr, "netfault: nf_raw_start: no steps\n");
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->lfd = s->stop[0] = s->stop[1] = -1;
	s->log = xcalloc(1, sizeof(*s->log));
	atomic_init(&s->log->conns, 0);
	pthread_mutex_init(&s->log->mu, NULL);
	s->steps = xcalloc(n, sizeof(*s->steps));
	s->nsteps = n;
	for (i = 0; i < n; i++) {
		s->steps[i].action = steps[i].action;
		if (steps[i].data == NULL)
			continue;
		len = steps[i].len != 0 ? steps[i].len :
		    strlen(steps[i].data);
		d = xmalloc(len + 1);
		memcpy(d, steps[i].data, len);
		d[len] = '\0';
		s->steps[i].data = d;
		s->steps[i].len = len;
	}
	if ((s->lfd = loopback_listener(16, &s->port)) == -1)
		goto fail;
	if (pipe2(s->stop, O_CLOEXEC) == -1) {
		fprintf(stderr, "netfault: pipe: %s\n", strerror(errno));
		goto fail;
	}
	if (pthread_create(&s->thr, NULL, raw_main, s) != 0) {
		fprintf(stderr, "netfault: cannot start a thread\n");
		goto fail;
	}
	s->started = true;
	return s;
fail:
	nf_raw_stop(s);
	return NULL;
}

int
nf_raw_port(const struct nf_raw_server *s)
{
	return s->port;
}

unsigned
nf_raw_connections(const struct nf_raw_server *s)
{
	return atomic_load(&s->log->conns);
}

char *
nf_raw_request(const struct nf_raw_server *s, unsigned k)
{
	struct raw_log	*l = s->log;
	char		*r = NULL;

	pthread_mutex_lock(&l->mu);
	if (k < l->nreqs)
		r = xstrdup(l->reqs[k]);
	pthread_mutex_unlock(&l->mu);
	return r;
}

void
nf_raw_stop(struct nf_raw_server *s)
{
	size_t		 i;
	unsigned	 k;

	if (s == NULL)
		return;
	if (s->started) {
		(void)write(s->stop[1], "x", 1);
		pthread_join(s->thr, NULL);
	}
	if (s->stop[0] >= 0)
		close(s->stop[0]);
	if (s->stop[1] >= 0)
		close(s->stop[1]);
	if (s->lfd >= 0)
		close(s->lfd);
	for (i = 0; i < s->nsteps; i++)
		free(s->steps[i].data);
	free(s->steps);
	for (k = 0; k < s->log->nreqs; k++)
		free(s->log->reqs[k]);
	free(s->log->reqs);
	pthread_mutex_destroy(&s->log->mu);
	free(s->log);
	free(s);
}

/* ---- misc ---------------------------------------------------------- */

char *
nf_http_date(int64_t offset_s)
{
	static const char *const days[] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	struct tm	 tm;
	time_t		 t = time(NULL) + (time_t)offset_s;

	if (gmtime_r(&t, &tm) == NULL)
		return xstrdup("Thu, 01 Jan 1970 00:00:00 GMT");
	return xasprintf("%s, %02d %s %04d %02d:%02d:%02d GMT",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
