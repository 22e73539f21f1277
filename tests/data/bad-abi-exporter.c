/*
 * bad-abi-exporter.c: a plugin built against an ABI refundsync does not
 * speak.  Its ops table claims RS_EXPORTER_ABI_VERSION + 1, so the loader
 * must refuse it after reading abi_version and before calling anything.
 * Every function fails loudly in case one is called anyway.
 */
#include <stdio.h>

#include "refundsync/exporter.h"

const struct rs_exporter_ops *rs_exporter_plugin(void);

static int
bad_open(void **ctxp, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	(void)name;
	(void)kv;
	(void)nkv;
	*ctxp = NULL;
	snprintf(err, errlen, "bad-abi plugin: open() must never be called");
	return RS_EXPORT_PERMANENT;
}

static int
bad_deliver(void *ctx, const struct rs_export_record *recs, size_t n,
    size_t *done, char *err, size_t errlen)
{
	(void)ctx;
	(void)recs;
	(void)n;
	*done = 0;
	snprintf(err, errlen, "bad-abi plugin: deliver() must never be "
	    "called");
	return RS_EXPORT_PERMANENT;
}

static void
bad_close(void *ctx)
{
	(void)ctx;
}

static const struct rs_exporter_ops bad_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION + 1,
	.name = "bad-abi",
	.open = bad_open,
	.deliver = bad_deliver,
	.recover = NULL,
	.close = bad_close
};

const struct rs_exporter_ops *
rs_exporter_plugin(void)
{
	return &bad_ops;
}
