/*
 * testutil.h: shared helpers for the tests and for tests/tools/wix-sign.
 *
 * Five parts: JWT material (RSA keys, base64url, signing any header and
 * payload bytes with RS256/RS512/PS256/ES256/HS256, so tests can build
 * hostile tokens); builders for the three nested Wix layers (WIX.md §1)
 * and the refund entity; a raw HTTP/1.1 client on plain TCP sockets; a
 * harness that runs the real daemon ($RS_BINARY) in a temporary
 * directory; and one that runs the Wix sandbox (tests/sandbox) on
 * loopback, with its control API and a Query Refunds walk.  The library
 * links OpenSSL, sqlite3 and cJSON but not check, so it never asserts:
 * functions report failure through their result and print the reason on
 * stderr.
 *
 * Every wait is bounded: connects, reads, process waits and log polls all
 * take a timeout, so a broken daemon fails a test instead of hanging it.
 * Strings returned by these functions are owned by the caller and freed
 * with free() unless a prototype says otherwise.
 */
#ifndef RS_TESTUTIL_H
#define RS_TESTUTIL_H

#include <sys/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- JWT material -------------------------------------------------- */

/* An RSA-2048 key pair as PEM text.  Both strings are owned. */
struct tu_keypair {
	char	*priv_pem;	/* PKCS#8 "BEGIN PRIVATE KEY" */
	char	*pub_pem;	/* SPKI "BEGIN PUBLIC KEY", as Wix gives it */
};

/* Generate a fresh RSA-2048 pair into kp.  Aborts on failure. */
void	tu_keypair_generate(struct tu_keypair *kp /* OUT */);
void	tu_keypair_cleanup(struct tu_keypair *kp);

/* Unpadded base64url of len bytes at data.  Caller frees. */
char	*tu_b64url(const void *data, size_t len);

/*
 * The public half of an RSA key (private or public PEM) as a JWK object
 * {"kty":"RSA","n":"...","e":"..."}.  Caller frees; NULL on a bad PEM.
 */
char	*tu_rsa_jwk(const char *pem);

enum tu_alg {
	TU_ALG_RS256,		/* key: RSA private PEM */
	TU_ALG_RS512,		/* key: RSA private PEM */
	TU_ALG_PS256,		/* key: RSA private PEM (PSS, salt = 32) */
	TU_ALG_ES256,		/* key: EC P-256 private PEM, or NULL for a
				 * throw-away key; signature is raw r||s */
	TU_ALG_HS256,		/* key: the HMAC secret bytes */
	TU_ALG_NONE		/* no key; empty signature */
};

/*
 * base64url(hdr) "." base64url(payload) "." base64url(signature), the
 * signature made with alg and key over the first two parts.  The header
 * and payload are any bytes (they need not be JSON or even text).
 * keylen is the number of key bytes (for PEM text, its strlen).  Caller
 * frees; NULL (with a message on stderr) if the key does not fit alg.
 */
char	*tu_jwt_sign(enum tu_alg alg, const void *key, size_t keylen,
	    const void *hdr, size_t hdrlen, const void *payload,
	    size_t payloadlen);

/* The same for NUL-terminated header and payload, with an RSA PEM. */
char	*tu_jwt_rs256(const char *priv_pem, const char *hdr,
	    const char *payload);

/* Join three already-encoded segments with dots.  Caller frees. */
char	*tu_jwt_join(const char *h64, const char *p64, const char *s64);

/* ---- Wix layers (WIX.md §1, §2) ------------------------------------ */

#define TU_EVT_CREATED	"wix.payments.refunds.v1.refund_created"
#define TU_EVT_UPDATED	"wix.payments.refunds.v1.refund_updated"
#define TU_EVT_INSTALLED "AppInstalled"
#define TU_DEFAULT_HDR	"{\"kid\":\"test-kid\",\"alg\":\"RS256\"}"

/* A refund entity.  NULL strings are omitted from the JSON. */
struct tu_refund {
	const char	*id;
	const char	*charge_id;
	const char	*currency;	/* written as "currencyCode" */
	const char	*currency_legacy; /* written as "currency" */
	const char	*amount;	/* the decimal string */
	const char	*status;
	int64_t		 revision;	/* written as a string; < 0: absent */
	const char	*created_date;
	const char	*updated_date;
};

/* The refund as compact JSON.  Caller frees. */
char	*tu_refund_json(const struct tu_refund *r);

enum tu_slug {
	TU_CREATED,		/* createdEvent.entity(AsJson) */
	TU_UPDATED		/* updatedEvent.currentEntity(AsJson) */
};

enum tu_form {
	TU_FORM_OBJECT,		/* entity / currentEntity: an object */
	TU_FORM_STRING		/* entityAsJson / currentEntityAsJson */
};

/* Layer C, the domain event.  NULL strings are omitted. */
struct tu_event {
	const char	*id;		/* event id (the dedupe key) */
	enum tu_slug	 slug;
	enum tu_form	 form;
	const char	*entity_json;	/* the refund JSON text */
	const char	*entity_id;	/* NULL: the refund's "id" */
	int64_t		 seq;		/* entityEventSequence; < 0: absent */
	const char	*event_time;	/* NULL: now */
};

/*
 * Layer C as compact JSON, or NULL if entity_json does not parse (the
 * object form embeds the parsed entity).  Caller frees.
 */
char	*tu_layer_c(const struct tu_event *ev);

/*
 * Layer B: {"data": data, "instanceId": instance, "eventType": type}.
 * data is stored as a JSON string holding the given text exactly (raw
 * bytes pass through).  A NULL member is omitted.  Caller frees.
 */
char	*tu_layer_b(const char *data, const char *instance,
	    const char *event_type);

/* The claims {"data": data, "iat": iat, "exp": iat + 3600000}. */
char	*tu_claims(const char *data, int64_t iat);

/* s as a quoted JSON string (raw bytes >= 0x80 pass through). */
char	*tu_json_quote(const char *s);

/* A whole webhook: layer C text wrapped into B and claims with iat =
 * now, signed RS256 with TU_DEFAULT_HDR.  Caller frees. */
char	*tu_webhook(const char *priv_pem, const char *layer_c,
	    const char *instance, const char *event_type);

/*
 * The common case: a refund webhook.  ev->entity_json is built from r
 * when NULL.  event_type follows ev->slug.  Caller frees.
 */
char	*tu_refund_webhook(const char *priv_pem, const struct tu_event *ev,
	    const struct tu_refund *r, const char *instance);

/* An AppInstalled webhook for instance.  Caller frees. */
char	*tu_installed_webhook(const char *priv_pem, const char *instance,
	    const char *app_id);

/* A random identifier: prefix + 16 hex digits.  Caller frees. */
char	*tu_random_id(const char *prefix);

/* Now (UTC) as "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (Wix's format). */
char	*tu_now_iso(void);

/* ---- HTTP client --------------------------------------------------- */

struct tu_http_resp {
	int	 status;	/* the status code, or -1: no answer */
	char	*headers;	/* the raw header block, NUL-terminated */
	char	*body;		/* the body (de-chunked), NUL-terminated */
	size_t	 body_len;
};

void	tu_http_resp_cleanup(struct tu_http_resp *resp);

/* The value of header name (case-insensitive) in resp, or NULL.  Caller
 * frees. */
char	*tu_http_header(const struct tu_http_resp *resp, const char *name);

/*
 * Connect to 127.0.0.1:port over TCP, from source address src (NULL: any;
 * "127.0.0.2" gives a second client IP on loopback).  Returns the socket,
 * or -1 if the connect failed or took longer than timeout_ms.
 */
int	tu_connect(const char *src, int port, int timeout_ms);

/* Send all len bytes (MSG_NOSIGNAL).  false if the peer went away. */
bool	tu_send_all(int fd, const void *data, size_t len);

/*
 * Read one response from fd within timeout_ms (from the call).  Returns
 * the status, or -1 if the connection closed, reset or timed out before a
 * whole status line arrived.  A body is read by Content-Length, chunked
 * coding or until close.  resp may be NULL.
 */
int	tu_read_response(int fd, int timeout_ms,
	    struct tu_http_resp *resp /* OUT, may be NULL */);

/*
 * Wait up to timeout_ms for the peer to close fd (EOF or reset), reading
 * and discarding anything it sends.  Returns the milliseconds it took, or
 * -1 if still open at the deadline.  If got_status is not NULL it receives
 * the status of a response seen on the way, or -1.
 */
int	tu_wait_closed(int fd, int timeout_ms, int *got_status /* OUT */);

/*
 * Send exactly len bytes of req on a new connection, then read the
 * response (timeout_ms overall).  The bytes may be any request, valid or
 * not.  Returns the status or -1.  resp may be NULL.
 */
int	tu_http_raw(int port, const void *req, size_t len, int timeout_ms,
	    struct tu_http_resp *resp /* OUT, may be NULL */);

/* The same from source address src (NULL: any). */
int	tu_http_raw_from(const char *src, int port, const void *req,
	    size_t len, int timeout_ms,
	    struct tu_http_resp *resp /* OUT, may be NULL */);

/* POST body (len bytes) to path with Content-Type text/plain and
 * Connection: close; 10 s timeout.  Status or -1. */
int	tu_http_post(int port, const char *path, const void *body,
	    size_t len, struct tu_http_resp *resp /* OUT, may be NULL */);
/* GET path.  Status or -1. */
int	tu_http_get(int port, const char *path,
	    struct tu_http_resp *resp /* OUT, may be NULL */);

/*
 * true if body is a JSON object with string members "error" and "reason"
 * and nothing but strings (SPEC §3 error bodies).
 */
bool	tu_is_error_json(const char *body);

/*
 * Sum of the samples of metric name (exact family or series name, such
 * as refundsync_commit_seconds_count) in Prometheus text whose labels
 * include every "k=\"v\"" pair in the NULL-terminated list labels (NULL:
 * any).  Returns -1 if no sample matched.
 */
double	tu_metric(const char *text, const char *name,
	    const char *const *labels);

/* ---- the daemon ---------------------------------------------------- */

/* Extra configuration, each a block of "key = value" lines placed in the
 * section of the same name.  NULL members add nothing. */
struct tu_conf {
	const char	*server;
	const char	*store;
	const char	*wix;
	const char	*tail;		/* raw text appended at the end */
	const char	*public_key_file; /* NULL: the generated key's file */
};

struct tu_daemon {
	char		*dir;		/* the temporary directory */
	char		*conf_path;
	char		*log_path;	/* the daemon's stderr */
	char		*db_path;
	char		*pub_path;	/* the generated public key */
	struct tu_keypair key;		/* signs webhooks it accepts */
	char		**env;		/* extra "K=V" for the child, or NULL */
	pid_t		 pid;		/* 0 when not running */
	int		 port;		/* public listener */
	int		 admin_port;	/* admin listener, 0 if none */
	size_t		 log_mark;	/* log offset where this run began */
	const char	*webhook_path;	/* borrowed; NULL: /webhooks */
};

/*
 * Make a temporary directory, a key pair, the public key file and a
 * config (listeners on 127.0.0.1:0, the store in the directory, plus
 * conf), then start the daemon and wait up to 10 s for its listener and
 * ready lines.  env: extra environment entries for the child (copied),
 * or NULL.  Returns the daemon, or NULL (with the log on stderr).
 * Free with tu_daemon_free().
 */
struct tu_daemon *tu_daemon_start(const struct tu_conf *conf,
	    const char *const *env);

/* Rewrite the config file from conf (the listeners stay on port 0). */
bool	tu_daemon_write_config(struct tu_daemon *d,
	    const struct tu_conf *conf);

/* Start the daemon again on the same directory, config and database. */
bool	tu_daemon_restart(struct tu_daemon *d);

/*
 * SIGTERM, then wait up to timeout_ms; if it has not exited, SIGKILL.
 * Returns the exit status (0-255), 128 + signal if it died of a signal,
 * or -1 if it had to be killed or was not running.
 */
int	tu_daemon_stop(struct tu_daemon *d, int timeout_ms);
/* The same with another signal (SIGINT). */
int	tu_daemon_stop_sig(struct tu_daemon *d, int sig, int timeout_ms);

/* SIGKILL and reap. */
void	tu_daemon_kill9(struct tu_daemon *d);

/* Send sig to the running daemon. */
bool	tu_daemon_signal(struct tu_daemon *d, int sig);

/* The whole log so far.  Caller frees. */
char	*tu_daemon_log(const struct tu_daemon *d);

/*
 * Wait up to timeout_ms for a log line starting at or after byte offset
 * mark (see tu_daemon_log_size()) that contains every string in the
 * NULL-terminated list needles.  Returns true when one appears.
 */
bool	tu_daemon_wait_log(const struct tu_daemon *d, size_t mark,
	    const char *const *needles, int timeout_ms);

/* Current length of the log file, for tu_daemon_wait_log(). */
size_t	tu_daemon_log_size(const struct tu_daemon *d);

/* Stop (SIGKILL if still running), remove the directory and free. */
void	tu_daemon_free(struct tu_daemon *d);

/* POST tok to the daemon's webhook path (/webhooks unless path is set).
 * Status or -1. */
int	tu_daemon_post(const struct tu_daemon *d, const char *tok,
	    struct tu_http_resp *resp /* OUT, may be NULL */);

/* GET /metrics from the admin listener.  Caller frees; "" on failure. */
char	*tu_daemon_metrics(const struct tu_daemon *d);

/* A new directory under $TMPDIR (or /tmp).  Caller frees the name. */
char	*tu_tempdir(void);
/* Remove dir and everything in it (unless RS_KEEP_TMP is set). */
void	tu_rmtree(const char *dir);

/*
 * The libfaketime preload library (the multi-threaded one), or NULL if
 * faketime is not installed.  Borrowed.
 */
const char *tu_faketime_lib(void);

/* Write text to path (mode 0644, or 0600 when secret).  false on error. */
bool	tu_write_file(const char *path, const char *text, bool secret);

/* Read a whole file.  Caller frees; NULL on error. */
char	*tu_read_file(const char *path, size_t *len /* OUT, may be NULL */);

/*
 * Run argv (argv[0] is a path) with stdout and stderr captured, waiting
 * up to timeout_ms.  Returns the exit status, 128 + signal, or -1 on a
 * timeout (the child is killed).  out/err may be NULL.
 */
int	tu_run(char *const argv[], int timeout_ms, char **out /* OUT */,
	    char **err /* OUT */);

/* $RS_BINARY, or "./refundsync".  Borrowed. */
const char *tu_binary(void);

/* ---- the store ----------------------------------------------------- */

/*
 * Run sql on the database at path through a separate connection and
 * return the first column of the first row as text.  NULL if there is no
 * row, the value is SQL NULL, or the query fails (message on stderr).
 * Caller frees.
 */
char	*tu_sql(const char *path, const char *sql);
/* printf-style tu_sql on d's database. */
char	*tu_sqlf(const struct tu_daemon *d, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* The first cell as an integer; def if NULL or not a number. */
int64_t	tu_sql_int(const struct tu_daemon *d, int64_t def,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- child processes ------------------------------------------------ */

/*
 * Fork and exec argv (argv[0] is a path) with stdin /dev/null, stdout
 * appended to out_path and stderr to err_path (NULL: out_path too).  The
 * child dies with the test process (PR_SET_PDEATHSIG).  Returns its pid,
 * or -1 (with a message on stderr) if a file cannot be opened or fork
 * fails.  Reap it with tu_wait_exit().
 */
pid_t	tu_spawn(char *const argv[], const char *out_path,
	    const char *err_path);

/*
 * Wait up to timeout_ms for the child pid.  Returns its exit status,
 * 128 + signal if a signal ended it, or -1 if it was still running at the
 * deadline (it is then killed with SIGKILL and reaped).
 */
int	tu_wait_exit(pid_t pid, int timeout_ms);

/* ---- the Wix sandbox (tests/sandbox/wix-sandbox) ------------------- */

/* The sandbox's default app credentials. */
#define TU_SANDBOX_APP_ID	"sandbox-app"
#define TU_SANDBOX_APP_SECRET	"sandbox-secret"

/* A running sandbox.  Strings are owned; tu_sandbox_stop() frees them. */
struct tu_sandbox {
	pid_t	 pid;		/* 0 when not running */
	int	 port;		/* on 127.0.0.1 */
	char	*log_path;	/* its stdout and stderr: DIR/sandbox.log */
	char	*base;		/* "http://127.0.0.1:PORT" */
};

/* The sandbox binary: $RS_SANDBOX, else tests/sandbox/wix-sandbox next
 * to $RS_BINARY.  Caller frees. */
char	*tu_sandbox_binary(void);

/*
 * Start a sandbox on 127.0.0.1:0 with seed refunds for each of instances
 * (a comma list), --max-seconds 300 (it exits by itself, so a test
 * cannot leak it), plus the NULL-terminated extra arguments (NULL: none;
 * e.g. "--rate-limit", "10"), logging to dir/sandbox.log.  Waits up to
 * 10 s for its "listening" line.  Returns true with sb filled in; false
 * (sb zeroed, the log on stderr) if it did not start.
 */
bool	tu_sandbox_start(struct tu_sandbox *sb, const char *dir, int seed,
	    const char *instances, const char *const *extra);

/* SIGTERM, wait up to 5 s (then SIGKILL), and free sb's strings.  A
 * zeroed sb is fine. */
void	tu_sandbox_stop(struct tu_sandbox *sb);

/*
 * One request to the sandbox: method path with a JSON body (NULL: none)
 * and "Authorization: auth" (NULL: none); 30 s timeout.  Returns the
 * status, or -1 if there was no answer.  resp may be NULL.
 */
int	tu_sandbox_request(const struct tu_sandbox *sb, const char *method,
	    const char *path, const char *auth, const char *body,
	    struct tu_http_resp *resp /* OUT, may be NULL */);

/*
 * POST json to a control path (/_sandbox/faults, /_sandbox/refunds,
 * ...).  true if it answered 200; otherwise false, with the status and
 * body on stderr.
 */
bool	tu_sandbox_control(const struct tu_sandbox *sb, const char *path,
	    const char *json);

/* An access token for instance from the sandbox's token endpoint, with
 * the default credentials.  Caller frees; NULL (stderr says why) on
 * failure. */
char	*tu_sandbox_token(const struct tu_sandbox *sb, const char *instance);

/*
 * Every refund of instance as Wix returns them, walking Query Refunds
 * with a token of its own (one token request, then pages of limit
 * refunds, createdDate ascending).  Returns a cJSON array of the refund
 * objects (caller frees with cJSON_Delete()), or NULL (stderr says why)
 * if a request failed or the paging did not end.
 */
struct cJSON *tu_sandbox_refunds(const struct tu_sandbox *sb,
	    const char *instance, int limit);

/*
 * Write dir/app-secret (mode 0600) and return the [wix] keys that use
 * the sandbox with it: "app_id = ...\napp_secret_file = ...\napi_base =
 * ...\n".  Caller frees; NULL if the file cannot be written.
 */
char	*tu_sandbox_wix_keys(const struct tu_sandbox *sb, const char *dir);

/* ---- misc ---------------------------------------------------------- */

/* Sleep ms milliseconds.  (For the time, use clock_mono_ms() from
 * util/clock.h.) */
void	tu_sleep_ms(int ms);

#endif
