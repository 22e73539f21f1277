/*
 * check_refund_cli.c: `refundsync refund create` (the real binary)
 * against the real Wix sandbox (tests/sandbox/wix-sandbox) on loopback.
 *
 * Each test starts its own sandbox (port 0) in its own temporary
 * directory and makes its own charges through the sandbox's control API,
 * then checks three things: what the command printed and its exit
 * status, what the sandbox holds afterwards (GET /_sandbox/charges: how
 * many refunds, how much refunded), and what the store recorded.
 *
 * The concurrent refund lands between the command's Query Refunds and
 * its Create Refund: a "stall" fault holds the query's answer (computed
 * already) while the test adds a SUCCEEDED refund to the charge, so the
 * command sends a stale previouslyRefundedAmount and gets
 * PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH.  The interactive variant runs the
 * command on a pseudo-terminal (forkpty) and answers its question.
 */
#include <sys/prctl.h>
#include <sys/types.h>

#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "core/refundcmd.h"
#include "util/clock.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define APP_ID		TU_SANDBOX_APP_ID
#define APP_SECRET	TU_SANDBOX_APP_SECRET
#define INST		"shop"
#define CLI_MS		60000
#define PATH_CREATE	"/payments/refunds/v1/refunds"

/* ---- the sandbox --------------------------------------------------------- */

/* POST json to a control path; asserts 200. */
static void
sb_post(const struct tu_sandbox *sb, const char *path, const char *json)
{
	ck_assert_msg(tu_sandbox_control(sb, path, json), "%s %s refused",
	    path, json);
}

/* Make a charge: total in currency (both as the sandbox takes them),
 * plus extra members (may be ""). */
static void
sb_charge(const struct tu_sandbox *sb, const char *id, const char *total,
    const char *currency, const char *extra)
{
	char *json;

	json = xasprintf("{\"instance\":\"" INST "\",\"id\":\"%s\","
	    "\"total\":\"%s\",\"currency\":\"%s\"%s}", id, total, currency,
	    extra);
	sb_post(sb, "/_sandbox/charges", json);
	free(json);
}

/* The sandbox's view of charge id.  Caller deletes. */
static cJSON *
sb_charge_get(const struct tu_sandbox *sb, const char *id)
{
	struct tu_http_resp resp;
	char *path;
	cJSON *o;

	memset(&resp, 0, sizeof(resp));
	path = xasprintf("/_sandbox/charges?instance=" INST "&id=%s", id);
	ck_assert_int_eq(tu_sandbox_request(sb, "GET", path, NULL, NULL,
	    &resp), 200);
	o = cJSON_Parse(resp.body);
	ck_assert_ptr_nonnull(o);
	tu_http_resp_cleanup(&resp);
	free(path);
	return o;
}

/* How many refunds charge id has at the sandbox, and (refunded may be
 * NULL) the SUCCEEDED total as its text, into refunded[32]. */
static int
sb_refunds(const struct tu_sandbox *sb, const char *id, char *refunded)
{
	cJSON *o = sb_charge_get(sb, id);
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "refunds");
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "refunded");
	int n;

	ck_assert(cJSON_IsArray(a));
	ck_assert(cJSON_IsString(r));
	n = cJSON_GetArraySize(a);
	if (refunded != NULL)
		snprintf(refunded, 32, "%s", r->valuestring);
	cJSON_Delete(o);
	return n;
}

/* Create Refund requests the sandbox has seen (any answer). */
static int
sb_creates(const struct tu_sandbox *sb)
{
	struct tu_http_resp resp;
	char *line, *nl;
	cJSON *o;
	const cJSON *p, *m;
	int n = 0;

	memset(&resp, 0, sizeof(resp));
	ck_assert_int_eq(tu_sandbox_request(sb, "GET", "/_sandbox/log", NULL,
	    NULL, &resp), 200);
	for (line = resp.body; line != NULL && *line != '\0'; line = nl) {
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl++ = '\0';
		if ((o = cJSON_Parse(line)) == NULL)
			continue;
		p = cJSON_GetObjectItemCaseSensitive(o, "path");
		m = cJSON_GetObjectItemCaseSensitive(o, "method");
		if (cJSON_IsString(p) && cJSON_IsString(m) &&
		    strcmp(p->valuestring, PATH_CREATE) == 0 &&
		    strcmp(m->valuestring, "POST") == 0)
			n++;
		cJSON_Delete(o);
	}
	tu_http_resp_cleanup(&resp);
	return n;
}

/* Has a request got the fault named fault? */
static bool
sb_faulted(const struct tu_sandbox *sb, const char *fault)
{
	struct tu_http_resp resp;
	char *needle;
	bool yes;

	memset(&resp, 0, sizeof(resp));
	if (tu_sandbox_request(sb, "GET", "/_sandbox/log", NULL, NULL,
	    &resp) != 200) {
		tu_http_resp_cleanup(&resp);
		return false;
	}
	needle = xasprintf("\"fault\":\"%s\"", fault);
	yes = resp.body != NULL && strstr(resp.body, needle) != NULL;
	free(needle);
	tu_http_resp_cleanup(&resp);
	return yes;
}

/* ---- one test's world ---------------------------------------------- */

struct env {
	char		*dir;
	char		*conf;
	char		*db;
	struct tu_sandbox sb;
	int		 runs;
};

static void
env_open(struct env *e)
{
	char *keys, *text;

	memset(e, 0, sizeof(*e));
	e->dir = tu_tempdir();
	e->conf = xasprintf("%s/refundsync.conf", e->dir);
	e->db = xasprintf("%s/refundsync.db", e->dir);
	ck_assert_msg(tu_sandbox_start(&e->sb, e->dir, 4, INST, NULL),
	    "the sandbox did not start");
	keys = tu_sandbox_wix_keys(&e->sb, e->dir);
	ck_assert_ptr_nonnull(keys);
	text = xasprintf("[store]\npath = %s\n[wix]\npublic_key_file = "
	    "%s/unused.pem\n%s[backfill]\nrequests_per_minute = 100000\n",
	    e->db, e->dir, keys);
	ck_assert(tu_write_file(e->conf, text, false));
	free(text);
	free(keys);
}

static void
env_close(struct env *e)
{
	tu_sandbox_stop(&e->sb);
	tu_rmtree(e->dir);
	free(e->dir);
	free(e->conf);
	free(e->db);
}

/* argv for `refundsync refund -c CONF create --instance INST` + args
 * (NULL-terminated).  Caller frees the array (strings borrowed but
 * argv[0], which is the caller's too). */
static char **
cli_argv(struct env *e, const char *const *args)
{
	char **argv = xcalloc(64, sizeof(*argv));
	int n = 0;

	argv[n++] = xstrdup(tu_binary());
	argv[n++] = (char *)"refund";
	argv[n++] = (char *)"-c";
	argv[n++] = e->conf;
	argv[n++] = (char *)"create";
	argv[n++] = (char *)"--instance";
	argv[n++] = (char *)INST;
	for (; *args != NULL && n < 62; args++)
		argv[n++] = (char *)(uintptr_t)*args;
	argv[n] = NULL;
	return argv;
}

/* Start the command with stdin /dev/null; *out_path, *err_path are its
 * output files (caller frees).  The pid. */
static pid_t
cli_start(struct env *e, const char *const *args, char **out_path,
    char **err_path)
{
	char **argv = cli_argv(e, args);
	pid_t pid;

	e->runs++;
	*out_path = xasprintf("%s/run%d.out", e->dir, e->runs);
	*err_path = xasprintf("%s/run%d.err", e->dir, e->runs);
	pid = tu_spawn(argv, *out_path, *err_path);
	ck_assert_int_gt(pid, 0);
	free(argv[0]);
	free(argv);
	return pid;
}

/* Read and free the output files of a run. */
static void
cli_collect(char *out_path, char *err_path, char **out, char **err)
{
	*out = tu_read_file(out_path, NULL);
	*err = tu_read_file(err_path, NULL);
	if (*out == NULL)
		*out = xstrdup("");
	if (*err == NULL)
		*err = xstrdup("");
	free(out_path);
	free(err_path);
}

/* Run the command to its end; its exit status, *out and *err (caller
 * frees). */
static int
cli_run(struct env *e, const char *const *args, char **out, char **err)
{
	char *op, *ep;
	pid_t pid = cli_start(e, args, &op, &ep);
	int rc = tu_wait_exit(pid, CLI_MS);

	cli_collect(op, ep, out, err);
	/* Nothing secret is ever printed or logged. */
	ck_assert_ptr_null(strstr(*out, APP_SECRET));
	ck_assert_ptr_null(strstr(*err, APP_SECRET));
	return rc;
}

#define ARGS(...)	((const char *const[]){ __VA_ARGS__, NULL })

/* The --json document of a run.  Caller deletes. */
static cJSON *
parse_doc(const char *out)
{
	cJSON *o = cJSON_Parse(out);

	ck_assert_msg(o != NULL, "not one JSON document: %s", out);
	return o;
}

static const char *
doc_str(const cJSON *o, const char *a, const char *b)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, a);

	if (b != NULL)
		m = cJSON_GetObjectItemCaseSensitive(m, b);
	return cJSON_IsString(m) ? m->valuestring : "";
}

/* The first cell of sql on the store; "" if none.  Caller frees. */
static char *
db(struct env *e, const char *sql)
{
	char *v = tu_sql(e->db, sql);

	return v != NULL ? v : xstrdup("");
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(test_full_refund_twice)
{
	struct env e;
	char *out, *err, *v, *p, *nl, *rid, refunded[32];
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-full", "100.00", "USD", "");
	rc = cli_run(&e, ARGS("--charge", "ch-full", "--reason", "damaged"),
	    &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "of 100.00 USD SUCCEEDED"));
	ck_assert_ptr_nonnull(strstr(out, "no refunds yet"));
	/* The log says who asked and what Wix answered, with the
	 * x-wix-request-id of the answer (SPEC, README, refundsync(8)). */
	ck_assert_ptr_nonnull(strstr(err, "refund create: asked by "));
	p = strstr(err, "Wix answered HTTP 200");
	ck_assert_ptr_nonnull(p);
	nl = strchr(p, '\n');
	rid = strstr(p, "x-wix-request-id ");
	ck_assert_msg(rid != NULL && (nl == NULL || rid < nl),
	    "no x-wix-request-id in the answer's log line:\n%s", err);
	ck_assert_msg(strncmp(rid + strlen("x-wix-request-id "), "none",
	    4) != 0, "the sandbox sent an x-wix-request-id:\n%s", err);
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-full", refunded), 1);
	ck_assert_str_eq(refunded, "100.00");
	/* Stored at once, by the CLI. */
	v = db(&e, "SELECT source || ' ' || status || ' ' || amount || ' ' || "
	    "amount_minor || ' ' || instance_id FROM refunds WHERE "
	    "charge_id = 'ch-full'");
	ck_assert_str_eq(v, "cli SUCCEEDED 100.00 10000 " INST);
	free(v);

	/* A second full refund is rejected by Wix, and the message says
	 * how much was refunded already (exact, with the currency). */
	rc = cli_run(&e, ARGS("--charge", "ch-full"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_msg(strstr(err, "\nrefundsync: refund create: Wix refused "
	    "the refund: CHARGE_REFUNDED: The charge is already fully "
	    "refunded; refunded so far: 100.00 USD in 1 SUCCEEDED refund\n") !=
	    NULL, "%s", err);
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-full", NULL), 1);
	v = db(&e, "SELECT count(*) FROM refunds WHERE charge_id = "
	    "'ch-full'");
	ck_assert_str_eq(v, "1");
	free(v);
	env_close(&e);
}
END_TEST

START_TEST(test_partials_exact_then_over)
{
	struct env e;
	char *out, *err, *v, refunded[32];
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-part", "100.00", "USD", "");
	rc = cli_run(&e, ARGS("--charge", "ch-part", "--amount", "30",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "Will refund 30.00 USD now, on top "
	    "of 0.00 USD refunded so far (previouslyRefundedAmount 0.00)"));
	free(out);
	free(err);
	/* One cent more than what is left. */
	rc = cli_run(&e, ARGS("--charge", "ch-part", "--amount", "70.01",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "previouslyRefundedAmount 30.00"));
	ck_assert_ptr_nonnull(strstr(err, "REFUND_AMOUNT_OUT_OF_BOUNDS: The "
	    "amount is more than what is left to refund"));
	free(out);
	free(err);
	/* Exactly what is left. */
	rc = cli_run(&e, ARGS("--charge", "ch-part", "--amount", "70.00",
	    "--currency", "usd", "--json"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	{
		cJSON *d = parse_doc(out);

		ck_assert_str_eq(doc_str(d, "outcome", NULL), "succeeded");
		ck_assert_str_eq(doc_str(d, "previouslyRefundedAmount", NULL),
		    "30.00");
		ck_assert_str_eq(doc_str(d, "refund", "amount"), "70.00");
		ck_assert_str_eq(doc_str(d, "refund", "status"), "SUCCEEDED");
		ck_assert_str_eq(doc_str(d, "history", "succeeded"), "30.00");
		cJSON_Delete(d);
	}
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-part", refunded), 2);
	ck_assert_str_eq(refunded, "100.00");
	/* Nothing left: one cent more is refused. */
	rc = cli_run(&e, ARGS("--charge", "ch-part", "--amount", "0.01",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "refunded so far (SUCCEEDED): "
	    "100.00 USD in 2 refunds"));
	ck_assert_msg(strstr(err, "Wix refused the refund: CHARGE_REFUNDED: "
	    "The charge is already fully refunded; refunded so far: 100.00 "
	    "USD in 2 SUCCEEDED refunds\n") != NULL, "%s", err);
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-part", refunded), 2);
	ck_assert_str_eq(refunded, "100.00");
	v = db(&e, "SELECT group_concat(amount_minor, ',') FROM (SELECT "
	    "amount_minor FROM refunds WHERE charge_id = 'ch-part' AND "
	    "source = 'cli' ORDER BY amount_minor)");
	ck_assert_str_eq(v, "3000,7000");
	free(v);
	env_close(&e);
}
END_TEST

/*
 * The doubled request: the first Create Refund takes effect but its
 * answer is cut off; the client retries the same body, which gets the
 * mismatch; exactly one refund exists.
 */
START_TEST(test_doubled_request)
{
	struct env e;
	char *out, *err, refunded[32];
	cJSON *d;
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-dbl", "50.00", "USD", "");
	sb_post(&e.sb, "/_sandbox/faults", "{\"fault\":\"truncate\","
	    "\"endpoint\":\"create\",\"count\":1}");
	rc = cli_run(&e, ARGS("--charge", "ch-dbl", "--amount", "10",
	    "--currency", "USD", "--json"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_int_eq(sb_creates(&e.sb), 2);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-dbl", refunded), 1);
	ck_assert_str_eq(refunded, "10.00");
	d = parse_doc(out);
	ck_assert_str_eq(doc_str(d, "error", "code"),
	    "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH");
	ck_assert_str_eq(doc_str(d, "previouslyRefundedAmount", NULL), "0.00");
	/* The fresh totals, with the refund of the first attempt. */
	ck_assert_str_eq(doc_str(d, "history", "succeeded"), "10.00");
	ck_assert_str_eq(doc_str(d, "outcome", NULL), "refused");
	cJSON_Delete(d);
	ck_assert_ptr_nonnull(strstr(err, "sent more than once"));
	ck_assert_ptr_nonnull(strstr(err, "is new since this request began"));
	free(out);
	free(err);

	/* A 503 is retried with the same body and the refund lands once. */
	sb_charge(&e.sb, "ch-503", "50.00", "USD", "");
	sb_post(&e.sb, "/_sandbox/faults", "{\"fault\":\"503\","
	    "\"endpoint\":\"create\",\"count\":1}");
	rc = cli_run(&e, ARGS("--charge", "ch-503", "--amount", "12.50",
	    "--currency", "USD", "--yes"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_int_eq(sb_creates(&e.sb), 4);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-503", refunded), 1);
	ck_assert_str_eq(refunded, "12.50");
	free(out);
	free(err);
	env_close(&e);
}
END_TEST

/* ch-conc, and the next Query Refunds answer held for 1.5 s. */
static void
concurrent_setup(struct env *e)
{
	sb_charge(&e->sb, "ch-conc", "100.00", "USD", "");
	sb_post(&e->sb, "/_sandbox/faults", "{\"fault\":\"stall\","
	    "\"endpoint\":\"query\",\"count\":1,\"ms\":1500}");
}

/* Once that answer is held (computed already), a 5.00 refund lands. */
static void
concurrent_land(struct env *e)
{
	int64_t end = clock_mono_ms() + 20000;

	while (!sb_faulted(&e->sb, "stall") && clock_mono_ms() < end)
		tu_sleep_ms(20);
	ck_assert_msg(sb_faulted(&e->sb, "stall"), "no query was held");
	sb_post(&e->sb, "/_sandbox/refunds", "{\"instance\":\"" INST "\","
	    "\"chargeId\":\"ch-conc\",\"amount\":\"5.00\",\"status\":"
	    "\"SUCCEEDED\"}");
}

START_TEST(test_concurrent_yes)
{
	struct env e;
	char *op, *ep, *out, *err, refunded[32];
	cJSON *d;
	pid_t pid;
	int rc;

	env_open(&e);
	concurrent_setup(&e);
	pid = cli_start(&e, ARGS("--charge", "ch-conc", "--amount", "20",
	    "--currency", "USD", "--yes", "--json"), &op, &ep);
	concurrent_land(&e);
	rc = tu_wait_exit(pid, CLI_MS);
	cli_collect(op, ep, &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	d = parse_doc(out);
	ck_assert_str_eq(doc_str(d, "error", "code"),
	    "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH");
	ck_assert_str_eq(doc_str(d, "previouslyRefundedAmount", NULL), "0.00");
	ck_assert_str_eq(doc_str(d, "history", "succeeded"), "5.00");
	cJSON_Delete(d);
	ck_assert_ptr_nonnull(strstr(err, "another refund of this charge "
	    "landed"));
	ck_assert_ptr_nonnull(strstr(err, "refunded so far now: 5.00 USD"));
	/* --yes never tries again on its own. */
	ck_assert_int_eq(sb_creates(&e.sb), 1);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-conc", refunded), 1);
	ck_assert_str_eq(refunded, "5.00");
	free(out);
	free(err);
	env_close(&e);
}
END_TEST

/*
 * Run the command on a pseudo-terminal; answer answer (e.g. "y\n") to
 * the first "[y/N]" question.  Returns the exit status; *text gets
 * everything it wrote (caller frees).
 */
static int
pty_run(struct env *e, const char *const *args, const char *answer,
    char **text, void (*meanwhile)(struct env *))
{
	char **argv = cli_argv(e, args), buf[4096];
	size_t len = 0, cap = 65536;
	int64_t end = clock_mono_ms() + CLI_MS;
	struct pollfd pfd;
	bool answered = false;
	ssize_t n;
	pid_t pid;
	int fd, rc;

	*text = xcalloc(1, cap);
	pid = forkpty(&fd, NULL, NULL, NULL);
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], argv);
		_exit(127);
	}
	free(argv[0]);
	free(argv);
	if (meanwhile != NULL)
		meanwhile(e);
	while (clock_mono_ms() < end) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;		/* EIO once the child has gone */
		if (len + (size_t)n + 1 > cap)
			n = (ssize_t)(cap - len - 1);
		memcpy(*text + len, buf, (size_t)n);
		len += (size_t)n;
		(*text)[len] = '\0';
		if (!answered && strstr(*text, "[y/N]") != NULL) {
			answered = true;
			ck_assert_int_eq(write(fd, answer, strlen(answer)),
			    (ssize_t)strlen(answer));
		}
	}
	rc = tu_wait_exit(pid, 5000);
	close(fd);
	ck_assert_msg(answered, "no question was asked:\n%s", *text);
	return rc;
}

START_TEST(test_concurrent_interactive)
{
	struct env e;
	char *text, refunded[32];
	int rc;

	env_open(&e);
	concurrent_setup(&e);
	rc = pty_run(&e, ARGS("--charge", "ch-conc", "--amount", "20",
	    "--currency", "USD"), "y\n", &text, concurrent_land);
	ck_assert_msg(rc == 0, "rc %d\n%s", rc, text);
	ck_assert_ptr_nonnull(strstr(text,
	    "PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH"));
	ck_assert_ptr_nonnull(strstr(text, "Up-to-date refund history"));
	ck_assert_ptr_nonnull(strstr(text, "Refund 20.00 USD now, on top of "
	    "5.00 USD refunded so far? [y/N]"));
	ck_assert_ptr_nonnull(strstr(text, "previouslyRefundedAmount 5.00"));
	ck_assert_ptr_nonnull(strstr(text, "of 20.00 USD SUCCEEDED"));
	ck_assert_int_eq(sb_creates(&e.sb), 2);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-conc", refunded), 2);
	ck_assert_str_eq(refunded, "25.00");
	free(text);

	/* Declining sends nothing more. */
	sb_charge(&e.sb, "ch-conc2", "100.00", "USD", "");
	sb_post(&e.sb, "/_sandbox/refunds", "{\"instance\":\"" INST "\","
	    "\"chargeId\":\"ch-conc2\",\"amount\":\"1.00\"}");
	sb_post(&e.sb, "/_sandbox/faults", "{\"fault\":\"truncate\","
	    "\"endpoint\":\"create\",\"count\":1}");
	rc = pty_run(&e, ARGS("--charge", "ch-conc2", "--amount", "3",
	    "--currency", "USD"), "n\n", &text, NULL);
	ck_assert_msg(rc == 3, "rc %d\n%s", rc, text);
	ck_assert_ptr_nonnull(strstr(text, "nothing more was sent"));
	ck_assert_int_eq(sb_creates(&e.sb), 4);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-conc2", refunded), 2);
	ck_assert_str_eq(refunded, "4.00");
	free(text);
	env_close(&e);
}
END_TEST

START_TEST(test_pending_in_progress)
{
	struct env e;
	char *out, *err, *v;
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-pend", "80.00", "USD", ",\"pending\":true");
	rc = cli_run(&e, ARGS("--charge", "ch-pend", "--amount", "10",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "is PENDING: the payment provider "
	    "is processing it.  The Refund Updated webhook will complete it "
	    "in the store."));
	free(out);
	free(err);
	v = db(&e, "SELECT status || ' ' || source FROM refunds WHERE "
	    "charge_id = 'ch-pend'");
	ck_assert_str_eq(v, "PENDING cli");
	free(v);
	/* A second one while it is pending. */
	rc = cli_run(&e, ARGS("--charge", "ch-pend", "--amount", "5",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(err, "CHARGE_REFUND_IN_PROGRESS"));
	ck_assert_ptr_nonnull(strstr(err, "is still PENDING"));
	ck_assert_ptr_nonnull(strstr(err, "still PENDING: refund rf-" INST));
	ck_assert_ptr_nonnull(strstr(err, "of 10.00 USD"));
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-pend", NULL), 1);

	/* The first attempt made the pending refund, its answer was lost,
	 * and the retry is refused: that refund is most likely this
	 * request's own, and trying again would refund twice. */
	sb_charge(&e.sb, "ch-pend2", "80.00", "USD", ",\"pending\":true");
	sb_post(&e.sb, "/_sandbox/faults", "{\"fault\":\"truncate\","
	    "\"endpoint\":\"create\",\"count\":1}");
	rc = cli_run(&e, ARGS("--charge", "ch-pend2", "--amount", "10",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(err, "CHARGE_REFUND_IN_PROGRESS"));
	ck_assert_ptr_nonnull(strstr(err, "sent more than once"));
	ck_assert_msg(strstr(err, "most likely it is this request's own") !=
	    NULL, "%s", err);
	ck_assert_msg(strstr(err, "then try again") == NULL, "%s", err);
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-pend2", NULL), 1);
	env_close(&e);
}
END_TEST

START_TEST(test_jpy_kwd)
{
	struct env e;
	char *out, *err, *v, refunded[32];
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-jpy", "10000", "JPY", "");
	sb_charge(&e.sb, "ch-kwd", "10.000", "KWD", "");
	rc = cli_run(&e, ARGS("--charge", "ch-jpy", "--amount", "1500",
	    "--currency", "JPY"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "(previouslyRefundedAmount 0)"));
	free(out);
	free(err);
	rc = cli_run(&e, ARGS("--charge", "ch-jpy", "--amount", "8500",
	    "--currency", "JPY"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "(previouslyRefundedAmount 1500)"));
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-jpy", refunded), 2);
	ck_assert_str_eq(refunded, "10000");
	rc = cli_run(&e, ARGS("--charge", "ch-kwd", "--amount", "1.234",
	    "--currency", "KWD"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	free(out);
	free(err);
	rc = cli_run(&e, ARGS("--charge", "ch-kwd", "--amount", "8.766",
	    "--currency", "KWD"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(out, "(previouslyRefundedAmount 1.234)"));
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-kwd", refunded), 2);
	ck_assert_str_eq(refunded, "10.000");
	/* Fully refunded: a full refund is refused, and what was refunded
	 * is shown with the currency's three decimals. */
	rc = cli_run(&e, ARGS("--charge", "ch-kwd"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_msg(strstr(err, "CHARGE_REFUNDED: The charge is already "
	    "fully refunded; refunded so far: 10.000 KWD in 2 SUCCEEDED "
	    "refunds\n") != NULL, "%s", err);
	free(out);
	free(err);
	v = db(&e, "SELECT group_concat(currency || amount_minor, ',') FROM "
	    "(SELECT currency, amount_minor FROM refunds WHERE source = 'cli' "
	    "ORDER BY currency, amount_minor)");
	ck_assert_str_eq(v, "JPY1500,JPY8500,KWD1234,KWD8766");
	free(v);
	env_close(&e);
}
END_TEST

/* Input that is refused before anything is sent. */
START_TEST(test_input_checks)
{
	static const struct {
		const char	*amount;
		const char	*currency;
		const char	*says;
	} bad[] = {
		{ "12,50", "USD", "not a decimal amount" },
		{ "abc", "USD", "not a decimal amount" },
		{ "1e3", "USD", "not a decimal amount" },
		{ "0", "USD", "must be more than zero" },
		{ "0.00", "USD", "must be more than zero" },
		{ "-5", "USD", "must be more than zero" },
		{ "1.005", "USD", "USD has 2 decimals, not 3" },
		{ "1.00000001", "USD", "USD has 2 decimals, not 8" },
		{ "0.000", "KWD", "must be more than zero" },
		{ "1.5", "JPY", "JPY has no decimals" },
		{ "1.0001", "KWD", "KWD has 3 decimals, not 4" },
		{ "5", "XYZ", "not an ISO 4217 currency code" },
		/* No minor unit: no exact amount to send. */
		{ "5", "XAU", "or one without a minor unit (such as XAU)" },
		{ "5", "US", "not a three-letter ISO 4217 code" },
		{ "5", NULL, "--amount and --currency go together" },
	};
	struct env e;
	char *out, *err;
	size_t i;
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-in", "100.00", "USD", "");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (bad[i].currency != NULL)
			rc = cli_run(&e, ARGS("--charge", "ch-in", "--amount",
			    bad[i].amount, "--currency", bad[i].currency),
			    &out, &err);
		else
			rc = cli_run(&e, ARGS("--charge", "ch-in", "--amount",
			    bad[i].amount), &out, &err);
		ck_assert_msg(rc == 2, "%s %s: rc %d\n%s", bad[i].amount,
		    bad[i].currency, rc, err);
		ck_assert_msg(strstr(err, bad[i].says) != NULL, "%s %s: %s",
		    bad[i].amount, bad[i].currency, err);
		free(out);
		free(err);
	}
	rc = cli_run(&e, ARGS("--amount", "5", "--currency", "USD"), &out,
	    &err);
	ck_assert_int_eq(rc, 2);
	ck_assert_ptr_nonnull(strstr(err, "--charge ID is required"));
	free(out);
	free(err);
	ck_assert_int_eq(sb_creates(&e.sb), 0);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-in", NULL), 0);

	/* A currency other than the previous refunds': a warning, then
	 * Wix's refusal. */
	sb_charge(&e.sb, "ch-eur", "100.00", "EUR", "");
	sb_post(&e.sb, "/_sandbox/refunds", "{\"instance\":\"" INST "\","
	    "\"chargeId\":\"ch-eur\",\"amount\":\"2.00\"}");
	rc = cli_run(&e, ARGS("--charge", "ch-eur", "--amount", "5",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_ptr_nonnull(strstr(err, "warning: the charge's previous "
	    "refunds are in EUR, not USD"));
	ck_assert_ptr_nonnull(strstr(err, "REFUND_CURRENCY_MISMATCH"));
	free(out);
	free(err);
	env_close(&e);
}
END_TEST

/*
 * The OAuth token answer over the size cap: the history cannot be read,
 * nothing is sent, and the message says it was the token answer (not
 * just "Wix's answer").
 */
START_TEST(test_token_oversized)
{
	struct env e;
	char *out, *err;
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-tok", "10.00", "USD", "");
	sb_post(&e.sb, "/_sandbox/faults", "{\"fault\":\"oversize\","
	    "\"bytes\":9437184,\"endpoint\":\"token\",\"count\":1}");
	rc = cli_run(&e, ARGS("--charge", "ch-tok", "--amount", "1",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 1, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_msg(strstr(err, "\nrefundsync: refund create: could not "
	    "read the charge's refund history, so nothing was sent: Wix's "
	    "OAuth token answer was too large\n") != NULL, "%s", err);
	free(out);
	free(err);
	ck_assert_int_eq(sb_creates(&e.sb), 0);
	env_close(&e);
}
END_TEST

/* Every application error code: its message and exit 3; validation and
 * other refusals too. */
START_TEST(test_error_codes)
{
	static const char *const codes[] = {
		"CHARGE_REFUNDED", "CHARGE_DISPUTED",
		"CHARGE_REFUND_PERIOD_ENDED", "CHARGE_UNPAID", "PROVIDER_DOWN",
		"PROVIDER_NOT_SUPPORTED", "PAYMENT_METHOD_NOT_SUPPORTED",
		"MERCHANT_BALANCE_INSUFFICIENT", "ONLINE_REFUND_NOT_SUPPORTED",
		"PARTIAL_REFUND_NOT_SUPPORTED", "REFUND_AMOUNT_OUT_OF_BOUNDS",
		"REFUND_CURRENCY_MISSING", "REFUND_CURRENCY_MISMATCH",
		"CHARGE_REFUND_IN_PROGRESS",
		"PREVIOUSLY_REFUNDED_AMOUNT_MISMATCH",
	};
	struct env e;
	char *out, *err, *json, *long_reason;
	cJSON *d;
	size_t i;
	int rc;

	env_open(&e);
	sb_charge(&e.sb, "ch-err", "100.00", "USD", "");
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		json = xasprintf("{\"instance\":\"" INST "\",\"id\":"
		    "\"ch-err\",\"error\":\"%s\",\"count\":1}", codes[i]);
		sb_post(&e.sb, "/_sandbox/charges", json);
		free(json);
		rc = cli_run(&e, ARGS("--charge", "ch-err", "--amount", "1",
		    "--currency", "USD", "--yes", "--json"), &out, &err);
		ck_assert_msg(rc == 3, "%s: rc %d\n%s", codes[i], rc, err);
		d = parse_doc(out);
		ck_assert_str_eq(doc_str(d, "error", "code"), codes[i]);
		ck_assert_str_eq(doc_str(d, "outcome", NULL), "refused");
		ck_assert(strlen(doc_str(d, "error", "description")) > 0);
		/* The code and Wix's description, on stderr. */
		json = xasprintf("Wix refused the refund: %s: %s", codes[i],
		    doc_str(d, "error", "description"));
		ck_assert_msg(strstr(err, json) != NULL, "%s", err);
		free(json);
		cJSON_Delete(d);
		free(out);
		free(err);
	}
	/* The charge is fine again: the same command succeeds. */
	rc = cli_run(&e, ARGS("--charge", "ch-err", "--amount", "1",
	    "--currency", "USD"), &out, &err);
	ck_assert_msg(rc == 0, "rc %d\n%s", rc, err);
	free(out);
	free(err);
	/* An unknown charge. */
	rc = cli_run(&e, ARGS("--charge", "ch-nobody"), &out, &err);
	ck_assert_msg(rc == 3, "rc %d\n%s", rc, err);
	ck_assert_ptr_nonnull(strstr(err, "CHARGE_NOT_FOUND"));
	free(out);
	free(err);
	/* A validation error: the field violations, exit 2. */
	long_reason = xcalloc(1, 1201);
	memset(long_reason, 'x', 1200);
	rc = cli_run(&e, ARGS("--charge", "ch-err", "--amount", "1",
	    "--currency", "USD", "--reason", long_reason), &out, &err);
	ck_assert_msg(rc == 2, "rc %d\n%s", rc, err);
	ck_assert_ptr_nonnull(strstr(err, "Wix rejected the request as "
	    "invalid: refund.reason: a string of at most 1000 bytes "
	    "(MAX_LENGTH)"));
	free(long_reason);
	free(out);
	free(err);
	/* A refusal without an application error: a runtime failure. */
	sb_post(&e.sb, "/_sandbox/faults", "{\"fault\":\"403\","
	    "\"endpoint\":\"create\",\"count\":1}");
	rc = cli_run(&e, ARGS("--charge", "ch-err", "--amount", "1",
	    "--currency", "USD", "--json"), &out, &err);
	ck_assert_msg(rc == 1, "rc %d\n%s", rc, err);
	d = parse_doc(out);
	ck_assert_str_eq(doc_str(d, "outcome", NULL), "error");
	cJSON_Delete(d);
	ck_assert_ptr_nonnull(strstr(err, "HTTP 403"));
	/* What the status means, not the operator's "bad input". */
	ck_assert_msg(strstr(err, "Create Refund failed: Wix refused: no "
	    "permission: HTTP 403") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "bad input") == NULL, "%s", err);
	free(out);
	free(err);
	ck_assert_int_eq(sb_refunds(&e.sb, "ch-err", NULL), 1);
	env_close(&e);
}
END_TEST

/* ---- in-process: a FAILED refund (the sandbox never creates one) ---- */

/* Answers the token, Query Refunds (no refunds) and Create Refund (a
 * FAILED refund with statusInfo); counts the creates in *ctx. */
static enum rs_status
failed_transport(void *ctx, const struct wixapi_http_request *req,
    struct wixapi_http_response *resp)
{
	const char *body;
	size_t n = strlen(req->url);

	if (n >= 13 && strcmp(req->url + n - 13, "/oauth2/token") == 0)
		body = "{\"access_token\":\"tok\",\"token_type\":\"Bearer\","
		    "\"expires_in\":14400}";
	else if (n >= 6 && strcmp(req->url + n - 6, "/query") == 0)
		body = "{\"refunds\":[],\"pagingMetadata\":{\"count\":0,"
		    "\"hasNext\":false}}";
	else {
		(*(int *)ctx)++;
		body = "{\"refund\":{\"id\":\"rf-failed-1\",\"revision\":\"1\","
		    "\"chargeId\":\"ch-f\",\"currencyCode\":\"EUR\","
		    "\"amount\":\"7.5\",\"status\":\"FAILED\",\"statusInfo\":"
		    "{\"code\":\"1013\",\"description\":\"Insufficient "
		    "funds\"},\"createdDate\":\"2026-01-02T03:04:05Z\","
		    "\"updatedDate\":\"2026-01-02T03:04:05Z\"}}";
	}
	resp->status = 200;
	resp->body = xstrdup(body);
	resp->body_len = strlen(body);
	return RS_OK;
}

START_TEST(test_failed_status_info)
{
	struct refundcmd_options o;
	struct wixapi_options wo;
	struct store_options so;
	struct wixapi *w = NULL;
	struct store *st = NULL;
	char *dir = tu_tempdir(), *path, *why = NULL, *out = NULL,
	    *err = NULL, *v;
	size_t olen = 0, elen = 0;
	FILE *fo, *fe;
	int creates = 0, rc;

	memset(&wo, 0, sizeof(wo));
	wo.api_base = "http://127.0.0.1:9";
	wo.app_id = APP_ID;
	wo.app_secret = APP_SECRET;
	wo.transport = failed_transport;
	wo.transport_ctx = &creates;
	ck_assert_int_eq(wixapi_new(&wo, &w, &why), RS_OK);
	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = 5000;
	path = xasprintf("%s/r.db", dir);
	ck_assert_int_eq(store_open(path, &so, &st, &why), RS_OK);
	memset(&o, 0, sizeof(o));
	o.instance = INST;
	o.charge = "ch-f";
	o.amount = "7.50";
	o.currency = "EUR";
	fo = open_memstream(&out, &olen);
	fe = open_memstream(&err, &elen);
	rc = refundcmd_create(w, st, &o, stdin, fo, fe);
	fclose(fo);
	fclose(fe);
	ck_assert_msg(rc == 1, "rc %d\n%s\n%s", rc, out, err);
	ck_assert_int_eq(creates, 1);
	ck_assert_msg(strstr(out, "Refund rf-failed-1 of 7.50 EUR FAILED: "
	    "statusInfo 1013: Insufficient funds.") != NULL, "%s", out);
	ck_assert_ptr_nonnull(strstr(err, "the refund FAILED: 1013: "
	    "Insufficient funds"));
	store_close(st);
	v = tu_sql(path, "SELECT status || ' ' || source || ' ' || "
	    "amount_minor FROM refunds WHERE id = 'rf-failed-1'");
	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(v, "FAILED cli 750");
	free(v);
	free(out);
	free(err);
	free(path);
	wixapi_free(w);
	tu_rmtree(dir);
	free(dir);
}
END_TEST

static Suite *
refund_suite(void)
{
	Suite *s = suite_create("refund_cli");
	TCase *tc = tcase_create("sandbox");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_full_refund_twice);
	tcase_add_test(tc, test_partials_exact_then_over);
	tcase_add_test(tc, test_doubled_request);
	tcase_add_test(tc, test_concurrent_yes);
	tcase_add_test(tc, test_concurrent_interactive);
	tcase_add_test(tc, test_pending_in_progress);
	tcase_add_test(tc, test_jpy_kwd);
	tcase_add_test(tc, test_input_checks);
	tcase_add_test(tc, test_token_oversized);
	tcase_add_test(tc, test_error_codes);
	tcase_add_test(tc, test_failed_status_info);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	xmalloc_init_json();
	sr = srunner_create(refund_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
