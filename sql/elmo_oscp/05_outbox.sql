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

-- ---------------------------------------------------------------- helpers

-- 'abcd…wxyz': enough to tell tokens apart, never enough to use one.
CREATE OR REPLACE FUNCTION _elmo_mask(token text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN token IS NULL THEN NULL
                WHEN length(token) < 16 THEN '…'
                ELSE left(token, 4) || '…' || right(token, 4) END
    $$;

-- ELMO refuses these before our handshake_acknowledge was accepted (spec, capture 05a).
CREATE OR REPLACE FUNCTION _elmo_is_business(message text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT message NOT IN ('register', 'handshake_acknowledge')
                 AND message NOT LIKE 'trigger-callback/%' $$;

-- The token an outbox row is authorized with (capture 54a/54b: before ELMO's
-- register arrives, the initial token still works).
CREATE OR REPLACE FUNCTION _elmo_token_for(r elmo_registration, auth text) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE auth
             WHEN 'initial' THEN coalesce(r.initial_token, r.elmo_token)
             WHEN 'elmo' THEN coalesce(r.elmo_token, r.initial_token)
             WHEN 'ours' THEN r.our_token
           END
    $$;

-- ELMO's error text from its answer {"message": "..." | ["...", ...], "error", "statusCode"}.
CREATE OR REPLACE FUNCTION _elmo_error_message(body text) RETURNS text
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
CREATE OR REPLACE FUNCTION _elmo_scrub(s text, r elmo_registration) RETURNS text
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
CREATE OR REPLACE FUNCTION _elmo_scrub_body(message text, body text) RETURNS text
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
CREATE OR REPLACE FUNCTION _elmo_url_origin(url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*') $$;

-- The register body, keys in ELMO's order (capture 02).
CREATE OR REPLACE FUNCTION _elmo_register_body(token text, public_url text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT '{"token":' || to_json(token)::text
           || ',"version_url":[{"version":"2.0","base_url":' || to_json(public_url)::text || '}]}'
    $$;

-- Warn when ELMO's base_url rule would refuse our URL (captures 01a–01d).
CREATE OR REPLACE FUNCTION _elmo_check_public_url(public_url text) RETURNS void
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
CREATE OR REPLACE FUNCTION _elmo_registration(for_update boolean DEFAULT false) RETURNS elmo_registration
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

-- The registration, for a message about a station (usage, adjust request,
-- compliance error): raises when ELMO would take none, rather than park the
-- message for a handshake that never comes.  That is after our DELETE
-- register, from when it is queued.
CREATE OR REPLACE FUNCTION _elmo_registration_open() RETURNS elmo_registration
    LANGUAGE plpgsql
    AS $$
DECLARE
    r elmo_registration := _elmo_registration();
    bye elmo_outbox;
BEGIN
    -- (a register has no group: the partial index on undelivered messages finds it at once)
    SELECT * INTO bye FROM elmo_outbox o
     WHERE o.group_id IS NULL AND o.state NOT IN ('delivered', 'failed')
       AND o.message = 'register' AND o.method = 'DELETE' AND o.id > coalesce(r.register_outbox_id, 0)
     ORDER BY o.id DESC LIMIT 1;
    IF r.state = 'unregistered' OR bye.id IS NOT NULL THEN
        RAISE EXCEPTION 'this CSMS %', CASE WHEN r.state = 'unregistered' THEN 'is unregistered from ELMO'
                                            ELSE 'is unregistering from ELMO' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN r.state = 'unregistered'
                                THEN 'ELMO accepted our DELETE register and takes no messages from this CSMS until it registers again.'
                                ELSE format('Our DELETE register (elmo_outbox id %s) is %s; ELMO takes no messages after it.',
                                            bye.id, bye.state) END,
                  HINT = 'To talk to ELMO again, register: SELECT elmo_register(' || quote_literal(r.elmo_url)
                         || ', ''<initial token>'');';
    END IF;
    RETURN r;
END;
$$;

-- NOTIFY elmo_registration: every event, from either side, with the same
-- keys {"state", "event", "connected", "error"}, read from the registration
-- as the event left it.
CREATE OR REPLACE FUNCTION _elmo_notify_registration(event text) RETURNS void
    LANGUAGE sql
    AS $$
    SELECT pg_notify('elmo_registration',
                     json_build_object('state', r.state, 'event', event, 'connected', r.connected,
                                       'error', r.last_error)::text)
      FROM elmo_registration r WHERE r.id = 1
    $$;

-- ---------------------------------------------------------------- delivery machinery

CREATE OR REPLACE FUNCTION _elmo_enqueue(message text, body text, group_id text DEFAULT NULL,
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
-- unregister; elmo_register; rows restored): release what the new state
-- allows.  Wakes the worker without _elmo_wake's checks: a restore into a
-- database the worker does not serve must not fail here.
CREATE OR REPLACE FUNCTION _elmo_registration_changed() RETURNS void
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
        PERFORM _elmo_kick();
    END IF;
END;
$$;

-- Due messages, oldest first; per group only the oldest undelivered one, and
-- register messages one at a time in order.  Marks them 'sending'.
CREATE OR REPLACE FUNCTION _elmo_claim(lim int)
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

    -- Park what may not go now: no retry storm against ELMO's 403.  Without
    -- a registration nothing goes, and nothing is parked: messages that
    -- arrive before their registration (a restore) go once it is there.
    IF have_reg AND (locked OR NOT connected) THEN
        UPDATE elmo_outbox o
           SET state = CASE WHEN locked AND o.auth <> 'ours' THEN 'held' ELSE 'waiting_for_handshake' END
         WHERE o.state = 'queued' AND o.next_attempt_at <= now()
           AND ((locked AND o.auth <> 'ours') OR (NOT connected AND _elmo_is_business(o.message)));
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
CREATE OR REPLACE FUNCTION _elmo_backoff(attempts int) RETURNS interval
    LANGUAGE sql VOLATILE
    AS $$
    SELECT make_interval(secs => least(300.0, power(2.0, greatest(attempts, 1) - 1))
                                 * (0.5 + random() * 0.5))
    $$;

-- ---------------------------------------------------------------- outcomes, one kind each

-- What ELMO's 2xx to some messages changes: to our handshake_acknowledge, we
-- are connected (and what waited for it is released); to our DELETE register,
-- unregistered.
CREATE OR REPLACE FUNCTION _elmo_record_accepted(message text, method text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF message = 'handshake_acknowledge' THEN
        -- (while locked out, an acknowledge that was already on its way changes nothing)
        UPDATE elmo_registration g
           SET connected = g.state <> 'locked_out', connected_at = now(), updated_at = now(),
               last_error = CASE WHEN g.state = 'locked_out' THEN g.last_error END
         WHERE g.id = 1;
        PERFORM _elmo_registration_changed();
        PERFORM _elmo_notify_registration('connected');
    ELSIF message = 'register' AND method = 'DELETE' THEN
        UPDATE elmo_registration g
           SET state = 'unregistered', connected = false, updated_at = now(), last_error = NULL
         WHERE g.id = 1;
        PERFORM _elmo_notify_registration('unregistered');
    END IF;
END;
$$;

-- 429, 5xx, no answer: queued again with backoff; false when out of attempts
-- (elmo_oscp.max_attempts) or too old (elmo_oscp.max_retry_age, from its
-- queueing or its elmo_retry): the caller then records a failure.
CREATE OR REPLACE FUNCTION _elmo_record_retry(m elmo_outbox, http_status int, error text,
                                              response_body text, timing jsonb)
    RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF m.attempts >= _elmo_setting('max_attempts')::int
       OR now() - coalesce(m.retried_at, m.created_at) >= _elmo_setting('max_retry_age')::interval THEN
        RETURN false;
    END IF;
    UPDATE elmo_outbox o
       SET state = 'queued', next_attempt_at = now() + _elmo_backoff(m.attempts),
           last_status = nullif($2, 0), last_error = $3, response_body = $4, timing = $5
     WHERE o.id = m.id;
    RETURN true;
END;
$$;

-- 401, 403 bad token: ELMO no longer accepts the token.  Unless it changed
-- since the request left (then the message goes again with the new one), the
-- registration is locked out (and not connected: ELMO takes nothing from
-- us) and everything ELMO-bound is held until an administrator's new initial
-- token and elmo_register.
CREATE OR REPLACE FUNCTION _elmo_record_locked_out(m elmo_outbox, r elmo_registration, http_status int,
                                                   error text, response_body text, timing jsonb)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF m.token_fingerprint IS DISTINCT FROM md5(_elmo_token_for(r, m.auth)) THEN
        UPDATE elmo_outbox o
           SET state = 'queued', next_attempt_at = now(), last_status = $3,
               last_error = $4 || ' (the token changed since: retrying with the new one)',
               response_body = $5, timing = $6
         WHERE o.id = m.id;
        RETURN;
    END IF;
    UPDATE elmo_outbox o
       SET state = 'held', last_status = $3, last_error = $4, response_body = $5, timing = $6
     WHERE o.id = m.id;
    UPDATE elmo_outbox o SET state = 'held'
     WHERE o.state IN ('queued', 'waiting_for_handshake') AND o.auth <> 'ours';
    IF r.state IS DISTINCT FROM 'locked_out' THEN       -- one alert per lock-out
        PERFORM _elmo_alert('locked_out', NULL, r.requested_at::text || ' ' || m.id,
                            format('ELMO refused our token: %s %s (elmo_outbox %s): %s', m.method, m.message, m.id, $4),
                            'Messages to ELMO are held. Ask ELMO''s administrator for a new initial token, then run '
                            || 'SELECT elmo_register(' || quote_literal(r.elmo_url) || ', ''<new initial token>'');');
    END IF;
    UPDATE elmo_registration g
       SET state = 'locked_out', connected = false, updated_at = now(),
           last_error = 'ELMO refused our ' || m.message || ' (' || $4 || '). ELMO no longer accepts '
                        || CASE m.auth WHEN 'initial' THEN 'the initial token' ELSE 'the token it gave us' END
                        || '. Ask ELMO''s administrator for a new initial token, then run '
                        || 'SELECT elmo_register(' || quote_literal(g.elmo_url) || ', ''<new initial token>'');'
     WHERE g.id = 1;
    PERFORM _elmo_notify_registration('locked_out');
END;
$$;

-- 403 not connected: the message waits for our handshake_acknowledge, unless
-- that was accepted while this one was on its way (then it goes again).
CREATE OR REPLACE FUNCTION _elmo_record_not_connected(m elmo_outbox, r elmo_registration, http_status int,
                                                      error text, response_body text, timing jsonb)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF r.connected AND r.connected_at > m.sent_at THEN
        UPDATE elmo_outbox o
           SET state = 'queued', next_attempt_at = now(), last_status = $3, last_error = $4,
               response_body = $5, timing = $6
         WHERE o.id = m.id;
        RETURN;
    END IF;
    UPDATE elmo_outbox o
       SET state = 'waiting_for_handshake', last_status = $3, last_error = $4,
           response_body = $5, timing = $6
     WHERE o.id = m.id;
    IF r.connected THEN
        UPDATE elmo_registration g
           SET connected = false, updated_at = now(),
               last_error = 'ELMO says this CSMS is not connected (' || $4 || ')'
         WHERE g.id = 1;
        PERFORM _elmo_notify_registration('not_connected');
    END IF;
END;
$$;

-- A reading ELMO refused never stays the baseline of "never goes down": when
-- it was the group's last one, the last reading before it that was not
-- refused takes its place (none: no baseline).
CREATE OR REPLACE FUNCTION _elmo_usage_refused(group_id text, outbox_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    prior record;
BEGIN
    PERFORM 1 FROM elmo_usage_last l WHERE l.group_id = $1 AND l.outbox_id = $2 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;                                 -- a later reading is the baseline
    END IF;
    SELECT o.id, (o.body::jsonb #>> '{measurements,0,value}')::numeric AS kwh,
           (o.body::jsonb #>> '{measurements,0,measure_time}')::timestamptz AS measured_at
      INTO prior
      FROM elmo_outbox o
     WHERE o.group_id = $1 AND o.message = 'update_group_measurements' AND o.id < $2
       AND o.state <> 'failed'
     ORDER BY o.id DESC
     LIMIT 1;
    IF prior.id IS NULL THEN
        DELETE FROM elmo_usage_last l WHERE l.group_id = $1;
    ELSE
        UPDATE elmo_usage_last l
           SET kwh = prior.kwh, measured_at = prior.measured_at, outbox_id = prior.id
         WHERE l.group_id = $1;
    END IF;
END;
$$;

-- Anything else (400, 404, …), or out of attempts: failed, ELMO's message
-- kept.  A failed adjust request is no longer pending; a refused reading is
-- no longer the baseline; a failed register is the registration's last error.
CREATE OR REPLACE FUNCTION _elmo_record_failed(m elmo_outbox, r elmo_registration, http_status int,
                                               error text, response_body text, timing jsonb)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE elmo_outbox o
       SET state = 'failed', last_status = nullif($3, 0), last_error = $4, response_body = $5,
           timing = $6,
           body = CASE WHEN m.message = 'register' OR m.message LIKE 'trigger-callback/%'
                       THEN _elmo_scrub_body(m.message, o.body) ELSE o.body END
     WHERE o.id = m.id;
    IF m.message = 'adjust_group_capacity_forecast' THEN
        UPDATE elmo_adjust_request a SET state = 'failed', closed_at = now()
         WHERE a.outbox_id = m.id AND a.state = 'pending';
    ELSIF m.message = 'update_group_measurements' THEN
        PERFORM _elmo_usage_refused(m.group_id, m.id);
    ELSIF m.message = 'register' AND m.id = r.register_outbox_id THEN
        UPDATE elmo_registration g
           SET last_error = 'ELMO did not accept our register (' || $4 || ')', updated_at = now()
         WHERE g.id = 1;
        PERFORM _elmo_notify_registration('register_failed');
    END IF;
END;
$$;

-- ---------------------------------------------------------------- outcomes

-- One outcome (http_status 0: no HTTP answer; error: curl's message).  ELMO's
-- answers are kept truncated, tokens scrubbed.
CREATE OR REPLACE FUNCTION _elmo_record(id bigint, http_status int, error text, response_body text, timing jsonb)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    m elmo_outbox;
    r elmo_registration;
    st int := coalesce($2, 0);
    resp text := nullif(left($4, 8192), '');
    elmo_msg text;
    err text;
BEGIN
    IF resp IS NOT NULL OR st NOT BETWEEN 200 AND 299 THEN
        SELECT * INTO r FROM elmo_registration g WHERE g.id = 1;
        resp := left(_elmo_scrub(resp, r), 2048);
    END IF;
    -- 2xx: delivered (the hot path: one statement); the tokens a register or
    -- trigger-callback body carries are scrubbed
    IF st BETWEEN 200 AND 299 THEN
        UPDATE elmo_outbox o
           SET state = 'delivered', last_status = st, last_error = NULL, response_body = resp,
               timing = $5, delivered_at = now(),
               body = CASE WHEN o.message = 'register' OR o.message LIKE 'trigger-callback/%'
                           THEN _elmo_scrub_body(o.message, o.body) ELSE o.body END
         WHERE o.id = $1 AND o.state = 'sending'
        RETURNING o.message, o.method INTO m.message, m.method;
        IF FOUND AND (m.message = 'handshake_acknowledge' OR m.message = 'register') THEN
            PERFORM _elmo_record_accepted(m.message, m.method);
        END IF;
        RETURN;     -- not found: purged, or recorded already (a recovery raced us)
    END IF;

    SELECT * INTO m FROM elmo_outbox o WHERE o.id = $1 FOR UPDATE;
    IF NOT FOUND OR m.state <> 'sending' THEN
        RETURN;     -- purged, or recorded already (a recovery raced us)
    END IF;
    elmo_msg := _elmo_error_message(resp);
    err := CASE WHEN st = 0 THEN coalesce(nullif($3, ''), 'no answer')
                ELSE 'HTTP ' || st || ': ' || coalesce(elmo_msg, nullif(left(resp, 200), ''),
                                                         nullif($3, ''), 'no body') END;
    PERFORM _elmo_note_error(format('%s %s (elmo_outbox %s): %s', m.method, m.message, m.id, err));
    IF st = 0 OR st = 429 OR st >= 500 THEN
        IF _elmo_record_retry(m, st, err, resp, $5) THEN
            RETURN;
        END IF;
        err := 'gave up after ' || m.attempts || ' attempts: ' || err;
    ELSIF st = 401 OR (st = 403 AND (elmo_msg ILIKE '%Invalid authorization token%'
                                     OR elmo_msg ILIKE '%authorization token prefix%')) THEN
        PERFORM _elmo_record_locked_out(m, r, st, err, resp, $5);
        RETURN;
    ELSIF st = 403 AND elmo_msg ILIKE '%is not connected%' THEN
        PERFORM _elmo_record_not_connected(m, r, st, err, resp, $5);
        RETURN;
    END IF;
    PERFORM _elmo_record_failed(m, r, st, err, resp, $5);
END;
$$;

-- The next retry due after now (NULL: none).  Rows due now are the claim's business.
CREATE OR REPLACE FUNCTION _elmo_next_attempt_at() RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT min(next_attempt_at) FROM elmo_outbox WHERE state = 'queued' AND next_attempt_at > now() $$;

-- At worker start: what was in flight when the worker stopped goes again (same X-Request-ID).
CREATE OR REPLACE FUNCTION _elmo_recover() RETURNS void
    LANGUAGE sql
    AS $$ UPDATE elmo_outbox SET state = 'queued', next_attempt_at = now() WHERE state = 'sending' $$;
