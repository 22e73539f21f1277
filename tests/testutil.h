/*
 * testutil.h: shared helpers for the tests and for tests/tools/wix-sign.
 *
 * Six parts: JWT material (RSA keys, base64url, signing any header and
 * payload bytes with RS256/RS512/PS256/ES256/HS256, so tests can build
 * hostile tokens); builders for the three nested Wix layers (WIX.md §1)
 * and the refund entity; a raw HTTP/1.1 client on plain TCP sockets; a
 * harness that runs the real daemon ($RS_BINARY) in a temporary
 * directory; one that runs the Wix sandbox (tests/sandbox) on loopback,
 * with its control API and a Query Refunds walk; and an HTTP sink that
 * receives the http exporter's records (honouring Idempotency-Key, and
 * failing on demand), with checks of what the exporters delivered.  The
 * library links OpenSSL, sqlite3, cJSON and libmicrohttpd but not check,
 * so it never asserts: functions report failure through their result and
 * print the reason on stderr.
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
	const char	*listen;	/* NULL: 127.0.0.1:0 */
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
 * config (the admin listener on 127.0.0.1:0, the public one on
 * conf->listen, the store in the directory, plus conf), then start the
 * daemon and wait up to 10 s for its listener and ready lines.  env:
 * extra environment entries for the child (copied), or NULL.  Returns the
 * daemon, or NULL (with the log on stderr).  Free with tu_daemon_free().
 */
struct tu_daemon *tu_daemon_start(const struct tu_conf *conf,
	    const char *const *env);

/* Rewrite the config file from conf (the admin listener on port 0). */
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
/* Remove dir and everything in it, directories a test made read-only
 * included (unless RS_KEEP_TMP is set). */
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
/* Run sql (any statements) on the database at path, read-write, with no
 * daemon writing to it; the test process dies (tu_die) if it fails. */
void	tu_sql_exec(const char *path, const char *sql);
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

/* One line of the sandbox's request log (GET /_sandbox/log). */
struct tu_sandbox_entry {
	int64_t	 t_ms;		/* when, on the sandbox's CLOCK_MONOTONIC */
	char	 instance[128];	/* the instance it was for, or "" */
	char	 path[128];
	int	 status;
	char	 fault[32];	/* the fault it got, or "" */
};

/*
 * The request log's entries for instance (NULL: every one) whose path
 * contains part (NULL: any), oldest first: *out (caller frees; NULL if
 * none) and *n.  false (stderr says why) if the log cannot be read.
 */
bool	tu_sandbox_log(const struct tu_sandbox *sb, const char *instance,
	    const char *part, struct tu_sandbox_entry **out, size_t *n);

/*
 * Write dir/app-secret (mode 0600) and return the [wix] keys that use
 * the sandbox with it: "app_id = ...\napp_secret_file = ...\napi_base =
 * ...\n".  Caller frees; NULL if the file cannot be written.
 */
char	*tu_sandbox_wix_keys(const struct tu_sandbox *sb, const char *dir);

/* ---- an HTTP sink: the http exporter's receiver --------------------- */

/*
 * A libmicrohttpd server on 127.0.0.1:0 standing in for a receiver that
 * honours Idempotency-Key (docs/exporters.md, "What the answer means"):
 * the first 2xx answer to a key applies its effect, a later 2xx only
 * acknowledges it again.  It logs every request, and can be told to
 * fail: a script of answers for the next requests, and a standing
 * policy (fail everything, every Nth request, one refund; a delay).
 *
 * Each complete request is judged in this order:
 *   1. malformed (not a POST; a body over TU_SINK_MAX_BODY; no
 *      Idempotency-Key; a body that is not a JSON object with a number
 *      "seq" and an "idempotency_key" equal to the header): 400
 *      {"error":"bad request"}, counted in bad;
 *   2. the next step of the script (tu_sink_script()), if any;
 *   3. the policy: fail_all, then fail_every (fail_status,
 *      {"error":"busy"}), then refuse_refund (400,
 *      {"error":"unknown account"});
 *   4. accepted: ok_status, {"ok":true}.
 * A 2xx answer (an accepted request, or a script step with a 2xx status)
 * applies the key if it is new; its seq is the body's.
 *
 * Threads: requests are served on libmicrohttpd's threads (one per
 * connection); every function here may be called from any thread while
 * it runs.  Delays are slept outside the sink's lock.  Memory: every
 * request is logged with its body until tu_sink_free().
 */

#define TU_SINK_MAX_BODY	(1024 * 1024)	/* larger: malformed */
#define TU_SINK_MAX_STEPS	64		/* queued script steps */

struct tu_sink;

/* The standing policy.  Zero is "accept everything at once with 200". */
struct tu_sink_policy {
	int		 ok_status;	/* the answer to an accepted request;
					 * 0: 200 */
	int		 fail_status;	/* fail_all's and fail_every's answer;
					 * 0: 503 */
	bool		 fail_all;	/* fail every request */
	int		 fail_every;	/* fail each request whose number (1,
					 * 2, ... since the start, any kind)
					 * is a multiple of this; 0: none */
	int		 delay_ms;	/* hold back every answer this long */
	const char	*refuse_refund;	/* 400 to records of this refund_id;
					 * NULL: none (copied) */
};

/* One scripted answer.  Strings are copied. */
struct tu_sink_step {
	int		 status;	/* a 2xx applies the key */
	const char	*body;		/* NULL: {"ok":true} for a 2xx,
					 * {"error":"injected"} otherwise */
	const char	*header;	/* one more "Name: value", or NULL
					 * (a Location, a Retry-After) */
	int		 delay_ms;	/* held back this long (after the
					 * key is applied), on top of the
					 * policy's delay */
};

/* What the sink has answered so far. */
struct tu_sink_stats {
	int64_t		 requests;	/* complete requests, of any kind */
	int64_t		 bad;		/* malformed (step 1) */
	int64_t		 failed;	/* non-2xx by the script or policy */
	int64_t		 refused;	/* refuse_refund's 400s */
	int64_t		 effects;	/* keys applied: distinct keys with
					 * a 2xx */
	int64_t		 again;		/* 2xx to a key already applied */
	int64_t		 keys_again;	/* keys with more than one 2xx */
	int64_t		 conflicts;	/* 2xx to a known key with another
					 * seq than the one it applied */
	char		 bad_why[128];	/* the last malformed request's
					 * fault, or "" */
};

/* One logged request.  Strings are owned (NULL: the header was absent). */
struct tu_sink_req {
	int64_t		 t_ms;		/* clock_mono_ms() when judged */
	int		 status;	/* the answer */
	int		 delay_ms;	/* how long the answer was held back */
	bool		 applied;	/* this request applied its key */
	int64_t		 seq;		/* the body's "seq", or -1 */
	char		*method;
	char		*path;
	char		*key;		/* Idempotency-Key */
	char		*content_type;
	char		*timestamp;	/* X-Refundsync-Timestamp */
	char		*signature;	/* X-Refundsync-Signature */
	char		*authorization;
	char		*refund_id;	/* the body's "refund_id" */
	char		*body;		/* NUL-terminated, or NULL: none */
	size_t		 body_len;
};

/*
 * Start a sink on 127.0.0.1:0 with policy (copied; NULL: accept
 * everything).  Returns it, or NULL (stderr says why).  Caller frees
 * with tu_sink_free().
 */
struct tu_sink *tu_sink_start(const struct tu_sink_policy *policy);

/* Stop serving (waiting for the connections' threads) and free.  NULL is
 * fine. */
void	tu_sink_free(struct tu_sink *s);

/* Its port on 127.0.0.1. */
int	tu_sink_port(const struct tu_sink *s);

/* Replace the policy (copied).  NULL: accept everything. */
void	tu_sink_set_policy(struct tu_sink *s,
	    const struct tu_sink_policy *policy);

/*
 * Queue n steps: the next well-formed requests get them in order, before
 * the policy is looked at.  false (nothing queued, stderr says so) if
 * more than TU_SINK_MAX_STEPS would be waiting.
 */
bool	tu_sink_script(struct tu_sink *s, const struct tu_sink_step *steps,
	    size_t n);

/* The counters, copied into *st. */
void	tu_sink_stats(struct tu_sink *s, struct tu_sink_stats *st /* OUT */);

/* The 2xx answers to key so far; 0 if it was never applied. */
int	tu_sink_posts(struct tu_sink *s, const char *key);

/*
 * The logged requests with key (NULL: any) whose answer matches status:
 * 0 any, 1-5 that class (2: any 2xx), else that exact code.
 */
int	tu_sink_count(struct tu_sink *s, const char *key, int status);

/* Wait up to timeout_ms until tu_sink_count() reaches want.  true if it
 * did. */
bool	tu_sink_wait(struct tu_sink *s, const char *key, int status,
	    int want, int timeout_ms);

/* The i-th key applied (0: the first), or NULL past the last.  Caller
 * frees. */
char	*tu_sink_key(struct tu_sink *s, size_t i);

/*
 * A copy of the log, oldest first; *n set.  Caller frees with
 * tu_sink_log_free(); NULL (and *n = 0) while it is empty.
 */
struct tu_sink_req *tu_sink_log(struct tu_sink *s, size_t *n /* OUT */);
void	tu_sink_log_free(struct tu_sink_req *log, size_t n);

/* ---- the four standard exporters and what they deliver -------------- */

/*
 * Two suites run the daemon with the same exporters: "j" (jsonl,
 * out.jsonl), "c" (csv, out.csv), "l" (ledger, out.journal) and "h"
 * (http, to a tu_sink), polling every 20 ms, http retrying from 20 ms to
 * 200 ms with a 5 s timeout.  These check that each target holds the
 * daemon's change log exactly once, in order.
 */
#define TU_NEXPORTERS	4
extern const char *const tu_exporter_names[TU_NEXPORTERS];

/* Their [exporter] sections, the http one posting to sink_port, with
 * these batch sizes.  Caller frees. */
char	*tu_exporters_conf(int sink_port, int batch_j, int batch_c,
	    int batch_l, int batch_h);

/* The last change-log seq (0: none), and exporter name's position (-1:
 * none). */
int64_t	tu_last_change(const struct tu_daemon *d);
int64_t	tu_exporter_position(const struct tu_daemon *d, const char *name);

/*
 * Wait up to timeout_ms until each of the n exporters in names is at the
 * last change.  false (each one's position on stderr) if not.
 */
bool	tu_exporters_caught_up(const struct tu_daemon *d,
	    const char *const *names, size_t n, int timeout_ms);

/*
 * true if, against d's change log: DIR/out.jsonl and DIR/out.csv (after
 * its header line) name every seq once, in order; DIR/out.journal every
 * seq that posts or reverses; and s applied the "h" key of every change
 * exactly once, never with another seq, with nothing malformed.
 * Otherwise false, with the first difference on stderr.
 */
bool	tu_exports_exact(const struct tu_daemon *d, struct tu_sink *s);

/* ---- misc ---------------------------------------------------------- */

/* Sleep ms milliseconds.  (For the time, use clock_mono_ms() from
 * util/clock.h.) */
void	tu_sleep_ms(int ms);

#endif
