/*
 * config.h: the INI configuration (SPEC §2), parsed with inih from one
 * table of keys.
 *
 * Each row of the table in config.c names a section and key, its type,
 * bounds, default and help text; the same table fills struct config,
 * checks values, and is what `etc/refundsync.conf` must document (a test
 * keeps them in sync).  Errors read "file:line: [section] key: reason".
 * A parsed struct config is immutable: SIGHUP builds a new one and swaps
 * it in only if it is valid.
 */
#ifndef RS_CONFIG_H
#define RS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

/*
 * SPEC §1 fixes the default path, whatever --sysconfdir the build used:
 * `make install` into another prefix writes that prefix's path into the
 * unit's `serve -c` instead.
 */
#define CONFIG_DEFAULT_PATH	"/etc/refundsync/refundsync.conf"
#define CONFIG_ENV		"REFUNDSYNC_CONFIG"

/* One "key = value" of an [exporter NAME] section. */
struct config_kv {
	char	*key;
	char	*value;		/* a file (registry_key_is_path()) made
				   absolute; "credential:NAME" kept */
	int	 line;		/* where it was set */
};

/*
 * The engine's keys, which every [exporter NAME] section may set whatever
 * its type, and their defaults.  They are not handed to the exporter.
 */
#define CONFIG_EXPORT_BATCH		256	/* records per deliver(); a
						   section's 0 picks the
						   type's default
						   (registry.h) */
#define CONFIG_EXPORT_RETRY_INITIAL_MS	1000	/* first backoff */
#define CONFIG_EXPORT_RETRY_MAX_MS	300000	/* backoff cap */
#define CONFIG_EXPORT_RETRY_HORIZON	86400	/* s before dead letter */
#define CONFIG_EXPORT_POLL_MS		500	/* idle change-log poll */

/* One [exporter NAME] section (SPEC §2, §5). */
struct config_exporter {
	char		 *name;		/* NAME: printable ASCII without
					   '"' or backslash, 1-64 bytes */
	char		 *type;		/* a registry type */
	int		  line;		/* of the section header */
	struct config_kv *kv;		/* the type's keys, in file order
					   ("type" and the engine's keys
					   are not in it) */
	size_t		  nkv;
	int64_t		  batch;	/* batch: 1..10000, or 0 for
					   the type's default */
	int64_t		  retry_initial_ms; /* retry_initial_ms */
	int64_t		  retry_max_ms;	/* retry_max_ms, >= initial */
	int64_t		  retry_horizon; /* retry_horizon, seconds */
	int64_t		  poll_ms;	/* poll_ms */
};

/* Every string is owned by the struct; NULL-free: empty means unset. */
struct config {
	char	*path;			/* the file this came from, or "" */
	char	*dir;			/* its directory, for relative paths */

	/* [server] */
	char	*listen;		/* "host:port" or "[v6]:port" */
	char	*admin_listen;		/* same; "" = off */
	char	*webhook_path;		/* starts with '/' */
	int64_t	 max_body;		/* bytes; larger gets 413 */
	int64_t	 threads;		/* HTTP worker threads */
	int64_t	 request_timeout;	/* seconds, absolute per request */
	int64_t	 max_connections;	/* all clients */
	int64_t	 max_connections_per_ip;
	int64_t	 commit_batch;		/* most events per transaction */

	/* [store] */
	char	*store_path;		/* absolute after loading */
	int64_t	 busy_timeout_ms;

	/* [wix] */
	char	**public_key_files;	/* absolute paths or "credential:N" */
	size_t	 npublic_key_files;
	char	*app_id;
	char	*app_secret_file;
	char	*api_key_file;
	char	*site_id;
	char	**instances;		/* instance ids to backfill */
	size_t	 ninstances;
	char	*api_base;
	int64_t	 wix_connect_timeout;	/* seconds, connect_timeout */
	int64_t	 wix_timeout;		/* seconds, timeout: a whole
					   request; >= the connect one */
	int64_t	 jwt_leeway;		/* seconds */

	/* [backfill] */
	bool	 on_install;
	int64_t	 page_size;
	int64_t	 requests_per_minute;

	/* [reconcile] (the daemon's periodic job) */
	int64_t	 reconcile_interval;	/* seconds; 0 = off */
	bool	 reconcile_heal;

	/* [exporter NAME] sections, in file order; names are unique. */
	struct config_exporter *exporters;
	size_t	 nexporters;

	int	*lines;			/* private: config_line() */
};

/* One row of the key table, exposed for the sample-config test. */
struct config_key {
	const char	*section;	/* "server", "store", "wix", ... */
	const char	*name;
	const char	*def;		/* default, as text */
	const char	*help;		/* one line */
};

/* The table, terminated by a row with name == NULL. */
const struct config_key	*config_keys(void);

/* The engine's keys of an [exporter NAME] section (see above), with
 * their defaults and help; terminated by a row with name == NULL.
 * section is "exporter". */
const struct config_key	*config_exporter_keys(void);

/*
 * The line of cfg's file where [section] name was set, or 0 if it was
 * not (its default) or the key is not in the table.  For messages about
 * a value found bad after loading, e.g. by `refundsync check`.
 */
int		 config_line(const struct config *cfg, const char *section,
		    const char *name);

/* The exporter called name in cfg, or NULL.  Borrowed. */
const struct config_exporter *config_exporter_find(const struct config *cfg,
		    const char *name);

/* Are the exporter sections of a and b the same (names, types, keys and
 * values, engine keys)? */
bool		 config_exporters_equal(const struct config *a,
		    const struct config *b);
/* Are two exporter sections the same (name, type, keys and values,
 * engine keys)? */
bool		 config_exporter_equal(const struct config_exporter *x,
		    const struct config_exporter *y);

/*
 * Load path.  An empty file gives every default.  Relative paths are
 * resolved against the file's directory.  Returns RS_OK and *out (caller
 * owns; config_free()), or RS_ERR_CONFIG with every error found, one per
 * line ("file:line: [section] key: reason"), in *errors (caller frees).
 * A missing or unreadable file is RS_ERR_CONFIG too.
 */
enum rs_status	config_load(const char *path, struct config **out /* OUT */,
		    char **errors /* OUT */);
/* The built-in defaults, as if from an empty file in directory dir. */
struct config	*config_defaults(const char *dir);
void		 config_free(struct config *cfg);

/*
 * The path to use: the -c argument if given, else $REFUNDSYNC_CONFIG if
 * set and non-empty, else CONFIG_DEFAULT_PATH.  Borrowed.
 */
const char	*config_path_choose(const char *arg);

/*
 * Read a secret file named by a config value: a path, or
 * "credential:NAME" for $CREDENTIALS_DIRECTORY/NAME.  Trailing newlines
 * are stripped.  RS_OK and *out (caller frees with freezero_str()), or an
 * error with a reason in *why (static or naming only the path, never the
 * content).
 */
enum rs_status	config_read_secret(const char *ref, size_t max,
		    char **out /* OUT */, char **why /* OUT */);

/*
 * Can config_read_secret() see ref from this process?  false only for a
 * "credential:NAME" while $CREDENTIALS_DIRECTORY is unset: systemd sets
 * it for the service (LoadCredential=), not for an operator's shell, so
 * `refundsync check` run by hand cannot check such a value.
 */
bool		config_secret_visible(const char *ref);

/* Split "host:port" / "[v6]:port" into a socket address.  Port 0 is
 * allowed (the kernel picks).  RS_OK or RS_ERR_CONFIG. */
struct sockaddr_storage;
enum rs_status	config_parse_listen(const char *text,
		    struct sockaddr_storage *ss /* OUT */,
		    unsigned *sslen /* OUT */);

#endif
