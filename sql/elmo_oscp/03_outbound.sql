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
    g text := nullif(btrim(elmo_adjust_capacity.group_id), '');
    body text;
    new_id bigint;
BEGIN
    PERFORM _elmo_wake();
    IF g IS NULL THEN
        RAISE EXCEPTION 'group_id is required'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'group_id is the station id ELMO assigned.',
                  HINT = 'Use the group_id of ELMO''s forecasts (capacity_forecast.group_id).';
    END IF;
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
           || ',"phase":"ALL","unit":"KWH","direction":"IMPORT","measure_time":"' || _elmo_ts(measured_at) || '"}]}'
    $$;

-- update_group_measurements: the station's lifetime cumulative kWh (decisions §8).
CREATE FUNCTION elmo_report_usage(group_id text, kwh numeric, measured_at timestamptz DEFAULT now(),
                                  allow_decrease boolean DEFAULT false)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp
    AS $$
DECLARE
    g text := nullif(btrim(elmo_report_usage.group_id), '');
    prior elmo_usage_last;
    new_id bigint;
BEGIN
    PERFORM _elmo_wake();
    IF g IS NULL THEN
        RAISE EXCEPTION 'group_id is required'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'group_id is the station id ELMO assigned.',
                  HINT = 'Use the group_id of ELMO''s forecasts (capacity_forecast.group_id).';
    END IF;
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
    _elmo_enqueue(text, text, text, text, text, text, text), _elmo_registration_changed(),
    _elmo_claim(int), _elmo_record(bigint, int, text, text, jsonb), _elmo_recover(),
    _elmo_housekeeping(), _elmo_report_usage_auto(text), _elmo_retention_outbound(),
    _elmo_registration(boolean), _elmo_adjust_guard(text, date, timestamptz)
  FROM PUBLIC;
