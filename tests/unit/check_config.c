/*
 * check_config.c: unit tests for the INI configuration (adapters/config).
 *
 * Each test writes a config file into a fresh temporary directory and
 * loads it.  Expected error texts are written with '@' standing for the
 * file's path.  The sync tests read etc/refundsync.conf from $RS_SRCDIR
 * and hold it to the key table.
 */
#define _XOPEN_SOURCE 700

#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "adapters/config.h"
#include "util/buf.h"
#include "util/xmalloc.h"

static char	 tmpdir[64];
static char	*conf;			/* tmpdir/test.conf */

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
setup(void)
{
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/rs-config-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	conf = xasprintf("%s/test.conf", tmpdir);
	unsetenv(CONFIG_ENV);
	unsetenv("CREDENTIALS_DIRECTORY");
}

static void
teardown(void)
{
	(void)nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(conf);
	conf = NULL;
}

static void
write_file(const char *path, const char *text, size_t len)
{
	FILE *fp;

	ck_assert_ptr_nonnull(fp = fopen(path, "w"));
	ck_assert_uint_eq(fwrite(text, 1, len, fp), len);
	ck_assert_int_eq(fclose(fp), 0);
}

static char *
tmp_path(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

/* expected with every '@' replaced by the config file's path. */
static char *
expand(const char *expected)
{
	struct buf b;
	const char *s;

	buf_init(&b, 1 << 20);
	for (s = expected; *s != '\0'; s++) {
		if (*s == '@')
			ck_assert_int_eq(buf_appends(&b, conf), RS_OK);
		else
			ck_assert_int_eq(buf_append(&b, s, 1), RS_OK);
	}
	return buf_detach(&b, NULL);
}

static struct config *
load_ok_n(const char *text, size_t len)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	enum rs_status st;

	write_file(conf, text, len);
	st = config_load(conf, &cfg, &errors);
	ck_assert_msg(st == RS_OK, "config_load failed: %s",
	    errors != NULL ? errors : "(no errors)");
	ck_assert_ptr_null(errors);
	ck_assert_ptr_nonnull(cfg);
	return cfg;
}

static struct config *
load_ok(const char *text)
{
	return load_ok_n(text, strlen(text));
}

static void
load_err_n(const char *text, size_t len, const char *expected)
{
	struct config *cfg = NULL;
	char *errors = NULL, *want;

	write_file(conf, text, len);
	ck_assert_int_eq(config_load(conf, &cfg, &errors), RS_ERR_CONFIG);
	ck_assert_ptr_null(cfg);
	ck_assert_ptr_nonnull(errors);
	want = expand(expected);
	ck_assert_str_eq(errors, want);
	free(want);
	free(errors);
}

static void
load_err(const char *text, const char *expected)
{
	load_err_n(text, strlen(text), expected);
}

/* ---- defaults ---------------------------------------------------------- */

static void
assert_defaults(const struct config *cfg)
{
	ck_assert_str_eq(cfg->listen, "127.0.0.1:8080");
	ck_assert_str_eq(cfg->admin_listen, "127.0.0.1:8081");
	ck_assert_str_eq(cfg->webhook_path, "/webhooks");
	ck_assert_int_eq(cfg->max_body, 262144);
	ck_assert_int_eq(cfg->threads, 2);
	ck_assert_int_eq(cfg->request_timeout, 10);
	ck_assert_int_eq(cfg->max_connections, 512);
	ck_assert_int_eq(cfg->max_connections_per_ip, 64);
	ck_assert_int_eq(cfg->commit_batch, 256);
	ck_assert_str_eq(cfg->store_path, "/var/lib/refundsync/refundsync.db");
	ck_assert_int_eq(cfg->busy_timeout_ms, 5000);
	ck_assert_uint_eq(cfg->npublic_key_files, 1);
	ck_assert_str_eq(cfg->public_key_files[0],
	    "/etc/refundsync/wix-public.pem");
	ck_assert_ptr_null(cfg->public_key_files[1]);
	ck_assert_str_eq(cfg->app_id, "");
	ck_assert_str_eq(cfg->app_secret_file, "");
	ck_assert_str_eq(cfg->api_key_file, "");
	ck_assert_str_eq(cfg->site_id, "");
	ck_assert_uint_eq(cfg->ninstances, 0);
	ck_assert_ptr_nonnull(cfg->instances);
	ck_assert_ptr_null(cfg->instances[0]);
	ck_assert_str_eq(cfg->api_base, "https://www.wixapis.com");
	ck_assert_int_eq(cfg->wix_connect_timeout, 5);
	ck_assert_int_eq(cfg->wix_timeout, 30);
	ck_assert_int_eq(cfg->jwt_leeway, 60);
	ck_assert(cfg->on_install);
	ck_assert_int_eq(cfg->page_size, 100);
	ck_assert_int_eq(cfg->requests_per_minute, 200);
	ck_assert_int_eq(cfg->reconcile_interval, 0);
	ck_assert(!cfg->reconcile_heal);
}

START_TEST(test_empty_file)
{
	struct config *cfg = load_ok("");

	assert_defaults(cfg);
	ck_assert_str_eq(cfg->path, conf);
	ck_assert_str_eq(cfg->dir, tmpdir);
	config_free(cfg);
}
END_TEST

START_TEST(test_comments_only)
{
	struct config *cfg = load_ok("; nothing\n# here\n\n   \n\t; indented\n"
	    "[server]\n[store]\n");

	assert_defaults(cfg);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_defaults)
{
	struct config *cfg = config_defaults("/srv/x");

	assert_defaults(cfg);
	ck_assert_str_eq(cfg->path, "");
	ck_assert_str_eq(cfg->dir, "/srv/x");
	config_free(cfg);
	config_free(NULL);
}
END_TEST

START_TEST(test_every_key_set)
{
	struct config *cfg = load_ok(
	    "[server]\n"
	    "listen = 0.0.0.0:80\n"
	    "admin_listen =\n"
	    "webhook_path = /wix/hooks\n"
	    "max_body = 1024\n"
	    "threads = 64\n"
	    "request_timeout = 3600\n"
	    "max_connections = 100\n"
	    "max_connections_per_ip = 100\n"
	    "commit_batch = 1\n"
	    "[store]\n"
	    "path = /data/rs.db\n"
	    "busy_timeout = 0\n"
	    "[wix]\n"
	    "public_key_file = /k/a.pem,/k/b.pem\n"
	    "app_id = 11111111-2222\n"
	    "app_secret_file = /s/app\n"
	    "api_key_file =\n"
	    "site_id = site-1\n"
	    "instances = i-1,i-2\n"
	    "api_base = http://127.0.0.1:9999\n"
	    "connect_timeout = 2\n"
	    "timeout = 7\n"
	    "jwt_leeway = 0\n"
	    "[backfill]\n"
	    "on_install = no\n"
	    "page_size = 1\n"
	    "requests_per_minute = 100000\n"
	    "[reconcile]\n"
	    "interval = 3600\n"
	    "heal = yes\n");

	ck_assert_str_eq(cfg->listen, "0.0.0.0:80");
	ck_assert_str_eq(cfg->admin_listen, "");
	ck_assert_str_eq(cfg->webhook_path, "/wix/hooks");
	ck_assert_int_eq(cfg->max_body, 1024);
	ck_assert_int_eq(cfg->threads, 64);
	ck_assert_int_eq(cfg->request_timeout, 3600);
	ck_assert_int_eq(cfg->max_connections, 100);
	ck_assert_int_eq(cfg->max_connections_per_ip, 100);
	ck_assert_int_eq(cfg->commit_batch, 1);
	ck_assert_str_eq(cfg->store_path, "/data/rs.db");
	ck_assert_int_eq(cfg->busy_timeout_ms, 0);
	ck_assert_uint_eq(cfg->npublic_key_files, 2);
	ck_assert_str_eq(cfg->public_key_files[0], "/k/a.pem");
	ck_assert_str_eq(cfg->public_key_files[1], "/k/b.pem");
	ck_assert_ptr_null(cfg->public_key_files[2]);
	ck_assert_str_eq(cfg->app_id, "11111111-2222");
	ck_assert_str_eq(cfg->app_secret_file, "/s/app");
	ck_assert_str_eq(cfg->api_key_file, "");
	ck_assert_str_eq(cfg->site_id, "site-1");
	ck_assert_uint_eq(cfg->ninstances, 2);
	ck_assert_str_eq(cfg->instances[0], "i-1");
	ck_assert_str_eq(cfg->instances[1], "i-2");
	ck_assert_str_eq(cfg->api_base, "http://127.0.0.1:9999");
	ck_assert_int_eq(cfg->wix_connect_timeout, 2);
	ck_assert_int_eq(cfg->wix_timeout, 7);
	ck_assert_int_eq(cfg->jwt_leeway, 0);
	ck_assert(!cfg->on_install);
	ck_assert_int_eq(cfg->page_size, 1);
	ck_assert_int_eq(cfg->requests_per_minute, 100000);
	ck_assert_int_eq(cfg->reconcile_interval, 3600);
	ck_assert(cfg->reconcile_heal);
	config_free(cfg);
}
END_TEST

/* Every default, written into a file, loads to the same value. */
START_TEST(test_table_defaults_load)
{
	const struct config_key *k;
	struct config *cfg;
	char *text;
	size_t n = 0;

	for (k = config_keys(); k->name != NULL; k++, n++) {
		ck_assert_ptr_nonnull(k->section);
		ck_assert_ptr_nonnull(k->def);
		ck_assert_ptr_nonnull(k->help);
		ck_assert_uint_gt(strlen(k->help), 0);
		text = xasprintf("[%s]\n%s = %s\n", k->section, k->name,
		    k->def);
		cfg = load_ok(text);
		assert_defaults(cfg);
		config_free(cfg);
		free(text);
	}
	ck_assert_uint_eq(n, 26);
	ck_assert_str_eq(config_keys()[0].section, "server");
	ck_assert_str_eq(config_keys()[0].name, "listen");
	ck_assert_str_eq(config_keys()[0].def, "127.0.0.1:8080");
	ck_assert_ptr_null(config_keys()[26].name);
}
END_TEST

START_TEST(test_table_unique_lowercase)
{
	const struct config_key *a, *b;
	const char *s;

	for (a = config_keys(); a->name != NULL; a++) {
		for (s = a->name; *s != '\0'; s++)
			ck_assert_msg((*s >= 'a' && *s <= 'z') || *s == '_',
			    "key %s is not lower-case", a->name);
		for (b = a + 1; b->name != NULL; b++)
			ck_assert_msg(strcmp(a->section, b->section) != 0 ||
			    strcmp(a->name, b->name) != 0, "[%s] %s twice",
			    a->section, a->name);
	}
}
END_TEST

/* ---- values of each type ----------------------------------------------- */

START_TEST(test_int_good)
{
	struct config *cfg = load_ok("[server]\nthreads = 1\n"
	    "max_body = 16777216\nrequest_timeout = 1\n[store]\n"
	    "busy_timeout = 600000\n[wix]\njwt_leeway = 86400\n");

	ck_assert_int_eq(cfg->threads, 1);
	ck_assert_int_eq(cfg->max_body, 16777216);
	ck_assert_int_eq(cfg->request_timeout, 1);
	ck_assert_int_eq(cfg->busy_timeout_ms, 600000);
	ck_assert_int_eq(cfg->jwt_leeway, 86400);
	config_free(cfg);
}
END_TEST

START_TEST(test_int_bad)
{
	load_err("[server]\nthreads = 0\n",
	    "@:2: [server] threads: \"0\" is out of range 1..64");
	load_err("[server]\n\nthreads = 65\n",
	    "@:3: [server] threads: \"65\" is out of range 1..64");
	load_err("[server]\nthreads = two\n",
	    "@:2: [server] threads: \"two\" is not an integer");
	load_err("[server]\nthreads = +3\n",
	    "@:2: [server] threads: \"+3\" is not an integer");
	load_err("[server]\nthreads = 03\n",
	    "@:2: [server] threads: \"03\" is not an integer");
	load_err("[server]\nthreads = 3 4\n",
	    "@:2: [server] threads: \"3 4\" is not an integer");
	load_err("[server]\nthreads =\n",
	    "@:2: [server] threads: \"\" is not an integer");
	load_err("[server]\nmax_body = 1023\n",
	    "@:2: [server] max_body: \"1023\" is out of range 1024..16777216");
	load_err("[server]\nmax_body = 16777217\n",
	    "@:2: [server] max_body: \"16777217\" is out of range "
	    "1024..16777216");
	load_err("[wix]\njwt_leeway = -1\n",
	    "@:2: [wix] jwt_leeway: \"-1\" is out of range 0..86400");
	load_err("[backfill]\npage_size = 99999999999999999999\n",
	    "@:2: [backfill] page_size: \"99999999999999999999\" is out of "
	    "range 1..100");
	load_err("[server]\ncommit_batch = 10001\n",
	    "@:2: [server] commit_batch: \"10001\" is out of range 1..10000");
	load_err("[store]\nbusy_timeout = 600001\n",
	    "@:2: [store] busy_timeout: \"600001\" is out of range 0..600000");
}
END_TEST

/* [wix] connect_timeout and timeout: their ranges, and the one never
 * more than the other. */
START_TEST(test_wix_timeouts)
{
	const struct config_key *k;
	struct config *cfg;
	int seen = 0;

	for (k = config_keys(); k->name != NULL; k++) {
		if (strcmp(k->section, "wix") != 0)
			continue;
		if (strcmp(k->name, "connect_timeout") == 0) {
			ck_assert_str_eq(k->def, "5");
			seen |= 1;
		} else if (strcmp(k->name, "timeout") == 0) {
			ck_assert_str_eq(k->def, "30");
			seen |= 2;
		}
	}
	ck_assert_int_eq(seen, 3);

	cfg = load_ok("[wix]\nconnect_timeout = 1\ntimeout = 1\n");
	ck_assert_int_eq(cfg->wix_connect_timeout, 1);
	ck_assert_int_eq(cfg->wix_timeout, 1);
	config_free(cfg);
	cfg = load_ok("[wix]\nconnect_timeout = 300\ntimeout = 3600\n");
	ck_assert_int_eq(cfg->wix_connect_timeout, 300);
	ck_assert_int_eq(cfg->wix_timeout, 3600);
	config_free(cfg);
	/* Each alone, against the other's default. */
	cfg = load_ok("[wix]\ntimeout = 5\n");
	ck_assert_int_eq(cfg->wix_connect_timeout, 5);
	ck_assert_int_eq(cfg->wix_timeout, 5);
	config_free(cfg);
	cfg = load_ok("[wix]\nconnect_timeout = 30\n");
	ck_assert_int_eq(cfg->wix_connect_timeout, 30);
	ck_assert_int_eq(cfg->wix_timeout, 30);
	config_free(cfg);

	load_err("[wix]\nconnect_timeout = 0\n",
	    "@:2: [wix] connect_timeout: \"0\" is out of range 1..300");
	load_err("[wix]\nconnect_timeout = 301\ntimeout = 3600\n",
	    "@:2: [wix] connect_timeout: \"301\" is out of range 1..300");
	load_err("[wix]\nconnect_timeout = 1.5\n",
	    "@:2: [wix] connect_timeout: \"1.5\" is not an integer");
	load_err("[wix]\ntimeout = 0\n",
	    "@:2: [wix] timeout: \"0\" is out of range 1..3600");
	load_err("[wix]\n\ntimeout = 3601\n",
	    "@:3: [wix] timeout: \"3601\" is out of range 1..3600");
	load_err("[wix]\ntimeout = -1\n",
	    "@:2: [wix] timeout: \"-1\" is out of range 1..3600");
	/* timeout below connect_timeout: the error names the key set (the
	 * timeout when both are). */
	load_err("[wix]\nconnect_timeout = 10\ntimeout = 9\n",
	    "@:3: [wix] timeout: 9 is less than connect_timeout (10)");
	load_err("[wix]\ntimeout = 4\n",
	    "@:2: [wix] timeout: 4 is less than connect_timeout (5)");
	load_err("[wix]\nconnect_timeout = 31\n",
	    "@:2: [wix] connect_timeout: 31 is more than timeout (30)");
	/* A refused value is not compared. */
	load_err("[wix]\nconnect_timeout = x\ntimeout = 2\n",
	    "@:2: [wix] connect_timeout: \"x\" is not an integer");
	load_err("[wix]\nconnect_timeout = 60\ntimeout = 0\n",
	    "@:3: [wix] timeout: \"0\" is out of range 1..3600");
}
END_TEST

START_TEST(test_bool)
{
	static const char *const yes[] = { "yes", "true", "on", "1", "YES",
	    "True" };
	static const char *const no[] = { "no", "false", "off", "0", "Off" };
	struct config *cfg;
	char *text;
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		text = xasprintf("[backfill]\non_install = %s\n", yes[i]);
		cfg = load_ok(text);
		ck_assert_msg(cfg->on_install, "%s is not true", yes[i]);
		config_free(cfg);
		free(text);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		text = xasprintf("[backfill]\non_install = %s\n", no[i]);
		cfg = load_ok(text);
		ck_assert_msg(!cfg->on_install, "%s is not false", no[i]);
		config_free(cfg);
		free(text);
	}
	load_err("[backfill]\non_install = maybe\n",
	    "@:2: [backfill] on_install: \"maybe\" is not yes/no, true/false, "
	    "on/off or 1/0");
	load_err("[backfill]\non_install = 2\n",
	    "@:2: [backfill] on_install: \"2\" is not yes/no, true/false, "
	    "on/off or 1/0");
	load_err("[backfill]\non_install =\n",
	    "@:2: [backfill] on_install: \"\" is not yes/no, true/false, "
	    "on/off or 1/0");
}
END_TEST

START_TEST(test_listen_values)
{
	struct config *cfg;

	cfg = load_ok("[server]\nlisten = [::1]:0\nadmin_listen =\n");
	ck_assert_str_eq(cfg->listen, "[::1]:0");
	ck_assert_str_eq(cfg->admin_listen, "");
	config_free(cfg);
	cfg = load_ok("[server]\nlisten = localhost:80\n"
	    "admin_listen = [::]:81\n");
	ck_assert_str_eq(cfg->listen, "localhost:80");
	ck_assert_str_eq(cfg->admin_listen, "[::]:81");
	config_free(cfg);

	load_err("[server]\nlisten = 127.0.0.1\n",
	    "@:2: [server] listen: \"127.0.0.1\": missing port");
	load_err("[server]\nlisten = 127.0.0.1:65536\n",
	    "@:2: [server] listen: \"127.0.0.1:65536\": bad port (0..65535)");
	load_err("[server]\nlisten = example.com:80\n",
	    "@:2: [server] listen: \"example.com:80\": bad host: not an IPv4 "
	    "address, localhost or [v6]");
	load_err("[server]\nadmin_listen = ::1:80\n",
	    "@:2: [server] admin_listen: \"::1:80\": an IPv6 address needs "
	    "brackets: [v6]:port");
	load_err("[server]\nlisten =\n",
	    "@:2: [server] listen: must not be empty");
}
END_TEST

START_TEST(test_webhook_path)
{
	struct config *cfg = load_ok("[server]\nwebhook_path = /a/b-c_d.e\n");

	ck_assert_str_eq(cfg->webhook_path, "/a/b-c_d.e");
	config_free(cfg);
	load_err("[server]\nwebhook_path = webhooks\n",
	    "@:2: [server] webhook_path: must start with '/'");
	load_err("[server]\nwebhook_path = /a?b\n",
	    "@:2: [server] webhook_path: must not contain '?' or '#'");
	load_err("[server]\nwebhook_path = /a#b\n",
	    "@:2: [server] webhook_path: must not contain '?' or '#'");
	load_err("[server]\nwebhook_path = /a b\n",
	    "@:2: [server] webhook_path: must be printable ASCII without "
	    "spaces");
	load_err("[server]\nwebhook_path = /h\xc3\xa9\n",
	    "@:2: [server] webhook_path: must be printable ASCII without "
	    "spaces");
	load_err("[server]\nwebhook_path = /healthz\n",
	    "@:2: [server] webhook_path: /healthz is the health check");
	load_err("[server]\nwebhook_path =\n",
	    "@:2: [server] webhook_path: must not be empty");
}
END_TEST

START_TEST(test_api_base)
{
	struct config *cfg = load_ok("[wix]\napi_base = http://[::1]:9000\n");

	ck_assert_str_eq(cfg->api_base, "http://[::1]:9000");
	config_free(cfg);
	cfg = load_ok("[wix]\napi_base = http://localhost/x\n");
	config_free(cfg);
	cfg = load_ok("[wix]\napi_base = http://127.1.2.3:80\n");
	config_free(cfg);
	cfg = load_ok("[wix]\napi_base = https://10.0.0.1:8443\n");
	config_free(cfg);
	load_err("[wix]\napi_base = ftp://example.com\n",
	    "@:2: [wix] api_base: must start with https://");
	load_err("[wix]\napi_base = www.wixapis.com\n",
	    "@:2: [wix] api_base: must start with https://");
	/* Plain http:// only to loopback: the secret would travel in
	 * clear text. */
	load_err("[wix]\napi_base = http://www.wixapis.com\n",
	    "@:2: [wix] api_base: must start with https:// (http:// only to "
	    "localhost, 127.0.0.0/8 or [::1]: the credentials would cross "
	    "the network in clear text)");
	load_err("[wix]\napi_base = http://127.0.0.1.evil.example\n",
	    "@:2: [wix] api_base: must start with https:// (http:// only to "
	    "localhost, 127.0.0.0/8 or [::1]: the credentials would cross "
	    "the network in clear text)");
	load_err("[wix]\napi_base = http://localhost.example\n",
	    "@:2: [wix] api_base: must start with https:// (http:// only to "
	    "localhost, 127.0.0.0/8 or [::1]: the credentials would cross "
	    "the network in clear text)");
	load_err("[wix]\napi_base = http://[::2]:80\n",
	    "@:2: [wix] api_base: must start with https:// (http:// only to "
	    "localhost, 127.0.0.0/8 or [::1]: the credentials would cross "
	    "the network in clear text)");
	load_err("[wix]\napi_base = https://\n",
	    "@:2: [wix] api_base: has no host");
	load_err("[wix]\napi_base = https://a b\n",
	    "@:2: [wix] api_base: must be printable ASCII without spaces");
	load_err("[wix]\napi_base =\n",
	    "@:2: [wix] api_base: must not be empty");
}
END_TEST

START_TEST(test_tokens)
{
	load_err("[wix]\napp_id = my app\n",
	    "@:2: [wix] app_id: must be printable ASCII without spaces");
	load_err("[wix]\nsite_id = a\tb\n",
	    "@:2: [wix] site_id: must be printable ASCII without spaces");
}
END_TEST

START_TEST(test_lists)
{
	struct config *cfg;

	cfg = load_ok("[wix]\napi_key_file = /k\nsite_id = s\n"
	    "instances =  a , b\t,c  \n");
	ck_assert_uint_eq(cfg->ninstances, 3);
	ck_assert_str_eq(cfg->instances[0], "a");
	ck_assert_str_eq(cfg->instances[1], "b");
	ck_assert_str_eq(cfg->instances[2], "c");
	ck_assert_ptr_null(cfg->instances[3]);
	config_free(cfg);

	cfg = load_ok("[wix]\npublic_key_file =\n");
	ck_assert_uint_eq(cfg->npublic_key_files, 0);
	ck_assert_ptr_nonnull(cfg->public_key_files);
	ck_assert_ptr_null(cfg->public_key_files[0]);
	config_free(cfg);

	load_err("[wix]\napi_key_file = /k\nsite_id = s\ninstances = a,,b\n",
	    "@:4: [wix] instances: item 2 of the list is empty");
	load_err("[wix]\napi_key_file = /k\nsite_id = s\ninstances = a, \n",
	    "@:4: [wix] instances: item 2 of the list is empty");
	load_err("[wix]\napi_key_file = /k\nsite_id = s\ninstances = , a\n",
	    "@:4: [wix] instances: item 1 of the list is empty");
	load_err("[wix]\napi_key_file = /k\nsite_id = s\ninstances = a b\n",
	    "@:4: [wix] instances: must be printable ASCII without spaces");
	load_err("[wix]\npublic_key_file = a.pem,,b.pem\n",
	    "@:2: [wix] public_key_file: item 2 of the list is empty");
}
END_TEST

START_TEST(test_relative_paths)
{
	struct config *cfg;
	char *want;

	cfg = load_ok("[store]\npath = data/rs.db\n[wix]\n"
	    "public_key_file = k1.pem, /abs/k2.pem ,credential:wixkey,./k3\n"
	    "app_id = app\napp_secret_file = secret.txt\n");
	want = tmp_path("data/rs.db");
	ck_assert_str_eq(cfg->store_path, want);
	free(want);
	ck_assert_uint_eq(cfg->npublic_key_files, 4);
	want = tmp_path("k1.pem");
	ck_assert_str_eq(cfg->public_key_files[0], want);
	free(want);
	ck_assert_str_eq(cfg->public_key_files[1], "/abs/k2.pem");
	ck_assert_str_eq(cfg->public_key_files[2], "credential:wixkey");
	want = tmp_path("k3");
	ck_assert_str_eq(cfg->public_key_files[3], want);
	free(want);
	want = tmp_path("secret.txt");
	ck_assert_str_eq(cfg->app_secret_file, want);
	free(want);
	config_free(cfg);

	cfg = load_ok("[wix]\napi_key_file = credential:key\nsite_id = s\n");
	ck_assert_str_eq(cfg->api_key_file, "credential:key");
	config_free(cfg);
}
END_TEST

/* A relative config path: dir is still absolute, messages use the path
 * as given. */
START_TEST(test_relative_config_path)
{
	struct config *cfg = NULL;
	char old[PATH_MAX], *errors = NULL, *want;

	ck_assert_ptr_nonnull(getcwd(old, sizeof(old)));
	ck_assert_int_eq(chdir(tmpdir), 0);
	write_file("test.conf", "[store]\npath = rs.db\n", 21);
	ck_assert_int_eq(config_load("test.conf", &cfg, &errors), RS_OK);
	ck_assert_str_eq(cfg->path, "test.conf");
	ck_assert_str_eq(cfg->dir, tmpdir);
	want = tmp_path("rs.db");
	ck_assert_str_eq(cfg->store_path, want);
	free(want);
	config_free(cfg);
	cfg = NULL;

	write_file("test.conf", "[store]\nnope = 1\n", 17);
	ck_assert_int_eq(config_load("./test.conf", &cfg, &errors),
	    RS_ERR_CONFIG);
	ck_assert_str_eq(errors, "./test.conf:2: [store] nope: unknown key");
	free(errors);
	ck_assert_int_eq(chdir(old), 0);
}
END_TEST

START_TEST(test_credential_refs_bad)
{
	load_err("[wix]\napp_id = a\napp_secret_file = credential:\n",
	    "@:3: [wix] app_secret_file: \"credential:\": the credential "
	    "name must not be empty or contain '/'");
	load_err("[wix]\nsite_id = s\napi_key_file = credential:a/b\n",
	    "@:3: [wix] api_key_file: \"credential:a/b\": the credential "
	    "name must not be empty or contain '/'");
	load_err("[wix]\npublic_key_file = k.pem, credential:..\n",
	    "@:2: [wix] public_key_file: \"credential:..\": the credential "
	    "name must not be empty or contain '/'");
}
END_TEST

/* ---- structure: sections, keys, syntax ------------------------------- */

START_TEST(test_unknown_key)
{
	load_err("[server]\nlisten = 127.0.0.1:1\nfoo = 1\n",
	    "@:3: [server] foo: unknown key");
	load_err("[server]\nThreads = 2\n",
	    "@:2: [server] Threads: unknown key");
	/* A key of another section. */
	load_err("[store]\nthreads = 2\n",
	    "@:2: [store] threads: unknown key");
}
END_TEST

START_TEST(test_unknown_section)
{
	load_err("\n[foo]\nx = 1\ny = 2\n", "@:2: [foo]: unknown section");
	load_err("[Server]\nthreads = 2\n", "@:1: [Server]: unknown section");
	load_err("[server x]\n", "@:1: [server x]: unknown section");
	load_err("[]\n", "@:1: []: unknown section");
	/* Keys after a good section header count again. */
	load_err("[foo]\nx = 1\n[server]\nbar = 1\n",
	    "@:1: [foo]: unknown section\n"
	    "@:4: [server] bar: unknown key");
}
END_TEST

START_TEST(test_exporter_section)
{
	/* [exporter NAME] sections are parsed (their keys are checked in
	 * tests/unit/check_export.c); the errors keep file:line. */
	load_err("[server]\nthreads = 3\n\n[exporter books]\ntype = jsonl\n"
	    "path = /tmp/x\nbogus = 1\n",
	    "@:7: [exporter books] bogus: unknown key");
	/* An exporter's keys are checked after the whole file is read;
	 * its errors still come in the file's order. */
	load_err("[exporter books]\ntype = jsonl\npath = /tmp/x\n"
	    "bogus = 1\n[store]\nbusy_timeout = -5\n",
	    "@:4: [exporter books] bogus: unknown key\n"
	    "@:6: [store] busy_timeout: \"-5\" is out of range 0..600000");
	load_err("[exporter books]\ntype = jsonl\n",
	    "@:1: [exporter books] path: missing (type jsonl needs it)");
	load_err("[exporter]\n",
	    "@:1: [exporter]: an exporter needs a name: [exporter NAME]");
	load_err("[exporterx]\n", "@:1: [exporterx]: unknown section");
}
END_TEST

/*
 * The values of an exporter type's own keys are parsed by the exporter's
 * own code when the config loads, so `check`, the start and a reload
 * refuse what open() would: at the key's line, every bad value listed.
 */
START_TEST(test_exporter_values)
{
	struct config *cfg;

	load_err("[exporter a]\ntype = jsonl\npath = a.jsonl\nbody = maybe\n",
	    "@:4: [exporter a] body: maybe is not yes/no, true/false, on/off "
	    "or 1/0");
	load_err("[exporter a]\ntype = http\nurl = ftp://x\n",
	    "@:3: [exporter a] url: must start with http:// or https://");
	load_err("[exporter a]\ntype = http\nurl = notaurl\n",
	    "@:3: [exporter a] url: must start with http:// or https://");
	load_err("[exporter a]\ntype = http\nurl = http:///x\n",
	    "@:3: [exporter a] url: no host");
	load_err("[exporter a]\ntype = http\nurl = http://127.0.0.1:9/\n"
	    "connect_timeout = 0\n",
	    "@:4: [exporter a] connect_timeout: too small (whole seconds "
	    "from 1 to 3600)");
	load_err("[exporter a]\ntype = exec\ncommand = cat\ntimeout = 1m\n",
	    "@:4: [exporter a] timeout: invalid (whole seconds from 1 to "
	    "3600)");
	load_err("[exporter a]\ntype = ledger\npath = a.journal\n"
	    "clearing_account = Assets:Wix  Clearing\n",
	    "@:4: [exporter a] clearing_account: \"Assets:Wix  Clearing\" is "
	    "not a valid ledger account name");
	/* Every bad key of every section, each at its line; a generic
	 * key's error is there too. */
	load_err("[exporter b]\n"				/* 1 */
	    "type = beancount\n"				/* 2 */
	    "path = b.beancount\n"				/* 3 */
	    "refund_account = expenses:refunds\n"		/* 4 */
	    "processing_fee_account = Fees\n"		/* 5 */
	    "batch = -1\n"					/* 6 */
	    "[exporter c]\n"					/* 7 */
	    "type = csv\n"					/* 8 */
	    "path = c.csv\n"					/* 9 */
	    "[exporter h]\n"					/* 10 */
	    "type = http\n"					/* 11 */
	    "timeout = 0\n"					/* 12 */
	    "url = notaurl\n",				/* 13 */
	    "@:4: [exporter b] refund_account: \"expenses:refunds\" is not "
	    "a valid beancount account name\n"
	    "@:5: [exporter b] processing_fee_account: \"Fees\" is not a "
	    "valid beancount account name\n"
	    "@:6: [exporter b] batch: \"-1\" is out of range 0..10000\n"
	    "@:12: [exporter h] timeout: too small (whole seconds from 1 to "
	    "3600)\n"
	    "@:13: [exporter h] url: must start with http:// or https://");
	/* A section already refused for its keys is not checked again. */
	load_err("[exporter a]\ntype = jsonl\nbody = maybe\n",
	    "@:1: [exporter a] path: missing (type jsonl needs it)");

	/* Good values, and a secret file that is not read at load. */
	cfg = load_ok("[exporter a]\ntype = jsonl\npath = a.jsonl\n"
	    "body = no\n"
	    "[exporter h]\ntype = http\nurl = https://erp.example/hook\n"
	    "timeout = 10\nconnect_timeout = 3\n"
	    "secret_file = /nonexistent/secret\n"
	    "[exporter e]\ntype = exec\ncommand = cat\ntimeout = 5\n"
	    "[exporter l]\ntype = ledger\npath = l.journal\n"
	    "refund_account = Expenses:Refunds:Wix\n"
	    "[exporter p]\ntype = plugin\npath = /nonexistent/p.so\n"
	    "whatever = it likes\n");
	ck_assert_uint_eq(cfg->nexporters, 5);
	config_free(cfg);
}
END_TEST

START_TEST(test_key_outside_section)
{
	load_err("threads = 2\n[server]\n",
	    "@:1: threads: key outside of any [section]");
}
END_TEST

START_TEST(test_duplicate_key)
{
	load_err("[server]\nthreads = 2\n\nthreads = 3\n",
	    "@:4: [server] threads: duplicate key (first set on line 2)");
	/* A section may appear twice, but its keys still only once. */
	load_err("[server]\nthreads = 2\n[store]\n[server]\nthreads = 2\n",
	    "@:5: [server] threads: duplicate key (first set on line 2)");
	/* Even when the first value was refused. */
	load_err("[server]\nthreads = x\nthreads = 2\n",
	    "@:2: [server] threads: \"x\" is not an integer\n"
	    "@:3: [server] threads: duplicate key (first set on line 2)");
}
END_TEST

START_TEST(test_syntax_errors)
{
	load_err("[server\n",
	    "@:1: [server: expected ']' at the end of the line");
	load_err("[server] junk\nthreads = 3\n",
	    "@:1: [server] junk: expected ']' at the end of the line");
	load_err("[server]\njunk\n",
	    "@:2: expected \"key = value\" or \"[section]\"");
	load_err("[server]\nlisten: 127.0.0.1:80\n",
	    "@:2: expected \"key = value\" or \"[section]\"");
	load_err_n("[server]\nthreads = 3\0x\n", 21,
	    "@:2: NUL byte in the line");
}
END_TEST

START_TEST(test_many_errors)
{
	load_err(
	    "[server]\n"			/* 1 */
	    "threads = 0\n"			/* 2 */
	    "listen = nowhere\n"		/* 3 */
	    "bogus = 1\n"			/* 4 */
	    "[nope]\n"				/* 5 */
	    "a = b\n"				/* 6 */
	    "[store]\n"				/* 7 */
	    "busy_timeout = soon\n"		/* 8 */
	    "busy_timeout = 1\n"		/* 9 */
	    "garbage\n"				/* 10 */
	    "[backfill]\n"			/* 11 */
	    "on_install = perhaps\n"		/* 12 */
	    "[exporter x]\n"			/* 13 */
	    "[wix]\n"				/* 14 */
	    "api_key_file = key\n",		/* 15 */
	    "@:2: [server] threads: \"0\" is out of range 1..64\n"
	    "@:3: [server] listen: \"nowhere\": missing port\n"
	    "@:4: [server] bogus: unknown key\n"
	    "@:5: [nope]: unknown section\n"
	    "@:8: [store] busy_timeout: \"soon\" is not an integer\n"
	    "@:9: [store] busy_timeout: duplicate key (first set on line 8)\n"
	    "@:10: expected \"key = value\" or \"[section]\"\n"
	    "@:12: [backfill] on_install: \"perhaps\" is not yes/no, "
	    "true/false, on/off or 1/0\n"
	    "@:13: [exporter x] type: missing (one of jsonl, csv, ledger, "
	    "beancount, http, exec, plugin)\n"
	    "@:15: [wix] api_key_file: API-key mode needs site_id");
}
END_TEST

START_TEST(test_too_many_errors)
{
	struct buf b;
	char *text, *errors = NULL, *last;
	struct config *cfg = NULL;
	int i, lines = 0;

	buf_init(&b, 1 << 20);
	ck_assert_int_eq(buf_appends(&b, "[server]\n"), RS_OK);
	for (i = 0; i < 150; i++)
		ck_assert_int_eq(buf_printf(&b, "k%d = 1\n", i), RS_OK);
	text = buf_detach(&b, NULL);
	write_file(conf, text, strlen(text));
	ck_assert_int_eq(config_load(conf, &cfg, &errors), RS_ERR_CONFIG);
	for (last = errors; strchr(last, '\n') != NULL; lines++)
		last = strchr(last, '\n') + 1;
	ck_assert_int_eq(lines, 100);
	free(text);
	text = expand("@: 50 more errors not shown");
	ck_assert_str_eq(last, text);
	free(text);
	text = expand("@:2: [server] k0: unknown key\n");
	ck_assert_ptr_eq(strstr(errors, text), errors);
	free(text);
	ck_assert_ptr_nonnull(strstr(errors, "[server] k99: unknown key\n"));
	ck_assert_ptr_null(strstr(errors, "k100"));
	free(errors);
}
END_TEST

START_TEST(test_inline_comments)
{
	struct config *cfg;

	cfg = load_ok("[server] ; the server\n"
	    "threads = 4 ; four\n"
	    "request_timeout = 5\t; tab first\n"
	    "listen = 127.0.0.1:9 ;\n"
	    "[wix] ; wix\n"
	    "app_id = a;b\n"
	    "site_id =  ; nothing\n");
	ck_assert_int_eq(cfg->threads, 4);
	ck_assert_int_eq(cfg->request_timeout, 5);
	ck_assert_str_eq(cfg->listen, "127.0.0.1:9");
	ck_assert_str_eq(cfg->app_id, "a;b");
	ck_assert_str_eq(cfg->site_id, "");
	config_free(cfg);
	/* '#' only starts a comment at the start of a line. */
	load_err("[server]\nthreads = 4 # four\n",
	    "@:2: [server] threads: \"4 # four\" is not an integer");
}
END_TEST

START_TEST(test_layout)
{
	struct config *cfg;

	/* Indented keys are keys, not continuation lines. */
	cfg = load_ok("[server]\n  threads = 3\n\trequest_timeout = 7\n"
	    "  [store]\n    busy_timeout = 9\n");
	ck_assert_int_eq(cfg->threads, 3);
	ck_assert_int_eq(cfg->request_timeout, 7);
	ck_assert_int_eq(cfg->busy_timeout_ms, 9);
	config_free(cfg);
	/* CRLF, a BOM, blanks around '=', no final newline. */
	cfg = load_ok("\xef\xbb\xbf[server]\r\nthreads=5\r\n"
	    "request_timeout   =   6");
	ck_assert_int_eq(cfg->threads, 5);
	ck_assert_int_eq(cfg->request_timeout, 6);
	config_free(cfg);
}
END_TEST

START_TEST(test_long_lines)
{
	struct config *cfg;
	char *text, pad[400];

	/* Long comments are fine. */
	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	text = xasprintf("# %s\n[server]\n; %s\nthreads = 3\n", pad, pad);
	cfg = load_ok(text);
	ck_assert_int_eq(cfg->threads, 3);
	config_free(cfg);
	free(text);

	/* A long value is refused, with its line number (inih's limit). */
	pad[200] = '\0';
	text = xasprintf("[wix]\napp_id = %s\nsite_id = x y\n", pad);
	load_err(text, "@:2: line too long (more than 198 bytes)\n"
	    "@:3: [wix] site_id: must be printable ASCII without spaces");
	free(text);
}
END_TEST

/* ---- whole-config rules ------------------------------------------------ */

START_TEST(test_cross_connections)
{
	struct config *cfg;

	cfg = load_ok("[server]\nmax_connections = 10\n"
	    "max_connections_per_ip = 10\n");
	ck_assert_int_eq(cfg->max_connections_per_ip, 10);
	config_free(cfg);
	load_err("[server]\nmax_connections = 10\n",
	    "@:2: [server] max_connections: 10 is less than "
	    "max_connections_per_ip (64)");
	load_err("[server]\n\nmax_connections_per_ip = 600\n",
	    "@:3: [server] max_connections_per_ip: 600 is more than "
	    "max_connections (512)");
	/* A refused value is not compared. */
	load_err("[server]\nmax_connections = x\n"
	    "max_connections_per_ip = 600\n",
	    "@:2: [server] max_connections: \"x\" is not an integer");
}
END_TEST

START_TEST(test_cross_listen)
{
	struct config *cfg;

	load_err("[server]\nlisten = 127.0.0.1:8081\n",
	    "@:2: [server] listen: clashes with admin_listen "
	    "(127.0.0.1:8081)");
	load_err("[server]\nadmin_listen = localhost:8080\n",
	    "@:2: [server] admin_listen: clashes with listen "
	    "(127.0.0.1:8080)");
	load_err("[server]\nadmin_listen = 0.0.0.0:8080\n",
	    "@:2: [server] admin_listen: clashes with listen "
	    "(127.0.0.1:8080)");
	load_err("[server]\nadmin_listen = [::]:8080\n",
	    "@:2: [server] admin_listen: clashes with listen "
	    "(127.0.0.1:8080)");
	/* Port 0, other addresses and "off" do not clash. */
	cfg = load_ok("[server]\nlisten = 127.0.0.1:0\n"
	    "admin_listen = 127.0.0.1:0\n");
	config_free(cfg);
	cfg = load_ok("[server]\nadmin_listen = 127.0.0.2:8080\n");
	config_free(cfg);
	cfg = load_ok("[server]\nadmin_listen = [::1]:8080\n");
	config_free(cfg);
	cfg = load_ok("[server]\nlisten = 127.0.0.1:8081\nadmin_listen =\n");
	config_free(cfg);
}
END_TEST

START_TEST(test_cross_wix)
{
	struct config *cfg;

	cfg = load_ok("[wix]\napp_id = a\napp_secret_file = s\n"
	    "instances = i\n");
	config_free(cfg);
	cfg = load_ok("[wix]\napi_key_file = k\nsite_id = s\n");
	config_free(cfg);
	load_err("[wix]\napp_secret_file = s\n",
	    "@:2: [wix] app_secret_file: needs app_id");
	load_err("[wix]\n\napi_key_file = k\n",
	    "@:3: [wix] api_key_file: API-key mode needs site_id");
	load_err("[wix]\napp_id = a\napp_secret_file = s\napi_key_file = k\n"
	    "site_id = s\n",
	    "@:4: [wix] api_key_file: cannot be used with app_secret_file: "
	    "choose OAuth or API-key mode");
	load_err("[wix]\ninstances = a,b\n",
	    "@:2: [wix] instances: backfill needs app_secret_file or "
	    "api_key_file");
}
END_TEST

START_TEST(test_missing_file)
{
	struct config *cfg = NULL;
	char *errors = NULL, *want;

	want = tmp_path("none.conf");
	ck_assert_int_eq(config_load(want, &cfg, &errors), RS_ERR_CONFIG);
	ck_assert_ptr_null(cfg);
	free(want);
	want = xasprintf("%s/none.conf: cannot open: %s", tmpdir,
	    strerror(ENOENT));
	ck_assert_str_eq(errors, want);
	free(want);
	free(errors);

	errors = NULL;
	ck_assert_int_eq(config_load(tmpdir, &cfg, &errors), RS_ERR_CONFIG);
	ck_assert_ptr_null(cfg);
	want = xasprintf("%s: cannot read: %s", tmpdir, strerror(EISDIR));
	ck_assert_str_eq(errors, want);
	free(want);
	free(errors);
}
END_TEST

/* ---- config_path_choose, config_read_secret, config_parse_listen ------- */

START_TEST(test_path_choose)
{
	ck_assert_str_eq(config_path_choose(NULL), CONFIG_DEFAULT_PATH);
	ck_assert_str_eq(config_path_choose(""), CONFIG_DEFAULT_PATH);
	ck_assert_int_eq(setenv(CONFIG_ENV, "", 1), 0);
	ck_assert_str_eq(config_path_choose(NULL), CONFIG_DEFAULT_PATH);
	ck_assert_int_eq(setenv(CONFIG_ENV, "/env/rs.conf", 1), 0);
	ck_assert_str_eq(config_path_choose(NULL), "/env/rs.conf");
	ck_assert_str_eq(config_path_choose("/arg/rs.conf"), "/arg/rs.conf");
	ck_assert_int_eq(unsetenv(CONFIG_ENV), 0);
	ck_assert_str_eq(config_path_choose("/arg/rs.conf"), "/arg/rs.conf");
	/* SPEC §1, whatever prefix the build used. */
	ck_assert_str_eq(CONFIG_DEFAULT_PATH,
	    "/etc/refundsync/refundsync.conf");
}
END_TEST

START_TEST(test_read_secret_file)
{
	char *path, *out = NULL, *why = NULL, *want;

	path = tmp_path("secret");
	write_file(path, "hunter2\r\n\n", 10);
	ck_assert_int_eq(config_read_secret(path, 64, &out, &why), RS_OK);
	ck_assert_str_eq(out, "hunter2");
	ck_assert_ptr_null(why);
	freezero_str(out);
	out = NULL;

	/* Exactly max bytes is fine; one more is not, and the reason does
	 * not show the content. */
	ck_assert_int_eq(config_read_secret(path, 10, &out, &why), RS_OK);
	freezero_str(out);
	out = NULL;
	ck_assert_int_eq(config_read_secret(path, 9, &out, &why),
	    RS_ERR_TOOBIG);
	ck_assert_ptr_null(out);
	want = xasprintf("%s: larger than 9 bytes", path);
	ck_assert_str_eq(why, want);
	ck_assert_ptr_null(strstr(why, "hunter2"));
	free(want);
	free(why);
	why = NULL;

	write_file(path, "\n", 1);
	ck_assert_int_eq(config_read_secret(path, 64, &out, &why),
	    RS_ERR_CONFIG);
	want = xasprintf("%s: is empty", path);
	ck_assert_str_eq(why, want);
	free(want);
	free(why);
	why = NULL;

	write_file(path, "a\0b", 3);
	ck_assert_int_eq(config_read_secret(path, 64, &out, &why),
	    RS_ERR_CONFIG);
	want = xasprintf("%s: contains a NUL byte", path);
	ck_assert_str_eq(why, want);
	free(want);
	free(why);
	why = NULL;
	free(path);

	path = tmp_path("absent");
	ck_assert_int_eq(config_read_secret(path, 64, &out, &why), RS_ERR_IO);
	want = xasprintf("%s: %s", path, strerror(ENOENT));
	ck_assert_str_eq(why, want);
	free(want);
	free(why);
	why = NULL;
	free(path);

	ck_assert_int_eq(config_read_secret(tmpdir, 64, &out, &why),
	    RS_ERR_CONFIG);
	want = xasprintf("%s: not a regular file", tmpdir);
	ck_assert_str_eq(why, want);
	free(want);
	free(why);
	why = NULL;

	ck_assert_int_eq(config_read_secret("", 64, &out, &why),
	    RS_ERR_CONFIG);
	ck_assert_str_eq(why, "no file given");
	free(why);
	ck_assert_ptr_null(out);
}
END_TEST

START_TEST(test_read_secret_credential)
{
	char *path, *out = NULL, *why = NULL;

	path = tmp_path("wixkey");
	write_file(path, "s3cret\n", 7);
	free(path);

	ck_assert_int_eq(config_read_secret("credential:wixkey", 64, &out,
	    &why), RS_ERR_CONFIG);
	ck_assert_str_eq(why,
	    "credential:wixkey: $CREDENTIALS_DIRECTORY is not set");
	free(why);
	why = NULL;
	ck_assert_int_eq(setenv("CREDENTIALS_DIRECTORY", "", 1), 0);
	ck_assert_int_eq(config_read_secret("credential:wixkey", 64, &out,
	    &why), RS_ERR_CONFIG);
	free(why);
	why = NULL;

	ck_assert_int_eq(setenv("CREDENTIALS_DIRECTORY", tmpdir, 1), 0);
	ck_assert_int_eq(config_read_secret("credential:wixkey", 64, &out,
	    &why), RS_OK);
	ck_assert_str_eq(out, "s3cret");
	freezero_str(out);
	out = NULL;

	ck_assert_int_eq(config_read_secret("credential:../wixkey", 64, &out,
	    &why), RS_ERR_CONFIG);
	ck_assert_str_eq(why, "credential:../wixkey: the credential name "
	    "must not be empty or contain '/'");
	free(why);
	why = NULL;
	ck_assert_int_eq(config_read_secret("credential:", 64, &out, &why),
	    RS_ERR_CONFIG);
	free(why);
	why = NULL;
	ck_assert_int_eq(config_read_secret("credential:..", 64, &out, &why),
	    RS_ERR_CONFIG);
	free(why);
	why = NULL;
	ck_assert_int_eq(config_read_secret("credential:nope", 64, &out,
	    &why), RS_ERR_IO);
	ck_assert_ptr_nonnull(strstr(why, "/nope: "));
	free(why);
	ck_assert_ptr_null(out);
}
END_TEST

START_TEST(test_parse_listen)
{
	struct sockaddr_storage ss;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	unsigned len = 0;

	ck_assert_int_eq(config_parse_listen("127.0.0.1:8080", &ss, &len),
	    RS_OK);
	ck_assert_int_eq(ss.ss_family, AF_INET);
	ck_assert_uint_eq(len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(ntohs(sin->sin_port), 8080);
	ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001);

	ck_assert_int_eq(config_parse_listen("[::1]:0", &ss, &len), RS_OK);
	ck_assert_int_eq(ss.ss_family, AF_INET6);
	ck_assert_uint_eq(len, sizeof(struct sockaddr_in6));
	ck_assert_uint_eq(ntohs(sin6->sin6_port), 0);
	ck_assert(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

	ck_assert_int_eq(config_parse_listen("localhost:65535", &ss, &len),
	    RS_OK);
	ck_assert_int_eq(ss.ss_family, AF_INET);
	ck_assert_uint_eq(ntohs(sin->sin_port), 65535);
	ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001);

	ck_assert_int_eq(config_parse_listen("0.0.0.0:0", &ss, &len), RS_OK);
	ck_assert_int_eq(ss.ss_family, AF_INET);
	ck_assert_uint_eq(ntohs(sin->sin_port), 0);
	ck_assert_uint_eq(sin->sin_addr.s_addr, 0);

	ck_assert_int_eq(config_parse_listen("[2001:db8::5]:443", &ss, &len),
	    RS_OK);
	ck_assert_uint_eq(sin6->sin6_addr.s6_addr[0], 0x20);
	ck_assert_uint_eq(sin6->sin6_addr.s6_addr[15], 0x05);
	ck_assert_uint_eq(ntohs(sin6->sin6_port), 443);

	/* Failures leave the outputs alone. */
	len = 12345;
	ck_assert_int_eq(config_parse_listen("127.0.0.1", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("127.0.0.1:", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("127.0.0.1:65536", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("127.0.0.1:-1", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("127.0.0.1:080", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("127.0.0.1:http", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("example.com:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("127.1:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("256.0.0.1:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen(":80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("::1:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("[::1]", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("[::1]80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("[::1:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("[127.0.0.1]:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("[]:80", &ss, &len),
	    RS_ERR_CONFIG);
	ck_assert_int_eq(config_parse_listen("", &ss, &len), RS_ERR_CONFIG);
	ck_assert_uint_eq(len, 12345);
}
END_TEST

/* ---- the sample config ------------------------------------------------- */

/*
 * If line looks like "key = value", perhaps commented out ("# key = v",
 * "; key = v", ";key = v"), return where the key starts and set *commented;
 * else NULL.
 */
static const char *
key_line(const char *line, bool *commented)
{
	const char *s = line, *k;

	*commented = false;
	if (*s == '#' || *s == ';') {
		*commented = true;
		s++;
		if (*s == ' ')
			s++;
	}
	k = s;
	if (*s < 'a' || *s > 'z')
		return NULL;
	while ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
	    *s == '_')
		s++;
	if (strncmp(s, " =", 2) != 0 || (s[2] != '\0' && s[2] != ' '))
		return NULL;
	return k;
}

static char *
sample_path(void)
{
	const char *srcdir = getenv("RS_SRCDIR");

	ck_assert_msg(srcdir != NULL && *srcdir != '\0',
	    "RS_SRCDIR is not set (the source tree, for etc/refundsync.conf)");
	return xasprintf("%s/etc/refundsync.conf", srcdir);
}

/* The sample's lines, NULL-terminated; and the whole text in *text. */
static char **
sample_lines(char **text)
{
	char *path = sample_path(), **lines, *s, *nl;
	FILE *fp;
	struct buf b;
	char chunk[4096];
	size_t n, i = 0, cap = 16;

	ck_assert_ptr_nonnull(fp = fopen(path, "r"));
	buf_init(&b, 1 << 20);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		ck_assert_int_eq(buf_append(&b, chunk, n), RS_OK);
	ck_assert_int_eq(fclose(fp), 0);
	free(path);
	*text = buf_detach(&b, NULL);
	s = xstrdup(*text);
	lines = xcalloc(cap, sizeof(*lines));
	while (*s != '\0') {
		if (i + 2 > cap) {
			cap *= 2;
			lines = xreallocarray(lines, cap, sizeof(*lines));
		}
		lines[i++] = s;
		if ((nl = strchr(s, '\n')) == NULL)
			break;
		*nl = '\0';
		s = nl + 1;
	}
	lines[i] = NULL;
	return lines;
}

static void
sample_free(char **lines, char *text)
{
	if (lines[0] != NULL)
		free(lines[0]);
	free(lines);
	free(text);
}

START_TEST(test_sample_in_sync)
{
	const struct config_key *keys = config_keys(), *k;
	char **lines, *text, section[64] = "", *want;
	bool found[64] = { false }, commented;
	const char *key, *eq;
	size_t i, nkeys, len;

	for (nkeys = 0; keys[nkeys].name != NULL; nkeys++)
		;
	ck_assert_uint_le(nkeys, 64);
	lines = sample_lines(&text);
	for (i = 0; lines[i] != NULL; i++) {
		len = strlen(lines[i]);
		ck_assert_msg(len <= 79, "sample line %zu is %zu columns",
		    i + 1, len);
		if (lines[i][0] == '[') {
			ck_assert_msg(len >= 3 && lines[i][len - 1] == ']' &&
			    len - 2 < sizeof(section), "sample line %zu",
			    i + 1);
			memcpy(section, lines[i] + 1, len - 2);
			section[len - 2] = '\0';
			continue;
		}
		if ((key = key_line(lines[i], &commented)) == NULL)
			continue;
		eq = strstr(key, " =");
		for (k = keys; k->name != NULL; k++)
			if (strcmp(k->section, section) == 0 &&
			    strlen(k->name) == (size_t)(eq - key) &&
			    strncmp(k->name, key, (size_t)(eq - key)) == 0)
				break;
		ck_assert_msg(k->name != NULL, "sample line %zu: \"%s\" is not "
		    "a key of [%s]", i + 1, lines[i], section);
		ck_assert_msg(!found[k - keys], "sample line %zu: [%s] %s "
		    "twice", i + 1, k->section, k->name);
		found[k - keys] = true;
		if (commented) {
			/* A commented key shows its default. */
			want = k->def[0] != '\0' ?
			    xasprintf("%s = %s", k->name, k->def) :
			    xasprintf("%s =", k->name);
			ck_assert_msg(strcmp(key, want) == 0, "sample line "
			    "%zu: \"%s\", the default is \"%s\"", i + 1, key,
			    want);
			free(want);
		}
	}
	for (i = 0; i < nkeys; i++)
		ck_assert_msg(found[i], "[%s] %s is not in the sample config",
		    keys[i].section, keys[i].name);
	sample_free(lines, text);
}
END_TEST

START_TEST(test_sample_loads)
{
	struct config *cfg = NULL;
	char *path = sample_path(), *errors = NULL;

	ck_assert_msg(config_load(path, &cfg, &errors) == RS_OK, "%s",
	    errors != NULL ? errors : "");
	assert_defaults(cfg);
	config_free(cfg);
	free(path);
}
END_TEST

START_TEST(test_sample_uncommented_loads)
{
	struct config *cfg;
	char **lines, *text, *out;
	const char *key;
	struct buf b;
	bool commented;
	size_t i, n = 0;

	lines = sample_lines(&text);
	buf_init(&b, 1 << 20);
	for (i = 0; lines[i] != NULL; i++) {
		key = key_line(lines[i], &commented);
		if (key != NULL && commented)
			n++;
		ck_assert_int_eq(buf_printf(&b, "%s\n",
		    key != NULL ? key : lines[i]), RS_OK);
	}
	ck_assert_uint_eq(n, 26);
	out = buf_detach(&b, NULL);
	cfg = load_ok(out);
	assert_defaults(cfg);
	config_free(cfg);
	free(out);
	sample_free(lines, text);
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("load");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_empty_file);
	tcase_add_test(tc, test_comments_only);
	tcase_add_test(tc, test_config_defaults);
	tcase_add_test(tc, test_every_key_set);
	tcase_add_test(tc, test_table_defaults_load);
	tcase_add_test(tc, test_table_unique_lowercase);
	tcase_add_test(tc, test_int_good);
	tcase_add_test(tc, test_int_bad);
	tcase_add_test(tc, test_wix_timeouts);
	tcase_add_test(tc, test_bool);
	tcase_add_test(tc, test_listen_values);
	tcase_add_test(tc, test_webhook_path);
	tcase_add_test(tc, test_api_base);
	tcase_add_test(tc, test_tokens);
	tcase_add_test(tc, test_lists);
	tcase_add_test(tc, test_relative_paths);
	tcase_add_test(tc, test_relative_config_path);
	tcase_add_test(tc, test_credential_refs_bad);
	tcase_add_test(tc, test_unknown_key);
	tcase_add_test(tc, test_unknown_section);
	tcase_add_test(tc, test_exporter_section);
	tcase_add_test(tc, test_exporter_values);
	tcase_add_test(tc, test_key_outside_section);
	tcase_add_test(tc, test_duplicate_key);
	tcase_add_test(tc, test_syntax_errors);
	tcase_add_test(tc, test_many_errors);
	tcase_add_test(tc, test_too_many_errors);
	tcase_add_test(tc, test_inline_comments);
	tcase_add_test(tc, test_layout);
	tcase_add_test(tc, test_long_lines);
	tcase_add_test(tc, test_cross_connections);
	tcase_add_test(tc, test_cross_listen);
	tcase_add_test(tc, test_cross_wix);
	tcase_add_test(tc, test_missing_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("helpers");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_path_choose);
	tcase_add_test(tc, test_read_secret_file);
	tcase_add_test(tc, test_read_secret_credential);
	tcase_add_test(tc, test_parse_listen);
	suite_add_tcase(s, tc);

	tc = tcase_create("sample");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_sample_in_sync);
	tcase_add_test(tc, test_sample_loads);
	tcase_add_test(tc, test_sample_uncommented_loads);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0;
}
