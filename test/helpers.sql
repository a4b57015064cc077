-- test/helpers.sql — included by every pgTAP file (\ir ../helpers.sql).
-- HTTP from SQL through curl (COPY FROM PROGRAM: a real socket into the
-- worker or the simulator), and polling with a deadline instead of sleeps.
\set QUIET 1
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS elmo_oscp;
CREATE SCHEMA IF NOT EXISTS test;
-- The CSMS's triggers run as the worker's role (elmo_oscp.role): like any
-- CSMS, the tests grant it what their triggers touch.
GRANT USAGE ON SCHEMA test TO elmo_oscp_worker;
GRANT ALL ON ALL TABLES IN SCHEMA test TO elmo_oscp_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA test GRANT ALL ON TABLES TO elmo_oscp_worker;

CREATE OR REPLACE FUNCTION test.q(s text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT '''' || replace(s, '''', '''\''''') || '''' $$;

-- test.http(method, url, body, headers) → (status, response): curl over loopback.
-- A body starting with '@' names a file (curl's --data-binary @file).
CREATE OR REPLACE FUNCTION test.http(method text, url text, body text DEFAULT NULL,
                                     headers text[] DEFAULT '{}',
                                     OUT status int, OUT response text)
    LANGUAGE plpgsql AS $$
DECLARE
    cmd text := 'curl -s -m 30 -w ''\n%{http_code}'' -X ' || test.q(method);
    h text;
BEGIN
    FOREACH h IN ARRAY headers LOOP
        cmd := cmd || ' -H ' || test.q(h);
    END LOOP;
    IF body IS NOT NULL THEN
        cmd := cmd || ' --data-binary ' || test.q(body);
    END IF;
    cmd := cmd || ' ' || test.q(url) || ' ; true';
    CREATE TEMP TABLE IF NOT EXISTS _http_out (n serial, line text);
    TRUNCATE _http_out;
    EXECUTE format('COPY _http_out (line) FROM PROGRAM %L WITH (FORMAT csv, DELIMITER E''\x01'', QUOTE E''\x02'')', cmd);
    -- (the cast outside: a target list is computed before ORDER BY/LIMIT)
    status := (SELECT line FROM _http_out ORDER BY n DESC LIMIT 1)::int;
    SELECT coalesce(string_agg(coalesce(line, ''), E'\n' ORDER BY n), '') INTO response
      FROM _http_out WHERE n < (SELECT max(n) FROM _http_out);
END $$;

-- The worker's URL for an OSCP message name (or 'health').
CREATE OR REPLACE FUNCTION test.fp(name text) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT 'http://127.0.0.1:' || current_setting('elmo_oscp.port') || current_setting('elmo_oscp.path_prefix') || '/' || name $$;

-- The simulator's URL for a path.
CREATE OR REPLACE FUNCTION test.sim(path text) RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT 'http://127.0.0.1:' || current_setting('elmo_test.sim_port') || path $$;

-- Our current token (what ELMO presents to us).
CREATE OR REPLACE FUNCTION test.token() RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT our_token FROM elmo_registration $$;

-- POST an OSCP message to the worker, authenticated, with a fresh X-Request-ID.
CREATE OR REPLACE FUNCTION test.post(name text, body text, request_id text DEFAULT NULL,
                                     extra_headers text[] DEFAULT '{}',
                                     OUT status int, OUT response text)
    LANGUAGE sql AS $$
    SELECT * FROM test.http('POST', test.fp(name), body,
        ARRAY['Content-Type: application/json',
              'Authorization: Token ' || coalesce(test.token(), 'none'),
              'X-Request-ID: ' || coalesce(request_id, _elmo_request_id())] || extra_headers) $$;

-- Poll until a boolean SQL expression is true, or the deadline passes.
CREATE OR REPLACE FUNCTION test.wait_for(cond text, timeout interval DEFAULT '15s') RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    ok boolean;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();   -- pg_stat_activity is cached per transaction
        EXECUTE 'SELECT (' || cond || ')::boolean' INTO ok;
        IF ok THEN RETURN true; END IF;
        IF clock_timestamp() > deadline THEN RETURN false; END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END $$;

-- A day-ahead body: 24 hourly blocks of local day [day], one capacity per hour.
CREATE OR REPLACE FUNCTION test.day_body(group_id text, day date, caps numeric[]) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT json_build_object('group_id', group_id, 'type', 'CONSUMPTION', 'forecasted_blocks',
             json_agg(json_build_object('capacity', caps[h + 1], 'phase', 'ALL', 'unit', 'KW',
                      'start_time', _elmo_ts(_elmo_day_start(day) + h * interval '1 hour'),
                      'end_time', _elmo_ts(_elmo_day_start(day) + (h + 1) * interval '1 hour'))
                      ORDER BY h))::text
      FROM generate_series(0, 23) h $$;

-- ... at [kw] every hour.
CREATE OR REPLACE FUNCTION test.day_body(group_id text, day date, kw numeric) RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT test.day_body(group_id, day, array_fill(kw, ARRAY[24])) $$;

-- An emergency body: one block [from, to) at [kw].
CREATE OR REPLACE FUNCTION test.emergency_body(group_id text, from_ts timestamptz, to_ts timestamptz, kw numeric) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT json_build_object('group_id', group_id, 'type', 'CONSUMPTION', 'forecasted_blocks',
             json_build_array(json_build_object('capacity', kw, 'phase', 'ALL', 'unit', 'KW',
                 'start_time', _elmo_ts(from_ts), 'end_time', _elmo_ts(to_ts))))::text $$;

-- Start from a clean slate: no registration, no messages; simulator reset.
CREATE OR REPLACE FUNCTION test.reset() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    -- The worker locks some of these tables in another order; when it is slow (valgrind) the
    -- two can deadlock, and the deadlock detector may pick this statement: try again.
    FOR attempt IN 1..20 LOOP
        BEGIN
            TRUNCATE capacity_forecast, capacity_forecast_block, elmo_received_message,
                     elmo_adjust_request, elmo_outbox, elmo_registration, elmo_usage_last,
                     elmo_group_settings, capacity_in_force, _elmo_capacity_dirty, _elmo_alert CASCADE;
            EXIT;
        EXCEPTION WHEN deadlock_detected THEN
            IF attempt = 20 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.1);
        END;
    END LOOP;
    PERFORM _elmo_kick();
END $$;

-- A registration whose token the tests know, without ELMO: as if ELMO had
-- answered.  (The register flow itself is tested through the simulator.)
CREATE OR REPLACE FUNCTION test.fake_registration() RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE tok text := _elmo_random_token();
BEGIN
    PERFORM test.reset();
    INSERT INTO elmo_registration (state, elmo_url, public_url, our_token, elmo_token, elmo_base_url, connected)
    VALUES ('registered', test.sim('/oscp/2.0'), current_setting('elmo_oscp.public_url'), tok,
            'ELMO-SIDE-TOKEN', test.sim('/oscp/2.0'), true);
    RETURN tok;
END $$;
\set QUIET 0
