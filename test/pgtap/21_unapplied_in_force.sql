-- What ELMO assigned is in force from its start whatever the CSMS's trigger
-- does: a 20 kW emergency whose application the CSMS trigger on
-- capacity_forecast keeps failing lowers the capacity at once (elmo_capacity_at,
-- the schedule, capacity_in_force); the schedule says it is not applied yet.
-- Over real HTTP into the worker.
\ir ../helpers.sql
SELECT plan(17);

SELECT lives_ok($$SELECT test.fake_registration()$$, 'registered with a known token');
SELECT ok(test.wait_for($$(SELECT status FROM test.post('heartbeat', '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}')) = 204$$),
          'the worker accepts the token');
INSERT INTO elmo_group_settings VALUES ('UNAP-G1', 40);
SELECT is(elmo_capacity_at('UNAP-G1'), 40::numeric, 'the contract capacity, 40 kW, is in force');

-- the CSMS trigger raises for this group
DROP TABLE IF EXISTS test.unap;
CREATE TABLE test.unap (broken boolean);
INSERT INTO test.unap VALUES (true);
CREATE OR REPLACE FUNCTION test.unap_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.group_id = 'UNAP-G1' AND (SELECT broken FROM test.unap) THEN
        RAISE EXCEPTION 'csms bug' USING ERRCODE = 'XX043';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER unap AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.unap_trigger();

CREATE TEMP TABLE span AS SELECT date_trunc('minute', now()) - interval '1 minute' AS s, date_trunc('minute', now()) + interval '2 hours' AS e;
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.emergency_body('UNAP-G1', (SELECT s FROM span), (SELECT e FROM span), 20), 'UNAP-1')), 204,
          'a 20 kW emergency, its CSMS trigger raising: 204');
SELECT is((SELECT state FROM elmo_received_message WHERE request_id = 'UNAP-1'), 'apply_failed', 'it is not applied');
SELECT is((SELECT count(*)::int FROM capacity_forecast WHERE group_id = 'UNAP-G1'), 0, 'no capacity_forecast row');
SELECT is(elmo_capacity_at('UNAP-G1'), 20::numeric, 'elmo_capacity_at: 20 kW all the same');
SELECT is((SELECT capacity FROM elmo_capacity_now WHERE group_id = 'UNAP-G1'), 20::numeric, 'elmo_capacity_now too');
SELECT results_eq(
    $$SELECT capacity, kind, forecast_id, applied FROM elmo_capacity_schedule('UNAP-G1', _elmo_local_day(now()))
       WHERE start_time <= now() AND end_time > now()$$,
    $$VALUES (20::numeric, 'emergency', NULL::bigint, false)$$,
    'the schedule shows it in force and not applied yet');
SELECT ok(test.wait_for($$(SELECT capacity || ' ' || kind FROM capacity_in_force WHERE group_id = 'UNAP-G1') = '20 emergency'$$, '5s'),
          'capacity_in_force: 20 kW emergency, from its receipt');

-- a later plan of the same kind ordering: an unapplied forecast is ordered by receipt like any
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.emergency_body('UNAP-G2', (SELECT s FROM span), (SELECT e FROM span), 30), 'UNAP-2')), 204,
          'another group''s emergency is applied');
SELECT is(elmo_capacity_at('UNAP-G2'), 30::numeric, '... and in force');

-- the DBA gives up retrying it: what ELMO assigned stays in force
SELECT lives_ok(format('SELECT elmo_discard(%s, %L)', (SELECT id FROM elmo_received_message WHERE request_id = 'UNAP-1'),
                       'the trigger cannot take it'), 'elmo_discard');
SELECT is(elmo_capacity_at('UNAP-G1'), 20::numeric, 'a discarded emergency stays in force');

-- fixed and replayed: applied, same capacity
UPDATE test.unap SET broken = false;
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.emergency_body('UNAP-G1', (SELECT s FROM span), (SELECT e FROM span), 25), 'UNAP-3')), 204,
          'once fixed, a 25 kW emergency is applied');
SELECT is(elmo_capacity_at('UNAP-G1'), 20::numeric, 'the lowest emergency, 20 kW, still rules');
SELECT ok(EXISTS (SELECT 1 FROM elmo_capacity_schedule('UNAP-G1', _elmo_local_day(now()))
                   WHERE start_time <= now() AND end_time > now() AND NOT applied AND capacity = 20),
          'and is still shown as not applied');

DROP TRIGGER unap ON capacity_forecast;
DROP TABLE test.unap;
SELECT * FROM finish();
