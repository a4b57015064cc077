-- Capacity in force: elmo_capacity_at, elmo_capacity_schedule,
-- elmo_capacity_now, from ELMO's real forecasts received and applied.
\ir ../helpers.sql
BEGIN;
\ir ../inbound_fixtures.sql


CREATE TEMP TABLE kept (k text PRIMARY KEY, id bigint);
CREATE FUNCTION pg_temp.keep(k text, msg bigint) RETURNS bigint LANGUAGE sql AS
    $$ INSERT INTO kept SELECT k, f.id FROM capacity_forecast f WHERE f.message_id = msg RETURNING id $$;
CREATE FUNCTION pg_temp.fc(k text) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT id FROM kept WHERE kept.k = $1 $$;

SELECT plan(25);

DELETE FROM elmo_group_settings WHERE group_id LIKE 'pgtap-inbound-%';

-- tomorrow's 10:00 assignment: 100 kW every hour
SELECT pg_temp.keep('assigned', pg_temp.forecast(pg_temp.body('day_ahead')));
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '10:30')), 100::numeric, 'the assignment gives the plan');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '00:00')), 100::numeric, 'a block covers its start ...');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(2, '00:00')), NULL, '... not its end');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(0, '10:30')), NULL, 'NULL when nothing is known');
SELECT is(elmo_capacity_at('pgtap-inbound-nobody', pg_temp.at(1, '10:30')), NULL, 'NULL for an unknown group');

-- the 16:00 reply to our adjust request (80 kW) replaces the assignment
INSERT INTO elmo_outbox (message, group_id, body) VALUES ('adjust_group_capacity_forecast', 'pgtap-inbound-g1', '{}');
INSERT INTO elmo_adjust_request (group_id, day, outbox_id, hourly_kw)
VALUES ('pgtap-inbound-g1', _elmo_local_day(now()) + 1, currval('elmo_outbox_id_seq'), '{}');
SELECT pg_temp.keep('reply', pg_temp.forecast(pg_temp.body('reply')));
SELECT is((SELECT kind FROM capacity_forecast WHERE id = pg_temp.fc('reply')), 'additional_reply', 'the reply is an additional_reply');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '10:30')), 80::numeric, 'the reply replaces the assignment');

-- an emergency in the middle of that day (capture 42: 10:20-11:05 +08:00, 77 kW)
SELECT pg_temp.keep('emergency', pg_temp.forecast(replace(pg_temp.body('emergency_tpe'), 'g2', 'g1')));
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '10:30')), 77::numeric, 'an emergency below the plan lowers it');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '10:20')), 77::numeric, '... from its start');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '10:19:59.999')), 80::numeric, '... not before');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '11:05')), 80::numeric, '... until its end');
-- an emergency above the plan changes nothing
SELECT pg_temp.forecast(replace(replace(replace(replace(pg_temp.body('emergency_tpe'), 'g2', 'g1'), 'T10:20', 'T12:00'), 'T11:05', 'T13:00'),
                                '"capacity":77', '"capacity":500'));
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '12:30')), 80::numeric, 'an emergency above the plan does not raise it');
-- the assignment for the day after, received later, does not hide tomorrow's plan
SELECT pg_temp.keep('d2', pg_temp.forecast(pg_temp.body('day_ahead_d2')));
SELECT is((SELECT forecast_day FROM capacity_forecast WHERE id = pg_temp.fc('d2')), _elmo_local_day(now()) + 2, '(a day_ahead for the day after)');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '09:00')), 80::numeric,
          'the plan comes from the latest forecast among those covering the instant');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(2, '09:00')), 100::numeric, '... and the next day from the newer one');

SELECT results_eq(
    $$SELECT * FROM elmo_capacity_schedule('pgtap-inbound-g1', _elmo_local_day(now()) + 1)$$,
    $$VALUES (pg_temp.at(1, '00:00'), pg_temp.at(1, '10:20'), 80::numeric, 'KW', 'additional_reply', pg_temp.fc('reply'), true),
             (pg_temp.at(1, '10:20'), pg_temp.at(1, '11:05'), 77, 'KW', 'emergency', pg_temp.fc('emergency'), true),
             (pg_temp.at(1, '11:05'), pg_temp.at(2, '00:00'), 80, 'KW', 'additional_reply', pg_temp.fc('reply'), true)$$,
    'the schedule of tomorrow: contiguous segments, equal neighbours merged');
SELECT is_empty($$SELECT * FROM elmo_capacity_schedule('pgtap-inbound-g1', _elmo_local_day(now()) - 10)$$,
                'a day with nothing known has no segments');

-- the contract capacity caps everything
INSERT INTO elmo_group_settings VALUES ('pgtap-inbound-g1', 78);
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '09:00')), 78::numeric, 'the contract capacity caps the plan');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(1, '10:30')), 77::numeric, '... an emergency below it still counts');
SELECT is(elmo_capacity_at('pgtap-inbound-g1', pg_temp.at(-10, '09:00')), 78::numeric, '... and it applies when nothing else is known');
SELECT results_eq(
    $$SELECT * FROM elmo_capacity_schedule('pgtap-inbound-g1', _elmo_local_day(now()) + 1)$$,
    $$VALUES (pg_temp.at(1, '00:00'), pg_temp.at(1, '10:20'), 78::numeric, 'KW', 'contract', NULL::bigint, true),
             (pg_temp.at(1, '10:20'), pg_temp.at(1, '11:05'), 77, 'KW', 'emergency', pg_temp.fc('emergency'), true),
             (pg_temp.at(1, '11:05'), pg_temp.at(2, '00:00'), 78, 'KW', 'contract', NULL, true)$$,
    'the schedule with a contract capacity');

-- now: an emergency running at this moment, a contract-only group
SELECT pg_temp.keep('now', pg_temp.forecast(format(
    '{"group_id":"pgtap-inbound-g3","type":"CONSUMPTION","forecasted_blocks":[{"capacity":33,"phase":"ALL","unit":"KW","start_time":"%s","end_time":"%s"}]}',
    _elmo_ts(now() - interval '1 minute'), _elmo_ts(now() + interval '1 hour'))));
INSERT INTO elmo_group_settings VALUES ('pgtap-inbound-g4', 10);
SELECT is(elmo_capacity_at('pgtap-inbound-g3'), 33::numeric, 'elmo_capacity_at defaults to now');
SELECT results_eq(
    $$SELECT group_id, capacity, kind, forecast_id, until FROM elmo_capacity_now
       WHERE group_id LIKE 'pgtap-inbound-%' ORDER BY group_id$$,
    $$VALUES ('pgtap-inbound-g1', 78::numeric, 'contract', NULL::bigint, pg_temp.at(1, '10:20')),
             ('pgtap-inbound-g3', 33, 'emergency', pg_temp.fc('now'), _elmo_ts(now() + interval '1 hour')::timestamptz),
             ('pgtap-inbound-g4', 10, 'contract', NULL, NULL)$$,
    'elmo_capacity_now: every group with forecasts or settings, what is in force and until when it changes');

SELECT ok(has_function_privilege('elmo_oscp_reader', 'elmo_capacity_at(text, timestamptz)', 'EXECUTE')
          AND has_table_privilege('elmo_oscp_reader', 'elmo_capacity_now', 'SELECT')
          AND NOT has_function_privilege('public', 'elmo_capacity_at(text, timestamptz)', 'EXECUTE'),
          'capacity functions and view are elmo_oscp_reader''s (not PUBLIC''s)');
SELECT ok(NOT has_function_privilege('public', 'elmo_replay(bigint)', 'EXECUTE')
          AND NOT has_function_privilege('public', 'elmo_discard(bigint, text)', 'EXECUTE'), 'replay and discard are not');

SELECT * FROM finish();
ROLLBACK;
