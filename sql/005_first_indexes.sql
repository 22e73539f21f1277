-- 005_first_indexes.sql: drop the first build's indexes no read uses.
--
-- The first build's 001_initial also made four secondary indexes that a
-- later commit (21d33b2) took out of that file, because no read needs
-- them and each costs a random page write per webhook under group
-- commit:
--
--   refunds_created          refunds (created_date, id)
--   refunds_status           refunds (status, created_date, id)
--   refunds_charge           refunds (charge_id)
--   webhook_events_received  webhook_events (received_at)
--
-- A store that build created still has them, and pays for them on every
-- webhook; a store created since never had them.  Reads on the webhook
-- path go by primary key (refunds.id, webhook_events.event_id) or by
-- changes_refund (004_posted); the operator's listing of all refunds,
-- or of one status, scans and sorts without them, as on a new store.
--
-- The migration runner applies this file inside one transaction and then
-- sets PRAGMA user_version; the file itself must not touch user_version,
-- nor begin or end a transaction.
--
-- IF EXISTS: on a store created after 21d33b2 there is nothing to drop.

DROP INDEX IF EXISTS refunds_created;
DROP INDEX IF EXISTS refunds_status;
DROP INDEX IF EXISTS refunds_charge;
DROP INDEX IF EXISTS webhook_events_received;
