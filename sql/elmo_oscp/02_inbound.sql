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

-- The data exception a text raises when cast to timestamptz, or NULL.
CREATE FUNCTION _elmo_timestamp_error(ts text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM ts::timestamptz;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END $$;

-- Validates one message and stores it as received ('received'), classified.
-- 204 + id: stored; 204 + NULL: duplicate X-Request-ID, nothing stored;
-- 400 + {"message": ..., "field": ...}: invalid, nothing stored.
CREATE FUNCTION _elmo_receive(message text, method text, request_id text, correlation_id text,
                              raw_body text, used_current_token boolean)
    RETURNS TABLE(status int, error text, message_id bigint)
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_msg    text := $1;
    v_method text := upper(coalesce($2, 'POST'));
    b        jsonb;
    stage    text := 'parse';
    ef       text;              -- the field in error ('' = the whole body)
    em       text;              -- what is wrong with it
    rb       jsonb;
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
    v_ov     int;
    v_ovp    int;
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
            ELSE
                -- every block in one pass: first error by index, first overlap in
                -- time order, and the shape the classification needs
                WITH p AS (
                    SELECT (t.o - 1)::int AS i, t.v, jsonb_typeof(t.v) = 'object' AS isobj,
                           t.v->>'start_time' AS st, t.v->>'end_time' AS et
                      FROM jsonb_array_elements(b->'forecasted_blocks') WITH ORDINALITY AS t(v, o)
                ), q AS (
                    SELECT p.i, p.v, p.isobj,
                           CASE WHEN p.isobj AND p.st ~ '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$'
                                THEN p.st::timestamptz END AS s,
                           CASE WHEN p.isobj AND p.et ~ '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$'
                                THEN p.et::timestamptz END AS e
                      FROM p
                ), r AS (
                    SELECT q.i, q.s, q.e,
                           CASE
                           WHEN NOT q.isobj THEN '{"", "must be an object"}'::text[]
                           WHEN NOT q.v ? 'capacity' THEN '{.capacity, "is required"}'
                           WHEN jsonb_typeof(q.v->'capacity') <> 'number' THEN '{.capacity, "must be a finite number >= 0"}'
                           WHEN (q.v->'capacity')::numeric < 0 THEN '{.capacity, "must be a finite number >= 0"}'
                           WHEN NOT q.v ? 'phase' THEN '{.phase, "is required"}'
                           WHEN jsonb_typeof(q.v->'phase') <> 'string'
                                OR q.v->>'phase' NOT IN ('UNKNOWN', 'ONE', 'TWO', 'THREE', 'ALL')
                                THEN '{.phase, "must be one of UNKNOWN, ONE, TWO, THREE, ALL"}'
                           WHEN NOT q.v ? 'unit' THEN '{.unit, "is required"}'
                           WHEN jsonb_typeof(q.v->'unit') <> 'string'
                                OR q.v->>'unit' NOT IN ('A', 'W', 'KW', 'WH', 'KWH')
                                THEN '{.unit, "must be one of A, W, KW, WH, KWH"}'
                           WHEN NOT q.v ? 'start_time' THEN '{.start_time, "is required"}'
                           WHEN q.s IS NULL THEN '{.start_time, "must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T00:00:00.000+08:00"}'
                           WHEN NOT q.v ? 'end_time' THEN '{.end_time, "is required"}'
                           WHEN q.e IS NULL THEN '{.end_time, "must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T01:00:00.000+08:00"}'
                           WHEN q.e <= q.s THEN '{.end_time, "must be later than start_time"}'
                           END AS err
                      FROM q
                ), w AS (
                    SELECT r.*, lag(r.e) OVER o AS pe, lag(r.i) OVER o AS pi
                      FROM r WINDOW o AS (ORDER BY r.s, r.i)
                )
                SELECT (array_agg('forecasted_blocks[' || w.i || ']' || w.err[1] ORDER BY w.i)
                            FILTER (WHERE w.err IS NOT NULL))[1],
                       (array_agg(w.err[2] ORDER BY w.i) FILTER (WHERE w.err IS NOT NULL))[1],
                       (array_agg(w.i ORDER BY w.s, w.i) FILTER (WHERE w.s < w.pe))[1],
                       (array_agg(w.pi ORDER BY w.s, w.i) FILTER (WHERE w.s < w.pe))[1],
                       count(*), min(w.s), max(w.e),
                       bool_and(w.e - w.s = interval '1 hour'), bool_and(w.pe IS NULL OR w.s = w.pe)
                  INTO ef, em, v_ov, v_ovp, v_n, v_first, v_last, v_hourly, v_contig
                  FROM w;
                IF ef IS NULL AND v_ov IS NOT NULL THEN
                    ef := format('forecasted_blocks[%s]', v_ov);
                    em := format('overlaps forecasted_blocks[%s]', v_ovp);
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
            ELSIF jsonb_typeof(b->'offline_mode_at') <> 'string' OR b->>'offline_mode_at' !~
                    '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$' THEN
                ef := 'offline_mode_at';
                em := 'must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T00:00:00.000+08:00';
            ELSE
                PERFORM (b->>'offline_mode_at')::timestamptz;
            END IF;
        END IF;
    EXCEPTION WHEN data_exception THEN
        IF stage = 'parse' THEN
            ef := NULL;
            em := 'malformed JSON: ' || SQLERRM;
        ELSE
            -- slow path: a timestamp of the right form that is no instant (2026-02-30...)
            ef := NULL; em := NULL;
            IF v_msg = 'heartbeat' THEN
                ef := 'offline_mode_at';
                em := 'is not a valid timestamp: ' || _elmo_timestamp_error(b->>'offline_mode_at');
            ELSIF v_msg = 'update_group_capacity_forecast' THEN
                SELECT format('forecasted_blocks[%s].%s', t.o - 1, k.f),
                       'is not a valid timestamp: ' || _elmo_timestamp_error(t.v->>k.f)
                  INTO ef, em
                  FROM jsonb_array_elements(b->'forecasted_blocks') WITH ORDINALITY AS t(v, o),
                       (VALUES (1, 'start_time'), (2, 'end_time')) AS k(n, f)
                 WHERE jsonb_typeof(t.v) = 'object' AND _elmo_timestamp_error(t.v->>k.f) IS NOT NULL
                 ORDER BY t.o, k.n LIMIT 1;
            END IF;
            IF em IS NULL THEN
                em := 'invalid body: ' || SQLERRM;
            END IF;
        END IF;
    END;

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
        v_day := _elmo_local_day(v_first);
        IF v_n = 24 AND v_hourly AND v_contig
           AND v_first = _elmo_day_start(v_day) AND v_last = _elmo_day_start(v_day + 1)
           AND v_day > _elmo_local_day(now()) THEN
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
    ON CONFLICT DO NOTHING
    RETURNING r.id INTO v_id;

    RETURN QUERY SELECT 204, NULL::text, v_id;
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
            SELECT v_fid, row_number() OVER (ORDER BY x.s, x.o), x.s, x.e, x.c, x.u, x.p
              FROM (SELECT t.o, (t.v->>'start_time')::timestamptz AS s, (t.v->>'end_time')::timestamptz AS e,
                           (t.v->'capacity')::numeric AS c, t.v->>'unit' AS u, t.v->>'phase' AS p
                      FROM jsonb_array_elements(m.body->'forecasted_blocks') WITH ORDINALITY AS t(v, o)) x
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

        -- last heard: once per batch (same received_at), never waiting for a
        -- session that holds the registration row
        UPDATE elmo_registration g
           SET last_heard_at = m.received_at,
               previous_token = CASE WHEN m.used_current_token THEN NULL ELSE g.previous_token END
         WHERE g.id = (SELECT g2.id FROM elmo_registration g2
                        WHERE g2.id = 1
                          AND (g2.last_heard_at IS NULL OR g2.last_heard_at < m.received_at
                               OR m.used_current_token AND g2.previous_token IS NOT NULL)
                          FOR UPDATE SKIP LOCKED);
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
-- less: keep them).  Works oldest first in batches.  Forecasts are kept.
CREATE FUNCTION _elmo_retention_inbound() RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_keep interval := coalesce(nullif(current_setting('elmo_oscp.retention', true), ''), '7d')::interval;
    v_n    bigint;
BEGIN
    IF v_keep <= interval '0' THEN
        RETURN;
    END IF;
    FOR i IN 1 .. 50 LOOP
        DELETE FROM elmo_received_message m
         USING (SELECT o.id FROM elmo_received_message o
                 WHERE o.state IN ('applied', 'discarded')
                 ORDER BY o.id LIMIT 10000) old
         WHERE m.id = old.id AND m.received_at < now() - v_keep;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        EXIT WHEN v_n < 10000;
    END LOOP;
END
$fn$;

-- ---------------------------------------------------------------- capacity in force (decisions §5)

-- What gives the capacity at an instant: the lowest of the plan (the covering
-- block of the most recently received day_ahead/additional_reply among those
-- covering it), every covering emergency block, the contract capacity.  Ties:
-- emergency, then plan, then contract.  No row when nothing is known.
-- Capacities are compared as sent (ELMO always sends KW).
CREATE FUNCTION _elmo_capacity_resolve(group_id text, at timestamptz,
        OUT capacity numeric, OUT unit text, OUT kind text, OUT forecast_id bigint)
    LANGUAGE sql STABLE AS $$
    SELECT c.capacity, c.unit, c.kind, c.forecast_id FROM (
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
    LIMIT 1 $$;

-- The capacity in force for a group at an instant (NULL: nothing known).
CREATE FUNCTION elmo_capacity_at(group_id text, at timestamptz DEFAULT now()) RETURNS numeric
    LANGUAGE sql STABLE AS $$ SELECT r.capacity FROM _elmo_capacity_resolve($1, $2) r $$;

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
         WHERE seg.e IS NOT NULL
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
