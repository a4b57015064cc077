-- Alerts (NOTIFY elmo_alert, a WARNING, the view elmo_alerts), with explicit
-- times, never the wall clock: tomorrow's day-ahead assignment missing at
-- elmo_oscp.day_ahead_deadline, for which groups, once; an apply that keeps
-- failing.  (The worker's own run of these, ELMO unreachable and locked out:
-- test/e2e/53_elmo_outage.t and 54_day_ahead_alert.t.)
\ir ../helpers.sql
SELECT plan(16);
SET client_min_messages = error;        -- the alerts' WARNINGs

SELECT lives_ok($$SELECT test.fake_registration()$$, 'registered');
-- D: a day far from the real one, so that the worker's own check (on the real clock) is apart
CREATE TEMP TABLE d AS SELECT _elmo_local_day(now()) + 40 AS d;
CREATE TEMP TABLE at AS SELECT _elmo_day_start((SELECT d FROM d)) AS d0;
INSERT INTO elmo_group_settings VALUES ('ALRT-G1', 100);                -- expected: in the settings
INSERT INTO capacity_forecast (group_id, forecast_type, kind, forecast_day, received_at, request_id, payload)
VALUES ('ALRT-G2', 'CONSUMPTION', 'day_ahead', (SELECT d FROM d) - 2, now(), 'ALRT-R2', '{}'),   -- expected: a plan this week
       ('ALRT-G3', 'CONSUMPTION', 'day_ahead', (SELECT d FROM d), now(), 'ALRT-R3a', '{}'),
       ('ALRT-G3', 'CONSUMPTION', 'day_ahead', (SELECT d FROM d) + 1, now(), 'ALRT-R3b', '{}'),  -- tomorrow's came
       ('ALRT-G4', 'CONSUMPTION', 'day_ahead', (SELECT d FROM d) - 10, now(), 'ALRT-R4', '{}'),  -- not this week
       ('ALRT-G5', 'CONSUMPTION', 'emergency', (SELECT d FROM d), now(), 'ALRT-R5', '{}');       -- no plan

SELECT is(_elmo_check_day_ahead((SELECT d0 FROM at) + interval '10:04'), (SELECT d0 FROM at) + interval '10:05',
          'at 10:04: nothing yet, look again at 10:05');
SELECT is((SELECT count(*)::int FROM elmo_alerts WHERE alert = 'day_ahead_missing'), 0, 'no alert before the deadline');
SELECT is(_elmo_check_day_ahead((SELECT d0 FROM at) + interval '10:05'), (SELECT d0 FROM at) + interval '1 day 10:05',
          'at 10:05: look again tomorrow at 10:05');
SELECT is(ARRAY(SELECT group_id FROM elmo_alerts WHERE alert = 'day_ahead_missing' ORDER BY group_id),
          ARRAY['ALRT-G1', 'ALRT-G2'],
          'day_ahead_missing for the groups in elmo_group_settings or with a plan this week, none for one whose plan came');
SELECT ok((SELECT bool_and(detail ~ group_id AND detail ~ ((SELECT d FROM d) + 1)::text AND detail ~ '10:05')
             FROM elmo_alerts WHERE alert = 'day_ahead_missing'), 'the detail names the group, the day and the deadline');
SELECT is(_elmo_check_day_ahead((SELECT d0 FROM at) + interval '11:00'), (SELECT d0 FROM at) + interval '1 day 10:05',
          'at 11:00 the same day');
SELECT is((SELECT count(*)::int FROM elmo_alerts WHERE alert = 'day_ahead_missing'), 2, '... no second alert');
DELETE FROM elmo_timer WHERE name = 'day_ahead_check';
SELECT _elmo_check_day_ahead((SELECT d0 FROM at) + interval '12:00');
SELECT is((SELECT count(*)::int FROM elmo_alerts WHERE alert = 'day_ahead_missing'), 2,
          'each group and day is alerted once, even if the check runs again');

ALTER SYSTEM SET elmo_oscp.day_ahead_deadline = '09:30';
SELECT pg_reload_conf();
SELECT test.wait_for($$current_setting('elmo_oscp.day_ahead_deadline') = '09:30'$$, '10s');
SELECT is(_elmo_check_day_ahead((SELECT d0 FROM at) + interval '1 day 09:31'), (SELECT d0 FROM at) + interval '2 days 09:30',
          'the deadline is a setting (09:30)');
SELECT is(ARRAY(SELECT group_id FROM elmo_alerts WHERE alert = 'day_ahead_missing' AND detail ~ ((SELECT d FROM d) + 2)::text
                 ORDER BY group_id), ARRAY['ALRT-G1', 'ALRT-G2', 'ALRT-G3'],
          'the next day: alerted again, for that day (ALRT-G3 too: no plan for the day after)');
ALTER SYSTEM RESET elmo_oscp.day_ahead_deadline;
SELECT pg_reload_conf();
SELECT test.wait_for($$current_setting('elmo_oscp.day_ahead_deadline') = '10:05'$$, '10s');

UPDATE elmo_registration SET state = 'unregistered';
SELECT _elmo_check_day_ahead((SELECT d0 FROM at) + interval '2 days 10:06');
SELECT is((SELECT count(*)::int FROM elmo_alerts WHERE alert = 'day_ahead_missing'), 5, 'unregistered: no alert');
UPDATE elmo_registration SET state = 'registered';

-- an apply that keeps failing: alerted at the third failure, once
INSERT INTO elmo_received_message (message, request_id, raw_body, body, group_id, kind)
VALUES ('update_group_capacity_forecast', 'ALRT-M1', '{}', '{}', 'ALRT-G1', 'emergency');
SELECT _elmo_apply_failed((SELECT id FROM elmo_received_message WHERE request_id = 'ALRT-M1'), 'XX000', 'csms bug');
SELECT _elmo_apply_failed((SELECT id FROM elmo_received_message WHERE request_id = 'ALRT-M1'), 'XX000', 'csms bug');
SELECT is((SELECT count(*)::int FROM elmo_alerts WHERE alert = 'apply_failing'), 0, 'two failed applies: no alert yet');
SELECT _elmo_apply_failed((SELECT id FROM elmo_received_message WHERE request_id = 'ALRT-M1'), 'XX000', 'csms bug');
SELECT _elmo_apply_failed((SELECT id FROM elmo_received_message WHERE request_id = 'ALRT-M1'), 'XX000', 'csms bug');
SELECT is((SELECT count(*)::int FROM elmo_alerts WHERE alert = 'apply_failing'), 1, 'the third: apply_failing, once');
SELECT ok((SELECT detail ~ 'csms bug' AND group_id = 'ALRT-G1' FROM elmo_alerts WHERE alert = 'apply_failing'),
          'with the group and the error');
SELECT is((SELECT value FROM elmo_metrics WHERE metric = 'elmo_alerts_total' AND labels = '{"alert": "day_ahead_missing"}'),
          5::float8, 'elmo_metrics counts the alerts by kind');

DELETE FROM elmo_timer WHERE name = 'day_ahead_check';
SELECT test.reset();
SELECT * FROM finish();
