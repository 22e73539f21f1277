/*
 * cli.c: command dispatch and the small read-only commands.
 *
 * Each command parses its own options with getopt_long (GNU permutes, so
 * `refunds -c F list --json` and `refunds list -c F --json` both work),
 * loads the config the same way (-c, then $REFUNDSYNC_CONFIG, then the
 * default path), and returns an exit status from cli.h.  Runs on the main
 * thread only.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "core/cli.h"
#include "core/server.h"
#include "domain/money.h"
#include "util/log.h"
#include "util/xmalloc.h"

static const char usage_text[] =
"usage: refundsync serve   [-c FILE] [-v]...   run the daemon in the foreground\n"
"       refundsync check   [-c FILE]           validate the config; exit 0 or 1\n"
"       refundsync refunds [-c FILE] list [--instance ID] [--status S] [--json]\n"
"       refundsync refunds [-c FILE] show ID [--json]\n"
"       refundsync version\n"
"\n"
"The config is -c FILE, else $REFUNDSYNC_CONFIG, else " CONFIG_DEFAULT_PATH ".\n"
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

static const struct option common_opts[] = {
	{ "config",	required_argument,	NULL, 'c' },
	{ "verbose",	no_argument,		NULL, 'v' },
	{ "json",	no_argument,		NULL, 'j' },
	{ "instance",	required_argument,	NULL, 'i' },
	{ "status",	required_argument,	NULL, 's' },
	{ "help",	no_argument,		NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

struct cli_args {
	const char	*config;
	int		 verbose;
	bool		 json;
	const char	*instance;
	const char	*status;
	int		 nargs;		/* positional arguments left */
	char		**args;
};

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
		if (ch == '?' || ch == ':' || strchr(allowed, ch) == NULL) {
			if (ch == 'h')
				return usage(NULL);
			fprintf(stderr, "refundsync %s: unknown or misplaced "
			    "option '%s'\n", argv[0], argv[optind - 1]);
			return usage(NULL);
		}
		switch (ch) {
		case 'c':
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
	if ((cfg = load_config(a.config)) == NULL)
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
		fprintf(stderr, "refundsync: store %s: %s\n", cfg->store_path,
		    why != NULL ? why : "cannot open");
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
		char rev[24] = "-";

		if (r->has_revision)
			snprintf(rev, sizeof(rev), "%lld",
			    (long long)r->revision);
		printf("%-36s %-10s %16s %-3s %6s %s\n", r->id, r->status,
		    r->amount, r->currency, rev,
		    r->updated_date != NULL ? r->updated_date : "-");
	}
	return RS_OK;
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

		body = cJSON_Parse(row.refund.body);
		if (body != NULL)
			cJSON_AddItemToObject(o, "body", body);
		text = cJSON_PrintUnformatted(o);
		printf("%s\n", text);
		free(text);
		cJSON_Delete(o);
	} else {
		const struct refund *rf = &row.refund;

		printf("id:           %s\n", rf->id);
		printf("instance:     %s\n",
		    row.instance_id != NULL ? row.instance_id : "-");
		printf("charge:       %s\n", rf->charge_id);
		printf("amount:       %s %s\n", rf->amount, rf->currency);
		if (rf->amount_exact)
			printf("amount_minor: %lld\n",
			    (long long)rf->amount_minor);
		else
			printf("amount_minor: - (not exact in %s)\n",
			    rf->currency);
		printf("status:       %s\n", rf->status);
		if (rf->has_revision)
			printf("revision:     %lld\n",
			    (long long)rf->revision);
		printf("created:      %s\n",
		    rf->created_date != NULL ? rf->created_date : "-");
		printf("updated:      %s\n",
		    rf->updated_date != NULL ? rf->updated_date : "-");
		printf("source:       %s (stored %s)\n", row.source,
		    row.stored_at);
		printf("body:         %s\n", rf->body);
	}
	store_refund_row_cleanup(&row);
	status = CLI_EXIT_OK;
out:
	store_close(st);
	config_free(cfg);
	return status;
}

static const struct {
	const char	*name;
	int		(*fn)(int, char *[]);
} commands[] = {
	{ "serve",	cmd_serve },
	{ "check",	cmd_check },
	{ "refunds",	cmd_refunds },
	{ "version",	cmd_version },
};

int
cli_main(int argc, char *argv[])
{
	log_init(0, false);
	xmalloc_init_json();
	if (argc < 2)
		return usage(NULL);
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
	fprintf(stderr, "refundsync: unknown command '%s'\n", argv[1]);
	return usage(NULL);
}
