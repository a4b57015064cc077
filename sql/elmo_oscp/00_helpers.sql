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
