/*
 * reconcile.h: prove the books match Wix (SPEC §1 `reconcile`, §5).
 *
 * A run builds three views of every refund of an app instance and
 * compares them:
 *
 *  1. Wix: one full Query Refunds pass (backfill_walk(): the backfill's
 *     pager, with its retries, loop checks and cursor restarts, inside
 *     the instance's request budget, which a backfill in the same
 *     process shares);
 *  2. the store (refunds and the change log);
 *  3. each exporter: what it has recorded as delivered (the delivery log
 *     and dead letters, per change, so per (refund, revision, posting)),
 *     and for file exporters what the file actually holds (readback.h).
 *
 * Per instance it reports:
 *  - missing:   in Wix, not in the store;
 *  - stale:     the store holds an older version than Wix (version rule
 *               of SPEC §4);
 *  - gone:      in the store, and Wix no longer returns it;
 *  - conflict:  the same version (neither newer) with a different status,
 *               amount, currency or charge;
 *  - per exporter: postings missing (a change at or below the exporter's
 *    position that it gave up on, or that is absent from its file),
 *    doubled (a record its file holds more than once), not reversed (the
 *    refund is no longer SUCCEEDED in Wix, else in the store, and the
 *    file still holds it posted), damaged or foreign records in its file
 *    (a ledger or beancount record is damaged too when its refund,
 *    posting or refund-account amount is not what its change posts; a
 *    csv or jsonl record when its refund_id, idempotency_key, revision,
 *    status, posting, currency, amount text or amount_minor/exponent is
 *    not what the exporter wrote for its change, csv values as that
 *    exporter writes them: a control byte as a space, empty as null);
 *    changes above its position are "pending" (lag, not drift), and
 *    the records the file already holds for them are checked all the
 *    same;
 *  - a completeness table per day (the refund's createdDate, UTC) and
 *    currency: count and exact sum by status in Wix and in the store,
 *    and for each ledger/beancount exporter the refunds its file holds as
 *    posted (count and sum of the net amount), with the differences.
 *
 * Accounting-file exporters (ledger, beancount) are expected to hold a
 * record for each change that posts something (posting post/reverse);
 * csv and jsonl one record for every change; other exporters are judged
 * by the delivery log only.
 *
 * Healing (--heal, or heal = yes in the daemon) makes only safe repairs:
 *  - a missing or stale refund is upserted from Wix's version with
 *    source "reconcile" under the normal version rule (so a newer
 *    webhook is never undone) and gets a change-log entry, so the
 *    exporters follow;
 *  - a missing posting is re-queued for its exporter
 *    (store_export_requeue()): the worker delivers it again before new
 *    records (a ledger or beancount file appends it; a csv or jsonl file,
 *    being in seq order, turns it into a dead letter that says to replay);
 *  - doubled postings, conflicts, gone refunds and damaged records are
 *    reported for a human and never changed (no file is ever rewritten:
 *    a damaged csv or jsonl record is edited back by hand, or the file
 *    moved away and replayed).
 * Every repair is logged, recorded in reconcile_repairs (in the same
 * transaction as the repair) and counted in
 * refundsync_reconcile_repairs_total{kind}.  Each run is recorded in
 * reconcile_runs.
 *
 * Money is compared in exact minor units; sums are int64 with overflow
 * checked (an overflowing sum is reported as such, never wrapped).
 *
 * Memory: the Wix and store views are compact per-refund summaries, so a
 * run over N refunds holds O(N): about 630 bytes per refund in all, both
 * views and allocator overhead included (measured: 60 MiB for 100,000,
 * BENCHMARKS.md).  Files are read as a stream, and each record found is
 * kept as a summary for the run: about 126 bytes (110 measured,
 * BENCHMARKS.md, plus the revision and a pointer added since), and a
 * csv or jsonl record about 70 more, for the texts it is compared by
 * (key, status, currency, amount; estimated, not measured).
 *
 * ---- The JSON report (reconcile_report_json, `reconcile --json`) ------
 *
 * One document:
 *
 * {"outcome": "clean"|"drift"|"failed", "heal": bool,
 *  "drift": N, "repaired": N,
 *  "instances": [{
 *    "instance_id": "...", "outcome": "clean"|"drift"|"failed",
 *    "error": null|"...",
 *    "wix_refunds": N, "store_refunds": N, "drift": N, "repaired": N,
 *    "ahead": N,                      (store newer than Wix: a webhook
 *                                      came after Wix's page; not drift)
 *    "missing":  [{"refund_id","wix_revision","wix_status","healed"}],
 *    "stale":    [{"refund_id","store_revision","wix_revision",
 *                  "store_status","wix_status","healed"}],
 *    "gone":     [{"refund_id","store_revision","store_status"}],
 *    "conflict": [{"refund_id","revision","field",
 *                  "store","wix"}],             (field: status|amount|
 *                                                currency|charge_id)
 *    "exporters": [{"exporter","type","view": "file"|"log",
 *       "position": N, "pending": N, "error"?: "..." (file unreadable),
 *       "missing":  [{"seq","refund_id","revision","posting","key",
 *                     "where": "dead"|"file"|"log","requeued",
 *                     "note"?: why it could not be re-queued}],
 *       "doubled":  [{"seq","refund_id","revision","posting","key",
 *                     "count","lines":[N,...]}],
 *       "not_reversed": [{"refund_id","status","net"}],
 *                          (net: postings minus reversals the file
 *                           holds for the refund, a count)
 *       "damaged":  [{"line","seq","refund_id","why"}]}],
 *    "days": [{"day":"YYYY-MM-DD","currency":"USD","exponent":2,
 *       "wix":   {"STATUS": {"count":N,"sum":"12.34"}, ...},
 *       "store": {"STATUS": {"count":N,"sum":"12.34"}, ...},
 *       "ledgers": {"NAME": {"count":N,"sum":"12.34",
 *                            "pending"?: true}, ...},
 *                          (per refund of the day, its net postings in
 *                           the file and their net amount: a refund
 *                           posted twice by hand counts twice)
 *       "differences": [{"source": "store"|"ledger NAME", "status",
 *                        "count": N, "sum": "-12.34"}],
 *                                      (what minus Wix, where non-zero;
 *                                       a ledger against Wix's
 *                                       SUCCEEDED)
 *       "match": bool}]                (match: the store equals Wix for
 *                                       every status and each ledger
 *                                       equals Wix's SUCCEEDED; a ledger
 *                                       with records pending for the
 *                                       instance is not held to it)
 * A cell may also carry "inexact": N (refunds whose amount is not exact
 * in the currency: counted, not summed).
 *  }]}
 *
 * revision fields are strings ("3", as every revision and amount the CLI
 * prints) or null; other counts and seqs are numbers; "sum" is an exact
 * decimal string
 * with the currency's digits; "healed"/"requeued" say whether --heal
 * repaired it in this run.  "drift" counts the entries of the lists
 * (missing, stale, gone, conflict and, per exporter, missing, doubled,
 * not_reversed, damaged); "days" lists every (day, currency) seen.
 *
 * The text report (the default) prints, per instance, one line per
 * discrepancy, then the table rows that do not match and one total row
 * per currency, then a summary line.
 *
 * Exit status of the command: 0 when nothing drifted; 4 when anything
 * did (healed or not: the run found the books apart; a second run after
 * the exporters caught up says whether healing worked); 1 when a view
 * could not be built (Wix or the store failed); 2 for usage or config.
 */
#ifndef RS_RECONCILE_H
#define RS_RECONCILE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "adapters/config.h"
#include "adapters/store.h"
#include "adapters/wixapi.h"
#include "util/status.h"

/* Exit status of `reconcile` when drift was found. */
#define RECONCILE_EXIT_DRIFT	4

struct reconcile_options {
	const char	*instance_id;	/* NULL: every instance known to the
					   store or named in [wix] instances */
	bool		 heal;		/* make the safe repairs */
	const atomic_bool *stop;	/* when set, stop between pages and
					   instances (RS_ERR_STOPPING);
					   NULL: never */
	bool		 progress;	/* a progress line on stderr (a
					   terminal) */
};

struct reconcile_report;

/*
 * Reconcile as described above, with w for Wix and st (a read-write
 * connection of the calling thread; no transaction open) for the store
 * and the repairs; cfg gives the exporters and the page size.  Returns
 * RS_OK and *out (caller frees with reconcile_report_free()) even when
 * drift was found or an instance failed (its outcome says so); an error
 * only when nothing could be done (RS_ERR_STOPPING, or the store's
 * error), with *why (caller frees).
 */
enum rs_status	reconcile_run(const struct config *cfg, struct store *st,
		    struct wixapi *w, const struct reconcile_options *opt,
		    struct reconcile_report **out /* OUT */,
		    char **why /* OUT */);
void		reconcile_report_free(struct reconcile_report *r);

/* "clean", "drift" or "failed": the worst outcome of any instance
 * (failed > drift > clean); "clean" for a run over no instance. */
const char	*reconcile_report_outcome(const struct reconcile_report *r);
/* Discrepancies found and repairs made, over every instance. */
int64_t		reconcile_report_drift(const struct reconcile_report *r);
int64_t		reconcile_report_repaired(const struct reconcile_report *r);

/* Print the report as text, or as the JSON document above. */
void		reconcile_report_print(const struct reconcile_report *r,
		    FILE *out);
void		reconcile_report_json(const struct reconcile_report *r,
		    FILE *out);

/*
 * Set refundsync_reconcile_repairs_total{kind} from the store's
 * reconcile_repairs, so /metrics counts the repairs of every process (a
 * CLI run's too).  st NULL: only define the families.
 */
void		reconcile_metrics_refresh(struct store *st);

/* ---- the daemon's periodic job ------------------------------------------ */

struct reconciler;

/*
 * Start the periodic job of cfg's [reconcile] section: every interval
 * seconds (0: off; NULL is returned) a thread reconciles every instance
 * with heal as configured, through w (borrowed; the daemon's client, so
 * the budget is shared with its backfills), on its own store
 * connection.  The first run comes one interval after the start.  The
 * job reads the config file again at start and keeps its own copy, so a
 * reload does not change it (a [reconcile] change needs a restart).
 */
struct reconciler *reconciler_start(const struct config *cfg,
		    struct wixapi *w);
/*
 * Stop it: a run in progress stops at its next page boundary.  Waits up
 * to wait_ms; true: the thread has ended and rc is freed.  false: it is
 * still inside a Wix call (a long backoff), so rc and the wixapi it
 * borrows are left to it (the process is about to exit).  NULL is fine
 * (true).
 */
bool		reconciler_stop(struct reconciler *rc, int64_t wait_ms);

#endif
