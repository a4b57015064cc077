-- Inbound, first step: receipt.  src/inbound.c authenticates and routes a
-- request, then calls _elmo_receive and, in its own subtransaction,
-- _elmo_apply (03_apply.sql).  _elmo_receive parses and validates the body,
-- decides a forecast's kind once (_elmo_forecast_kind: a retried apply never
-- re-classifies) and stores the message (_elmo_store_received).  Receipt is
-- kept apart from applying so that a message ELMO was answered for is stored
-- whatever applying it does; validation lives here because ELMO gets its 400
-- from it.

-- ---------------------------------------------------------------- the rules of a valid message

-- Each rule is written once, here.  Those of a forecast's blocks are SQL
-- functions the planner inlines, so the fast checks every forecast goes
-- through (_elmo_receive) and the slow path that names the bad field of a bad
-- request (_elmo_blocks_problem) share them at no cost.  Not STRICT: inlining
-- needs that.

-- The values an enumerated field may take, and what a 400 says about them.
CREATE OR REPLACE FUNCTION _elmo_forecast_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT '{CONSUMPTION,GENERATION,FALLBACK_CONSUMPTION,FALLBACK_GENERATION,OPTIMUM}'::text[] $$;

CREATE OR REPLACE FUNCTION _elmo_phases() RETURNS text[]
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT '{UNKNOWN,ONE,TWO,THREE,ALL}'::text[] $$;

CREATE OR REPLACE FUNCTION _elmo_units() RETURNS text[]
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT '{A,W,KW,WH,KWH}'::text[] $$;

CREATE OR REPLACE FUNCTION _elmo_one_of(allowed text[]) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT 'must be one of ' || array_to_string(allowed, ', ') $$;

-- RFC 3339 date-time with an offset or Z, strictly: PostgreSQL's own input
-- reads far more ("... EST+08:00", hour 24, "BC"), some of it at another
-- offset than the text shows.  The cast then reads the instant and refuses
-- what the form cannot say (February 30).  In C (src/rfc3339.c): it runs for
-- every timestamp, and a regular expression costs 4 µs.
CREATE OR REPLACE FUNCTION _elmo_is_rfc3339(ts text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'elmo_is_rfc3339';

-- The longest text a field may hold where the CSMS uses it (ELMO's group ids
-- have 24 characters, its tokens 255); longer ones are a 400.
CREATE OR REPLACE FUNCTION _elmo_max_length(field text) RETURNS int
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE field WHEN 'group_id' THEN 255 WHEN 'token' THEN 1024
                            WHEN 'version' THEN 32 WHEN 'base_url' THEN 2048 END $$;

-- What a 400 says about a text over its maximum length.
CREATE OR REPLACE FUNCTION _elmo_too_long(field text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT format('must be at most %s characters', _elmo_max_length(field)) $$;

-- What a 400 says about a text that is no RFC 3339 timestamp.
CREATE OR REPLACE FUNCTION _elmo_rfc3339_problem(example text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'must be an RFC 3339 timestamp with an offset or Z, e.g. ' || example $$;

-- A block's start or end time: NULL unless it is RFC 3339; a text of that
-- form that is no valid instant raises a data exception.
CREATE OR REPLACE FUNCTION _elmo_block_time(ts text) RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT CASE WHEN _elmo_is_rfc3339(ts) THEN ts::timestamptz END $$;

-- A block's capacity: a JSON number, not negative.
CREATE OR REPLACE FUNCTION _elmo_block_capacity_ok(capacity jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN jsonb_typeof(capacity) = 'number' THEN capacity::numeric >= 0 ELSE false END $$;

CREATE OR REPLACE FUNCTION _elmo_block_phase_ok(phase text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT coalesce(phase = ANY (_elmo_phases()), false) $$;

CREATE OR REPLACE FUNCTION _elmo_block_unit_ok(unit text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT coalesce(unit = ANY (_elmo_units()), false) $$;

-- A block ends after it starts.
CREATE OR REPLACE FUNCTION _elmo_block_span_ok(start_time timestamptz, end_time timestamptz) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT coalesce(end_time > start_time, false) $$;

-- Every rule of one block, its times as _elmo_block_time read them.
CREATE OR REPLACE FUNCTION _elmo_block_ok(capacity jsonb, phase text, unit text,
                                          start_time timestamptz, end_time timestamptz)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT _elmo_block_span_ok(start_time, end_time) AND _elmo_block_capacity_ok(capacity)
           AND _elmo_block_phase_ok(phase) AND _elmo_block_unit_ok(unit) $$;

-- Blocks must not overlap: the first block, in time order, that starts before
-- the one before it ends, and that one; NULLs when none does.
CREATE OR REPLACE FUNCTION _elmo_blocks_overlap(blocks jsonb, OUT block int, OUT other int)
    LANGUAGE sql STABLE AS $$
    SELECT w.i, w.pi
      FROM (SELECT t.o - 1 AS i, (t.v->>'start_time')::timestamptz AS s,
                   lag((t.v->>'end_time')::timestamptz) OVER o AS pe, lag(t.o - 1) OVER o AS pi
              FROM jsonb_array_elements(blocks) WITH ORDINALITY AS t(v, o)
            WINDOW o AS (ORDER BY (t.v->>'start_time')::timestamptz, t.o)) w
     WHERE w.s < w.pe
     ORDER BY w.s, w.i
     LIMIT 1 $$;

-- The data exception a text raises when cast to timestamptz, or NULL.
CREATE OR REPLACE FUNCTION _elmo_timestamp_error(ts text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM ts::timestamptz;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END $$;

-- ---------------------------------------------------------------- what is wrong, one message kind each

-- Each returns {field, problem}, the first field in error and what is wrong
-- with it, or NULL.  A scalar, not a record: a record result costs more than
-- the checks themselves on the path every forecast takes.

-- A forecast's own fields.  One expression (inlined): every forecast goes
-- through it; its blocks get the fast checks in _elmo_receive.
CREATE OR REPLACE FUNCTION _elmo_forecast_fields_problem(b jsonb) RETURNS text[]
    LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT b ? 'group_id' THEN '{group_id, "is required"}'::text[]
        WHEN jsonb_typeof(b->'group_id') <> 'string' OR b->>'group_id' = ''
             THEN '{group_id, "must be a non-empty string"}'
        WHEN length(b->>'group_id') > _elmo_max_length('group_id') THEN ARRAY['group_id', _elmo_too_long('group_id')]
        WHEN NOT b ? 'type' THEN '{type, "is required"}'
        WHEN jsonb_typeof(b->'type') <> 'string' OR NOT b->>'type' = ANY (_elmo_forecast_types())
             THEN ARRAY['type', _elmo_one_of(_elmo_forecast_types())]
        WHEN NOT b ? 'forecasted_blocks' THEN '{forecasted_blocks, "is required"}'
        WHEN jsonb_typeof(b->'forecasted_blocks') <> 'array' OR b->'forecasted_blocks' = '[]'
             THEN '{forecasted_blocks, "must be a non-empty array"}'
        END $$;

-- A forecast's blocks, the slow path (only for a bad request): the first bad
-- block by index, else the first overlap.
CREATE OR REPLACE FUNCTION _elmo_blocks_problem(blocks jsonb) RETURNS text[]
    LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    bad text[];
    o   record;
BEGIN
    SELECT ARRAY['forecasted_blocks[' || (t.o - 1) || ']' || c.x[1], c.x[2]] INTO bad
      FROM jsonb_array_elements(blocks) WITH ORDINALITY AS t(v, o),
           LATERAL (SELECT CASE
               WHEN jsonb_typeof(t.v) <> 'object' THEN '{"", "must be an object"}'::text[]
               WHEN NOT t.v ? 'capacity' THEN '{.capacity, "is required"}'
               WHEN NOT _elmo_block_capacity_ok(t.v->'capacity') THEN '{.capacity, "must be a finite number >= 0"}'
               WHEN NOT t.v ? 'phase' THEN '{.phase, "is required"}'
               WHEN NOT _elmo_block_phase_ok(t.v->>'phase') THEN ARRAY['.phase', _elmo_one_of(_elmo_phases())]
               WHEN NOT t.v ? 'unit' THEN '{.unit, "is required"}'
               WHEN NOT _elmo_block_unit_ok(t.v->>'unit') THEN ARRAY['.unit', _elmo_one_of(_elmo_units())]
               WHEN NOT t.v ? 'start_time' THEN '{.start_time, "is required"}'
               WHEN NOT coalesce(_elmo_is_rfc3339(t.v->>'start_time'), false)
                    THEN ARRAY['.start_time', _elmo_rfc3339_problem('2026-11-26T00:00:00.000+08:00')]
               WHEN _elmo_timestamp_error(t.v->>'start_time') IS NOT NULL
                    THEN ARRAY['.start_time', 'is not a valid timestamp: ' || _elmo_timestamp_error(t.v->>'start_time')]
               WHEN NOT t.v ? 'end_time' THEN '{.end_time, "is required"}'
               WHEN NOT coalesce(_elmo_is_rfc3339(t.v->>'end_time'), false)
                    THEN ARRAY['.end_time', _elmo_rfc3339_problem('2026-11-26T01:00:00.000+08:00')]
               WHEN _elmo_timestamp_error(t.v->>'end_time') IS NOT NULL
                    THEN ARRAY['.end_time', 'is not a valid timestamp: ' || _elmo_timestamp_error(t.v->>'end_time')]
               WHEN NOT _elmo_block_span_ok((t.v->>'start_time')::timestamptz, (t.v->>'end_time')::timestamptz)
                    THEN '{.end_time, "must be later than start_time"}'
               END) AS c(x)
     WHERE c.x IS NOT NULL
     ORDER BY t.o
     LIMIT 1;
    IF bad IS NULL THEN
        o := _elmo_blocks_overlap(blocks);
        IF o.block IS NOT NULL THEN
            bad := ARRAY[format('forecasted_blocks[%s]', o.block), format('overlaps forecasted_blocks[%s]', o.other)];
        END IF;
    END IF;
    RETURN bad;
END
$fn$;

-- ELMO's register: its token and where to call it.
CREATE OR REPLACE FUNCTION _elmo_register_problem(b jsonb) RETURNS text[]
    LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    bad text[];
BEGIN
    IF NOT b ? 'token' THEN
        RETURN '{token, "is required"}';
    ELSIF jsonb_typeof(b->'token') <> 'string' OR b->>'token' = '' THEN
        RETURN '{token, "must be a non-empty string"}';
    ELSIF length(b->>'token') > _elmo_max_length('token') OR b->>'token' !~ '^[\x21-\x7e]+$' THEN
        -- it goes into the Authorization header of every message we send
        RETURN ARRAY['token', format('must be at most %s printable ASCII characters, no spaces',
                                     _elmo_max_length('token'))];
    ELSIF NOT b ? 'version_url' THEN
        RETURN '{version_url, "is required"}';
    ELSIF jsonb_typeof(b->'version_url') <> 'array' OR jsonb_array_length(b->'version_url') = 0 THEN
        RETURN '{version_url, "must be a non-empty array"}';
    END IF;
    SELECT ARRAY['version_url[' || (t.o - 1) || ']' || c.x[1], c.x[2]] INTO bad
      FROM jsonb_array_elements(b->'version_url') WITH ORDINALITY AS t(v, o),
           LATERAL (SELECT CASE
               WHEN jsonb_typeof(t.v) <> 'object' THEN '{"", "must be an object"}'::text[]
               WHEN NOT t.v ? 'version' THEN '{.version, "is required"}'
               WHEN jsonb_typeof(t.v->'version') <> 'string' OR t.v->>'version' = ''
                    THEN '{.version, "must be a non-empty string"}'
               WHEN length(t.v->>'version') > _elmo_max_length('version') THEN ARRAY['.version', _elmo_too_long('version')]
               WHEN NOT t.v ? 'base_url' THEN '{.base_url, "is required"}'
               WHEN jsonb_typeof(t.v->'base_url') <> 'string' OR t.v->>'base_url' = ''
                    THEN '{.base_url, "must be a non-empty string"}'
               WHEN length(t.v->>'base_url') > _elmo_max_length('base_url') THEN ARRAY['.base_url', _elmo_too_long('base_url')]
               END) AS c(x)
     WHERE c.x IS NOT NULL
     ORDER BY t.o LIMIT 1;
    RETURN bad;
END
$fn$;

-- ELMO's handshake: OSCP's {"required_behaviour": {...}}, the testbed's flat
-- form, or {}.
CREATE OR REPLACE FUNCTION _elmo_handshake_problem(b jsonb) RETURNS text[]
    LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    rb  jsonb := b;
    pfx text := '';
    bad int;
BEGIN
    IF b ? 'required_behaviour' AND jsonb_typeof(b->'required_behaviour') <> 'null' THEN
        rb := b->'required_behaviour'; pfx := 'required_behaviour.';
        IF jsonb_typeof(rb) <> 'object' THEN
            RETURN '{required_behaviour, "must be an object"}';
        END IF;
    END IF;
    IF coalesce(jsonb_typeof(rb->'heartbeat_interval'), 'null') <> 'null'
       AND (jsonb_typeof(rb->'heartbeat_interval') <> 'number'
            OR (rb->'heartbeat_interval')::numeric NOT BETWEEN 1 AND 2147483647) THEN
        RETURN ARRAY[pfx || 'heartbeat_interval', 'must be a number >= 1 (seconds)'];
    END IF;
    IF coalesce(jsonb_typeof(rb->'measurement_configuration'), 'null') <> 'null' THEN
        IF jsonb_typeof(rb->'measurement_configuration') <> 'array' THEN
            RETURN ARRAY[pfx || 'measurement_configuration', 'must be an array'];
        END IF;
        SELECT t.o - 1 INTO bad
          FROM jsonb_array_elements(rb->'measurement_configuration') WITH ORDINALITY AS t(v, o)
         WHERE t.v NOT IN ('"CONTINUOUS"'::jsonb, '"INTERMITTENT"'::jsonb)
         ORDER BY t.o LIMIT 1;
        IF bad IS NOT NULL THEN
            RETURN ARRAY[format('%smeasurement_configuration[%s]', pfx, bad),
                         'must be one of CONTINUOUS, INTERMITTENT'];
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;

-- ELMO's heartbeat: when it goes offline.  A timestamp of the right shape that
-- is no valid instant raises a data exception.
CREATE OR REPLACE FUNCTION _elmo_heartbeat_problem(b jsonb) RETURNS text[]
    LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    IF NOT b ? 'offline_mode_at' THEN
        RETURN '{offline_mode_at, "is required"}';
    ELSIF jsonb_typeof(b->'offline_mode_at') <> 'string' OR NOT _elmo_is_rfc3339(b->>'offline_mode_at') THEN
        RETURN ARRAY['offline_mode_at', _elmo_rfc3339_problem('2026-11-26T00:00:00.000+08:00')];
    END IF;
    PERFORM (b->>'offline_mode_at')::timestamptz;
    RETURN NULL;
END
$fn$;

-- ---------------------------------------------------------------- receipt, step by step

-- ELMO's 400 body: {"message": "<field>: <problem>", "field": "<field>"}.  A
-- problem of the whole body (field '') or of the request (field NULL) names
-- no field.
CREATE OR REPLACE FUNCTION _elmo_bad_request(field text, problem text) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT (CASE WHEN coalesce(field, '') = ''
                 THEN json_build_object('message', CASE WHEN field = '' THEN 'body: ' ELSE '' END || problem)
                 ELSE json_build_object('message', field || ': ' || problem, 'field', field) END)::text $$;

-- The kind of a valid forecast, decided once, at receipt, by its shape in the
-- local calendar: 24 contiguous hourly blocks covering one whole local day
-- later than the day of receipt make a day_ahead (an additional_reply when an
-- adjust request is pending: see _elmo_store_received); anything else is an
-- emergency (ELMO's are one block, any minute, any offset).
CREATE OR REPLACE FUNCTION _elmo_forecast_kind(day date, blocks int, first_start timestamptz,
                                               last_end timestamptz, hourly boolean, contiguous boolean)
    RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN blocks = 24 AND hourly AND contiguous AND day > _elmo_local_day(now())
                     AND first_start = _elmo_day_start(day) AND last_end = _elmo_day_start(day + 1)
                THEN 'day_ahead' ELSE 'emergency' END $$;

-- Stores a valid message as received; its id, or NULL when its X-Request-ID
-- was stored already.  A day_ahead is an additional_reply while an adjust
-- request for its group and day is pending.  apply_now: the caller applies it
-- in this same transaction (_elmo_apply(id, true)), so it is stored as
-- applied already: one version of the row instead of two, and no entry in
-- the indexes of unapplied messages.  Whatever the caller does not apply
-- after all goes back to received (_elmo_apply_later) before it commits.
CREATE OR REPLACE FUNCTION _elmo_store_received(message text, method text, request_id text,
        correlation_id text, raw_body text, body jsonb, group_id text, kind text, forecast_day date,
        used_current_token boolean, apply_now boolean)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    new_id   bigint;
    v_state  text := CASE WHEN apply_now THEN 'applied' ELSE 'received' END;
    v_at     timestamptz := CASE WHEN apply_now THEN now() END;
    v_tries  int := CASE WHEN apply_now THEN 1 ELSE 0 END;
BEGIN
    IF kind = 'day_ahead' THEN
        -- the adjust request looked up in the INSERT, one statement less (not
        -- for the others: the join costs)
        INSERT INTO elmo_received_message AS r
               (message, method, request_id, correlation_id, raw_body, body,
                group_id, kind, forecast_day, adjust_request_id, used_current_token,
                state, applied_at, apply_attempts)
        SELECT $1, $2, $3, $4, coalesce($5, ''), $6,
               $7, CASE WHEN a.id IS NULL THEN $8 ELSE 'additional_reply' END, $9, a.id, coalesce($10, false),
               v_state, v_at, v_tries
          FROM (SELECT) one
          LEFT JOIN elmo_adjust_request a ON a.group_id = $7 AND a.day = $9 AND a.state = 'pending'
        ON CONFLICT ON CONSTRAINT elmo_received_message_request_id_key DO NOTHING
        RETURNING r.id INTO new_id;
    ELSE
        INSERT INTO elmo_received_message AS r
               (message, method, request_id, correlation_id, raw_body, body,
                group_id, kind, forecast_day, used_current_token, state, applied_at, apply_attempts)
        VALUES ($1, $2, $3, $4, coalesce($5, ''), $6, $7, $8, $9, coalesce($10, false), v_state, v_at, v_tries)
        ON CONFLICT ON CONSTRAINT elmo_received_message_request_id_key DO NOTHING
        RETURNING r.id INTO new_id;
    END IF;
    RETURN new_id;
END
$fn$;

-- ---------------------------------------------------------------- receipt

-- Validates one message and stores it as received ('received'), classified.
-- 204 + id: stored; 204 + NULL: duplicate X-Request-ID, nothing stored;
-- 400 + {"message": ..., "field": ...}: invalid, nothing stored.  apply_now:
-- see _elmo_store_received (the worker's; last and optional, so 0.1.0's
-- calls still work).
CREATE OR REPLACE FUNCTION _elmo_receive(message text, method text, request_id text, correlation_id text,
                                         raw_body text, used_current_token boolean,
                                         apply_now boolean DEFAULT false)
    RETURNS TABLE(status int, error text, message_id bigint)
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_method text := upper(coalesce($2, 'POST'));
    b        jsonb;
    bad      text[];            -- {field, problem}; field '': the whole body, NULL: no field
    blks     jsonb;             -- a forecast's blocks, and their shape:
    n        int;               --   how many,
    v_first  timestamptz;       --   the earliest start,
    v_last   timestamptz;       --   the latest end,
    v_hourly boolean;           --   each one hour long (more than one block),
    v_contig boolean;           --   contiguous in time order (more than one block),
    v_ok     boolean := true;   --   they pass the fast checks
    v_detail text;
    v_day    date;
    v_kind   text;
    v_cif    capacity_in_force;
BEGIN
    IF $3 IS NULL THEN
        RAISE EXCEPTION 'elmo_oscp: _elmo_receive needs a request_id'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'The listener generates one when ELMO sent no X-Request-ID.';
    END IF;
    IF NOT ($1 IN ('handshake', 'heartbeat', 'update_group_capacity_forecast') AND v_method = 'POST'
            OR $1 = 'register' AND v_method IN ('POST', 'PUT', 'DELETE')) THEN
        RAISE EXCEPTION 'elmo_oscp: no inbound message "% %"', v_method, $1
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Routing (404/405/501) is done by the listener before _elmo_receive.';
    END IF;

    -- parse and validate, in one subtransaction
    BEGIN
        -- An empty body is {} where none is needed (handshake, DELETE
        -- register).  LIKE first: btrim reads the whole body (multibyte), LIKE
        -- '{%' one byte.
        IF $5 IS NULL OR $5 NOT LIKE '{%' AND btrim($5, E' \t\r\n') = '' THEN
            IF $1 <> 'handshake' AND v_method <> 'DELETE' THEN
                bad := '{NULL, "malformed JSON: empty body"}';
            END IF;
            b := '{}';
        ELSE
            b := $5::jsonb;
        END IF;

        IF bad IS NOT NULL OR v_method = 'DELETE' THEN
            NULL;                               -- DELETE register: any JSON body
        ELSIF jsonb_typeof(b) <> 'object' THEN
            bad := '{"", "must be a JSON object"}';
        ELSIF $1 = 'update_group_capacity_forecast' THEN
            -- Every forecast comes this way: its blocks get the fast checks
            -- here (one block: expressions, no query; more: one pass, no
            -- sort), which also give their shape; a bad block is named by the
            -- slow path below.  A time of RFC 3339 shape that is no valid
            -- instant raises, to the same effect.
            bad := _elmo_forecast_fields_problem(b);
            IF bad IS NULL THEN
                blks := b->'forecasted_blocks';
                n := jsonb_array_length(blks);
                IF n = 1 THEN                   -- every emergency
                    v_first := _elmo_block_time(blks->0->>'start_time');
                    v_last := _elmo_block_time(blks->0->>'end_time');
                    v_ok := _elmo_block_ok(blks->0->'capacity', blks->0->>'phase', blks->0->>'unit',
                                           v_first, v_last);
                ELSE
                    -- blocks that each start where the one before ended (a
                    -- day-ahead) cannot overlap: only others need the sort
                    SELECT min(y.s), max(y.e), bool_and(y.e - y.s = interval '1 hour'),
                           coalesce(bool_and(_elmo_block_ok(y.c, y.phase, y.unit, y.s, y.e)), false),
                           (array_agg(y.s))[2:] = (array_agg(y.e))[:n - 1]
                      INTO v_first, v_last, v_hourly, v_ok, v_contig
                      FROM (SELECT x.capacity AS c, x.phase, x.unit,
                                   _elmo_block_time(x.start_time) AS s, _elmo_block_time(x.end_time) AS e
                              FROM jsonb_to_recordset(blks)
                                   AS x(capacity jsonb, phase text, unit text, start_time text, end_time text)
                            OFFSET 0) y;        -- OFFSET 0: each time parsed once
                    IF v_ok AND NOT v_contig THEN
                        v_ok := (_elmo_blocks_overlap(blks)).block IS NULL;
                        -- no overlap: contiguous when their lengths add up to their span
                        SELECT v_ok AND sum(x.end_time - x.start_time) = v_last - v_first INTO v_contig
                          FROM jsonb_to_recordset(blks) AS x(start_time timestamptz, end_time timestamptz);
                    END IF;
                END IF;
            END IF;
        ELSIF $1 = 'register' THEN
            bad := _elmo_register_problem(b);
        ELSIF $1 = 'handshake' THEN
            bad := _elmo_handshake_problem(b);
        ELSE
            bad := _elmo_heartbeat_problem(b);
        END IF;
    EXCEPTION
    WHEN statement_too_complex THEN
        -- JSON nested deeper than the server's stack (max_stack_depth) reads
        bad := '{"", "JSON nested too deeply"}';
    WHEN data_exception THEN
        IF b IS NULL THEN                       -- the body is no JSON
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
            bad := ARRAY[NULL, 'malformed JSON: ' || SQLERRM || coalesce(' (' || nullif(v_detail, '') || ')', '')];
        ELSIF $1 = 'heartbeat' THEN
            bad := ARRAY['offline_mode_at', 'is not a valid timestamp: ' || SQLERRM];
        ELSE
            v_ok := false;                      -- e.g. a block that is no object
            v_detail := SQLERRM;
        END IF;
    END;

    IF NOT v_ok THEN                            -- the slow path: say what is wrong
        bad := coalesce(_elmo_blocks_problem(blks),
                        ARRAY[NULL, 'invalid body: ' || coalesce(v_detail, 'a forecasted block is invalid')]);
    END IF;
    IF bad IS NOT NULL THEN
        status := 400;
        error := _elmo_bad_request(bad[1], bad[2]);
        RETURN NEXT;
        RETURN;
    END IF;

    IF $1 = 'update_group_capacity_forecast' THEN
        v_day := _elmo_local_day(v_first);
        v_kind := _elmo_forecast_kind(v_day, n, v_first, v_last, v_hourly, v_contig);
        message_id := _elmo_store_received($1, v_method, $3, $4, $5, b, b->>'group_id', v_kind, v_day, $6,
                                           coalesce($7, false));
        -- In force from its receipt, applied or not: when the forecast can change
        -- what capacity_in_force says now or next, the worker refreshes the group's
        -- row right after this commit (_elmo_capacity_upkeep, off the answering
        -- path).  One row read when it cannot (here rather than in a function: a
        -- call costs as much as the read).  A forecast entirely past changes
        -- nothing; one starting later matters only before the row's next change;
        -- one in force now does, unless it is a single emergency block no lower
        -- than what is in force (the lowest rule: it cannot be the lowest before or
        -- after).
        IF message_id IS NOT NULL AND v_last > now() THEN
            SELECT * INTO v_cif FROM capacity_in_force c WHERE c.group_id = b->>'group_id';
            IF NOT FOUND
               OR (v_first > now() AND NOT coalesce(v_first >= v_cif.until, false))
               OR (v_first <= now() AND NOT coalesce(
                       v_kind = 'emergency' AND n = 1 AND blks->0->>'unit' = v_cif.unit
                       AND ((blks->0->>'capacity')::numeric > v_cif.capacity
                            OR (blks->0->>'capacity')::numeric = v_cif.capacity AND v_cif.kind = 'emergency'),
                       false)) THEN
                INSERT INTO _elmo_capacity_dirty VALUES (b->>'group_id') ON CONFLICT DO NOTHING;
                PERFORM _elmo_capacity_due(now());
            END IF;
        END IF;
    ELSE
        message_id := _elmo_store_received($1, v_method, $3, $4, $5, b, NULL, NULL, NULL, $6, coalesce($7, false));
    END IF;
    status := 204;
    RETURN NEXT;
END
$fn$;
