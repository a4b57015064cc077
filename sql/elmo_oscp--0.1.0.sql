-- elmo_oscp 0.1.0: generated from sql/elmo_oscp/*.sql, do not edit
\echo Use "CREATE EXTENSION elmo_oscp" to load this file. \quit

-- ==== sql/elmo_oscp/01_schema.sql
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

-- ==== sql/elmo_oscp/02_receive.sql
-- Inbound, first step: receipt.  src/inbound.c authenticates and routes a
-- request, then calls _elmo_receive (validate + store, classified once,
-- decisions §4) and, in its own subtransaction, _elmo_apply (03_apply.sql).
-- Receipt is kept apart from applying so that a message ELMO was answered for
-- is stored whatever applying it does; validation lives here because ELMO gets
-- its 400 from it.

-- ---------------------------------------------------------------- schema additions

-- Whether the request authenticated with our current token (not the previous
-- one): applying it retires the previous token (decisions §3).
ALTER TABLE elmo_received_message
    ADD COLUMN used_current_token boolean NOT NULL DEFAULT false;

-- Retention finds old raw messages by receipt time; BRIN: next to nothing per insert.
CREATE INDEX elmo_received_message_received_at ON elmo_received_message USING brin (received_at);

-- The span of a forecast's blocks (earliest start, latest end), so the capacity
-- rules only look at forecasts that can cover an instant.  Filled by
-- _elmo_apply; a row inserted by other means may leave them NULL (= unknown
-- span, always looked at).
ALTER TABLE capacity_forecast
    ADD COLUMN starts_at timestamptz,
    ADD COLUMN ends_at   timestamptz;
CREATE INDEX capacity_forecast_group_span
    ON capacity_forecast (group_id, (coalesce(ends_at, 'infinity'::timestamptz)));

-- ---------------------------------------------------------------- receipt

-- RFC 3339 date-time with an offset or Z (the shape; the cast checks the
-- values).  LIKE, not a regular expression: this runs for every timestamp.
CREATE FUNCTION _elmo_is_rfc3339(ts text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ts LIKE '____-__-_____:__:__%' AND substr(ts, 11, 1) IN ('T', 't', ' ')
           AND (ts LIKE '%Z' OR ts LIKE '%z' OR ts LIKE '%+__:__' OR ts LIKE '%-__:__') $$;

-- The data exception a text raises when cast to timestamptz, or NULL.
CREATE FUNCTION _elmo_timestamp_error(ts text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM ts::timestamptz;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END $$;

-- What is wrong with a forecast's blocks (slow path, only for a bad request):
-- the first bad block by index, else the first overlap in time order.
CREATE FUNCTION _elmo_blocks_error(blocks jsonb, OUT field text, OUT problem text)
    LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    x text[];
    v_i int;
    v_p int;
BEGIN
    SELECT ARRAY['forecasted_blocks[' || (t.o - 1) || ']' || c.x[1], c.x[2]] INTO x
      FROM jsonb_array_elements(blocks) WITH ORDINALITY AS t(v, o),
           LATERAL (SELECT CASE
               WHEN jsonb_typeof(t.v) <> 'object' THEN '{"", "must be an object"}'::text[]
               WHEN NOT t.v ? 'capacity' THEN '{.capacity, "is required"}'
               WHEN jsonb_typeof(t.v->'capacity') <> 'number' THEN '{.capacity, "must be a finite number >= 0"}'
               WHEN (t.v->'capacity')::numeric < 0 THEN '{.capacity, "must be a finite number >= 0"}'
               WHEN NOT t.v ? 'phase' THEN '{.phase, "is required"}'
               WHEN jsonb_typeof(t.v->'phase') <> 'string'
                    OR t.v->>'phase' NOT IN ('UNKNOWN', 'ONE', 'TWO', 'THREE', 'ALL')
                    THEN '{.phase, "must be one of UNKNOWN, ONE, TWO, THREE, ALL"}'
               WHEN NOT t.v ? 'unit' THEN '{.unit, "is required"}'
               WHEN jsonb_typeof(t.v->'unit') <> 'string' OR t.v->>'unit' NOT IN ('A', 'W', 'KW', 'WH', 'KWH')
                    THEN '{.unit, "must be one of A, W, KW, WH, KWH"}'
               WHEN NOT t.v ? 'start_time' THEN '{.start_time, "is required"}'
               WHEN jsonb_typeof(t.v->'start_time') <> 'string' OR NOT _elmo_is_rfc3339(t.v->>'start_time')
                    THEN '{.start_time, "must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T00:00:00.000+08:00"}'
               WHEN _elmo_timestamp_error(t.v->>'start_time') IS NOT NULL
                    THEN ARRAY['.start_time', 'is not a valid timestamp: ' || _elmo_timestamp_error(t.v->>'start_time')]
               WHEN NOT t.v ? 'end_time' THEN '{.end_time, "is required"}'
               WHEN jsonb_typeof(t.v->'end_time') <> 'string' OR NOT _elmo_is_rfc3339(t.v->>'end_time')
                    THEN '{.end_time, "must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T01:00:00.000+08:00"}'
               WHEN _elmo_timestamp_error(t.v->>'end_time') IS NOT NULL
                    THEN ARRAY['.end_time', 'is not a valid timestamp: ' || _elmo_timestamp_error(t.v->>'end_time')]
               WHEN (t.v->>'end_time')::timestamptz <= (t.v->>'start_time')::timestamptz
                    THEN '{.end_time, "must be later than start_time"}'
               END) AS c(x)
     WHERE c.x IS NOT NULL
     ORDER BY t.o
     LIMIT 1;
    IF x IS NOT NULL THEN
        field := x[1]; problem := x[2];
        RETURN;
    END IF;
    SELECT w.i, w.pi INTO v_i, v_p
      FROM (SELECT t.o - 1 AS i, (t.v->>'start_time')::timestamptz AS s,
                   lag((t.v->>'end_time')::timestamptz) OVER o AS pe, lag(t.o - 1) OVER o AS pi
              FROM jsonb_array_elements(blocks) WITH ORDINALITY AS t(v, o)
            WINDOW o AS (ORDER BY (t.v->>'start_time')::timestamptz, t.o)) w
     WHERE w.s < w.pe
     ORDER BY w.s, w.i
     LIMIT 1;
    IF v_i IS NOT NULL THEN
        field := format('forecasted_blocks[%s]', v_i);
        problem := format('overlaps forecasted_blocks[%s]', v_p);
    END IF;
END
$fn$;

-- Validates one message and stores it as received ('received'), classified.
-- 204 + id: stored; 204 + NULL: duplicate X-Request-ID, nothing stored;
-- 400 + {"message": ..., "field": ...}: invalid, nothing stored.
CREATE FUNCTION _elmo_receive(message text, method text, request_id text, correlation_id text,
                              raw_body text, used_current_token boolean)
    RETURNS TABLE(status int, error text, message_id bigint)
    LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    v_msg    text := $1;
    v_method text := upper(coalesce($2, 'POST'));
    b        jsonb;
    stage    text := 'parse';
    ef       text;              -- the field in error ('' = the whole body)
    em       text;              -- what is wrong with it
    rb       jsonb;
    blk      jsonb;
    blks     jsonb;
    pfx      text;
    v_bad    int;
    v_group  text;
    v_kind   text;
    v_day    date;
    v_id     bigint;
    -- forecast shape
    v_n      int;
    v_first  timestamptz;
    v_last   timestamptz;
    v_hourly boolean;
    v_contig boolean;
    v_wrong  boolean := false;
    v_detail text;
    v_tz     text;
BEGIN
    IF $3 IS NULL THEN
        RAISE EXCEPTION 'elmo_oscp: _elmo_receive needs a request_id'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'The listener generates one when ELMO sent no X-Request-ID.';
    END IF;
    IF NOT (v_msg IN ('handshake', 'heartbeat', 'update_group_capacity_forecast') AND v_method = 'POST'
            OR v_msg = 'register' AND v_method IN ('POST', 'PUT', 'DELETE')) THEN
        RAISE EXCEPTION 'elmo_oscp: no inbound message "% %"', v_method, v_msg
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Routing (404/405/501) is done by the listener before _elmo_receive.';
    END IF;

    BEGIN
        -- LIKE first: btrim reads the whole body (multibyte), LIKE '{%' one byte
        IF $5 IS NULL OR $5 NOT LIKE '{%' AND btrim($5, E' \t\r\n') = '' THEN
            IF v_msg = 'handshake' OR v_method = 'DELETE' THEN
                b := '{}';
            ELSE
                em := 'malformed JSON: empty body';
            END IF;
        ELSE
            b := $5::jsonb;
        END IF;
        stage := 'validate';

        IF em IS NOT NULL OR v_method = 'DELETE' THEN
            NULL;                               -- DELETE register: any JSON body
        ELSIF jsonb_typeof(b) <> 'object' THEN
            ef := ''; em := 'must be a JSON object';

        ELSIF v_msg = 'update_group_capacity_forecast' THEN
            blks := b->'forecasted_blocks';     -- one copy of the array, not one per use
            v_n := CASE WHEN jsonb_typeof(blks) = 'array' THEN jsonb_array_length(blks) END;
            IF NOT b ? 'group_id' THEN
                ef := 'group_id'; em := 'is required';
            ELSIF jsonb_typeof(b->'group_id') <> 'string' OR b->>'group_id' = '' THEN
                ef := 'group_id'; em := 'must be a non-empty string';
            ELSIF NOT b ? 'type' THEN
                ef := 'type'; em := 'is required';
            ELSIF jsonb_typeof(b->'type') <> 'string' OR b->>'type' NOT IN
                    ('CONSUMPTION', 'GENERATION', 'FALLBACK_CONSUMPTION', 'FALLBACK_GENERATION', 'OPTIMUM') THEN
                ef := 'type';
                em := 'must be one of CONSUMPTION, GENERATION, FALLBACK_CONSUMPTION, FALLBACK_GENERATION, OPTIMUM';
            ELSIF blks IS NULL THEN
                ef := 'forecasted_blocks'; em := 'is required';
            ELSIF coalesce(v_n, 0) = 0 THEN
                ef := 'forecasted_blocks'; em := 'must be a non-empty array';
            ELSIF v_n = 1 THEN
                -- one block (every emergency): plain expressions, no query.  Any
                -- error raised here also sends us to _elmo_blocks_error.  ELMO's
                -- own timestamp form passes the first LIKE; others the full check.
                blk := blks->0;
                v_first := CASE WHEN blk->>'start_time' LIKE '____-__-__T__:__:__.___+__:__'
                                     OR _elmo_is_rfc3339(blk->>'start_time') THEN (blk->>'start_time')::timestamptz END;
                v_last := CASE WHEN blk->>'end_time' LIKE '____-__-__T__:__:__.___+__:__'
                                    OR _elmo_is_rfc3339(blk->>'end_time') THEN (blk->>'end_time')::timestamptz END;
                v_wrong := v_first IS NULL OR v_last IS NULL OR v_last <= v_first
                           OR jsonb_typeof(blk->'capacity') IS DISTINCT FROM 'number'
                           OR (blk->'capacity')::numeric < 0
                           OR coalesce(blk->>'phase', '') NOT IN ('UNKNOWN', 'ONE', 'TWO', 'THREE', 'ALL')
                           OR coalesce(blk->>'unit', '') NOT IN ('A', 'W', 'KW', 'WH', 'KWH');
            ELSE
                -- fast path, one pass, no sort: is anything wrong (then
                -- _elmo_blocks_error says what), and the shape the classification
                -- needs.  Blocks that each start where the one before ended
                -- (a day-ahead) cannot overlap; only others need the sort below.
                SELECT min(y.s), max(y.e), bool_and(y.e - y.s = interval '1 hour'),
                       bool_or(CASE WHEN y.s IS NULL OR y.e IS NULL OR y.c IS NULL
                                         OR y.phase IS NULL OR y.unit IS NULL
                                         OR jsonb_typeof(y.c) <> 'number' THEN true
                                    ELSE y.c::numeric < 0 OR y.e <= y.s
                                         OR y.phase NOT IN ('UNKNOWN', 'ONE', 'TWO', 'THREE', 'ALL')
                                         OR y.unit NOT IN ('A', 'W', 'KW', 'WH', 'KWH') END),
                       (array_agg(y.s))[2:] = (array_agg(y.e))[:v_n - 1]
                  INTO v_first, v_last, v_hourly, v_wrong, v_contig
                  FROM (SELECT x.capacity AS c, x.phase, x.unit,
                               CASE WHEN x.start_time LIKE '____-__-__T__:__:__.___+__:__'
                                         OR _elmo_is_rfc3339(x.start_time) THEN x.start_time::timestamptz END AS s,
                               CASE WHEN x.end_time LIKE '____-__-__T__:__:__.___+__:__'
                                         OR _elmo_is_rfc3339(x.end_time) THEN x.end_time::timestamptz END AS e
                          FROM jsonb_to_recordset(blks)
                               AS x(capacity jsonb, phase text, unit text, start_time text, end_time text)
                        OFFSET 0) y;                -- OFFSET 0: each time parsed once
                IF NOT v_wrong AND NOT v_contig THEN
                    -- in start order: any overlap; contiguous?
                    SELECT bool_and(z.pe IS NULL OR z.s = z.pe), bool_or(z.s < z.pe) INTO v_contig, v_wrong
                      FROM (SELECT y.s, lag(y.e) OVER (ORDER BY y.s) AS pe
                              FROM (SELECT x.start_time::timestamptz AS s, x.end_time::timestamptz AS e
                                      FROM jsonb_to_recordset(blks) AS x(start_time text, end_time text)
                                    OFFSET 0) y) z;
                END IF;
            END IF;

        ELSIF v_msg = 'register' THEN
            IF NOT b ? 'token' THEN
                ef := 'token'; em := 'is required';
            ELSIF jsonb_typeof(b->'token') <> 'string' OR b->>'token' = '' THEN
                ef := 'token'; em := 'must be a non-empty string';
            ELSIF NOT b ? 'version_url' THEN
                ef := 'version_url'; em := 'is required';
            ELSIF jsonb_typeof(b->'version_url') <> 'array' OR jsonb_array_length(b->'version_url') = 0 THEN
                ef := 'version_url'; em := 'must be a non-empty array';
            ELSE
                SELECT 'version_url[' || (t.o - 1) || ']' || c.x[1], c.x[2] INTO ef, em
                  FROM jsonb_array_elements(b->'version_url') WITH ORDINALITY AS t(v, o),
                       LATERAL (SELECT CASE
                           WHEN jsonb_typeof(t.v) <> 'object' THEN '{"", "must be an object"}'::text[]
                           WHEN NOT t.v ? 'version' THEN '{.version, "is required"}'
                           WHEN jsonb_typeof(t.v->'version') <> 'string' OR t.v->>'version' = ''
                                THEN '{.version, "must be a non-empty string"}'
                           WHEN NOT t.v ? 'base_url' THEN '{.base_url, "is required"}'
                           WHEN jsonb_typeof(t.v->'base_url') <> 'string' OR t.v->>'base_url' = ''
                                THEN '{.base_url, "must be a non-empty string"}'
                           END) AS c(x)
                 WHERE c.x IS NOT NULL
                 ORDER BY t.o LIMIT 1;
            END IF;

        ELSIF v_msg = 'handshake' THEN
            -- OSCP {"required_behaviour": {...}}, the testbed's flat form, or {}
            IF b ? 'required_behaviour' AND jsonb_typeof(b->'required_behaviour') <> 'null' THEN
                rb := b->'required_behaviour'; pfx := 'required_behaviour.';
                IF jsonb_typeof(rb) <> 'object' THEN
                    ef := 'required_behaviour'; em := 'must be an object';
                END IF;
            ELSE
                rb := b; pfx := '';
            END IF;
            IF em IS NULL AND coalesce(jsonb_typeof(rb->'heartbeat_interval'), 'null') <> 'null' THEN
                IF jsonb_typeof(rb->'heartbeat_interval') <> 'number' THEN
                    ef := pfx || 'heartbeat_interval'; em := 'must be a number >= 1 (seconds)';
                ELSIF (rb->'heartbeat_interval')::numeric NOT BETWEEN 1 AND 2147483647 THEN
                    ef := pfx || 'heartbeat_interval'; em := 'must be a number >= 1 (seconds)';
                END IF;
            END IF;
            IF em IS NULL AND coalesce(jsonb_typeof(rb->'measurement_configuration'), 'null') <> 'null' THEN
                IF jsonb_typeof(rb->'measurement_configuration') <> 'array' THEN
                    ef := pfx || 'measurement_configuration'; em := 'must be an array';
                ELSE
                    SELECT t.o - 1 INTO v_bad
                      FROM jsonb_array_elements(rb->'measurement_configuration') WITH ORDINALITY AS t(v, o)
                     WHERE t.v NOT IN ('"CONTINUOUS"'::jsonb, '"INTERMITTENT"'::jsonb)
                     ORDER BY t.o LIMIT 1;
                    IF v_bad IS NOT NULL THEN
                        ef := format('%smeasurement_configuration[%s]', pfx, v_bad);
                        em := 'must be one of CONTINUOUS, INTERMITTENT';
                    END IF;
                END IF;
            END IF;

        ELSIF v_msg = 'heartbeat' THEN
            IF NOT b ? 'offline_mode_at' THEN
                ef := 'offline_mode_at'; em := 'is required';
            ELSIF jsonb_typeof(b->'offline_mode_at') <> 'string' OR NOT _elmo_is_rfc3339(b->>'offline_mode_at') THEN
                ef := 'offline_mode_at';
                em := 'must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T00:00:00.000+08:00';
            ELSE
                PERFORM (b->>'offline_mode_at')::timestamptz;
            END IF;
        END IF;
    EXCEPTION WHEN data_exception THEN
        IF stage = 'parse' THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
            em := 'malformed JSON: ' || SQLERRM || coalesce(' (' || nullif(v_detail, '') || ')', '');
        ELSIF v_msg = 'heartbeat' THEN
            ef := 'offline_mode_at';
            em := 'is not a valid timestamp: ' || SQLERRM;
        ELSE
            v_wrong := true;                    -- e.g. a block that is no object
            v_detail := SQLERRM;
        END IF;
    END;

    IF v_wrong THEN                             -- slow path: say what is wrong
        SELECT x.field, x.problem INTO ef, em FROM _elmo_blocks_error(b->'forecasted_blocks') x;
        em := coalesce(em, 'invalid body: ' || v_detail);
    END IF;

    IF em IS NOT NULL THEN
        RETURN QUERY SELECT 400, (CASE WHEN coalesce(ef, '') = ''
                                       THEN json_build_object('message', CASE WHEN ef = '' THEN 'body: ' ELSE '' END || em)
                                       ELSE json_build_object('message', ef || ': ' || em, 'field', ef) END)::text,
                            NULL::bigint;
        RETURN;
    END IF;

    -- classification, decided once here (decisions §4)
    IF v_msg = 'update_group_capacity_forecast' THEN
        v_group := b->>'group_id';
        v_tz := _elmo_tz();         -- _elmo_local_day/_elmo_day_start, inlined
        v_day := (v_first AT TIME ZONE v_tz)::date;
        v_kind := CASE WHEN v_n = 24 AND v_hourly AND v_contig
                            AND v_first = (v_day::timestamp AT TIME ZONE v_tz)
                            AND v_last = ((v_day + 1)::timestamp AT TIME ZONE v_tz)
                            AND v_day > (now() AT TIME ZONE v_tz)::date
                       THEN 'day_ahead' ELSE 'emergency' END;
    END IF;

    IF v_kind = 'day_ahead' THEN
        -- an additional_reply when an adjust request is pending: looked up in
        -- the INSERT, one statement less (not for the others: the join costs)
        INSERT INTO elmo_received_message AS r
               (message, method, request_id, correlation_id, raw_body, body,
                group_id, kind, forecast_day, adjust_request_id, used_current_token)
        SELECT v_msg, v_method, $3, $4, coalesce($5, ''), b,
               v_group, CASE WHEN a.id IS NULL THEN v_kind ELSE 'additional_reply' END, v_day, a.id,
               coalesce($6, false)
          FROM (SELECT) one
          LEFT JOIN elmo_adjust_request a ON a.group_id = v_group AND a.day = v_day AND a.state = 'pending'
        ON CONFLICT (request_id) DO NOTHING
        RETURNING r.id INTO v_id;
    ELSE
        INSERT INTO elmo_received_message AS r
               (message, method, request_id, correlation_id, raw_body, body,
                group_id, kind, forecast_day, used_current_token)
        VALUES (v_msg, v_method, $3, $4, coalesce($5, ''), b,
                v_group, v_kind, v_day, coalesce($6, false))
        ON CONFLICT (request_id) DO NOTHING
        RETURNING r.id INTO v_id;
    END IF;

    status := 204;
    message_id := v_id;
    RETURN NEXT;
END
$fn$;

-- ---------------------------------------------------------------- privileges

REVOKE ALL ON FUNCTION _elmo_receive(text, text, text, text, text, boolean) FROM PUBLIC;

-- ==== sql/elmo_oscp/03_apply.sql
-- Inbound, second step: applying a stored message (write forecasts /
-- registration state, fire the CSMS's triggers, NOTIFY).  src/inbound.c runs
-- _elmo_apply in its own subtransaction, so a CSMS trigger that fails loses
-- nothing: the failure is recorded by _elmo_apply_failed and retried by the
-- worker (_elmo_applies_due); what keeps failing is the DBA's to see and settle
-- (elmo_unapplied, elmo_replay, elmo_discard).

-- ---------------------------------------------------------------- application

-- ELMO's base_url resolved against the ELMO URL given to elmo_register
-- (RFC 3986 reference resolution, no dot segments); no trailing '/'.
CREATE FUNCTION _elmo_resolve_url(base text, ref text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(CASE
        WHEN ref ~ '^[A-Za-z][A-Za-z0-9+.-]*:' THEN ref
        WHEN ref LIKE '//%' THEN substring(base FROM '^[A-Za-z][A-Za-z0-9+.-]*:') || ref
        WHEN ref LIKE '/%' THEN substring(base FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*') || ref
        WHEN substring(base FROM '^[^?#]*') ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/]*$'
            THEN substring(base FROM '^[^?#]*') || '/' || ref
        ELSE regexp_replace(substring(base FROM '^[^?#]*'), '[^/]*$', '') || ref
    END, '/') $$;

-- Applies one stored message.  src/inbound.c runs it in a subtransaction; it
-- raises on failure (nothing of it is kept then).
CREATE FUNCTION _elmo_apply(message_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    m       record;
    v_state text;
    v_event text;
    v_fid   bigint;
    v_url   text;
    v_heard text;
    vu      jsonb;
    rb      jsonb;
BEGIN
    -- a CSMS's deferred constraint triggers fire inside this subtransaction
    SET CONSTRAINTS ALL IMMEDIATE;

    -- claim it first: a concurrent elmo_replay waits here, then finds it applied
    UPDATE elmo_received_message r
       SET state = 'applied', applied_at = now(), apply_attempts = r.apply_attempts + 1,
           next_apply_at = NULL
     WHERE r.id = $1 AND r.state IN ('received', 'apply_failed')
    RETURNING r.message, r.method, r.request_id, r.body, r.received_at, r.group_id, r.kind,
              r.forecast_day, r.adjust_request_id, r.used_current_token
         INTO m;
    IF NOT FOUND THEN
        SELECT r.state INTO v_state FROM elmo_received_message r WHERE r.id = $1;
        IF v_state IS NULL THEN
            RAISE EXCEPTION 'elmo_oscp: no received message with id %', $1
                USING ERRCODE = 'no_data_found',
                      HINT = 'elmo_unapplied lists the messages waiting to be applied.';
        END IF;
        RAISE EXCEPTION 'elmo_oscp: received message % is already %', $1, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only messages in state received or apply_failed can be applied.';
    END IF;

    IF m.message = 'update_group_capacity_forecast' THEN
        -- Blocks and forecast in one statement: the aggregate over the blocks'
        -- RETURNING makes every block row exist before the forecast row, and all
        -- AFTER ROW triggers (the CSMS's, on either table) fire at the end of
        -- the statement, seeing both.
        v_fid := nextval('capacity_forecast_id_seq');
        WITH blk AS (
            INSERT INTO capacity_forecast_block
                   (forecast_id, block_no, start_time, end_time, capacity, unit, phase)
            SELECT v_fid, x.n, x.start_time, x.end_time, x.capacity, x.unit, x.phase
              FROM ROWS FROM (jsonb_to_recordset(m.body->'forecasted_blocks')      -- offsets checked
                              AS (capacity numeric, unit text, phase text, start_time timestamptz,
                                  end_time timestamptz))
                   WITH ORDINALITY AS x(capacity, unit, phase, start_time, end_time, n)
            RETURNING capacity_forecast_block.start_time AS s, capacity_forecast_block.end_time AS e
        )
        INSERT INTO capacity_forecast
               (id, group_id, forecast_type, kind, forecast_day, received_at, request_id,
                message_id, payload, starts_at, ends_at)
        SELECT v_fid, m.group_id, m.body->>'type', m.kind, m.forecast_day, m.received_at, m.request_id,
               $1, m.body, min(blk.s), max(blk.e)
          FROM blk;

        IF m.adjust_request_id IS NOT NULL THEN
            UPDATE elmo_adjust_request a
               SET state = 'answered', reply_forecast_id = v_fid, closed_at = now()
             WHERE a.id = m.adjust_request_id AND a.state IN ('pending', 'expired');
        END IF;
        PERFORM pg_notify('elmo_capacity_forecast',
                          json_build_object('id', v_fid, 'group_id', m.group_id, 'kind', m.kind,
                                            'forecast_day', m.forecast_day)::text);

        -- Last heard (and the previous token retired): never waiting for a
        -- session that holds the registration row, and once per batch (its
        -- messages share received_at).  A transaction-local setting remembers
        -- what was done: '<received_at>' = last heard, '<received_at>+' = and
        -- the previous token retired (undone with a failed subtransaction).
        v_state := current_setting('elmo_oscp_inbound.heard', true);
        v_heard := m.received_at::text;         -- once: timestamptz output is not free
        IF v_state IS DISTINCT FROM v_heard || '+'
           AND (v_state IS DISTINCT FROM v_heard OR m.used_current_token) THEN
            UPDATE elmo_registration g
               SET last_heard_at = m.received_at,
                   previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END
             WHERE g.id = (SELECT g2.id FROM elmo_registration g2
                            WHERE g2.id = 1
                              AND (g2.last_heard_at IS NULL OR g2.last_heard_at < m.received_at
                                   OR m.used_current_token AND g2.previous_token IS NOT NULL)
                              FOR UPDATE SKIP LOCKED);
            PERFORM set_config('elmo_oscp_inbound.heard',
                               v_heard || CASE WHEN m.used_current_token THEN '+' ELSE '' END, true);
        END IF;
        RETURN;
    END IF;

    IF m.message = 'heartbeat' THEN
        UPDATE elmo_registration g
           SET elmo_offline_mode_at = (m.body->>'offline_mode_at')::timestamptz,
               last_heard_at = greatest(g.last_heard_at, m.received_at),
               previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END
         WHERE g.id = 1;
        RETURN;
    END IF;

    -- register / handshake: the registration row must exist
    SELECT g.elmo_url INTO v_url FROM elmo_registration g WHERE g.id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'elmo_oscp: ELMO sent % but there is no registration', m.message
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Received message %s (X-Request-ID %s).', $1, m.request_id),
                  HINT = 'Call elmo_register(elmo_url, initial_token) first; then elmo_replay this message.';
    END IF;

    IF m.message = 'register' AND m.method = 'DELETE' THEN
        UPDATE elmo_registration g
           SET state = 'unregistered', connected = false,
               last_heard_at = greatest(g.last_heard_at, m.received_at),
               previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END,
               updated_at = now()
         WHERE g.id = 1
        RETURNING g.state INTO v_state;
        v_event := 'unregister';

    ELSIF m.message = 'register' THEN
        -- the 2.0 entry when offered, else the first
        SELECT t.v INTO vu
          FROM jsonb_array_elements(m.body->'version_url') WITH ORDINALITY AS t(v, o)
         ORDER BY t.v->>'version' = '2.0' DESC, t.o LIMIT 1;
        UPDATE elmo_registration g
           SET elmo_token = m.body->>'token',
               elmo_version = vu->>'version',
               elmo_base_url = _elmo_resolve_url(v_url, vu->>'base_url'),
               state = 'registered', registered_at = m.received_at,
               initial_token = NULL, last_error = NULL,
               last_heard_at = greatest(g.last_heard_at, m.received_at),
               previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END,
               updated_at = now()
         WHERE g.id = 1
        RETURNING g.state INTO v_state;
        v_event := CASE m.method WHEN 'PUT' THEN 'register_update' ELSE 'register' END;

    ELSIF m.message = 'handshake' THEN
        rb := CASE WHEN jsonb_typeof(m.body->'required_behaviour') = 'object' THEN m.body->'required_behaviour'
                   ELSE jsonb_strip_nulls(jsonb_build_object(
                            'heartbeat_interval', m.body->'heartbeat_interval',
                            'measurement_configuration', m.body->'measurement_configuration')) END;
        UPDATE elmo_registration g
           SET required_behaviour = rb,
               heartbeat_interval = round((rb->>'heartbeat_interval')::numeric)::int,
               handshake_request_id = m.request_id,
               connected = false,
               last_heard_at = greatest(g.last_heard_at, m.received_at),
               previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END,
               updated_at = now()
         WHERE g.id = 1
        RETURNING g.state INTO v_state;
        PERFORM _elmo_enqueue('handshake_acknowledge', '{}', NULL, m.request_id);
        v_event := 'handshake';

    ELSE
        RAISE EXCEPTION 'elmo_oscp: cannot apply message "%"', m.message
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM _elmo_registration_changed();
    PERFORM pg_notify('elmo_registration', json_build_object('state', v_state, 'event', v_event)::text);
END
$fn$;

-- Records a failed apply (its subtransaction was rolled back): backoff 2, 4, 8,
-- ... seconds, never more than a minute; NOTIFY elmo_apply_failed.
CREATE FUNCTION _elmo_apply_failed(message_id bigint, sqlstate text, error text) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r record;
BEGIN
    UPDATE elmo_received_message m
       SET state = 'apply_failed', apply_attempts = m.apply_attempts + 1,
           last_sqlstate = $2, last_error = left($3, 2000),
           next_apply_at = clock_timestamp()
                           + least(60, power(2, least(m.apply_attempts + 1, 6))) * interval '1 second'
     WHERE m.id = $1 AND m.state IN ('received', 'apply_failed')
    RETURNING m.id, m.group_id, m.message INTO r;
    IF FOUND THEN
        PERFORM pg_notify('elmo_apply_failed',
                          json_build_object('id', r.id, 'group_id', r.group_id, 'message', r.message,
                                            'sqlstate', $2, 'error', left($3, 1000))::text);
    END IF;
END
$fn$;

-- Unapplied messages due now, in receipt order.
CREATE FUNCTION _elmo_applies_due(lim int) RETURNS SETOF bigint
    LANGUAGE sql VOLATILE AS $$
    SELECT m.id FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed')
       AND (m.next_apply_at IS NULL OR m.next_apply_at <= clock_timestamp())
     ORDER BY m.id
     LIMIT lim $$;

-- When the earliest unapplied message is due (in the past when one is due now);
-- NULL when there is none.
CREATE FUNCTION _elmo_next_apply_at() RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(coalesce(m.next_apply_at, m.received_at)) FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed') $$;

-- For GET /health: registration state and inbound backlog; no token, no URL.
CREATE FUNCTION _elmo_health() RETURNS jsonb
    LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT jsonb_build_object(
                        'state', g.state, 'connected', g.connected, 'registered_at', g.registered_at,
                        'connected_at', g.connected_at, 'last_heard_at', g.last_heard_at,
                        'elmo_version', g.elmo_version, 'heartbeat_interval', g.heartbeat_interval,
                        'elmo_offline_mode_at', g.elmo_offline_mode_at)
                       FROM elmo_registration g WHERE g.id = 1),
                    '{"state": "none", "connected": false}'::jsonb)
           || (SELECT jsonb_build_object('unapplied', count(*),
                                         'apply_failed', count(*) FILTER (WHERE m.state = 'apply_failed'),
                                         'oldest_unapplied_at', min(m.received_at))
                 FROM elmo_received_message m WHERE m.state IN ('received', 'apply_failed')) $$;

-- Purges applied/discarded raw messages older than elmo_oscp.retention (0 or
-- less: keep them).  Forecasts are kept.
CREATE FUNCTION _elmo_retention_inbound() RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_keep interval := coalesce(nullif(current_setting('elmo_oscp.retention', true), ''), '7d')::interval;
BEGIN
    IF v_keep > interval '0' THEN
        DELETE FROM elmo_received_message m
         WHERE m.received_at < now() - v_keep AND m.state IN ('applied', 'discarded');
    END IF;
END
$fn$;

-- ---------------------------------------------------------------- unapplied messages (issue 7)

CREATE VIEW elmo_unapplied AS
    SELECT m.id, m.message, m.group_id, m.kind, m.state, m.apply_attempts, m.last_sqlstate,
           m.last_error, m.received_at, now() - m.received_at AS age, m.next_apply_at
      FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed')
     ORDER BY m.id;

-- Applies an unapplied message now, in the caller's transaction (its errors
-- propagate; the caller's transaction then rolls back and the message stays
-- as it was).  Returns the new state.
CREATE FUNCTION elmo_replay(message_id bigint) RETURNS text
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_state text;
BEGIN
    SELECT m.state INTO v_state FROM elmo_received_message m WHERE m.id = $1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'elmo_oscp: no received message with id %', $1
            USING ERRCODE = 'no_data_found',
                  HINT = 'elmo_unapplied lists the messages waiting to be applied.';
    END IF;
    IF v_state NOT IN ('received', 'apply_failed') THEN
        RAISE EXCEPTION 'elmo_oscp: message % cannot be replayed: it is %', $1, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only messages in state received or apply_failed are applied.',
                  HINT = 'elmo_unapplied lists the messages waiting to be applied.';
    END IF;
    PERFORM _elmo_apply($1);
    RETURN 'applied';
END
$fn$;

-- Gives up on an unapplied message, recording why.
CREATE FUNCTION elmo_discard(message_id bigint, reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_state text;
BEGIN
    UPDATE elmo_received_message m
       SET state = 'discarded', discarded_reason = $2, next_apply_at = NULL
     WHERE m.id = $1 AND m.state IN ('received', 'apply_failed');
    IF NOT FOUND THEN
        SELECT m.state INTO v_state FROM elmo_received_message m WHERE m.id = $1;
        IF v_state IS NULL THEN
            RAISE EXCEPTION 'elmo_oscp: no received message with id %', $1
                USING ERRCODE = 'no_data_found',
                      HINT = 'elmo_unapplied lists the messages waiting to be applied.';
        END IF;
        RAISE EXCEPTION 'elmo_oscp: message % cannot be discarded: it is %', $1, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only messages in state received or apply_failed can be discarded.';
    END IF;
END
$fn$;

-- ---------------------------------------------------------------- privileges

REVOKE ALL ON FUNCTION _elmo_apply(bigint), _elmo_apply_failed(bigint, text, text),
                       _elmo_applies_due(int), _elmo_next_apply_at(), _elmo_health(),
                       _elmo_retention_inbound(),
                       elmo_replay(bigint), elmo_discard(bigint, text)
    FROM PUBLIC;

-- ==== sql/elmo_oscp/04_capacity.sql
-- The capacity in force (decisions §5): resolved from the stored forecasts
-- each time it is read, so it is always ELMO's rule applied to everything
-- received so far.  It is what the CSMS reads: granted to PUBLIC.

-- ---------------------------------------------------------------- capacity in force (decisions §5)

-- What gives the capacity at an instant: the lowest of the plan (the covering
-- block of the most recently received day_ahead/additional_reply among those
-- covering it), every covering emergency block, the contract capacity.  Ties:
-- emergency, then plan, then contract.  All NULL when nothing is known.
-- Capacities are compared as sent (ELMO always sends KW).
CREATE FUNCTION _elmo_capacity_resolve(group_id text, at timestamptz,
        OUT capacity numeric, OUT unit text, OUT kind text, OUT forecast_id bigint)
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode = force_generic_plan    -- planning would cost 5x the lookup
    AS $fn$
BEGIN
    SELECT c.capacity, c.unit, c.kind, c.forecast_id INTO capacity, unit, kind, forecast_id FROM (
        (SELECT b.capacity, b.unit, f.kind, f.id AS forecast_id, 2 AS prio, f.received_at
           FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
          WHERE f.group_id = $1 AND f.kind IN ('day_ahead', 'additional_reply')
            AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
            AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $2
            AND b.start_time <= $2 AND b.end_time > $2
          ORDER BY f.received_at DESC, f.id DESC
          LIMIT 1)
        UNION ALL
        SELECT b.capacity, b.unit, f.kind, f.id, 1, f.received_at
          FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
         WHERE f.group_id = $1 AND f.kind = 'emergency'
           AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
           AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $2
           AND b.start_time <= $2 AND b.end_time > $2
        UNION ALL
        SELECT s.contract_capacity_kw, 'KW', 'contract', NULL::bigint, 3, NULL::timestamptz
          FROM elmo_group_settings s
         WHERE s.group_id = $1 AND s.contract_capacity_kw IS NOT NULL
    ) c
    ORDER BY c.capacity, c.prio, c.received_at DESC NULLS LAST, c.forecast_id DESC
    LIMIT 1;
END
$fn$;

-- The capacity in force for a group at an instant (NULL: nothing known).
CREATE FUNCTION elmo_capacity_at(group_id text, at timestamptz DEFAULT now()) RETURNS numeric
    LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN (_elmo_capacity_resolve($1, $2)).capacity; END $$;

-- The resolved schedule of a local day: contiguous, non-overlapping segments,
-- equal neighbours merged, unknown stretches left out.
CREATE FUNCTION elmo_capacity_schedule(group_id text, day date)
    RETURNS TABLE(start_time timestamptz, end_time timestamptz, capacity numeric, unit text,
                  kind text, forecast_id bigint)
    LANGUAGE sql STABLE AS $$
    WITH d AS (
        SELECT _elmo_day_start($2) AS d0, _elmo_day_start($2 + 1) AS d1
    ), pts AS (
        SELECT d.d0 AS p FROM d
        UNION SELECT d.d1 FROM d
        UNION SELECT v.x
                FROM d, capacity_forecast f
                JOIN capacity_forecast_block b ON b.forecast_id = f.id,
                     LATERAL (VALUES (b.start_time), (b.end_time)) AS v(x)
               WHERE f.group_id = $1
                 AND coalesce(f.ends_at, 'infinity'::timestamptz) > d.d0
                 AND coalesce(f.starts_at, '-infinity'::timestamptz) < d.d1
                 AND v.x > d.d0 AND v.x < d.d1
    ), seg AS (
        SELECT pts.p AS s, lead(pts.p) OVER (ORDER BY pts.p) AS e FROM pts
    ), res AS (
        SELECT seg.s, seg.e, r.capacity AS c, r.unit AS u, r.kind AS k, r.forecast_id AS fid
          FROM seg CROSS JOIN LATERAL _elmo_capacity_resolve($1, seg.s) r
         WHERE seg.e IS NOT NULL AND r.capacity IS NOT NULL
    ), brk AS (
        SELECT res.*,
               CASE WHEN lag(res.e) OVER w = res.s AND lag(res.c) OVER w = res.c
                         AND lag(res.u) OVER w = res.u AND lag(res.k) OVER w = res.k
                         AND lag(res.fid) OVER w IS NOT DISTINCT FROM res.fid
                    THEN 0 ELSE 1 END AS nb
          FROM res WINDOW w AS (ORDER BY res.s)
    ), grp AS (
        SELECT brk.*, sum(brk.nb) OVER (ORDER BY brk.s) AS g FROM brk
    )
    SELECT min(grp.s), max(grp.e), grp.c, grp.u, grp.k, grp.fid
      FROM grp
     GROUP BY grp.g, grp.c, grp.u, grp.k, grp.fid
     ORDER BY 1 $$;

-- The next instant after `at` at which the capacity, kind or forecast in force
-- changes, as far as is known (NULL: no change known).
CREATE FUNCTION _elmo_capacity_until(group_id text, at timestamptz,
                                     capacity numeric, kind text, forecast_id bigint)
    RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT p.t
      FROM (SELECT DISTINCT v.x AS t
              FROM capacity_forecast f
              JOIN capacity_forecast_block b ON b.forecast_id = f.id,
                   LATERAL (VALUES (b.start_time), (b.end_time)) AS v(x)
             WHERE f.group_id = $1 AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
               AND v.x > $2) p
      LEFT JOIN LATERAL _elmo_capacity_resolve($1, p.t) r ON true
     WHERE (r.capacity, r.kind, r.forecast_id) IS DISTINCT FROM ($3, $4, $5)
     ORDER BY p.t
     LIMIT 1 $$;

-- The capacity in force now for every group with forecasts or settings.
CREATE VIEW elmo_capacity_now AS
    WITH RECURSIVE fg(group_id) AS (      -- distinct groups, by skipping through the index
        (SELECT f.group_id FROM capacity_forecast f ORDER BY f.group_id LIMIT 1)
        UNION ALL
        SELECT (SELECT f.group_id FROM capacity_forecast f
                 WHERE f.group_id > fg.group_id ORDER BY f.group_id LIMIT 1)
          FROM fg WHERE fg.group_id IS NOT NULL
    ), g AS (
        SELECT fg.group_id FROM fg WHERE fg.group_id IS NOT NULL
        UNION
        SELECT s.group_id FROM elmo_group_settings s
    )
    SELECT g.group_id, r.capacity, r.kind, r.forecast_id,
           _elmo_capacity_until(g.group_id, now(), r.capacity, r.kind, r.forecast_id) AS until
      FROM g LEFT JOIN LATERAL _elmo_capacity_resolve(g.group_id, now()) r ON true;

-- ---------------------------------------------------------------- privileges

GRANT EXECUTE ON FUNCTION elmo_capacity_at(text, timestamptz), elmo_capacity_schedule(text, date)
    TO PUBLIC;
GRANT SELECT ON elmo_capacity_now TO PUBLIC;

-- ==== sql/elmo_oscp/05_outbox.sql
-- Outbound: every message this CSMS sends to ELMO.
--
-- A public function queues a message (elmo_outbox) in the caller's transaction
-- and wakes the worker at commit.  The worker (src/sender.c) claims due rows
-- (_elmo_claim), sends them with libcurl with no transaction open, and records
-- each outcome (_elmo_record).  Message states:
--
--   queued ──claim──> sending ──2xx──> delivered
--     ^                  │ 429/5xx/network ─> queued (backoff) … or failed (max_attempts, max_retry_age)
--     │                  │ 403 "not connected" ─> waiting_for_handshake
--     │                  │ 401, 403 bad token ─> held   (registration locked_out)
--     │                  └ other 4xx ─> failed   (ELMO's message kept)
--     └── release: waiting_for_handshake when our handshake_acknowledge is accepted;
--                  held when the registration changes (new register, ELMO's register)
--
-- A business message (anything but register, handshake_acknowledge and the
-- testbed's trigger-callback) is never sent before ELMO accepted our
-- handshake_acknowledge: the claim parks it as waiting_for_handshake instead.
-- One message per group is in flight, in queue order; the same X-Request-ID is
-- used on every attempt.
--
-- This file is the outbox itself; the public functions that queue messages are
-- 06_api.sql, the worker's periodic jobs 07_housekeeping.sql.

-- ---------------------------------------------------------------- schema additions

-- md5 of the token the last attempt was authorized with: a 401/403 answer to a
-- token that has been rotated since the request left is a retry, not a lock-out.
ALTER TABLE elmo_outbox ADD COLUMN token_fingerprint text;

-- elmo_status() counts failed messages without scanning delivered history.
CREATE INDEX elmo_outbox_failed ON elmo_outbox (id) WHERE state = 'failed';

-- When the worker last ran its periodic jobs (usage_report, heartbeat, retention).
CREATE TABLE elmo_timer (
    name            text PRIMARY KEY,
    last_run_at     timestamptz NOT NULL
);
REVOKE ALL ON elmo_timer FROM PUBLIC;

-- Groups the last automatic usage report left out, and why (view elmo_usage_skipped).
CREATE TABLE _elmo_usage_skip (
    group_id        text PRIMARY KEY,
    kwh             numeric,
    last_kwh        numeric,
    reason          text NOT NULL,
    skipped_at      timestamptz NOT NULL
);
REVOKE ALL ON _elmo_usage_skip FROM PUBLIC;

-- ---------------------------------------------------------------- helpers

-- A setting of ours, '' and unset read as the default.
CREATE FUNCTION _elmo_conf(name text, dflt text) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(nullif(current_setting('elmo_oscp.' || name, true), ''), dflt) $$;

-- 'abcd…wxyz': enough to tell tokens apart, never enough to use one.
CREATE FUNCTION _elmo_mask(token text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN token IS NULL THEN NULL
                WHEN length(token) < 16 THEN '…'
                ELSE left(token, 4) || '…' || right(token, 4) END
    $$;

-- ELMO refuses these before our handshake_acknowledge was accepted (spec, capture 05a).
CREATE FUNCTION _elmo_is_business(message text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT message NOT IN ('register', 'handshake_acknowledge')
                 AND message NOT LIKE 'trigger-callback/%' $$;

-- The token an outbox row is authorized with (capture 54a/54b: before ELMO's
-- register arrives, the initial token still works).
CREATE FUNCTION _elmo_token_for(r elmo_registration, auth text) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE auth
             WHEN 'initial' THEN coalesce(r.initial_token, r.elmo_token)
             WHEN 'elmo' THEN coalesce(r.elmo_token, r.initial_token)
             WHEN 'ours' THEN r.our_token
           END
    $$;

-- ELMO's error text from its answer {"message": "..." | ["...", ...], "error", "statusCode"}.
CREATE FUNCTION _elmo_error_message(body text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    j jsonb;
BEGIN
    IF body IS NULL OR body !~ '^\s*\{' THEN
        RETURN NULL;
    END IF;
    BEGIN
        j := body::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
    RETURN CASE jsonb_typeof(j -> 'message')
             WHEN 'string' THEN j ->> 'message'
             WHEN 'array' THEN (SELECT string_agg(m, '; ') FROM jsonb_array_elements_text(j -> 'message') m)
           END;
END;
$$;

-- Replace every token this registration knows of by ***.
CREATE FUNCTION _elmo_scrub(s text, r elmo_registration) RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    t text;
BEGIN
    IF s IS NULL OR s = '' OR r IS NULL THEN
        RETURN s;
    END IF;
    FOREACH t IN ARRAY ARRAY[r.our_token, r.previous_token, r.elmo_token, r.initial_token] LOOP
        IF t IS NOT NULL AND length(t) >= 8 THEN
            s := replace(s, t, '***');
        END IF;
    END LOOP;
    RETURN s;
END;
$$;

-- The token a register or trigger-callback body carries, replaced by ***.
CREATE FUNCTION _elmo_scrub_body(message text, body text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    secret text;
    masked text;
BEGIN
    BEGIN
        IF message = 'register' THEN
            secret := body::jsonb ->> 'token';
            masked := '***';
        ELSIF message LIKE 'trigger-callback/%' THEN
            secret := body::jsonb -> 'header' ->> 'authorization';
            masked := 'Token ***';
        END IF;
    EXCEPTION WHEN others THEN
        RETURN body;
    END;
    IF secret IS NULL OR secret IN ('', '***', 'Token ***') THEN
        RETURN body;
    END IF;
    RETURN replace(body, to_json(secret)::text, to_json(masked)::text);
END;
$$;

-- scheme://host[:port] of a URL.
CREATE FUNCTION _elmo_url_origin(url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*') $$;

-- The register body, keys in ELMO's order (capture 02).
CREATE FUNCTION _elmo_register_body(token text, public_url text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT '{"token":' || to_json(token)::text
           || ',"version_url":[{"version":"2.0","base_url":' || to_json(public_url)::text || '}]}'
    $$;

-- Warn when ELMO's base_url rule would refuse our URL (captures 01a–01d).
CREATE FUNCTION _elmo_check_public_url(public_url text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF public_url !~ '^https://[a-zA-Z0-9./-]*[^/]$' THEN
        RAISE WARNING 'the real ELMO will refuse this public_url: %', public_url
            USING DETAIL = 'ELMO accepts only ^https://[a-zA-Z0-9./-]*[^/]$: https, no port, no "_", no trailing "/".',
                  HINT = 'Use the https URL on port 443 that ELMO reaches (a reverse proxy may forward it to elmo_oscp.port); a local simulator may accept it anyway.';
    END IF;
END;
$$;

-- The registration row (locked when for_update); raises when there is none.
-- Business messages do not lock it: the worker updates it.
CREATE FUNCTION _elmo_registration(for_update boolean DEFAULT false) RETURNS elmo_registration
    LANGUAGE plpgsql
    AS $$
DECLARE
    r elmo_registration;
BEGIN
    IF for_update THEN
        SELECT * INTO r FROM elmo_registration WHERE id = 1 FOR UPDATE;
    ELSE
        SELECT * INTO r FROM elmo_registration WHERE id = 1;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'this CSMS is not registered with ELMO'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Messages to ELMO need the URL and tokens a registration provides.',
                  HINT = 'Call elmo_register(elmo_url, initial_token) with the initial token from ELMO''s administrator.';
    END IF;
    RETURN r;
END;
$$;

-- NOTIFY elmo_registration, as the inbound side does: {"state", "event", "connected", "error"}.
CREATE FUNCTION _elmo_notify_registration(event text) RETURNS void
    LANGUAGE sql
    AS $$
    SELECT pg_notify('elmo_registration',
                     json_build_object('state', r.state, 'event', event, 'connected', r.connected,
                                       'error', r.last_error)::text)
      FROM elmo_registration r WHERE r.id = 1
    $$;

-- ---------------------------------------------------------------- delivery machinery

CREATE FUNCTION _elmo_enqueue(message text, body text, group_id text DEFAULT NULL,
                              correlation_id text DEFAULT NULL, method text DEFAULT 'POST',
                              url text DEFAULT NULL, auth text DEFAULT 'elmo')
    RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    new_id bigint;
BEGIN
    IF method NOT IN ('POST', 'PUT', 'DELETE') THEN
        RAISE EXCEPTION 'unsupported method for a message to ELMO: %', method
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO elmo_outbox (message, method, group_id, url, auth, correlation_id, body)
    VALUES (_elmo_enqueue.message, _elmo_enqueue.method, _elmo_enqueue.group_id, _elmo_enqueue.url,
            _elmo_enqueue.auth, _elmo_enqueue.correlation_id, _elmo_enqueue.body)
    RETURNING id INTO new_id;
    PERFORM _elmo_wake();
    RETURN new_id;
END;
$$;

-- Called after anything changed the registration (ELMO's register, handshake,
-- unregister; elmo_register): release what the new state allows.
CREATE FUNCTION _elmo_registration_changed() RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    r elmo_registration;
    n bigint := 0;
    k bigint;
BEGIN
    SELECT * INTO r FROM elmo_registration WHERE id = 1;
    IF NOT FOUND OR r.state = 'locked_out' THEN
        RETURN;
    END IF;
    UPDATE elmo_outbox SET state = 'queued', next_attempt_at = now()
     WHERE state = 'held';
    GET DIAGNOSTICS n = ROW_COUNT;
    IF r.connected THEN
        UPDATE elmo_outbox SET state = 'queued', next_attempt_at = now()
         WHERE state = 'waiting_for_handshake';
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END IF;
    IF n > 0 THEN
        PERFORM _elmo_wake();
    END IF;
END;
$$;

-- Due messages, oldest first; per group only the oldest undelivered one, and
-- register messages one at a time in order.  Marks them 'sending'.
CREATE FUNCTION _elmo_claim(lim int)
    RETURNS TABLE(id bigint, method text, url text, authorization text,
                  request_id text, correlation_id text, body text)
    LANGUAGE plpgsql
    -- A queue's statistics are always stale: walk the due index in order and
    -- stop after lim rows, never sort every due row.
    SET enable_seqscan = off SET enable_bitmapscan = off
    AS $$
DECLARE
    r elmo_registration;
    have_reg boolean;
    locked boolean;
    connected boolean;
BEGIN
    SELECT * INTO r FROM elmo_registration g WHERE g.id = 1;
    have_reg := FOUND;
    locked := NOT have_reg OR r.state = 'locked_out';
    connected := have_reg AND r.connected;

    -- Park what may not go now: no retry storm against ELMO's 403.
    IF locked OR NOT connected THEN
        UPDATE elmo_outbox o
           SET state = CASE WHEN NOT have_reg OR (locked AND o.auth <> 'ours') THEN 'held'
                            ELSE 'waiting_for_handshake' END
         WHERE o.state = 'queued' AND o.next_attempt_at <= now()
           AND (NOT have_reg
                OR (locked AND o.auth <> 'ours')
                OR (NOT connected AND _elmo_is_business(o.message)));
    END IF;

    RETURN QUERY
    WITH cand AS (
        SELECT o.id
          FROM elmo_outbox o
         WHERE o.state = 'queued' AND o.next_attempt_at <= now()
           AND have_reg
           AND NOT (locked AND o.auth <> 'ours')
           AND (connected OR NOT _elmo_is_business(o.message))
           AND (o.group_id IS NULL OR NOT EXISTS (
                   SELECT 1 FROM elmo_outbox p
                    WHERE p.group_id = o.group_id AND p.id < o.id
                      AND p.state NOT IN ('delivered', 'failed')))
           AND (o.message <> 'register' OR NOT EXISTS (
                   SELECT 1 FROM elmo_outbox p
                    WHERE p.group_id IS NULL AND p.message = 'register' AND p.id < o.id
                      AND p.state NOT IN ('delivered', 'failed')))
         ORDER BY o.next_attempt_at, o.id
         LIMIT lim
           FOR UPDATE OF o SKIP LOCKED
    ), upd AS (
        UPDATE elmo_outbox o
           SET state = 'sending', attempts = o.attempts + 1, sent_at = now(),
               token_fingerprint = md5(_elmo_token_for(r, o.auth))
          FROM cand
         WHERE o.id = cand.id
        RETURNING o.id, o.method, o.message, o.url, o.auth, o.request_id, o.correlation_id, o.body
    )
    SELECT u.id, u.method,
           coalesce(u.url, rtrim(coalesce(r.elmo_base_url, r.elmo_url), '/') || '/' || u.message),
           'Token ' || _elmo_token_for(r, u.auth),
           u.request_id, u.correlation_id, u.body
      FROM upd u;
END;
$$;

-- Exponential backoff with jitter: 0.5–1 s after the first attempt, doubling, at most 5 min.
CREATE FUNCTION _elmo_backoff(attempts int) RETURNS interval
    LANGUAGE sql VOLATILE
    AS $$
    SELECT make_interval(secs => least(300.0, power(2.0, greatest(attempts, 1) - 1))
                                 * (0.5 + random() * 0.5))
    $$;

-- One outcome (http_status 0: no HTTP answer; error: curl's message).
CREATE FUNCTION _elmo_record(id bigint, http_status int, error text, response_body text, timing jsonb)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    m elmo_outbox;
    r elmo_registration;
    resp text := nullif(left(_elmo_record.response_body, 8192), '');
    elmo_msg text;
    err text;
    st int := coalesce(_elmo_record.http_status, 0);
BEGIN
    -- ---- 2xx: delivered (the hot path: one statement)
    IF st BETWEEN 200 AND 299 THEN
        IF resp IS NOT NULL THEN
            SELECT * INTO r FROM elmo_registration g WHERE g.id = 1;
            resp := left(_elmo_scrub(resp, r), 2048);
        END IF;
        UPDATE elmo_outbox o
           SET state = 'delivered', last_status = st, last_error = NULL, response_body = resp,
               timing = _elmo_record.timing, delivered_at = now(),
               body = CASE WHEN o.message = 'register' OR o.message LIKE 'trigger-callback/%'
                           THEN _elmo_scrub_body(o.message, o.body) ELSE o.body END
         WHERE o.id = _elmo_record.id AND o.state = 'sending'
        RETURNING o.* INTO m;
        IF NOT FOUND THEN
            RETURN;     -- purged, or recorded already (a recovery raced us)
        END IF;
        IF m.message = 'handshake_acknowledge' THEN
            UPDATE elmo_registration g
               SET connected = true, connected_at = now(), updated_at = now(),
                   last_error = CASE WHEN g.state = 'locked_out' THEN g.last_error END
             WHERE g.id = 1;
            PERFORM _elmo_registration_changed();
            PERFORM _elmo_notify_registration('connected');
        ELSIF m.message = 'register' AND m.method = 'DELETE' THEN
            UPDATE elmo_registration g
               SET state = 'unregistered', connected = false, updated_at = now(), last_error = NULL
             WHERE g.id = 1;
            PERFORM _elmo_notify_registration('unregistered');
        END IF;
        RETURN;
    END IF;

    SELECT * INTO m FROM elmo_outbox o WHERE o.id = _elmo_record.id FOR UPDATE;
    IF NOT FOUND OR m.state <> 'sending' THEN
        RETURN;
    END IF;
    SELECT * INTO r FROM elmo_registration g WHERE g.id = 1;
    IF resp IS NOT NULL THEN
        resp := left(_elmo_scrub(resp, r), 2048);
    END IF;

    elmo_msg := _elmo_error_message(resp);
    err := CASE WHEN st = 0 THEN coalesce(nullif(_elmo_record.error, ''), 'no answer')
                ELSE 'HTTP ' || st || ': ' || coalesce(elmo_msg, nullif(left(resp, 200), ''),
                                                         nullif(_elmo_record.error, ''), 'no body') END;

    -- ---- 429, 5xx, no answer: retry with backoff, until the limits
    IF st = 0 OR st = 429 OR st >= 500 THEN
        IF m.attempts >= _elmo_conf('max_attempts', '50')::int
           OR now() - m.created_at >= _elmo_conf('max_retry_age', '1d')::interval THEN
            err := 'gave up after ' || m.attempts || ' attempts: ' || err;
        ELSE
            UPDATE elmo_outbox o
               SET state = 'queued', next_attempt_at = now() + _elmo_backoff(m.attempts),
                   last_status = nullif(st, 0), last_error = err, response_body = resp,
                   timing = _elmo_record.timing
             WHERE o.id = m.id;
            RETURN;
        END IF;

    -- ---- 401, 403 bad token: locked out (unless the token changed meanwhile)
    ELSIF st = 401 OR (st = 403 AND (elmo_msg ILIKE '%Invalid authorization token%'
                                     OR elmo_msg ILIKE '%authorization token prefix%')) THEN
        IF m.token_fingerprint IS DISTINCT FROM md5(_elmo_token_for(r, m.auth)) THEN
            UPDATE elmo_outbox o
               SET state = 'queued', next_attempt_at = now(), last_status = st,
                   last_error = err || ' (the token changed since: retrying with the new one)',
                   response_body = resp, timing = _elmo_record.timing
             WHERE o.id = m.id;
            RETURN;
        END IF;
        UPDATE elmo_outbox o
           SET state = 'held', last_status = st, last_error = err, response_body = resp,
               timing = _elmo_record.timing
         WHERE o.id = m.id;
        UPDATE elmo_outbox o SET state = 'held'
         WHERE o.state IN ('queued', 'waiting_for_handshake') AND o.auth <> 'ours';
        UPDATE elmo_registration g
           SET state = 'locked_out', updated_at = now(),
               last_error = 'ELMO refused our ' || m.message || ' (' || err || '). ELMO no longer accepts '
                            || CASE m.auth WHEN 'initial' THEN 'the initial token' ELSE 'the token it gave us' END
                            || '. Ask ELMO''s administrator for a new initial token, then run '
                            || 'SELECT elmo_register(' || quote_literal(g.elmo_url) || ', ''<new initial token>'');'
         WHERE g.id = 1;
        PERFORM _elmo_notify_registration('locked_out');
        RETURN;

    -- ---- 403 not connected: wait for our handshake_acknowledge
    ELSIF st = 403 AND elmo_msg ILIKE '%is not connected%' THEN
        IF r.connected AND r.connected_at > m.sent_at THEN
            -- our acknowledge was accepted while this one was on its way: go again
            UPDATE elmo_outbox o
               SET state = 'queued', next_attempt_at = now(), last_status = st, last_error = err,
                   response_body = resp, timing = _elmo_record.timing
             WHERE o.id = m.id;
            RETURN;
        END IF;
        UPDATE elmo_outbox o
           SET state = 'waiting_for_handshake', last_status = st, last_error = err,
               response_body = resp, timing = _elmo_record.timing
         WHERE o.id = m.id;
        IF r.connected THEN
            UPDATE elmo_registration g
               SET connected = false, updated_at = now(),
                   last_error = 'ELMO says this CSMS is not connected (' || err || ')'
             WHERE g.id = 1;
            PERFORM _elmo_notify_registration('not_connected');
        END IF;
        RETURN;
    END IF;

    -- ---- anything else (400, 404, …) or out of attempts: failed
    UPDATE elmo_outbox o
       SET state = 'failed', last_status = nullif(st, 0), last_error = err, response_body = resp,
           timing = _elmo_record.timing,
           body = CASE WHEN m.message = 'register' OR m.message LIKE 'trigger-callback/%'
                       THEN _elmo_scrub_body(m.message, o.body) ELSE o.body END
     WHERE o.id = m.id;
    IF m.message = 'adjust_group_capacity_forecast' THEN
        UPDATE elmo_adjust_request a SET state = 'failed', closed_at = now()
         WHERE a.outbox_id = m.id AND a.state = 'pending';
    ELSIF m.message = 'register' AND m.id = r.register_outbox_id THEN
        UPDATE elmo_registration g
           SET last_error = 'ELMO did not accept our register (' || err || ')', updated_at = now()
         WHERE g.id = 1;
        PERFORM _elmo_notify_registration('register_failed');
    END IF;
END;
$$;

-- The next retry due after now (NULL: none).  Rows due now are the claim's business.
CREATE FUNCTION _elmo_next_attempt_at() RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT min(next_attempt_at) FROM elmo_outbox WHERE state = 'queued' AND next_attempt_at > now() $$;

-- At worker start: what was in flight when the worker stopped goes again (same X-Request-ID).
CREATE FUNCTION _elmo_recover() RETURNS void
    LANGUAGE sql
    AS $$ UPDATE elmo_outbox SET state = 'queued', next_attempt_at = now() WHERE state = 'sending' $$;

-- ---------------------------------------------------------------- privileges

-- Machinery: the public functions and the worker call it, nobody else.
REVOKE ALL ON FUNCTION
    _elmo_enqueue(text, text, text, text, text, text, text), _elmo_registration_changed(),
    _elmo_claim(int), _elmo_record(bigint, int, text, text, jsonb), _elmo_recover(),
    _elmo_registration(boolean)
  FROM PUBLIC;

-- ==== sql/elmo_oscp/06_api.sql
-- What the CSMS calls to talk to ELMO, and what its DBA reads.  Each public
-- function checks its arguments and ELMO's rules here, in the caller's
-- transaction, so a mistake is an error the caller sees at once rather than
-- a message ELMO refuses later; the message itself only joins the outbox
-- (05_outbox.sql), and leaves after commit.

-- ---------------------------------------------------------------- registration

-- Register with ELMO (decisions §3).  With an initial token: a first
-- registration, or one after ELMO's administrator issued a new initial token.
-- Without: a re-registration authorized with ELMO's current token.  Either way
-- a new token of ours, which ELMO must present from its register callback on.
CREATE FUNCTION elmo_register(elmo_url text, initial_token text DEFAULT NULL, public_url text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    r elmo_registration;
    have_reg boolean;
    url text := rtrim(btrim(elmo_register.elmo_url), '/');
    pub text := coalesce(nullif(btrim(elmo_register.public_url), ''), _elmo_conf('public_url', NULL));
    initial text := nullif(btrim(elmo_register.initial_token), '');
    auth text;
    tok text;
    prev text;
    old_reg elmo_outbox;
    new_id bigint;
BEGIN
    PERFORM _elmo_wake();
    IF url IS NULL OR url !~* '^https?://[^/?#]+' THEN
        RAISE EXCEPTION 'elmo_url must be ELMO''s OSCP base URL, got %', coalesce(quote_literal(elmo_register.elmo_url), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'It includes ELMO''s OSCP prefix; register is sent to elmo_url || ''/register''.',
                  HINT = 'For the testbed: SELECT elmo_register(''https://elmo-oscp-testbed.plato-io.com/oscp/2.0'', ''<initial token>'');';
    END IF;
    IF pub IS NULL THEN
        RAISE EXCEPTION 'no public URL for this CSMS'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'ELMO calls this CSMS back at the base_url sent in register.',
                  HINT = 'Pass public_url, or set elmo_oscp.public_url (for example https://csms.example.com/oscp/fp/2.0) and reload.';
    END IF;
    pub := rtrim(pub, '/');

    SELECT * INTO r FROM elmo_registration g WHERE g.id = 1 FOR UPDATE;
    have_reg := FOUND;
    IF initial IS NOT NULL THEN
        auth := 'initial';
    ELSIF have_reg AND coalesce(r.elmo_token, r.initial_token) IS NOT NULL THEN
        auth := 'elmo';
        IF r.elmo_url IS DISTINCT FROM url THEN
            RAISE WARNING 'registering with % using the token of %', url, r.elmo_url
                USING HINT = 'A different ELMO needs its own initial token: elmo_register(elmo_url, initial_token).';
        END IF;
    ELSE
        RAISE EXCEPTION 'an initial token is needed to register with ELMO'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE WHEN have_reg THEN 'ELMO has given this CSMS no token to re-register with.'
                                ELSE 'This CSMS has never registered.' END,
                  HINT = 'Ask ELMO''s administrator for an initial token, then SELECT elmo_register(elmo_url, initial_token);';
    END IF;

    PERFORM _elmo_check_public_url(pub);
    tok := _elmo_random_token();
    IF have_reg THEN
        -- ELMO may hold our current token only if a register carrying it left
        -- at least once; else the token ELMO holds is still the previous one.
        SELECT * INTO old_reg FROM elmo_outbox o WHERE o.id = r.register_outbox_id;
        prev := CASE WHEN old_reg.id IS NULL OR old_reg.attempts > 0 OR old_reg.state = 'delivered'
                     THEN r.our_token ELSE r.previous_token END;
        -- a register not sent yet is superseded by this one
        UPDATE elmo_outbox o
           SET state = 'failed', last_error = 'superseded by a later elmo_register',
               body = _elmo_scrub_body(o.message, o.body)
         WHERE o.message = 'register' AND o.method IN ('POST', 'PUT')
           AND o.state IN ('queued', 'waiting_for_handshake', 'held');
    END IF;

    new_id := _elmo_enqueue('register', _elmo_register_body(tok, pub), NULL, NULL, 'POST',
                            url || '/register', auth);

    INSERT INTO elmo_registration AS g (id, state, elmo_url, public_url, initial_token, our_token,
                                        previous_token, register_outbox_id, requested_at, updated_at)
    VALUES (1, 'pending', url, pub, initial, tok, prev, new_id, now(), now())
    ON CONFLICT (id) DO UPDATE
       SET state = 'pending', elmo_url = EXCLUDED.elmo_url, public_url = EXCLUDED.public_url,
           our_token = EXCLUDED.our_token, previous_token = EXCLUDED.previous_token,
           register_outbox_id = EXCLUDED.register_outbox_id,
           requested_at = now(), updated_at = now(), last_error = NULL,
           -- a new initial token means a new start on ELMO's side
           initial_token = coalesce(EXCLUDED.initial_token, g.initial_token),
           elmo_token = CASE WHEN EXCLUDED.initial_token IS NOT NULL THEN NULL ELSE g.elmo_token END,
           elmo_base_url = CASE WHEN EXCLUDED.initial_token IS NOT NULL THEN NULL ELSE g.elmo_base_url END,
           elmo_version = CASE WHEN EXCLUDED.initial_token IS NOT NULL THEN NULL ELSE g.elmo_version END,
           connected = CASE WHEN EXCLUDED.initial_token IS NOT NULL THEN false ELSE g.connected END;
    PERFORM _elmo_registration_changed();
    PERFORM _elmo_notify_registration('register_requested');
    RETURN new_id;
END;
$$;

-- PUT register: tell ELMO a new token of ours and/or a new public URL (capture 50a, silent).
CREATE FUNCTION elmo_update_registration(public_url text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    r elmo_registration;
    pub text;
    tok text := _elmo_random_token();
    new_id bigint;
BEGIN
    PERFORM _elmo_wake();
    r := _elmo_registration(true);
    IF r.state IN ('unregistered', 'locked_out') OR r.elmo_token IS NULL THEN
        RAISE EXCEPTION 'cannot update a registration that is %', CASE WHEN r.elmo_token IS NULL AND r.state = 'pending'
                                                                      THEN 'still pending' ELSE r.state END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'PUT register is authorized with the token ELMO gave this CSMS in its register.',
                  HINT = 'See elmo_registration_status; elmo_register(elmo_url, initial_token) starts over.';
    END IF;
    pub := rtrim(coalesce(nullif(btrim(elmo_update_registration.public_url), ''), r.public_url), '/');
    PERFORM _elmo_check_public_url(pub);
    new_id := _elmo_enqueue('register', _elmo_register_body(tok, pub), NULL, NULL, 'PUT', NULL, 'elmo');
    UPDATE elmo_registration g
       SET public_url = pub, our_token = tok, previous_token = r.our_token, updated_at = now()
     WHERE g.id = 1;
    RETURN new_id;
END;
$$;

-- DELETE register, with the full register body ELMO requires (captures 51a, 51c).
CREATE FUNCTION elmo_unregister() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    r elmo_registration;
BEGIN
    PERFORM _elmo_wake();
    r := _elmo_registration(true);
    IF r.state = 'unregistered' THEN
        RAISE EXCEPTION 'this CSMS is already unregistered'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'ELMO accepted our DELETE register.',
                  HINT = 'elmo_register(elmo_url, initial_token) registers again.';
    END IF;
    RETURN _elmo_enqueue('register', _elmo_register_body(r.our_token, r.public_url), NULL, NULL,
                         'DELETE', NULL, 'elmo');
END;
$$;

-- ---------------------------------------------------------------- business messages

-- A station id as given, trimmed; raises when there is none.
CREATE FUNCTION _elmo_group_id(group_id text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
    IF nullif(btrim(group_id), '') IS NULL THEN
        RAISE EXCEPTION 'group_id is required'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'group_id is the station id ELMO assigned.',
                  HINT = 'Use the group_id of ELMO''s forecasts (capacity_forecast.group_id).';
    END IF;
    RETURN btrim(group_id);
END $$;

-- ELMO's negotiation rules for an adjust request on day, asked at instant at
-- (decisions §7).  Raises, or warns; a separate function so tests need no clock.
CREATE FUNCTION _elmo_adjust_guard(group_id text, day date, at timestamptz) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    enforce boolean := _elmo_conf('enforce_deadlines', 'on')::boolean;
    deadline time := _elmo_conf('adjust_deadline', '14:00')::time;
    today date := _elmo_local_day(at);
    local_time time := (at AT TIME ZONE _elmo_tz())::time;
BEGIN
    IF enforce THEN
        IF day IS DISTINCT FROM today + 1 THEN
            RAISE EXCEPTION 'ELMO negotiates only tomorrow (%), not %', today + 1, day
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Today is %s in %s.', today, _elmo_tz()),
                      HINT = 'Omit day to ask for tomorrow; tests may SET elmo_oscp.enforce_deadlines = off.';
        END IF;
        IF local_time >= deadline THEN
            RAISE EXCEPTION 'too late to ask ELMO for more capacity for %', day
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('Requests for tomorrow are taken until %s (%s); it is %s.',
                                      to_char(deadline, 'HH24:MI'), _elmo_tz(), to_char(local_time, 'HH24:MI:SS')),
                      HINT = 'ELMO''s 10:00 plan stays in force for tomorrow; an emergency may still change it.';
        END IF;
        IF EXISTS (SELECT 1 FROM elmo_adjust_request a
                    WHERE a.group_id = _elmo_adjust_guard.group_id AND a.day = _elmo_adjust_guard.day
                      AND a.state IN ('pending', 'answered')) THEN
            RAISE EXCEPTION 'an adjust request for group % and % was already sent', group_id, day
                USING ERRCODE = 'unique_violation',
                      DETAIL = 'ELMO takes one request per station and day and answers 400 to a second one.',
                      HINT = 'See elmo_adjust_request for its state; ELMO answers it by 16:00.';
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM capacity_forecast f
                    WHERE f.group_id = _elmo_adjust_guard.group_id AND f.forecast_day = _elmo_adjust_guard.day
                      AND f.kind = 'day_ahead') THEN
        RAISE WARNING 'no day-ahead assignment for group % and % was received', group_id, day
            USING DETAIL = 'ELMO answers 404 to a request without its 10:00 assignment; the message then fails.',
                  HINT = 'ELMO sends the assignment for tomorrow before 10:00 local time.';
    END IF;
END;
$$;

-- adjust_group_capacity_forecast: 24 hourly capacities (kW) for one local day.
CREATE FUNCTION elmo_adjust_capacity(group_id text, hourly_kw numeric[], day date DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    d date := coalesce(elmo_adjust_capacity.day, _elmo_local_day(now()) + 1);
    g text;
    body text;
    new_id bigint;
BEGIN
    PERFORM _elmo_wake();
    g := _elmo_group_id(elmo_adjust_capacity.group_id);
    IF hourly_kw IS NULL OR array_ndims(hourly_kw) IS DISTINCT FROM 1 OR cardinality(hourly_kw) <> 24 THEN
        RAISE EXCEPTION 'hourly_kw must hold exactly 24 values, got %', coalesce(cardinality(hourly_kw), 0)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'One capacity per hour of the local day, 00:00 to 24:00.',
                  HINT = 'elmo_adjust_capacity(group_id, capacity_kw) asks the same capacity for every hour.';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(hourly_kw) v WHERE v IS NULL OR v < 0 OR v IN ('NaN', 'Infinity')) THEN
        RAISE EXCEPTION 'capacities must be finite and not negative: %', hourly_kw
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'ELMO reads them as kW.',
                  HINT = 'Pass absolute capacities in kW, not deltas.';
    END IF;
    PERFORM _elmo_registration();
    PERFORM _elmo_adjust_guard(g, d, now());
    IF EXISTS (SELECT 1 FROM unnest(hourly_kw) v WHERE v <> trunc(v)) THEN
        RAISE WARNING 'ELMO rounds capacities to whole kW: %', hourly_kw
            USING DETAIL = 'Its 16:00 reply carries the rounded values.',
                  HINT = 'Pass whole kW to get exactly what you ask for.';
    END IF;
    -- with the guards off, a new request replaces a pending one
    UPDATE elmo_adjust_request a SET state = 'expired', closed_at = now()
     WHERE a.group_id = g AND a.day = d AND a.state = 'pending';

    SELECT '{"group_id":' || to_json(g)::text || ',"type":"CONSUMPTION","forecasted_blocks":['
           || string_agg('{"capacity":' || hourly_kw[h + 1]::text
                         || ',"phase":"ALL","unit":"KW","start_time":"'
                         || _elmo_ts((d::timestamp + make_interval(hours => h)) AT TIME ZONE _elmo_tz())
                         || '","end_time":"'
                         || _elmo_ts((d::timestamp + make_interval(hours => h + 1)) AT TIME ZONE _elmo_tz())
                         || '"}', ',' ORDER BY h)
           || ']}'
      INTO body
      FROM generate_series(0, 23) h;
    new_id := _elmo_enqueue('adjust_group_capacity_forecast', body, g);
    INSERT INTO elmo_adjust_request (group_id, day, outbox_id, hourly_kw)
    VALUES (g, d, new_id, hourly_kw);
    RETURN new_id;
END;
$$;

CREATE FUNCTION elmo_adjust_capacity(group_id text, capacity_kw numeric, day date DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$ SELECT elmo_adjust_capacity(group_id, array_fill(capacity_kw, ARRAY[24]), day) $$;

-- update_group_measurements body for one reading (spec: ELMO's example).
CREATE FUNCTION _elmo_usage_body(group_id text, kwh numeric, measured_at timestamptz) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT '{"group_id":' || to_json(group_id)::text || ',"measurements":[{"value":' || kwh::text
           || ',"phase":"ALL","unit":"KWH","direction":"IMPORT","measure_time":"' || _elmo_ts(measured_at)
           || '","energy_type":"TOTAL"}]}'
    $$;

-- update_group_measurements: the station's lifetime cumulative kWh (decisions §8).
CREATE FUNCTION elmo_report_usage(group_id text, kwh numeric, measured_at timestamptz DEFAULT now(),
                                  allow_decrease boolean DEFAULT false)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    g text;
    prior elmo_usage_last;
    new_id bigint;
BEGIN
    PERFORM _elmo_wake();
    g := _elmo_group_id(elmo_report_usage.group_id);
    IF kwh IS NULL OR kwh IN ('NaN', 'Infinity', '-Infinity') OR kwh < 0 THEN
        RAISE EXCEPTION 'kwh must be a finite reading of at least 0, got %', coalesce(kwh::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'ELMO reads the value as the station''s lifetime cumulative energy in kWh.',
                  HINT = 'Report the meter''s cumulative reading, not the energy of an interval.';
    END IF;
    IF measured_at IS NULL THEN
        RAISE EXCEPTION 'measured_at is required'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It becomes measure_time.',
                  HINT = 'Omit it to report the reading as of now().';
    END IF;
    PERFORM _elmo_registration();
    SELECT * INTO prior FROM elmo_usage_last l WHERE l.group_id = g FOR UPDATE;
    IF FOUND AND kwh < prior.kwh AND NOT coalesce(allow_decrease, false) THEN
        RAISE EXCEPTION 'reading for group % went down: % kWh after % kWh', g, kwh, prior.kwh
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The last reading reported was %s kWh measured at %s.', prior.kwh, prior.measured_at),
                  HINT = 'ELMO expects a cumulative reading that never goes down. If the meter was replaced, call again with allow_decrease => true.';
    END IF;
    new_id := _elmo_enqueue('update_group_measurements', _elmo_usage_body(g, kwh, measured_at), g);
    INSERT INTO elmo_usage_last AS l (group_id, kwh, measured_at, outbox_id)
    VALUES (g, kwh, measured_at, new_id)
    ON CONFLICT ON CONSTRAINT elmo_usage_last_pkey DO UPDATE
       SET kwh = EXCLUDED.kwh, measured_at = EXCLUDED.measured_at, outbox_id = EXCLUDED.outbox_id;
    RETURN new_id;
END;
$$;

-- group_capacity_compliance_error about one forecast: no group_id in the body,
-- X-Correlation-ID = that forecast's X-Request-ID (captures 09a–09c).
CREATE FUNCTION elmo_report_compliance_error(forecast_id bigint, message text, blocks jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    f capacity_forecast;
    body text;
    blocks_text text;
BEGIN
    PERFORM _elmo_wake();
    SELECT * INTO f FROM capacity_forecast c WHERE c.id = forecast_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no capacity forecast with id %', forecast_id
            USING ERRCODE = 'no_data_found', DETAIL = 'The error names the forecast by its X-Request-ID.',
                  HINT = 'Pass capacity_forecast.id of the forecast this CSMS cannot comply with.';
    END IF;
    IF message IS NULL OR btrim(message) = '' THEN
        RAISE EXCEPTION 'message must not be empty'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'ELMO answers 400 to an empty message.',
                  HINT = 'Say why the forecast cannot be complied with.';
    END IF;
    IF blocks IS NOT NULL AND jsonb_typeof(blocks) <> 'array' THEN
        RAISE EXCEPTION 'blocks must be a JSON array of forecasted blocks'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Each block: capacity, phase, unit, start_time, end_time.',
                  HINT = 'For example the forecast''s own: (SELECT payload->''forecasted_blocks'' FROM capacity_forecast WHERE id = …).';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(blocks) b WHERE jsonb_typeof(b) <> 'object') THEN
        RAISE EXCEPTION 'each block must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Each block: capacity, phase, unit, start_time, end_time.',
                  HINT = 'Pass blocks shaped like those of update_group_capacity_forecast.';
    END IF;
    -- OSCP's key order for each block, other keys after
    SELECT string_agg(b.txt, ',' ORDER BY b.n) INTO blocks_text
      FROM (SELECT e.n, '{' || string_agg(to_json(kv.key)::text || ':' || kv.value::text, ','
                                          ORDER BY array_position(ARRAY['capacity', 'phase', 'unit', 'start_time', 'end_time'], kv.key),
                                                   kv.key) || '}' AS txt
              FROM jsonb_array_elements(blocks) WITH ORDINALITY e(blk, n), jsonb_each(e.blk) kv
             GROUP BY e.n) b;
    body := '{"message":' || to_json(message)::text
            || CASE WHEN blocks_text IS NOT NULL THEN ',"forecasted_blocks":[' || blocks_text || ']' ELSE '' END
            || '}';
    RETURN _elmo_enqueue('group_capacity_compliance_error', body, f.group_id, f.request_id);
END;
$$;

-- The testbed's trigger-callback API: makes ELMO's simulator call this CSMS.
-- The request carries our own token (auth 'ours'), which the body hands over anyway.
CREATE FUNCTION elmo_trigger_callback(name text, purpose text DEFAULT NULL, group_id text DEFAULT NULL,
                                      capacity_kw numeric DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    r elmo_registration;
    base text;
    body text;
BEGIN
    PERFORM _elmo_wake();
    IF name IS NULL OR name !~ '^[a-z_]+$' THEN
        RAISE EXCEPTION 'invalid callback name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The testbed triggers register, handshake and update_group_capacity_forecast.',
                  HINT = 'For example elmo_trigger_callback(''update_group_capacity_forecast'', ''emergency_assign_capacity'', ''<group_id>'', 50).';
    END IF;
    IF capacity_kw IS NOT NULL AND (capacity_kw < 0 OR capacity_kw IN ('NaN', 'Infinity')) THEN
        RAISE EXCEPTION 'capacity_kw must be finite and not negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It becomes the forecast''s capacity in kW.',
                  HINT = 'Pass a capacity in kW.';
    END IF;
    r := _elmo_registration();
    base := coalesce(_elmo_conf('trigger_callback_url', NULL),
                     _elmo_url_origin(r.elmo_url) || '/trigger-callback/2.0');
    body := '{"callback_url":' || to_json(r.public_url || '/' || name)::text
            || ',"header":{"authorization":' || to_json('Token ' || r.our_token)::text || '}'
            || CASE WHEN purpose IS NOT NULL THEN ',"purpose":' || to_json(purpose)::text ELSE '' END
            || CASE WHEN group_id IS NOT NULL THEN ',"group_id":' || to_json(group_id)::text ELSE '' END
            || CASE WHEN capacity_kw IS NOT NULL THEN ',"capacity":' || capacity_kw::text ELSE '' END
            || '}';
    RETURN _elmo_enqueue('trigger-callback/' || name, body, NULL, NULL, 'POST',
                         rtrim(base, '/') || '/' || name, 'ours');
END;
$$;

-- ---------------------------------------------------------------- what a DBA reads

CREATE VIEW elmo_registration_status AS
SELECT coalesce(r.state, 'not_registered') AS state,
       coalesce(r.connected, false) AS connected,
       r.elmo_url, r.public_url, r.elmo_base_url, r.elmo_version,
       _elmo_mask(r.our_token) AS our_token,
       _elmo_mask(r.previous_token) AS previous_token,
       _elmo_mask(r.elmo_token) AS elmo_token,
       _elmo_mask(r.initial_token) AS initial_token,
       r.heartbeat_interval, r.requested_at, r.registered_at, r.connected_at, r.last_heard_at,
       o.state AS register_message_state, o.attempts AS register_attempts,
       r.last_error,
       CASE
         WHEN r.id IS NULL THEN
           'Not registered. Get an initial token from ELMO''s administrator, then run '
           || 'SELECT elmo_register(''<ELMO OSCP URL>'', ''<initial token>'');'
         WHEN r.state = 'locked_out' THEN
           'ELMO refuses our token, so messages to ELMO are held. Ask ELMO''s administrator for a new initial token, '
           || 'then run SELECT elmo_register(' || quote_literal(r.elmo_url) || ', ''<new initial token>'');'
         WHEN r.state = 'unregistered' THEN
           'Unregistered: nothing is sent to ELMO. To register again run SELECT elmo_register('
           || quote_literal(r.elmo_url) || ', ''<initial token>'');'
         WHEN r.state = 'pending' AND o.state = 'failed' THEN
           'ELMO did not accept our register (' || coalesce(o.last_error, 'see elmo_outbox') || '). Fix the cause '
           || '(ELMO wants an https public_url without port, "_" or trailing "/") and run elmo_register again.'
         WHEN r.state = 'pending' AND o.state IN ('queued', 'sending') AND o.attempts > 0 THEN
           'Our register has not reached ELMO yet (attempt ' || o.attempts || ': '
           || coalesce(o.last_error, 'no answer') || '). Check that ' || r.elmo_url
           || ' is reachable from the database server (DNS, firewall, TLS: elmo_oscp.ca_file).'
         WHEN r.state = 'pending' AND o.state = 'delivered' AND o.delivered_at < now() - interval '1 min' THEN
           'ELMO accepted our register at ' || o.delivered_at || ' but its register never reached us. Check that ELMO '
           || 'reaches ' || r.public_url || ' (https on port 443, forwarded to elmo_oscp.port). ELMO replaced its token '
           || 'when it accepted ours: if its register was lost, ask ELMO''s administrator for a new initial token, then run '
           || 'SELECT elmo_register(' || quote_literal(r.elmo_url) || ', ''<new initial token>'');'
         WHEN r.state = 'pending' THEN
           'Registering: waiting for ELMO to accept our register and send its own (seconds).'
         WHEN NOT r.connected AND coalesce(r.registered_at, r.requested_at) < now() - interval '1 min' THEN
           'Registered, but ELMO does not count us as connected, so business messages wait. ELMO sends a handshake '
           || 'about 5 s after its register and we acknowledge it; check elmo_outbox_status for handshake_acknowledge. '
           || 'To make ELMO start over run SELECT elmo_register(' || quote_literal(r.elmo_url) || ');'
         WHEN NOT r.connected THEN
           'Registered; waiting for ELMO''s handshake and for our handshake_acknowledge to be accepted. '
           || 'Business messages wait until then.'
         ELSE 'Connected: messages flow both ways.'
       END AS hint
  FROM (VALUES (1)) v(id)
  LEFT JOIN elmo_registration r ON r.id = v.id
  LEFT JOIN elmo_outbox o ON o.id = r.register_outbox_id;

-- The outbox without bodies (tokens never appear in it).
CREATE VIEW elmo_outbox_status AS
SELECT id, message, method, group_id, state, attempts, last_status, last_error, next_attempt_at,
       created_at, sent_at, delivered_at, request_id, correlation_id, response_body, timing
  FROM elmo_outbox;

CREATE VIEW elmo_usage_skipped AS
SELECT group_id, kwh, last_kwh, reason, skipped_at FROM _elmo_usage_skip;

CREATE FUNCTION elmo_status()
    RETURNS TABLE(worker_pid int, worker_started_at timestamptz, listening boolean, listen_address text,
                  listen_port int, tls boolean, requests_1xx bigint, requests_2xx bigint, requests_3xx bigint,
                  requests_4xx bigint, requests_5xx bigint, connections_dropped bigint,
                  messages_received bigint, messages_sent bigint, send_failures bigint, apply_failures bigint,
                  last_error text, last_error_at timestamptz,
                  registration_state text, connected boolean,
                  outbox_queued bigint, outbox_sending bigint, outbox_waiting_for_handshake bigint,
                  outbox_held bigint, outbox_failed bigint, received_unapplied bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
    SELECT w.*,
           coalesce((SELECT g.state FROM elmo_registration g WHERE g.id = 1), 'not_registered'),
           coalesce((SELECT g.connected FROM elmo_registration g WHERE g.id = 1), false),
           (SELECT count(*) FROM elmo_outbox o WHERE o.state = 'queued'),
           (SELECT count(*) FROM elmo_outbox o WHERE o.state = 'sending'),
           (SELECT count(*) FROM elmo_outbox o WHERE o.state = 'waiting_for_handshake'),
           (SELECT count(*) FROM elmo_outbox o WHERE o.state = 'held'),
           (SELECT count(*) FROM elmo_outbox o WHERE o.state = 'failed'),
           (SELECT count(*) FROM elmo_received_message m WHERE m.state IN ('received', 'apply_failed'))
      FROM _elmo_worker_info() w
    $$;

-- Wait for one message's outcome (src/outbox_wait.c): 'delivered'; raises
-- SQLSTATE OS001 with ELMO's answer when it failed; on timeout the current
-- state.  Call it after the transaction that queued the message committed.
CREATE FUNCTION elmo_wait(id bigint, timeout interval DEFAULT '10s') RETURNS text
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS 'MODULE_PATHNAME', 'elmo_wait';

-- ---------------------------------------------------------------- privileges

-- Queuing messages (and reading their outcome) is for roles the DBA grants it to.
REVOKE ALL ON FUNCTION
    elmo_register(text, text, text), elmo_update_registration(text), elmo_unregister(),
    elmo_adjust_capacity(text, numeric[], date), elmo_adjust_capacity(text, numeric, date),
    elmo_report_usage(text, numeric, timestamptz, boolean),
    elmo_report_compliance_error(bigint, text, jsonb),
    elmo_trigger_callback(text, text, text, numeric), elmo_wait(bigint, interval),
    _elmo_adjust_guard(text, date, timestamptz), _elmo_group_id(text)
  FROM PUBLIC;

-- ==== sql/elmo_oscp/07_housekeeping.sql
-- The worker's periodic jobs (src/worker.c calls _elmo_housekeeping): expiring
-- adjust requests, automatic usage reports, heartbeats, retention.  They run
-- in SQL so that their rules sit next to the tables they keep, and the worker
-- only needs to know when to call again.

-- ---------------------------------------------------------------- housekeeping (the worker)

-- One automatic usage report from elmo_oscp.usage_source: a relation or a
-- set-returning function of the CSMS giving (group_id text, kwh numeric
-- [, measured_at timestamptz]).  Groups whose reading is NULL, not finite,
-- negative or below the last one reported are skipped (view elmo_usage_skipped).
CREATE FUNCTION _elmo_report_usage_auto(source text) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    rel regclass;
    fn regproc;
    from_sql text;
    q text;
    sent bigint;
    skipped bigint;
    sample text;
BEGIN
    rel := to_regclass(source);
    IF rel IS NOT NULL THEN
        from_sql := rel::text;
    ELSE
        fn := to_regproc(regexp_replace(source, '\(\s*\)\s*$', ''));
        IF fn IS NULL THEN
            RAISE WARNING 'elmo_oscp.usage_source % names no relation or function: no usage report sent', quote_literal(source)
                USING HINT = 'Name a view, table or set-returning function giving (group_id, kwh[, measured_at]); the worker''s search_path is the extension''s schema, so qualify other schemas.';
            RETURN;
        END IF;
        from_sql := fn::text || '()';
    END IF;
    q := $q$
        WITH src AS (
            SELECT DISTINCT ON (s.group_id::text) s.group_id::text AS group_id, s.kwh::numeric AS kwh,
                   coalesce(%s, now()) AS measured_at
              FROM %s s
             WHERE s.group_id IS NOT NULL AND s.group_id::text <> ''
             ORDER BY s.group_id::text, 3 DESC
        ), chk AS (
            SELECT s.*, l.kwh AS last_kwh,
                   CASE WHEN s.kwh IS NULL THEN 'no reading (NULL)'
                        WHEN s.kwh IN ('NaN', 'Infinity', '-Infinity') THEN 'reading is not finite'
                        WHEN s.kwh < 0 THEN 'negative reading'
                        WHEN s.kwh < l.kwh THEN 'reading below the last one reported'
                   END AS reason
              FROM src s LEFT JOIN elmo_usage_last l ON l.group_id = s.group_id
        ), ins AS (
            INSERT INTO elmo_outbox (message, group_id, body)
            SELECT 'update_group_measurements', c.group_id, _elmo_usage_body(c.group_id, c.kwh, c.measured_at)
              FROM chk c WHERE c.reason IS NULL ORDER BY c.group_id
            RETURNING id, group_id
        ), upd AS (
            INSERT INTO elmo_usage_last AS l (group_id, kwh, measured_at, outbox_id)
            SELECT c.group_id, c.kwh, c.measured_at, i.id FROM ins i JOIN chk c ON c.group_id = i.group_id
            ON CONFLICT (group_id) DO UPDATE
               SET kwh = EXCLUDED.kwh, measured_at = EXCLUDED.measured_at, outbox_id = EXCLUDED.outbox_id
            RETURNING 1
        ), skp AS (
            INSERT INTO _elmo_usage_skip AS k (group_id, kwh, last_kwh, reason, skipped_at)
            SELECT c.group_id, c.kwh, c.last_kwh, c.reason, now() FROM chk c WHERE c.reason IS NOT NULL
            ON CONFLICT (group_id) DO UPDATE
               SET kwh = EXCLUDED.kwh, last_kwh = EXCLUDED.last_kwh, reason = EXCLUDED.reason,
                   skipped_at = EXCLUDED.skipped_at
            RETURNING group_id, reason
        )
        SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM skp),
               (SELECT string_agg(x.group_id || ': ' || x.reason, ', ')
                  FROM (SELECT * FROM skp ORDER BY group_id LIMIT 10) x)
    $q$;
    BEGIN
        EXECUTE format(q, 's.measured_at::timestamptz', from_sql) INTO sent, skipped, sample;
    EXCEPTION WHEN undefined_column THEN
        EXECUTE format(q, 'NULL::timestamptz', from_sql) INTO sent, skipped, sample;
    END;
    DELETE FROM _elmo_usage_skip WHERE skipped_at < now();
    IF sent > 0 THEN
        PERFORM _elmo_wake();
    END IF;
    IF skipped > 0 THEN
        RAISE WARNING 'elmo_oscp: % group(s) left out of the usage report: %', skipped,
                      sample || CASE WHEN skipped > 10 THEN ', …' ELSE '' END
            USING DETAIL = 'ELMO reads each value as a lifetime cumulative kWh that never goes down.',
                  HINT = 'See the view elmo_usage_skipped; after a meter replacement report once with elmo_report_usage(group_id, kwh, allow_decrease => true).';
    END IF;
END;
$$;

-- Delivered messages older than elmo_oscp.retention (those an adjust request
-- names stay): walk the primary key from the oldest row only.
CREATE FUNCTION _elmo_retention_outbound() RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    horizon timestamptz := now() - _elmo_conf('retention', '7d')::interval;
    cut bigint;
BEGIN
    SELECT o.id INTO cut FROM elmo_outbox o WHERE o.created_at >= horizon ORDER BY o.id LIMIT 1;
    DELETE FROM elmo_outbox o
     WHERE (cut IS NULL OR o.id < cut) AND o.state = 'delivered' AND o.created_at < horizon
       AND NOT EXISTS (SELECT 1 FROM elmo_adjust_request a WHERE a.outbox_id = o.id);
END;
$$;

-- Periodic work; returns when it wants to run next.
CREATE FUNCTION _elmo_housekeeping() RETURNS timestamptz
    LANGUAGE plpgsql
    AS $$
DECLARE
    r elmo_registration;
    open boolean;
    next_at timestamptz := _elmo_day_start(_elmo_local_day(now()) + 1);
    source text := _elmo_conf('usage_source', NULL);
    every interval;
    secs numeric;
    boundary timestamptz;
    last_at timestamptz;
BEGIN
    SELECT * INTO r FROM elmo_registration g WHERE g.id = 1;
    open := FOUND AND r.connected AND r.state NOT IN ('locked_out', 'unregistered');

    -- adjust requests ELMO did not answer expire when their day begins
    UPDATE elmo_adjust_request a SET state = 'expired', closed_at = now()
     WHERE a.state = 'pending' AND _elmo_day_start(a.day) <= now();

    -- automatic usage reports, aligned to report_interval
    IF source IS NOT NULL THEN
        every := _elmo_conf('report_interval', '60s')::interval;
        secs := greatest(extract(epoch FROM every), 1);
        boundary := to_timestamp(floor(extract(epoch FROM now()) / secs) * secs);
        SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'usage_report';
        IF last_at IS NULL OR last_at < boundary THEN
            IF open THEN
                BEGIN
                    PERFORM _elmo_report_usage_auto(source);
                EXCEPTION WHEN others THEN
                    RAISE WARNING 'elmo_oscp: usage report from % failed: %', source, SQLERRM
                        USING HINT = 'Fix elmo_oscp.usage_source or what it reads; the next interval tries again.';
                END;
            END IF;
            INSERT INTO elmo_timer AS t VALUES ('usage_report', boundary)
            ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
        END IF;
        next_at := least(next_at, boundary + make_interval(secs => secs));
    END IF;

    -- heartbeats, only when ELMO's handshake asked for them
    IF open AND r.heartbeat_interval > 0 THEN
        every := make_interval(secs => r.heartbeat_interval);
        SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'heartbeat';
        IF last_at IS NULL OR last_at + every <= now() THEN
            IF NOT EXISTS (SELECT 1 FROM elmo_outbox o
                            WHERE o.message = 'heartbeat' AND o.state NOT IN ('delivered', 'failed')) THEN
                PERFORM _elmo_enqueue('heartbeat', '{"offline_mode_at":"' || _elmo_ts(now() + 2 * every) || '"}');
            END IF;
            last_at := now();
            INSERT INTO elmo_timer AS t VALUES ('heartbeat', last_at)
            ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
        END IF;
        next_at := least(next_at, last_at + every);
    END IF;

    -- retention, every 10 minutes
    SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'retention';
    IF last_at IS NULL OR last_at + interval '10 min' <= now() THEN
        PERFORM _elmo_retention_outbound();
        PERFORM _elmo_retention_inbound();
        last_at := now();
        INSERT INTO elmo_timer AS t VALUES ('retention', last_at)
        ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    END IF;
    RETURN least(next_at, last_at + interval '10 min');
END;
$$;

-- ---------------------------------------------------------------- privileges

REVOKE ALL ON FUNCTION
    _elmo_housekeeping(), _elmo_report_usage_auto(text), _elmo_retention_outbound()
  FROM PUBLIC;

-- ==== sql/elmo_oscp/99_finish.sql
-- Last: wake the worker at commit of CREATE EXTENSION.
SELECT _elmo_kick();
