-- Inbound: what ELMO sends us.  src/inbound.c authenticates and routes a request,
-- then calls _elmo_receive (validate + store, classified once, decisions §4) and,
-- in its own subtransaction, _elmo_apply (write forecasts / registration state,
-- fire the CSMS's triggers, NOTIFY).  A failed apply is recorded by
-- _elmo_apply_failed and retried by the worker (_elmo_applies_due).
-- Public surface (decisions §5, §12): elmo_capacity_at, elmo_capacity_schedule,
-- elmo_capacity_now, elmo_unapplied, elmo_replay, elmo_discard.

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
    pfx      text;
    v_bad    int;
    v_group  text;
    v_kind   text;
    v_day    date;
    v_adj    bigint;
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
        IF $5 IS NULL OR btrim($5, E' \t\r\n') = '' THEN
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
            ELSIF NOT b ? 'forecasted_blocks' THEN
                ef := 'forecasted_blocks'; em := 'is required';
            ELSIF jsonb_typeof(b->'forecasted_blocks') <> 'array'
                  OR jsonb_array_length(b->'forecasted_blocks') = 0 THEN
                ef := 'forecasted_blocks'; em := 'must be a non-empty array';
            ELSIF jsonb_array_length(b->'forecasted_blocks') = 1 THEN
                -- one block (every emergency): plain expressions, no query.  Any
                -- error raised here also sends us to _elmo_blocks_error.
                blk := b->'forecasted_blocks'->0;
                v_n := 1;
                v_first := CASE WHEN _elmo_is_rfc3339(blk->>'start_time') THEN (blk->>'start_time')::timestamptz END;
                v_last := CASE WHEN _elmo_is_rfc3339(blk->>'end_time') THEN (blk->>'end_time')::timestamptz END;
                v_wrong := v_first IS NULL OR v_last IS NULL OR v_last <= v_first
                           OR jsonb_typeof(blk->'capacity') IS DISTINCT FROM 'number'
                           OR (blk->'capacity')::numeric < 0
                           OR coalesce(blk->>'phase', '') NOT IN ('UNKNOWN', 'ONE', 'TWO', 'THREE', 'ALL')
                           OR coalesce(blk->>'unit', '') NOT IN ('A', 'W', 'KW', 'WH', 'KWH');
            ELSE
                -- fast path, one pass: is anything wrong (then _elmo_blocks_error
                -- says what), any overlap, and the shape the classification needs
                SELECT count(*), min(z.s), max(z.e), bool_and(z.e - z.s = interval '1 hour'),
                       bool_and(z.pe IS NULL OR z.s = z.pe), bool_or(z.bad) OR bool_or(z.s < z.pe)
                  INTO v_n, v_first, v_last, v_hourly, v_contig, v_wrong
                  FROM (SELECT y.s, y.e, lag(y.e) OVER (ORDER BY y.s) AS pe,
                               CASE WHEN y.s IS NULL OR y.e IS NULL OR y.c IS NULL
                                         OR y.phase IS NULL OR y.unit IS NULL
                                         OR jsonb_typeof(y.c) <> 'number' THEN true
                                    ELSE y.c::numeric < 0 OR y.e <= y.s
                                         OR y.phase NOT IN ('UNKNOWN', 'ONE', 'TWO', 'THREE', 'ALL')
                                         OR y.unit NOT IN ('A', 'W', 'KW', 'WH', 'KWH') END AS bad
                          FROM (SELECT x.capacity AS c, x.phase, x.unit,
                                       CASE WHEN _elmo_is_rfc3339(x.start_time) THEN x.start_time::timestamptz END AS s,
                                       CASE WHEN _elmo_is_rfc3339(x.end_time) THEN x.end_time::timestamptz END AS e
                                  FROM jsonb_to_recordset(b->'forecasted_blocks')
                                       AS x(capacity jsonb, phase text, unit text, start_time text, end_time text)
                                OFFSET 0) y) z;     -- OFFSET 0: lag() must not parse the times again
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
        IF v_n = 24 AND v_hourly AND v_contig
           AND v_first = (v_day::timestamp AT TIME ZONE v_tz)
           AND v_last = ((v_day + 1)::timestamp AT TIME ZONE v_tz)
           AND v_day > (now() AT TIME ZONE v_tz)::date THEN
            SELECT a.id INTO v_adj
              FROM elmo_adjust_request a
             WHERE a.group_id = v_group AND a.day = v_day AND a.state = 'pending';
            v_kind := CASE WHEN v_adj IS NULL THEN 'day_ahead' ELSE 'additional_reply' END;
        ELSE
            v_kind := 'emergency';
        END IF;
    END IF;

    INSERT INTO elmo_received_message AS r
           (message, method, request_id, correlation_id, raw_body, body,
            group_id, kind, forecast_day, adjust_request_id, used_current_token)
    VALUES (v_msg, v_method, $3, $4, coalesce($5, ''), b,
            v_group, v_kind, v_day, v_adj, coalesce($6, false))
    ON CONFLICT (request_id) DO NOTHING
    RETURNING r.id INTO v_id;

    status := 204;
    message_id := v_id;
    RETURN NEXT;
END
$fn$;

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
        -- AFTER ROW triggers (the blocks' FK check, the CSMS's triggers on
        -- capacity_forecast) fire at the end of the statement, seeing both.
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
        IF v_state IS DISTINCT FROM m.received_at::text || '+'
           AND (v_state IS DISTINCT FROM m.received_at::text OR m.used_current_token) THEN
            UPDATE elmo_registration g
               SET last_heard_at = m.received_at,
                   previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END
             WHERE g.id = (SELECT g2.id FROM elmo_registration g2
                            WHERE g2.id = 1
                              AND (g2.last_heard_at IS NULL OR g2.last_heard_at < m.received_at
                                   OR m.used_current_token AND g2.previous_token IS NOT NULL)
                              FOR UPDATE SKIP LOCKED);
            PERFORM set_config('elmo_oscp_inbound.heard',
                               m.received_at::text || CASE WHEN m.used_current_token THEN '+' ELSE '' END, true);
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

REVOKE ALL ON FUNCTION _elmo_receive(text, text, text, text, text, boolean),
                       _elmo_apply(bigint), _elmo_apply_failed(bigint, text, text),
                       _elmo_applies_due(int), _elmo_next_apply_at(), _elmo_health(),
                       _elmo_retention_inbound(),
                       elmo_replay(bigint), elmo_discard(bigint, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION elmo_capacity_at(text, timestamptz), elmo_capacity_schedule(text, date)
    TO PUBLIC;
GRANT SELECT ON elmo_capacity_now TO PUBLIC;
