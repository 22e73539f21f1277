-- 002_exporters.sql: the state of the exporters (SPEC section 5).
--
-- Every [exporter NAME] section of the config is one exporter instance,
-- keyed here by NAME.  Each has its own position in the change log, its
-- own retry state and its own dead letters, so one exporter never waits
-- for another.  Renaming a section starts a new exporter from the
-- beginning of the change log; the rows of the old name stay until an
-- operator deletes them.
--
-- The migration runner applies this file inside one transaction and then
-- sets PRAGMA user_version; the file itself must not touch user_version,
-- nor begin or end a transaction.

-- The change log gains the entity fields exporters need, so the export
-- path never parses a body again.  Rows written before this migration
-- have them NULL (charge_id, required in a refund, tells), and the
-- export engine falls back to the body.
ALTER TABLE changes ADD COLUMN charge_id TEXT;
ALTER TABLE changes ADD COLUMN created_date TEXT;
ALTER TABLE changes ADD COLUMN updated_date TEXT;
ALTER TABLE changes ADD COLUMN returned_application_fee TEXT;
ALTER TABLE changes ADD COLUMN returned_processing_fee TEXT;

-- One row per exporter: where it is and how its current record fares.
CREATE TABLE exporter_positions (
	exporter		TEXT PRIMARY KEY,
	-- Every change with seq <= position has been delivered or moved
	-- to dead letters; the next record is the first seq above it.
	position		INTEGER NOT NULL DEFAULT 0
	    CHECK (position >= 0),
	-- Bumped by `export replay` and `export retry-dead`: a worker whose
	-- epoch is older reloads its state before it records anything.
	epoch			INTEGER NOT NULL DEFAULT 0,
	delivered		INTEGER NOT NULL DEFAULT 0,	-- records, ever
	failures		INTEGER NOT NULL DEFAULT 0,	-- failed tries
	-- The record being retried, if any: its seq, the failed attempts
	-- so far, and when the first of them failed (Unix seconds; the
	-- retry horizon counts from there, across restarts).
	retry_seq		INTEGER,
	retry_attempts		INTEGER NOT NULL DEFAULT 0,
	retry_since		INTEGER,
	last_error		TEXT,		-- the last failure's reason
	last_error_at		TEXT,
	last_delivery_at	TEXT,
	created_at		TEXT NOT NULL,
	updated_at		TEXT NOT NULL
);

-- Records an exporter gave up on: a permanent failure, or a failure
-- that outlasted the retry horizon.  The position moved past them.
-- `export retry-dead` sets queued; the exporter then delivers them
-- again, each on its own, before new records.  A record delivered later
-- (by a retry or a replay) leaves this table.
CREATE TABLE exporter_dead_letters (
	exporter		TEXT NOT NULL,
	seq			INTEGER NOT NULL,	-- changes.seq
	refund_id		TEXT NOT NULL,
	revision		INTEGER,
	idempotency_key		TEXT NOT NULL,
	reason			TEXT NOT NULL,	-- why it was given up
	last_response		TEXT,		-- what the target said last
	attempts		INTEGER NOT NULL,
	first_failure_at	TEXT,
	dead_at			TEXT NOT NULL,
	queued			INTEGER NOT NULL DEFAULT 0
	    CHECK (queued IN (0, 1)),
	PRIMARY KEY (exporter, seq)
) WITHOUT ROWID;

-- The delivery log: which change each exporter has delivered, and when.
-- One row per (exporter, seq) however many times it went out (a replay
-- or a crash re-sends with the same idempotency key).
CREATE TABLE exporter_deliveries (
	exporter		TEXT NOT NULL,
	seq			INTEGER NOT NULL,	-- changes.seq
	delivered_at		TEXT NOT NULL,
	PRIMARY KEY (exporter, seq)
) WITHOUT ROWID;
