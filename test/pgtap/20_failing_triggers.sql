-- A CSMS trigger that raises or is slow never costs a message from ELMO:
-- the forecast is answered 204, kept, and applied once the trigger is fixed
-- (by the worker on its own, or by elmo_replay at once).  Over real HTTP.
\ir ../helpers.sql
SELECT plan(27);

SELECT lives_ok($$SELECT test.fake_registration()$$, 'registered with a known token');
SELECT ok(test.wait_for($$(SELECT status FROM test.post('heartbeat', '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}')) = 204$$),
          'the worker accepts the token');

-- The CSMS's trigger: raises on a forecast of 13 kW while "broken", sleeps when asked.
CREATE TABLE test.csms (broken boolean, sleep_s float8);
INSERT INTO test.csms VALUES (true, 0);
CREATE FUNCTION test.csms_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c test.csms;
BEGIN
    SELECT * INTO c FROM test.csms;
    IF c.broken AND (NEW.payload->'forecasted_blocks'->0->>'capacity')::numeric = 13 THEN
        RAISE EXCEPTION 'csms bug: cannot apply % kW', 13 USING ERRCODE = 'XX042';
    END IF;
    IF c.sleep_s > 0 THEN PERFORM pg_sleep(c.sleep_s); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER csms AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.csms_trigger();
CREATE TEMP TABLE tomorrow AS SELECT _elmo_local_day(now()) + 1 AS d;

-- 1. the trigger raises: 204 all the same, kept as apply_failed with the error
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('FAIL-G1', (SELECT d FROM tomorrow), 13), 'FAIL-1')), 204,
          'a forecast whose CSMS trigger raises is answered 204');
SELECT is((SELECT state FROM elmo_received_message WHERE request_id = 'FAIL-1'), 'apply_failed', 'it is kept as apply_failed');
SELECT is((SELECT last_sqlstate FROM elmo_received_message WHERE request_id = 'FAIL-1'), 'XX042', 'with the SQLSTATE');
SELECT ok((SELECT last_error FROM elmo_received_message WHERE request_id = 'FAIL-1') LIKE 'csms bug%', 'and the error message');
SELECT is((SELECT apply_attempts FROM elmo_received_message WHERE request_id = 'FAIL-1'), 1, 'one attempt so far');
SELECT is((SELECT count(*)::int FROM capacity_forecast WHERE request_id = 'FAIL-1'), 0, 'nothing half-applied');
SELECT is((SELECT count(*)::int FROM elmo_unapplied WHERE group_id = 'FAIL-G1'), 1, 'elmo_unapplied lists it');

-- 2. a later forecast of the same group is applied at once; the plan follows receipt order
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('FAIL-G1', (SELECT d FROM tomorrow), 20), 'FAIL-2')), 204, 'the next forecast of that group: 204');
SELECT is((SELECT state FROM elmo_received_message WHERE request_id = 'FAIL-2'), 'applied', 'applied at once, not behind the failed one');
SELECT is(elmo_capacity_at('FAIL-G1', _elmo_day_start((SELECT d FROM tomorrow)) + interval '9 hours'), 20::numeric,
          'its plan is in force');

-- 3. the trigger is fixed: the worker applies the failed message by itself
UPDATE test.csms SET broken = false;
SELECT ok(test.wait_for($$(SELECT state FROM elmo_received_message WHERE request_id = 'FAIL-1') = 'applied'$$, '20s'),
          'once the trigger is fixed, the worker applies it without a manual step');
SELECT is((SELECT count(*)::int FROM capacity_forecast WHERE request_id = 'FAIL-1'), 1, 'the forecast is there');
SELECT is(elmo_capacity_at('FAIL-G1', _elmo_day_start((SELECT d FROM tomorrow)) + interval '9 hours'), 20::numeric,
          'applied late, it does not override the plan received after it');

-- 4. elmo_replay applies at once; while still failing it raises the error
UPDATE test.csms SET broken = true;
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('FAIL-G2', (SELECT d FROM tomorrow), 13), 'FAIL-3')), 204, 'another failing forecast: 204');
CREATE TEMP TABLE m3 AS SELECT id FROM elmo_received_message WHERE request_id = 'FAIL-3';
SELECT throws_ok(format('SELECT elmo_replay(%s)', (SELECT id FROM m3)), 'XX042', NULL,
                 'elmo_replay raises the trigger''s error while it still fails');
UPDATE test.csms SET broken = false;
SELECT lives_ok(format('SELECT elmo_replay(%s)', (SELECT id FROM m3)), 'elmo_replay applies it once fixed');
SELECT is((SELECT state FROM elmo_received_message WHERE request_id = 'FAIL-3'), 'applied', 'at once');

-- 5. elmo_discard gives up on one, recorded
UPDATE test.csms SET broken = true;
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('FAIL-G3', (SELECT d FROM tomorrow), 13), 'FAIL-4')), 204, 'a third failing forecast: 204');
SELECT lives_ok(format('SELECT elmo_discard(%s, %L)', (SELECT id FROM elmo_received_message WHERE request_id = 'FAIL-4'),
                       'superseded'), 'elmo_discard');
SELECT is((SELECT state || ': ' || discarded_reason FROM elmo_received_message WHERE request_id = 'FAIL-4'),
          'discarded: superseded', 'recorded as discarded, with the reason');
UPDATE test.csms SET broken = false;

-- 6. a trigger slower than elmo_oscp.apply_timeout does not hold the 204 back
UPDATE test.csms SET sleep_s = 3;
CREATE TEMP TABLE slow AS
    SELECT clock_timestamp() AS t0, (test.post('update_group_capacity_forecast',
               test.emergency_body('SLOW-G1', now() + interval '20 min', now() + interval '1 hour', 30), 'SLOW-1')).status,
           clock_timestamp() AS t1;
SELECT is(status, 204, 'a forecast with a 3 s trigger is answered 204') FROM slow;
SELECT cmp_ok(t1 - t0, '<', interval '2.8 s', 'within elmo_oscp.apply_timeout (2 s), not after the 3 s trigger') FROM slow;
UPDATE test.csms SET sleep_s = 0;
SELECT ok(test.wait_for($$(SELECT state FROM elmo_received_message WHERE request_id = 'SLOW-1') = 'applied'$$, '30s'),
          'and it is applied once the trigger is fast again');

-- 7. register and handshake from ELMO: 204 whatever the CSMS's triggers do
CREATE FUNCTION test.csms_bad_registration_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'csms trigger on elmo_registration fails'; END $$;
CREATE TRIGGER csms_bad AFTER UPDATE ON elmo_registration FOR EACH ROW EXECUTE FUNCTION test.csms_bad_registration_trigger();
SELECT is((SELECT status FROM test.post('handshake', '{"required_behaviour":{"measurement_configuration":["CONTINUOUS"]}}', 'HS-TRIGGER-1')),
          204, 'a handshake is answered 204 even when a trigger on the registration fails');
DROP TRIGGER csms_bad ON elmo_registration;
SELECT ok(test.wait_for($$(SELECT state FROM elmo_received_message WHERE request_id = 'HS-TRIGGER-1') = 'applied'$$, '20s'),
          'and applied once that trigger is gone');

DROP TRIGGER csms ON capacity_forecast;
DROP FUNCTION test.csms_trigger(), test.csms_bad_registration_trigger();
DROP TABLE test.csms;
SELECT * FROM finish();
