-- What every other part uses: the C functions of the library, settings, ELMO's
-- local calendar.  Objects land in the extension's schema (public by default;
-- CREATE EXTENSION elmo_oscp SCHEMA elmo is what the README recommends).  The
-- worker and every function a CSMS calls put that schema on their search_path,
-- so the parts name each other unqualified.
--
-- This file and every part not named *schema* is code: each statement can run
-- again (CREATE OR REPLACE), because every update script runs them all again
-- (sql/README.md).

-- ---------------------------------------------------------------- C helpers

-- Raises unless this backend can queue messages the worker will deliver:
-- library preloaded, not a standby, the database the worker serves.
-- Registers a commit callback that wakes the worker when this transaction commits.
CREATE OR REPLACE FUNCTION _elmo_wake() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_wake';

-- Wakes the worker when the transaction that created or updated the extension
-- commits, so it starts serving at once instead of at its next poll.
CREATE OR REPLACE FUNCTION _elmo_kick() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_kick';

-- A fresh URL-safe token: 48 bytes of pg_strong_random, base64url (64 chars).
CREATE OR REPLACE FUNCTION _elmo_random_token() RETURNS text
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'elmo_random_token';

-- A fresh X-Request-ID: 32 characters of [0-9A-Z], the form ELMO itself uses.
CREATE OR REPLACE FUNCTION _elmo_request_id() RETURNS text
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'elmo_request_id';

-- The worker as shared memory sees it (elmo_status() adds table counts).
CREATE OR REPLACE FUNCTION _elmo_worker_info(
    OUT worker_pid int, OUT worker_started_at timestamptz, OUT listening boolean,
    OUT listen_address text, OUT listen_port int, OUT tls boolean,
    OUT requests_1xx bigint, OUT requests_2xx bigint, OUT requests_3xx bigint,
    OUT requests_4xx bigint, OUT requests_5xx bigint, OUT connections_dropped bigint,
    OUT messages_received bigint, OUT messages_sent bigint, OUT send_failures bigint,
    OUT apply_failures bigint, OUT last_error text, OUT last_error_at timestamptz)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_worker_info';

-- ELMO's reachability, as the worker's deliveries show it: false after
-- several failed deliveries in a row (no connection, timeout, 5xx), true
-- again at ELMO's next answer.  (0.1.0's _elmo_worker_info keeps its columns.)
CREATE OR REPLACE FUNCTION _elmo_worker_state(
    OUT elmo_reachable boolean, OUT failed_deliveries int, OUT unreachable_since timestamptz,
    OUT last_reached_at timestamptz)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_worker_state';

-- A failure the SQL side found (ELMO's 4xx, a lock-out, a failing
-- usage_source): elmo_status()'s last_error.  Never pass a token.
CREATE OR REPLACE FUNCTION _elmo_note_error(what text) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_note_error';

-- capacity_in_force changes next at `at`: the worker looks then (from commit on).
CREATE OR REPLACE FUNCTION _elmo_capacity_due(at timestamptz) RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'elmo_capacity_due';

-- After commit, the worker refreshes every group of capacity_in_force.
CREATE OR REPLACE FUNCTION _elmo_capacity_recheck() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_capacity_recheck';

-- ---------------------------------------------------------------- settings

-- The value of setting elmo_oscp.<name>; NULL when it is empty (unset).  The
-- library defines every setting with its default and is always preloaded, so
-- a setting always has a value here: SQL never carries a default of its own.
-- Not STRICT, so that the planner inlines it (and the functions below).
CREATE OR REPLACE FUNCTION _elmo_setting(name text) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('elmo_oscp.' || name), '') $$;

-- ---------------------------------------------------------------- time

-- The local zone of every ELMO rule (elmo_oscp.timezone).
CREATE OR REPLACE FUNCTION _elmo_tz() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT _elmo_setting('timezone') $$;

-- The local calendar day of an instant.
CREATE OR REPLACE FUNCTION _elmo_local_day(ts timestamptz) RETURNS date
    LANGUAGE sql STABLE
    AS $$ SELECT (ts AT TIME ZONE _elmo_tz())::date $$;

-- The instant a local day begins (local midnight).
CREATE OR REPLACE FUNCTION _elmo_day_start(day date) RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT (day::timestamp) AT TIME ZONE _elmo_tz() $$;

-- ELMO's timestamp form: YYYY-MM-DDTHH:MM:SS.mmm+08:00, in elmo_oscp.timezone.
CREATE OR REPLACE FUNCTION _elmo_ts(ts timestamptz) RETURNS text
    LANGUAGE sql STABLE STRICT
    AS $$
    SELECT to_char(local, 'YYYY-MM-DD"T"HH24:MI:SS.MS')
           || CASE WHEN off < interval '0' THEN '-' ELSE '+' END
           || to_char(abs(extract(epoch FROM off))::int / 3600, 'FM00') || ':'
           || to_char(abs(extract(epoch FROM off))::int % 3600 / 60, 'FM00')
      FROM (SELECT ts AT TIME ZONE _elmo_tz() AS local,
                   (ts AT TIME ZONE _elmo_tz()) - (ts AT TIME ZONE 'UTC') AS off) t
    $$;

-- ---------------------------------------------------------------- table machinery

-- Blocks go with their forecast, as ON DELETE CASCADE would do (the triggers
-- are created with capacity_forecast in 01_schema.sql).  No foreign key: its
-- check cost ~5 µs per block inserted, and only _elmo_apply inserts blocks, in
-- the statement that inserts their forecast.  DELETE, not TRUNCATE: the blocks
-- may be in the same TRUNCATE, still open.
CREATE OR REPLACE FUNCTION _elmo_forecast_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM capacity_forecast_block;
    ELSE
        DELETE FROM capacity_forecast_block b USING gone g WHERE b.forecast_id = g.id;
    END IF;
    RETURN NULL;
END $$;

-- Wakes the worker when the transaction commits (a statement trigger; see
-- 01_schema.sql for where and why).
CREATE OR REPLACE FUNCTION _elmo_wake_trigger() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'elmo_wake_trigger';

-- Registration rows that arrive or go other than through our functions (a
-- restore's COPY, a TRUNCATE): release the messages the registration allows
-- (_elmo_registration_changed), and wake the worker at commit to read the
-- tokens again and to bring capacity_in_force up to date (restored rows name
-- their next change, which the worker does not know of).  (A restore runs
-- with an empty search_path.)
CREATE OR REPLACE FUNCTION _elmo_registration_arrived() RETURNS trigger
    LANGUAGE plpgsql SET search_path = @extschema@, pg_temp AS $$
BEGIN
    PERFORM _elmo_registration_changed();
    PERFORM _elmo_capacity_recheck();
    PERFORM _elmo_kick();
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION _elmo_outbox_restored_sending() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.state := 'queued';
    NEW.next_attempt_at := now();
    RETURN NEW;
END $$;

-- ---------------------------------------------------------------- the CSMS's triggers, kept for a restore

-- The user triggers on the extension's tables (not its own: their function
-- is one of the extension's), as _elmo_saved_trigger keeps them.
CREATE OR REPLACE FUNCTION _elmo_user_triggers()
    RETURNS TABLE(table_name text, trigger_name text, definition text, enabled "char", trigger_oid oid,
                  table_oid oid)
    LANGUAGE sql STABLE AS $$
    SELECT c.relname::text, t.tgname::text, pg_get_triggerdef(t.oid), t.tgenabled, t.oid, c.oid
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'elmo_oscp'
     WHERE NOT t.tgisinternal
       AND NOT EXISTS (SELECT FROM pg_depend f
                        WHERE f.classid = 'pg_proc'::regclass AND f.objid = t.tgfoid
                          AND f.refobjid = e.oid AND f.deptype = 'e') $$;

-- After CREATE TRIGGER, ALTER TRIGGER (a new name) and ALTER TABLE (a trigger
-- enabled or disabled): keep the triggers the command touched.  Only rows of
-- those triggers change: after a restore, the saved rows of triggers not yet
-- created again must stay.
CREATE OR REPLACE FUNCTION _elmo_save_triggers() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
BEGIN
    WITH touched AS (
        SELECT u.* FROM _elmo_user_triggers() u, pg_event_trigger_ddl_commands() c
         WHERE (c.classid = 'pg_trigger'::regclass AND c.objid = u.trigger_oid)
            OR (c.classid = 'pg_class'::regclass AND c.objid = u.table_oid)
    ), renamed AS (
        DELETE FROM _elmo_saved_trigger s USING touched t
         WHERE s.trigger_oid = t.trigger_oid AND s.table_name = t.table_name
           AND s.trigger_name <> t.trigger_name
    )
    INSERT INTO _elmo_saved_trigger AS s (table_name, trigger_name, definition, enabled, trigger_oid)
    SELECT DISTINCT ON (t.trigger_oid) t.table_name, t.trigger_name, t.definition, t.enabled, t.trigger_oid
      FROM touched t
    ON CONFLICT (table_name, trigger_name) DO UPDATE
       SET definition = EXCLUDED.definition, enabled = EXCLUDED.enabled,
           trigger_oid = EXCLUDED.trigger_oid, saved_at = now();
END $$;

-- A saved row that arrives by COPY (a restore) names a trigger of another
-- cluster: its OID means nothing here until elmo_restore_triggers() creates it.
CREATE OR REPLACE FUNCTION _elmo_saved_trigger_arrives() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger t WHERE t.oid = NEW.trigger_oid AND t.tgname = NEW.trigger_name) THEN
        NEW.trigger_oid := NULL;
    END IF;
    RETURN NEW;
END $$;

-- After any drop: forget the triggers it dropped (DROP TRIGGER, or a trigger
-- function dropped with CASCADE).
CREATE OR REPLACE FUNCTION _elmo_forget_triggers() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
BEGIN
    DELETE FROM _elmo_saved_trigger s
     USING pg_event_trigger_dropped_objects() o
     WHERE o.classid = 'pg_trigger'::regclass AND o.objid = s.trigger_oid;
END $$;
