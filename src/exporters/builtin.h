/*
 * builtin.h: the exporters compiled into refundsync.  Each is an ops
 * table of the published plugin ABI (include/refundsync/exporter.h), so
 * built-in and dlopen()ed exporters are driven the same way.
 */
#ifndef RS_EXPORTERS_BUILTIN_H
#define RS_EXPORTERS_BUILTIN_H

#include <stdbool.h>
#include <stddef.h>

#include "refundsync/exporter.h"

extern const struct rs_exporter_ops exporter_jsonl_ops;
extern const struct rs_exporter_ops exporter_csv_ops;
extern const struct rs_exporter_ops exporter_ledger_ops;
extern const struct rs_exporter_ops exporter_beancount_ops;
extern const struct rs_exporter_ops exporter_http_ops;
extern const struct rs_exporter_ops exporter_exec_ops;

/*
 * CHECKING.  Each built-in has a check function that parses the keys of
 * a section exactly as its open() does, with no effect outside the
 * process: no file is opened or created, no secret is read, no command
 * is started.  The config layer calls it through the registry, so a bad
 * value is refused when the config is loaded (`refundsync check`, the
 * start, a reload), at its file and line, instead of an exporter that
 * never opens.  open() reports the same reasons through the same code.
 *
 * A check calls report(arg, key, reason) once per bad value: key is the
 * key at fault, reason says why without naming the key (borrowed for the
 * call).  It returns true if nothing was reported.  The section has no
 * unknown key and has its required key (the config layer made sure).
 */
typedef void exporter_report_fn(void *arg, const char *key,
    const char *reason);

typedef bool exporter_check_fn(const char *name,
    const struct rs_export_kv *kv, size_t nkv, exporter_report_fn *report,
    void *arg);

exporter_check_fn exporter_jsonl_check;
exporter_check_fn exporter_csv_check;
exporter_check_fn exporter_ledger_check;
exporter_check_fn exporter_beancount_check;
exporter_check_fn exporter_http_check;
exporter_check_fn exporter_exec_check;

/*
 * The keys each built-in file exporter accepts in its [exporter NAME]
 * section besides "type", NULL-terminated (the config parser reports any
 * other key as unknown at its line; open() refuses it too):
 *	jsonl		path, body
 *	csv		path
 *	ledger		path, refund_account, clearing_account,
 *			application_fee_account, processing_fee_account
 *	beancount	the same as ledger
 * See the top of each exporter's .c file for what they mean.
 */
extern const char *const exporter_jsonl_keys[];
extern const char *const exporter_csv_keys[];
extern const char *const exporter_ledger_keys[];
extern const char *const exporter_beancount_keys[];

/*
 * The open op of the double-entry journal exporters (ledger.c): ledger
 * syntax, or beancount syntax when beancount is set.  The beancount
 * exporter (beancount.c) is this with its own ops table.
 */
int	exporter_journal_open(bool beancount, void **ctx, const char *name,
	    const struct rs_export_kv *kv, size_t nkv, char *err,
	    size_t errlen);
/* Its check (see CHECKING above). */
bool	exporter_journal_check(bool beancount, const char *name,
	    const struct rs_export_kv *kv, size_t nkv,
	    exporter_report_fn *report, void *arg);

/*
 * DELIVERY (http, exec): the keys each type accepts in its
 * [exporter NAME] section, besides "type" and the engine's common keys;
 * NULL-terminated, for the config layer to refuse unknown keys.  open()
 * ignores keys it does not know.  Documented in docs/exporters.md.
 */
extern const char *const exporter_http_keys[];
extern const char *const exporter_exec_keys[];

/* The http exporter's secret_file: the most bytes of HMAC secret it
 * reads at open (registry_secret_max()). */
#define EXPORTER_HTTP_SECRET_MAX	4096

/*
 * The JSON form of a record (schema "refundsync.record.v1", documented in
 * docs/exporters.md): one line of compact JSON with no newline, the body
 * of an http POST and a line of the exec protocol.  Amounts are strings,
 * never JSON numbers; the refund entity is copied as text (never through
 * a double) with white space between tokens removed.  Returns NULL only
 * if the record is over 64 MiB.  Caller owns the result; free with
 * free().  len: OUT, may be NULL.  Defined in http.c.
 */
char	*exporter_record_json(const struct rs_export_record *r,
	    size_t *len /* OUT */);

#endif
