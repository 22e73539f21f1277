-- 003_reconcile.sql: the audit trail of reconcile (SPEC section 1,
-- `reconcile`).
--
-- Reconcile compares Wix, the store and what each exporter holds.  With
-- --heal it makes the safe repairs (a missing or stale refund upserted
-- from Wix, a missing posting queued again for its exporter); each repair
-- gets one row here, written in the same transaction as the repair
-- itself, so the trail never claims a repair that did not happen nor
-- misses one that did.  Each run leaves a summary: the last 100 runs of
-- each instance are kept.
--
-- The migration runner applies this file inside one transaction and then
-- sets PRAGMA user_version; the file itself must not touch user_version,
-- nor begin or end a transaction.

-- One row per repair reconcile made.  Timestamps are UTC ISO-8601, like
-- the rest of the store.
CREATE TABLE reconcile_repairs (
	id			INTEGER PRIMARY KEY,
	at			TEXT NOT NULL,	-- when it was made
	instance_id		TEXT,
	-- "refund_missing", "refund_stale", "posting_requeued", ...
	kind			TEXT NOT NULL,
	refund_id		TEXT,
	exporter		TEXT,		-- the [exporter NAME] concerned
	seq			INTEGER,	-- changes.seq concerned, if any
	detail			TEXT		-- one line for people
);
-- The counts per kind (refundsync_reconcile_repairs_total{kind}) read
-- this index only.
CREATE INDEX reconcile_repairs_kind ON reconcile_repairs (kind);

-- One row per reconcile run of an instance (instance_id NULL: a run
-- over no instance, such as one that failed before it found any).
CREATE TABLE reconcile_runs (
	id			INTEGER PRIMARY KEY,
	instance_id		TEXT,
	started_at		TEXT NOT NULL,
	finished_at		TEXT NOT NULL,
	outcome			TEXT NOT NULL
	    CHECK (outcome IN ('clean', 'drift', 'failed')),
	heal			INTEGER NOT NULL,	-- --heal was given
	wix_refunds		INTEGER NOT NULL,	-- refunds Wix returned
	store_refunds		INTEGER NOT NULL,	-- the store's refunds
	drift			INTEGER NOT NULL,	-- discrepancies found
	repaired		INTEGER NOT NULL,	-- repairs made
	error			TEXT,		-- why it failed
	report			TEXT		-- the JSON report
);
-- The newest run of each instance, and the pruning to the last 100.
CREATE INDEX reconcile_runs_instance ON reconcile_runs (instance_id, id);
