-- 001_initial.sql: the first schema of the refundsync store.
--
-- The tables refunds, webhook_events and instances, with the columns the
-- specification names (SPEC section 4), are a public contract: accounting
-- tools read them directly.  Later migrations may add columns but never
-- rename or remove those.  changes and meta are internal.
--
-- The migration runner applies this file inside one transaction and then
-- sets PRAGMA user_version; the file itself must not touch user_version,
-- nor begin or end a transaction.  Released migrations are never edited:
-- a change is a new file sql/NNN_name.sql.

-- One row per refund: the newest version we have seen (SPEC section 4,
-- "Which version wins").
CREATE TABLE refunds (
	id			TEXT PRIMARY KEY,
	instance_id		TEXT,
	charge_id		TEXT NOT NULL,
	currency		TEXT NOT NULL,
	amount			TEXT NOT NULL,
	amount_minor		INTEGER,
	status			TEXT NOT NULL,
	revision		INTEGER,
	created_date		TEXT,
	updated_date		TEXT,
	body			TEXT NOT NULL,
	source			TEXT NOT NULL
	    CHECK (source IN ('webhook', 'backfill', 'reconcile', 'cli')),
	stored_at		TEXT NOT NULL,
	-- Beyond the public contract's minimum:
	-- entityEventSequence of the event that carried the stored
	-- version, NULL if it came without one (backfill, CLI).
	event_seq		INTEGER,
	-- ISO 4217 exponent of currency (digits of amount_minor after the
	-- decimal point), NULL if the currency is unknown.
	amount_exponent		INTEGER
);
-- Each index costs a random page write per webhook under group commit,
-- so only the reads that need one get one: listing by instance.  Other
-- listings scan; they are operator commands, not the hot path.
CREATE INDEX refunds_instance ON refunds (instance_id, created_date, id);

-- One row per webhook we acted on, keyed by the dedupe key.
CREATE TABLE webhook_events (
	event_id		TEXT PRIMARY KEY,
	event_type		TEXT NOT NULL,
	instance_id		TEXT,
	entity_id		TEXT,
	received_at		TEXT NOT NULL,
	outcome			TEXT NOT NULL
	    CHECK (outcome IN ('applied', 'stale', 'duplicate', 'ignored')),
	-- Beyond the public contract's minimum:
	event_time		TEXT,	-- the event's eventTime, if sent
	event_seq		INTEGER	-- its entityEventSequence, if sent
);

-- One row per app instance (site) we know of.
CREATE TABLE instances (
	instance_id		TEXT PRIMARY KEY,
	installed_at		TEXT,
	backfill		TEXT NOT NULL
	    CHECK (backfill IN ('pending', 'running', 'done', 'failed')),
	backfill_refunds	INTEGER NOT NULL DEFAULT 0,
	last_error		TEXT,
	-- Beyond the public contract's minimum:
	app_id			TEXT,
	removed_at		TEXT,	-- AppRemoved seen; NULL while installed
	updated_at		TEXT,	-- last change of this row
	backfill_cursor		TEXT,	-- Query Refunds cursor to resume from
	backfill_pages		INTEGER NOT NULL DEFAULT 0,
	backfill_started_at	TEXT,
	backfill_finished_at	TEXT
);

-- The durable change log: one row per applied refund version, none for
-- stale or duplicate ones.  Exporters read it in seq order; seq never
-- goes back and is never reused (AUTOINCREMENT).
CREATE TABLE changes (
	seq			INTEGER PRIMARY KEY AUTOINCREMENT,
	refund_id		TEXT NOT NULL REFERENCES refunds (id),
	instance_id		TEXT,
	revision		INTEGER,
	status			TEXT NOT NULL,
	prev_status		TEXT,	-- NULL for the first version
	currency		TEXT NOT NULL,
	amount			TEXT NOT NULL,
	amount_minor		INTEGER,
	source			TEXT NOT NULL,
	changed_at		TEXT NOT NULL,
	body			TEXT NOT NULL,	-- entity JSON of this version
	event_seq		INTEGER,
	amount_exponent		INTEGER
);

-- Internal key/value metadata (the readiness probe writes here).
CREATE TABLE meta (
	key			TEXT PRIMARY KEY,
	value			TEXT
);
