/*
 * wix-sign: a stand-in for Wix's webhook signer, for tests, benchmarks
 * and manual runs against a local daemon.
 *
 * It builds the three nested layers Wix sends (WIX.md §1) with the
 * testutil builders and signs the claims RS256 with libjwt, a signer
 * independent of the daemon's verifier, so a token that verifies here
 * and there proves the two agree.  With --post it delivers the token
 * with libcurl the way Wix does: the raw JWT as a text/plain body.
 *
 * Exit status: 0 success (with --post: the answer was 200), 1 a runtime
 * failure, 2 a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <jwt.h>

#include "util/buf.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#include "../testutil.h"

#define EX_OK		0
#define EX_FAIL		1
#define EX_USAGE	2

#define KEY_MAX		(64 * 1024)	/* a PEM is a few KiB */
#define BODY_MAX	(1024 * 1024)	/* cap on a --post answer */

static const char usage_text[] =
"usage: wix-sign keygen DIR\n"
"       wix-sign refund --key PRIV [options] [--post URL]\n"
"       wix-sign app-installed --key PRIV --instance ID [--post URL]\n"
"       wix-sign --help\n"
"\n"
"Builds a Wix webhook (an RS256 JWT whose claims hold layer B, whose\n"
"data holds layer C; see WIX.md) and prints it on stdout, or POSTs it.\n"
"\n"
"keygen DIR        write DIR/wix-test-private.pem (mode 0600) and\n"
"                  DIR/wix-test-public.pem (SPKI, for public_key_file)\n"
"\n"
"refund options (defaults in brackets):\n"
"  --key PRIV        private key PEM file used to sign (required)\n"
"  --event E         created | updated [created]\n"
"  --form F          object | string: entity as an object (entity,\n"
"                    currentEntity) or a JSON string (entityAsJson,\n"
"                    currentEntityAsJson) [object]\n"
"  --instance ID     instanceId [random inst-...]\n"
"  --event-id ID     layer C id, the dedupe key [random evt-...]\n"
"  --seq N           entityEventSequence, sent as a string [absent]\n"
"  --id R            refund id [random rf-...]\n"
"  --charge C        chargeId [random ch-...]\n"
"  --amount DEC      amount, a decimal string [10.00]\n"
"  --currency CUR    currencyCode [USD]\n"
"  --status S        status [SUCCEEDED]\n"
"  --revision N      revision, sent as a string; -1 leaves it out [1]\n"
"  --iat SECONDS     the iat claim; exp is iat + 3600000 [now]\n"
"\n"
"app-installed options:\n"
"  --key PRIV        private key PEM file (required)\n"
"  --instance ID     instanceId (required)\n"
"  --app-id ID       appId in layer C [random app-...]\n"
"  --iat SECONDS     as above\n"
"\n"
"common:\n"
"  --post URL        POST the token (Content-Type: text/plain) and print\n"
"                    the HTTP status on the first line, then the body\n"
"  -h, --help        this text\n"
"\n"
"Exit status: 0 success (with --post, the answer was 200), 1 failure,\n"
"2 usage error.\n";

enum {
	OPT_KEY = 256, OPT_EVENT, OPT_FORM, OPT_INSTANCE, OPT_EVENT_ID,
	OPT_SEQ, OPT_ID, OPT_CHARGE, OPT_AMOUNT, OPT_CURRENCY, OPT_STATUS,
	OPT_REVISION, OPT_IAT, OPT_POST, OPT_APP_ID
};

static const struct option longopts[] = {
	{ "key",	required_argument, NULL, OPT_KEY },
	{ "event",	required_argument, NULL, OPT_EVENT },
	{ "form",	required_argument, NULL, OPT_FORM },
	{ "instance",	required_argument, NULL, OPT_INSTANCE },
	{ "event-id",	required_argument, NULL, OPT_EVENT_ID },
	{ "seq",	required_argument, NULL, OPT_SEQ },
	{ "id",		required_argument, NULL, OPT_ID },
	{ "charge",	required_argument, NULL, OPT_CHARGE },
	{ "amount",	required_argument, NULL, OPT_AMOUNT },
	{ "currency",	required_argument, NULL, OPT_CURRENCY },
	{ "status",	required_argument, NULL, OPT_STATUS },
	{ "revision",	required_argument, NULL, OPT_REVISION },
	{ "iat",	required_argument, NULL, OPT_IAT },
	{ "post",	required_argument, NULL, OPT_POST },
	{ "app-id",	required_argument, NULL, OPT_APP_ID },
	{ "help",	no_argument,	   NULL, 'h' },
	{ NULL,		0,		   NULL, 0 }
};

/* Everything the command line can set; NULL means the default. */
struct opts {
	const char	*key;
	const char	*event;
	const char	*form;
	const char	*instance;
	const char	*event_id;
	const char	*seq;
	const char	*id;
	const char	*charge;
	const char	*amount;
	const char	*currency;
	const char	*status;
	const char	*revision;
	const char	*iat;
	const char	*post;
	const char	*app_id;
};

static int
usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "wix-sign: %s\n", why);
	fputs(usage_text, stderr);
	return EX_USAGE;
}

/*
 * Sign claims (JSON text) RS256 with the PEM key through libjwt.
 * Caller frees the token with free(); NULL on failure.
 */
static char *
sign_claims(const char *pem, const char *claims)
{
	jwt_t *jwt = NULL;
	char *tok = NULL, *out = NULL;

	if (jwt_new(&jwt) != 0) {
		fprintf(stderr, "wix-sign: jwt_new failed\n");
		goto out;
	}
	if (jwt_add_grants_json(jwt, claims) != 0) {
		fprintf(stderr, "wix-sign: jwt_add_grants_json failed\n");
		goto out;
	}
	if (jwt_add_header(jwt, "kid", "wix-sign") != 0 ||
	    jwt_set_alg(jwt, JWT_ALG_RS256, (const unsigned char *)pem,
	    (int)strlen(pem)) != 0) {
		fprintf(stderr, "wix-sign: jwt_set_alg failed\n");
		goto out;
	}
	if ((tok = jwt_encode_str(jwt)) == NULL) {
		fprintf(stderr, "wix-sign: jwt_encode_str failed (is the key "
		    "an RSA private key?)\n");
		goto out;
	}
	out = xstrdup(tok);
out:
	free(tok);	/* libjwt allocates with malloc by default */
	jwt_free(jwt);
	return out;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;

	if (buf_append(b, data, size * nmemb) != RS_OK)
		return 0;
	return size * nmemb;
}

/* POST tok to url; print the status and body.  Exit status. */
static int
post_token(const char *url, const char *tok)
{
	CURL *c = NULL;
	struct curl_slist *hdrs = NULL;
	struct buf body;
	CURLcode cc;
	long code = 0;
	int rc = EX_FAIL;

	buf_init(&body, BODY_MAX);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
	    (c = curl_easy_init()) == NULL) {
		fprintf(stderr, "wix-sign: cannot start libcurl\n");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: text/plain");
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (hdrs == NULL) {
		fprintf(stderr, "wix-sign: out of memory\n");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, tok);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
	    (curl_off_t)strlen(tok));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if ((cc = curl_easy_perform(c)) != CURLE_OK) {
		fprintf(stderr, "wix-sign: POST %s: %s\n", url,
		    curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	printf("%ld\n%s\n", code, body.data != NULL ? body.data : "");
	if (code == 200)
		rc = EX_OK;
out:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	curl_global_cleanup();
	buf_cleanup(&body);
	return rc;
}

/* Print or post tok.  Exit status. */
static int
deliver(const struct opts *o, const char *tok)
{
	if (o->post != NULL)
		return post_token(o->post, tok);
	printf("%s\n", tok);
	return fflush(stdout) == 0 ? EX_OK : EX_FAIL;
}

/* Parse a decimal option; false (after a message) if it is not one. */
static bool
parse_num(const char *name, const char *s, int64_t min, int64_t *out)
{
	const char *err;

	if ((err = strnum_i64(s, min, INT64_MAX, out)) != NULL) {
		fprintf(stderr, "wix-sign: --%s %s: %s\n", name, s, err);
		return false;
	}
	return true;
}

static char *
load_key(const char *path)
{
	char *pem;
	size_t len;

	if ((pem = tu_read_file(path, &len)) == NULL) {
		fprintf(stderr, "wix-sign: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (len == 0 || len > KEY_MAX || strlen(pem) != len) {
		fprintf(stderr, "wix-sign: %s: not a PEM key\n", path);
		freezero_str(pem);
		return NULL;
	}
	return pem;
}

/* Wrap layer C into B and the claims, sign and deliver. */
static int
finish(const struct opts *o, const char *pem, const char *c,
    const char *instance, const char *event_type)
{
	char *b, *claims, *tok;
	int64_t iat = (int64_t)time(NULL);
	int rc;

	if (o->iat != NULL && !parse_num("iat", o->iat, 0, &iat))
		return EX_USAGE;
	b = tu_layer_b(c, instance, event_type);
	claims = tu_claims(b, iat);
	tok = sign_claims(pem, claims);
	rc = tok != NULL ? deliver(o, tok) : EX_FAIL;
	free(b);
	free(claims);
	free(tok);
	return rc;
}

static int
cmd_refund(const struct opts *o, const char *pem)
{
	struct tu_refund r;
	struct tu_event ev;
	char *id = NULL, *charge = NULL, *evid = NULL, *inst = NULL;
	char *now = NULL, *entity = NULL, *c = NULL;
	int64_t rev = 1, seq = -1;
	int rc = EX_USAGE;

	memset(&r, 0, sizeof(r));
	memset(&ev, 0, sizeof(ev));
	if (o->revision != NULL && !parse_num("revision", o->revision, -1,
	    &rev))
		goto out;
	if (o->seq != NULL && !parse_num("seq", o->seq, 0, &seq))
		goto out;
	if (o->event == NULL || strcmp(o->event, "created") == 0)
		ev.slug = TU_CREATED;
	else if (strcmp(o->event, "updated") == 0)
		ev.slug = TU_UPDATED;
	else {
		rc = usage("--event must be created or updated");
		goto out;
	}
	if (o->form == NULL || strcmp(o->form, "object") == 0)
		ev.form = TU_FORM_OBJECT;
	else if (strcmp(o->form, "string") == 0)
		ev.form = TU_FORM_STRING;
	else {
		rc = usage("--form must be object or string");
		goto out;
	}
	id = o->id != NULL ? xstrdup(o->id) : tu_random_id("rf-");
	charge = o->charge != NULL ? xstrdup(o->charge) : tu_random_id("ch-");
	evid = o->event_id != NULL ? xstrdup(o->event_id) :
	    tu_random_id("evt-");
	inst = o->instance != NULL ? xstrdup(o->instance) :
	    tu_random_id("inst-");
	now = tu_now_iso();

	r.id = id;
	r.charge_id = charge;
	r.currency = o->currency != NULL ? o->currency : "USD";
	r.amount = o->amount != NULL ? o->amount : "10.00";
	r.status = o->status != NULL ? o->status : "SUCCEEDED";
	r.revision = rev;
	r.created_date = now;
	r.updated_date = now;
	entity = tu_refund_json(&r);

	ev.id = evid;
	ev.entity_json = entity;
	ev.seq = seq;
	ev.event_time = now;
	if ((c = tu_layer_c(&ev)) == NULL) {
		rc = EX_FAIL;
		goto out;
	}
	rc = finish(o, pem, c, inst, ev.slug == TU_CREATED ? TU_EVT_CREATED :
	    TU_EVT_UPDATED);
out:
	free(id);
	free(charge);
	free(evid);
	free(inst);
	free(now);
	free(entity);
	free(c);
	return rc;
}

static int
cmd_installed(const struct opts *o, const char *pem)
{
	char *app, *c, *q;
	int rc;

	if (o->instance == NULL)
		return usage("app-installed needs --instance");
	app = o->app_id != NULL ? xstrdup(o->app_id) : tu_random_id("app-");
	q = tu_json_quote(app);
	c = xasprintf("{\"appId\":%s,\"originInstanceId\":\"\"}", q);
	rc = finish(o, pem, c, o->instance, TU_EVT_INSTALLED);
	free(app);
	free(q);
	free(c);
	return rc;
}

static int
cmd_keygen(const char *dir)
{
	struct tu_keypair kp;
	char *priv, *pub;
	int rc = EX_FAIL;

	/* The directory, if it is not there yet (one level, mode 0700:
	 * it holds a private key). */
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "wix-sign: keygen: %s: %s\n", dir,
		    strerror(errno));
		return EX_FAIL;
	}
	tu_keypair_generate(&kp);
	priv = xasprintf("%s/wix-test-private.pem", dir);
	pub = xasprintf("%s/wix-test-public.pem", dir);
	if (tu_write_file(priv, kp.priv_pem, true) &&
	    chmod(priv, 0600) == 0 &&
	    tu_write_file(pub, kp.pub_pem, false)) {
		printf("%s\n%s\n", priv, pub);
		rc = EX_OK;
	}
	free(priv);
	free(pub);
	tu_keypair_cleanup(&kp);
	return rc;
}

int
main(int argc, char *argv[])
{
	struct opts o;
	const char *cmd;
	char *pem = NULL;
	int ch, rc;

	memset(&o, 0, sizeof(o));
	if (argc < 2)
		return usage(NULL);
	cmd = argv[1];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 ||
	    strcmp(cmd, "help") == 0) {
		fputs(usage_text, stdout);
		return EX_OK;
	}
	if (strcmp(cmd, "keygen") == 0) {
		if (argc != 3 || argv[2][0] == '-')
			return usage("keygen takes one directory");
		return cmd_keygen(argv[2]);
	}
	if (strcmp(cmd, "refund") != 0 && strcmp(cmd, "app-installed") != 0)
		return usage("unknown command");

	optind = 2;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_KEY:		o.key = optarg; break;
		case OPT_EVENT:		o.event = optarg; break;
		case OPT_FORM:		o.form = optarg; break;
		case OPT_INSTANCE:	o.instance = optarg; break;
		case OPT_EVENT_ID:	o.event_id = optarg; break;
		case OPT_SEQ:		o.seq = optarg; break;
		case OPT_ID:		o.id = optarg; break;
		case OPT_CHARGE:	o.charge = optarg; break;
		case OPT_AMOUNT:	o.amount = optarg; break;
		case OPT_CURRENCY:	o.currency = optarg; break;
		case OPT_STATUS:	o.status = optarg; break;
		case OPT_REVISION:	o.revision = optarg; break;
		case OPT_IAT:		o.iat = optarg; break;
		case OPT_POST:		o.post = optarg; break;
		case OPT_APP_ID:	o.app_id = optarg; break;
		case 'h':
			fputs(usage_text, stdout);
			return EX_OK;
		default:
			return usage(NULL);
		}
	}
	if (optind != argc)
		return usage("unexpected argument");
	if (o.key == NULL)
		return usage("--key is required");
	if ((pem = load_key(o.key)) == NULL)
		return EX_FAIL;
	if (strcmp(cmd, "refund") == 0)
		rc = cmd_refund(&o, pem);
	else
		rc = cmd_installed(&o, pem);
	freezero_str(pem);
	return rc;
}
