/*
 * registry.h: exporter types by name, and the loading of plugins.
 *
 * A static table maps the `type` of an [exporter NAME] section to the ops
 * table of a built-in exporter (builtin.h) and the keys it accepts.
 * `type = plugin` instead dlopen()s the shared object named by its
 * `path` key, looks up RS_EXPORTER_PLUGIN_SYMBOL, and checks the
 * abi_version of the ops table it returns before reading anything else
 * from it (include/refundsync/exporter.h).
 *
 * The config layer asks the registry which keys a type takes and has it
 * check their values with the exporter's own parsing, so an unknown key
 * or a bad value is reported at its line; the engine asks it for the
 * ops.
 * Every key of a section but the engine's own (export.h) goes to the
 * exporter's open().
 *
 * Threads: the lookups are pure; registry_open() and registry_close()
 * may run on any thread (dlopen is thread-safe).
 */
#ifndef RS_EXPORTERS_REGISTRY_H
#define RS_EXPORTERS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "exporters/builtin.h"
#include "refundsync/exporter.h"
#include "util/status.h"

/* The type that loads a shared object. */
#define REGISTRY_PLUGIN		"plugin"

/* Is type a known exporter type (a built-in, or "plugin")? */
bool		registry_type_known(const char *type);

/* "jsonl, csv, ledger, beancount, http, exec, plugin": for messages.
 * Static. */
const char	*registry_type_list(void);

/*
 * May a section of type have key (besides "type" and the engine's keys)?
 * A built-in takes the keys it publishes in builtin.h; a plugin takes
 * `path` and any other key, which its open() checks.
 */
bool		registry_key_allowed(const char *type, const char *key);

/*
 * The key a section of type must have, or NULL if none (e.g. "path" for
 * jsonl and plugin, "url" for http).  Static.
 */
const char	*registry_key_required(const char *type);

/*
 * Check the values of the type's own keys in a section (kv, nkv: the
 * section's keys but "type" and the engine's; name: its NAME) as the
 * type's open() parses them, without opening, reading or starting
 * anything (builtin.h, CHECKING).  report is called once per bad value
 * with the key at fault and why; returns true if none was.  The section
 * must hold only allowed keys and its required key.  A plugin's keys are
 * its own, known only to its open(): true.
 */
bool		registry_check_keys(const char *type, const char *name,
		    const struct rs_export_kv *kv, size_t nkv,
		    exporter_report_fn *report, void *arg);

/*
 * Does key of a section of type name a secret file that the exporter
 * reads at open (http's secret_file)?  The most bytes it reads, else 0.
 * For `refundsync check`, which reads such files as the start would.
 */
size_t		registry_secret_max(const char *type, const char *key);

/*
 * The batch size that suits type when its section sets none: large for
 * the file exporters (each batch costs one fsync), small for http and
 * exec (one request per record; see registry_one_at_a_time()),
 * and CONFIG_EXPORT_BATCH-like for plugins and unknown types.
 */
size_t		registry_default_batch(const char *type);

/*
 * Does type send each record on its own (http, exec), so that the
 * engine may hand it one record per deliver() at no cost, and stop
 * between two?  false for the file types and plugins, which may gain
 * from a whole batch at once.
 */
bool		registry_one_at_a_time(const char *type);

/*
 * Does the value of key name a file, to be resolved against the config
 * file's directory?  By name, for every type alike: `path`, `file`, and
 * keys ending in `_file`, `_path` or `_dir`.  (A "credential:NAME" value
 * of a `*_file` key is a systemd credential and stays as it is.)
 */
bool		registry_key_is_path(const char *key);

/*
 * Is key of type the file a built-in file exporter (jsonl, csv, ledger,
 * beancount) writes its records to?  Such a file is created at the
 * exporter's first open; its directory must exist by then.
 */
bool		registry_key_is_output(const char *type, const char *key);

/* A resolved exporter type. */
struct registry_entry {
	const struct rs_exporter_ops *ops;	/* borrowed; valid until
						   registry_close() */
	char		*plugin_path;	/* the .so, or NULL for a built-in */
	void		*dl;		/* dlopen() handle, or NULL */
};

/*
 * Resolve type.  For "plugin", plugin_path is the shared object to load
 * (the section's `path`); otherwise it is ignored.  A plugin is refused
 * when it cannot be loaded, lacks the symbol, returns no table, has
 * another abi_version, or lacks open, deliver or close.  Returns RS_OK
 * and *out (caller owns; registry_close()), or RS_ERR_CONFIG with a
 * message naming the type or file in *why (caller frees).
 */
enum rs_status	registry_open(const char *type, const char *plugin_path,
		    struct registry_entry **out /* OUT */,
		    char **why /* OUT */);
/* Release e (dlclose()s a plugin: no call into its ops may follow).
 * NULL is fine. */
void		registry_close(struct registry_entry *e);

#endif
