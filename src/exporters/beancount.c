/*
 * beancount.c: the beancount exporter.  It is the ledger exporter's
 * double-entry journal in beancount syntax (ledger.c says what it
 * writes and which keys it takes); `bean-check` accepts the file.
 *
 * Keys of [exporter NAME] with type = beancount: path, refund_account,
 * clearing_account, application_fee_account, processing_fee_account.
 * Account names must be beancount names: the first component Assets,
 * Liabilities, Equity, Income or Expenses and at least one more
 * component, every component starting with an upper-case letter or a
 * digit.
 *
 * Like the ledger file, it takes back a record that was removed from it
 * (queued again by reconcile or `export retry-dead`): the transaction is
 * appended, followed by `; rs-seq: HI` naming the file's highest seq;
 * beancount does not care about the order of entries.
 */
#include <stdbool.h>
#include <stddef.h>

#include "exporters/builtin.h"
#include "exporters/filejournal.h"

const char *const exporter_beancount_keys[] = { "path", "refund_account",
    "clearing_account", "application_fee_account", "processing_fee_account",
    NULL };

static int
beancount_open(void **ctx, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	return exporter_journal_open(true, ctx, name, kv, nkv, err, errlen);
}

bool
exporter_beancount_check(const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	return exporter_journal_check(true, name, kv, nkv, report, arg);
}

const struct rs_exporter_ops exporter_beancount_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "beancount",
	.open = beancount_open,
	.deliver = filejournal_exporter_deliver,
	.recover = filejournal_exporter_recover,
	.close = filejournal_exporter_close,
};
