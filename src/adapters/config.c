/*
 * config.c: the INI configuration (SPEC §2), parsed with inih from one
 * table of keys.
 *
 * Key decision: every key is one row of rows[] below (Redis
 * standardConfig, tmux options-table): section, name, type, bounds,
 * default, help, and the offset of its field in struct config.  Defaults,
 * parsing, checking, freeing and config_keys() all walk that one table,
 * and a test keeps etc/refundsync.conf in step with it.  After the keys,
 * config_validate() checks the rules that tie several keys together.
 *
 * inih splits "key = value" lines, but it reads them through our own line
 * reader (ini_parse_stream()) instead of ini_parse(): the packaged library
 * gives the handler no line number and no call at a section header, and
 * what it accepts depends on how it was built (continuation lines, inline
 * comments, line length).  The reader numbers the lines, sees every
 * section header, removes leading blanks (so an indented key is never
 * taken for a continuation of the previous value) and inline comments (a
 * ';' after a blank, whatever the build), and reports every malformed
 * line instead of only the first.  The rules are therefore the same on
 * every build:
 *
 *   - a line whose first non-blank character is ';' or '#' is a comment;
 *   - a ';' after a blank starts a comment, so "threads = 4 ; four" is 4,
 *     and "app_id = a;b" keeps its ';' ('#' is only a comment at the
 *     start of a line);
 *   - keys and sections are case-sensitive; a key may be set once;
 *   - a line longer than inih's buffer (198 bytes on Debian) is an error.
 *
 * Threads: config_load() keeps no global state, so it may run in any
 * thread (start-up, SIGHUP).  A loaded struct config is never changed.
 */
#define _POSIX_C_SOURCE 200809L

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "adapters/config.h"
#include "exporters/registry.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#define nitems(a)		(sizeof(a) / sizeof((a)[0]))

#define CONFIG_LINE_MAX		4096	/* longest comment line */
#define CONFIG_FILE_MAX		(1024 * 1024)	/* longest file */
#define CONFIG_ERRORS_MAX	100	/* errors listed, at most */
#define CONFIG_ERRORS_BYTES	(256 * 1024)
#define CONFIG_EXPORTER_NAME_MAX 64	/* bytes of an exporter's NAME */
#define CONFIG_EXPORTERS_MAX	64	/* [exporter NAME] sections */
#define CONFIG_EXPORTER_KEYS_MAX 64	/* keys in one of them */
#define CREDENTIAL_PREFIX	"credential:"

enum config_type {
	CT_STRING,		/* text, checked by the row's check hook */
	CT_PATH,		/* a file; relative to the config's directory */
	CT_SECRET,		/* a file as CT_PATH, or "credential:NAME" */
	CT_INT,			/* int64_t in [min, max] */
	CT_BOOL,		/* yes/no, true/false, on/off, 1/0 */
	CT_LIST,		/* comma-separated items of type item */
	CT_LISTEN		/* "host:port" or "[v6]:port" */
};

#define CF_EMPTY_OK	0x1	/* "" is a valid value: unset, or off */

/* A check for a string value: NULL if good, else a static reason. */
typedef const char *config_check_fn(const char *value);

struct config_row {
	struct config_key	 key;	/* section, name, default, help */
	enum config_type	 type;
	enum config_type	 item;	/* CT_LIST: the items' type */
	int			 flags;	/* CF_* */
	int64_t			 min;	/* CT_INT: bounds */
	int64_t			 max;
	size_t			 off;	/* offsetof the field */
	size_t			 noff;	/* CT_LIST: of the count */
	config_check_fn		*check;	/* strings, list items */
};

static config_check_fn	check_webhook_path;
static config_check_fn	check_url;
static config_check_fn	check_token;

#define OFF(field)	offsetof(struct config, field)

#define ROW_STRING(sec, name, field, fl, chk, def, help)		\
	{ .key = { sec, name, def, help }, .type = CT_STRING,		\
	  .flags = (fl), .off = OFF(field), .check = (chk) }
#define ROW_PATH(sec, name, field, fl, def, help)			\
	{ .key = { sec, name, def, help }, .type = CT_PATH,		\
	  .flags = (fl), .off = OFF(field) }
#define ROW_SECRET(sec, name, field, fl, def, help)			\
	{ .key = { sec, name, def, help }, .type = CT_SECRET,		\
	  .flags = (fl), .off = OFF(field) }
#define ROW_INT(sec, name, field, lo, hi, def, help)			\
	{ .key = { sec, name, def, help }, .type = CT_INT,		\
	  .min = (lo), .max = (hi), .off = OFF(field) }
#define ROW_BOOL(sec, name, field, def, help)				\
	{ .key = { sec, name, def, help }, .type = CT_BOOL,		\
	  .off = OFF(field) }
#define ROW_LIST(sec, name, field, nfield, it, chk, def, help)	\
	{ .key = { sec, name, def, help }, .type = CT_LIST,		\
	  .item = (it), .off = OFF(field), .noff = OFF(nfield),		\
	  .check = (chk) }
#define ROW_LISTEN(sec, name, field, fl, def, help)			\
	{ .key = { sec, name, def, help }, .type = CT_LISTEN,		\
	  .flags = (fl), .off = OFF(field) }

/* The one table.  etc/refundsync.conf follows its order and help. */
static const struct config_row rows[] = {
	ROW_LISTEN("server", "listen", listen, 0, "127.0.0.1:8080",
	    "public listener, reached by Wix: host:port, or [v6]:port"),
	ROW_LISTEN("server", "admin_listen", admin_listen, CF_EMPTY_OK,
	    "127.0.0.1:8081",
	    "operators only: metrics, readiness, status page; empty = off"),
	ROW_STRING("server", "webhook_path", webhook_path, 0,
	    check_webhook_path, "/webhooks",
	    "the URL path Wix posts webhooks to; starts with /"),
	ROW_INT("server", "max_body", max_body, 1024, 16 * 1024 * 1024,
	    "262144", "largest request body in bytes; larger requests get 413"),
	ROW_INT("server", "threads", threads, 1, 64, "2",
	    "HTTP worker threads"),
	ROW_INT("server", "request_timeout", request_timeout, 1, 3600, "10",
	    "seconds, an absolute limit per request"),
	ROW_INT("server", "max_connections", max_connections, 1, 65536,
	    "512", "most client connections at once"),
	ROW_INT("server", "max_connections_per_ip", max_connections_per_ip,
	    1, 65536, "64",
	    "most connections from one address; at most max_connections"),
	ROW_INT("server", "commit_batch", commit_batch, 1, 10000, "256",
	    "most webhook events committed in one transaction"),

	ROW_PATH("store", "path", store_path, 0,
	    "/var/lib/refundsync/refundsync.db", "the SQLite database file"),
	ROW_INT("store", "busy_timeout", busy_timeout_ms, 0, 600000, "5000",
	    "milliseconds to wait for a locked database"),

	ROW_LIST("wix", "public_key_file", public_key_files,
	    npublic_key_files, CT_SECRET, NULL,
	    "/etc/refundsync/wix-public.pem",
	    "Wix's webhook public keys (PEM), comma-separated for rotation"),
	ROW_STRING("wix", "app_id", app_id, CF_EMPTY_OK, check_token, "",
	    "the Wix app id, needed with app_secret_file"),
	ROW_SECRET("wix", "app_secret_file", app_secret_file, CF_EMPTY_OK,
	    "", "OAuth mode: file with the app secret"),
	ROW_SECRET("wix", "api_key_file", api_key_file, CF_EMPTY_OK, "",
	    "or API-key mode for one site: file with the API key"),
	ROW_STRING("wix", "site_id", site_id, CF_EMPTY_OK, check_token, "",
	    "the site the API key belongs to"),
	ROW_LIST("wix", "instances", instances, ninstances, CT_STRING,
	    check_token, "",
	    "instance ids to backfill at start, comma-separated"),
	ROW_STRING("wix", "api_base", api_base, 0, check_url,
	    "https://www.wixapis.com",
	    "the Wix REST API; https:// (http:// only to loopback)"),
	ROW_INT("wix", "connect_timeout", wix_connect_timeout, 1, 300, "5",
	    "seconds to connect to the Wix REST API, per attempt"),
	ROW_INT("wix", "timeout", wix_timeout, 1, 3600, "30",
	    "seconds for one Wix API request in all; >= connect_timeout"),
	ROW_INT("wix", "jwt_leeway", jwt_leeway, 0, 86400, "60",
	    "seconds of clock skew allowed on exp, nbf and iat"),

	ROW_BOOL("backfill", "on_install", on_install, "yes",
	    "start a backfill when AppInstalled arrives"),
	ROW_INT("backfill", "page_size", page_size, 1, 100, "100",
	    "refunds asked for per Query Refunds page"),
	ROW_INT("backfill", "requests_per_minute", requests_per_minute, 1,
	    100000, "200", "Wix allows 200 per minute per instance"),

	ROW_INT("reconcile", "interval", reconcile_interval, 0, 31622400, "0",
	    "seconds between the daemon's reconcile runs; 0 = off"),
	ROW_BOOL("reconcile", "heal", reconcile_heal, "no",
	    "let those runs make the safe repairs"),
};

#define NROWS	nitems(rows)

/*
 * The engine's keys of an [exporter NAME] section: the same for every
 * type, never handed to the exporter (struct config_exporter).
 */
static const struct exporter_row {
	struct config_key	 key;
	int64_t			 min;
	int64_t			 max;
	size_t			 off;	/* in struct config_exporter */
} exporter_rows[] = {
#define EXP_OFF(field)	offsetof(struct config_exporter, field)
	{ { "exporter", "batch", "0",
	    "most records handed over at once; 0: the type's default" },
	    0, 10000, EXP_OFF(batch) },
	{ { "exporter", "retry_initial_ms", "1000",
	    "wait after a first failure, in ms; doubles with each failure" },
	    1, 3600000, EXP_OFF(retry_initial_ms) },
	{ { "exporter", "retry_max_ms", "300000",
	    "longest wait between two attempts, in ms" },
	    1, 86400000, EXP_OFF(retry_max_ms) },
	{ { "exporter", "retry_horizon", "86400",
	    "seconds a failing record is retried before it is a dead letter" },
	    1, 31536000, EXP_OFF(retry_horizon) },
	{ { "exporter", "poll_ms", "500",
	    "how often an idle exporter looks for new changes, in ms" },
	    10, 60000, EXP_OFF(poll_ms) },
#undef EXP_OFF
};

#define NEXPROWS	nitems(exporter_rows)

/* Where the keys of one [exporter NAME] section were set. */
struct parse_exporter {
	int	 type_line;		/* 0: not set */
	int	 row_line[NEXPROWS];	/* the engine's keys */
	bool	 row_bad[NEXPROWS];
};

/* The state of one config_load(). */
/* One error found: at line (0: of the whole file), as text. */
struct parse_err {
	int		 line;
	size_t		 order;		/* when it was found */
	char		*text;		/* owned */
};

struct parse {
	struct config	*cfg;
	const char	*file;		/* as given, for messages */
	FILE		*fp;
	int		 lineno;	/* of the line last read */
	size_t		 nbytes;	/* read so far */
	int		 read_errno;	/* a read failed */
	bool		 stop;		/* give inih no more lines */
	enum {
		SECT_NONE,		/* before any section */
		SECT_KEYS,		/* a section whose keys are rows[] */
		SECT_EXPORTER,		/* [exporter NAME]: exporters[exp] */
		SECT_SKIP		/* refused: ignore its keys */
	}		 sect;
	const char	*sectname;	/* SECT_KEYS: the section's name */
	size_t		 exp;		/* SECT_EXPORTER: which */
	struct parse_exporter *pexp;	/* parallel to cfg->exporters */
	int		 keyline[NROWS]; /* where a key was set; 0 = not */
	bool		 keybad[NROWS];	/* its value was refused */
	struct parse_err *errs;		/* the first CONFIG_ERRORS_MAX */
	size_t		 nerr;		/* all of them */
};

/*
 * The kinds of section.  A plain kind ("[server]") takes its keys from
 * rows[].  A named kind ("[exporter NAME]") has hooks instead: begin is
 * called at the header with NAME and returns NULL to accept the section
 * or why it is refused.  Exporters are not in this version, so theirs
 * refuses; the exporter issue adds a key hook for their keys.
 */
struct section_kind {
	const char	*name;
	bool		 named;		/* "[name LABEL]" */
	const char	*(*begin)(struct parse *p, const char *label);
};

static const char	*section_exporter(struct parse *, const char *);

static const struct section_kind section_kinds[] = {
	{ "server", false, NULL },
	{ "store", false, NULL },
	{ "wix", false, NULL },
	{ "backfill", false, NULL },
	{ "reconcile", false, NULL },
	{ "exporter", true, section_exporter },
};

static void	perr(struct parse *p, int line, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));
static const char *listen_parse(const char *text,
		    struct sockaddr_storage *ss, unsigned *sslen);

/* Fields of struct config, by the offset in a row. */
static char **
field_str(struct config *cfg, size_t off)
{
	return (char **)(void *)((char *)cfg + off);
}

static int64_t *
field_int(struct config *cfg, size_t off)
{
	return (int64_t *)(void *)((char *)cfg + off);
}

static bool *
field_bool(struct config *cfg, size_t off)
{
	return (bool *)(void *)((char *)cfg + off);
}

static char ***
field_list(struct config *cfg, size_t off)
{
	return (char ***)(void *)((char *)cfg + off);
}

static size_t *
field_size(struct config *cfg, size_t off)
{
	return (size_t *)(void *)((char *)cfg + off);
}

static void
list_free(char **items)
{
	size_t i;

	if (items == NULL)
		return;
	for (i = 0; items[i] != NULL; i++)
		free(items[i]);
	free(items);
}

static void
field_free(struct config *cfg, const struct config_row *row)
{
	switch (row->type) {
	case CT_STRING:
	case CT_PATH:
	case CT_SECRET:
	case CT_LISTEN:
		free(*field_str(cfg, row->off));
		*field_str(cfg, row->off) = NULL;
		break;
	case CT_LIST:
		list_free(*field_list(cfg, row->off));
		*field_list(cfg, row->off) = NULL;
		*field_size(cfg, row->noff) = 0;
		break;
	case CT_INT:
	case CT_BOOL:
		break;
	}
}

/*
 * s as a short, printable, double-quoted string for a message.  Caller
 * frees.
 */
static char *
quote(const char *s)
{
	struct buf b;
	size_t i;

	buf_init(&b, 512);
	(void)buf_appends(&b, "\"");
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i == 64) {
			(void)buf_appends(&b, "...");
			break;
		}
		if (c == '"' || c == '\\')
			(void)buf_printf(&b, "\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			(void)buf_printf(&b, "\\x%02x", c);
		else
			(void)buf_append(&b, &s[i], 1);
	}
	(void)buf_appends(&b, "\"");
	return buf_detach(&b, NULL);
}

static bool
is_token(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

static const char *
check_webhook_path(const char *v)
{
	if (v[0] != '/')
		return "must start with '/'";
	if (!is_token(v))
		return "must be printable ASCII without spaces";
	if (strpbrk(v, "?#") != NULL)
		return "must not contain '?' or '#'";
	if (strcmp(v, "/healthz") == 0)
		return "/healthz is the health check";
	return NULL;
}

/*
 * Is the host at the start of s (up to ':', '/' or the end; an IPv6
 * literal in brackets) a loopback one: localhost, 127.0.0.0/8 or [::1]?
 */
static bool
host_is_loopback(const char *s)
{
	size_t n;

	if (strncmp(s, "[::1]", 5) == 0)
		return s[5] == '\0' || s[5] == ':' || s[5] == '/';
	n = strcspn(s, ":/");
	if (n == 9 && strncmp(s, "localhost", 9) == 0)
		return true;
	/* 127.x.y.z: digits and dots only after "127.". */
	if (n < 5 || strncmp(s, "127.", 4) != 0)
		return false;
	return strspn(s, "0123456789.") >= n;
}

/*
 * The Wix API's base URL.  The app secret and API key travel in its
 * requests, so plain http:// is refused except to a loopback address
 * (the sandbox, a local proxy).
 */
static const char *
check_url(const char *v)
{
	const char *host;

	if (strncmp(v, "https://", 8) == 0)
		host = v + 8;
	else if (strncmp(v, "http://", 7) == 0)
		host = v + 7;
	else
		return "must start with https://";
	if (!is_token(v))
		return "must be printable ASCII without spaces";
	if (*host == '\0' || *host == '/')
		return "has no host";
	if (host == v + 7 && !host_is_loopback(host))
		return "must start with https:// (http:// only to localhost, "
		    "127.0.0.0/8 or [::1]: the credentials would cross the "
		    "network in clear text)";
	return NULL;
}

static const char *
check_token(const char *v)
{
	if (!is_token(v))
		return "must be printable ASCII without spaces";
	return NULL;
}

/* The NAME of "credential:NAME", or NULL if ref is a plain path. */
static const char *
credential_name(const char *ref)
{
	size_t n = sizeof(CREDENTIAL_PREFIX) - 1;

	if (strncmp(ref, CREDENTIAL_PREFIX, n) != 0)
		return NULL;
	return ref + n;
}

static bool
credential_ok(const char *name)
{
	return name[0] != '\0' && strchr(name, '/') == NULL &&
	    strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* v made absolute against dir (unless dir is ""). Caller frees. */
static char *
path_resolve(const char *dir, const char *v)
{
	size_t n;

	if (v[0] == '/' || dir[0] == '\0')
		return xstrdup(v);
	while (v[0] == '.' && v[1] == '/')
		v += 2;
	n = strlen(dir);
	return xasprintf("%s%s%s", dir, dir[n - 1] == '/' ? "" : "/", v);
}

/*
 * One string value (a scalar, or an item of a list) of type type for
 * row: NULL and *out (caller frees), or why it is refused (caller frees).
 */
static char *
value_string(const struct config *cfg, const struct config_row *row,
    enum config_type type, const char *v, char **out)
{
	const char *why, *name;
	char *q, *r;

	if (v[0] == '\0') {
		if ((row->flags & CF_EMPTY_OK) == 0)
			return xstrdup("must not be empty");
		*out = xstrdup("");
		return NULL;
	}
	switch (type) {
	case CT_STRING:
		if (row->check != NULL && (why = row->check(v)) != NULL)
			return xstrdup(why);
		*out = xstrdup(v);
		return NULL;
	case CT_SECRET:
		if ((name = credential_name(v)) != NULL) {
			if (!credential_ok(name)) {
				q = quote(v);
				r = xasprintf("%s: the credential name must "
				    "not be empty or contain '/'", q);
				free(q);
				return r;
			}
			*out = xstrdup(v);
			return NULL;
		}
		*out = path_resolve(cfg->dir, v);
		return NULL;
	case CT_PATH:
		*out = path_resolve(cfg->dir, v);
		return NULL;
	case CT_LISTEN:
		if ((why = listen_parse(v, NULL, NULL)) != NULL) {
			q = quote(v);
			r = xasprintf("%s: %s", q, why);
			free(q);
			return r;
		}
		*out = xstrdup(v);
		return NULL;
	case CT_INT:
	case CT_BOOL:
	case CT_LIST:
		break;
	}
	RS_PANIC("not a string type");
}

static char *
value_list(struct config *cfg, const struct config_row *row, const char *v)
{
	struct config_row item = *row;
	const char *s, *e, *end;
	char **items, *one, *why;
	size_t n, i;

	/* Items are never empty, whatever the row allows for the list. */
	item.flags &= ~CF_EMPTY_OK;
	n = 0;
	if (v[0] != '\0')
		for (n = 1, s = v; (s = strchr(s, ',')) != NULL; s++)
			n++;
	items = xcalloc(n + 1, sizeof(*items));
	for (i = 0, s = v; i < n; i++, s = end + 1) {
		if ((end = strchr(s, ',')) == NULL)
			end = s + strlen(s);
		for (e = end; e > s && (e[-1] == ' ' || e[-1] == '\t'); e--)
			;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		if (s == e) {
			list_free(items);
			return xasprintf("item %zu of the list is empty",
			    i + 1);
		}
		one = xstrndup(s, (size_t)(e - s));
		why = value_string(cfg, &item, row->item, one, &items[i]);
		free(one);
		if (why != NULL) {
			list_free(items);
			return why;
		}
	}
	field_free(cfg, row);
	*field_list(cfg, row->off) = items;
	*field_size(cfg, row->noff) = n;
	return NULL;
}

/*
 * Set row's field in cfg from the text v.  NULL on success, else why v
 * was refused (caller frees) and the field is unchanged.
 */
static char *
row_set(struct config *cfg, const struct config_row *row, const char *v)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	const char *why;
	char *q, *r, *s = NULL;
	int64_t n;
	size_t i;

	switch (row->type) {
	case CT_STRING:
	case CT_PATH:
	case CT_SECRET:
	case CT_LISTEN:
		if ((r = value_string(cfg, row, row->type, v, &s)) != NULL)
			return r;
		field_free(cfg, row);
		*field_str(cfg, row->off) = s;
		return NULL;
	case CT_LIST:
		return value_list(cfg, row, v);
	case CT_INT:
		if ((why = strnum_i64(v, row->min, row->max, &n)) == NULL) {
			*field_int(cfg, row->off) = n;
			return NULL;
		}
		q = quote(v);
		if (strcmp(why, "invalid") == 0)
			r = xasprintf("%s is not an integer", q);
		else
			r = xasprintf("%s is out of range %" PRId64 "..%"
			    PRId64, q, row->min, row->max);
		free(q);
		return r;
	case CT_BOOL:
		for (i = 0; i < nitems(yes); i++) {
			if (strcasecmp(v, yes[i]) == 0) {
				*field_bool(cfg, row->off) = true;
				return NULL;
			}
			if (strcasecmp(v, no[i]) == 0) {
				*field_bool(cfg, row->off) = false;
				return NULL;
			}
		}
		q = quote(v);
		r = xasprintf("%s is not yes/no, true/false, on/off or 1/0", q);
		free(q);
		return r;
	}
	RS_PANIC("unknown type");
}

static void
perr(struct parse *p, int line, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	struct parse_err *e;

	if (p->nerr >= CONFIG_ERRORS_MAX) {
		p->nerr++;
		return;
	}
	if (p->errs == NULL)
		p->errs = xcalloc(CONFIG_ERRORS_MAX, sizeof(*p->errs));
	e = &p->errs[p->nerr];
	e->line = line > 0 ? line : 0;
	e->order = p->nerr++;
	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		e->text = xasprintf("%s:%d: %s", p->file, line, msg);
	else
		e->text = xasprintf("%s: %s", p->file, msg);
}

/* By line, then in the order found: the file's own errors first. */
static int
perr_cmp(const void *a, const void *b)
{
	const struct parse_err *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/*
 * The errors, one a line in the file's order (an exporter's own keys
 * are checked after the whole file is read), and how many more there
 * were; frees them.  Caller frees the text.
 */
static char *
perr_text(struct parse *p)
{
	size_t n = p->nerr < CONFIG_ERRORS_MAX ? p->nerr : CONFIG_ERRORS_MAX;
	struct buf b;
	size_t i;

	buf_init(&b, CONFIG_ERRORS_BYTES);
	if (n > 0)
		qsort(p->errs, n, sizeof(*p->errs), perr_cmp);
	for (i = 0; i < n; i++) {
		(void)buf_printf(&b, "%s%s", i > 0 ? "\n" : "",
		    p->errs[i].text);
		free(p->errs[i].text);
	}
	if (p->nerr > CONFIG_ERRORS_MAX)
		(void)buf_printf(&b, "\n%s: %zu more errors not shown",
		    p->file, p->nerr - CONFIG_ERRORS_MAX);
	free(p->errs);
	p->errs = NULL;
	return buf_detach(&b, NULL);
}

static int
row_find(const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < NROWS; i++)
		if (strcmp(rows[i].key.section, section) == 0 &&
		    strcmp(rows[i].key.name, name) == 0)
			return (int)i;
	return -1;
}

static size_t
row_index(const char *section, const char *name)
{
	int i;

	if ((i = row_find(section, name)) < 0)
		RS_PANIC("no such row");
	return (size_t)i;
}

/*
 * "[exporter NAME]": a new exporter.  NAME (blanks around it dropped) is
 * free text but must be printable, since it shows in metrics labels,
 * idempotency keys and log lines.
 */
static const char *
section_exporter(struct parse *p, const char *label)
{
	struct config *cfg = p->cfg;
	struct config_exporter *e;
	size_t i, len = strlen(label);
	char *name;

	while (len > 0 && (label[len - 1] == ' ' || label[len - 1] == '\t'))
		len--;
	if (len == 0)
		return "an exporter needs a name: [exporter NAME]";
	if (len > CONFIG_EXPORTER_NAME_MAX)
		return "the exporter's name is longer than 64 bytes";
	for (i = 0; i < len; i++)
		if ((unsigned char)label[i] < 0x20 ||
		    (unsigned char)label[i] > 0x7e || label[i] == '"' ||
		    label[i] == '\\')
			return "the exporter's name must be printable ASCII "
			    "without '\"' or '\\'";
	name = xstrndup(label, len);
	for (i = 0; i < cfg->nexporters; i++)
		if (strcmp(cfg->exporters[i].name, name) == 0) {
			free(name);
			/* Static: the line is in the message's prefix. */
			return "duplicate exporter name";
		}
	if (cfg->nexporters == CONFIG_EXPORTERS_MAX) {
		free(name);
		return "too many exporters (at most 64)";
	}
	cfg->exporters = xreallocarray(cfg->exporters, cfg->nexporters + 1,
	    sizeof(*cfg->exporters));
	p->pexp = xreallocarray(p->pexp, cfg->nexporters + 1,
	    sizeof(*p->pexp));
	e = &cfg->exporters[cfg->nexporters];
	memset(e, 0, sizeof(*e));
	memset(&p->pexp[cfg->nexporters], 0, sizeof(*p->pexp));
	e->name = name;
	e->line = p->lineno;
	for (i = 0; i < NEXPROWS; i++)
		(void)strnum_i64(exporter_rows[i].key.def, exporter_rows[i].min,
		    exporter_rows[i].max, (int64_t *)(void *)((char *)e +
		    exporter_rows[i].off));
	p->exp = cfg->nexporters++;
	p->sect = SECT_EXPORTER;
	return NULL;
}

/* One "key = value" line of an [exporter NAME] section. */
static void
exporter_key(struct parse *p, const char *name, const char *value)
{
	struct config_exporter *e = &p->cfg->exporters[p->exp];
	struct parse_exporter *pe = &p->pexp[p->exp];
	const struct exporter_row *row;
	const char *why;
	char *q;
	int64_t n;
	size_t i;
	int first = 0;

	if (strcmp(name, "type") == 0)
		first = pe->type_line;
	for (i = 0; i < NEXPROWS && first == 0; i++)
		if (strcmp(exporter_rows[i].key.name, name) == 0)
			first = pe->row_line[i];
	for (i = 0; i < e->nkv && first == 0; i++)
		if (strcmp(e->kv[i].key, name) == 0)
			first = e->kv[i].line;
	if (first != 0) {
		perr(p, p->lineno, "[exporter %s] %s: duplicate key (first "
		    "set on line %d)", e->name, name, first);
		return;
	}
	if (strcmp(name, "type") == 0) {
		pe->type_line = p->lineno;
		e->type = xstrdup(value);
		return;
	}
	for (i = 0; i < NEXPROWS; i++) {
		row = &exporter_rows[i];
		if (strcmp(row->key.name, name) != 0)
			continue;
		pe->row_line[i] = p->lineno;
		if ((why = strnum_i64(value, row->min, row->max, &n)) ==
		    NULL) {
			*(int64_t *)(void *)((char *)e + row->off) = n;
			return;
		}
		pe->row_bad[i] = true;
		q = quote(value);
		if (strcmp(why, "invalid") == 0)
			perr(p, p->lineno, "[exporter %s] %s: %s is not an "
			    "integer", e->name, name, q);
		else
			perr(p, p->lineno, "[exporter %s] %s: %s is out of "
			    "range %" PRId64 "..%" PRId64, e->name, name, q,
			    row->min, row->max);
		free(q);
		return;
	}
	if (e->nkv == CONFIG_EXPORTER_KEYS_MAX) {
		perr(p, p->lineno, "[exporter %s] %s: too many keys (at most "
		    "%d)", e->name, name, CONFIG_EXPORTER_KEYS_MAX);
		return;
	}
	e->kv = xreallocarray(e->kv, e->nkv + 1, sizeof(*e->kv));
	e->kv[e->nkv].key = xstrdup(name);
	e->kv[e->nkv].line = p->lineno;
	/* Files are resolved now: the exporter never sees the config's
	 * directory.  A systemd credential stays a credential. */
	if (value[0] != '\0' && registry_key_is_path(name) &&
	    strncmp(value, CREDENTIAL_PREFIX, sizeof(CREDENTIAL_PREFIX) - 1)
	    != 0)
		e->kv[e->nkv].value = path_resolve(p->cfg->dir, value);
	else
		e->kv[e->nkv].value = xstrdup(value);
	e->nkv++;
}

/* What a type's check reports about one section. */
struct exporter_report {
	struct parse			*p;
	const struct config_exporter	*e;
};

static void
exporter_report(void *arg, const char *key, const char *reason)
{
	struct exporter_report *r = arg;
	const struct config_exporter *e = r->e;
	int line = e->line;
	size_t i;

	for (i = 0; i < e->nkv; i++)
		if (strcmp(e->kv[i].key, key) == 0)
			line = e->kv[i].line;
	perr(r->p, line, "[exporter %s] %s: %s", e->name, key, reason);
}

/*
 * The values of the type's own keys, parsed by the exporter's own code
 * (registry_check_keys()), so a value the exporter would refuse at open
 * is refused here, at its line.
 */
static void
exporter_check_values(struct parse *p, const struct config_exporter *e)
{
	struct exporter_report r = { p, e };
	struct rs_export_kv *kv;
	size_t i;

	kv = xcalloc(e->nkv + 1, sizeof(*kv));
	for (i = 0; i < e->nkv; i++) {
		kv[i].key = e->kv[i].key;
		kv[i].value = e->kv[i].value;
	}
	(void)registry_check_keys(e->type, e->name, kv, e->nkv,
	    exporter_report, &r);
	free(kv);
}

/* The checks of one exporter that need the whole section. */
static void
exporter_validate(struct parse *p, size_t idx)
{
	const struct config_exporter *e = &p->cfg->exporters[idx];
	const struct parse_exporter *pe = &p->pexp[idx];
	const char *req;
	char *q;
	size_t i, nerr = p->nerr;
	bool have;
	int init = -1, max = -1;

	if (e->type == NULL) {
		perr(p, e->line, "[exporter %s] type: missing (one of %s)",
		    e->name, registry_type_list());
		return;
	}
	if (!registry_type_known(e->type)) {
		q = quote(e->type);
		perr(p, pe->type_line, "[exporter %s] type: %s is not a "
		    "type (one of %s)", e->name, q, registry_type_list());
		free(q);
		return;
	}
	for (i = 0; i < e->nkv; i++)
		if (!registry_key_allowed(e->type, e->kv[i].key))
			perr(p, e->kv[i].line, "[exporter %s] %s: unknown key",
			    e->name, e->kv[i].key);
	if ((req = registry_key_required(e->type)) != NULL) {
		have = false;
		for (i = 0; i < e->nkv; i++)
			if (strcmp(e->kv[i].key, req) == 0 &&
			    e->kv[i].value[0] != '\0')
				have = true;
		if (!have)
			perr(p, e->line, "[exporter %s] %s: missing (type %s "
			    "needs it)", e->name, req, e->type);
	}
	/* Only a section whose keys are all known and present: the
	 * check may assume it, and says nothing twice. */
	if (p->nerr == nerr)
		exporter_check_values(p, e);
	for (i = 0; i < NEXPROWS; i++) {
		if (strcmp(exporter_rows[i].key.name, "retry_initial_ms") == 0)
			init = (int)i;
		if (strcmp(exporter_rows[i].key.name, "retry_max_ms") == 0)
			max = (int)i;
	}
	if (init >= 0 && max >= 0 && !pe->row_bad[init] &&
	    !pe->row_bad[max] && e->retry_max_ms < e->retry_initial_ms)
		perr(p, pe->row_line[max] != 0 ? pe->row_line[max] :
		    pe->row_line[init] != 0 ? pe->row_line[init] : e->line,
		    "[exporter %s] retry_max_ms: %" PRId64 " is less than "
		    "retry_initial_ms (%" PRId64 ")", e->name, e->retry_max_ms,
		    e->retry_initial_ms);
}

/* A "[...]" line: look its kind up and set the section state. */
static void
section_begin(struct parse *p, const char *s)
{
	const struct section_kind *k;
	const char *label, *why;
	char *name;
	size_t i, len = strlen(s), klen;

	p->sect = SECT_SKIP;
	if (len < 2 || s[len - 1] != ']') {
		perr(p, p->lineno, "%s: expected ']' at the end of the line",
		    s);
		return;
	}
	name = xstrndup(s + 1, len - 2);
	for (i = 0; i < nitems(section_kinds); i++) {
		k = &section_kinds[i];
		klen = strlen(k->name);
		if (strncmp(name, k->name, klen) != 0)
			continue;
		if (!k->named) {
			if (name[klen] != '\0')
				continue;
			p->sect = SECT_KEYS;
			p->sectname = k->name;
			goto out;
		}
		if (name[klen] != '\0' && name[klen] != ' ' &&
		    name[klen] != '\t')
			continue;
		for (label = name + klen; *label == ' ' || *label == '\t';
		    label++)
			;
		if ((why = k->begin(p, label)) != NULL)
			perr(p, p->lineno, "[%s]: %s", name, why);
		goto out;
	}
	perr(p, p->lineno, "[%s]: unknown section", name);
out:
	free(name);
}

/* Give inih an empty line in place of one we have dealt with. */
static char *
reader_blank(char *str, int num)
{
	if (num < 2)
		return NULL;
	str[0] = '\n';
	str[1] = '\0';
	return str;
}

/*
 * inih's fgets()-like reader: read one line of the file, number it, and
 * hand inih a normalised copy (see the top of the file).  Lines we have
 * reported as malformed are handed over as empty lines.
 */
static char *
config_reader(char *str, int num, void *arg)
{
	struct parse *p = arg;
	char line[CONFIG_LINE_MAX], *s, *e;
	size_t n = 0, len;
	bool toolong = false, nul = false;
	int c = EOF;

	if (p->stop)
		return NULL;
	while ((c = getc(p->fp)) != EOF) {
		if (++p->nbytes > CONFIG_FILE_MAX) {
			perr(p, 0, "larger than %d bytes", CONFIG_FILE_MAX);
			p->stop = true;
			return NULL;
		}
		if (c == '\n')
			break;
		if (c == '\0')
			nul = true;
		else if (n < sizeof(line) - 1)
			line[n++] = (char)c;
		else
			toolong = true;
	}
	if (c == EOF) {
		if (ferror(p->fp)) {
			p->read_errno = errno != 0 ? errno : EIO;
			p->stop = true;
			return NULL;
		}
		if (n == 0 && !toolong && !nul)
			return NULL;
	}
	p->lineno++;
	line[n] = '\0';
	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';

	s = line;
	if (p->lineno == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '\0' || *s == ';' || *s == '#')
		return reader_blank(str, num);
	if (nul || toolong) {
		perr(p, p->lineno, nul ? "NUL byte in the line" :
		    "line too long");
		if (*s == '[')
			p->sect = SECT_SKIP;
		return reader_blank(str, num);
	}

	/* An inline comment: ';' after a blank. */
	for (e = s + 1; *e != '\0'; e++)
		if (*e == ';' && (e[-1] == ' ' || e[-1] == '\t')) {
			*e = '\0';
			break;
		}
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		s[--len] = '\0';

	if (len + 2 > (size_t)num) {
		perr(p, p->lineno, "line too long (more than %d bytes)",
		    num - 2);
		if (*s == '[')
			p->sect = SECT_SKIP;
		return reader_blank(str, num);
	}
	if (*s == '[') {
		section_begin(p, s);
		if (p->sect == SECT_SKIP)
			return reader_blank(str, num);
	} else if ((e = strpbrk(s, "=:")) == NULL || *e != '=') {
		perr(p, p->lineno, "expected \"key = value\" or "
		    "\"[section]\"");
		return reader_blank(str, num);
	}
	memcpy(str, s, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	return str;
}

/* inih's handler: one "key = value" line.  Errors are collected in p. */
static int
config_handler(void *arg, const char *section, const char *name,
    const char *value)
{
	struct parse *p = arg;
	char *why;
	int i;

	(void)section;	/* p->sectname is the same, and never truncated */
	switch (p->sect) {
	case SECT_NONE:
		perr(p, p->lineno, "%s: key outside of any [section]", name);
		return 1;
	case SECT_SKIP:
		return 1;
	case SECT_EXPORTER:
		exporter_key(p, name, value);
		return 1;
	case SECT_KEYS:
		break;
	}
	if ((i = row_find(p->sectname, name)) < 0) {
		perr(p, p->lineno, "[%s] %s: unknown key", p->sectname, name);
		return 1;
	}
	if (p->keyline[i] != 0) {
		perr(p, p->lineno, "[%s] %s: duplicate key (first set on "
		    "line %d)", p->sectname, name, p->keyline[i]);
		return 1;
	}
	p->keyline[i] = p->lineno;
	if ((why = row_set(p->cfg, &rows[i], value)) != NULL) {
		p->keybad[i] = true;
		perr(p, p->lineno, "[%s] %s: %s", p->sectname, name, why);
		free(why);
	}
	return 1;
}

/* An error about a key found by whole-config validation. */
static void	kerr(struct parse *p, const char *section, const char *name,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
kerr(struct parse *p, const char *section, const char *name,
    const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	perr(p, p->keyline[row_index(section, name)], "[%s] %s: %s", section,
	    name, msg);
}

static bool
key_set(const struct parse *p, const char *section, const char *name)
{
	return p->keyline[row_index(section, name)] != 0;
}

static bool
key_bad(const struct parse *p, const char *section, const char *name)
{
	return p->keybad[row_index(section, name)];
}

static bool
addr_any(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET)
		return sin->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
}

/* Could a and b not both be bound?  Port 0 never clashes. */
static bool
listen_clash(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
	const struct sockaddr_in *b4 = (const struct sockaddr_in *)b;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
	const struct sockaddr_in6 *b6 = (const struct sockaddr_in6 *)b;
	in_port_t pa, pb;

	pa = a->ss_family == AF_INET ? a4->sin_port : a6->sin6_port;
	pb = b->ss_family == AF_INET ? b4->sin_port : b6->sin6_port;
	if (pa != pb || pa == 0)
		return false;
	if (a->ss_family != b->ss_family)
		/* Only an IPv6 wildcard (dual stack) covers IPv4 too. */
		return (a->ss_family == AF_INET6 && addr_any(a)) ||
		    (b->ss_family == AF_INET6 && addr_any(b));
	if (addr_any(a) || addr_any(b))
		return true;
	if (a->ss_family == AF_INET)
		return a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	return memcmp(&a6->sin6_addr, &b6->sin6_addr,
	    sizeof(a6->sin6_addr)) == 0;
}

/* The rules that tie keys together.  Keys already refused are skipped. */
static void
config_validate(struct parse *p)
{
	const struct config *c = p->cfg;
	struct sockaddr_storage a, b;
	unsigned alen, blen;
	size_t i;

	for (i = 0; i < c->nexporters; i++)
		exporter_validate(p, i);

	if (!key_bad(p, "server", "max_connections") &&
	    !key_bad(p, "server", "max_connections_per_ip") &&
	    c->max_connections_per_ip > c->max_connections) {
		if (key_set(p, "server", "max_connections_per_ip"))
			kerr(p, "server", "max_connections_per_ip",
			    "%" PRId64 " is more than max_connections (%"
			    PRId64 ")", c->max_connections_per_ip,
			    c->max_connections);
		else
			kerr(p, "server", "max_connections",
			    "%" PRId64 " is less than max_connections_per_ip "
			    "(%" PRId64 ")", c->max_connections,
			    c->max_connections_per_ip);
	}

	if (!key_bad(p, "server", "listen") &&
	    !key_bad(p, "server", "admin_listen") &&
	    c->admin_listen[0] != '\0' &&
	    listen_parse(c->listen, &a, &alen) == NULL &&
	    listen_parse(c->admin_listen, &b, &blen) == NULL &&
	    listen_clash(&a, &b)) {
		if (key_set(p, "server", "admin_listen"))
			kerr(p, "server", "admin_listen",
			    "clashes with listen (%s)", c->listen);
		else
			kerr(p, "server", "listen",
			    "clashes with admin_listen (%s)", c->admin_listen);
	}

	if (!key_bad(p, "wix", "connect_timeout") &&
	    !key_bad(p, "wix", "timeout") &&
	    c->wix_timeout < c->wix_connect_timeout) {
		if (key_set(p, "wix", "timeout"))
			kerr(p, "wix", "timeout", "%" PRId64 " is less than "
			    "connect_timeout (%" PRId64 ")", c->wix_timeout,
			    c->wix_connect_timeout);
		else
			kerr(p, "wix", "connect_timeout", "%" PRId64 " is more "
			    "than timeout (%" PRId64 ")",
			    c->wix_connect_timeout, c->wix_timeout);
	}

	if (!key_bad(p, "wix", "app_id") && c->app_secret_file[0] != '\0' &&
	    c->app_id[0] == '\0')
		kerr(p, "wix", "app_secret_file", "needs app_id");
	if (!key_bad(p, "wix", "site_id") && c->api_key_file[0] != '\0' &&
	    c->site_id[0] == '\0')
		kerr(p, "wix", "api_key_file", "API-key mode needs site_id");
	if (c->app_secret_file[0] != '\0' && c->api_key_file[0] != '\0')
		kerr(p, "wix", "api_key_file", "cannot be used with "
		    "app_secret_file: choose OAuth or API-key mode");
	if (!key_bad(p, "wix", "app_secret_file") &&
	    !key_bad(p, "wix", "api_key_file") && c->ninstances > 0 &&
	    c->app_secret_file[0] == '\0' && c->api_key_file[0] == '\0')
		kerr(p, "wix", "instances",
		    "backfill needs app_secret_file or api_key_file");
}

/* The absolute directory of the file path.  Caller frees; NULL if the
 * current directory cannot be found (errno set). */
static char *
dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char cwd[PATH_MAX], *dir, *abs;

	if (slash == path)
		return xstrdup("/");
	dir = slash != NULL ? xstrndup(path, (size_t)(slash - path)) :
	    xstrdup(".");
	if (dir[0] == '/')
		return dir;
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		free(dir);
		return NULL;
	}
	abs = path_resolve(cwd, dir);
	if (strcmp(dir, ".") == 0) {
		free(abs);
		abs = xstrdup(cwd);
	}
	free(dir);
	return abs;
}

struct config *
config_defaults(const char *dir)
{
	struct config *cfg;
	size_t i;
	char *why;

	cfg = xcalloc(1, sizeof(*cfg));
	cfg->path = xstrdup("");
	cfg->dir = xstrdup(dir != NULL ? dir : "");
	for (i = 0; i < NROWS; i++)
		if ((why = row_set(cfg, &rows[i], rows[i].key.def)) != NULL)
			fatalx("%s: [%s] %s: bad default: %s", __func__,
			    rows[i].key.section, rows[i].key.name, why);
	return cfg;
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < NROWS; i++)
		field_free(cfg, &rows[i]);
	for (i = 0; i < cfg->nexporters; i++) {
		struct config_exporter *e = &cfg->exporters[i];

		for (size_t j = 0; j < e->nkv; j++) {
			free(e->kv[j].key);
			free(e->kv[j].value);
		}
		free(e->kv);
		free(e->name);
		free(e->type);
	}
	free(cfg->exporters);
	free(cfg->lines);
	free(cfg->path);
	free(cfg->dir);
	free(cfg);
}

enum rs_status
config_load(const char *path, struct config **out, char **errors)
{
	struct parse p;
	struct config *cfg = NULL;
	char *dir = NULL;
	enum rs_status st = RS_ERR_CONFIG;
	int rc;

	memset(&p, 0, sizeof(p));
	p.file = path;
	p.sect = SECT_NONE;
	if ((dir = dir_of(path)) == NULL) {
		perr(&p, 0, "cannot find the current directory: %s",
		    strerror(errno));
		goto out;
	}
	cfg = config_defaults(dir);
	free(cfg->path);
	cfg->path = xstrdup(path);
	p.cfg = cfg;

	if ((p.fp = fopen(path, "r")) == NULL) {
		perr(&p, 0, "cannot open: %s", strerror(errno));
		goto out;
	}
	rc = ini_parse_stream(config_reader, &p, config_handler, &p);
	if (p.read_errno != 0) {
		perr(&p, 0, "cannot read: %s", strerror(p.read_errno));
		goto out;
	}
	if (rc > 0)
		perr(&p, rc, "syntax error");
	else if (rc < 0)
		perr(&p, 0, "cannot parse (inih error %d)", rc);
	if (!p.stop)
		config_validate(&p);
	if (p.nerr == 0) {
		cfg->lines = xcalloc(NROWS, sizeof(*cfg->lines));
		memcpy(cfg->lines, p.keyline, sizeof(p.keyline));
		*out = cfg;
		cfg = NULL;
		st = RS_OK;
	}
out:
	if (p.fp != NULL)
		(void)fclose(p.fp);
	if (st != RS_OK)
		*errors = perr_text(&p);
	free(p.pexp);
	config_free(cfg);
	free(dir);
	return st;
}

static struct config_key	keys[NROWS + 1];	/* zero terminator */
static pthread_once_t		keys_once = PTHREAD_ONCE_INIT;

static void
keys_init(void)
{
	size_t i;

	for (i = 0; i < NROWS; i++)
		keys[i] = rows[i].key;
}

const struct config_key *
config_keys(void)
{
	(void)pthread_once(&keys_once, keys_init);
	return keys;
}

static struct config_key	exporter_keys[NEXPROWS + 1];
static pthread_once_t		exporter_keys_once = PTHREAD_ONCE_INIT;

static void
exporter_keys_init(void)
{
	size_t i;

	for (i = 0; i < NEXPROWS; i++)
		exporter_keys[i] = exporter_rows[i].key;
}

const struct config_key *
config_exporter_keys(void)
{
	(void)pthread_once(&exporter_keys_once, exporter_keys_init);
	return exporter_keys;
}

int
config_line(const struct config *cfg, const char *section, const char *name)
{
	int i;

	if (cfg == NULL || cfg->lines == NULL ||
	    (i = row_find(section, name)) < 0)
		return 0;
	return cfg->lines[i];
}

const struct config_exporter *
config_exporter_find(const struct config *cfg, const char *name)
{
	size_t i;

	if (cfg == NULL || name == NULL)
		return NULL;
	for (i = 0; i < cfg->nexporters; i++)
		if (strcmp(cfg->exporters[i].name, name) == 0)
			return &cfg->exporters[i];
	return NULL;
}

bool
config_exporter_equal(const struct config_exporter *x,
    const struct config_exporter *y)
{
	size_t j;

	if (strcmp(x->name, y->name) != 0 ||
	    strcmp(x->type, y->type) != 0 || x->nkv != y->nkv ||
	    x->batch != y->batch ||
	    x->retry_initial_ms != y->retry_initial_ms ||
	    x->retry_max_ms != y->retry_max_ms ||
	    x->retry_horizon != y->retry_horizon ||
	    x->poll_ms != y->poll_ms)
		return false;
	for (j = 0; j < x->nkv; j++)
		if (strcmp(x->kv[j].key, y->kv[j].key) != 0 ||
		    strcmp(x->kv[j].value, y->kv[j].value) != 0)
			return false;
	return true;
}

bool
config_exporters_equal(const struct config *a, const struct config *b)
{
	size_t i;

	if (a->nexporters != b->nexporters)
		return false;
	for (i = 0; i < a->nexporters; i++)
		if (!config_exporter_equal(&a->exporters[i],
		    &b->exporters[i]))
			return false;
	return true;
}

const char *
config_path_choose(const char *arg)
{
	const char *env;

	if (arg != NULL && arg[0] != '\0')
		return arg;
	if ((env = getenv(CONFIG_ENV)) != NULL && env[0] != '\0')
		return env;
	return CONFIG_DEFAULT_PATH;
}

bool
config_secret_visible(const char *ref)
{
	const char *cdir;

	if (ref == NULL || credential_name(ref) == NULL)
		return true;
	cdir = getenv("CREDENTIALS_DIRECTORY");
	return cdir != NULL && cdir[0] != '\0';
}

enum rs_status
config_read_secret(const char *ref, size_t max, char **out, char **why)
{
	const char *name, *cdir;
	char *path = NULL, *data = NULL;
	size_t len = 0, cap = 0;
	struct stat sb;
	enum rs_status st = RS_ERR_IO;
	ssize_t n;
	int fd = -1;

	if (ref == NULL || ref[0] == '\0') {
		*why = xstrdup("no file given");
		return RS_ERR_CONFIG;
	}
	if ((name = credential_name(ref)) != NULL) {
		if (!credential_ok(name)) {
			*why = xasprintf("%s: the credential name must not be "
			    "empty or contain '/'", ref);
			return RS_ERR_CONFIG;
		}
		cdir = getenv("CREDENTIALS_DIRECTORY");
		if (cdir == NULL || cdir[0] == '\0') {
			*why = xasprintf("%s: $CREDENTIALS_DIRECTORY is not "
			    "set", ref);
			return RS_ERR_CONFIG;
		}
		path = path_resolve(cdir, name);
	} else
		path = xstrdup(ref);

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		*why = xasprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) == -1) {
		*why = xasprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		*why = xasprintf("%s: not a regular file", path);
		st = RS_ERR_CONFIG;
		goto out;
	}
	if ((uintmax_t)sb.st_size > max) {
		*why = xasprintf("%s: larger than %zu bytes", path, max);
		st = RS_ERR_TOOBIG;
		goto out;
	}
	/* One byte more than the size, to see a file that grew. */
	cap = (size_t)sb.st_size + 1;
	data = xcalloc(1, cap + 1);
	while (len < cap) {
		if ((n = read(fd, data + len, cap - len)) == -1) {
			if (errno == EINTR)
				continue;
			*why = xasprintf("%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > (size_t)sb.st_size) {
		*why = xasprintf("%s: changed while being read", path);
		goto out;
	}
	if (memchr(data, '\0', len) != NULL) {
		*why = xasprintf("%s: contains a NUL byte", path);
		st = RS_ERR_CONFIG;
		goto out;
	}
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		data[--len] = '\0';
	if (len == 0) {
		*why = xasprintf("%s: is empty", path);
		st = RS_ERR_CONFIG;
		goto out;
	}
	*out = data;
	data = NULL;
	st = RS_OK;
out:
	if (data != NULL)
		freezero(data, cap + 1);
	if (fd != -1)
		(void)close(fd);
	free(path);
	return st;
}

/*
 * Parse a listen address; NULL and the address (if ss is not NULL), or
 * a static reason.
 */
static const char *
listen_parse(const char *text, struct sockaddr_storage *ss, unsigned *sslen)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	char host[INET6_ADDRSTRLEN + 1];
	const char *h, *port, *end;
	size_t hlen;
	int64_t pn;
	bool v6;

	if (text[0] == '[') {
		if ((end = strchr(text, ']')) == NULL)
			return "missing ']' after the IPv6 address";
		h = text + 1;
		hlen = (size_t)(end - h);
		if (end[1] == '\0')
			return "missing port";
		if (end[1] != ':')
			return "expected ':' after ']'";
		port = end + 2;
		v6 = true;
	} else {
		if ((end = strrchr(text, ':')) == NULL)
			return "missing port";
		h = text;
		hlen = (size_t)(end - h);
		if (memchr(h, ':', hlen) != NULL)
			return "an IPv6 address needs brackets: [v6]:port";
		port = end + 1;
		v6 = false;
	}
	if (hlen == 0)
		return "missing host";
	if (*port == '\0')
		return "missing port";
	if (strnum_i64(port, 0, 65535, &pn) != NULL)
		return "bad port (0..65535)";
	if (hlen >= sizeof(host))
		return "bad host: not an IPv4 address, localhost or [v6]";
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	if (v6) {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)pn);
		if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
			return "bad IPv6 address";
		if (ss != NULL) {
			memset(ss, 0, sizeof(*ss));
			memcpy(ss, &sin6, sizeof(sin6));
			*sslen = sizeof(sin6);
		}
		return NULL;
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)pn);
	if (strcmp(host, "localhost") == 0)
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return "bad host: not an IPv4 address, localhost or [v6]";
	if (ss != NULL) {
		memset(ss, 0, sizeof(*ss));
		memcpy(ss, &sin, sizeof(sin));
		*sslen = sizeof(sin);
	}
	return NULL;
}

enum rs_status
config_parse_listen(const char *text, struct sockaddr_storage *ss,
    unsigned *sslen)
{
	if (text == NULL || listen_parse(text, ss, sslen) != NULL)
		return RS_ERR_CONFIG;
	return RS_OK;
}
