-- ELMO → CSMS over real HTTP into the worker: every forecast purpose, the
-- kinds, a CSMS trigger that sees all blocks, duplicates, errors that store
-- nothing, and the capacity in force.
\ir ../helpers.sql
SELECT plan(22);

SELECT lives_ok($$SELECT test.fake_registration()$$, 'registered with a known token');
SELECT ok(test.wait_for($$(SELECT status FROM test.post('heartbeat', '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}')) = 204$$),
          'the worker accepts the token');

-- a CSMS trigger recording how many blocks it sees at insert time
CREATE TABLE test.seen (forecast_id bigint, kind text, blocks int);
CREATE FUNCTION test.csms_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test.seen SELECT NEW.id, NEW.kind, count(*) FROM capacity_forecast_block WHERE forecast_id = NEW.id;
    RETURN NEW;
END $$;
CREATE TRIGGER csms_seen AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.csms_seen();

CREATE TEMP TABLE today AS SELECT _elmo_local_day(now()) AS d;

-- day-ahead: 24 hourly blocks of tomorrow
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('HTTP-G1', (SELECT d + 1 FROM today), 100), 'HTTP-DA-1')), 204,
          'a day-ahead assignment is answered 204');
SELECT is((SELECT kind FROM capacity_forecast WHERE request_id = 'HTTP-DA-1'), 'day_ahead', 'classified day_ahead');
SELECT is((SELECT forecast_day FROM capacity_forecast WHERE request_id = 'HTTP-DA-1'), (SELECT d + 1 FROM today),
          'its forecast_day is tomorrow (local)');
SELECT is((SELECT blocks FROM test.seen s JOIN capacity_forecast f ON f.id = s.forecast_id WHERE f.request_id = 'HTTP-DA-1'), 24,
          'the AFTER INSERT trigger on capacity_forecast saw all 24 blocks');

-- the same X-Request-ID again: 204, stored once
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('HTTP-G1', (SELECT d + 1 FROM today), 100), 'HTTP-DA-1')), 204,
          'a repeated X-Request-ID is answered 204 again');
SELECT is((SELECT count(*)::int FROM elmo_received_message WHERE request_id = 'HTTP-DA-1'), 1, 'and stored once');
SELECT is((SELECT count(*)::int FROM capacity_forecast WHERE request_id = 'HTTP-DA-1'), 1, 'and applied once');

-- an adjust request pending for that group and day makes the next one a reply
INSERT INTO elmo_outbox (message, group_id, body, state) VALUES ('adjust_group_capacity_forecast', 'HTTP-G1', '{}', 'delivered');
INSERT INTO elmo_adjust_request (group_id, day, outbox_id, hourly_kw)
     SELECT 'HTTP-G1', d + 1, currval('elmo_outbox_id_seq'), array_fill(150::numeric, ARRAY[24]) FROM today;
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('HTTP-G1', (SELECT d + 1 FROM today), 150), 'HTTP-REPLY-1')), 204, 'ELMO''s reply is answered 204');
SELECT is((SELECT kind FROM capacity_forecast WHERE request_id = 'HTTP-REPLY-1'), 'additional_reply', 'classified additional_reply');
SELECT is((SELECT state FROM elmo_adjust_request WHERE group_id = 'HTTP-G1'), 'answered', 'the adjust request is answered');
SELECT is(elmo_capacity_at('HTTP-G1', _elmo_day_start((SELECT d + 1 FROM today)) + interval '10 hours'), 150::numeric,
          'the reply replaces the assignment in the plan');

-- an emergency for today, mid-day: applied at once, lowers the capacity in force
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.emergency_body('HTTP-G1', now() - interval '1 min', now() + interval '1 hour', 40), 'HTTP-EM-1')), 204,
          'an emergency is answered 204');
SELECT is((SELECT kind FROM capacity_forecast WHERE request_id = 'HTTP-EM-1'), 'emergency', 'classified emergency');
SELECT is(elmo_capacity_at('HTTP-G1'), 40::numeric, 'the capacity in force drops now');
SELECT is((SELECT capacity FROM elmo_capacity_now WHERE group_id = 'HTTP-G1'), 40::numeric, 'elmo_capacity_now shows it');

-- invalid bodies: 400 with a JSON error naming the problem, nothing stored
CREATE TEMP TABLE bad AS SELECT * FROM test.post('update_group_capacity_forecast',
    '{"group_id":"HTTP-G1","type":"CONSUMPTION","forecasted_blocks":[{"capacity":-1,"phase":"ALL","unit":"KW","start_time":"2030-01-01T00:00:00+08:00","end_time":"2030-01-01T01:00:00+08:00"}]}',
    'HTTP-BAD-1');
SELECT is(status, 400, 'a negative capacity: 400') FROM bad;
SELECT ok((response::jsonb)->>'message' LIKE '%capacity%', 'the error names the field') FROM bad;
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast', '{"group_id": "x", "type": ', 'HTTP-BAD-2')), 400,
          'malformed JSON: 400');
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
    '{"group_id":"HTTP-G1","type":"CONSUMPTION","forecasted_blocks":[{"capacity":1,"phase":"ALL","unit":"KW","start_time":"2030-01-01T00:00:00","end_time":"2030-01-01T01:00:00"}]}',
    'HTTP-BAD-3')), 400, 'timestamps without an offset: 400');
SELECT is((SELECT count(*)::int FROM elmo_received_message WHERE request_id LIKE 'HTTP-BAD-%'), 0, 'nothing stored for any of them');

DROP TRIGGER csms_seen ON capacity_forecast;
DROP TABLE test.seen;
DROP FUNCTION test.csms_seen();
SELECT * FROM finish();
