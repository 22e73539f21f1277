-- 004_posted.sql: find a refund's previous change-log entry quickly.
--
-- A record that leaves SUCCEEDED reverses what the version before it
-- posted, and a new SUCCEEDED version posts only the difference to it
-- (SPEC section 5, docs/exporters.md "What gets posted").  The exporters
-- read that version from the change log: the refund's entry just before
-- the record's seq.  Every exporter does this for every such record, and
-- reconcile for every one in the log, so it is an index lookup, not a
-- scan of the log since the refund was posted.
--
-- The migration runner applies this file inside one transaction and then
-- sets PRAGMA user_version; the file itself must not touch user_version,
-- nor begin or end a transaction.
--
-- IF NOT EXISTS: the first build's 001_initial made this same index
-- (a later commit took it out of that file), so a store that build
-- created has it already.

CREATE INDEX IF NOT EXISTS changes_refund ON changes (refund_id, seq);
