-- Inbound, second step: applying a stored message (write forecasts /
-- registration state, fire the CSMS's triggers, NOTIFY).  src/inbound.c runs
-- _elmo_apply in its own subtransaction, so a CSMS trigger that fails loses
-- nothing: the failure is recorded by _elmo_apply_failed and retried by the
-- worker (_elmo_applies_due); what keeps failing is the DBA's to see and settle
-- (elmo_unapplied, elmo_replay, elmo_discard).

-- ---------------------------------------------------------------- application

-- ELMO's base_url resolved against the ELMO URL given to elmo_register
-- (RFC 3986 reference resolution, no dot segments); no trailing '/'.
CREATE OR REPLACE FUNCTION _elmo_resolve_url(base text, ref text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(CASE
        WHEN ref ~ '^[A-Za-z][A-Za-z0-9+.-]*:' THEN ref
        WHEN ref LIKE '//%' THEN substring(base FROM '^[A-Za-z][A-Za-z0-9+.-]*:') || ref
        WHEN ref LIKE '/%' THEN substring(base FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*') || ref
        WHEN substring(base FROM '^[^?#]*') ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/]*$'
            THEN substring(base FROM '^[^?#]*') || '/' || ref
        ELSE regexp_replace(substring(base FROM '^[^?#]*'), '[^/]*$', '') || ref
    END, '/') $$;

-- ELMO was heard from: last_heard_at, and the previous token retired when ELMO
-- used the current one.  Never waits for a session that holds the registration
-- row (SKIP LOCKED): a later message does it then.  (PL/pgSQL: it keeps its
-- plan; a SQL function would be planned at every call.)
CREATE OR REPLACE FUNCTION _elmo_heard(received_at timestamptz, used_current_token boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    UPDATE elmo_registration g
       SET last_heard_at = greatest(g.last_heard_at, $1),
           previous_token = CASE WHEN $2 THEN NULL ELSE g.previous_token END
     WHERE g.id = (SELECT g2.id FROM elmo_registration g2 WHERE g2.id = 1 FOR UPDATE SKIP LOCKED);
END
$fn$;

-- ELMO's heartbeat: when it goes offline.
CREATE OR REPLACE FUNCTION _elmo_apply_heartbeat(body jsonb, received_at timestamptz,
                                                 used_current_token boolean)
    RETURNS void
    LANGUAGE sql VOLATILE AS $$
    UPDATE elmo_registration g
       SET elmo_offline_mode_at = ($1->>'offline_mode_at')::timestamptz,
           last_heard_at = greatest(g.last_heard_at, $2),
           previous_token = CASE WHEN $3 THEN NULL ELSE g.previous_token END
     WHERE g.id = 1 $$;

-- ELMO's register: its token and base URL (the 2.0 entry when offered, else
-- the first), resolved against the URL given to elmo_register.
CREATE OR REPLACE FUNCTION _elmo_apply_register(body jsonb, received_at timestamptz,
                                                used_current_token boolean, elmo_url text)
    RETURNS text
    LANGUAGE sql VOLATILE AS $$
    UPDATE elmo_registration g
       SET elmo_token = $1->>'token',
           elmo_version = vu.v->>'version',
           elmo_base_url = _elmo_resolve_url($4, vu.v->>'base_url'),
           state = 'registered', registered_at = $2,
           initial_token = NULL, last_error = NULL,
           last_heard_at = greatest(g.last_heard_at, $2),
           previous_token = CASE WHEN $3 THEN NULL ELSE g.previous_token END,
           updated_at = now()
      FROM (SELECT t.v FROM jsonb_array_elements($1->'version_url') WITH ORDINALITY AS t(v, o)
             ORDER BY t.v->>'version' = '2.0' DESC, t.o LIMIT 1) vu
     WHERE g.id = 1
    RETURNING g.state $$;

-- ELMO's DELETE register: it no longer talks to us.
CREATE OR REPLACE FUNCTION _elmo_apply_unregister(received_at timestamptz, used_current_token boolean)
    RETURNS text
    LANGUAGE sql VOLATILE AS $$
    UPDATE elmo_registration g
       SET state = 'unregistered', connected = false,
           last_heard_at = greatest(g.last_heard_at, $1),
           previous_token = CASE WHEN $2 THEN NULL ELSE g.previous_token END,
           updated_at = now()
     WHERE g.id = 1
    RETURNING g.state $$;

-- ELMO's handshake: what it requires of us (OSCP's required_behaviour, or the
-- testbed's flat form), acknowledged by a handshake_acknowledge; until ELMO
-- accepts that, we are not connected.
CREATE OR REPLACE FUNCTION _elmo_apply_handshake(request_id text, body jsonb, received_at timestamptz,
                                                 used_current_token boolean)
    RETURNS text
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    rb      jsonb;
    v_state text;
BEGIN
    rb := CASE WHEN jsonb_typeof($2->'required_behaviour') = 'object' THEN $2->'required_behaviour'
               ELSE jsonb_strip_nulls(jsonb_build_object(
                        'heartbeat_interval', $2->'heartbeat_interval',
                        'measurement_configuration', $2->'measurement_configuration')) END;
    UPDATE elmo_registration g
       SET required_behaviour = rb,
           heartbeat_interval = round((rb->>'heartbeat_interval')::numeric)::int,
           handshake_request_id = $1,
           connected = false,
           last_heard_at = greatest(g.last_heard_at, $3),
           previous_token = CASE WHEN $4 THEN NULL ELSE g.previous_token END,
           updated_at = now()
     WHERE g.id = 1
    RETURNING g.state INTO v_state;
    PERFORM _elmo_enqueue('handshake_acknowledge', '{}', NULL, $1);
    RETURN v_state;
END
$fn$;

-- ELMO's token leaves a stored register once elmo_registration holds it:
-- '***' in its place, in raw_body (as sent, when the token is there in the
-- form JSON gives it; else the body as jsonb writes it) and in body.
CREATE OR REPLACE FUNCTION _elmo_scrub_received(message_id bigint) RETURNS void
    LANGUAGE sql VOLATILE AS $$
    UPDATE elmo_received_message m
       SET body = jsonb_set(m.body, '{token}', '"***"'),
           raw_body = CASE WHEN strpos(m.raw_body, to_json(m.body->>'token')::text) > 0
                           THEN replace(m.raw_body, to_json(m.body->>'token')::text, '"***"')
                           ELSE jsonb_set(m.body, '{token}', '"***"')::text END
     WHERE m.id = $1 AND jsonb_typeof(m.body->'token') = 'string' AND m.body->>'token' <> '***' $$;

-- ELMO's register, DELETE register or handshake: the registration row must
-- exist.  Releases what the new state allows; NOTIFY elmo_registration.
CREATE OR REPLACE FUNCTION _elmo_apply_registration(message_id bigint, message text, method text,
        request_id text, body jsonb, received_at timestamptz, used_current_token boolean)
    RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_url   text;
    v_state text;
BEGIN
    SELECT g.elmo_url INTO v_url FROM elmo_registration g WHERE g.id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'elmo_oscp: ELMO sent % but there is no registration', $2
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Received message %s (X-Request-ID %s).', $1, $4),
                  HINT = 'Call elmo_register(elmo_url, initial_token) first; then elmo_replay this message.';
    END IF;
    IF $2 = 'register' AND $3 = 'DELETE' THEN
        v_state := _elmo_apply_unregister($6, $7);
    ELSIF $2 = 'register' THEN
        v_state := _elmo_apply_register($5, $6, $7, v_url);
    ELSIF $2 = 'handshake' THEN
        v_state := _elmo_apply_handshake($4, $5, $6, $7);
    ELSE
        RAISE EXCEPTION 'elmo_oscp: cannot apply message "%"', $2
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $2 = 'register' THEN
        PERFORM _elmo_scrub_received($1);
    END IF;
    PERFORM _elmo_registration_changed();
    PERFORM _elmo_notify_registration(CASE WHEN $2 = 'handshake' THEN 'handshake'
                                           WHEN $3 = 'DELETE' THEN 'unregister'
                                           WHEN $3 = 'PUT' THEN 'register_update'
                                           ELSE 'register' END);
END
$fn$;

-- Applies one stored message.  src/inbound.c runs it in a subtransaction; it
-- raises on failure (nothing of it is kept then).  stored_applied: the
-- message was stored by this transaction already marked applied
-- (_elmo_receive's apply_now), so it is only read here.
CREATE OR REPLACE FUNCTION _elmo_apply(message_id bigint, stored_applied boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    m       record;
    v_fid   bigint;
    v_state text;
BEGIN
    -- a CSMS's deferred constraint triggers fire inside this subtransaction
    SET CONSTRAINTS ALL IMMEDIATE;

    -- Claim it first (unless the worker stored it applied already): a
    -- concurrent elmo_replay waits here, then finds it applied.
    IF NOT stored_applied THEN
        UPDATE elmo_received_message r
           SET state = 'applied', applied_at = now(), apply_attempts = r.apply_attempts + 1,
               next_apply_at = NULL
         WHERE r.id = $1 AND r.state IN ('received', 'apply_failed');
    END IF;
    -- And see whether the registration has heard of it yet: the messages of
    -- a batch share received_at, so a forecast updates the registration row
    -- once per batch, not once per message.
    IF stored_applied OR FOUND THEN
        SELECT r.message, r.method, r.request_id, r.body, r.received_at, r.group_id, r.kind,
               r.forecast_day, r.adjust_request_id, r.used_current_token,
               EXISTS (SELECT FROM elmo_registration g
                        WHERE g.id = 1 AND (g.last_heard_at IS NULL OR g.last_heard_at < r.received_at
                                            OR r.used_current_token AND g.previous_token IS NOT NULL))
                   AS unheard
          INTO m
          FROM elmo_received_message r
         WHERE r.id = $1 AND r.state = 'applied';
    END IF;
    IF NOT FOUND THEN                           -- the UPDATE's, or the SELECT's
        SELECT r.state INTO v_state FROM elmo_received_message r WHERE r.id = $1;
        IF v_state IS NULL THEN
            RAISE EXCEPTION 'elmo_oscp: no received message with id %', $1
                USING ERRCODE = 'no_data_found',
                      HINT = 'elmo_unapplied lists the messages waiting to be applied.';
        ELSIF stored_applied THEN
            RAISE EXCEPTION 'elmo_oscp: received message % is %, not stored as applied', $1, v_state
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Only the worker applies a message it stored as applied; _elmo_apply(id) claims any other.';
        END IF;
        RAISE EXCEPTION 'elmo_oscp: received message % is already %', $1, v_state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only messages in state received or apply_failed can be applied.';
    END IF;

    IF m.message = 'update_group_capacity_forecast' THEN
        -- Every forecast comes this way, so its step is here rather than in
        -- a function of its own (a call costs a few µs).  Blocks and forecast
        -- in one statement: the aggregate over the blocks' RETURNING makes
        -- every block row exist before the forecast row, and all AFTER ROW
        -- triggers (the CSMS's, on either table) fire at the end of the
        -- statement, seeing both.
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
        IF m.adjust_request_id IS NOT NULL THEN         -- the reply to our adjust request
            UPDATE elmo_adjust_request a
               SET state = 'answered', reply_forecast_id = v_fid, closed_at = now()
             WHERE a.id = m.adjust_request_id AND a.state IN ('pending', 'expired');
        END IF;
        PERFORM pg_notify('elmo_capacity_forecast',
                          json_build_object('id', v_fid, 'group_id', m.group_id, 'kind', m.kind,
                                            'forecast_day', m.forecast_day)::text);
        IF m.unheard THEN
            PERFORM _elmo_heard(m.received_at, m.used_current_token);
        END IF;
        RETURN;
    END IF;
    IF m.message = 'heartbeat' THEN
        PERFORM _elmo_apply_heartbeat(m.body, m.received_at, m.used_current_token);
    ELSE
        PERFORM _elmo_apply_registration($1, m.message, m.method, m.request_id, m.body, m.received_at,
                                         m.used_current_token);
    END IF;
END
$fn$;

-- A message _elmo_receive stored as applied (apply_now) that was not applied
-- after all (its apply failed, or the batch's time ran out): back to what
-- storing it as received would have made, in the same transaction.
CREATE OR REPLACE FUNCTION _elmo_apply_later(message_id bigint) RETURNS void
    LANGUAGE sql VOLATILE AS $$
    UPDATE elmo_received_message m
       SET state = 'received', applied_at = NULL, apply_attempts = 0
     WHERE m.id = $1 AND m.state = 'applied' $$;

-- Records a failed apply (its subtransaction was rolled back): backoff 2, 4, 8,
-- ... seconds, never more than a minute; NOTIFY elmo_apply_failed, and the
-- alert apply_failing when it keeps failing.
CREATE OR REPLACE FUNCTION _elmo_apply_failed(message_id bigint, sqlstate text, error text) RETURNS void
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
    RETURNING m.id, m.group_id, m.message, m.apply_attempts INTO r;
    IF FOUND THEN
        PERFORM pg_notify('elmo_apply_failed',
                          json_build_object('id', r.id, 'group_id', r.group_id, 'message', r.message,
                                            'sqlstate', $2, 'error', left($3, 1000))::text);
        PERFORM _elmo_check_apply_failing(r.id, r.group_id, r.message, r.apply_attempts, $3);
    END IF;
END
$fn$;

-- Unapplied messages due now, in receipt order.
CREATE OR REPLACE FUNCTION _elmo_applies_due(lim int) RETURNS SETOF bigint
    LANGUAGE sql VOLATILE AS $$
    SELECT m.id FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed')
       AND (m.next_apply_at IS NULL OR m.next_apply_at <= clock_timestamp())
     ORDER BY m.id
     LIMIT lim $$;

-- When the earliest unapplied message is due (in the past when one is due now);
-- NULL when there is none.
CREATE OR REPLACE FUNCTION _elmo_next_apply_at() RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(coalesce(m.next_apply_at, m.received_at)) FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed') $$;

-- Purges applied/discarded raw messages older than elmo_oscp.retention.
-- Forecasts are kept.
CREATE OR REPLACE FUNCTION _elmo_retention_inbound() RETURNS void
    LANGUAGE sql VOLATILE AS $$
    DELETE FROM elmo_received_message m
     WHERE m.received_at < now() - _elmo_setting('retention')::interval
       AND m.state IN ('applied', 'discarded') $$;

-- ---------------------------------------------------------------- unapplied messages

-- A message whose application keeps failing (a CSMS trigger that raises) stays
-- here until the DBA replays it after a fix, or discards it.

CREATE OR REPLACE VIEW elmo_unapplied AS
    SELECT m.id, m.message, m.group_id, m.kind, m.state, m.apply_attempts, m.last_sqlstate,
           m.last_error, m.received_at, now() - m.received_at AS age, m.next_apply_at
      FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed')
     ORDER BY m.id;

-- Applies an unapplied message now, in the caller's transaction (its errors
-- propagate; the caller's transaction then rolls back and the message stays
-- as it was).  Returns the new state.  The application itself runs with the
-- rights of the worker's role (elmo_oscp.role), as when the worker applies
-- it: the CSMS's triggers never run as this function's owner.
CREATE OR REPLACE FUNCTION elmo_replay(message_id bigint) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $fn$
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
    PERFORM _elmo_replay_apply($1);
    RETURN 'applied';
END
$fn$;

-- _elmo_apply(message_id) with the rights of elmo_oscp.role (src/run_as.c).
CREATE OR REPLACE FUNCTION _elmo_replay_apply(message_id bigint) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_replay_apply';

-- Gives up on an unapplied message, recording why.  (No CSMS code runs here:
-- it may run as its owner.)
CREATE OR REPLACE FUNCTION elmo_discard(message_id bigint, reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $fn$
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
