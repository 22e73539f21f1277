/*
 * cli.c: command dispatch and the small read-only commands.
 *
 * Each command parses its own options with getopt_long (GNU permutes, so
 * `refunds -c F list --json` and `refunds list -c F --json` both work),
 * loads the config the same way (-c, then $REFUNDSYNC_CONFIG, then the
 * default path), and returns an exit status from cli.h.  Runs on the main
 * thread only.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
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

#include <cjson/cJSON.h>

#include "adapters/config.h"
#include "adapters/jwtverify.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "core/backfill.h"
#include "core/cli.h"
#include "core/export.h"
#include "core/reconcile.h"
#include "core/refundcmd.h"
#include "core/server.h"
#include "domain/json.h"
#include "core/statuspage.h"
#include "domain/money.h"
#include "exporters/registry.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/termsafe.h"
#include "util/xmalloc.h"

static const char usage_text[] =
"usage: refundsync serve   [-c FILE] [-v]...   run the daemon in the foreground\n"
"       refundsync check   [-c FILE]           validate the config; exit 0 or 1\n"
"       refundsync backfill [-c FILE] [--instance ID] [--restart] [-v]...\n"
"       refundsync refunds [-c FILE] list [--instance ID] [--status S] [--json]\n"
"       refundsync refunds [-c FILE] show ID [--json]\n"
"       refundsync refund  [-c FILE] create --instance ID --charge ID\n"
"                          [--amount DEC --currency CUR] [--reason TEXT]\n"
"                          [--note TEXT] [--yes] [--json]\n"
"       refundsync export  [-c FILE] status [--json]\n"
"       refundsync export  [-c FILE] replay --exporter NAME [--from SEQ]\n"
"                          [--json]\n"
"       refundsync export  [-c FILE] dead | retry-dead [--exporter NAME]\n"
"                          [--json]\n"
"       refundsync reconcile [-c FILE] [--instance ID] [--heal] [--json]\n"
"       refundsync status  [-c FILE] [--json]\n"
"       refundsync version\n"
"\n"
"The config is -c FILE, else $REFUNDSYNC_CONFIG,\n"
"else " CONFIG_DEFAULT_PATH ".\n"
"See refundsync(8) and refundsync.conf(5).\n";

static int
usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "refundsync: %s\n", why);
	fputs(usage_text, stderr);
	return CLI_EXIT_USAGE;
}

/* Load the config chosen by -c / env / default; prints errors. */
static struct config *
load_config(const char *arg)
{
	const char *path = config_path_choose(arg);
	struct config *cfg = NULL;
	char *errors = NULL;

	if (config_load(path, &cfg, &errors) != RS_OK) {
		fprintf(stderr, "%s", errors != NULL ? errors : "");
		if (errors == NULL || errors[0] == '\0' ||
		    errors[strlen(errors) - 1] != '\n')
			fputc('\n', stderr);
		free(errors);
		return NULL;
	}
	return cfg;
}

/*
 * load_config() for serve: the daemon's errors are log lines (with the
 * timestamp and level, or the journald priority), like its other
 * "cannot start" lines, one per error found, each naming the file.
 */
static struct config *
serve_load_config(const char *arg)
{
	const char *path = config_path_choose(arg);
	struct config *cfg = NULL;
	char *errors = NULL, *line, *nl;
	size_t n = 0;

	if (config_load(path, &cfg, &errors) == RS_OK)
		return cfg;
	for (line = errors; line != NULL; line = nl) {
		if ((nl = strchr(line, '\n')) != NULL)
			*nl++ = '\0';
		if (*line != '\0') {
			log_errx("cannot start: %s", line);
			n++;
		}
	}
	if (n == 0)
		log_errx("cannot start: %s: cannot load", path);
	free(errors);
	return NULL;
}

static const struct option common_opts[] = {
	{ "config",	required_argument,	NULL, 'c' },
	{ "verbose",	no_argument,		NULL, 'v' },
	{ "json",	no_argument,		NULL, 'j' },
	{ "instance",	required_argument,	NULL, 'i' },
	{ "status",	required_argument,	NULL, 's' },
	{ "restart",	no_argument,		NULL, 'r' },
	{ "exporter",	required_argument,	NULL, 'e' },
	{ "from",	required_argument,	NULL, 'f' },
	{ "heal",	no_argument,		NULL, 'H' },
	{ "help",	no_argument,		NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

struct cli_args {
	const char	*config;
	int		 verbose;
	bool		 json;
	const char	*instance;
	char		*status;	/* --status, in argv: may be rewritten */
	bool		 restart;
	bool		 heal;		/* --heal */
	const char	*exporter;	/* --exporter */
	const char	*from;		/* --from */
	int		 nargs;		/* positional arguments left */
	char		**args;
};

/* The long name of option ch, for messages. */
static const char *
opt_name(int ch)
{
	for (const struct option *o = common_opts; o->name != NULL; o++)
		if (o->val == ch)
			return o->name;
	return "?";
}

/* Parse options allowed by `allowed` (a string of short letters). */
static int
parse_args(int argc, char *argv[], const char *allowed, struct cli_args *a)
{
	int ch;

	memset(a, 0, sizeof(*a));
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "c:vh", common_opts, NULL)) !=
	    -1) {
		if (ch == 'h')
			return usage(NULL);
		if (ch == '?' && optopt != 0 && strchr("cisef", optopt) !=
		    NULL) {
			/* A known option at the end, without its value. */
			fprintf(stderr, "refundsync %s: option --%s needs a "
			    "value\n", argv[0], opt_name(optopt));
			return usage(NULL);
		}
		if (ch == '?' && optopt != 0) {
			fprintf(stderr, "refundsync %s: unknown option '-%c'\n",
			    argv[0], optopt);
			return usage(NULL);
		}
		if (ch == '?') {
			/* A long one: getopt_long() has stepped past it. */
			fprintf(stderr, "refundsync %s: unknown option '%s'\n",
			    argv[0], argv[optind - 1]);
			return usage(NULL);
		}
		if (strchr(allowed, ch) == NULL) {
			fprintf(stderr, "refundsync %s: option --%s is not for "
			    "this command\n", argv[0], opt_name(ch));
			return usage(NULL);
		}
		switch (ch) {
		case 'c':
			if (optarg[0] == '\0') {
				/* Not the default: an unset variable in
				 * -c "$CONF" must not pick the production
				 * file. */
				fprintf(stderr, "refundsync %s: option -c: "
				    "the path is empty\n", argv[0]);
				return usage(NULL);
			}
			a->config = optarg;
			break;
		case 'v':
			a->verbose++;
			break;
		case 'j':
			a->json = true;
			break;
		case 'i':
			a->instance = optarg;
			break;
		case 's':
			a->status = optarg;
			break;
		case 'e':
			a->exporter = optarg;
			break;
		case 'f':
			a->from = optarg;
			break;
		case 'r':
			a->restart = true;
			break;
		case 'H':
			a->heal = true;
			break;
		}
	}
	a->nargs = argc - optind;
	a->args = argv + optind;
	return 0;
}

static int
cmd_version(int argc, char *argv[])
{
	struct cli_args a;
	int r;

	if ((r = parse_args(argc, argv, "", &a)) != 0)
		return r;
	if (a.nargs != 0)
		return usage("version takes no arguments");
	printf("refundsync %s\n", PACKAGE_VERSION);
	return CLI_EXIT_OK;
}

/* What `check` found past the config's own errors. */
struct check_run {
	const struct config	*cfg;
	size_t			 nerr;
};

static void	check_say(const struct check_run *c, int line,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* One line on stderr, "file:line: ..." like a config error. */
static void
check_say(const struct check_run *c, int line, const char *fmt, ...)
{
	va_list ap;

	if (line > 0)
		fprintf(stderr, "%s:%d: ", c->cfg->path, line);
	else
		fprintf(stderr, "%s: ", c->cfg->path);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A credential not visible here (config_secret_visible()): a note. */
static void
check_unseen(const struct check_run *c, int line, const char *section,
    const char *key, const char *ref)
{
	check_say(c, line, "note: [%s] %s: %s not checked: "
	    "$CREDENTIALS_DIRECTORY is not set (systemd sets it for the "
	    "service's LoadCredential=)", section, key, ref);
}

/*
 * Read the secret file ref of [section] key as the start would (max
 * bytes at most), and wipe it: only whether it can be read is shown,
 * never the content.  A credential this process cannot see (run from a
 * shell, not by systemd) is a note, not an error.
 */
static void
check_secret(struct check_run *c, int line, const char *section,
    const char *key, const char *ref, size_t max)
{
	char *secret = NULL, *why = NULL;

	if (!config_secret_visible(ref)) {
		check_unseen(c, line, section, key, ref);
		return;
	}
	if (config_read_secret(ref, max, &secret, &why) != RS_OK) {
		check_say(c, line, "[%s] %s: %s", section, key,
		    why != NULL ? why : "cannot be read");
		c->nerr++;
	}
	free(why);
	freezero_str(secret);
}

/* A file the exporter reads later (http's ca_file): can it be read? */
static void
check_readable(struct check_run *c, int line, const char *section,
    const char *key, const char *path)
{
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		check_say(c, line, "[%s] %s: %s: %s", section, key, path,
		    strerror(errno));
		c->nerr++;
		return;
	}
	(void)fclose(f);	/* opened for reading only */
}

/*
 * The directory of a file exporter's output file.  serve starts without
 * it and the exporter retries its open until it appears (a mount may
 * come later), so a missing one is a note, not an error.
 */
static void
check_output_dir(const struct check_run *c, int line, const char *section,
    const char *key, const char *path)
{
	char *dir = xstrdup(path), *slash;
	struct stat sb;

	if ((slash = strrchr(dir, '/')) != NULL)
		slash[slash == dir ? 1 : 0] = '\0';
	else
		(void)snprintf(dir, strlen(dir) + 1, ".");
	if (stat(dir, &sb) != 0)
		check_say(c, line, "note: [%s] %s: directory %s: %s: serve "
		    "starts, and the exporter retries until it is there",
		    section, key, dir, strerror(errno));
	else if (!S_ISDIR(sb.st_mode))
		check_say(c, line, "note: [%s] %s: %s is not a directory: "
		    "the exporter cannot create its file", section, key, dir);
	free(dir);
}

/* The public keys, loaded as the start and a reload load them. */
static void
check_public_keys(struct check_run *c)
{
	const struct config *cfg = c->cfg;
	struct jwtv_keys *keys = NULL;
	int line = config_line(cfg, "wix", "public_key_file");
	char *why = NULL;
	size_t i;

	if (cfg->npublic_key_files == 0) {
		check_say(c, line, "[wix] public_key_file: no key configured "
		    "(serve needs one to verify webhooks)");
		c->nerr++;
	}
	for (i = 0; i < cfg->npublic_key_files; i++) {
		const char *ref = cfg->public_key_files[i];

		if (!config_secret_visible(ref)) {
			check_unseen(c, line, "wix", "public_key_file", ref);
			continue;
		}
		if (server_load_key(&keys, ref, &why) != RS_OK) {
			check_say(c, line, "[wix] public_key_file: %s: %s", ref,
			    why);
			free(why);
			why = NULL;
			c->nerr++;
		}
	}
	jwtv_keys_free(keys);
}

/*
 * What serve reads before it starts, beyond the config's syntax: the
 * exporter plugins, the public keys, and the secret files.  Each failure
 * is a line "file:line: [section] key: reason"; the number of them.
 */
static size_t
check_files(const struct config *cfg)
{
	struct check_run c = { cfg, 0 };
	const struct config_exporter *e;
	char *why = NULL, *section;
	size_t i, j, max;

	/* Plugins are loaded and their ABI version checked, as at start. */
	if (export_check_config(cfg, &why) != RS_OK) {
		fprintf(stderr, "%s\n", why);
		for (i = 0; why[i] != '\0'; i++)
			c.nerr += why[i] == '\n';
		c.nerr++;
		free(why);
	}
	check_public_keys(&c);
	if (cfg->app_secret_file[0] != '\0')
		check_secret(&c, config_line(cfg, "wix", "app_secret_file"),
		    "wix", "app_secret_file", cfg->app_secret_file,
		    BACKFILL_SECRET_MAX);
	if (cfg->api_key_file[0] != '\0')
		check_secret(&c, config_line(cfg, "wix", "api_key_file"),
		    "wix", "api_key_file", cfg->api_key_file,
		    BACKFILL_SECRET_MAX);
	for (i = 0; i < cfg->nexporters; i++) {
		e = &cfg->exporters[i];
		for (j = 0; j < e->nkv; j++) {
			if (e->kv[j].value[0] == '\0')
				continue;
			section = xasprintf("exporter %s", e->name);
			max = registry_secret_max(e->type, e->kv[j].key);
			if (max != 0)
				check_secret(&c, e->kv[j].line, section,
				    e->kv[j].key, e->kv[j].value, max);
			else if (strcmp(e->type, "http") == 0 &&
			    strcmp(e->kv[j].key, "ca_file") == 0)
				check_readable(&c, e->kv[j].line, section,
				    e->kv[j].key, e->kv[j].value);
			else if (registry_key_is_output(e->type,
			    e->kv[j].key))
				check_output_dir(&c, e->kv[j].line, section,
				    e->kv[j].key, e->kv[j].value);
			free(section);
		}
	}
	return c.nerr;
}

static int
cmd_check(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg;
	int r;

	if ((r = parse_args(argc, argv, "c", &a)) != 0)
		return r;
	if (a.nargs != 0)
		return usage("check takes no arguments");
	/* SPEC §1: check answers 0 (valid) or 1 (not valid). */
	if ((cfg = load_config(a.config)) == NULL)
		return CLI_EXIT_FAILURE;
	/* What serve would refuse at start is not "ok" either. */
	if (check_files(cfg) > 0) {
		config_free(cfg);
		return CLI_EXIT_FAILURE;
	}
	printf("%s: ok\n", cfg->path);
	config_free(cfg);
	return CLI_EXIT_OK;
}

static int
cmd_serve(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg;
	int r;

	if ((r = parse_args(argc, argv, "cv", &a)) != 0)
		return r;
	if (a.nargs != 0)
		return usage("serve takes no arguments");
	log_init_auto(a.verbose);
	if ((cfg = serve_load_config(a.config)) == NULL)
		return CLI_EXIT_USAGE;
	return server_run(cfg);
}

static struct store *
open_store_ro(const struct config *cfg)
{
	struct store_options opt = { .busy_timeout_ms =
	    (int)cfg->busy_timeout_ms, .readonly = true };
	struct store *st = NULL;
	char *why = NULL;

	if (store_open(cfg->store_path, &opt, &st, &why) != RS_OK) {
		fprintf(stderr, "refundsync: store: %s\n", why != NULL ?
		    why : "cannot open");
		free(why);
		return NULL;
	}
	return st;
}

static cJSON *
row_json(const struct store_refund_row *row)
{
	const struct refund *r = &row->refund;
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "id", r->id);
	if (row->instance_id != NULL)
		cJSON_AddStringToObject(o, "instance_id", row->instance_id);
	else
		cJSON_AddNullToObject(o, "instance_id");
	cJSON_AddStringToObject(o, "charge_id", r->charge_id);
	cJSON_AddStringToObject(o, "currency", r->currency);
	cJSON_AddStringToObject(o, "amount", r->amount);
	if (r->amount_exact) {
		/* A string: JSON numbers are doubles to most readers. */
		char minor[32];

		snprintf(minor, sizeof(minor), "%lld",
		    (long long)r->amount_minor);
		cJSON_AddStringToObject(o, "amount_minor", minor);
	} else {
		cJSON_AddNullToObject(o, "amount_minor");
	}
	cJSON_AddStringToObject(o, "status", r->status);
	if (r->has_revision) {
		char rev[32];

		snprintf(rev, sizeof(rev), "%lld", (long long)r->revision);
		cJSON_AddStringToObject(o, "revision", rev);
	} else {
		cJSON_AddNullToObject(o, "revision");
	}
	if (r->created_date != NULL)
		cJSON_AddStringToObject(o, "created_date", r->created_date);
	if (r->updated_date != NULL)
		cJSON_AddStringToObject(o, "updated_date", r->updated_date);
	cJSON_AddStringToObject(o, "source", row->source);
	cJSON_AddStringToObject(o, "stored_at", row->stored_at);
	return o;
}

static enum rs_status
print_row(void *arg, const struct store_refund_row *row)
{
	const bool *json = arg;
	const struct refund *r = &row->refund;

	if (*json) {
		cJSON *o = row_json(row);
		char *s = cJSON_PrintUnformatted(o);

		printf("%s\n", s);
		free(s);
		cJSON_Delete(o);
	} else {
		/* Text from Wix: no control byte reaches the terminal. */
		char rev[24] = "-", id[512], stat[128], amt[128], cur[32];
		char upd[128];

		if (r->has_revision)
			snprintf(rev, sizeof(rev), "%lld",
			    (long long)r->revision);
		printf("%-36s %-10s %16s %-3s %6s %s\n",
		    term_safe(r->id, id, sizeof(id)),
		    term_safe(r->status, stat, sizeof(stat)),
		    term_safe(r->amount, amt, sizeof(amt)),
		    term_safe(r->currency, cur, sizeof(cur)), rev,
		    term_safe(r->updated_date != NULL ? r->updated_date : "-",
		    upd, sizeof(upd)));
	}
	return RS_OK;
}

/* label, value (and " " extra if not NULL) made safe, then end. */
static void
show_field(const char *label, const char *value, const char *extra,
    const char *end)
{
	fputs(label, stdout);
	term_fputs(value, stdout);
	if (extra != NULL) {
		fputc(' ', stdout);
		term_fputs(extra, stdout);
	}
	fputs(end, stdout);
}

static int
cmd_refunds(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg = NULL;
	struct store *st = NULL;
	struct store_refund_row row;
	const char *sub;
	enum rs_status s;
	int r, status = CLI_EXIT_FAILURE;

	/* Options may come before or after the subcommand. */
	optind = 1;
	if ((r = parse_args(argc, argv, "cjis", &a)) != 0)
		return r;
	if (a.nargs < 1)
		return usage("refunds: list or show?");
	sub = a.args[0];
	if (strcmp(sub, "list") == 0) {
		if (a.nargs != 1)
			return usage("refunds list takes no arguments");
		if (a.status != NULL && a.status[0] == '\0')
			return usage("refunds list: --status needs a status, "
			    "such as SUCCEEDED");
		/* Wix's statuses are upper case: `--status succeeded`
		 * means SUCCEEDED, not "no refund". */
		if (a.status != NULL)
			for (char *p = a.status; *p != '\0'; p++)
				if (*p >= 'a' && *p <= 'z')
					*p = (char)(*p - 'a' + 'A');
	} else if (strcmp(sub, "show") == 0) {
		if (a.nargs != 2)
			return usage("refunds show needs one refund id");
		if (a.instance != NULL || a.status != NULL)
			return usage("refunds show takes no filters");
	} else {
		return usage("refunds: list or show?");
	}
	if ((cfg = load_config(a.config)) == NULL)
		return CLI_EXIT_USAGE;
	if ((st = open_store_ro(cfg)) == NULL)
		goto out;
	if (strcmp(sub, "list") == 0) {
		if (!a.json)
			printf("%-36s %-10s %16s %-3s %6s %s\n", "ID", "STATUS",
			    "AMOUNT", "CUR", "REV", "UPDATED");
		s = store_refund_foreach(st, a.instance, a.status, print_row,
		    &a.json);
		if (s != RS_OK) {
			fprintf(stderr, "refundsync: refunds list: %s\n",
			    rs_strstatus(s));
			goto out;
		}
		status = CLI_EXIT_OK;
		goto out;
	}
	s = store_refund_get(st, a.args[1], &row);
	if (s == RS_ERR_NOTFOUND) {
		fprintf(stderr, "refundsync: refund %s: not found\n",
		    a.args[1]);
		goto out;
	}
	if (s != RS_OK) {
		fprintf(stderr, "refundsync: refund %s: %s\n", a.args[1],
		    rs_strstatus(s));
		goto out;
	}
	if (a.json) {
		cJSON *o = row_json(&row), *body;
		char *text;

		/* Strict, so that the body's numbers print as stored. */
		if (json_parse_strict(row.refund.body,
		    strlen(row.refund.body), JSON_MAX_DEPTH, &body, NULL) ==
		    RS_OK)
			cJSON_AddItemToObject(o, "body", body);
		text = json_print(o);
		printf("%s\n", text);
		free(text);
		cJSON_Delete(o);
	} else {
		const struct refund *rf = &row.refund;

		/* Text from Wix: no control byte reaches the terminal. */
		show_field("id:           ", rf->id, NULL, "\n");
		show_field("instance:     ", row.instance_id != NULL ?
		    row.instance_id : "-", NULL, "\n");
		show_field("charge:       ", rf->charge_id, NULL, "\n");
		show_field("amount:       ", rf->amount, rf->currency, "\n");
		if (rf->amount_exact)
			printf("amount_minor: %lld\n",
			    (long long)rf->amount_minor);
		else
			show_field("amount_minor: - (not exact in ",
			    rf->currency, NULL, ")\n");
		show_field("status:       ", rf->status, NULL, "\n");
		if (rf->has_revision)
			printf("revision:     %lld\n",
			    (long long)rf->revision);
		show_field("created:      ", rf->created_date != NULL ?
		    rf->created_date : "-", NULL, "\n");
		show_field("updated:      ", rf->updated_date != NULL ?
		    rf->updated_date : "-", NULL, "\n");
		show_field("source:       ", row.source, NULL, " (stored ");
		show_field("", row.stored_at, NULL, ")\n");
		show_field("body:         ", rf->body, NULL, "\n");
	}
	store_refund_row_cleanup(&row);
	status = CLI_EXIT_OK;
out:
	store_close(st);
	config_free(cfg);
	return status;
}

/* ---- backfill ---------------------------------------------------------- */

/* Instances backfilled at once; each has its own budget at Wix. */
#define CLI_BF_THREADS		8
/* Without a terminal, a progress line every this many pages. */
#define CLI_BF_LOG_PAGES	10
/* The progress line is redrawn this often (ms). */
#define CLI_BF_TICK_MS		250

/* One instance of a `backfill` command. */
struct cli_bf_job {
	char			*id;
	struct cli_bf		*bf;
	/* Set by the worker, read by the main thread under bf->mu: */
	bool			 started;
	bool			 finished;
	bool			 skipped;	/* already done */
	enum rs_status		 rc;
	char			*why;
	int64_t			 pages;
	int64_t			 refunds;
	int64_t			 run_pages;
	int64_t			 applied;
	uint64_t		 requests;
	int64_t			 t0;		/* when the run began
						   (clock_mono_ms()) */
};

struct cli_bf {
	const struct config	*cfg;
	struct wixapi		*w;
	bool			 restart;
	bool			 tty;
	atomic_bool		 stop;
	pthread_mutex_t		 mu;		/* next, the jobs' fields */
	struct cli_bf_job	*jobs;
	size_t			 njobs;
	size_t			 next;		/* the job to take next */
	size_t			 ndone;
};

static void
cli_bf_progress(void *arg, const struct backfill_progress *p)
{
	struct cli_bf_job *job = arg;
	struct cli_bf *bf = job->bf;
	char line[256];
	bool say;

	pthread_mutex_lock(&bf->mu);
	job->pages = p->pages;
	job->refunds = p->refunds;
	job->run_pages = p->run_pages;
	job->applied = p->applied;
	job->requests = p->requests;
	job->t0 = clock_mono_ms() - p->elapsed_ms;
	pthread_mutex_unlock(&bf->mu);
	/* Without a terminal, plain lines (backfill_run logs the start,
	 * the end and every retry itself). */
	say = !bf->tty && !p->finished && p->note == NULL &&
	    p->run_pages > 0 && p->run_pages % CLI_BF_LOG_PAGES == 0;
	if (say) {
		(void)backfill_progress_line(line, sizeof(line), p);
		log_info("backfill %s", line);
	}
}

/* Backfill one instance with the worker's store connection. */
static void
cli_bf_one(struct cli_bf_job *job, struct store *st)
{
	struct cli_bf *bf = job->bf;
	struct backfill_options opt;
	struct store_instance in;
	enum rs_status rc;
	char *why = NULL;
	bool skip = false;

	if (!bf->restart && store_instance_get(st, job->id, &in) == RS_OK) {
		skip = in.backfill == STORE_BACKFILL_DONE;
		store_instance_cleanup(&in);
	}
	if (skip) {
		rc = RS_OK;
	} else {
		memset(&opt, 0, sizeof(opt));
		opt.page_size = (int)bf->cfg->page_size;
		opt.restart = bf->restart;
		opt.stop = &bf->stop;
		opt.progress = cli_bf_progress;
		opt.progress_arg = job;
		rc = backfill_run(st, bf->w, job->id, &opt, &why);
	}
	pthread_mutex_lock(&bf->mu);
	job->skipped = skip;
	job->rc = rc;
	job->why = why;
	job->finished = true;
	bf->ndone++;
	pthread_mutex_unlock(&bf->mu);
}

static void *
cli_bf_worker(void *arg)
{
	struct cli_bf *bf = arg;
	struct store_options so;
	struct store *st = NULL;
	struct cli_bf_job *job;
	char *why = NULL;
	enum rs_status rc;

	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = (int)bf->cfg->busy_timeout_ms;
	rc = store_open(bf->cfg->store_path, &so, &st, &why);
	for (;;) {
		pthread_mutex_lock(&bf->mu);
		job = bf->next < bf->njobs ? &bf->jobs[bf->next++] : NULL;
		if (job != NULL) {
			job->started = true;
			job->t0 = clock_mono_ms();
		}
		pthread_mutex_unlock(&bf->mu);
		if (job == NULL)
			break;
		if (rc == RS_OK) {
			cli_bf_one(job, st);
			continue;
		}
		pthread_mutex_lock(&bf->mu);
		job->rc = rc;
		job->why = why != NULL ? xasprintf("store: %s", why) :
		    xasprintf("store %s: %s", bf->cfg->store_path,
		    rs_strstatus(rc));
		job->finished = true;
		bf->ndone++;
		pthread_mutex_unlock(&bf->mu);
	}
	free(why);
	store_close(st);
	return NULL;
}

/* Redraw the progress line (terminal only): every running instance. */
static void
cli_bf_draw(struct cli_bf *bf)
{
	struct backfill_progress p;
	char line[512];
	size_t i, n = 0, width = 160;
	struct winsize ws;
	int64_t now = clock_mono_ms();
	int r;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
		width = (size_t)ws.ws_col - 1;
	if (width > sizeof(line) - 1)
		width = sizeof(line) - 1;
	line[0] = '\0';
	pthread_mutex_lock(&bf->mu);
	for (i = 0; i < bf->njobs && n < sizeof(line); i++) {
		const struct cli_bf_job *j = &bf->jobs[i];

		if (!j->started || j->finished)
			continue;
		if (n > 0) {
			r = snprintf(line + n, sizeof(line) - n, " | ");
			if (r < 0)
				break;
			n += (size_t)r;
			if (n >= sizeof(line))
				break;
		}
		/* The time now, not that of the last page: while the
		 * budget holds the next page back, the rate falls. */
		memset(&p, 0, sizeof(p));
		p.instance_id = j->id;
		p.pages = j->pages;
		p.refunds = j->refunds;
		p.run_pages = j->run_pages;
		p.elapsed_ms = now - j->t0;
		r = backfill_progress_line(line + n, sizeof(line) - n, &p);
		if (r < 0)
			break;
		n += (size_t)r;
	}
	pthread_mutex_unlock(&bf->mu);
	if (n > width)
		n = width;
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	line[n] = '\0';
	/* Drawn, then the cursor back at the start of the line, so a log
	 * line from a worker writes over it rather than after it. */
	fprintf(stderr, "\r\033[K%s\r", line);
	(void)fflush(stderr);
}

/* Collects the instances a bare `backfill` runs, and those it leaves
 * out because their app was removed. */
struct cli_bf_list {
	char	**ids;
	size_t	 n;
	char	**removed;
	size_t	 nremoved;
	bool	 done_too;	/* --restart: the done ones run again too */
};

static bool
cli_bf_listed(char *const *ids, size_t n, const char *id)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(ids[i], id) == 0)
			return true;
	return false;
}

static void
cli_bf_list_add(struct cli_bf_list *l, const char *id)
{
	if (cli_bf_listed(l->ids, l->n, id) ||
	    cli_bf_listed(l->removed, l->nremoved, id))
		return;
	l->ids = xreallocarray(l->ids, l->n + 1, sizeof(*l->ids));
	l->ids[l->n++] = xstrdup(id);
}

static enum rs_status
cli_bf_list_row(void *arg, const struct store_instance *in)
{
	struct cli_bf_list *l = arg;

	/* Wix gives no token for an instance the app was removed from;
	 * AppInstalled again clears the removal. */
	if (in->removed_at != NULL) {
		l->removed = xreallocarray(l->removed, l->nremoved + 1,
		    sizeof(*l->removed));
		l->removed[l->nremoved++] = xstrdup(in->instance_id);
	} else if (l->done_too || in->backfill != STORE_BACKFILL_DONE)
		cli_bf_list_add(l, in->instance_id);
	return RS_OK;
}

/* The instances to run: --instance, or [wix] instances plus every stored
 * instance not done (with restart, done ones too), leaving out those
 * whose app was removed (each said on stdout).  false (message printed)
 * if the store cannot be read. */
static bool
cli_bf_instances(const struct config *cfg, const char *only, bool restart,
    struct cli_bf_list *l)
{
	struct store_options so = { .busy_timeout_ms =
	    (int)cfg->busy_timeout_ms };
	struct store *st = NULL;
	char *why = NULL, shown[128];
	enum rs_status rc;
	size_t i;

	memset(l, 0, sizeof(*l));
	l->done_too = restart;
	if (only != NULL) {
		cli_bf_list_add(l, only);
		return true;
	}
	/* Read-write: the first open of a new database migrates it. */
	if ((rc = store_open(cfg->store_path, &so, &st, &why)) == RS_OK)
		rc = store_instance_foreach(st, cli_bf_list_row, l);
	store_close(st);
	if (rc != RS_OK) {
		fprintf(stderr, "refundsync: backfill: store: %s\n",
		    why != NULL ? why : rs_strstatus(rc));
		free(why);
		return false;
	}
	for (i = 0; i < cfg->ninstances; i++)
		cli_bf_list_add(l, cfg->instances[i]);
	for (i = 0; i < l->nremoved; i++) {
		(void)term_safe(l->removed[i], shown, sizeof(shown));
		printf("%s: skipped: the app was removed from it (--instance "
		    "runs it anyway)\n", shown);
	}
	return true;
}

/*
 * `refundsync backfill [-c FILE] [--instance ID] [--restart]`: runs in the
 * foreground, several instances at once, until each is done or failed,
 * or SIGINT/SIGTERM (each stops at its last committed page, cutting
 * short a Wix call under way; the next run resumes; a second signal
 * exits at once).  0: all completed; 1: any failed or interrupted; 2:
 * usage or config.
 */
static int
cmd_backfill(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg = NULL;
	struct cli_bf bf;
	struct cli_bf_list list;
	pthread_t tids[CLI_BF_THREADS];
	sigset_t set, old;
	size_t i, nthreads = 0;
	char *why = NULL;
	int r, status = CLI_EXIT_FAILURE, sig;
	bool failed = false, interrupted = false;

	memset(&bf, 0, sizeof(bf));
	memset(&list, 0, sizeof(list));
	if ((r = parse_args(argc, argv, "cvir", &a)) != 0)
		return r;
	if (a.nargs != 0)
		return usage("backfill takes no arguments");
	if (a.instance != NULL && a.instance[0] == '\0')
		return usage("backfill: --instance needs an instance id");
	log_setverbose(a.verbose);
	if ((cfg = load_config(a.config)) == NULL)
		return CLI_EXIT_USAGE;
	switch (backfill_wixapi_new(cfg, &bf.w, &why)) {
	case RS_OK:
		break;
	case RS_ERR_NOTFOUND:
		fprintf(stderr, "refundsync: backfill: no Wix credentials in "
		    "%s: set [wix] app_id and app_secret_file, or api_key_file "
		    "and site_id\n", cfg->path);
		status = CLI_EXIT_USAGE;
		goto out;
	case RS_ERR_IO:
		/* The store's directory: a runtime failure, as when the
		 * store cannot be opened. */
		fprintf(stderr, "refundsync: backfill: %s\n", why);
		goto out;
	default:
		fprintf(stderr, "refundsync: backfill: %s\n", why);
		status = CLI_EXIT_USAGE;
		goto out;
	}
	if (!cli_bf_instances(cfg, a.instance, a.restart, &list))
		goto out;
	if (list.n == 0 && list.nremoved > 0) {
		printf("nothing else to backfill\n");
		status = CLI_EXIT_OK;
		goto out;
	}
	if (list.n == 0) {
		printf("nothing to backfill: %s, and [wix] instances is "
		    "empty\n", a.restart ? "the store holds no instance" :
		    "no instance is pending, running or failed");
		status = CLI_EXIT_OK;
		goto out;
	}

	bf.cfg = cfg;
	bf.restart = a.restart;
	bf.tty = isatty(STDERR_FILENO) == 1;
	atomic_init(&bf.stop, false);
	pthread_mutex_init(&bf.mu, NULL);
	bf.jobs = xcalloc(list.n, sizeof(*bf.jobs));
	bf.njobs = list.n;
	for (i = 0; i < list.n; i++) {
		bf.jobs[i].id = list.ids[i];
		bf.jobs[i].bf = &bf;
	}
	/* Signals are taken by sigtimedwait() below; workers inherit the
	 * mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (i = 0; i < list.n && i < CLI_BF_THREADS; i++) {
		if (pthread_create(&tids[i], NULL, cli_bf_worker, &bf) != 0) {
			log_warn("backfill: cannot start a thread");
			break;
		}
		nthreads++;
	}
	if (nthreads == 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		goto out;
	}
	for (;;) {
		struct timespec ts = { 0, CLI_BF_TICK_MS * 1000000L };

		pthread_mutex_lock(&bf.mu);
		r = bf.ndone == bf.njobs;
		pthread_mutex_unlock(&bf.mu);
		if (r)
			break;
		if (bf.tty)
			cli_bf_draw(&bf);
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig != SIGINT && sig != SIGTERM)
			continue;
		if (bf.tty)
			fprintf(stderr, "\r\033[K");
		if (atomic_load(&bf.stop)) {
			/* A second signal: go now.  Every committed page
			 * stays; the page in flight is asked for again. */
			log_info("backfill: second signal: exiting now");
			(void)signal(sig, SIG_DFL);
			pthread_sigmask(SIG_UNBLOCK, &set, NULL);
			(void)raise(sig);
		}
		log_info("backfill: %s: stopping at the next page boundary "
		    "(again to exit now)", sig == SIGINT ? "SIGINT" :
		    "SIGTERM");
		atomic_store(&bf.stop, true);
		/* And the Wix calls under way (a backoff, a dead network)
		 * end now rather than in minutes: the runs stop at their
		 * last committed page. */
		wixapi_stop(bf.w);
	}
	for (i = 0; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (bf.tty)
		fprintf(stderr, "\r\033[K");

	for (i = 0; i < bf.njobs; i++) {
		const struct cli_bf_job *j = &bf.jobs[i];
		/* Ids and reasons come from Wix or webhooks: no control
		 * bytes to the terminal. */
		char id[320];

		(void)term_safe(j->id, id, sizeof(id));
		if (j->skipped)
			printf("%s: already done (--restart runs it again)\n",
			    id);
		else if (j->rc == RS_OK)
			printf("%s: done: %lld pages, %lld refunds (%lld new "
			    "or newer), %llu requests\n", id,
			    (long long)j->pages, (long long)j->refunds,
			    (long long)j->applied,
			    (unsigned long long)j->requests);
		else if (j->rc == RS_ERR_STOPPING) {
			interrupted = true;
			fprintf(stderr, "refundsync: backfill %s: interrupted "
			    "after page %lld; run it again to resume\n", id,
			    (long long)j->pages);
		} else {
			failed = true;
			fprintf(stderr, "refundsync: backfill %s: failed: ",
			    id);
			term_fputs(j->why != NULL ? j->why :
			    rs_strstatus(j->rc), stderr);
			fputc('\n', stderr);
		}
	}
	status = failed || interrupted ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
	pthread_mutex_destroy(&bf.mu);
out:
	for (i = 0; i < bf.njobs; i++)
		free(bf.jobs[i].why);
	free(bf.jobs);
	for (i = 0; i < list.n; i++)
		free(list.ids[i]);
	free(list.ids);
	for (i = 0; i < list.nremoved; i++)
		free(list.removed[i]);
	free(list.removed);
	free(why);
	wixapi_free(bf.w);
	config_free(cfg);
	return status;
}

/*
 * `refundsync reconcile [-c FILE] [--instance ID] [--heal] [--json]`: the
 * work is in core/reconcile.c.  0: everything matches; 4: drift found
 * (healed or not); 1: an instance could not be reconciled (Wix or the
 * store failed) or the run was interrupted; 2: usage or config.
 */
static int
cmd_reconcile(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg = NULL;
	struct store *st = NULL;
	struct store_options so;
	struct wixapi *w = NULL;
	struct reconcile_options opt;
	struct reconcile_report *rep = NULL;
	const char *outcome;
	char *why = NULL;
	int status = CLI_EXIT_FAILURE, r;

	if ((r = parse_args(argc, argv, "cvijH", &a)) != 0)
		return r;
	if (a.nargs != 0)
		return usage("reconcile takes no arguments");
	if (a.instance != NULL && a.instance[0] == '\0')
		return usage("reconcile: --instance needs an instance id");
	log_setverbose(a.verbose);
	if ((cfg = load_config(a.config)) == NULL)
		return CLI_EXIT_USAGE;
	switch (backfill_wixapi_new(cfg, &w, &why)) {
	case RS_OK:
		break;
	case RS_ERR_NOTFOUND:
		fprintf(stderr, "refundsync: reconcile: no Wix credentials in "
		    "%s: set [wix] app_id and app_secret_file, or api_key_file "
		    "and site_id\n", cfg->path);
		status = CLI_EXIT_USAGE;
		goto out;
	case RS_ERR_IO:
		/* The store's directory: a runtime failure, as when the
		 * store cannot be opened. */
		fprintf(stderr, "refundsync: reconcile: %s\n", why);
		goto out;
	default:
		fprintf(stderr, "refundsync: reconcile: %s\n", why);
		status = CLI_EXIT_USAGE;
		goto out;
	}
	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = (int)cfg->busy_timeout_ms;
	free(why);
	why = NULL;
	if (store_open(cfg->store_path, &so, &st, &why) != RS_OK) {
		fprintf(stderr, "refundsync: reconcile: store: %s\n",
		    why != NULL ? why : "cannot open");
		goto out;
	}
	memset(&opt, 0, sizeof(opt));
	opt.instance_id = a.instance;
	opt.heal = a.heal;
	opt.progress = !a.json && isatty(STDERR_FILENO) == 1;
	if (reconcile_run(cfg, st, w, &opt, &rep, &why) != RS_OK) {
		fprintf(stderr, "refundsync: reconcile: %s\n", why != NULL ?
		    why : "failed");
		goto out;
	}
	if (a.json)
		reconcile_report_json(rep, stdout);
	else
		reconcile_report_print(rep, stdout);
	outcome = reconcile_report_outcome(rep);
	if (strcmp(outcome, "failed") == 0)
		status = CLI_EXIT_FAILURE;
	else if (strcmp(outcome, "drift") == 0)
		status = RECONCILE_EXIT_DRIFT;
	else
		status = CLI_EXIT_OK;
out:
	reconcile_report_free(rep);
	store_close(st);
	wixapi_free(w);
	free(why);
	config_free(cfg);
	return status;
}

/*
 * `refundsync export status | replay --exporter NAME [--from SEQ] |
 * dead [--exporter NAME] | retry-dead [--exporter NAME]` [--json]: the
 * work is in core/export.c.  May run beside the daemon: replay and
 * retry-dead only write the store, and the daemon's workers pick it up.
 */
static int
cmd_export(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg = NULL;
	struct store_options so;
	struct store *st = NULL;
	const char *sub, *why;
	char *swhy = NULL;
	enum rs_status s;
	int64_t from = 1;
	int r, status = CLI_EXIT_FAILURE;
	bool writes;

	if ((r = parse_args(argc, argv, "cjef", &a)) != 0)
		return r;
	if (a.nargs != 1)
		return usage("export: status, replay, dead or retry-dead?");
	sub = a.args[0];
	if (strcmp(sub, "replay") == 0) {
		if (a.exporter == NULL)
			return usage("export replay needs --exporter NAME");
		if (a.from != NULL && (why = strnum_i64(a.from, 1, INT64_MAX,
		    &from)) != NULL) {
			fprintf(stderr, "refundsync: export replay: --from "
			    "%s: %s (a change-log seq, 1 or more)\n", a.from,
			    why);
			return CLI_EXIT_USAGE;
		}
	} else if (strcmp(sub, "status") == 0) {
		if (a.exporter != NULL || a.from != NULL)
			return usage("export status takes no --exporter or "
			    "--from");
	} else if (strcmp(sub, "dead") == 0 ||
	    strcmp(sub, "retry-dead") == 0) {
		if (a.from != NULL)
			return usage("--from is for export replay");
	} else
		return usage("export: status, replay, dead or retry-dead?");
	if ((cfg = load_config(a.config)) == NULL)
		return CLI_EXIT_USAGE;
	/* Read-only unless the command writes, so that status and dead
	 * never take a lock from the daemon. */
	writes = strcmp(sub, "replay") == 0 || strcmp(sub, "retry-dead") == 0;
	memset(&so, 0, sizeof(so));
	so.busy_timeout_ms = (int)cfg->busy_timeout_ms;
	so.readonly = !writes;
	if (store_open(cfg->store_path, &so, &st, &swhy) != RS_OK) {
		fprintf(stderr, "refundsync: store: %s\n", swhy != NULL ?
		    swhy : "cannot open");
		free(swhy);
		goto out;
	}
	if (strcmp(sub, "status") == 0)
		s = export_cmd_status(cfg, st, a.json, stdout, stderr);
	else if (strcmp(sub, "replay") == 0)
		s = export_cmd_replay(cfg, st, a.exporter, from, a.json,
		    stdout, stderr);
	else if (strcmp(sub, "dead") == 0)
		s = export_cmd_dead(cfg, st, a.exporter, a.json, stdout,
		    stderr);
	else
		s = export_cmd_retry_dead(cfg, st, a.exporter, a.json, stdout,
		    stderr);
	if (s == RS_OK)
		status = CLI_EXIT_OK;
	else if (s == RS_ERR_CONFIG)
		status = CLI_EXIT_USAGE;
out:
	store_close(st);
	config_free(cfg);
	return status;
}

/* `refundsync status`: the facts of GET /status, from the store. */
static int
cmd_status(int argc, char *argv[])
{
	struct cli_args a;
	struct config *cfg;
	struct store *st;
	int r;

	if ((r = parse_args(argc, argv, "cj", &a)) != 0)
		return r;
	if (a.nargs != 0)
		return usage("status takes no arguments");
	if ((cfg = load_config(a.config)) == NULL)
		return CLI_EXIT_USAGE;
	r = CLI_EXIT_FAILURE;
	if ((st = open_store_ro(cfg)) != NULL &&
	    statuspage_cmd(st, a.json, stdout, stderr) == RS_OK)
		r = CLI_EXIT_OK;
	store_close(st);
	config_free(cfg);
	return r;
}

/*
 * `refundsync refund [-c FILE] create ...`: the work, its options and
 * its exit statuses (3: Wix refused) are in core/refundcmd.c.
 */
static int
cmd_refund(int argc, char *argv[])
{
	return refundcmd_main(argc, argv);
}

static const struct {
	const char	*name;
	int		(*fn)(int, char *[]);
} commands[] = {
	{ "serve",	cmd_serve },
	{ "check",	cmd_check },
	{ "export",	cmd_export },
	{ "refunds",	cmd_refunds },
	{ "refund",	cmd_refund },
	{ "backfill",	cmd_backfill },
	{ "reconcile",	cmd_reconcile },
	{ "status",	cmd_status },
	{ "version",	cmd_version },
};

/*
 * Words of a leading option that `refundsync -c FILE serve` puts before
 * the command's name: -c FILE, -cFILE, --config FILE, --config=FILE, -v,
 * --verbose.  0 if argv[i] is none of them (or -c lacks its value).
 */
static int
leading_option_words(int argc, char *argv[], int i)
{
	const char *w = argv[i];

	if ((w[0] == '-' && w[1] == 'v' && w[strspn(w + 1, "v") + 1] ==
	    '\0') || strcmp(w, "--verbose") == 0 ||
	    strncmp(w, "--config=", 9) == 0 ||
	    (strncmp(w, "-c", 2) == 0 && w[2] != '\0'))
		return 1;
	if ((strcmp(w, "-c") == 0 || strcmp(w, "--config") == 0) &&
	    i + 1 < argc)
		return 2;
	return 0;
}

/*
 * Let the common options come before the command's name too, as many
 * tools allow (`refundsync -c /etc/x.conf status`): rotate the word after
 * them to argv[1], where the command's name is looked for, so that the
 * command's own getopt_long() sees those options.  Returns false, with
 * argv left alone, if no word follows them.
 */
static bool
hoist_command(int argc, char *argv[])
{
	int i = 1, n;

	while (i < argc && (n = leading_option_words(argc, argv, i)) > 0)
		i += n;
	if (i >= argc)
		return false;
	char *cmd = argv[i];
	memmove(&argv[2], &argv[1], (size_t)(i - 1) * sizeof(argv[0]));
	argv[1] = cmd;
	return true;
}

int
cli_main(int argc, char *argv[])
{
	log_init(0, false);
	xmalloc_init_tuning();
	xmalloc_init_json();
	if (argc < 2)
		return usage(NULL);
	if (!hoist_command(argc, argv)) {
		fprintf(stderr, "refundsync: no command after the options\n");
		return usage(NULL);
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_text, stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(1, argv + 1);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	if (strcmp(argv[1], "-c") == 0 || strcmp(argv[1], "--config") == 0)
		fprintf(stderr, "refundsync: option --config needs a value\n");
	else
		fprintf(stderr, "refundsync: unknown %s '%s'\n",
		    argv[1][0] == '-' ? "option" : "command", argv[1]);
	return usage(NULL);
}
