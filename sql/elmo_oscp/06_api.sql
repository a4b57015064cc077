-- What the CSMS calls to talk to ELMO, and what its DBA reads.  Each public
-- function checks its arguments and ELMO's rules here, in the caller's
-- transaction, so a mistake is an error the caller sees at once rather than
-- a message ELMO refuses later; the message itself only joins the outbox
-- (05_outbox.sql), and leaves after commit.

-- ---------------------------------------------------------------- registration

-- Register with ELMO.  With an initial token: a first registration, or one
-- after ELMO's administrator issued a new initial token.  Without: a
-- re-registration authorized with ELMO's current token (ELMO refuses the
-- initial token once it accepted a register).  Either way a new token of
-- ours, which ELMO must present from its register callback on.
CREATE OR REPLACE FUNCTION elmo_register(elmo_url text, initial_token text DEFAULT NULL, public_url text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    r elmo_registration;
    have_reg boolean;
    url text := rtrim(btrim(elmo_register.elmo_url), '/');
    pub text := coalesce(nullif(btrim(elmo_register.public_url), ''), _elmo_setting('public_url'));
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

-- PUT register: tell ELMO a new token of ours and/or a new public URL (capture
-- 50a, silent).  Of the four tokens it rotates ours only: our_token gets a new
-- one, the old one becomes previous_token (accepted until ELMO uses the new
-- one); ELMO's token and the initial token stay.
CREATE OR REPLACE FUNCTION elmo_update_registration(public_url text DEFAULT NULL) RETURNS bigint
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
CREATE OR REPLACE FUNCTION elmo_unregister() RETURNS bigint
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
CREATE OR REPLACE FUNCTION _elmo_group_id(group_id text) RETURNS text
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

-- ELMO's negotiation rules for an adjust request on day, asked at instant at:
-- only tomorrow, before elmo_oscp.adjust_deadline, once per group and day
-- (ELMO answers 400 to a second one), unless elmo_oscp.enforce_deadlines is
-- off; only a warning without ELMO's day-ahead for that day (ELMO answers
-- 404, and the message fails).  A separate function so tests need no clock.
CREATE OR REPLACE FUNCTION _elmo_adjust_guard(group_id text, day date, at timestamptz) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    enforce boolean := _elmo_setting('enforce_deadlines')::boolean;
    deadline time := _elmo_setting('adjust_deadline')::time;
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
                      HINT = format('ELMO''s 10:00 plan for %s stays in force (an emergency may still change it). '
                                    'The next request is for %s: tomorrow (%s) from 10:00, when ELMO''s assignment '
                                    'for that day has arrived, until %s.',
                                    day, today + 2, today + 1, to_char(deadline, 'HH24:MI'));
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

-- A warning when a capacity asked is far beyond anything ELMO deals in for
-- that station and day: at least 100 times the most it assigned for the day
-- or the contract capacity, whichever is larger.  W typed where kW is meant
-- is 1,000 times too much, and ELMO's 16:00 reply grants what was asked.
CREATE OR REPLACE FUNCTION _elmo_adjust_scale_check(group_id text, day date, hourly_kw numeric[]) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    known numeric;
    worst numeric;
    hour int;
BEGIN
    SELECT greatest(max(b.capacity), max(s.contract_capacity_kw)) INTO known
      FROM (SELECT 1) one
      LEFT JOIN capacity_forecast f
             ON f.group_id = _elmo_adjust_scale_check.group_id AND f.forecast_day = _elmo_adjust_scale_check.day
            AND f.kind = 'day_ahead'
      LEFT JOIN capacity_forecast_block b ON b.forecast_id = f.id AND upper(b.unit) = 'KW'
      LEFT JOIN elmo_group_settings s ON s.group_id = _elmo_adjust_scale_check.group_id;
    IF coalesce(known, 0) <= 0 THEN
        RETURN;
    END IF;
    SELECT v, h - 1 INTO worst, hour FROM unnest(hourly_kw) WITH ORDINALITY AS x(v, h)
     WHERE v >= 100 * known ORDER BY v DESC, h LIMIT 1;
    IF FOUND THEN
        RAISE WARNING 'asking % kW for %:00 on %: % times the most ELMO assigned that day or the contract capacity (% kW)',
                      worst, to_char(hour, 'FM00'), day, trunc(worst / known), known
            USING DETAIL = 'Capacities are in kW; a value in W is 1,000 times too large. ELMO''s 16:00 reply grants what was asked.',
                  HINT = 'If it is a mistake, ROLLBACK (or, once committed, ask ELMO''s administrator to answer the request before 16:00).';
    END IF;
END;
$$;

-- adjust_group_capacity_forecast: 24 hourly capacities (kW) for one local day.
CREATE OR REPLACE FUNCTION elmo_adjust_capacity(group_id text, hourly_kw numeric[], day date DEFAULT NULL)
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
    PERFORM _elmo_registration_open();
    PERFORM _elmo_adjust_guard(g, d, now());
    PERFORM _elmo_adjust_scale_check(g, d, hourly_kw);
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

CREATE OR REPLACE FUNCTION elmo_adjust_capacity(group_id text, capacity_kw numeric, day date DEFAULT NULL)
    RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$ SELECT elmo_adjust_capacity(group_id, array_fill(capacity_kw, ARRAY[24]), day) $$;

-- A capacity written as a quoted literal: '250', '{250,...}', or a mistake
-- such as '100kW'.  A quoted literal has no type, and with only the numeric
-- and numeric[] functions PostgreSQL could not choose and said "function is
-- not unique"; this one takes it and names the argument when it is no number.
CREATE OR REPLACE FUNCTION elmo_adjust_capacity(group_id text, capacity_kw text, day date DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    one numeric;
    many numeric[];
BEGIN
    BEGIN
        IF btrim(capacity_kw) LIKE '{%' THEN
            many := capacity_kw::numeric[];
        ELSE
            one := capacity_kw::numeric;
        END IF;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'capacity_kw must be a number of kW, got %', quote_literal(capacity_kw)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'elmo_adjust_capacity takes one capacity in kW for every hour, or an array of 24 hourly capacities in kW; no unit is written.',
                  HINT = format('For example elmo_adjust_capacity(%L, 250), or elmo_adjust_capacity(%L, ARRAY[...24 values...]).',
                                group_id, group_id);
    END;
    IF many IS NOT NULL THEN
        RETURN elmo_adjust_capacity(group_id, many, day);
    END IF;
    RETURN elmo_adjust_capacity(group_id, one, day);
END;
$$;

-- update_group_measurements body for one reading (spec: ELMO's example).
CREATE OR REPLACE FUNCTION _elmo_usage_body(group_id text, kwh numeric, measured_at timestamptz) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT '{"group_id":' || to_json(group_id)::text || ',"measurements":[{"value":' || kwh::text
           || ',"phase":"ALL","unit":"KWH","direction":"IMPORT","measure_time":"' || _elmo_ts(measured_at)
           || '","energy_type":"TOTAL"}]}'
    $$;

-- update_group_measurements: the station's lifetime cumulative kWh, one
-- message per call (one X-Request-ID each, never merged).
CREATE OR REPLACE FUNCTION elmo_report_usage(group_id text, kwh numeric, measured_at timestamptz DEFAULT now(),
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
    IF measured_at > now() THEN
        RAISE EXCEPTION 'reading for group % is stamped in the future: %', g, measured_at
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s now; a reading cannot have been measured later.', now()),
                  HINT = 'Pass the instant the meter was read (omit measured_at for now()); check the clock of whatever stamped it.';
    END IF;
    PERFORM _elmo_registration_open();
    SELECT * INTO prior FROM elmo_usage_last l WHERE l.group_id = g FOR UPDATE;
    -- a group's first reading: once, not at every report of a station ELMO has not assigned yet
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM capacity_forecast f WHERE f.group_id = g) THEN
        RAISE WARNING 'ELMO has assigned no capacity to group % yet', g
            USING DETAIL = 'ELMO answers 400 to measurements of a station it does not know; the message then fails.',
                  HINT = 'Use the group_id of ELMO''s forecasts (capacity_forecast.group_id), the station id ELMO assigned.';
    END IF;
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
CREATE OR REPLACE FUNCTION elmo_report_compliance_error(forecast_id bigint, message text, blocks jsonb DEFAULT NULL)
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
    PERFORM _elmo_registration_open();
    RETURN _elmo_enqueue('group_capacity_compliance_error', body, f.group_id, f.request_id);
END;
$$;

-- The testbed's trigger-callback API: makes ELMO's simulator call this CSMS.
-- The request carries our own token (auth 'ours'), which the body hands over anyway.
CREATE OR REPLACE FUNCTION elmo_trigger_callback(name text, purpose text DEFAULT NULL, group_id text DEFAULT NULL,
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
    IF name IS NULL OR name NOT IN ('register', 'handshake', 'update_group_capacity_forecast') THEN
        RAISE EXCEPTION 'invalid callback name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The testbed triggers register, handshake and update_group_capacity_forecast.',
                  HINT = 'For example elmo_trigger_callback(''update_group_capacity_forecast'', ''emergency_assign_capacity'', ''<group_id>'', 50).';
    END IF;
    IF name = 'update_group_capacity_forecast'
       AND (purpose IS NULL OR purpose NOT IN ('negotiation_assign_capacity',
                                               'negotiation_reply_request_additional_capacity',
                                               'emergency_assign_capacity')
            OR group_id IS NULL OR capacity_kw IS NULL) THEN
        RAISE EXCEPTION 'a triggered forecast needs a purpose, a group_id and a capacity_kw'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got purpose %s, group_id %s, capacity_kw %s. The purpose is negotiation_assign_capacity, '
                                  'negotiation_reply_request_additional_capacity or emergency_assign_capacity.',
                                  coalesce(quote_literal(purpose), 'NULL'), coalesce(quote_literal(group_id), 'NULL'),
                                  coalesce(capacity_kw::text, 'NULL')),
                  HINT = 'For example elmo_trigger_callback(''update_group_capacity_forecast'', ''emergency_assign_capacity'', ''<group_id>'', 50).';
    END IF;
    IF capacity_kw IS NOT NULL AND (capacity_kw < 0 OR capacity_kw IN ('NaN', 'Infinity')) THEN
        RAISE EXCEPTION 'capacity_kw must be finite and not negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It becomes the forecast''s capacity in kW.',
                  HINT = 'Pass a capacity in kW.';
    END IF;
    r := _elmo_registration();
    base := coalesce(_elmo_setting('trigger_callback_url'),
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

-- The worker, ELMO and the queues at a glance.  last_error: the last failure
-- of any kind (an SQL error the worker caught, ELMO's answer other than 2xx,
-- no answer at all, a lock-out, a failing usage_source).  Readiness: the
-- registration state, connected, and elmo_reachable (false after several
-- failed deliveries in a row: no connection, timeout, 5xx; true again at
-- ELMO's next answer).  oldest_undelivered_age: of the oldest message to ELMO
-- not delivered (nor failed) yet.
CREATE OR REPLACE FUNCTION elmo_status()
    RETURNS TABLE(worker_pid int, worker_started_at timestamptz, listening boolean, listen_address text,
                  listen_port int, tls boolean, requests_1xx bigint, requests_2xx bigint, requests_3xx bigint,
                  requests_4xx bigint, requests_5xx bigint, connections_dropped bigint,
                  messages_received bigint, messages_sent bigint, send_failures bigint, apply_failures bigint,
                  last_error text, last_error_at timestamptz,
                  registration_state text, connected boolean,
                  outbox_queued bigint, outbox_sending bigint, outbox_waiting_for_handshake bigint,
                  outbox_held bigint, outbox_failed bigint, received_unapplied bigint,
                  elmo_reachable boolean, elmo_unreachable_since timestamptz, oldest_undelivered_age interval)
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
           (SELECT count(*) FROM elmo_received_message m WHERE m.state IN ('received', 'apply_failed')),
           r.elmo_reachable, r.unreachable_since,
           (SELECT now() - min(o.created_at) FROM elmo_outbox o WHERE o.state NOT IN ('delivered', 'failed'))
      FROM _elmo_worker_info() w, _elmo_worker_state() r
    $$;

CREATE OR REPLACE VIEW elmo_registration_status AS
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
         WHEN NOT st.elmo_reachable THEN
           'Connected, but ELMO has not been reachable since ' || st.elmo_unreachable_since
           || ': our deliveries fail (see last_error in elmo_status()). Messages stay queued and are '
           || 'retried; check that ' || coalesce(r.elmo_base_url, r.elmo_url)
           || ' is reachable from the database server.'
         ELSE 'Connected: messages flow both ways.'
       END AS hint
  FROM (VALUES (1)) v(id)
  LEFT JOIN elmo_registration r ON r.id = v.id
  LEFT JOIN elmo_outbox o ON o.id = r.register_outbox_id
  LEFT JOIN LATERAL (SELECT s.elmo_reachable, s.elmo_unreachable_since FROM elmo_status() s
                      WHERE r.state = 'registered' AND r.connected) st ON true;

-- The outbox without bodies (tokens never appear in it).
CREATE OR REPLACE VIEW elmo_outbox_status AS
SELECT id, message, method, group_id, state, attempts, last_status, last_error, next_attempt_at,
       created_at, sent_at, delivered_at, request_id, correlation_id, response_body, timing, retried_at
  FROM elmo_outbox;

CREATE OR REPLACE VIEW elmo_usage_skipped AS
SELECT group_id, kwh, last_kwh, reason, skipped_at FROM _elmo_usage_skip;

-- Wait for one message's outcome (src/outbox_wait.c): 'delivered'; raises
-- SQLSTATE OS001 with ELMO's answer when it failed; on timeout the current
-- state.  Call it after the transaction that queued the message committed.
CREATE OR REPLACE FUNCTION elmo_wait(id bigint, timeout interval DEFAULT '10s') RETURNS text
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS 'MODULE_PATHNAME', 'elmo_wait';

-- Send a failed message again: queued at once with its X-Request-ID, a fresh
-- count of attempts, and elmo_oscp.max_retry_age counted from now.  Refused
-- where sending it again would be wrong: a register or trigger-callback (its
-- token was scrubbed from the stored body: call the function again), a usage
-- reading a later one superseded (ELMO would see the reading go down), an
-- adjust request ELMO's rules no longer allow (a day other than tomorrow,
-- after the deadline, another request for that day).
CREATE OR REPLACE FUNCTION elmo_retry(id bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    m elmo_outbox;
    later bigint;
    adj elmo_adjust_request;
BEGIN
    PERFORM _elmo_wake();
    SELECT * INTO m FROM elmo_outbox o WHERE o.id = elmo_retry.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no message % in elmo_outbox', coalesce(elmo_retry.id::text, 'NULL')
            USING ERRCODE = 'no_data_found', DETAIL = 'It was never queued, or retention removed it.',
                  HINT = 'SELECT id, message, state, last_error FROM elmo_outbox_status WHERE state = ''failed'';';
    END IF;
    IF m.state <> 'failed' THEN
        RAISE EXCEPTION 'message % is %, not failed', m.id, m.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only a failed message is sent again; the worker retries the others by itself.',
                  HINT = format('SELECT elmo_wait(%s) waits for its outcome.', m.id);
    END IF;
    IF m.message = 'register' OR m.message LIKE 'trigger-callback/%' THEN
        RAISE EXCEPTION 'a failed % is not sent again', m.message
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its body carried a token, which was removed from it once it failed.',
                  HINT = CASE WHEN m.message = 'register'
                              THEN 'Call elmo_register (or elmo_update_registration, elmo_unregister) again.'
                              ELSE 'Call elmo_trigger_callback again.' END;
    END IF;
    IF _elmo_is_business(m.message) THEN
        PERFORM _elmo_registration_open();
    END IF;
    IF m.message = 'update_group_measurements' THEN
        SELECT l.outbox_id INTO later FROM elmo_usage_last l WHERE l.group_id = m.group_id AND l.outbox_id > m.id;
        IF later IS NOT NULL THEN
            RAISE EXCEPTION 'a later reading of group % was queued since (message %)', m.group_id, later
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'ELMO reads each value as a cumulative reading: an older one sent now would make it go down.',
                      HINT = 'The later reading carries the energy of this one; nothing needs sending again.';
        END IF;
    ELSIF m.message = 'adjust_group_capacity_forecast' THEN
        SELECT * INTO adj FROM elmo_adjust_request a WHERE a.outbox_id = m.id FOR UPDATE;
        IF FOUND THEN
            PERFORM _elmo_adjust_guard(adj.group_id, adj.day, now());
            -- with the guards off, as a new request does, it replaces a pending one
            UPDATE elmo_adjust_request a SET state = 'expired', closed_at = now()
             WHERE a.group_id = adj.group_id AND a.day = adj.day AND a.state = 'pending';
            UPDATE elmo_adjust_request a SET state = 'pending', closed_at = NULL WHERE a.id = adj.id;
        END IF;
    END IF;
    UPDATE elmo_outbox o
       SET state = 'queued', attempts = 0, next_attempt_at = now(), retried_at = now()
     WHERE o.id = m.id;
    RETURN m.id;
END;
$$;
