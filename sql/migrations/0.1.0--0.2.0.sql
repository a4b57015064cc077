-- From 0.1.0 to 0.2.0: what running the code parts again cannot do.  The
-- update script is this file followed by every code part of sql/elmo_oscp/
-- (functions, views and privileges, created or replaced); see sql/README.md.
--
-- Tables: what 0.2.0 added to them, in the order 01_schema.sql has it.

-- elmo_retry: a failed message queued again (no default: no table rewrite).
ALTER TABLE elmo_outbox ADD COLUMN retried_at timestamptz;

-- Discarded forecasts stay in force: the capacity rules find them through this index.
DROP INDEX elmo_received_message_unapplied;
CREATE INDEX elmo_received_message_unapplied
    ON elmo_received_message (id) WHERE state IN ('received', 'apply_failed', 'discarded');

CREATE TABLE capacity_in_force (
    group_id        text PRIMARY KEY,
    capacity        numeric,
    unit            text,
    kind            text,
    since           timestamptz NOT NULL,
    until           timestamptz
);
CREATE INDEX capacity_in_force_until ON capacity_in_force (until);

CREATE TABLE _elmo_capacity_dirty (
    group_id        text PRIMARY KEY
);

CREATE TABLE _elmo_alert (
    id              bigserial PRIMARY KEY,
    alert           text NOT NULL,
    group_id        text,
    subject         text NOT NULL,
    detail          text NOT NULL,
    raised_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX _elmo_alert_once ON _elmo_alert (alert, coalesce(group_id, ''), subject);

-- Functions 0.2.0 no longer has.
DROP FUNCTION IF EXISTS _elmo_conf(text, text);         -- settings: _elmo_setting(name)
DROP FUNCTION IF EXISTS _elmo_blocks_error(jsonb);      -- now _elmo_blocks_problem(jsonb)
DROP FUNCTION IF EXISTS _elmo_health();                -- /health tells nothing about the CSMS now
-- Result columns changed: created again by the code parts.
DROP FUNCTION IF EXISTS elmo_capacity_schedule(text, date);   -- + applied
DROP FUNCTION IF EXISTS elmo_status();                        -- + elmo_reachable, oldest_undelivered_age

-- ---------------------------------------------------------------- roles

-- As in 01_schema.sql: they may exist already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'elmo_oscp_reader') THEN
        CREATE ROLE elmo_oscp_reader NOLOGIN;
        GRANT elmo_oscp_reader TO pg_monitor;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'elmo_oscp_csms') THEN
        CREATE ROLE elmo_oscp_csms NOLOGIN IN ROLE elmo_oscp_reader;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'elmo_oscp_worker') THEN
        CREATE ROLE elmo_oscp_worker LOGIN IN ROLE elmo_oscp_csms;
    END IF;
END $$;

-- ---------------------------------------------------------------- tokens at rest

-- ELMO's token out of the registers already applied (the registration holds
-- it); one still to apply keeps it until then.
UPDATE elmo_received_message m
   SET body = jsonb_set(m.body, '{token}', '"***"'),
       raw_body = CASE WHEN strpos(m.raw_body, to_json(m.body->>'token')::text) > 0
                       THEN replace(m.raw_body, to_json(m.body->>'token')::text, '"***"')
                       ELSE jsonb_set(m.body, '{token}', '"***"')::text END
 WHERE m.message = 'register' AND m.state = 'applied'
   AND jsonb_typeof(m.body->'token') = 'string' AND m.body->>'token' <> '***';
