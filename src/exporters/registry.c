/*
 * registry.c: exporter types by name, and the loading of plugins.
 *
 * Key decision: a plugin is checked in the only safe order.  The ops
 * table's layout is only known for our own ABI version, so abi_version
 * (the first field, the same in every version) is read and compared
 * before any other field is touched, and a mismatch is refused with a
 * message that names the file and both versions.  The object is opened
 * with RTLD_NOW, so a plugin with a missing symbol fails here, at start,
 * not in the middle of a delivery; and RTLD_LOCAL, so two plugins never
 * resolve each other's symbols.
 *
 * Threads: the table is constant; dlopen()/dlclose() are thread-safe.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "exporters/builtin.h"
#include "exporters/registry.h"
#include "util/xmalloc.h"

/* Default batches: see registry_default_batch(). */
#define REGISTRY_FILE_BATCH	2048
#define REGISTRY_REMOTE_BATCH	16
#define REGISTRY_OTHER_BATCH	256

/* The built-in types.  The key lists and checks are the exporters' own. */
static const struct registry_builtin {
	const char		 *type;
	const struct rs_exporter_ops *ops;
	const char *const	 *keys;		/* NULL-terminated */
	const char		 *required;	/* a key, or NULL */
	size_t			  batch;	/* the default batch */
	exporter_check_fn	 *check;
	const char		 *secret;	/* the key naming a secret
						   file, or NULL */
	size_t			  secret_max;	/* its size limit */
	bool			  one_at_a_time; /* each record on its own */
} builtins[] = {
	{ "jsonl", &exporter_jsonl_ops, exporter_jsonl_keys, "path",
	    REGISTRY_FILE_BATCH, exporter_jsonl_check, NULL, 0, false },
	{ "csv", &exporter_csv_ops, exporter_csv_keys, "path",
	    REGISTRY_FILE_BATCH, exporter_csv_check, NULL, 0, false },
	{ "ledger", &exporter_ledger_ops, exporter_ledger_keys, "path",
	    REGISTRY_FILE_BATCH, exporter_ledger_check, NULL, 0, false },
	{ "beancount", &exporter_beancount_ops, exporter_beancount_keys,
	    "path", REGISTRY_FILE_BATCH, exporter_beancount_check, NULL, 0,
	    false },
	{ "http", &exporter_http_ops, exporter_http_keys, "url",
	    REGISTRY_REMOTE_BATCH, exporter_http_check, "secret_file",
	    EXPORTER_HTTP_SECRET_MAX, true },
	{ "exec", &exporter_exec_ops, exporter_exec_keys, "command",
	    REGISTRY_REMOTE_BATCH, exporter_exec_check, NULL, 0, true },
};

#define NBUILTINS	(sizeof(builtins) / sizeof(builtins[0]))

static const struct registry_builtin *
registry_builtin(const char *type)
{
	size_t i;

	if (type == NULL)
		return NULL;
	for (i = 0; i < NBUILTINS; i++)
		if (strcmp(builtins[i].type, type) == 0)
			return &builtins[i];
	return NULL;
}

static bool
registry_is_plugin(const char *type)
{
	return type != NULL && strcmp(type, REGISTRY_PLUGIN) == 0;
}

bool
registry_type_known(const char *type)
{
	return registry_builtin(type) != NULL || registry_is_plugin(type);
}

const char *
registry_type_list(void)
{
	return "jsonl, csv, ledger, beancount, http, exec, plugin";
}

bool
registry_key_allowed(const char *type, const char *key)
{
	const struct registry_builtin *b;
	size_t i;

	if (key == NULL)
		return false;
	if (registry_is_plugin(type))
		return true;
	if ((b = registry_builtin(type)) == NULL)
		return false;
	for (i = 0; b->keys[i] != NULL; i++)
		if (strcmp(b->keys[i], key) == 0)
			return true;
	return false;
}

const char *
registry_key_required(const char *type)
{
	const struct registry_builtin *b;

	if (registry_is_plugin(type))
		return "path";
	if ((b = registry_builtin(type)) == NULL)
		return NULL;
	return b->required;
}

bool
registry_check_keys(const char *type, const char *name,
    const struct rs_export_kv *kv, size_t nkv, exporter_report_fn *report,
    void *arg)
{
	const struct registry_builtin *b = registry_builtin(type);

	/* A plugin's keys are its own: only its open() knows them. */
	if (b == NULL)
		return true;
	return b->check(name, kv, nkv, report, arg);
}

size_t
registry_secret_max(const char *type, const char *key)
{
	const struct registry_builtin *b = registry_builtin(type);

	if (b == NULL || b->secret == NULL || key == NULL ||
	    strcmp(b->secret, key) != 0)
		return 0;
	return b->secret_max;
}

size_t
registry_default_batch(const char *type)
{
	const struct registry_builtin *b = registry_builtin(type);

	return b != NULL ? b->batch : REGISTRY_OTHER_BATCH;
}

bool
registry_one_at_a_time(const char *type)
{
	const struct registry_builtin *b = registry_builtin(type);

	return b != NULL && b->one_at_a_time;
}

static bool
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

bool
registry_key_is_path(const char *key)
{
	if (key == NULL)
		return false;
	return strcmp(key, "path") == 0 || strcmp(key, "file") == 0 ||
	    ends_with(key, "_file") || ends_with(key, "_path") ||
	    ends_with(key, "_dir");
}

bool
registry_key_is_output(const char *type, const char *key)
{
	const struct registry_builtin *b = registry_builtin(type);

	/* The file exporters are those whose one required key is `path`;
	 * http's is `url`, exec's `command`. */
	return b != NULL && key != NULL && b->required != NULL &&
	    strcmp(b->required, "path") == 0 && strcmp(key, "path") == 0;
}

/* Load and check the plugin at path into e. */
static enum rs_status
registry_plugin_load(const char *path, struct registry_entry *e, char **why)
{
	union {
		void			*obj;
		rs_exporter_plugin_fn	 fn;
	} sym;
	const struct rs_exporter_ops *ops;
	const char *err;

	if (path == NULL || *path == '\0') {
		*why = xstrdup("type plugin: no path to a shared object");
		return RS_ERR_CONFIG;
	}
	e->plugin_path = xstrdup(path);
	(void)dlerror();
	if ((e->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		err = dlerror();
		*why = xasprintf("plugin %s: cannot load: %s", path,
		    err != NULL ? err : "unknown error");
		return RS_ERR_CONFIG;
	}
	(void)dlerror();
	sym.obj = dlsym(e->dl, RS_EXPORTER_PLUGIN_SYMBOL);
	if (sym.obj == NULL) {
		*why = xasprintf("plugin %s: not a refundsync exporter: no "
		    "symbol %s", path, RS_EXPORTER_PLUGIN_SYMBOL);
		return RS_ERR_CONFIG;
	}
	if ((ops = sym.fn()) == NULL) {
		*why = xasprintf("plugin %s: %s() returned no exporter", path,
		    RS_EXPORTER_PLUGIN_SYMBOL);
		return RS_ERR_CONFIG;
	}
	/* Nothing but abi_version may be read before this check. */
	if (ops->abi_version != RS_EXPORTER_ABI_VERSION) {
		*why = xasprintf("plugin %s: exporter ABI version %u, but "
		    "this refundsync supports version %u: rebuild the "
		    "plugin against <refundsync/exporter.h> of this "
		    "version", path, (unsigned)ops->abi_version,
		    (unsigned)RS_EXPORTER_ABI_VERSION);
		return RS_ERR_CONFIG;
	}
	if (ops->open == NULL || ops->deliver == NULL || ops->close == NULL) {
		*why = xasprintf("plugin %s: the exporter lacks %s", path,
		    ops->open == NULL ? "open()" : ops->deliver == NULL ?
		    "deliver()" : "close()");
		return RS_ERR_CONFIG;
	}
	e->ops = ops;
	return RS_OK;
}

enum rs_status
registry_open(const char *type, const char *plugin_path,
    struct registry_entry **out, char **why)
{
	const struct registry_builtin *b;
	struct registry_entry *e;
	enum rs_status st;

	*why = NULL;
	e = xcalloc(1, sizeof(*e));
	if (registry_is_plugin(type)) {
		if ((st = registry_plugin_load(plugin_path, e, why)) !=
		    RS_OK) {
			registry_close(e);
			return st;
		}
	} else if ((b = registry_builtin(type)) != NULL) {
		e->ops = b->ops;
	} else {
		*why = xasprintf("unknown exporter type \"%s\" (one of %s)",
		    type != NULL ? type : "", registry_type_list());
		registry_close(e);
		return RS_ERR_CONFIG;
	}
	*out = e;
	return RS_OK;
}

void
registry_close(struct registry_entry *e)
{
	if (e == NULL)
		return;
	if (e->dl != NULL)
		(void)dlclose(e->dl);
	free(e->plugin_path);
	free(e);
}
