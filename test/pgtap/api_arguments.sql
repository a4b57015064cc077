-- Mistakes a CSMS makes calling the API are errors that name what is wrong
-- (SQLSTATE, detail, hint), at the call; a failed message can be sent again
-- (elmo_retry, over real HTTP to the simulator).  Each statement commits.
\ir ../helpers.sql
SELECT plan(45);
SET client_min_messages = error;    -- http:// public URL: elmo_register warns

-- the fields of the error a statement raises (NULLs when it raises none)
CREATE FUNCTION pg_temp.err(stmt text, OUT sqlstate text, OUT message text, OUT detail text, OUT hint text)
    LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hin text;
BEGIN
    EXECUTE stmt;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hin = PG_EXCEPTION_HINT;
    err.sqlstate := st; err.message := msg; err.detail := det; err.hint := hin;
END $$;
CREATE FUNCTION pg_temp.sim(method text, path text, body text DEFAULT NULL) RETURNS int
    LANGUAGE sql AS $$ SELECT status FROM test.http(method, test.sim(path), body, ARRAY['Content-Type: application/json']) $$;
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
\set G '''B6734_AE0100_00848825118'''

SELECT test.reset();
SELECT pg_temp.sim('POST', '/sim/reset', '{}');
SELECT pg_temp.sim('DELETE', '/sim/messages');
INSERT INTO ids SELECT 'register', elmo_register(test.sim('/oscp/2.0'), 'ELMO-TESTBED-TOKEN');
SELECT ok(test.wait_for($$(SELECT connected FROM elmo_registration)$$), 'registered with the simulator and connected');

-- ---------------------------------------------------------------- elmo_adjust_capacity: a capacity as a quoted literal
SELECT is(sqlstate, '22023', 'elmo_adjust_capacity(g, ''100kW''): invalid_parameter_value, not "function is not unique"')
  FROM pg_temp.err($$SELECT elmo_adjust_capacity('B6734_AE0100_00848825118', '100kW')$$);
SELECT is(message, 'capacity_kw must be a number of kW, got ''100kW''', 'the message names the argument and the value')
  FROM pg_temp.err($$SELECT elmo_adjust_capacity('B6734_AE0100_00848825118', '100kW')$$);
SELECT matches(hint, 'elmo_adjust_capacity\(''B6734_AE0100_00848825118'', 250\)', 'the hint shows a call that works')
  FROM pg_temp.err($$SELECT elmo_adjust_capacity('B6734_AE0100_00848825118', '100kW')$$);
SET elmo_oscp.enforce_deadlines = off;     -- whatever the hour in Taipei
INSERT INTO ids SELECT 'adj-text', elmo_adjust_capacity(:G, '150', '2030-01-02');
SELECT is((SELECT array_agg(DISTINCT (b->>'capacity')::numeric) FROM elmo_outbox o, jsonb_array_elements(o.body::jsonb->'forecasted_blocks') b
            WHERE o.id = (SELECT id FROM ids WHERE name = 'adj-text')), ARRAY[150::numeric], '''150'' is 150 kW for every hour');
INSERT INTO ids SELECT 'adj-array', elmo_adjust_capacity(:G, (SELECT array_agg(h)::text FROM generate_series(1, 24) h), '2030-01-03');
SELECT is((SELECT (o.body::jsonb->'forecasted_blocks'->23->>'capacity')::int FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'adj-array')),
          24, 'a quoted array literal is 24 hourly capacities');
RESET elmo_oscp.enforce_deadlines;

-- ---------------------------------------------------------------- the deadline's hint says when to ask next
SELECT is(sqlstate, '55000', 'after 14:00: too late')
  FROM pg_temp.err($$SELECT _elmo_adjust_guard('G-ARGS', '2026-11-26', '2026-11-25 14:30:00+08')$$);
SELECT is(hint, 'ELMO''s 10:00 plan for 2026-11-26 stays in force (an emergency may still change it). The next request is for '
                || '2026-11-27: tomorrow (2026-11-26) from 10:00, when ELMO''s assignment for that day has arrived, until 14:00.',
          'the hint says when the next request can be made, and for which day')
  FROM pg_temp.err($$SELECT _elmo_adjust_guard('G-ARGS', '2026-11-26', '2026-11-25 14:30:00+08')$$);

-- ---------------------------------------------------------------- elmo_trigger_callback: only the testbed's callbacks
SELECT is(sqlstate, '22023', 'elmo_trigger_callback(''foo''): refused at the call, not a 404 later')
  FROM pg_temp.err($$SELECT elmo_trigger_callback('foo')$$);
SELECT matches(detail, 'register, handshake and update_group_capacity_forecast', 'the detail lists the names')
  FROM pg_temp.err($$SELECT elmo_trigger_callback('foo')$$);
SELECT is(sqlstate, '22023', 'a triggered forecast without a purpose is refused')
  FROM pg_temp.err($$SELECT elmo_trigger_callback('update_group_capacity_forecast')$$);
SELECT is(sqlstate, '22023', 'so is one with an unknown purpose')
  FROM pg_temp.err($$SELECT elmo_trigger_callback('update_group_capacity_forecast', 'emergency', 'B6734_AE0100_00848825118', 10)$$);
SELECT is((SELECT count(*) FROM elmo_outbox WHERE message LIKE 'trigger-callback/%'), 0::bigint, 'nothing was queued');
INSERT INTO ids SELECT 'tc', elmo_trigger_callback('handshake');
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'tc'), '5s'), 'delivered', 'a valid name is sent as before');

-- ---------------------------------------------------------------- elmo_wait: no negative timeout
SELECT is(sqlstate, '22023', 'elmo_wait(id, ''-1s''): invalid_parameter_value')
  FROM pg_temp.err(format('SELECT elmo_wait(%s, %L)', (SELECT id FROM ids WHERE name = 'tc'), '-1s'));
SELECT matches(hint, '''0'' reads the state without waiting', 'the hint says what 0 does')
  FROM pg_temp.err(format('SELECT elmo_wait(%s, %L)', (SELECT id FROM ids WHERE name = 'tc'), '-1s'));
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'tc'), '0'), 'delivered', 'elmo_wait(id, ''0'') reads the state');

-- ---------------------------------------------------------------- elmo_retry: a failed message sent again
SELECT pg_temp.sim('DELETE', '/sim/messages');
SELECT is(pg_temp.sim('POST', '/sim/fault', '{"status":400,"count":1,"path":"update_group_measurements","message":"a passing problem"}'),
          200, 'simulator: the next usage report is answered 400');
INSERT INTO ids SELECT 'u1', elmo_report_usage(:G, 100);
SELECT throws_ok($$SELECT elmo_wait((SELECT id FROM ids WHERE name = 'u1'), '5s')$$, 'OS001', NULL, 'the usage report failed (400)');
SELECT is(elmo_retry((SELECT id FROM ids WHERE name = 'u1')), (SELECT id FROM ids WHERE name = 'u1'), 'elmo_retry returns the message''s id');
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'u1'), '5s'), 'delivered', 'sent again, delivered');
SELECT is((SELECT array_agg((m->>'status')::int ORDER BY (m->>'id')::int)
             FROM test.http('GET', test.sim('/sim/messages?path=update_group_measurements')) h,
                  jsonb_array_elements(h.response::jsonb) m
            WHERE m->'headers'->>'x-request-id' = (SELECT request_id FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1'))),
          ARRAY[400, 204], 'ELMO got it twice, with the same X-Request-ID: 400, then 204');
SELECT ok(retried_at IS NOT NULL AND attempts = 1, 'elmo_outbox_status: retried_at, and a fresh count of attempts')
  FROM elmo_outbox_status WHERE id = (SELECT id FROM ids WHERE name = 'u1');
SELECT is(sqlstate, '55000', 'a delivered message is not sent again')
  FROM pg_temp.err(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'u1')));
SELECT is(sqlstate, 'P0002', 'nor an unknown one') FROM pg_temp.err('SELECT elmo_retry(-1)');

-- a reading a later one superseded
SELECT pg_temp.sim('POST', '/sim/fault', '{"status":400,"count":1,"path":"update_group_measurements"}');
INSERT INTO ids SELECT 'u2', elmo_report_usage(:G, 200);
SELECT throws_ok($$SELECT elmo_wait((SELECT id FROM ids WHERE name = 'u2'), '5s')$$, 'OS001', NULL, 'a second report failed');
INSERT INTO ids SELECT 'u3', elmo_report_usage(:G, 300);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'u3'), '5s'), 'delivered', 'a later reading was delivered');
SELECT is(sqlstate, '55000', 'the superseded reading is not sent again')
  FROM pg_temp.err(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'u2')));
SELECT matches(detail, 'go down', 'because ELMO would see the cumulative reading go down')
  FROM pg_temp.err(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'u2')));

-- a register: its token is gone from the stored body
UPDATE elmo_outbox SET state = 'failed' WHERE id = (SELECT id FROM ids WHERE name = 'register');
SELECT is(sqlstate, '55000', 'a failed register is not sent again')
  FROM pg_temp.err(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'register')));
SELECT matches(hint, 'elmo_register', 'the hint says to call elmo_register again')
  FROM pg_temp.err(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'register')));
UPDATE elmo_outbox SET state = 'delivered' WHERE id = (SELECT id FROM ids WHERE name = 'register');

-- an adjust request: again pending, under ELMO's rules (rolled back: ELMO has
-- no negotiation for that day and would refuse it again)
SELECT ok(test.wait_for($$(SELECT state = 'failed' FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'adj-text'))$$),
          'an adjust request for a day ELMO has no negotiation for failed (404)');
BEGIN;
SET LOCAL elmo_oscp.enforce_deadlines = off;
SELECT lives_ok(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'adj-text')), 'sent again');
SELECT is(state, 'pending', 'the adjust request is pending again') FROM elmo_adjust_request WHERE outbox_id = (SELECT id FROM ids WHERE name = 'adj-text');
ROLLBACK;
SELECT ok(test.wait_for($$(SELECT state = 'failed' FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'adj-array'))$$),
          'so did another');
SELECT is(sqlstate, '22023', 'with the rules on, one for a day other than tomorrow is refused')
  FROM pg_temp.err(format('SELECT elmo_retry(%s)', (SELECT id FROM ids WHERE name = 'adj-array')));
SELECT is(state, 'failed', 'and stays failed') FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'adj-array');
SELECT ok(NOT has_function_privilege('public', 'elmo_retry(bigint)', 'EXECUTE'), 'elmo_retry is not granted to PUBLIC');

-- ---------------------------------------------------------------- after elmo_unregister: refused, not parked
INSERT INTO ids SELECT 'bye', elmo_unregister();
SELECT is(sqlstate, '55000', 'while our DELETE register is on its way, a usage report is refused')
  FROM pg_temp.err($$SELECT elmo_report_usage('B6734_AE0100_00848825118', 400)$$);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'bye'), '5s'), 'delivered', 'ELMO accepted our DELETE register');
SELECT is(state || ' ' || connected, 'unregistered false', 'unregistered, not connected') FROM elmo_registration_status;
SELECT is(sqlstate || ': ' || message, '55000: this CSMS is unregistered from ELMO', 'then a usage report is refused')
  FROM pg_temp.err($$SELECT elmo_report_usage('B6734_AE0100_00848825118', 400)$$);
SELECT matches(hint, '^To talk to ELMO again, register: SELECT elmo_register\(', 'with a hint that says how to register again')
  FROM pg_temp.err($$SELECT elmo_report_usage('B6734_AE0100_00848825118', 400)$$);
SELECT is(sqlstate, '55000', 'so is an adjust request')
  FROM pg_temp.err($$SELECT elmo_adjust_capacity('B6734_AE0100_00848825118', 100)$$);
SELECT is((SELECT count(*) FROM elmo_outbox WHERE state = 'waiting_for_handshake'), 0::bigint, 'nothing was parked');

SELECT test.reset();
SELECT pg_temp.sim('POST', '/sim/reset', '{}');
SELECT * FROM finish();
