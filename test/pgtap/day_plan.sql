-- ELMO's days whatever the session's time zone (elmo_today, elmo_tomorrow, the
-- day functions' default), and a day's plan hour by hour (elmo_day_plan) from
-- forecasts posted over HTTP into the worker.
\ir ../helpers.sql
SELECT plan(20);

-- ---------------------------------------------------------------- ELMO's today and tomorrow
-- Pago Pago is 19 hours behind Taipei: for most of the day its current_date
-- is Taipei's yesterday.  ELMO's days never follow the session's zone.
SET TimeZone = 'Pacific/Pago_Pago';
SELECT is(elmo_today(), (now() AT TIME ZONE current_setting('elmo_oscp.timezone'))::date,
          'elmo_today(): today in elmo_oscp.timezone, not in the session''s zone');
SELECT is(elmo_tomorrow(), elmo_today() + 1, 'elmo_tomorrow(): the day after');
SET TimeZone = 'Pacific/Kiritimati';
SELECT is(elmo_tomorrow(), (now() AT TIME ZONE current_setting('elmo_oscp.timezone'))::date + 1,
          'the same 25 hours further east');
RESET TimeZone;
SELECT ok(has_function_privilege('elmo_oscp_reader', 'elmo_tomorrow()', 'EXECUTE')
          AND has_function_privilege('elmo_oscp_reader', 'elmo_day_plan(text, date)', 'EXECUTE'),
          'both, and elmo_day_plan, for elmo_oscp_reader');

-- ---------------------------------------------------------------- a day of ELMO's, over HTTP
CREATE FUNCTION pg_temp.at(hhmm text) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$ SELECT _elmo_day_start(elmo_tomorrow()) + hhmm::interval $$;
CREATE FUNCTION pg_temp.fid(rid text) RETURNS bigint
    LANGUAGE sql STABLE AS $$ SELECT id FROM capacity_forecast WHERE request_id = rid $$;

SELECT ok(test.fake_registration() IS NOT NULL, 'a registration whose token the test knows');
SELECT ok(test.wait_for($$(SELECT status FROM test.post('heartbeat', '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}')) = 204$$),
          'the worker accepts it');
-- 10:00: ELMO assigns 200 kW every hour of tomorrow
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('PLAN-G1', elmo_tomorrow(), 200), 'PLAN-DAY')), 204, 'ELMO''s assignment for tomorrow: 200 kW');
-- this CSMS asked for 250 kW (already delivered: the worker has nothing to send)
INSERT INTO elmo_outbox (message, group_id, body, state) VALUES ('adjust_group_capacity_forecast', 'PLAN-G1', '{}', 'delivered');
INSERT INTO elmo_adjust_request (group_id, day, outbox_id, hourly_kw)
VALUES ('PLAN-G1', elmo_tomorrow(), currval('elmo_outbox_id_seq'), array_fill(250::numeric, ARRAY[24]));
-- 16:00: ELMO grants 240 kW until noon, 220 after
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.day_body('PLAN-G1', elmo_tomorrow(), array_fill(240::numeric, ARRAY[12]) || array_fill(220::numeric, ARRAY[12])),
              'PLAN-REPLY')), 204, 'ELMO''s reply: 240 kW until noon, 220 after');
SELECT is((SELECT kind FROM capacity_forecast WHERE request_id = 'PLAN-REPLY'), 'additional_reply', '(stored as the reply)');
-- an emergency from 16:15 to midnight, and a contract capacity of 230 kW
SELECT is((SELECT status FROM test.post('update_group_capacity_forecast',
              test.emergency_body('PLAN-G1', pg_temp.at('16:15'), pg_temp.at('24:00'), 40), 'PLAN-EMERGENCY')), 204,
          'an emergency: 40 kW from 16:15 to midnight');
INSERT INTO elmo_group_settings VALUES ('PLAN-G1', 230);

SELECT is((SELECT count(*) FROM elmo_day_plan('PLAN-G1')), 24::bigint, 'elmo_day_plan: 24 hours, tomorrow by default');
SELECT results_eq($$SELECT * FROM elmo_day_plan('PLAN-G1')$$, $$SELECT * FROM elmo_day_plan('PLAN-G1', elmo_tomorrow())$$,
                  'the default day is elmo_tomorrow()');
SELECT results_eq(
    $$SELECT hour, start_time, end_time, capacity, unit, decided_by, forecast_id, assigned, asked, granted, emergency, contract
        FROM elmo_day_plan('PLAN-G1') WHERE hour IN (0, 11, 12, 15, 16, 23) ORDER BY hour$$,
    $$VALUES (0, pg_temp.at('00:00'), pg_temp.at('01:00'), 230::numeric, 'KW', 'contract', NULL::bigint, 200::numeric, 250::numeric, 240::numeric, NULL::numeric, 230::numeric),
             (11, pg_temp.at('11:00'), pg_temp.at('12:00'), 230, 'KW', 'contract', NULL, 200, 250, 240, NULL, 230),
             (12, pg_temp.at('12:00'), pg_temp.at('13:00'), 220, 'KW', 'additional_reply', pg_temp.fid('PLAN-REPLY'), 200, 250, 220, NULL, 230),
             (15, pg_temp.at('15:00'), pg_temp.at('16:00'), 220, 'KW', 'additional_reply', pg_temp.fid('PLAN-REPLY'), 200, 250, 220, NULL, 230),
             (16, pg_temp.at('16:00'), pg_temp.at('17:00'), 40, 'KW', 'emergency', pg_temp.fid('PLAN-EMERGENCY'), 200, 250, 220, 40, 230),
             (23, pg_temp.at('23:00'), pg_temp.at('24:00'), 40, 'KW', 'emergency', pg_temp.fid('PLAN-EMERGENCY'), 200, 250, 220, 40, 230)$$,
    'each hour: the capacity in force (the lowest during the hour), what decided it, and what it was decided from');
SELECT is((SELECT bar FROM elmo_day_plan('PLAN-G1') WHERE hour = 0), repeat('#', 40), 'bar: 40 # for the day''s largest');
SELECT is((SELECT bar FROM elmo_day_plan('PLAN-G1') WHERE hour = 16), repeat('#', 7), 'and in proportion (40 of 230 kW: 7)');
SELECT results_eq($$SELECT start_time, end_time, capacity, kind FROM elmo_capacity_schedule('PLAN-G1')$$,
                  $$VALUES (pg_temp.at('00:00'), pg_temp.at('12:00'), 230::numeric, 'contract'),
                           (pg_temp.at('12:00'), pg_temp.at('16:15'), 220, 'additional_reply'),
                           (pg_temp.at('16:15'), pg_temp.at('24:00'), 40, 'emergency')$$,
                  'elmo_capacity_schedule(group_id) is tomorrow''s too');

-- a role that is no superuser: what the plan reads is the reader's
BEGIN;
CREATE ROLE pgtap_plan_reader IN ROLE elmo_oscp_reader;
SET LOCAL ROLE pgtap_plan_reader;
SELECT is((SELECT count(*) FROM elmo_day_plan('PLAN-G1') WHERE asked = 250), 24::bigint,
          'a role that is no superuser reads the plan, what was asked included');
RESET ROLE;
ROLLBACK;

-- the day after: nothing known but the contract
SELECT is((SELECT count(*) FROM elmo_day_plan('PLAN-G1', elmo_tomorrow() + 1) WHERE capacity = 230 AND decided_by = 'contract'
                                                                             AND assigned IS NULL AND asked IS NULL),
          24::bigint, 'a day ELMO said nothing of: the contract capacity every hour');
DELETE FROM elmo_group_settings WHERE group_id = 'PLAN-G1';
SELECT is((SELECT count(*) FROM elmo_day_plan('PLAN-G1', elmo_tomorrow() + 1) WHERE capacity IS NULL AND bar = ''),
          24::bigint, 'nothing at all: 24 hours without a capacity');
SELECT is((SELECT count(*) FROM elmo_day_plan('PLAN-NOBODY')), 24::bigint, 'an unknown group: 24 empty hours too');

SELECT test.reset();
SELECT * FROM finish();
