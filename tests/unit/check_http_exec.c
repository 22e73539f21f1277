/*
 * check_http_exec.c: the delivery exporters (http, exec), the JSON form
 * of a record they share, and the example and bad-ABI plugins.
 *
 * The ops tables are driven directly, the way the engine drives them
 * (deliver from the first record not done; RETRY means call again,
 * PERMANENT means the record goes to dead letters and the rest go on),
 * so nothing here depends on the engine or the store.
 *
 * http runs against the libmicrohttpd sink of tests/testutil.h
 * (tu_sink_*) on 127.0.0.1:0, started inside the test.  It logs every
 * request, which the tests check (headers, JSON body, the HMAC
 * signature), and is scripted to answer 500 some number of times, 429,
 * a redirect, stall past the client's timeout after it has accepted the
 * record, and 400 for one refund id.  It counts acceptances by
 * Idempotency-Key, so the tests can show each (refund, revision) is
 * accepted exactly once.
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
#include <sys/stat.h>
#include <sys/types.h>

#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "exporters/builtin.h"
#include "../netfault.h"
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

/* ---- the http sink (tu_sink_*, tests/testutil.h) ------------------ */

/* Scripted answers: a 500, and a 429 with a Retry-After. */
static const struct tu_sink_step down500 = { 500, "upstream down", NULL, 0 };
static const struct tu_sink_step slow429 = {
	429, "{\"error\":\"slow down\"}", "Retry-After: 7", 0
};

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

/* A sink with policy (NULL: accept everything at once). */
static struct tu_sink *
sink_new(const struct tu_sink_policy *policy)
{
	struct tu_sink *s = tu_sink_start(policy);

	ck_assert_msg(s != NULL, "the sink did not start");
	return s;
}

/*
 * Every request the sink logged was as documented: well-formed (the
 * sink's own checks: a POST, an Idempotency-Key, a JSON body with that
 * key and a seq), Content-Type application/json, a timestamp within five
 * minutes of now, and the HMAC-SHA256 of secret over "<timestamp>.<body>"
 * (secret NULL: no signature header at all).  Returns how many.
 */
static size_t
sink_check(struct tu_sink *s, const char *secret)
{
	struct tu_sink_stats st;
	struct tu_sink_req *log;
	size_t n, i;
	char *want;
	int64_t ts;

	tu_sink_stats(s, &st);
	ck_assert_msg(st.bad == 0, "sink: %lld malformed: %s",
	    (long long)st.bad, st.bad_why);
	log = tu_sink_log(s, &n);
	for (i = 0; i < n; i++) {
		ck_assert_str_eq(log[i].content_type, "application/json");
		ck_assert_ptr_nonnull(log[i].timestamp);
		ts = strtoll(log[i].timestamp, NULL, 10);
		ck_assert_msg(ts >= (int64_t)time(NULL) - 300 &&
		    ts <= (int64_t)time(NULL) + 300, "timestamp %s far from "
		    "now", log[i].timestamp);
		if (secret == NULL) {
			ck_assert_msg(log[i].signature == NULL, "signed "
			    "without a secret: %s", log[i].signature);
			continue;
		}
		want = hmac_hex(secret, log[i].timestamp, log[i].body,
		    log[i].body_len);
		ck_assert_str_eq(log[i].signature, want);
		free(want);
	}
	tu_sink_log_free(log, n);
	return n;
}

/* The 2xx answers to key that were not held back by a step's delay:
 * those the client could see. */
static int
sink_seen(struct tu_sink *s, const char *key)
{
	struct tu_sink_req *log;
	size_t n, i;
	int seen = 0;

	log = tu_sink_log(s, &n);
	for (i = 0; i < n; i++)
		if (log[i].status / 100 == 2 && log[i].delay_ms == 0 &&
		    log[i].key != NULL && strcmp(log[i].key, key) == 0)
			seen++;
	tu_sink_log_free(log, n);
	return seen;
}

/* An http exporter on the sink; secret_path NULL: unsigned. */
static void *
http_on(struct tu_sink *s, const char *secret_path, const char *timeout,
    char *url, size_t urllen)
{
	struct rs_export_kv kv[4];
	size_t n = 0;

	snprintf(url, urllen, "http://127.0.0.1:%d/hooks/refunds",
	    tu_sink_port(s));
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
	struct rs_export_kv ctt[] = { { "url", "http://127.0.0.1:1/" },
	    { "timeout", "5" }, { "connect_timeout", "20" } };
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
	open_fails(&exporter_http_ops, ctt, 3, "connect_timeout: 20 is more "
	    "than timeout (5)");
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
	struct tu_sink_req *log;
	struct tu_sink *s;
	struct trec t;
	struct drive dr;
	char url[128], *dir, *path, *want;
	size_t n;
	void *ctx;

	s = sink_new(NULL);
	dir = secret_dir(&path);
	ctx = http_on(s, path, "5", url, sizeof(url));
	trec_init(&t, "erp", 7, "r-1", 3);
	drive(&exporter_http_ops, ctx, &t, 1, &dr, 5);
	ck_assert_int_eq(dr.calls, 1);
	ck_assert_uint_eq(dr.ndead, 0);
	ck_assert_uint_eq(sink_check(s, SECRET), 1);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-1:3"), 1);
	log = tu_sink_log(s, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(log[0].path, "/hooks/refunds");
	ck_assert_str_eq(log[0].body, GOLDEN);
	ck_assert_str_eq(log[0].content_type, "application/json");
	ck_assert_ptr_nonnull(log[0].signature);
	ck_assert_ptr_nonnull(log[0].timestamp);
	want = hmac_hex(SECRET, log[0].timestamp, GOLDEN, strlen(GOLDEN));
	ck_assert_str_eq(log[0].signature, want);
	ck_assert_uint_eq(strlen(log[0].signature), 7 + 64);
	free(want);
	tu_sink_log_free(log, n);
	exporter_http_ops.close(ctx);
	tu_sink_free(s);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

/* No secret: no signature header, still a timestamp; 204 is done. */
START_TEST(test_http_unsigned)
{
	struct tu_sink_policy p204 = { .ok_status = 204 };
	struct tu_sink *s;
	struct trec t[2];
	struct drive dr;
	char url[128];
	void *ctx;

	s = sink_new(&p204);
	ctx = http_on(s, NULL, "5", url, sizeof(url));
	trec_init(&t[0], "erp", 1, "r-1", 1);
	trec_init(&t[1], "erp", 2, "r-2", 1);
	drive(&exporter_http_ops, ctx, t, 2, &dr, 5);
	ck_assert_int_eq(dr.calls, 1);
	/* No signature header, still a timestamp (sink_check). */
	ck_assert_uint_eq(sink_check(s, NULL), 2);
	ck_assert_int_eq(tu_sink_count(s, NULL, 204), 2);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-1:1"), 1);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-2:1"), 1);
	exporter_http_ops.close(ctx);
	tu_sink_free(s);
}
END_TEST

/* 5xx and 429 are retried; the reason names the status and body. */
START_TEST(test_http_retry_statuses)
{
	const struct tu_sink_step steps[] = { down500, down500, slow429 };
	struct rs_export_record r;
	struct tu_sink *s;
	struct trec t;
	char url[128], err[512];
	size_t done;
	void *ctx;

	s = sink_new(NULL);
	ck_assert(tu_sink_script(s, steps, 3));
	ctx = http_on(s, NULL, "5", url, sizeof(url));
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
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-1:1"), 0);
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r, 1, &done, err,
	    sizeof(err)), RS_EXPORT_OK);
	ck_assert_uint_eq(done, 1);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-1:1"), 1);
	ck_assert_uint_eq(sink_check(s, NULL), 4);
	exporter_http_ops.close(ctx);
	tu_sink_free(s);
}
END_TEST

/* Other 4xx (and 3xx) are permanent, for that record only. */
START_TEST(test_http_permanent)
{
	struct tu_sink_policy refuse = { .refuse_refund = "r-bad" };
	const struct tu_sink_step moved = {
		302, "moved", "Location: /elsewhere", 0
	};
	struct rs_export_record r[3];
	struct tu_sink *s;
	struct trec t[3];
	char url[128], err[512];
	size_t done;
	void *ctx;
	int i;

	s = sink_new(&refuse);
	ctx = http_on(s, NULL, "5", url, sizeof(url));
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
	ck_assert(tu_sink_script(s, &moved, 1));
	ck_assert_int_eq(exporter_http_ops.deliver(ctx, &r[2], 1, &done, err,
	    sizeof(err)), RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "HTTP 302") != NULL, "%s", err);
	ck_assert_uint_eq(sink_check(s, NULL), 3);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-1:1"), 1);
	ck_assert_int_eq(tu_sink_count(s, NULL, 2), 1);
	exporter_http_ops.close(ctx);
	tu_sink_free(s);
}
END_TEST

/* A stalled answer times out (and is retried); so does a dead port. */
START_TEST(test_http_timeout_refused)
{
	struct rs_export_kv kv[] = { { "url", NULL }, { "timeout", "1" } };
	const struct tu_sink_step late = { 200, NULL, NULL, 2500 };
	struct rs_export_record r;
	struct tu_sink *s;
	struct trec t;
	char url[128], err[512];
	size_t done;
	int64_t t0;
	void *ctx;
	int port;

	s = sink_new(NULL);
	ck_assert(tu_sink_script(s, &late, 1));
	ctx = http_on(s, NULL, "1", url, sizeof(url));
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
	port = tu_sink_port(s);
	tu_sink_free(s);

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
	/* 500, 500, 429, then accepted but answered after the timeout. */
	const struct tu_sink_step steps[] = {
		down500, down500, slow429, { 200, NULL, NULL, 1800 }
	};
	struct tu_sink_policy refuse = { .refuse_refund = "r-bad" };
	struct tu_sink_stats st;
	struct trec t[6];
	struct tu_sink *s;
	struct drive dr;
	char url[128], *dir, *path, *k;
	void *ctx;
	size_t i;

	s = sink_new(&refuse);
	ck_assert(tu_sink_script(s, steps, 4));
	dir = secret_dir(&path);
	ctx = http_on(s, path, "1", url, sizeof(url));
	for (i = 0; i < 6; i++)
		trec_init(&t[i], "erp", (int64_t)(10 + i), in[i].id, in[i].rev);
	t[5].r.posting = RS_POSTING_REVERSE;
	snprintf(t[5].key, sizeof(t[5].key), "erp:r-1:3:reverse");
	drive(&exporter_http_ops, ctx, t, 6, &dr, 20);

	/* 500, 500, 429, the stalled one (timed out), then one each. */
	ck_assert_int_eq(dr.retries, 4);
	ck_assert_uint_eq(sink_check(s, SECRET), 10);
	tu_sink_stats(s, &st);
	ck_assert_int_eq(st.again, 1);
	ck_assert_int_eq(st.effects, 5);
	ck_assert_int_eq(st.conflicts, 0);
	for (i = 0; i < 6; i++) {
		if (i == 3)
			continue;
		ck_assert_int_eq(sink_seen(s, t[i].key), 1);
	}
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-bad:1"), 0);
	for (i = 0; i < 5; i++) {
		k = tu_sink_key(s, i);
		ck_assert_str_eq(k, t[i < 3 ? i : i + 1].key);
		free(k);
	}
	ck_assert_ptr_null(tu_sink_key(s, 5));
	ck_assert_uint_eq(dr.ndead, 1);
	ck_assert_int_eq(dr.dead[0].seq, 13);
	ck_assert_str_eq(dr.dead[0].key, "erp:r-bad:1");
	ck_assert_msg(strstr(dr.dead[0].why, "HTTP 400") != NULL &&
	    strstr(dr.dead[0].why, "unknown account") != NULL, "%s",
	    dr.dead[0].why);
	ck_assert_ptr_null(strstr(dr.dead[0].why, SECRET));
	exporter_http_ops.close(ctx);
	tu_sink_free(s);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

/* ---- network faults (issue #7) -------------------------------------- */

/*
 * The http exporter against a target that misbehaves below HTTP: resets
 * mid-answer, answers without end, redirects, never answers the SYN, has
 * no name, or fails TLS.  Every case asserts the outcome (RETRY or
 * PERMANENT), that the reason names the cause and the target, and how
 * long the delivery took.  The servers are tests/netfault.h's, except the
 * paced ones below (netfault's raw server sends its bytes at once or as
 * fast as the client reads; these need a byte at a time).
 */

/* The end of reason_has()'s strings. */
#define END		((const char *)NULL)
#define DRIP_MS		100	/* the paced servers' beat */
#define DRIP_MAX_MS	30000	/* and how long they keep a connection */
#define DRIP_REQ_MAX	(64 * 1024)
#define MIB		(1024 * 1024)

enum drip_mode {
	DRIP_BODY,		/* 200, Content-Length 1000000, then one
				 * byte each DRIP_MS */
	DRIP_HEADERS,		/* a status line, then a header line each
				 * DRIP_MS */
	DRIP_FLOOD		/* a status line, then header lines as fast
				 * as the client reads them */
};

/* A paced server on 127.0.0.1:0: one thread, one connection at a time. */
struct drip {
	enum drip_mode	 mode;
	int		 lfd;
	int		 port;
	pthread_t	 tid;
	atomic_bool	 stop;
	atomic_int	 conns;		/* connections accepted */
	atomic_llong	 sent;		/* answer bytes sent, in all */
};

/* Read the request's head and its Content-Length of body (bounded). */
static void
drip_read_request(int fd)
{
	char buf[DRIP_REQ_MAX + 1], *eoh, *cl;
	size_t len = 0, want = SIZE_MAX;
	int64_t deadline = clock_mono_ms() + 5000;
	struct pollfd pfd;
	ssize_t n;

	while (len < want && len < DRIP_REQ_MAX &&
	    clock_mono_ms() < deadline) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 100) != 1)
			continue;
		if ((n = read(fd, buf + len, DRIP_REQ_MAX - len)) <= 0)
			return;
		len += (size_t)n;
		buf[len] = '\0';
		if (want == SIZE_MAX && (eoh = strstr(buf, "\r\n\r\n")) !=
		    NULL) {
			want = (size_t)(eoh + 4 - buf);
			if ((cl = strcasestr(buf, "\r\nContent-Length:")) !=
			    NULL && cl < eoh)
				want += strtoul(cl + 17, NULL, 10);
		}
	}
}

/* Send all of p, or false if the client went away (or took too long). */
static bool
drip_send(struct drip *dp, int fd, const char *p, size_t len)
{
	struct pollfd pfd;
	ssize_t n;

	while (len > 0 && !atomic_load(&dp->stop)) {
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, 1000) != 1)
			return false;
		n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return false;
		atomic_fetch_add(&dp->sent, n);
		p += n;
		len -= (size_t)n;
	}
	return len == 0;
}

static void
drip_serve(struct drip *dp, int fd)
{
	static const char body_head[] = "HTTP/1.1 200 OK\r\n"
	    "Content-Type: application/json\r\nContent-Length: 1000000\r\n"
	    "\r\n{";
	char line[64];
	int64_t end = clock_mono_ms() + DRIP_MAX_MS;
	bool ok;
	int i;

	drip_read_request(fd);
	if (dp->mode == DRIP_BODY)
		ok = drip_send(dp, fd, body_head, strlen(body_head));
	else
		ok = drip_send(dp, fd, "HTTP/1.1 200 OK\r\n", 17);
	for (i = 0; ok && !atomic_load(&dp->stop) && clock_mono_ms() < end;
	    i++) {
		switch (dp->mode) {
		case DRIP_BODY:
			ok = drip_send(dp, fd, " ", 1);
			tu_sleep_ms(DRIP_MS);
			break;
		case DRIP_HEADERS:
			snprintf(line, sizeof(line), "X-Drip-%d: slow\r\n", i);
			ok = drip_send(dp, fd, line, strlen(line));
			tu_sleep_ms(DRIP_MS);
			break;
		case DRIP_FLOOD:
			snprintf(line, sizeof(line), "X-Flood-%d: %040d\r\n",
			    i, i);
			ok = drip_send(dp, fd, line, strlen(line));
			break;
		}
	}
}

static void *
drip_main(void *arg)
{
	struct drip *dp = arg;
	struct pollfd pfd;
	int fd;

	while (!atomic_load(&dp->stop)) {
		pfd.fd = dp->lfd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 50) != 1)
			continue;
		if ((fd = accept4(dp->lfd, NULL, NULL, SOCK_CLOEXEC)) == -1)
			continue;
		atomic_fetch_add(&dp->conns, 1);
		drip_serve(dp, fd);
		close(fd);
	}
	return NULL;
}

static struct drip *
drip_start(enum drip_mode mode)
{
	struct drip *dp = xcalloc(1, sizeof(*dp));
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);

	dp->mode = mode;
	dp->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(dp->lfd, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(dp->lfd, (struct sockaddr *)&sin,
	    sizeof(sin)), 0);
	ck_assert_int_eq(listen(dp->lfd, 8), 0);
	ck_assert_int_eq(getsockname(dp->lfd, (struct sockaddr *)&sin,
	    &slen), 0);
	dp->port = ntohs(sin.sin_port);
	ck_assert_int_eq(pthread_create(&dp->tid, NULL, drip_main, dp), 0);
	return dp;
}

static void
drip_stop(struct drip *dp)
{
	atomic_store(&dp->stop, true);
	ck_assert_int_eq(pthread_join(dp->tid, NULL), 0);
	close(dp->lfd);
	free(dp);
}

/* ---- helpers ---------------------------------------------------------- */

/* An http exporter for url; connect_timeout and ca_file NULL: unset. */
static void *
http_url(const char *url, const char *timeout, const char *connect_timeout,
    const char *ca_file)
{
	struct rs_export_kv kv[4];
	size_t n = 0;

	kv[n].key = "url";
	kv[n++].value = url;
	kv[n].key = "timeout";
	kv[n++].value = timeout;
	if (connect_timeout != NULL) {
		kv[n].key = "connect_timeout";
		kv[n++].value = connect_timeout;
	}
	if (ca_file != NULL) {
		kv[n].key = "ca_file";
		kv[n++].value = ca_file;
	}
	return open_ok(&exporter_http_ops, "erp", kv, n);
}

/*
 * Deliver t's record once: the result, the reason in err and the
 * milliseconds it took in *ms.  done must agree with the result.
 */
static int
deliver_once(void *ctx, const struct trec *t, char *err, size_t errlen,
    int64_t *ms)
{
	struct rs_export_record r = t->r;
	size_t done = 12345;
	int64_t t0 = clock_mono_ms();
	int res;

	err[0] = '\0';
	res = exporter_http_ops.deliver(ctx, &r, 1, &done, err, errlen);
	*ms = clock_mono_ms() - t0;
	ck_assert_uint_eq(done, res == RS_EXPORT_OK ? 1 : 0);
	if (res != RS_EXPORT_OK)
		ck_assert_msg(err[0] != '\0', "a failure without a reason");
	return res;
}

/* err contains each of the strings that follow, up to END. */
static void
reason_has(const char *err, ...)
{
	const char *want;
	va_list ap;

	va_start(ap, err);
	while ((want = va_arg(ap, const char *)) != NULL)
		ck_assert_msg(strstr(err, want) != NULL, "reason \"%s\" lacks "
		    "\"%s\"", err, want);
	va_end(ap);
}

/* The process's peak resident set (VmHWM), in KiB. */
static long
peak_rss_kib(void)
{
	char *text = tu_read_file("/proc/self/status", NULL), *p;
	long kib = -1;

	ck_assert_ptr_nonnull(text);
	if ((p = strstr(text, "\nVmHWM:")) != NULL)
		kib = strtol(p + 7, NULL, 10);
	free(text);
	ck_assert_int_gt(kib, 0);
	return kib;
}

/* The value of header name in a raw request, or NULL.  Caller frees. */
static char *
raw_header(const char *req, const char *name)
{
	const char *p = req, *eol, *v;
	size_t n = strlen(name);

	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncmp(p, "\r\n", 2) == 0)
			break;
		if ((eol = strstr(p, "\r\n")) == NULL)
			break;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			for (v = p + n + 1; *v == ' '; v++)
				;
			return xstrndup(v, (size_t)(eol - v));
		}
	}
	return NULL;
}

/* The body of a raw request: what follows the blank line. */
static const char *
raw_body(const char *req)
{
	const char *p = strstr(req, "\r\n\r\n");

	ck_assert_ptr_nonnull(p);
	return p + 4;
}

/* ---- the tests -------------------------------------------------------- */

/*
 * The connection is reset in the middle of the answer: after a 200's
 * header and the start of its body, then after a 503's; and before any
 * answer at all.  Each is a RETRY naming the reset and the target; the
 * fourth attempt is answered in full.  All four carried the same key and
 * the same body, so a receiver that honours the key applies it once.
 */
START_TEST(test_http_reset_mid_answer)
{
	static const char ok_part[] = "HTTP/1.1 200 OK\r\n"
	    "Content-Type: application/json\r\nContent-Length: 64\r\n\r\n"
	    "{\"ok\":tr";
	static const char busy_part[] = "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Length: 40\r\n\r\n{\"err";
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"
	    "Connection: close\r\n\r\n{\"ok\":true}";
	const struct nf_raw_step steps[] = {
		{ NF_RAW_RESET, ok_part, 0 },
		{ NF_RAW_RESET, busy_part, 0 },
		{ NF_RAW_RESET, NULL, 0 },
		{ NF_RAW_CLOSE, ok, 0 }
	};
	struct nf_raw_server *srv;
	struct trec t;
	char url[128], shown[128], err[512], *req[4], *key;
	int64_t ms;
	void *ctx;
	unsigned k;

	srv = nf_raw_start(steps, 4);
	ck_assert_ptr_nonnull(srv);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hooks/refunds",
	    nf_raw_port(srv));
	snprintf(shown, sizeof(shown), "127.0.0.1:%d/hooks/refunds",
	    nf_raw_port(srv));
	ctx = http_url(url, "5", NULL, NULL);
	trec_init(&t, "erp", 1, "r-1", 1);

	for (k = 0; k < 3; k++) {
		ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err),
		    &ms), RS_EXPORT_RETRY);
		reason_has(err, shown, "Connection reset by peer", END);
		ck_assert_int_lt(ms, 3000);
	}
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_OK);
	ck_assert_int_lt(ms, 3000);

	/* One connection each, the same key and body bytes every time. */
	ck_assert_uint_eq(nf_raw_connections(srv), 4);
	for (k = 0; k < 4; k++) {
		req[k] = nf_raw_request(srv, k);
		ck_assert_ptr_nonnull(req[k]);
		ck_assert_msg(strncmp(req[k], "POST /hooks/refunds ", 20) == 0,
		    "%.40s", req[k]);
		key = raw_header(req[k], "Idempotency-Key");
		ck_assert_str_eq(key, "erp:r-1:1");
		free(key);
		ck_assert_str_eq(raw_body(req[k]), raw_body(req[0]));
	}
	ck_assert_ptr_nonnull(strstr(raw_body(req[0]),
	    "\"idempotency_key\":\"erp:r-1:1\""));
	for (k = 0; k < 4; k++)
		free(req[k]);
	exporter_http_ops.close(ctx);
	nf_raw_stop(srv);
}
END_TEST

/*
 * A 50 MiB answer (by Content-Length: 200, 503 and 400), and one of
 * unknown length that never ends: each is cut off at the exporter's 1 MiB
 * cap, long before the 20 s timeout, and retried (whatever its status)
 * with a reason that says so; memory stays bounded.  Then a normal answer
 * is delivered.
 */
START_TEST(test_http_huge_answer)
{
	static const char *const heads[] = {
	    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: 52428800\r\n\r\n",
	    "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Length: 52428800\r\n\r\n",
	    "HTTP/1.1 400 Bad Request\r\nContent-Length: 52428800\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
	};
	static const char *const statuses[] = {
	    "(HTTP 200)", "(HTTP 503)", "(HTTP 400)", "(HTTP 200)"
	};
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"
	    "Connection: close\r\n\r\n{\"ok\":true}";
	struct nf_raw_step steps[5];
	struct nf_raw_server *srv;
	struct trec t;
	char url[128], err[512];
	int64_t ms;
	long rss0;
	void *ctx;
	size_t i;

	for (i = 0; i < 4; i++) {
		steps[i].action = NF_RAW_STREAM;
		steps[i].data = heads[i];
		steps[i].len = 0;
	}
	steps[4].action = NF_RAW_CLOSE;
	steps[4].data = ok;
	steps[4].len = 0;
	srv = nf_raw_start(steps, 5);
	ck_assert_ptr_nonnull(srv);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hooks/refunds",
	    nf_raw_port(srv));
	ctx = http_url(url, "20", NULL, NULL);
	trec_init(&t, "erp", 1, "r-1", 1);
	rss0 = peak_rss_kib();
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
		    RS_EXPORT_RETRY);
		reason_has(err, url, "answer cut off: its body is over "
		    "1048576 bytes", statuses[i], END);
		ck_assert_msg(ms < 5000, "answer %zu took %lld ms", i,
		    (long long)ms);
	}
	/* Nothing like the 4 x 50 MiB was held (ASan's own overhead
	 * aside). */
	ck_assert_msg(peak_rss_kib() - rss0 < 32 * 1024, "peak RSS grew "
	    "by %ld KiB", peak_rss_kib() - rss0);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_OK);
	ck_assert_uint_eq(nf_raw_connections(srv), 5);
	exporter_http_ops.close(ctx);
	nf_raw_stop(srv);
}
END_TEST

/*
 * Answers that never end, with the exporter's timeout at 1 s: a body
 * that trickles a byte each 100 ms, a header that does, a 200 whose
 * body stops after one byte and holds the connection: each is a RETRY
 * for the timeout, naming the target, after 1 s (not when the server
 * gives up, 30 s on).  A flood of header lines is cut off at the 64 KiB
 * cap, and one endless header line at libcurl's own limit: both RETRY,
 * at once.
 */
START_TEST(test_http_endless_answer)
{
	static const char hold[] = "HTTP/1.1 200 OK\r\n"
	    "Content-Length: 100\r\n\r\n{";
	static const char giant[] = "HTTP/1.1 200 OK\r\nX-Giant: ";
	const struct nf_raw_step holdstep = { NF_RAW_HOLD, hold, 0 };
	const struct nf_raw_step giantstep = { NF_RAW_STREAM, giant, 0 };
	const enum drip_mode slow[] = { DRIP_BODY, DRIP_HEADERS };
	struct nf_raw_server *srv;
	struct drip *dp;
	struct trec t;
	char url[128], err[512];
	int64_t ms;
	long rss0;
	void *ctx;
	size_t i;

	trec_init(&t, "erp", 1, "r-1", 1);
	for (i = 0; i < 2; i++) {
		dp = drip_start(slow[i]);
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook",
		    dp->port);
		ctx = http_url(url, "1", NULL, NULL);
		ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
		    RS_EXPORT_RETRY);
		reason_has(err, url, "timed out", END);
		ck_assert_msg(ms >= 900 && ms < 3000, "drip %zu: %lld ms", i,
		    (long long)ms);
		/* It was still sending when the client gave up. */
		ck_assert_int_ge(atomic_load(&dp->sent), 17 + 5);
		ck_assert_int_eq(atomic_load(&dp->conns), 1);
		exporter_http_ops.close(ctx);
		drip_stop(dp);
	}

	srv = nf_raw_start(&holdstep, 1);
	ck_assert_ptr_nonnull(srv);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook",
	    nf_raw_port(srv));
	ctx = http_url(url, "1", NULL, NULL);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, url, "timed out", END);
	ck_assert_msg(ms >= 900 && ms < 3000, "hold: %lld ms", (long long)ms);
	exporter_http_ops.close(ctx);
	nf_raw_stop(srv);

	/* Header floods, with a timeout that would let them run on. */
	rss0 = peak_rss_kib();
	dp = drip_start(DRIP_FLOOD);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", dp->port);
	ctx = http_url(url, "20", NULL, NULL);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, url, "answer cut off: its header is over 65536 bytes",
	    "(HTTP 200)", END);
	ck_assert_msg(ms < 5000, "flood: %lld ms", (long long)ms);
	ck_assert_int_lt(atomic_load(&dp->sent), 8 * MIB);
	exporter_http_ops.close(ctx);
	drip_stop(dp);

	srv = nf_raw_start(&giantstep, 1);
	ck_assert_ptr_nonnull(srv);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook",
	    nf_raw_port(srv));
	ctx = http_url(url, "20", NULL, NULL);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, url, "answer cut off", "header line", END);
	ck_assert_msg(ms < 5000, "giant header: %lld ms", (long long)ms);
	exporter_http_ops.close(ctx);
	nf_raw_stop(srv);
	ck_assert_msg(peak_rss_kib() - rss0 < 32 * 1024, "peak RSS grew "
	    "by %ld KiB", peak_rss_kib() - rss0);
}
END_TEST

/*
 * 3xx: never followed.  Each of 301, 302, 303, 307 and 308 points at a
 * second sink (the "thief"); each is PERMANENT with the status and the
 * target (without its user info) in the reason, and the thief never sees
 * a request: neither the body, nor the signature, nor the Basic
 * credentials that the target itself did get.  Driven as the engine
 * does, the redirected record becomes a dead letter and the next one is
 * delivered.
 */
START_TEST(test_http_redirect_not_followed)
{
	static const int codes[] = { 301, 302, 303, 307, 308 };
	struct tu_sink_step step;
	struct tu_sink_req *log;
	struct rs_export_kv kv[3];
	struct tu_sink *s, *thief;
	struct trec t, tt[2];
	struct drive dr;
	char url[160], shown[128], loc[128], err[512], code[16];
	char *dir, *path;
	int64_t ms;
	size_t i, n;
	void *ctx;

	s = sink_new(NULL);
	thief = sink_new(NULL);
	dir = secret_dir(&path);
	snprintf(url, sizeof(url), "http://erp-user:s3cret-pass@127.0.0.1:%d"
	    "/hooks/refunds?token=q-s3cret", tu_sink_port(s));
	snprintf(shown, sizeof(shown), "http://127.0.0.1:%d/hooks/refunds",
	    tu_sink_port(s));
	snprintf(loc, sizeof(loc), "Location: http://127.0.0.1:%d/steal",
	    tu_sink_port(thief));
	kv[0].key = "url";
	kv[0].value = url;
	kv[1].key = "timeout";
	kv[1].value = "5";
	kv[2].key = "secret_file";
	kv[2].value = path;
	ctx = open_ok(&exporter_http_ops, "erp", kv, 3);
	trec_init(&t, "erp", 1, "r-moved", 1);
	for (i = 0; i < 5; i++) {
		memset(&step, 0, sizeof(step));
		step.status = codes[i];
		step.body = "moved";
		step.header = loc;
		ck_assert(tu_sink_script(s, &step, 1));
		ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
		    RS_EXPORT_PERMANENT);
		snprintf(code, sizeof(code), "HTTP %d", codes[i]);
		reason_has(err, shown, code, "moved", END);
		ck_assert_msg(strstr(err, "s3cret") == NULL &&
		    strstr(err, "erp-user") == NULL, "%s", err);
		ck_assert_int_lt(ms, 3000);
	}
	/* Anything that went to the thief has had time to get there. */
	tu_sleep_ms(200);
	ck_assert_int_eq(tu_sink_count(thief, NULL, 0), 0);
	ck_assert_uint_eq(sink_check(s, SECRET), 5);
	log = tu_sink_log(s, &n);
	for (i = 0; i < n; i++) {
		/* base64("erp-user:s3cret-pass") */
		ck_assert_str_eq(log[i].authorization,
		    "Basic ZXJwLXVzZXI6czNjcmV0LXBhc3M=");
		ck_assert_str_eq(log[i].path, "/hooks/refunds");
		ck_assert_int_eq(log[i].status, codes[i]);
	}
	tu_sink_log_free(log, n);

	/* As the engine drives it: a dead letter, and the next one flows. */
	trec_init(&tt[0], "erp", 2, "r-moved", 2);
	trec_init(&tt[1], "erp", 3, "r-2", 1);
	step.status = 307;
	ck_assert(tu_sink_script(s, &step, 1));
	drive(&exporter_http_ops, ctx, tt, 2, &dr, 5);
	ck_assert_uint_eq(dr.ndead, 1);
	ck_assert_str_eq(dr.dead[0].key, "erp:r-moved:2");
	ck_assert_int_eq(dr.retries, 0);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-2:1"), 1);
	ck_assert_int_eq(tu_sink_posts(s, "erp:r-moved:2"), 0);
	ck_assert_int_eq(tu_sink_count(thief, NULL, 0), 0);
	exporter_http_ops.close(ctx);
	tu_sink_free(thief);
	tu_sink_free(s);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

/*
 * A target that never answers the SYN (netfault's blackhole): RETRY at
 * connect_timeout (1 s), not at the 10 s timeout, naming the target.
 */
START_TEST(test_http_connect_timeout)
{
	struct nf_blackhole *bh;
	struct trec t;
	char url[128], shown[64], err[512];
	int64_t ms;
	void *ctx;

	bh = nf_blackhole_start();
	ck_assert_msg(bh != NULL, "no blackhole on this machine");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", bh->port);
	snprintf(shown, sizeof(shown), "127.0.0.1:%d", bh->port);
	ctx = http_url(url, "10", "1", NULL);
	trec_init(&t, "erp", 1, "r-1", 1);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, shown, "Failed to connect", "Timeout", END);
	ck_assert_msg(ms >= 900 && ms < 4000, "%lld ms: %s", (long long)ms,
	    err);
	exporter_http_ops.close(ctx);
	nf_blackhole_stop(bh);
}
END_TEST

/* A host name that does not resolve: RETRY, the name in the reason. */
START_TEST(test_http_dns_failure)
{
	struct trec t;
	char err[512];
	int64_t ms;
	void *ctx;

	ck_assert_msg(nf_unresolvable_check(&ms), "this machine resolves "
	    NF_UNRESOLVABLE_HOST);
	ctx = http_url("http://" NF_UNRESOLVABLE_HOST ":8080/hook", "10",
	    NULL, NULL);
	trec_init(&t, "erp", 1, "r-1", 1);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, "http://" NF_UNRESOLVABLE_HOST ":8080/hook",
	    "resolve", END);
	ck_assert_msg(ms < 10000, "%lld ms", (long long)ms);
	exporter_http_ops.close(ctx);
}
END_TEST

/*
 * TLS failures, each a RETRY with the certificate problem and the target
 * in the reason, no request getting through, and quick: a plain HTTP
 * server behind an https URL; a self-signed certificate; one that
 * expired; one for another host name (the last two issued by the CA the
 * exporter trusts through ca_file).  The same CA's good certificate is
 * delivered to, so the set-up is not what fails; without ca_file that
 * one fails too (the system's CAs do not know it).
 */
START_TEST(test_http_tls_failures)
{
	static const struct {
		enum nf_cert	 kind;
		const char	*why;
	} bad[] = {
		{ NF_CERT_SELF_SIGNED, "self-signed certificate" },
		{ NF_CERT_EXPIRED, "certificate has expired" },
		{ NF_CERT_WRONG_HOST, "'127.0.0.1'" }
	};
	struct nf_tls_server *srv;
	struct tu_sink_stats st;
	struct tu_sink *plain;
	struct trec t;
	char url[128], err[512], *dir, *ca;
	int64_t ms;
	void *ctx;
	size_t i;

	dir = tu_tempdir();
	ca = nf_tls_ca_file(dir);
	ck_assert_ptr_nonnull(ca);
	trec_init(&t, "erp", 1, "r-1", 1);

	/* Plain HTTP behind https://. */
	plain = sink_new(NULL);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/hook",
	    tu_sink_port(plain));
	ctx = http_url(url, "5", NULL, ca);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, url, "SSL", END);
	ck_assert_msg(ms < 3000, "%lld ms", (long long)ms);
	tu_sink_stats(plain, &st);
	ck_assert_int_eq(st.requests, 0);
	exporter_http_ops.close(ctx);
	tu_sink_free(plain);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		srv = nf_tls_start(bad[i].kind, 200, "{\"ok\":true}");
		ck_assert_ptr_nonnull(srv);
		snprintf(url, sizeof(url), "https://127.0.0.1:%d/hook",
		    nf_tls_port(srv));
		ctx = http_url(url, "5", NULL, ca);
		ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
		    RS_EXPORT_RETRY);
		reason_has(err, url, bad[i].why, END);
		ck_assert_msg(ms < 3000, "%zu: %lld ms", i, (long long)ms);
		ck_assert_uint_ge(nf_tls_connections(srv), 1);
		ck_assert_uint_eq(nf_tls_requests(srv), 0);
		exporter_http_ops.close(ctx);
		nf_tls_stop(srv);
	}

	/* The good one: delivered with the CA, refused without it. */
	srv = nf_tls_start(NF_CERT_GOOD, 200, "{\"ok\":true}");
	ck_assert_ptr_nonnull(srv);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/hook",
	    nf_tls_port(srv));
	ctx = http_url(url, "5", NULL, ca);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_OK);
	ck_assert_uint_eq(nf_tls_requests(srv), 1);
	exporter_http_ops.close(ctx);
	ctx = http_url(url, "5", NULL, NULL);
	ck_assert_int_eq(deliver_once(ctx, &t, err, sizeof(err), &ms),
	    RS_EXPORT_RETRY);
	reason_has(err, url, "SSL certificate problem", END);
	ck_assert_uint_eq(nf_tls_requests(srv), 1);
	exporter_http_ops.close(ctx);
	nf_tls_stop(srv);
	tu_rmtree(dir);
	free(ca);
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

/*
 * Deliver t alone through fx's exec exporter: the result must be want
 * (and the record done only if RS_EXPORT_OK), and the error must hold
 * says (if not NULL).
 */
static void
exec_one(const struct exec_fx *fx, const struct trec *t, int want,
    const char *says)
{
	char err[8192] = "";
	size_t done = 99;
	int rc;

	rc = exporter_exec_ops.deliver(fx->ctx, &t->r, 1, &done, err,
	    sizeof(err));
	ck_assert_msg(rc == want, "seq %lld: result %d, want %d: %.300s",
	    (long long)t->r.seq, rc, want, err);
	ck_assert_uint_eq(done, want == RS_EXPORT_OK ? 1 : 0);
	if (says != NULL)
		ck_assert_msg(strstr(err, says) != NULL, "seq %lld: \"%.300s\" "
		    "does not say \"%s\"", (long long)t->r.seq, err, says);
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
	struct exec_fx fx;
	struct trec t;

	exec_setup(&fx, CHILD_SH, "5");
	trec_init(&t, "books", 1, "r-garbage", 1);
	exec_one(&fx, &t, RS_EXPORT_RETRY, "bad acknowledgement \"okay\"");
	exec_teardown(&fx);
}
END_TEST

/*
 * A second answer to one record is out of step: it must not be taken as
 * the answer to the next record, which the command has not even read
 * (here it would fail that record, so taking the stale "ok" loses it).
 */
START_TEST(test_exec_extra_answer)
{
	static const char script[] =
	    "echo start >> \"$1/starts\"\n"
	    "while IFS= read -r line; do\n"
	    "  if [ ! -e \"$1/twice\" ]; then\n"
	    "    : > \"$1/twice\"; printf 'ok\\nok\\n'\n"
	    "  else\n"
	    "    echo \"$line\" >> \"$1/lines\"; echo 'fail nope'\n"
	    "  fi\n"
	    "done\n";
	struct exec_fx fx;
	struct trec t[2];

	exec_setup(&fx, script, "5");
	trec_init(&t[0], "books", 1, "r-1", 1);
	trec_init(&t[1], "books", 2, "r-2", 1);
	exec_one(&fx, &t[0], RS_EXPORT_OK, NULL);
	tu_sleep_ms(300);
	exec_one(&fx, &t[1], RS_EXPORT_RETRY, "record 2: the command wrote "
	    "\"ok\" before it was sent the record");
	/* A new command gets it, and its answer counts. */
	exec_one(&fx, &t[1], RS_EXPORT_PERMANENT, "record 2: fail: nope");
	ck_assert_int_eq(file_lines(fx.dir, "starts"), 2);
	ck_assert_int_eq(lines_with_key(fx.dir, "books:r-2:1"), 1);
	exec_teardown(&fx);
}
END_TEST

/*
 * An answer line may be 4096 bytes long (docs/exporters.md), with or
 * without a \r before its \n; one byte more is out of step.  Here
 * "fail " and a reason fill the line to exactly the limit, then past it.
 */
START_TEST(test_exec_answer_limit)
{
	static const char script[] =
	    "pad=$(head -c \"$2\" /dev/zero | tr '\\0' x)\n"
	    "while IFS= read -r line; do\n"
	    "  printf 'fail %s\\r\\n' \"$pad\"\n"
	    "done\n";
	static const struct {
		const char	*pad;	/* bytes after "fail " */
		int		 want;
	} cases[] = {
		{ "4091", RS_EXPORT_PERMANENT },	/* 4096: the limit */
		{ "4092", RS_EXPORT_RETRY },		/* 4097 */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *sc = xasprintf("set -- \"$1\" %s\n%s", cases[i].pad,
		    script);
		struct exec_fx fx;
		struct trec t;

		exec_setup(&fx, sc, "5");
		trec_init(&t, "books", 1, "r-1", 1);
		exec_one(&fx, &t, cases[i].want,
		    cases[i].want == RS_EXPORT_RETRY ? "acknowledgement line "
		    "too long" : "record 1: fail: xxx");
		exec_teardown(&fx);
		free(sc);
	}
}
END_TEST

/*
 * The command gets stdin, stdout and stderr and nothing else of ours,
 * also not a descriptor that is not close-on-exec (libcurl's sockets
 * are not): here a pipe, which the child must not hold.
 */
START_TEST(test_exec_no_leaked_fds)
{
	static const char script[] =
	    "ls -l /proc/$$/fd/ > \"$1/fds\"\n"
	    "while IFS= read -r line; do echo ok; done\n";
	struct exec_fx fx;
	struct trec t;
	struct drive dr;
	struct stat sb;
	char *fds, *mine;
	int p[2];

	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(fstat(p[1], &sb), 0);
	mine = xasprintf("pipe:[%llu]", (unsigned long long)sb.st_ino);
	exec_setup(&fx, script, "5");
	trec_init(&t, "books", 1, "r-1", 1);
	drive(&exporter_exec_ops, fx.ctx, &t, 1, &dr, 1);
	fds = file_text(fx.dir, "fds");
	ck_assert_msg(strstr(fds, " 0 -> ") != NULL, "%s", fds);
	ck_assert_msg(strstr(fds, mine) == NULL, "the child holds our "
	    "%s:\n%s", mine, fds);
	free(fds);
	free(mine);
	close(p[0]);
	close(p[1]);
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
/*
 * A dead letter queued again comes alone, after later records.  The
 * example's file is in seq order: it skips one it holds, and refuses one
 * it lacks (it stays a dead letter) instead of counting it done without
 * writing it.
 */
START_TEST(test_plugin_example_requeued)
{
	const struct rs_exporter_ops *ops;
	struct rs_export_record r;
	struct rs_export_kv kv[2];
	struct trec t[4];
	struct drive dr;
	char *dir, *file, err[512];
	size_t done;
	void *h, *ctx;
	int i;

	ops = plugin_load("examples/plugin/rs-example-exporter.so", &h);
	dir = tu_tempdir();
	file = xasprintf("%s/audit.tsv", dir);
	kv[0].key = "type";
	kv[0].value = "plugin";
	kv[1].key = "file";
	kv[1].value = file;
	for (i = 0; i < 4; i++)
		trec_init(&t[i], "audit", i + 1, "r-1", i + 1);
	ctx = open_ok(ops, "audit", kv, 2);
	/* Seq 2 became a dead letter; 1, 3 and 4 went out. */
	drive(ops, ctx, &t[0], 1, &dr, 1);
	drive(ops, ctx, &t[2], 2, &dr, 1);
	ck_assert_int_eq(file_lines(dir, "audit.tsv"), 3);
	/* retry-dead: seq 2 alone.  The file lacks it. */
	r = t[1].r;
	ck_assert_int_eq(ops->deliver(ctx, &r, 1, &done, err, sizeof(err)),
	    RS_EXPORT_PERMANENT);
	ck_assert_uint_eq(done, 0);
	ck_assert_msg(strstr(err, "cannot write seq 2 out of order") != NULL,
	    "%s", err);
	/* One it holds (seq 3, not its last line) is done, not written. */
	r = t[2].r;
	ck_assert_int_eq(ops->deliver(ctx, &r, 1, &done, err, sizeof(err)),
	    RS_EXPORT_OK);
	ck_assert_uint_eq(done, 1);
	ck_assert_int_eq(file_lines(dir, "audit.tsv"), 3);
	ops->close(ctx);
	free(file);
	tu_rmtree(dir);
	free(dir);
	dlclose(h);
}
END_TEST

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
	TCase *tn = tcase_create("netfault");
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

	tcase_set_timeout(tn, 60);
	tcase_add_test(tn, test_http_reset_mid_answer);
	tcase_add_test(tn, test_http_huge_answer);
	tcase_add_test(tn, test_http_endless_answer);
	tcase_add_test(tn, test_http_redirect_not_followed);
	tcase_add_test(tn, test_http_connect_timeout);
	tcase_add_test(tn, test_http_dns_failure);
	tcase_add_test(tn, test_http_tls_failures);
	suite_add_tcase(s, tn);

	tcase_set_timeout(te, 60);
	tcase_add_test(te, test_exec_ops);
	tcase_add_test(te, test_exec_ack);
	tcase_add_test(te, test_exec_retry_fail);
	tcase_add_test(te, test_exec_dies);
	tcase_add_test(te, test_exec_idle_death);
	tcase_add_test(te, test_exec_timeout);
	tcase_add_test(te, test_exec_bad_ack);
	tcase_add_test(te, test_exec_extra_answer);
	tcase_add_test(te, test_exec_answer_limit);
	tcase_add_test(te, test_exec_no_leaked_fds);
	tcase_add_test(te, test_exec_bad_ack_reason);
	tcase_add_test(te, test_exec_not_found);
	tcase_add_test(te, test_exec_close_kills);
	tcase_add_test(te, test_exec_sigpipe);
	suite_add_tcase(s, te);

	tcase_add_test(tp, test_plugin_bad_abi);
	tcase_add_test(tp, test_plugin_example);
	tcase_add_test(tp, test_plugin_example_requeued);
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
	/* Every target here is local: no proxy may stand in between. */
	unsetenv("http_proxy");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	sr = srunner_create(http_exec_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
