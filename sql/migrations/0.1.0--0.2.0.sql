-- From 0.1.0 to 0.2.0: what running the code parts again cannot do.  The
-- update script is this file followed by every code part of sql/elmo_oscp/
-- (functions, views and privileges, created or replaced); see sql/README.md.
--
-- Tables: what 0.2.0 added to them, in the order 01_schema.sql has it; new
-- tables, triggers and roles further down.

-- elmo_retry: a failed message queued again (no default: no table rewrite).
ALTER TABLE elmo_outbox ADD COLUMN retried_at timestamptz;

-- Discarded forecasts stay in force: the capacity rules find them through this index.
DROP INDEX elmo_received_message_unapplied;
CREATE INDEX elmo_received_message_unapplied
    ON elmo_received_message (id) WHERE state IN ('received', 'apply_failed', 'discarded');
-- The capacity rules read a group's forecasts not applied at every refresh:
-- by group, so they never walk the entries other groups' messages left behind
-- (dead once applied, until the next vacuum: thousands after a burst).
CREATE INDEX elmo_received_message_in_force
    ON elmo_received_message (group_id)
    WHERE state IN ('received', 'apply_failed', 'discarded') AND message = 'update_group_capacity_forecast';

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

-- ---------------------------------------------------------------- backup and restore

-- The trigger functions below come with the code parts, which run after
-- this file: these stand-ins let the triggers be created, and the code
-- parts replace them before the update commits.
CREATE FUNCTION _elmo_wake_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION _elmo_registration_arrived() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION _elmo_outbox_restored_sending() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE FUNCTION _elmo_saved_trigger_arrives() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE FUNCTION _elmo_save_triggers() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE FUNCTION _elmo_forget_triggers() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;

CREATE TABLE _elmo_saved_trigger (
    table_name      text NOT NULL,
    trigger_name    text NOT NULL,
    definition      text NOT NULL,
    enabled         "char" NOT NULL,
    trigger_oid     oid,
    saved_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, trigger_name)
);
CREATE TRIGGER _elmo_saved_trigger_arrives BEFORE INSERT ON _elmo_saved_trigger
    FOR EACH ROW EXECUTE FUNCTION _elmo_saved_trigger_arrives();

CREATE TRIGGER elmo_registration_arrived AFTER INSERT OR DELETE OR TRUNCATE ON elmo_registration
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_registration_arrived();
CREATE TRIGGER elmo_outbox_wake AFTER INSERT ON elmo_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_wake_trigger();
CREATE TRIGGER elmo_outbox_restored_sending BEFORE INSERT ON elmo_outbox
    FOR EACH ROW WHEN (NEW.state = 'sending') EXECUTE FUNCTION _elmo_outbox_restored_sending();

-- In the order of 01_schema.sql (pg_extension.extconfig is an array).
SELECT pg_catalog.pg_extension_config_dump('elmo_registration', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_received_message',
    $$WHERE state NOT IN ('applied', 'discarded')
          OR coalesce(received_at >= now() - current_setting('elmo_oscp.retention', true)::interval, true)$$);
SELECT pg_catalog.pg_extension_config_dump('elmo_received_message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_forecast', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_forecast_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_forecast_block', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_group_settings', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_outbox',
    $$WHERE state <> 'delivered'
          OR coalesce(created_at >= now() - current_setting('elmo_oscp.retention', true)::interval, true)
          OR id IN (SELECT a.outbox_id FROM @extschema@.elmo_adjust_request a)$$);
SELECT pg_catalog.pg_extension_config_dump('elmo_outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_adjust_request', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_adjust_request_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_usage_last', '');
SELECT pg_catalog.pg_extension_config_dump('_elmo_saved_trigger', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_in_force', '');
SELECT pg_catalog.pg_extension_config_dump('_elmo_capacity_dirty', '');

-- The CSMS's triggers 0.1.0 already has on our tables, saved from now on.
INSERT INTO _elmo_saved_trigger (table_name, trigger_name, definition, enabled, trigger_oid)
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled, t.oid
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'elmo_oscp'
 WHERE NOT t.tgisinternal
   AND NOT EXISTS (SELECT FROM pg_depend f
                    WHERE f.classid = 'pg_proc'::regclass AND f.objid = t.tgfoid
                      AND f.refobjid = e.oid AND f.deptype = 'e');

CREATE EVENT TRIGGER elmo_oscp_save_triggers ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER', 'ALTER TRIGGER', 'ALTER TABLE')
    EXECUTE FUNCTION _elmo_save_triggers();
CREATE EVENT TRIGGER elmo_oscp_forget_triggers ON sql_drop
    EXECUTE FUNCTION _elmo_forget_triggers();

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

-- ---------------------------------------------------------------- functions

-- The worker's calls gained a last, optional argument (apply_now,
-- stored_applied); 0.1.0's forms would stay beside them, and make calls
-- with the old arguments ambiguous.
DROP FUNCTION _elmo_receive(text, text, text, text, text, boolean);
DROP FUNCTION _elmo_apply(bigint);
