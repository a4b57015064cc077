-- Inbound, first step: receipt.  src/inbound.c authenticates and routes a
-- request, then calls _elmo_receive (validate + store, classified once,
-- decisions §4) and, in its own subtransaction, _elmo_apply (03_apply.sql).
-- Receipt is kept apart from applying so that a message ELMO was answered for
-- is stored whatever applying it does; validation lives here because ELMO gets
-- its 400 from it.

-- ---------------------------------------------------------------- receipt

-- RFC 3339 date-time with an offset or Z (the shape; the cast checks the
-- values).  LIKE, not a regular expression: this runs for every timestamp.
CREATE OR REPLACE FUNCTION _elmo_is_rfc3339(ts text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ts LIKE '____-__-_____:__:__%' AND substr(ts, 11, 1) IN ('T', 't', ' ')
           AND (ts LIKE '%Z' OR ts LIKE '%z' OR ts LIKE '%+__:__' OR ts LIKE '%-__:__') $$;

-- The data exception a text raises when cast to timestamptz, or NULL.
CREATE OR REPLACE FUNCTION _elmo_timestamp_error(ts text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM ts::timestamptz;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END $$;

-- What is wrong with a forecast's blocks (slow path, only for a bad request):
-- the first bad block by index, else the first overlap in time order.
CREATE OR REPLACE FUNCTION _elmo_blocks_error(blocks jsonb, OUT field text, OUT problem text)
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
CREATE OR REPLACE FUNCTION _elmo_receive(message text, method text, request_id text, correlation_id text,
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
