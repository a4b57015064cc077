-- Tables shared by both directions, and the C helpers every other part uses.
-- Objects land in the extension's schema (public by default), so the names in
-- the README work unqualified.  Machinery tables are not readable by PUBLIC.

-- ---------------------------------------------------------------- C helpers

-- Raises unless this backend can queue messages the worker will deliver:
-- library preloaded, not a standby, the database the worker serves.
-- Registers a commit callback that wakes the worker when this transaction commits.
CREATE FUNCTION _elmo_wake() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_wake';

-- A fresh URL-safe token: 48 bytes of pg_strong_random, base64url (64 chars).
CREATE FUNCTION _elmo_random_token() RETURNS text
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'elmo_random_token';

-- A fresh X-Request-ID: 32 characters of [0-9A-Z], the form ELMO itself uses.
CREATE FUNCTION _elmo_request_id() RETURNS text
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'elmo_request_id';

-- The worker as shared memory sees it (elmo_status() adds table counts).
CREATE FUNCTION _elmo_worker_info(
    OUT worker_pid int, OUT worker_started_at timestamptz, OUT listening boolean,
    OUT listen_address text, OUT listen_port int, OUT tls boolean,
    OUT requests_1xx bigint, OUT requests_2xx bigint, OUT requests_3xx bigint,
    OUT requests_4xx bigint, OUT requests_5xx bigint, OUT connections_dropped bigint,
    OUT messages_received bigint, OUT messages_sent bigint, OUT send_failures bigint,
    OUT apply_failures bigint, OUT last_error text, OUT last_error_at timestamptz)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_worker_info';

-- ---------------------------------------------------------------- time

-- The local zone of every ELMO rule (elmo_oscp.timezone).
CREATE FUNCTION _elmo_tz() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(nullif(current_setting('elmo_oscp.timezone', true), ''), 'Asia/Taipei') $$;

-- The local calendar day of an instant.
CREATE FUNCTION _elmo_local_day(ts timestamptz) RETURNS date
    LANGUAGE sql STABLE STRICT
    AS $$ SELECT (ts AT TIME ZONE _elmo_tz())::date $$;

-- The instant a local day begins (local midnight).
CREATE FUNCTION _elmo_day_start(day date) RETURNS timestamptz
    LANGUAGE sql STABLE STRICT
    AS $$ SELECT (day::timestamp) AT TIME ZONE _elmo_tz() $$;

-- ELMO's timestamp form: YYYY-MM-DDTHH:MM:SS.mmm+08:00, in elmo_oscp.timezone.
CREATE FUNCTION _elmo_ts(ts timestamptz) RETURNS text
    LANGUAGE sql STABLE STRICT
    AS $$
    SELECT to_char(local, 'YYYY-MM-DD"T"HH24:MI:SS.MS')
           || CASE WHEN off < interval '0' THEN '-' ELSE '+' END
           || to_char(abs(extract(epoch FROM off))::int / 3600, 'FM00') || ':'
           || to_char(abs(extract(epoch FROM off))::int % 3600 / 60, 'FM00')
      FROM (SELECT ts AT TIME ZONE _elmo_tz() AS local,
                   (ts AT TIME ZONE _elmo_tz()) - (ts AT TIME ZONE 'UTC') AS off) t
    $$;

-- ---------------------------------------------------------------- registration

-- One row: this CSMS's registration with ELMO.  Holds tokens: never PUBLIC.
CREATE TABLE elmo_registration (
    id              int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'registered', 'unregistered', 'locked_out')),
    elmo_url        text NOT NULL,          -- ELMO's OSCP base given to elmo_register
    public_url      text NOT NULL,          -- our base URL, as sent to ELMO
    initial_token   text,                   -- ELMO administrator's token; NULL once used
    our_token       text NOT NULL,          -- ELMO must present this when calling us
    previous_token  text,                   -- still accepted until ELMO uses our_token
    elmo_token      text,                   -- ELMO's token for our calls (its register)
    elmo_base_url   text,                   -- ELMO's base_url, resolved against elmo_url
    elmo_version    text,
    register_outbox_id bigint,              -- the register message we queued last
    handshake_request_id text,              -- X-Request-ID of ELMO's last handshake
    required_behaviour jsonb,               -- from ELMO's handshake
    heartbeat_interval int,                 -- seconds; NULL: ELMO wants no heartbeat
    connected       boolean NOT NULL DEFAULT false,  -- our handshake_acknowledge accepted
    last_heard_at   timestamptz,            -- any authenticated message from ELMO
    elmo_offline_mode_at timestamptz,       -- from ELMO's heartbeat
    last_error      text,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    registered_at   timestamptz,
    connected_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON elmo_registration FROM PUBLIC;

-- ---------------------------------------------------------------- inbound

-- Every message ELMO sent us, as received (no token), before and after it is applied.
CREATE TABLE elmo_received_message (
    id              bigserial PRIMARY KEY,
    message         text NOT NULL,          -- register, handshake, heartbeat, update_group_capacity_forecast
    method          text NOT NULL DEFAULT 'POST',
    request_id      text NOT NULL UNIQUE,   -- X-Request-ID (a generated one when ELMO sent none)
    correlation_id  text,                   -- X-Correlation-ID, when given
    raw_body        text NOT NULL,
    body            jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- decided once, at receipt (decisions §4)
    group_id        text,
    kind            text,                   -- day_ahead, additional_reply or emergency
    forecast_day    date,
    adjust_request_id bigint,               -- the adjust request a reply answers
    state           text NOT NULL DEFAULT 'received',  -- received, applied, apply_failed, discarded
    apply_attempts  int NOT NULL DEFAULT 0,
    last_sqlstate   text,
    last_error      text,
    next_apply_at   timestamptz,
    applied_at      timestamptz,
    discarded_reason text
);
CREATE INDEX elmo_received_message_unapplied
    ON elmo_received_message (id) WHERE state IN ('received', 'apply_failed');
REVOKE ALL ON elmo_received_message FROM PUBLIC;
-- No CHECKs on kind and state here, nor on capacity_forecast.kind and the
-- blocks' times below: only this extension's functions write these tables, with
-- validated or literal values, and each CHECK cost ~2.5 µs per statement.

-- One row per capacity forecast applied; its blocks are inserted first, so an
-- AFTER INSERT trigger on this table sees them all.
CREATE TABLE capacity_forecast (
    id              bigserial PRIMARY KEY,
    group_id        text NOT NULL,
    forecast_type   text NOT NULL,          -- OSCP type: CONSUMPTION, ...
    kind            text NOT NULL,          -- day_ahead, additional_reply or emergency
    forecast_day    date NOT NULL,          -- local day of the first block's start
    received_at     timestamptz NOT NULL,   -- receipt time: orders plans (decisions §5)
    request_id      text NOT NULL UNIQUE,   -- ELMO's X-Request-ID
    message_id      bigint,                 -- elmo_received_message.id (may be purged)
    payload         jsonb NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX capacity_forecast_group ON capacity_forecast (group_id, forecast_day);

-- Blocks are found through their forecast (forecast_id), never by time alone.
CREATE TABLE capacity_forecast_block (
    forecast_id     bigint NOT NULL,        -- capacity_forecast.id
    block_no        int NOT NULL,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz NOT NULL,   -- later than start_time
    capacity        numeric NOT NULL,
    unit            text NOT NULL,
    phase           text NOT NULL,
    PRIMARY KEY (forecast_id, block_no)
);

-- Blocks go with their forecast, as ON DELETE CASCADE did.  No foreign key:
-- its check cost ~5 µs per block inserted, and only _elmo_apply inserts
-- blocks, in the statement that inserts their forecast.  DELETE, not TRUNCATE:
-- the blocks may be in the same TRUNCATE, still open.
CREATE FUNCTION _elmo_forecast_deleted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM capacity_forecast_block;
    ELSE
        DELETE FROM capacity_forecast_block b USING gone g WHERE b.forecast_id = g.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER capacity_forecast_delete_blocks AFTER DELETE ON capacity_forecast
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION _elmo_forecast_deleted();
CREATE TRIGGER capacity_forecast_truncate_blocks AFTER TRUNCATE ON capacity_forecast
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_forecast_deleted();

-- Bodies compress with lz4 where the server has it: ~4x faster than pglz.
DO $$
BEGIN
    ALTER TABLE elmo_received_message ALTER raw_body SET COMPRESSION lz4, ALTER body SET COMPRESSION lz4;
    ALTER TABLE capacity_forecast ALTER payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END $$;

-- Per-group settings the CSMS records.
CREATE TABLE elmo_group_settings (
    group_id        text PRIMARY KEY,
    contract_capacity_kw numeric CHECK (contract_capacity_kw >= 0)
);

-- ---------------------------------------------------------------- outbound

-- Every message we send to ELMO: queued in the caller's transaction, delivered
-- by the worker after commit.  Bodies are kept as text (exact key order and
-- number format); tokens are scrubbed from them once sent.
CREATE TABLE elmo_outbox (
    id              bigserial PRIMARY KEY,
    message         text NOT NULL,          -- OSCP message name, or trigger-callback/<name>
    method          text NOT NULL DEFAULT 'POST',
    group_id        text,                   -- per-group delivery order
    url             text,                   -- fixed target; NULL: ELMO's base URL + '/' + message
    auth            text NOT NULL DEFAULT 'elmo'
                    CHECK (auth IN ('elmo', 'initial', 'ours')),  -- which token authorizes it
    request_id      text NOT NULL UNIQUE DEFAULT _elmo_request_id(),
    correlation_id  text,
    body            text NOT NULL,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'delivered', 'failed',
                                     'waiting_for_handshake', 'held')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     int,
    last_error      text,
    response_body   text,                   -- truncated
    timing          jsonb,                  -- curl's dns/connect/tls/transfer breakdown
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz
);
CREATE INDEX elmo_outbox_due ON elmo_outbox (next_attempt_at, id)
    WHERE state IN ('queued', 'sending');
CREATE INDEX elmo_outbox_group ON elmo_outbox (group_id, id)
    WHERE state NOT IN ('delivered', 'failed');
REVOKE ALL ON elmo_outbox FROM PUBLIC;

-- Our adjust_group_capacity_forecast requests: a pending one makes ELMO's next
-- forecast for that group and day an additional_reply.
CREATE TABLE elmo_adjust_request (
    id              bigserial PRIMARY KEY,
    group_id        text NOT NULL,
    day             date NOT NULL,
    outbox_id       bigint NOT NULL REFERENCES elmo_outbox (id),
    hourly_kw       numeric[] NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'answered', 'failed', 'expired')),
    reply_forecast_id bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);
CREATE UNIQUE INDEX elmo_adjust_request_one_pending
    ON elmo_adjust_request (group_id, day) WHERE state = 'pending';

-- Last reading reported per group (cumulative kWh never goes down).
CREATE TABLE elmo_usage_last (
    group_id        text PRIMARY KEY,
    kwh             numeric NOT NULL,
    measured_at     timestamptz NOT NULL,
    outbox_id       bigint
);

-- The CSMS's own machinery may read the tables it works with.
GRANT SELECT ON capacity_forecast, capacity_forecast_block TO PUBLIC;
GRANT SELECT ON elmo_group_settings TO PUBLIC;

-- Wakes the worker when the transaction that created the extension commits,
-- so it starts serving at once instead of at its next poll.
CREATE FUNCTION _elmo_kick() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_kick';
