/*
 * refundsync/exporter.h: the exporter plugin ABI of refundsync.
 *
 * This is the one published header of refundsync.  A plugin is a shared
 * object that defines
 *
 *	const struct rs_exporter_ops *rs_exporter_plugin(void);
 *
 * returning a static ops table whose abi_version is
 * RS_EXPORTER_ABI_VERSION.  refundsync dlopen()s the file named by the
 * `path` key of an `[exporter NAME]` section with `type = plugin`, checks
 * abi_version before calling anything else, and refuses the plugin with
 * a clear error if it differs.
 *
 * Contract, in short:
 *  - Records come in change-log order (seq strictly increasing), in
 *    batches, at least once, except that a dead letter queued again
 *    (`export retry-dead`, reconcile) comes alone, after later records.
 *    A record may come again after a crash or a retry: use
 *    idempotency_key to make its effect happen once.
 *  - deliver() reports how many records of the batch, from the first,
 *    are done (durably delivered); refundsync advances its position past
 *    exactly those.  Nothing is skipped.
 *  - Every pointer handed to the plugin is borrowed for the duration of
 *    the call.  The plugin owns what it allocates.
 *  - Calls on one instance never overlap; different exporter instances
 *    may run on different threads.
 *  - Money is an exact decimal string plus integer minor units: there is
 *    no floating point in this ABI.
 *
 * The types below are plain C with fixed meanings; fields are only ever
 * added at the end under a new ABI version.
 */
#ifndef REFUNDSYNC_EXPORTER_H
#define REFUNDSYNC_EXPORTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: RS_POSTING_ADJUST and the posted_* fields of a record. */
#define RS_EXPORTER_ABI_VERSION	2u

/*
 * What the accounting semantics make of a record (SPEC §5).  What is
 * posted for a refund is always its current version if that is
 * SUCCEEDED, else nothing; each record moves the books from what the
 * version before it posted (the posted_* fields) to that.
 */
enum rs_posting {
	RS_POSTING_NONE = 0,	/* nothing to post (PENDING, or no change
				   of the posted state) */
	RS_POSTING_POST = 1,	/* reached SUCCEEDED: post the refund */
	RS_POSTING_REVERSE = 2,	/* left SUCCEEDED: reverse what was
				   posted (the posted_* amounts) */
	RS_POSTING_ADJUST = 3	/* a new SUCCEEDED version whose amount,
				   fees or currency differ from what was
				   posted: post the difference */
};

/* One change-log entry: one applied version of one refund. */
struct rs_export_record {
	int64_t		 seq;		/* change-log sequence, increasing */
	const char	*idempotency_key; /* "<exporter>:<refund>:<revision>"
					   (+ ":reverse" for a reversal,
					   ":adjust" for an adjustment):
					   stable across retries, one per
					   transaction (no revision: see
					   docs/exporters.md) */
	const char	*refund_id;
	const char	*instance_id;	/* NULL if unknown */
	const char	*charge_id;
	int		 has_revision;
	int64_t		 revision;
	const char	*status;	/* this version's status */
	const char	*prev_status;	/* NULL for the first version */
	const char	*currency;	/* ISO 4217 */
	const char	*amount;	/* decimal text exactly as Wix sent it */
	int		 amount_exact;	/* amount_minor/exponent are valid */
	int64_t		 amount_minor;	/* exact minor units */
	int		 exponent;	/* ISO 4217 minor-unit digits */
	const char	*returned_application_fee; /* decimal text or NULL */
	const char	*returned_processing_fee;  /* decimal text or NULL */
	const char	*created_date;	/* ISO-8601 or NULL */
	const char	*updated_date;	/* ISO-8601 or NULL */
	const char	*changed_at;	/* when refundsync stored it */
	const char	*source;	/* webhook|backfill|reconcile|cli */
	const char	*body;		/* the refund entity, JSON */
	enum rs_posting	 posting;
	/*
	 * ABI 2: what the version before this one posted, when it was
	 * SUCCEEDED (prev_status is SUCCEEDED); has_posted is 0 and the
	 * rest NULL/0 otherwise.  A reversal takes away exactly these
	 * amounts, an adjustment the difference to them.
	 */
	int		 has_posted;
	const char	*posted_currency;	/* ISO 4217 */
	int		 posted_amount_exact;	/* minor/exponent valid */
	int64_t		 posted_amount_minor;
	int		 posted_exponent;
	const char	*posted_returned_application_fee; /* or NULL */
	const char	*posted_returned_processing_fee;  /* or NULL */
};

/* One key = value of the exporter's config section. */
struct rs_export_kv {
	const char	*key;
	const char	*value;
};

/* Results of open/deliver/recover. */
enum rs_export_result {
	RS_EXPORT_OK = 0,
	RS_EXPORT_RETRY = 1,	/* transient: retried with backoff */
	RS_EXPORT_PERMANENT = 2	/* this record can never be delivered:
				   it goes to dead letters */
};

struct rs_exporter_ops {
	uint32_t	 abi_version;	/* RS_EXPORTER_ABI_VERSION */
	const char	*name;		/* the type, e.g. "ledger" */

	/*
	 * Create an instance for section [exporter NAME] from its keys
	 * (the "type" and "path"-like keys included).  On failure return
	 * RS_EXPORT_PERMANENT with a message in err (errlen bytes).
	 */
	int	(*open)(void **ctx, const char *name,
		    const struct rs_export_kv *kv, size_t nkv, char *err,
		    size_t errlen);

	/*
	 * Deliver n records (n >= 1).  Set *done to how many, from the
	 * first, are durably delivered, and return RS_EXPORT_OK if all n
	 * are, else the result for record *done with a reason in err.
	 */
	int	(*deliver)(void *ctx, const struct rs_export_record *recs,
		    size_t n, size_t *done, char *err, size_t errlen);

	/*
	 * Optional (NULL: not supported): the highest seq the target
	 * itself holds (a file exporter reads it from its file's tail),
	 * so that refundsync can fast-forward after a crash between a
	 * delivery and recording it.  0 if none.
	 */
	int	(*recover)(void *ctx, int64_t *last_seq, char *err,
		    size_t errlen);

	/* Release the instance.  ctx may be NULL. */
	void	(*close)(void *ctx);
};

/* The one symbol a plugin exports. */
typedef const struct rs_exporter_ops *(*rs_exporter_plugin_fn)(void);
#define RS_EXPORTER_PLUGIN_SYMBOL	"rs_exporter_plugin"

#ifdef __cplusplus
}
#endif

#endif
