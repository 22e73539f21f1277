/*
 * server.c: wires the listeners, the verifier and the writer together,
 * and runs the signal loop.
 *
 * Threads: the main thread waits in sigtimedwait() and does reloads and
 * the drain; MHD's threads run the handlers below (verify and decode,
 * CPU only, never the store); the ingest writer owns the store.  The
 * handlers reach the writer under a read lock that the stop takes for
 * writing, so none submits to (or asks) a writer already freed.  The
 * verification settings (keys, leeway) live in a refcounted struct
 * runtime that a reload replaces atomically: a request in flight keeps
 * the runtime it started with, so rotating keys drops nothing.
 *
 * Backfills run on the backfiller's own threads, each with its own store
 * connection; the ingest's responder only kicks them (an AppInstalled
 * that was applied), which never waits.
 *
 * A database that exists but cannot be written at start (a read-only
 * file, -wal, -shm, directory or mount) does not stop the start: the
 * daemon serves without a writer (webhooks 503, /readyz 503 with the
 * reason) and the main loop opens the store again every second; once
 * it can write, the exporters, the backfills to resume and the writer
 * start, as they would have at start.  A connection SQLite opened
 * read-only is closed, never kept: it would not write even once the
 * file could be written.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "adapters/config.h"
#include "adapters/httpd.h"
#include "adapters/jwtverify.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "core/backfill.h"
#include "core/export.h"
#include "core/ingest.h"
#include "core/reconcile.h"
#include "core/server.h"
#include "core/statuspage.h"
#include "domain/event.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/sdnotify.h"
#include "util/xmalloc.h"

/* Secret files (keys) are small; refuse anything larger. */
#define SERVER_KEY_MAX	(64 * 1024)
/* How long a stop waits for backfills to reach a page boundary. */
#define SERVER_BACKFILL_WAIT_MS	5000
/* While the store cannot be written, open it again this often. */
#define SERVER_STORE_RETRY_MS	1000

struct runtime {
	atomic_int		 refs;
	struct jwtv_keys	*keys;
	int64_t			 leeway;
	bool			 on_install;	/* [backfill] */
};

struct server {
	/* The configuration the daemon started with: what every setting
	 * that only a restart applies is running with.  cfg is the last
	 * one SIGHUP applied (keys, leeway, on_install), or boot. */
	struct config		*boot;
	struct config		*cfg;
	pthread_mutex_t		 rt_mtx;
	struct runtime		*rt;
	/* The writer: NULL while the store cannot be written, and once
	 * stopped.  Set by the main thread, read by the handlers.  A
	 * handler holds ingest_lk for reading from loading it to its last
	 * use of it; the main thread takes it away under ingest_lk for
	 * writing before it stops (and frees) it, so no handler still
	 * uses it then (server_ingest_stop()). */
	_Atomic(struct ingest *) ingest;
	pthread_rwlock_t	 ingest_lk;
	pthread_mutex_t		 store_mtx;
	char			*store_why;	/* why the store cannot be
						   written, or NULL; with
						   store_mtx */
	int64_t			 store_since;	/* mono ms: since when */
	int64_t			 store_tried;	/* mono ms: last attempt */
	struct httpd		*pub;
	struct httpd		*admin;
	char			*webhook_path;	/* owned copy for the routes */
	struct httpd_route	 pub_routes[2];
	struct httpd_route	 admin_routes[3];
	struct wixapi		*wix;		/* or NULL */
	struct backfiller	*bf;		/* NULL: backfill is off */
	struct reconciler	*rec;		/* NULL: periodic reconcile off */
	bool			 rec_running;	/* its thread outlived a stop */
	char			*store_path;	/* owned: as at start */
	int			 busy_ms;	/* as at start */
	struct export_engine	*exp;		/* the exporters' workers */
	struct statuspage	*status;	/* GET /status */
};

/* A webhook on its way through the writer. */
struct server_job {
	struct ingest_job	 job;		/* first: done() gets it */
	struct server		*srv;
	struct httpd_request	*req;
};

static struct runtime *
runtime_acquire(struct server *srv)
{
	struct runtime *rt;

	pthread_mutex_lock(&srv->rt_mtx);
	rt = srv->rt;
	atomic_fetch_add(&rt->refs, 1);
	pthread_mutex_unlock(&srv->rt_mtx);
	return rt;
}

static void
runtime_release(struct runtime *rt)
{
	if (rt != NULL && atomic_fetch_sub(&rt->refs, 1) == 1) {
		jwtv_keys_free(rt->keys);
		free(rt);
	}
}

enum rs_status
server_load_key(struct jwtv_keys **keys, const char *ref, char **why)
{
	char *pem = NULL, *rwhy = NULL;
	const char *r;
	enum rs_status st;

	if (strncmp(ref, "credential:", 11) == 0) {
		if (config_read_secret(ref, SERVER_KEY_MAX, &pem, &rwhy) !=
		    RS_OK) {
			*why = rwhy;
			return RS_ERR_CONFIG;
		}
		st = jwtv_keys_add_pem(keys, pem, strlen(pem), &r);
		freezero_str(pem);
	} else
		st = jwtv_keys_add_file(keys, ref, &r);
	if (st != RS_OK) {
		*why = xstrdup(r);
		return RS_ERR_CONFIG;
	}
	return RS_OK;
}

/* Load every configured public key.  RS_OK and *out, or a reason. */
static enum rs_status
load_keys(const struct config *cfg, struct jwtv_keys **out, char **why)
{
	struct jwtv_keys *keys = NULL;
	char *r = NULL;

	if (cfg->npublic_key_files == 0) {
		*why = xstrdup("[wix] public_key_file: no key configured");
		return RS_ERR_CONFIG;
	}
	for (size_t i = 0; i < cfg->npublic_key_files; i++) {
		const char *ref = cfg->public_key_files[i];

		if (server_load_key(&keys, ref, &r) != RS_OK) {
			*why = xasprintf("[wix] public_key_file %s: %s", ref,
			    r);
			free(r);
			jwtv_keys_free(keys);
			return RS_ERR_CONFIG;
		}
	}
	*out = keys;
	return RS_OK;
}

/* The dedupe key of an event without an id: the token's SHA-256. */
static char *
token_key(const char *token, size_t len)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char hex[2 * SHA256_DIGEST_LENGTH + 1];

	SHA256((const unsigned char *)token, len, md);
	for (size_t i = 0; i < sizeof(md); i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return xasprintf("sha256:%s", hex);
}

/*
 * " EVENT (refund R, instance I)" with what a webhook that failed to
 * decode got far enough to name, or "": Wix sends it again for two
 * days, and the operator needs the refund it carries to chase it.
 * Caller frees.
 */
static char *
decoded_which(const struct event *ev)
{
	const char *sp = ev->event_id != NULL ? " " : "";
	const char *e = ev->event_id != NULL ? ev->event_id : "";
	const char *r = ev->entity_id, *i = ev->instance_id;

	if (r != NULL && i != NULL)
		return xasprintf("%s%s (refund %s, instance %s)", sp, e, r,
		    i);
	if (r != NULL)
		return xasprintf("%s%s (refund %s)", sp, e, r);
	if (i != NULL)
		return xasprintf("%s%s (instance %s)", sp, e, i);
	return xasprintf("%s%s", sp, e);
}

/* Runs on the ingest's responder thread: an applied AppInstalled starts
 * a backfill in the background (the kick only queues it); an applied
 * AppRemoved stops one of that instance at its next page (Wix gives no
 * more tokens for it). */
static void
kick_backfill(struct server *srv, const struct ingest_job *job)
{
	struct runtime *rt;
	bool on;

	if (job->status != RS_OK || job->outcome != STORE_APPLIED ||
	    job->ev.instance_id == NULL)
		return;
	if (job->ev.kind == EVENT_APP_REMOVED) {
		backfiller_cancel(srv->bf, job->ev.instance_id);
		return;
	}
	if (job->ev.kind != EVENT_APP_INSTALLED)
		return;
	rt = runtime_acquire(srv);
	on = rt->on_install;
	runtime_release(rt);
	if (on && srv->bf != NULL)
		backfiller_kick(srv->bf, job->ev.instance_id);
}

static void
on_ingested(struct ingest_job *job, void *arg)
{
	struct server_job *sj = arg;
	struct httpd_request *req = sj->req;
	char body[64];
	int n;

	switch (job->status) {
	case RS_OK:
		log_debug("webhook %s from %s: 200: %s", job->key,
		    httpd_req_peer(req), store_outcome_name(job->outcome));
		n = snprintf(body, sizeof(body), "{\"outcome\":\"%s\"}",
		    store_outcome_name(job->outcome));
		httpd_respond(req, 200, "application/json", body, (size_t)n,
		    NULL, NULL);
		break;
	case RS_ERR_INPUT:
		log_info("webhook %s from %s: 400: the store refused it",
		    job->key, httpd_req_peer(req));
		httpd_respond_error(req, 400, "bad request", "rejected by store");
		break;
	default:
		log_info("webhook %s from %s: 503: store cannot commit: %s",
		    job->key, httpd_req_peer(req), job->why != NULL ?
		    job->why : rs_strstatus(job->status));
		httpd_respond_error(req, 503, "unavailable", "store");
		break;
	}
	kick_backfill(sj->srv, job);
	/* A new change-log entry: idle exporters look now. */
	if (job->status == RS_OK && job->outcome == STORE_APPLIED)
		export_engine_notify(sj->srv->exp);
	ingest_job_cleanup(job);
	free(sj);
}

static void
on_webhook(void *arg, struct httpd_request *req)
{
	struct server *srv = arg;
	struct runtime *rt;
	struct server_job *sj;
	struct ingest_job *job;
	struct ingest *in;
	enum jwtv_reason reason;
	enum rs_status st;
	cJSON *claims = NULL;
	const char *token, *why = NULL;
	size_t len;
	char label[64];

	token = httpd_req_body(req, &len);
	rt = runtime_acquire(srv);
	st = jwtv_verify(rt->keys, token, len, clock_wall_s(), rt->leeway,
	    &claims, &reason);
	runtime_release(rt);
	if (st != RS_OK) {
		snprintf(label, sizeof(label), "reason=\"%s\"",
		    jwtv_reason_name(reason));
		metrics_add("refundsync_verify_failures_total", label, 1);
		if (st == RS_ERR_AUTH) {
			log_info("webhook from %s: 401: %s",
			    httpd_req_peer(req), jwtv_reason_name(reason));
			httpd_respond_error(req, 401, "unauthorized",
			    jwtv_reason_name(reason));
		} else {
			log_info("webhook from %s: 400: signed payload is not "
			    "a JSON object", httpd_req_peer(req));
			httpd_respond_error(req, 400, "bad request",
			    jwtv_reason_name(reason));
		}
		return;
	}

	sj = xcalloc(1, sizeof(*sj));
	sj->srv = srv;
	sj->req = req;
	job = &sj->job;
	st = event_decode(claims, &job->ev, &why);
	cJSON_Delete(claims);
	if (st != RS_OK) {
		char *which = decoded_which(&job->ev);

		metrics_add("refundsync_decode_failures_total", "", 1);
		log_info("webhook%s from %s: 400: %s", which,
		    httpd_req_peer(req), why != NULL ? why : rs_strstatus(st));
		free(which);
		httpd_respond_error(req, 400, "bad request",
		    why != NULL ? why : rs_strstatus(st));
		ingest_job_cleanup(job);
		free(sj);
		return;
	}
	if (job->ev.event_id != NULL)
		job->key = xstrdup(job->ev.event_id);
	else
		job->key = token_key(token, len);
	job->done = on_ingested;
	job->arg = sj;

	pthread_rwlock_rdlock(&srv->ingest_lk);
	if ((in = atomic_load(&srv->ingest)) == NULL) {
		pthread_rwlock_unlock(&srv->ingest_lk);
		/* No writer: the store could not be written at start, or
		 * the daemon is stopping. */
		log_info("webhook %s from %s: 503: the store cannot be "
		    "written", job->key, httpd_req_peer(req));
		httpd_respond_error(req, 503, "unavailable", "store");
		ingest_job_cleanup(job);
		free(sj);
		return;
	}
	httpd_defer(req);
	st = ingest_submit(in, job);
	pthread_rwlock_unlock(&srv->ingest_lk);
	if (st != RS_OK) {
		log_info("webhook %s from %s: 503: stopping", job->key,
		    httpd_req_peer(req));
		httpd_respond_error(req, 503, "unavailable", "stopping");
		ingest_job_cleanup(job);
		free(sj);
	}
}

static void
on_healthz(void *arg, struct httpd_request *req)
{
	httpd_respond(req, 200, "text/plain", "ok\n", 3, NULL, NULL);
}

static void
on_readyz(void *arg, struct httpd_request *req)
{
	struct server *srv = arg;
	struct ingest *in;
	char *reason;
	bool ready;

	pthread_rwlock_rdlock(&srv->ingest_lk);
	in = atomic_load(&srv->ingest);
	ready = in != NULL && ingest_ready(in);
	pthread_rwlock_unlock(&srv->ingest_lk);
	if (ready) {
		httpd_respond(req, 200, "text/plain", "ready\n", 6, NULL,
		    NULL);
		return;
	}
	pthread_mutex_lock(&srv->store_mtx);
	if (in == NULL && srv->store_why != NULL)
		reason = xasprintf("store cannot be written: %s",
		    srv->store_why);
	else
		reason = xstrdup("store");
	pthread_mutex_unlock(&srv->store_mtx);
	httpd_respond_error(req, 503, "not ready", reason);
	free(reason);
}

static void
on_metrics(void *arg, struct httpd_request *req)
{
	struct server *srv = arg;
	struct store_options so;
	struct store *st = NULL;
	char *why = NULL;
	struct buf b;

	/* Repairs by reconcile, whichever process made them. */
	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = srv->busy_ms;
	so.readonly = true;
	if (store_open(srv->store_path, &so, &st, &why) == RS_OK)
		reconcile_metrics_refresh(st);
	store_close(st);
	free(why);
	buf_init(&b, 16 * 1024 * 1024);
	metrics_render(&b);
	httpd_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
	    b.data != NULL ? b.data : "", b.len, NULL, NULL);
	buf_cleanup(&b);
}

static void
server_define_metrics(void)
{
	metrics_define("refundsync_verify_failures_total", METRIC_COUNTER,
	    "Webhooks refused by verification, by reason.");
	metrics_define("refundsync_decode_failures_total", METRIC_COUNTER,
	    "Verified webhooks whose payload was malformed (400).");
	metrics_define("refundsync_reloads_total", METRIC_COUNTER,
	    "Configuration reloads, by result.");
	/* Shown at 0 from the start, as the writer's counters are. */
	metrics_add("refundsync_decode_failures_total", "", 0);
	metrics_define("refundsync_info", METRIC_GAUGE,
	    "Build information.");
	metrics_set("refundsync_info", "version=\"" PACKAGE_VERSION "\"", 1);
}

/* "127.0.0.1:8080" / "[::1]:8080" for a bound listener. */
static void
listener_name(const struct sockaddr_storage *ss, uint16_t port, char *out,
    size_t outlen)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr,
		    host, sizeof(host));
		snprintf(out, outlen, "[%s]:%u", host, port);
	} else {
		inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)(const void *)ss)->sin_addr,
		    host, sizeof(host));
		snprintf(out, outlen, "%s:%u", host, port);
	}
}

static enum rs_status
start_listener(struct server *srv, const char *name, const char *listen,
    const struct httpd_route *routes, size_t nroutes, struct httpd **out)
{
	const struct config *cfg = srv->boot;
	struct httpd_options opt;
	char *why = NULL, where[80];
	unsigned sslen = 0;

	memset(&opt, 0, sizeof(opt));
	if (config_parse_listen(listen, &opt.addr, &sslen) != RS_OK) {
		log_warnx("%s listener: bad address %s", name, listen);
		return RS_ERR_CONFIG;
	}
	opt.addrlen = (socklen_t)sslen;
	opt.name = name;
	opt.threads = (unsigned)cfg->threads;
	opt.max_body = (size_t)cfg->max_body;
	opt.request_timeout = (unsigned)cfg->request_timeout;
	opt.max_connections = (unsigned)cfg->max_connections;
	opt.max_connections_per_ip = (unsigned)cfg->max_connections_per_ip;
	opt.routes = routes;
	opt.nroutes = nroutes;
	if (strcmp(name, "admin") == 0) {
		/* Operators only: small and simple. */
		opt.threads = 1;
		opt.max_body = 4096;
	}
	if (httpd_start(&opt, out, &why) != RS_OK) {
		log_warnx("%s", why);
		free(why);
		return RS_ERR_IO;
	}
	listener_name(&opt.addr, httpd_port(*out), where, sizeof(where));
	log_info("%s listener on %s", name, where);
	return RS_OK;
}

/* The same instance ids, in the same order. */
static bool
instances_equal(const struct config *o, const struct config *n)
{
	if (o->ninstances != n->ninstances)
		return false;
	for (size_t i = 0; i < o->ninstances; i++)
		if (strcmp(o->instances[i], n->instances[i]) != 0)
			return false;
	return true;
}

/* Settings that only a restart applies. */
static void
reload_warn_restart(const struct config *o, const struct config *n)
{
	const struct {
		const char *key;
		bool changed;
	} rows[] = {
		{ "[server] listen", strcmp(o->listen, n->listen) != 0 },
		{ "[server] admin_listen",
		    strcmp(o->admin_listen, n->admin_listen) != 0 },
		{ "[server] webhook_path",
		    strcmp(o->webhook_path, n->webhook_path) != 0 },
		{ "[server] max_body", o->max_body != n->max_body },
		{ "[server] threads", o->threads != n->threads },
		{ "[server] request_timeout",
		    o->request_timeout != n->request_timeout },
		{ "[server] max_connections",
		    o->max_connections != n->max_connections },
		{ "[server] max_connections_per_ip",
		    o->max_connections_per_ip != n->max_connections_per_ip },
		{ "[server] commit_batch", o->commit_batch != n->commit_batch },
		{ "[store] path", strcmp(o->store_path, n->store_path) != 0 },
		{ "[store] busy_timeout",
		    o->busy_timeout_ms != n->busy_timeout_ms },
		{ "[wix] app_id", strcmp(o->app_id, n->app_id) != 0 },
		{ "[wix] app_secret_file",
		    strcmp(o->app_secret_file, n->app_secret_file) != 0 },
		{ "[wix] api_key_file",
		    strcmp(o->api_key_file, n->api_key_file) != 0 },
		{ "[wix] site_id", strcmp(o->site_id, n->site_id) != 0 },
		{ "[wix] api_base", strcmp(o->api_base, n->api_base) != 0 },
		{ "[wix] connect_timeout",
		    o->wix_connect_timeout != n->wix_connect_timeout },
		{ "[wix] timeout", o->wix_timeout != n->wix_timeout },
		/* Backfilled at start, reconciled by the boot config. */
		{ "[wix] instances", !instances_equal(o, n) },
		{ "[backfill] page_size", o->page_size != n->page_size },
		{ "[backfill] requests_per_minute",
		    o->requests_per_minute != n->requests_per_minute },
		{ "[reconcile] interval",
		    o->reconcile_interval != n->reconcile_interval },
		{ "[reconcile] heal", o->reconcile_heal != n->reconcile_heal },
	};
	const struct config_exporter *x;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		if (rows[i].changed)
			log_warnx("reload: %s changed: restart to apply it",
			    rows[i].key);
	/* Each exporter by name (names are printable, without quotes),
	 * so the operator knows which section waits for the restart. */
	for (i = 0; i < n->nexporters; i++) {
		x = config_exporter_find(o, n->exporters[i].name);
		if (x == NULL)
			log_warnx("reload: [exporter %s] added: restart to "
			    "apply it", n->exporters[i].name);
		else if (!config_exporter_equal(x, &n->exporters[i]))
			log_warnx("reload: [exporter %s] changed: restart to "
			    "apply it", n->exporters[i].name);
	}
	for (i = 0; i < o->nexporters; i++)
		if (config_exporter_find(n, o->exporters[i].name) == NULL)
			log_warnx("reload: [exporter %s] removed: restart to "
			    "apply it", o->exporters[i].name);
}

/*
 * What the start refuses beyond the config's syntax and its keys: an
 * exporter that cannot be set up (a plugin that is not there or was
 * built for another ABI) and a Wix secret that cannot be read.  A
 * reload refuses them as well: it must not answer "applied" for a file
 * the next start rejects with exit status 2, which systemd does not
 * restart.  RS_OK, or RS_ERR_CONFIG and *why on one line (caller
 * frees).
 */
static enum rs_status
reload_check(const struct config *cfg, char **why)
{
	*why = NULL;
	if (export_check_config(cfg, why) != RS_OK) {
		/* One log line: the exporters' errors, joined. */
		for (char *p = *why; p != NULL && *p != '\0'; p++)
			if (*p == '\n')
				*p = ';';
		return RS_ERR_CONFIG;
	}
	return backfill_check_secret(cfg, why);
}

static void
server_reload(struct server *srv)
{
	struct config *ncfg = NULL;
	struct jwtv_keys *keys = NULL;
	struct runtime *rt, *old;
	char *errors = NULL, *why = NULL;

	log_info("reload: reading %s", srv->cfg->path);
	if (config_load(srv->cfg->path, &ncfg, &errors) != RS_OK) {
		for (char *p = errors; p != NULL && *p != '\0'; p++)
			if (*p == '\n')
				*p = p[1] != '\0' ? ';' : '\0';
		log_warnx("reload refused: %s; the running configuration "
		    "stays", errors != NULL ? errors : "invalid");
		metrics_add("refundsync_reloads_total", "result=\"refused\"", 1);
		free(errors);
		return;
	}
	if (load_keys(ncfg, &keys, &why) != RS_OK) {
		log_warnx("reload refused: %s; the running configuration "
		    "stays", why);
		metrics_add("refundsync_reloads_total", "result=\"refused\"", 1);
		free(why);
		config_free(ncfg);
		return;
	}
	if (reload_check(ncfg, &why) != RS_OK) {
		log_warnx("reload refused: %s; the running configuration "
		    "stays", why != NULL ? why : "invalid");
		metrics_add("refundsync_reloads_total", "result=\"refused\"", 1);
		free(why);
		jwtv_keys_free(keys);
		config_free(ncfg);
		return;
	}
	/* Against what runs, not the last reload: a value put back is no
	 * change. */
	reload_warn_restart(srv->boot, ncfg);
	rt = xcalloc(1, sizeof(*rt));
	atomic_init(&rt->refs, 1);
	rt->keys = keys;
	rt->leeway = ncfg->jwt_leeway;
	rt->on_install = ncfg->on_install;
	pthread_mutex_lock(&srv->rt_mtx);
	old = srv->rt;
	srv->rt = rt;
	pthread_mutex_unlock(&srv->rt_mtx);
	runtime_release(old);
	log_info("reload: applied (%zu public key%s, jwt_leeway %lld s)",
	    jwtv_keys_count(keys), jwtv_keys_count(keys) == 1 ? "" : "s",
	    (long long)ncfg->jwt_leeway);
	metrics_add("refundsync_reloads_total", "result=\"applied\"", 1);
	if (srv->cfg != srv->boot)
		config_free(srv->cfg);
	srv->cfg = ncfg;
}

/*
 * The REST client and the backfiller, when credentials are configured
 * (server_writer_start() kicks the backfills to resume).  RS_OK
 * (backfill on or off), or RS_ERR_CONFIG (RS_ERR_IO: the store's
 * directory) with a log line.
 */
static enum rs_status
backfill_start(struct server *srv)
{
	const struct config *cfg = srv->boot;
	enum rs_status rc;
	char *why = NULL;

	rc = backfill_wixapi_new(cfg, &srv->wix, &why);
	if (rc == RS_ERR_NOTFOUND) {
		if (cfg->reconcile_interval > 0)
			log_warnx("reconcile: [reconcile] interval is set but "
			    "no Wix credentials are configured: the periodic "
			    "reconcile is off");
		log_info("backfill is off: no Wix credentials are configured "
		    "([wix] app_id and app_secret_file, or api_key_file and "
		    "site_id); AppInstalled only records the instance");
		return RS_OK;
	}
	if (rc != RS_OK) {
		log_errx("cannot start: %s", why != NULL ? why : "backfill");
		free(why);
		/* RS_ERR_IO: the store's directory (exit 1, as for a store
		 * that cannot be opened). */
		return rc == RS_ERR_IO ? RS_ERR_IO : RS_ERR_CONFIG;
	}
	srv->bf = backfiller_start(cfg, srv->wix, NULL);
	/* Shares the REST client, so its requests come out of the same
	 * per-instance budget as the backfills'. */
	srv->rec = reconciler_start(cfg, srv->wix);
	return RS_OK;
}

/* After backfiller_stop() and once ingest is gone (it kicks): free
 * the backfiller and the REST client, unless a worker still holds
 * them. */
static void
backfill_free(struct server *srv)
{
	if (srv->rec != NULL)
		srv->rec_running = !reconciler_stop(srv->rec,
		    SERVER_BACKFILL_WAIT_MS);
	srv->rec = NULL;
	/* A reconcile still inside a Wix call uses the client too. */
	if (backfiller_free(srv->bf) && !srv->rec_running)
		wixapi_free(srv->wix);
	srv->bf = NULL;
	srv->wix = NULL;
}

/*
 * Open the writer's connection, waiting at most busy_ms for a lock:
 * RS_OK and *out, or why not in *why (caller frees): RS_ERR_BUSY when
 * the database exists but cannot be written now, another error when it
 * will not be.  A connection SQLite could open only for reading is
 * closed: it would never write.
 */
static enum rs_status
server_store_open(const struct server *srv, int busy_ms, struct store **out,
    char **why)
{
	struct store_options so;
	struct store *st = NULL;
	enum rs_status rc;

	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = busy_ms;
	/* The writer logs the store's trouble itself, once per change
	 * (ingest.c), and each refused webhook once (on_ingested()). */
	so.quiet_busy = true;
	if ((rc = store_open(srv->store_path, &so, &st, why)) != RS_OK)
		return rc;
	if ((rc = store_writable(st, why)) != RS_OK) {
		store_close(st);
		return rc;
	}
	*out = st;
	return RS_OK;
}

/* Record why the store cannot be written (NULL: it can); takes why.
 * Did the reason change? */
static bool
server_store_why(struct server *srv, char *why)
{
	bool changed;

	pthread_mutex_lock(&srv->store_mtx);
	changed = why == NULL || srv->store_why == NULL ?
	    why != srv->store_why : strcmp(why, srv->store_why) != 0;
	free(srv->store_why);
	srv->store_why = why;
	pthread_mutex_unlock(&srv->store_mtx);
	return changed;
}

/* READY=1, with a status line that says whether webhooks are taken. */
static void
server_notify_ready(struct server *srv)
{
	(void)sdnotify_ready(atomic_load(&srv->ingest) != NULL ? "serving" :
	    "the store cannot be written: webhooks get 503");
}

/*
 * Start what writes to the store, st being the writer's connection
 * (taken): the exporters (each opens its own), the backfills to resume
 * (read through st), then the writer, which takes webhooks from then
 * on.  The store's path and busy timeout are those of the start (a
 * reload changes them only at a restart); the rest is the configuration
 * in force.  RS_OK; else st is closed and *why (caller frees) says why:
 * RS_ERR_CONFIG when a plugin refused, RS_ERR_INTERNAL when the writer
 * did not start, the store's error otherwise.
 */
static enum rs_status
server_writer_start(struct server *srv, struct store *st, char **why)
{
	struct config cfg = *srv->boot;	/* shallow: borrowed for the call */
	struct ingest *in = NULL;
	enum rs_status rc;
	size_t n;

	cfg.store_path = srv->store_path;
	cfg.busy_timeout_ms = srv->busy_ms;
	cfg.on_install = srv->cfg->on_install;	/* SIGHUP applies it */
	if ((rc = export_engine_start(&cfg, &srv->exp, why)) != RS_OK) {
		store_close(st);
		return rc;
	}
	if (srv->bf != NULL) {
		n = backfiller_kick_startup(srv->bf, &cfg, st, cfg.on_install);
		log_info("backfill on: %zu instances to backfill or resume", n);
	}
	/* ingest_start() closes st even when it fails. */
	if (ingest_start(st, (size_t)cfg.commit_batch, &in) != RS_OK) {
		*why = xstrdup("the writer thread did not start");
		return RS_ERR_INTERNAL;
	}
	atomic_store(&srv->ingest, in);
	return RS_OK;
}

/*
 * While the store cannot be written: open it again, at most every
 * SERVER_STORE_RETRY_MS, and once it can be written, start the writer
 * (server_writer_start()).  RS_OK: started, or not yet; a change in the
 * reason is logged, a repeat is not.  Another status stops the daemon:
 * RS_ERR_CONFIG (exit 2, as at start) or RS_ERR_INTERNAL.
 */
static enum rs_status
server_store_retry(struct server *srv)
{
	struct store *st = NULL;
	enum rs_status rc;
	char *why = NULL;
	int64_t now = clock_mono_ms();

	if (atomic_load(&srv->ingest) != NULL ||
	    now - srv->store_tried < SERVER_STORE_RETRY_MS)
		return RS_OK;
	srv->store_tried = now;
	/* A try waits for a lock no longer than the retry interval: this
	 * thread also answers signals and the watchdog.  The writer gets
	 * a connection with the configured wait. */
	rc = server_store_open(srv, srv->busy_ms < SERVER_STORE_RETRY_MS ?
	    srv->busy_ms : SERVER_STORE_RETRY_MS, &st, &why);
	if (rc == RS_OK && srv->busy_ms > SERVER_STORE_RETRY_MS) {
		store_close(st);
		st = NULL;
		rc = server_store_open(srv, srv->busy_ms, &st, &why);
	}
	if (rc == RS_OK)
		rc = server_writer_start(srv, st, &why);
	if (rc == RS_OK) {
		(void)server_store_why(srv, NULL);
		log_info("store %s can be written again (after %lld s): "
		    "taking webhooks", srv->store_path,
		    (long long)((clock_mono_ms() - srv->store_since) / 1000));
		server_notify_ready(srv);
		return RS_OK;
	}
	if (rc == RS_ERR_CONFIG || rc == RS_ERR_INTERNAL) {
		log_errx("cannot start: %s", why != NULL ? why : "writer");
		free(why);
		return rc;
	}
	if (why == NULL)
		why = xstrdup(rs_strstatus(rc));
	log_debug("store %s: still cannot be written: %s", srv->store_path,
	    why);
	/* why stays valid: only this thread replaces it. */
	if (server_store_why(srv, why))
		log_warnx("store %s still cannot be written, now: %s",
		    srv->store_path, why);
	return RS_OK;
}

/*
 * Take the writer away from the handlers, waiting for any that is using
 * it (ingest_lk), then stop it: everything queued is committed and
 * answered.  A handler that comes after finds no writer.
 */
static void
server_ingest_stop(struct server *srv)
{
	struct ingest *in;

	pthread_rwlock_wrlock(&srv->ingest_lk);
	in = atomic_exchange(&srv->ingest, NULL);
	pthread_rwlock_unlock(&srv->ingest_lk);
	ingest_stop(in);
}

/* Drain: in-flight webhooks commit and get their answer, or get none. */
static void
server_drain(struct server *srv)
{
	int64_t deadline;

	log_info("stopping: draining requests in flight");
	httpd_drain(srv->pub);
	if (srv->admin != NULL)
		httpd_drain(srv->admin);
	deadline = clock_mono_ms() + srv->boot->request_timeout * 1000 + 1000;
	while (httpd_inflight(srv->pub) > 0 && clock_mono_ms() < deadline) {
		struct timespec ts = { 0, 20 * 1000000L };

		nanosleep(&ts, NULL);
	}
	/* Backfills stop at a page boundary, with their cursors committed;
	 * kicks from ingest are ignored from here on.  Stopping the REST
	 * client first cuts short the Wix calls under way (a backoff, a
	 * dead network) of the backfills and the reconcile alike, so they
	 * end within a fraction of a second, not minutes. */
	wixapi_stop(srv->wix);
	(void)backfiller_stop(srv->bf, SERVER_BACKFILL_WAIT_MS);
	/* A reconcile run stops between two pages. */
	if (srv->rec != NULL)
		srv->rec_running = !reconciler_stop(srv->rec,
		    SERVER_BACKFILL_WAIT_MS);
	srv->rec = NULL;
	/* Exporters stop at a record boundary: what is in flight (a file
	 * exporter's batch, one record of http or exec) is delivered and
	 * recorded first. */
	export_engine_halt(srv->exp);
	/* Everything queued is committed and answered before this returns. */
	server_ingest_stop(srv);
	backfill_free(srv);
	deadline = clock_mono_ms() + 1000;
	while (httpd_inflight(srv->pub) > 0 && clock_mono_ms() < deadline) {
		struct timespec ts = { 0, 10 * 1000000L };

		nanosleep(&ts, NULL);
	}
	if (httpd_inflight(srv->pub) > 0)
		log_warnx("stopping: %zu requests still open: closing them "
		    "unanswered", httpd_inflight(srv->pub));
}

/*
 * The watchdog keep-alive, from the main loop: WATCHDOG=1 whenever half
 * the WatchdogSec= interval (half_ms; 0 = off) would pass before the
 * loop's next chance, which comes within tick_ms.  *last is when the
 * previous one went out.
 */
static void
server_watchdog(int64_t half_ms, int64_t tick_ms, int64_t *last)
{
	int64_t now;

	if (half_ms <= 0)
		return;
	now = clock_mono_ms();
	if (now - *last < half_ms - tick_ms)
		return;
	if (sdnotify_watchdog() != RS_OK)
		log_debug("watchdog: cannot notify systemd");
	*last = now;
}

int
server_run(struct config *cfg)
{
	struct server srv;
	struct store *st = NULL;
	struct jwtv_keys *keys = NULL;
	sigset_t set;
	int64_t wd_half, wd_tick, wd_last;
	enum rs_status rc;
	char *why = NULL;
	int status = 1;

	memset(&srv, 0, sizeof(srv));
	srv.boot = srv.cfg = cfg;
	atomic_init(&srv.ingest, NULL);
	pthread_rwlock_init(&srv.ingest_lk, NULL);
	pthread_mutex_init(&srv.rt_mtx, NULL);
	pthread_mutex_init(&srv.store_mtx, NULL);
	srv.store_path = xstrdup(cfg->store_path);
	srv.busy_ms = (int)cfg->busy_timeout_ms;
	server_define_metrics();

	/* Every thread started from here on inherits this mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	(void)signal(SIGPIPE, SIG_IGN);

	if (load_keys(cfg, &keys, &why) != RS_OK) {
		log_errx("cannot start: %s", why);
		free(why);
		status = 2;
		goto out;
	}
	srv.rt = xcalloc(1, sizeof(*srv.rt));
	atomic_init(&srv.rt->refs, 1);
	srv.rt->keys = keys;
	srv.rt->leeway = cfg->jwt_leeway;
	srv.rt->on_install = cfg->on_install;

	rc = server_store_open(&srv, srv.busy_ms, &st, &why);
	if (rc == RS_ERR_BUSY) {
		/* It exists and cannot be written now: serve without a
		 * writer, and try again from the main loop. */
		log_warnx("store %s cannot be written (%s): starting "
		    "without it: webhooks get 503 and /readyz 503 until it "
		    "can; trying again every second", cfg->store_path, why);
		(void)server_store_why(&srv, why);
		srv.store_since = srv.store_tried = clock_mono_ms();
		metrics_define("refundsync_store_ready", METRIC_GAUGE,
		    "1 when the store can take writes, else 0.");
		metrics_set("refundsync_store_ready", "", 0);
	} else if (rc != RS_OK) {
		log_errx("cannot start: store: %s", why != NULL ? why :
		    "cannot open");
		free(why);
		goto out;
	} else
		log_info("store %s: schema version %d", cfg->store_path,
		    store_schema_version(st));
	why = NULL;
	if ((rc = backfill_start(&srv)) != RS_OK) {
		store_close(st);
		status = rc == RS_ERR_IO ? 1 : 2;
		goto out;
	}
	/* The exporters (each with its own connection to the migrated
	 * store), then the writer.  Without a writable store they wait for
	 * it, but a plugin refused (its ABI version) refuses the start all
	 * the same. */
	rc = RS_OK;
	if (st != NULL)
		rc = server_writer_start(&srv, st, &why);
	else if (export_check_config(cfg, &why) != RS_OK)
		rc = RS_ERR_CONFIG;
	if (rc != RS_OK) {
		log_errx("cannot start: %s", why != NULL ? why : "exporters");
		free(why);
		status = rc == RS_ERR_INTERNAL ? 1 : 2;
		goto out;
	}

	srv.webhook_path = xstrdup(cfg->webhook_path);
	srv.pub_routes[0] = (struct httpd_route){ "POST", srv.webhook_path,
	    "webhook", on_webhook, &srv };
	srv.pub_routes[1] = (struct httpd_route){ "GET", "/healthz",
	    "healthz", on_healthz, &srv };
	srv.admin_routes[0] = (struct httpd_route){ "GET", "/readyz",
	    "readyz", on_readyz, &srv };
	srv.admin_routes[1] = (struct httpd_route){ "GET", "/metrics",
	    "metrics", on_metrics, &srv };
	srv.status = statuspage_new(cfg->store_path,
	    (int)cfg->busy_timeout_ms);
	reconcile_metrics_refresh(NULL);
	srv.admin_routes[2] = (struct httpd_route){ "GET", "/status",
	    "status", statuspage_http, srv.status };
	if (start_listener(&srv, "public", cfg->listen, srv.pub_routes, 2,
	    &srv.pub) != RS_OK)
		goto out;
	if (cfg->admin_listen[0] != '\0' && start_listener(&srv, "admin",
	    cfg->admin_listen, srv.admin_routes, 3, &srv.admin) != RS_OK)
		goto out;
	log_info("refundsync %s ready: %zu public key%s, webhooks at %s",
	    PACKAGE_VERSION, jwtv_keys_count(keys),
	    jwtv_keys_count(keys) == 1 ? "" : "s", cfg->webhook_path);
	server_notify_ready(&srv);
	/* Wake at least every second, or every half watchdog interval. */
	wd_half = (int64_t)((sdnotify_watchdog_usec() + 1999) / 2000);
	wd_tick = wd_half > 0 && wd_half < 1000 ? wd_half : 1000;
	wd_last = clock_mono_ms() - wd_half;

	for (;;) {
		struct timespec ts = { wd_tick / 1000,
		    (long)(wd_tick % 1000) * 1000000L };
		int sig;

		server_watchdog(wd_half, wd_tick, &wd_last);
		if ((rc = server_store_retry(&srv)) != RS_OK) {
			status = rc == RS_ERR_CONFIG ? 2 : 1;
			(void)sdnotify_stopping("cannot start the writer");
			server_drain(&srv);
			goto out;
		}
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGHUP) {
			(void)sdnotify_reloading();
			server_reload(&srv);
			/* Whatever became of the file: logrotate's
			 * postrotate sends this to have files reopened. */
			export_engine_reopen(srv.exp);
			server_notify_ready(&srv);
		} else if (sig == SIGTERM || sig == SIGINT) {
			(void)sdnotify_stopping("draining requests in flight");
			log_info("received %s", sig == SIGTERM ? "SIGTERM" :
			    "SIGINT");
			break;
		} else if (sig < 0 && errno != EAGAIN && errno != EINTR) {
			log_warn("sigtimedwait");
		}
	}
	server_drain(&srv);
	status = 0;
	log_info("stopped");
out:
	/* The store belongs to the writer from ingest_start() on, which
	 * closes it even when it fails to start. */
	wixapi_stop(srv.wix);
	(void)backfiller_stop(srv.bf, SERVER_BACKFILL_WAIT_MS);
	export_engine_halt(srv.exp);
	server_ingest_stop(&srv);
	/* Only now: the ingest's responder notified the engine. */
	export_engine_stop(srv.exp);
	backfill_free(&srv);
	httpd_stop(srv.pub);
	httpd_stop(srv.admin);
	statuspage_free(srv.status);
	free(srv.store_path);
	free(srv.store_why);
	runtime_release(srv.rt);
	free(srv.webhook_path);
	pthread_mutex_destroy(&srv.store_mtx);
	pthread_mutex_destroy(&srv.rt_mtx);
	pthread_rwlock_destroy(&srv.ingest_lk);
	if (srv.cfg != srv.boot)
		config_free(srv.cfg);
	config_free(srv.boot);
	return status;
}
