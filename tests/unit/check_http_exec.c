/*
 * check_http_exec.c: the delivery exporters (http, exec), the JSON form
 * of a record they share, and the example and bad-ABI plugins.
 *
 * The ops tables are driven directly, the way the engine drives them
 * (deliver from the first record not done; RETRY means call again,
 * PERMANENT means the record goes to dead letters and the rest go on),
 * so nothing here depends on the engine or the store.
 *
 * http runs against a libmicrohttpd sink on 127.0.0.1:0 started inside
 * the test.  The sink checks every request (headers, JSON body, the
 * HMAC signature) and can answer 500 some number of times, 429, stall
 * past the client's timeout after it has accepted the record, and 400
 * for one refund id.  It counts acceptances by Idempotency-Key, so the
 * tests can show each (refund, revision) is accepted exactly once.
 *
 * exec runs a /bin/sh script that acknowledges, asks for a retry, fails
 * a record, dies in the middle of a batch, hangs and talks nonsense; its
 * starts are counted in a file, which proves the restarts.
 *
 * The plugins are the .so files built by `make check` (check_DATA),
 * found beside $RS_BINARY, or in the current directory.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
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
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "exporters/builtin.h"
#include "../testutil.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xmalloc.h"

#define SECRET		"hmac-S3CR3T-value"
#define MAXREC		16

/* ---- records -------------------------------------------------------- */

/* A record and the storage its strings point into.  Never copied. */
struct trec {
	struct rs_export_record	 r;
	char			 key[128];
	char			 id[64];
	char			 body[512];
};

static void
trec_init(struct trec *t, const char *exporter, int64_t seq, const char *id,
    int64_t rev)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->id, sizeof(t->id), "%s", id);
	snprintf(t->key, sizeof(t->key), "%s:%s:%lld", exporter, id,
	    (long long)rev);
	/* Pretty-printed on purpose: the JSON form must be one line. */
	snprintf(t->body, sizeof(t->body), "{\n  \"id\": \"%s\",\n"
	    "  \"amount\": {\"amount\": \"10.50\", \"currency\": \"USD\"},\n"
	    "  \"revision\": \"%lld\", \"n\": 12345678901234567890,\n"
	    "  \"note\": \"a b\\n c\"\n}\n", id, (long long)rev);
	t->r.seq = seq;
	t->r.idempotency_key = t->key;
	t->r.refund_id = t->id;
	t->r.instance_id = "inst-1";
	t->r.charge_id = "ch-1";
	t->r.has_revision = 1;
	t->r.revision = rev;
	t->r.status = "SUCCEEDED";
	t->r.prev_status = "PENDING";
	t->r.currency = "USD";
	t->r.amount = "10.50";
	t->r.amount_exact = 1;
	t->r.amount_minor = 1050;
	t->r.exponent = 2;
	t->r.returned_application_fee = "0.30";
	t->r.returned_processing_fee = NULL;
	t->r.created_date = "2024-05-01T10:00:00.000Z";
	t->r.updated_date = "2024-05-01T10:05:00.000Z";
	t->r.changed_at = "2024-05-01T10:05:01.123Z";
	t->r.source = "webhook";
	t->r.body = t->body;
	t->r.posting = RS_POSTING_POST;
}

/* What the engine would do with the results. */
struct dead {
	int64_t	seq;
	char	key[128];
	char	why[512];
};

struct drive {
	struct dead	dead[MAXREC];
	size_t		ndead;
	int		retries;
	int		calls;
	char		last_err[512];
};

/* Deliver t[0..n) as the engine does, up to max_calls calls. */
static void
drive(const struct rs_exporter_ops *ops, void *ctx, struct trec *t,
    size_t n, struct drive *dr, int max_calls)
{
	struct rs_export_record recs[MAXREC];
	size_t i = 0, k, done;
	char err[512];
	int r;

	ck_assert_uint_le(n, MAXREC);
	memset(dr, 0, sizeof(*dr));
	for (k = 0; k < n; k++)
		recs[k] = t[k].r;
	while (i < n && dr->calls < max_calls) {
		err[0] = '\0';
		done = 12345;
		r = ops->deliver(ctx, recs + i, n - i, &done, err,
		    sizeof(err));
		dr->calls++;
		ck_assert_uint_le(done, n - i);
		if (r == RS_EXPORT_OK) {
			ck_assert_uint_eq(done, n - i);
			i = n;
			break;
		}
		ck_assert_msg(err[0] != '\0', "a failure without a reason");
		snprintf(dr->last_err, sizeof(dr->last_err), "%s", err);
		i += done;
		if (r == RS_EXPORT_PERMANENT) {
			dr->dead[dr->ndead].seq = recs[i].seq;
			snprintf(dr->dead[dr->ndead].key,
			    sizeof(dr->dead[0].key), "%s",
			    recs[i].idempotency_key);
			snprintf(dr->dead[dr->ndead].why,
			    sizeof(dr->dead[0].why), "%s", err);
			dr->ndead++;
			i++;
		} else {
			ck_assert_int_eq(r, RS_EXPORT_RETRY);
			dr->retries++;
		}
	}
	ck_assert_uint_eq(i, n);
}

/* Open ops with kv; assert success. */
static void *
open_ok(const struct rs_exporter_ops *ops, const char *name,
    const struct rs_export_kv *kv, size_t nkv)
{
	char err[512] = "";
	void *ctx = (void *)&err;
	int r;

	r = ops->open(&ctx, name, kv, nkv, err, sizeof(err));
	ck_assert_msg(r == RS_EXPORT_OK, "open: %d: %s", r, err);
	ck_assert_ptr_nonnull(ctx);
	return ctx;
}

/* Open ops with kv; assert PERMANENT with a reason containing want. */
static void
open_fails(const struct rs_exporter_ops *ops, const struct rs_export_kv *kv,
    size_t nkv, const char *want)
{
	char err[512] = "";
	void *ctx = (void *)&err;
	int r;

	r = ops->open(&ctx, "t", kv, nkv, err, sizeof(err));
	ck_assert_int_eq(r, RS_EXPORT_PERMANENT);
	ck_assert_ptr_null(ctx);
	ck_assert_msg(strstr(err, want) != NULL, "reason \"%s\" lacks \"%s\"",
	    err, want);
}

/* ---- the JSON form of a record ------------------------------------ */

#define GOLDEN								\
	"{\"seq\":7,\"schema\":\"refundsync.record.v1\","		\
	"\"idempotency_key\":\"erp:r-1:3\",\"refund_id\":\"r-1\","	\
	"\"instance_id\":\"inst-1\",\"charge_id\":\"ch-1\","		\
	"\"revision\":\"3\",\"status\":\"SUCCEEDED\","			\
	"\"prev_status\":\"PENDING\",\"posting\":\"post\","		\
	"\"currency\":\"USD\",\"amount\":\"10.50\","			\
	"\"amount_minor\":\"1050\",\"exponent\":2,"			\
	"\"returned_application_fee\":\"0.30\","			\
	"\"returned_processing_fee\":null,"				\
	"\"created_date\":\"2024-05-01T10:00:00.000Z\","		\
	"\"updated_date\":\"2024-05-01T10:05:00.000Z\","		\
	"\"changed_at\":\"2024-05-01T10:05:01.123Z\","			\
	"\"source\":\"webhook\",\"refund\":{\"id\":\"r-1\","		\
	"\"amount\":{\"amount\":\"10.50\",\"currency\":\"USD\"},"	\
	"\"revision\":\"3\",\"n\":12345678901234567890,"		\
	"\"note\":\"a b\\n c\"}}"

START_TEST(test_json_golden)
{
	struct trec t;
	size_t len = 0;
	char *j;

	trec_init(&t, "erp", 7, "r-1", 3);
	j = exporter_record_json(&t.r, &len);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(j, GOLDEN);
	ck_assert_uint_eq(len, strlen(GOLDEN));
	ck_assert_ptr_null(strchr(j, '\n'));
	free(j);
}
END_TEST

/* Types: money is never a JSON number; absent values are null. */
START_TEST(test_json_types)
{
	struct trec t;
	cJSON *o;
	char *j;

	trec_init(&t, "erp", 9, "r-2", 1);
	t.r.instance_id = NULL;
	t.r.prev_status = NULL;
	t.r.has_revision = 0;
	t.r.amount_exact = 0;
	t.r.returned_application_fee = NULL;
	t.r.posting = RS_POSTING_REVERSE;
	t.r.idempotency_key = "erp:r-2:-:reverse";
	j = exporter_record_json(&t.r, NULL);
	ck_assert_ptr_nonnull(j);
	o = cJSON_Parse(j);
	ck_assert_ptr_nonnull(o);
	ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seq")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o,
	    "instance_id")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o,
	    "prev_status")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o,
	    "revision")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o,
	    "amount_minor")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o,
	    "exponent")));
	ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o,
	    "returned_application_fee")));
	ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o,
	    "amount")));
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(o,
	    "posting")->valuestring, "reverse");
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(o,
	    "idempotency_key")->valuestring, "erp:r-2:-:reverse");
	cJSON_Delete(o);
	free(j);
}
END_TEST

/* Hostile strings stay valid JSON; a body that is not JSON is null. */
START_TEST(test_json_escaping)
{
	struct trec t;
	char *j;

	trec_init(&t, "erp", 1, "r", 1);
	t.r.refund_id = "q\"b\\n\nc\x01\x7f" "\xc3\xa9" "\xff" "\xc0\xaf"
	    "\xed\xa0\x80" "z";
	t.r.body = "{\"id\": \"r\"} trailing";
	j = exporter_record_json(&t.r, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_ptr_nonnull(strstr(j, "\"refund_id\":\"q\\\"b\\\\n"
	    "\\u000ac\\u0001\\u007f\xc3\xa9\\ufffd\\ufffd\\ufffd\\ufffd"
	    "\\ufffd\\ufffdz\","));
	ck_assert_ptr_nonnull(strstr(j, ",\"refund\":null}"));
	free(j);
	t.r.body = NULL;
	j = exporter_record_json(&t.r, NULL);
	ck_assert_ptr_nonnull(strstr(j, ",\"refund\":null}"));
	free(j);
}
END_TEST

/* ---- the http sink ------------------------------------------------ */

struct sink {
	struct MHD_Daemon	*d;
	int			 port;
	pthread_mutex_t		 mu;
	/* How to answer (set before requests; read under mu). */
	int			 fail500;	/* this many get 500 */
	int			 fail429;	/* then this many 429 */
	int			 slow;		/* this many accepted late */
	int			 slow_ms;
	int			 status_ok;	/* 200 unless set */
	const char		*reject_refund;	/* 400 for this id */
	const char		*redirect_refund; /* 302 for this id */
	const char		*secret;	/* NULL: must be unsigned */
	/* What it saw. */
	int			 requests;
	int			 bad;		/* broken requests */
	char			 badwhy[256];
	char			*keys[MAXREC * 2]; /* applied, in order */
	int			 counts[MAXREC * 2]; /* 2xx answers seen */
	int			 nkeys;
	int			 dups;		/* accepted key again */
	char			*last_body;
	char			*last_sig;
	char			*last_ts;
	char			*last_ctype;
};

struct sreq {
	char	*body;
	size_t	 len;
};

static void
sink_bad(struct sink *s, const char *why)
{
	s->bad++;
	snprintf(s->badwhy, sizeof(s->badwhy), "%s", why);
}

static char *
hmac_hex(const char *secret, const char *ts, const char *body, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	char *msg, *hex;
	size_t tslen = strlen(ts);

	msg = xmalloc(tslen + 1 + len);
	memcpy(msg, ts, tslen);
	msg[tslen] = '.';
	memcpy(msg + tslen + 1, body, len);
	ck_assert_ptr_nonnull(HMAC(EVP_sha256(), secret, (int)strlen(secret),
	    (unsigned char *)msg, tslen + 1 + len, md, &mdlen));
	free(msg);
	hex = xmalloc(7 + 2 * mdlen + 1);
	memcpy(hex, "sha256=", 7);
	for (i = 0; i < mdlen; i++)
		snprintf(hex + 7 + 2 * i, 3, "%02x", md[i]);
	return hex;
}

/* Decide the answer to a complete request, under s->mu.  *late: sleep
 * this long before answering. */
static int
sink_decide(struct sink *s, struct MHD_Connection *c, struct sreq *rq,
    const char **text, int *late)
{
	const char *key, *sig, *ts, *ctype;
	const cJSON *k, *id;
	cJSON *o = NULL;
	char *want = NULL;
	int i, status = 200;
	int64_t tsv;

	*text = "{\"ok\":true}";
	*late = 0;
	s->requests++;
	key = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Idempotency-Key");
	sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "X-Refundsync-Signature");
	ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "X-Refundsync-Timestamp");
	ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "Content-Type");
	free(s->last_body);
	free(s->last_sig);
	free(s->last_ts);
	free(s->last_ctype);
	s->last_body = xstrndup(rq->body != NULL ? rq->body : "", rq->len);
	s->last_sig = sig != NULL ? xstrdup(sig) : NULL;
	s->last_ts = ts != NULL ? xstrdup(ts) : NULL;
	s->last_ctype = ctype != NULL ? xstrdup(ctype) : NULL;
	if (key == NULL || ts == NULL || rq->body == NULL) {
		sink_bad(s, "no key, timestamp or body");
		*text = "{\"error\":\"malformed\"}";
		status = 422;
		goto out;
	}
	tsv = strtoll(ts, NULL, 10);
	if (tsv < (int64_t)time(NULL) - 300 ||
	    tsv > (int64_t)time(NULL) + 300)
		sink_bad(s, "timestamp far from now");
	if ((o = cJSON_ParseWithLength(rq->body, rq->len)) == NULL ||
	    !cJSON_IsString(k = cJSON_GetObjectItemCaseSensitive(o,
	    "idempotency_key")) || strcmp(k->valuestring, key) != 0) {
		sink_bad(s, "body key differs from header");
		*text = "{\"error\":\"malformed\"}";
		status = 422;
		goto out;
	}
	if (s->secret != NULL) {
		want = hmac_hex(s->secret, ts, rq->body, rq->len);
		if (sig == NULL || strcmp(sig, want) != 0) {
			sink_bad(s, "bad signature");
			*text = "{\"error\":\"bad signature\"}";
			status = 401;
			goto out;
		}
	} else if (sig != NULL)
		sink_bad(s, "signed without a secret");
	if (s->fail500 > 0) {
		s->fail500--;
		*text = "upstream down";
		status = 500;
		goto out;
	}
	if (s->fail429 > 0) {
		s->fail429--;
		*text = "{\"error\":\"slow down\"}";
		status = 429;
		goto out;
	}
	id = cJSON_GetObjectItemCaseSensitive(o, "refund_id");
	if (s->reject_refund != NULL && cJSON_IsString(id) &&
	    strcmp(id->valuestring, s->reject_refund) == 0) {
		*text = "{\"error\":\"unknown account\"}";
		status = 400;
		goto out;
	}
	if (s->redirect_refund != NULL && cJSON_IsString(id) &&
	    strcmp(id->valuestring, s->redirect_refund) == 0) {
		*text = "moved";
		status = 302;
		goto out;
	}
	if (s->slow > 0) {
		s->slow--;
		*late = s->slow_ms;
	}
	/*
	 * Accept, applying the effect once per key.  counts[] counts the
	 * 2xx answers the client could see: a late one (after the client
	 * gave up) is applied but not seen, so the client must send the
	 * key again, and that second request is a duplicate.
	 */
	for (i = 0; i < s->nkeys; i++)
		if (strcmp(s->keys[i], key) == 0)
			break;
	if (i < s->nkeys) {
		s->dups++;
	} else if (s->nkeys < MAXREC * 2) {
		s->keys[s->nkeys] = xstrdup(key);
		s->counts[s->nkeys++] = 0;
	}
	if (*late == 0 && i < MAXREC * 2)
		s->counts[i]++;
	if (s->status_ok != 0)
		status = s->status_ok;
out:
	free(want);
	cJSON_Delete(o);
	return status;
}

static enum MHD_Result
sink_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct sink *s = cls;
	struct sreq *rq = *con_cls;
	struct MHD_Response *resp;
	const char *text;
	enum MHD_Result ret;
	int status, late;

	(void)url;
	(void)version;
	if (rq == NULL) {
		rq = xcalloc(1, sizeof(*rq));
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		rq->body = xrealloc(rq->body, rq->len + *upload_size + 1);
		memcpy(rq->body + rq->len, upload, *upload_size);
		rq->len += *upload_size;
		rq->body[rq->len] = '\0';
		*upload_size = 0;
		return MHD_YES;
	}
	pthread_mutex_lock(&s->mu);
	if (strcmp(method, "POST") != 0) {
		sink_bad(s, "not a POST");
		status = 405;
		text = "";
		late = 0;
	} else
		status = sink_decide(s, c, rq, &text, &late);
	pthread_mutex_unlock(&s->mu);
	if (late > 0)
		tu_sleep_ms(late);
	resp = MHD_create_response_from_buffer(strlen(text),
	    (void *)(uintptr_t)text, MHD_RESPMEM_MUST_COPY);
	if (status == 429)
		MHD_add_response_header(resp, "Retry-After", "7");
	if (status == 302)
		MHD_add_response_header(resp, "Location", "/elsewhere");
	ret = MHD_queue_response(c, (unsigned int)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void
sink_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct sreq *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (rq != NULL) {
		free(rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

static void
sink_start(struct sink *s)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sin;

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = 0;
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
}

static void
sink_stop(struct sink *s)
{
	int i;

	MHD_stop_daemon(s->d);
	for (i = 0; i < s->nkeys; i++)
		free(s->keys[i]);
	free(s->last_body);
	free(s->last_sig);
	free(s->last_ts);
	free(s->last_ctype);
	pthread_mutex_destroy(&s->mu);
}

/* The 2xx answers the client saw for key; 0 if never accepted. */
static int
sink_count(struct sink *s, const char *key)
{
	int i;

	for (i = 0; i < s->nkeys; i++)
		if (strcmp(s->keys[i], key) == 0)
			return s->counts[i];
	return 0;
}

/* An http exporter on the sink; secret_path NULL: unsigned. */
static void *
http_on(struct sink *s, const char *secret_path, const char *timeout,
    char *url, size_t urllen)
{
	struct rs_export_kv kv[4];
	size_t n = 0;

	snprintf(url, urllen, "http://127.0.0.1:%d/hooks/refunds", s->port);
	kv[n].key = "type";
	kv[n++].value = "http";
	kv[n].key = "url";
	kv[n++].value = url;
	kv[n].key = "timeout";
	kv[n++].value = timeout;
	if (secret_path != NULL) {
		kv[n].key = "secret_file";
		kv[n++].value = secret_path;
	}
	return open_ok(&exporter_http_ops, "erp", kv, n);
}

/* A temporary directory with the secret in "secret". */
static char *
secret_dir(char **path)
{
	char *dir = tu_tempdir();

	ck_assert_ptr_nonnull(dir);
	*path = xasprintf("%s/secret", dir);
	ck_assert(tu_write_file(*path, SECRET "\n", true));
	return dir;
}

/* ---- http tests ----------------------------------------------------- */

START_TEST(test_http_ops)
{
	ck_assert_uint_eq(exporter_http_ops.abi_version,
	    RS_EXPORTER_ABI_VERSION);
	ck_assert_str_eq(exporter_http_ops.name, "http");
	ck_assert_ptr_nonnull(exporter_http_ops.open);
	ck_assert_ptr_nonnull(exporter_http_ops.deliver);
	ck_assert_ptr_null(exporter_http_ops.recover);
	ck_assert_ptr_nonnull(exporter_http_ops.close);
	ck_assert_str_eq(exporter_http_keys[0], "url");
	ck_assert_str_eq(exporter_http_keys[1], "secret_file");
	ck_assert_str_eq(exporter_http_keys[2], "timeout");
	ck_assert_str_eq(exporter_http_keys[3], "connect_timeout");
	ck_assert_str_eq(exporter_http_keys[4], "ca_file");
	ck_assert_ptr_null(exporter_http_keys[5]);
	exporter_http_ops.close(NULL);
}
END_TEST

START_TEST(test_http_open_errors)
{
	struct rs_export_kv none[] = { { "type", "http" } };
	struct rs_export_kv ftp[] = { { "url", "ftp://example.com/x" } };
	struct rs_export_kv rel[] = { { "url", "/just/a/path" } };
	struct rs_export_kv sp[] = { { "url", "http://a b/" } };
	struct rs_export_kv nohost[] = { { "url", "http:///x" } };
	struct rs_export_kv t0[] = { { "url", "http://127.0.0.1:1/" },
	    { "timeout", "0" } };
	struct rs_export_kv tx[] = { { "url", "http://127.0.0.1:1/" },
	    { "timeout", "10s" } };
	struct rs_export_kv ct[] = { { "url", "http://127.0.0.1:1/" },
	    { "connect_timeout", "99999" } };
	struct rs_export_kv nosecret[] = { { "url", "http://127.0.0.1:1/" },
	    { "secret_file", "/nonexistent/refundsync/secret" } };
	struct rs_export_kv nocred[] = { { "url", "http://127.0.0.1:1/" },
	    { "secret_file", "credential:hmac" } };

	unsetenv("CREDENTIALS_DIRECTORY");
	open_fails(&exporter_http_ops, none, 1, "url: required");
	open_fails(&exporter_http_ops, ftp, 1, "http:// or https://");
	open_fails(&exporter_http_ops, rel, 1, "http:// or https://");
	open_fails(&exporter_http_ops, sp, 1, "white space");
	open_fails(&exporter_http_ops, nohost, 1, "url: no host");
	open_fails(&exporter_http_ops, t0, 2, "timeout: too small");
	open_fails(&exporter_http_ops, tx, 2, "timeout: invalid");
	open_fails(&exporter_http_ops, ct, 2, "connect_timeout: too large");
	open_fails(&exporter_http_ops, nosecret, 2,
	    "secret_file: /nonexistent/refundsync/secret");
	open_fails(&exporter_http_ops, nocred, 2, "CREDENTIALS_DIRECTORY");
}
END_TEST

/* A secret from credential:NAME; an empty one is refused, unshown. */
START_TEST(test_http_secret_credential)
{
	struct rs_export_kv kv[] = { { "url", "http://127.0.0.1:1/" },
	    { "secret_file", "credential:hmac" } };
	char *dir, *path, *p2;
	void *ctx;

	dir = secret_dir(&path);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	p2 = xasprintf("%s/hmac", dir);
	ck_assert(tu_write_file(p2, "\n", true));
	open_fails(&exporter_http_ops, kv, 2, "/hmac: is empty");
	open_fails(&exporter_http_ops, kv, 2, "secret_file: ");
	ck_assert(tu_write_file(p2, SECRET, true));
	ctx = open_ok(&exporter_http_ops, "erp", kv, 2);
	exporter_http_ops.close(ctx);
	unsetenv("CREDENTIALS_DIRECTORY");
	free(p2);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

/* One signed POST: headers, signature and body exactly as documented. */
START_TEST(test_http_signed)
{
	struct sink s;
	struct trec t;
	struct drive dr;
	char url[128], *dir, *path, *want;
	void *ctx;

	sink_start(&s);
	s.secret = SECRET;
	dir = secret_dir(&path);
	ctx = http_on(&s, path, "5", url, sizeof(url));
	trec_init(&t, "erp", 7, "r-1", 3);
	drive(&exporter_http_ops, ctx, &t, 1, &dr, 5);
	ck_assert_int_eq(dr.calls, 1);
	ck_assert_uint_eq(dr.ndead, 0);
	ck_assert_msg(s.bad == 0, "sink: %s", s.badwhy);
	ck_assert_int_eq(s.requests, 1);
	ck_assert_int_eq(sink_count(&s, "erp:r-1:3"), 1);
	ck_assert_str_eq(s.last_body, GOLDEN);
	ck_assert_str_eq(s.last_ctype, "application/json");
	ck_assert_ptr_nonnull(s.last_sig);
	ck_assert_ptr_nonnull(s.last_ts);
	want = hmac_hex(SECRET, s.last_ts, GOLDEN, strlen(GOLDEN));
	ck_assert_str_eq(s.last_sig, want);
	ck_assert_uint_eq(strlen(s.last_sig), 7 + 64);
	free(want);
	exporter_http_ops.close(ctx);
	sink_stop(&s);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

/* No secret: no signature header, still a timestamp; 204 is done. */
START_TEST(test_http_unsigned)
{
	struct sink s;
	struct trec t[2];
	struct drive dr;
	char url[128];
	void *ctx;

	sink_start(&s);
	s.status_ok = 204;
	ctx = http_on(&s, NULL, "5", url, sizeof(url));
	trec_init(&t[0], "erp", 1, "r-1", 1);
	trec_init(&t[1], "erp", 2, "r-2", 1);
	drive(&exporter_http_ops, ctx, t, 2, &dr, 5);
	ck_assert_int_eq(dr.calls, 1);
	ck_assert_msg(s.bad == 0, "sink: %s", s.badwhy);
	ck_assert_ptr_null(s.last_sig);
	ck_assert_ptr_nonnull(s.last_ts);
	ck_assert_int_eq(s.requests, 2);
	ck_assert_int_eq(sink_count(&s, "erp:r-1:1"), 1);
	ck_assert_int_eq(sink_count(&s, "erp:r-2:1"), 1);
	exporter_http_ops.close(ctx);
	sink_stop(&s);
}
END_TEST

/* 5xx and 429 are retried; the reason names the status and body. */
START_TEST(test_http_retry_statuses)
{
	struct rs_export_record r;
	struct sink s;
	struct trec t;
	char url[128], err[512];
	size_t done;
	void *ctx;

	sink_start(&s);
	s.fail500 = 2;
	s.fail429 = 1;
	ctx = http_on(&s, NULL, "5", url, sizeof(url));
	trec_init(&t, "erp", 1, "r-1", 1);
	r = t.r;
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "HTTP 500: upstream down") != NULL, "%s",
	    err);
	ck_assert_ptr_nonnull(strstr(err, "127.0.0.1"));
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_msg(strstr(err, "HTTP 429 (Retry-After: 7)") != NULL, "%s",
	    err);
	ck_assert_ptr_nonnull(strstr(err, "slow down"));
	ck_assert_int_eq(sink_count(&s, "erp:r-1:1"), 0);
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_OK);
	ck_assert_uint_eq(done, 1);
	ck_assert_int_eq(sink_count(&s, "erp:r-1:1"), 1);
	ck_assert_int_eq(s.requests, 4);
	ck_assert_msg(s.bad == 0, "sink: %s", s.badwhy);
	exporter_http_ops.close(ctx);
	sink_stop(&s);
}
END_TEST

/* Other 4xx (and 3xx) are permanent, for that record only. */
START_TEST(test_http_permanent)
{
	struct rs_export_record r[3];
	struct sink s;
	struct trec t[3];
	char url[128], err[512];
	size_t done;
	void *ctx;
	int i;

	sink_start(&s);
	s.reject_refund = "r-bad";
	s.redirect_refund = "r-moved";
	ctx = http_on(&s, NULL, "5", url, sizeof(url));
	trec_init(&t[0], "erp", 1, "r-1", 1);
	trec_init(&t[1], "erp", 2, "r-bad", 1);
	trec_init(&t[2], "erp", 3, "r-moved", 1);
	for (i = 0; i < 3; i++)
		r[i] = t[i].r;
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, r, 3, &done, err,
	    sizeof(err)), RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 1);
	ck_assert_msg(strstr(err, "HTTP 400: {\"error\":\"unknown "
	    "account\"}") != NULL, "%s", err);
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r[2], 1, &done, err,
	    sizeof(err)), RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "HTTP 302") != NULL, "%s", err);
	ck_assert_int_eq(s.requests, 3);
	ck_assert_int_eq(sink_count(&s, "erp:r-1:1"), 1);
	exporter_http_ops.close(ctx);
	sink_stop(&s);
}
END_TEST

/* A stalled answer times out (and is retried); so does a dead port. */
START_TEST(test_http_timeout_refused)
{
	struct rs_export_kv kv[] = { { "url", NULL }, { "timeout", "1" } };
	struct rs_export_record r;
	struct sink s;
	struct trec t;
	char url[128], err[512];
	size_t done;
	int64_t t0;
	void *ctx;
	int port;

	sink_start(&s);
	s.slow = 1;
	s.slow_ms = 2500;
	ctx = http_on(&s, NULL, "1", url, sizeof(url));
	trec_init(&t, "erp", 1, "r-1", 1);
	r = t.r;
	t0 = clock_mono_ms();
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_int_lt(clock_mono_ms() - t0, 2000);
	ck_assert_int_ge(clock_mono_ms() - t0, 900);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "timed out") != NULL, "%s", err);
	exporter_http_ops.close(ctx);
	port = s.port;
	sink_stop(&s);

	/* Nobody listens there now. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
	kv[0].value = url;
	ctx = open_ok(&exporter_http_ops, "erp", kv, 2);
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "127.0.0.1") != NULL, "%s", err);
	exporter_http_ops.close(ctx);
}
END_TEST

/*
 * The issue's test: a sink that fails (500 twice), throttles (429),
 * stalls past the timeout after accepting, and refuses one record
 * (400).  Every (refund, revision) is accepted exactly once by key, in
 * change-log order, and the dead letter holds the reason.
 */
START_TEST(test_http_exactly_once)
{
	static const struct {
		const char	*id;
		int64_t		 rev;
	} in[] = {
		{ "r-1", 1 }, { "r-1", 2 }, { "r-2", 1 }, { "r-bad", 1 },
		{ "r-3", 5 }, { "r-1", 3 }
	};
	struct trec t[6];
	struct sink s;
	struct drive dr;
	char url[128], *dir, *path;
	void *ctx;
	size_t i;

	sink_start(&s);
	s.secret = SECRET;
	s.fail500 = 2;
	s.fail429 = 1;
	s.slow = 1;
	s.slow_ms = 1800;
	s.reject_refund = "r-bad";
	dir = secret_dir(&path);
	ctx = http_on(&s, path, "1", url, sizeof(url));
	for (i = 0; i < 6; i++)
		trec_init(&t[i], "erp", (int64_t)(10 + i), in[i].id, in[i].rev);
	t[5].r.posting = RS_POSTING_REVERSE;
	snprintf(t[5].key, sizeof(t[5].key), "erp:r-1:3:reverse");
	drive(&exporter_http_ops, ctx, t, 6, &dr, 20);

	ck_assert_msg(s.bad == 0, "sink: %s", s.badwhy);
	/* 500, 500, 429, the stalled one (timed out), then one each. */
	ck_assert_int_eq(dr.retries, 4);
	ck_assert_int_eq(s.requests, 10);
	ck_assert_int_eq(s.dups, 1);
	ck_assert_int_eq(s.nkeys, 5);
	for (i = 0; i < 6; i++) {
		if (i == 3)
			continue;
		ck_assert_int_eq(sink_count(&s, t[i].key), 1);
	}
	ck_assert_int_eq(sink_count(&s, "erp:r-bad:1"), 0);
	ck_assert_str_eq(s.keys[0], "erp:r-1:1");
	ck_assert_str_eq(s.keys[1], "erp:r-1:2");
	ck_assert_str_eq(s.keys[2], "erp:r-2:1");
	ck_assert_str_eq(s.keys[3], "erp:r-3:5");
	ck_assert_str_eq(s.keys[4], "erp:r-1:3:reverse");
	ck_assert_uint_eq(dr.ndead, 1);
	ck_assert_int_eq(dr.dead[0].seq, 13);
	ck_assert_str_eq(dr.dead[0].key, "erp:r-bad:1");
	ck_assert_msg(strstr(dr.dead[0].why, "HTTP 400") != NULL &&
	    strstr(dr.dead[0].why, "unknown account") != NULL, "%s",
	    dr.dead[0].why);
	ck_assert_ptr_null(strstr(dr.dead[0].why, SECRET));
	exporter_http_ops.close(ctx);
	sink_stop(&s);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

/* ---- exec ------------------------------------------------------------ */

/* The child: acknowledges by key, with special cases by refund id. */
#define CHILD_SH							\
	"dir=$1\n"							\
	"echo \"start $REFUNDSYNC_EXPORTER\" >> \"$dir/starts\"\n"	\
	"while IFS= read -r line; do\n"					\
	"  printf '%s\\n' \"$line\" >> \"$dir/lines\"\n"		\
	"  key=$(printf '%s\\n' \"$line\" | sed -n "			\
	"'s/.*\"idempotency_key\":\"\\([^\"]*\\)\".*/\\1/p')\n"		\
	"  once() { if [ -e \"$dir/$1\" ]; then return 1; fi; "	\
	": > \"$dir/$1\"; }\n"						\
	"  case $line in\n"						\
	"  *'\"refund_id\":\"r-bad\"'*) echo 'fail no such account';;\n"\
	"  *'\"refund_id\":\"r-busy\"'*)\n"				\
	"    if once busy; then echo 'retry ledger locked'; "		\
	"else echo \"ok $key\"; fi;;\n"					\
	"  *'\"refund_id\":\"r-die\"'*)\n"				\
	"    if once die; then exit 3; else echo \"ok $key\"; fi;;\n"	\
	"  *'\"refund_id\":\"r-hang\"'*)\n"				\
	"    if once hang; then sleep 30; else echo ok; fi;;\n"		\
	"  *'\"refund_id\":\"r-garbage\"'*)\n"				\
	"    if once garbage; then echo 'okay then'; "			\
	"else echo ok; fi;;\n"						\
	"  *'\"refund_id\":\"r-wrongkey\"'*)\n"				\
	"    if once wrongkey; then echo 'ok other:r-x:1'; "		\
	"else echo \"ok $key\"; fi;;\n"					\
	"  *) printf 'ok %s\\r\\n' \"$key\";;\n"			\
	"  esac\n"							\
	"done\n"							\
	"echo eof >> \"$dir/ends\"\n"

struct exec_fx {
	char	*dir;
	char	*command;
	void	*ctx;
};

/* A directory with the child script and an exec exporter running it. */
static void
exec_setup(struct exec_fx *fx, const char *script, const char *timeout)
{
	struct rs_export_kv kv[3];
	char *path;

	fx->dir = tu_tempdir();
	ck_assert_ptr_nonnull(fx->dir);
	path = xasprintf("%s/child.sh", fx->dir);
	ck_assert(tu_write_file(path, script, false));
	fx->command = xasprintf("exec sh '%s' '%s'", path, fx->dir);
	free(path);
	kv[0].key = "type";
	kv[0].value = "exec";
	kv[1].key = "command";
	kv[1].value = fx->command;
	kv[2].key = "timeout";
	kv[2].value = timeout;
	fx->ctx = open_ok(&exporter_exec_ops, "books", kv, 3);
}

static void
exec_teardown(struct exec_fx *fx)
{
	exporter_exec_ops.close(fx->ctx);
	tu_rmtree(fx->dir);
	free(fx->dir);
	free(fx->command);
}

/* The number of lines of dir/name (0 if it does not exist). */
static int
file_lines(const char *dir, const char *name)
{
	char *path, *text, *p;
	int n = 0;

	path = xasprintf("%s/%s", dir, name);
	text = tu_read_file(path, NULL);
	free(path);
	if (text == NULL)
		return 0;
	for (p = text; *p != '\0'; p++)
		if (*p == '\n')
			n++;
	free(text);
	return n;
}

static char *
file_text(const char *dir, const char *name)
{
	char *path, *text;

	path = xasprintf("%s/%s", dir, name);
	text = tu_read_file(path, NULL);
	free(path);
	return text != NULL ? text : xstrdup("");
}

/* Lines in dir/lines whose idempotency key is key. */
static int
lines_with_key(const char *dir, const char *key)
{
	char *text, *needle, *p;
	int n = 0;

	text = file_text(dir, "lines");
	needle = xasprintf("\"idempotency_key\":\"%s\"", key);
	for (p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	free(needle);
	free(text);
	return n;
}

START_TEST(test_exec_ops)
{
	struct rs_export_kv none[] = { { "type", "exec" } };
	struct rs_export_kv empty[] = { { "command", "" } };
	struct rs_export_kv t0[] = { { "command", "cat" },
	    { "timeout", "0" } };
	struct rs_export_kv tx[] = { { "command", "cat" },
	    { "timeout", "-5" } };

	ck_assert_uint_eq(exporter_exec_ops.abi_version,
	    RS_EXPORTER_ABI_VERSION);
	ck_assert_str_eq(exporter_exec_ops.name, "exec");
	ck_assert_ptr_null(exporter_exec_ops.recover);
	ck_assert_str_eq(exporter_exec_keys[0], "command");
	ck_assert_str_eq(exporter_exec_keys[1], "timeout");
	ck_assert_ptr_null(exporter_exec_keys[2]);
	open_fails(&exporter_exec_ops, none, 1, "command: required");
	open_fails(&exporter_exec_ops, empty, 1, "command: required");
	open_fails(&exporter_exec_ops, t0, 2, "timeout: too small");
	open_fails(&exporter_exec_ops, tx, 2, "timeout: too small");
	exporter_exec_ops.close(NULL);
}
END_TEST

/* Acknowledged lines: the child sees exactly the JSON form, one a line,
 * its name in the environment, and EOF on close. */
START_TEST(test_exec_ack)
{
	struct exec_fx fx;
	struct trec t[3];
	struct drive dr;
	char *lines, *want, *j0, *j1, *j2;

	exec_setup(&fx, CHILD_SH, "5");
	trec_init(&t[0], "books", 1, "r-1", 1);
	trec_init(&t[1], "books", 2, "r-1", 2);
	trec_init(&t[2], "books", 3, "r-2", 1);
	drive(&exporter_exec_ops, fx.ctx, t, 3, &dr, 5);
	ck_assert_int_eq(dr.calls, 1);
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 1);
	j0 = exporter_record_json(&t[0].r, NULL);
	j1 = exporter_record_json(&t[1].r, NULL);
	j2 = exporter_record_json(&t[2].r, NULL);
	want = xasprintf("%s\n%s\n%s\n", j0, j1, j2);
	lines = file_text(fx.dir, "lines");
	ck_assert_str_eq(lines, want);
	free(lines);
	lines = file_text(fx.dir, "starts");
	ck_assert_str_eq(lines, "start books\n");
	free(lines);
	free(want);
	free(j0);
	free(j1);
	free(j2);
	exporter_exec_ops.close(fx.ctx);
	fx.ctx = NULL;
	ck_assert_int_eq(file_lines(fx.dir, "ends"), 1);
	exec_teardown(&fx);
}
END_TEST

/* "retry" and "fail" map to RETRY and PERMANENT; the child stays. */
START_TEST(test_exec_retry_fail)
{
	struct exec_fx fx;
	struct trec t[4];
	struct drive dr;

	exec_setup(&fx, CHILD_SH, "5");
	trec_init(&t[0], "books", 1, "r-1", 1);
	trec_init(&t[1], "books", 2, "r-busy", 1);
	trec_init(&t[2], "books", 3, "r-bad", 4);
	trec_init(&t[3], "books", 4, "r-2", 1);
	drive(&exporter_exec_ops, fx.ctx, t, 4, &dr, 10);
	ck_assert_int_eq(dr.calls, 3);
	ck_assert_int_eq(dr.retries, 1);
	ck_assert_uint_eq(dr.ndead, 1);
	ck_assert_int_eq(dr.dead[0].seq, 3);
	ck_assert_str_eq(dr.dead[0].key, "books:r-bad:4");
	ck_assert_str_eq(dr.dead[0].why, "exec: record 3: fail: no such "
	    "account");
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 1);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-busy:1"), 2);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-1:1"), 1);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-2:1"), 1);
	exec_teardown(&fx);
}
END_TEST

/* A child that dies mid-batch: the records before are done, the one in
 * flight is retried by a new child with the same key. */
START_TEST(test_exec_dies)
{
	struct rs_export_record r[4];
	struct exec_fx fx;
	struct trec t[4];
	char err[512];
	size_t done;
	int i;

	exec_setup(&fx, CHILD_SH, "5");
	trec_init(&t[0], "books", 1, "r-1", 1);
	trec_init(&t[1], "books", 2, "r-2", 1);
	trec_init(&t[2], "books", 3, "r-die", 1);
	trec_init(&t[3], "books", 4, "r-3", 1);
	for (i = 0; i < 4; i++)
		r[i] = t[i].r;
	ck_assert_int_eq(exporter_exec_ops.deliver(fx.ctx, r, 4, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 2);
	ck_assert_msg(strstr(err, "exited with status 3") != NULL, "%s", err);
	ck_assert_ptr_nonnull(strstr(err, "record 3"));
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 1);
	ck_assert_int_eq(exporter_exec_ops.deliver(fx.ctx, r + 2, 2, &done,
	    err, sizeof(err)), RS_EXPORT_OK);
	ck_assert_uint_eq(done, 2);
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 2);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-die:1"), 2);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-1:1"), 1);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-3:1"), 1);
	exec_teardown(&fx);
}
END_TEST

/* A child that exits between deliveries is restarted at once. */
START_TEST(test_exec_idle_death)
{
	static const char script[] =
	    "echo start >> \"$1/starts\"\n"
	    "IFS= read -r line || exit 0\n"
	    "echo ok\n"
	    "exit 0\n";
	struct exec_fx fx;
	struct trec t[2];
	struct drive dr;

	exec_setup(&fx, script, "5");
	trec_init(&t[0], "books", 1, "r-1", 1);
	trec_init(&t[1], "books", 2, "r-2", 1);
	drive(&exporter_exec_ops, fx.ctx, &t[0], 1, &dr, 1);
	tu_sleep_ms(300);
	drive(&exporter_exec_ops, fx.ctx, &t[1], 1, &dr, 1);
	ck_assert_int_eq(dr.calls, 1);
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 2);
	exec_teardown(&fx);
}
END_TEST

/* No answer within the timeout: RETRY, the child (and what it runs) is
 * killed, and a new one takes the record. */
START_TEST(test_exec_timeout)
{
	struct rs_export_record r;
	struct exec_fx fx;
	struct trec t;
	char err[512];
	size_t done;
	int64_t t0;

	exec_setup(&fx, CHILD_SH, "1");
	trec_init(&t, "books", 1, "r-hang", 1);
	r = t.r;
	t0 = clock_mono_ms();
	ck_assert_int_eq(exporter_exec_ops.deliver(fx.ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_int_lt(clock_mono_ms() - t0, 2500);
	ck_assert_int_ge(clock_mono_ms() - t0, 900);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "no acknowledgement within 1 s") != NULL,
	    "%s", err);
	ck_assert_ptr_nonnull(strstr(err, "killed by signal"));
	ck_assert_int_eq(exporter_exec_ops.deliver(fx.ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_OK);
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 2);
	exec_teardown(&fx);
}
END_TEST

/* Nonsense and a wrong key are protocol errors: RETRY and restart. */
START_TEST(test_exec_bad_ack)
{
	struct exec_fx fx;
	struct trec t[3];
	struct drive dr;

	exec_setup(&fx, CHILD_SH, "5");
	trec_init(&t[0], "books", 1, "r-garbage", 1);
	trec_init(&t[1], "books", 2, "r-wrongkey", 1);
	trec_init(&t[2], "books", 3, "r-1", 1);
	drive(&exporter_exec_ops, fx.ctx, t, 3, &dr, 10);
	ck_assert_int_eq(dr.retries, 2);
	ck_assert_uint_eq(dr.ndead, 0);
	ck_assert_msg(strstr(dr.last_err, "acknowledged \"other:r-x:1\", "
	    "expected \"books:r-wrongkey:1\"") != NULL, "%s", dr.last_err);
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 3);
	exec_teardown(&fx);
}
END_TEST

START_TEST(test_exec_bad_ack_reason)
{
	struct rs_export_record r;
	struct exec_fx fx;
	struct trec t;
	char err[512];
	size_t done;

	exec_setup(&fx, CHILD_SH, "5");
	trec_init(&t, "books", 1, "r-garbage", 1);
	r = t.r;
	ck_assert_int_eq(exporter_exec_ops.deliver(fx.ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_msg(strstr(err, "bad acknowledgement \"okay\"") != NULL,
	    "%s", err);
	exec_teardown(&fx);
}
END_TEST

/* A command that cannot run is a retry, with the shell's status. */
START_TEST(test_exec_not_found)
{
	struct rs_export_kv kv[] = { { "command",
	    "/nonexistent/refundsync-exporter --flag" } };
	struct rs_export_record r;
	struct trec t;
	char err[512];
	size_t done;
	void *ctx;

	ctx = open_ok(&exporter_exec_ops, "books", kv, 1);
	trec_init(&t, "books", 1, "r-1", 1);
	r = t.r;
	ck_assert_int_eq(exporter_exec_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "exited with status 127") != NULL, "%s",
	    err);
	exporter_exec_ops.close(ctx);
}
END_TEST

/* Close stops a child that ignores EOF and SIGTERM, and reaps it. */
START_TEST(test_exec_close_kills)
{
	static const char script[] =
	    "trap '' TERM\n"
	    "echo $$ > \"$1/pid\"\n"
	    "IFS= read -r line\n"
	    "echo ok\n"
	    "while :; do sleep 1; done\n";
	struct exec_fx fx;
	struct trec t;
	struct drive dr;
	char *pidtext;
	int64_t t0;
	long pid;

	exec_setup(&fx, script, "5");
	trec_init(&t, "books", 1, "r-1", 1);
	drive(&exporter_exec_ops, fx.ctx, &t, 1, &dr, 1);
	pidtext = file_text(fx.dir, "pid");
	pid = strtol(pidtext, NULL, 10);
	free(pidtext);
	ck_assert_int_gt(pid, 1);
	ck_assert_int_eq(kill((pid_t)pid, 0), 0);
	t0 = clock_mono_ms();
	exporter_exec_ops.close(fx.ctx);
	fx.ctx = NULL;
	ck_assert_int_lt(clock_mono_ms() - t0, 6000);
	ck_assert_int_ge(clock_mono_ms() - t0, 3500);
	ck_assert_int_eq(kill((pid_t)pid, 0), -1);
	ck_assert_int_eq(errno, ESRCH);
	exec_teardown(&fx);
}
END_TEST

/* SIGPIPE from writing to a child that closed its stdin does not kill
 * the process, even where SIGPIPE is not ignored. */
START_TEST(test_exec_sigpipe)
{
	static const char script[] =
	    "IFS= read -r line\n"
	    "echo ok\n"
	    "exec 0<&-\n"
	    ": > \"$1/closed\"\n"
	    "sleep 1\n"
	    "exit 5\n";
	struct exec_fx fx;
	struct rs_export_record r;
	struct trec t[2];
	struct drive dr;
	char *closed, err[512];
	size_t done;
	int i;

	signal(SIGPIPE, SIG_DFL);
	exec_setup(&fx, script, "5");
	trec_init(&t[0], "books", 1, "r-1", 1);
	trec_init(&t[1], "books", 2, "r-2", 1);
	drive(&exporter_exec_ops, fx.ctx, &t[0], 1, &dr, 1);
	closed = xasprintf("%s/closed", fx.dir);
	for (i = 0; i < 500 && access(closed, F_OK) != 0; i++)
		tu_sleep_ms(10);
	ck_assert_int_eq(access(closed, F_OK), 0);
	free(closed);
	r = t[1].r;
	ck_assert_int_eq(exporter_exec_ops.deliver(fx.ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_RETRY);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "exited with status 5") != NULL, "%s", err);
	exec_teardown(&fx);
}
END_TEST

/* ---- plugins -------------------------------------------------------- */

/* A plugin .so built by `make check`, beside $RS_BINARY. */
static char *
plugin_path(const char *rel)
{
	const char *bin = getenv("RS_BINARY");
	char *copy, *p;

	if (bin == NULL || bin[0] == '\0')
		return xstrdup(rel);
	copy = xstrdup(bin);
	p = xasprintf("%s/%s", dirname(copy), rel);
	free(copy);
	return p;
}

static const struct rs_exporter_ops *
plugin_load(const char *rel, void **handle)
{
	rs_exporter_plugin_fn fn;
	char *path;
	void *sym;

	path = plugin_path(rel);
	*handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	ck_assert_msg(*handle != NULL, "dlopen %s: %s", path, dlerror());
	free(path);
	sym = dlsym(*handle, RS_EXPORTER_PLUGIN_SYMBOL);
	ck_assert_ptr_nonnull(sym);
	memcpy(&fn, &sym, sizeof(fn));
	return fn();
}

START_TEST(test_plugin_bad_abi)
{
	const struct rs_exporter_ops *ops;
	void *h;

	ops = plugin_load("tests/data/rs-bad-abi-exporter.so", &h);
	ck_assert_ptr_nonnull(ops);
	ck_assert_uint_eq(ops->abi_version, RS_EXPORTER_ABI_VERSION + 1);
	ck_assert_str_eq(ops->name, "bad-abi");
	dlclose(h);
}
END_TEST

/* The example: appends, skips what the file has, cuts a torn line. */
START_TEST(test_plugin_example)
{
	const struct rs_exporter_ops *ops;
	struct rs_export_kv kv[3];
	struct rs_export_kv nofile[] = { { "type", "plugin" } };
	struct trec t[5];
	struct drive dr;
	char *dir, *file, *text, err[256];
	int64_t last = -1;
	void *h, *ctx;
	int i;

	ops = plugin_load("examples/plugin/rs-example-exporter.so", &h);
	ck_assert_uint_eq(ops->abi_version, RS_EXPORTER_ABI_VERSION);
	ck_assert_str_eq(ops->name, "example");
	ck_assert_ptr_nonnull(ops->recover);
	open_fails(ops, nofile, 1, "file: required");
	dir = tu_tempdir();
	file = xasprintf("%s/audit.tsv", dir);
	kv[0].key = "type";
	kv[0].value = "plugin";
	kv[1].key = "path";
	kv[1].value = "/x/rs-example-exporter.so";
	kv[2].key = "file";
	kv[2].value = file;
	for (i = 0; i < 5; i++)
		trec_init(&t[i], "audit", i + 1, "r-1", i + 1);
	t[2].r.has_revision = 0;
	t[2].r.amount_exact = 0;
	t[2].r.status = "RE\tVER\nSED";

	ctx = open_ok(ops, "audit", kv, 3);
	ck_assert_int_eq(ops->recover(ctx, &last, err, sizeof(err)),
	    RS_EXPORT_OK);
	ck_assert_int_eq(last, 0);
	drive(ops, ctx, t, 3, &dr, 1);
	/* A replay from seq 2: nothing is written twice. */
	drive(ops, ctx, &t[1], 3, &dr, 1);
	ck_assert_int_eq(ops->recover(ctx, &last, err, sizeof(err)),
	    RS_EXPORT_OK);
	ck_assert_int_eq(last, 4);
	ops->close(ctx);
	text = tu_read_file(file, NULL);
	ck_assert_str_eq(text,
	    "1\taudit:r-1:1\tr-1\t1\tSUCCEEDED\tpost\tUSD\t10.50\t1050\n"
	    "2\taudit:r-1:2\tr-1\t2\tSUCCEEDED\tpost\tUSD\t10.50\t1050\n"
	    "3\taudit:r-1:3\tr-1\t-\tRE VER SED\tpost\tUSD\t10.50\t-\n"
	    "4\taudit:r-1:4\tr-1\t4\tSUCCEEDED\tpost\tUSD\t10.50\t1050\n");
	free(text);

	/* A crash in the middle of a write leaves a torn line. */
	text = tu_read_file(file, NULL);
	ck_assert(tu_write_file(file, "x", false));
	ck_assert(tu_write_file(file, text, false));
	free(text);
	{
		FILE *fp = fopen(file, "a");

		ck_assert_ptr_nonnull(fp);
		fputs("5\taudit:r-1:5\tr-", fp);
		fclose(fp);
	}
	ctx = open_ok(ops, "audit", kv, 3);
	ck_assert_int_eq(ops->recover(ctx, &last, err, sizeof(err)),
	    RS_EXPORT_OK);
	ck_assert_int_eq(last, 4);
	drive(ops, ctx, &t[4], 1, &dr, 1);
	ops->close(ctx);
	text = tu_read_file(file, NULL);
	ck_assert_ptr_nonnull(strstr(text, "\tUSD\t10.50\t1050\n"
	    "5\taudit:r-1:5\tr-1\t5\tSUCCEEDED\tpost\tUSD\t10.50\t1050\n"));
	ck_assert_int_eq(file_lines(dir, "audit.tsv"), 5);
	free(text);

	/* A file whose last line is not the plugin's is refused. */
	ck_assert(tu_write_file(file, "hello\n", false));
	open_fails(ops, kv, 3, "not one of ours");
	free(file);
	tu_rmtree(dir);
	free(dir);
	dlclose(h);
}
END_TEST

static Suite *
http_exec_suite(void)
{
	Suite *s = suite_create("http_exec");
	TCase *tj = tcase_create("json");
	TCase *th = tcase_create("http");
	TCase *te = tcase_create("exec");
	TCase *tp = tcase_create("plugin");

	tcase_add_test(tj, test_json_golden);
	tcase_add_test(tj, test_json_types);
	tcase_add_test(tj, test_json_escaping);
	suite_add_tcase(s, tj);

	tcase_set_timeout(th, 60);
	tcase_add_test(th, test_http_ops);
	tcase_add_test(th, test_http_open_errors);
	tcase_add_test(th, test_http_secret_credential);
	tcase_add_test(th, test_http_signed);
	tcase_add_test(th, test_http_unsigned);
	tcase_add_test(th, test_http_retry_statuses);
	tcase_add_test(th, test_http_permanent);
	tcase_add_test(th, test_http_timeout_refused);
	tcase_add_test(th, test_http_exactly_once);
	suite_add_tcase(s, th);

	tcase_set_timeout(te, 60);
	tcase_add_test(te, test_exec_ops);
	tcase_add_test(te, test_exec_ack);
	tcase_add_test(te, test_exec_retry_fail);
	tcase_add_test(te, test_exec_dies);
	tcase_add_test(te, test_exec_idle_death);
	tcase_add_test(te, test_exec_timeout);
	tcase_add_test(te, test_exec_bad_ack);
	tcase_add_test(te, test_exec_bad_ack_reason);
	tcase_add_test(te, test_exec_not_found);
	tcase_add_test(te, test_exec_close_kills);
	tcase_add_test(te, test_exec_sigpipe);
	suite_add_tcase(s, te);

	tcase_add_test(tp, test_plugin_bad_abi);
	tcase_add_test(tp, test_plugin_example);
	suite_add_tcase(s, tp);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	log_init(0, false);
	sr = srunner_create(http_exec_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
