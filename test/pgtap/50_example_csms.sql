-- The example CSMS (examples/csms.sql): ELMO's forecasts, posted over real
-- HTTP into the worker, are split across each station's chargers by its
-- trigger on capacity_forecast.  Everything it creates lives in schema csms,
-- dropped at the end (with its trigger); statements commit one by one, as the
-- worker must see the stations.
\ir ../helpers.sql
SELECT plan(45);
\set QUIET 1
DROP SCHEMA IF EXISTS csms CASCADE;     -- left by a run that stopped half-way
\ir ../../examples/csms.sql

-- An instant of a local day: tomorrow at 12:30 is pg_temp.at(1, '12:30').
CREATE FUNCTION pg_temp.at(days int, hhmm text) RETURNS timestamptz
    LANGUAGE sql STABLE AS $$ SELECT _elmo_day_start(_elmo_local_day(now()) + days) + hhmm::interval $$;
-- The limits of station EX-S1 at an instant, as "charger=kW" in charger order.
CREATE FUNCTION pg_temp.s1_at(t timestamptz) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT string_agg(charger_id || '=' || limit_kw, ' ' ORDER BY charger_id)
      FROM csms.limits_at(t) WHERE station_id = 'EX-S1' $$;

SELECT ok(test.fake_registration() IS NOT NULL, 'a registration whose token the test knows');
INSERT INTO csms.station VALUES ('EX-S1', 'depot'), ('EX-S2', 'mall');
INSERT INTO csms.charger (charger_id, station_id, max_kw, phases) VALUES
    ('EX-C1', 'EX-S1', 7, 1), ('EX-C2', 'EX-S1', 22, 3), ('EX-C3', 'EX-S1', 50, 3), ('EX-C4', 'EX-S1', 150, 3),
    ('EX-D1', 'EX-S2', 11, 3), ('EX-D2', 'EX-S2', 11, 3);

SELECT has_trigger('capacity_forecast', 'csms_split_capacity', 'the example''s trigger is on capacity_forecast');

-- ---------------------------------------------------------------- the splitting rule
SELECT results_eq($$SELECT charger_id, limit_kw, limit_a FROM csms.split_capacity('EX-S1', 100)$$,
                  $$VALUES ('EX-C1', 7.0, 30.4), ('EX-C2', 22.0, 31.8), ('EX-C3', 35.5, 51.4), ('EX-C4', 35.5, 51.4)$$,
                  '100 kW: 25 each, the 7 and 22 kW chargers capped, their leftovers shared by the others (kW, A per phase)');
SELECT results_eq($$SELECT charger_id, limit_kw FROM csms.split_capacity('EX-S1', 60)$$,
                  $$VALUES ('EX-C1', 7.0), ('EX-C2', 17.6), ('EX-C3', 17.6), ('EX-C4', 17.6)$$,
                  '60 kW: 53/3 each for the others, rounded down to 0.1 kW');
SELECT results_eq($$SELECT charger_id, limit_kw FROM csms.split_capacity('EX-S1', 1000)$$,
                  $$VALUES ('EX-C1', 7.0), ('EX-C2', 22.0), ('EX-C3', 50.0), ('EX-C4', 150.0)$$,
                  'more than enough: every charger at its max');
SELECT is((SELECT count(*) FROM generate_series(0, 400, 0.7) cap, csms.split_capacity('EX-S1', cap) sp
             JOIN csms.charger c USING (charger_id) WHERE sp.limit_kw > c.max_kw OR sp.limit_kw < 0),
          0::bigint, 'for any capacity 0..400 kW: no charger above its max, none below 0');
SELECT ok(bool_and(s.total <= s.cap AND s.total >= least(s.cap, 229) - 0.4), 'the shares add up to the capacity (or every max), less rounding, never more')
  FROM (SELECT cap, sum(sp.limit_kw) AS total
          FROM generate_series(0, 400, 0.7) cap, csms.split_capacity('EX-S1', cap) sp GROUP BY cap) s;

-- ---------------------------------------------------------------- ELMO's day-ahead assignment for tomorrow
SELECT is((test.post('update_group_capacity_forecast',
                     test.day_body('EX-S1', _elmo_local_day(now()) + 1,
                                      array_fill(300, '{8}') || array_fill(100, '{10}') || array_fill(40, '{6}')::numeric[]))).status,
          204, 'day-ahead for EX-S1 tomorrow: 300 kW 00-08, 100 kW 08-18, 40 kW 18-24, over HTTP');
SELECT is(kind, 'day_ahead', 'stored as a day-ahead assignment') FROM capacity_forecast WHERE group_id = 'EX-S1';
SELECT is((SELECT count(*) FROM elmo_unapplied), 0::bigint, 'applied with the trigger, nothing left unapplied');
SELECT results_eq($$SELECT valid_from, valid_to, limit_kw, kind FROM csms.charger_limit
                     WHERE charger_id = 'EX-C4' ORDER BY valid_from$$,
                  $$VALUES (pg_temp.at(1, '00:00'), pg_temp.at(1, '08:00'), 150.0, 'day_ahead'),
                           (pg_temp.at(1, '08:00'), pg_temp.at(1, '18:00'), 35.5, 'day_ahead'),
                           (pg_temp.at(1, '18:00'), pg_temp.at(2, '00:00'), 11.0, 'day_ahead')$$,
                  'EX-C4: one limit per stretch of the plan, at the right hours, valid from/to');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '03:00')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=150.0', 'tomorrow 03:00 (300 kW): every charger at its max');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '12:30')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=35.5 EX-C4=35.5', 'tomorrow 12:30 (100 kW): the fair split');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '23:59')), 'EX-C1=7.0 EX-C2=11.0 EX-C3=11.0 EX-C4=11.0', 'tomorrow 23:59 (40 kW): 7 + 3 x 11');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '07:59:59.999')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=150.0', '... up to the end of the 07:00 block');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '08:00')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=35.5 EX-C4=35.5', '... and the 08:00 block''s limit from 08:00 on');
SELECT is((SELECT count(*) FROM csms.charger_limit l JOIN csms.charger c USING (charger_id)
            WHERE l.limit_kw > c.max_kw), 0::bigint, 'no limit above its charger''s max');
SELECT is((SELECT count(*) FROM (SELECT valid_from, max(station_kw) AS cap, sum(limit_kw) AS total
                                   FROM csms.charger_limit WHERE station_id = 'EX-S1' GROUP BY valid_from) s
            WHERE s.total > s.cap), 0::bigint, 'in every segment the chargers'' limits add up to no more than the station''s capacity');
SELECT is((SELECT count(*) FROM csms.charger_limit WHERE station_id = 'EX-S2'), 0::bigint, 'the other station is untouched');
SELECT is(csms.ocpp_profile('EX-C4', _elmo_local_day(now()) + 1)->'csChargingProfiles'->'chargingSchedule'->'chargingSchedulePeriod',
          '[{"startPeriod": 0, "limit": 150000}, {"startPeriod": 28800, "limit": 35500}, {"startPeriod": 64800, "limit": 11000}]'::jsonb,
          'the SetChargingProfile schedule for EX-C4 tomorrow (W, seconds from local midnight)');
SELECT is(csms.ocpp_profile('EX-C4', _elmo_local_day(now()) + 1)->'csChargingProfiles'->>'validFrom',
          to_char(pg_temp.at(1, '00:00') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '... valid from local midnight');

-- a later assignment of the same day replaces the plan
SELECT is((test.post('update_group_capacity_forecast', test.day_body('EX-S1', _elmo_local_day(now()) + 1, 200))).status,
          204, 'a second day-ahead for tomorrow: 200 kW all day');
SELECT results_eq($$SELECT charger_id, valid_from, valid_to, limit_kw FROM csms.charger_limit
                     WHERE station_id = 'EX-S1' ORDER BY charger_id, valid_from$$,
                  $$VALUES ('EX-C1', pg_temp.at(1, '00:00'), pg_temp.at(2, '00:00'), 7.0),
                           ('EX-C2', pg_temp.at(1, '00:00'), pg_temp.at(2, '00:00'), 22.0),
                           ('EX-C3', pg_temp.at(1, '00:00'), pg_temp.at(2, '00:00'), 50.0),
                           ('EX-C4', pg_temp.at(1, '00:00'), pg_temp.at(2, '00:00'), 121.0)$$,
                  'the day''s limits are rewritten from the plan now in force');

-- ---------------------------------------------------------------- an emergency, mid-day today
SELECT is(pg_temp.s1_at(now()), 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=150.0', 'now: no ELMO limit today, every charger may use its max');
SELECT is(kind, 'none', 'shown as no ELMO limit') FROM csms.charger_limit_now WHERE charger_id = 'EX-C4';
CREATE TEMP TABLE em AS SELECT date_trunc('minute', now()) + interval '20 min' AS s, date_trunc('minute', now()) + interval '80 min' AS e;
SELECT is((test.post('update_group_capacity_forecast', test.emergency_body('EX-S1', s, e, 20))).status, 204,
          'ELMO''s emergency: 20 kW from in 20 minutes, for an hour') FROM em;
SELECT is(kind, 'emergency', 'stored as an emergency') FROM capacity_forecast WHERE group_id = 'EX-S1' ORDER BY id DESC LIMIT 1;
SELECT is(pg_temp.s1_at(s + (e - s) / 2), 'EX-C1=5.0 EX-C2=5.0 EX-C3=5.0 EX-C4=5.0', 'during the emergency: 20 kW shared, 5 each') FROM em;
SELECT is(pg_temp.s1_at(s), 'EX-C1=5.0 EX-C2=5.0 EX-C3=5.0 EX-C4=5.0', '... from its first instant') FROM em;
SELECT is((SELECT kind FROM csms.limits_at(em.s) WHERE charger_id = 'EX-C3'), 'emergency', '... marked emergency') FROM em;
SELECT is(pg_temp.s1_at(s - interval '1 ms'),
          CASE WHEN s - interval '1 ms' < pg_temp.at(1, '00:00') THEN 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=150.0'
               ELSE 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=121.0' END,     -- after midnight: tomorrow's plan
          'just before it: as before (the max today)') FROM em;
SELECT ok(pg_temp.s1_at(e) <> 'EX-C1=5.0 EX-C2=5.0 EX-C3=5.0 EX-C4=5.0'
          AND (SELECT kind FROM csms.limits_at(em.e) WHERE charger_id = 'EX-C3') <> 'emergency',
          'at its end the limits are those of before again (or of tomorrow''s plan)') FROM em;
SELECT is(pg_temp.s1_at(pg_temp.at(1, '12:00')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=121.0', 'tomorrow''s limits unchanged') FROM em;
SELECT is(csms.next_limit_change(now()), least(s, pg_temp.at(1, '00:00')),
          'next_limit_change: when the emergency''s window begins (the client pushes then)') FROM em;
SELECT is(csms.next_limit_change(s), least(e, CASE WHEN pg_temp.at(1, '00:00') > s THEN pg_temp.at(1, '00:00') END),
          '... and when it ends') FROM em;

-- ---------------------------------------------------------------- recomputing on demand
CREATE TEMP TABLE before_recompute AS SELECT charger_id, valid_from, valid_to, limit_kw, kind FROM csms.charger_limit;
SELECT ok(csms.recompute_all() > 0, 'csms.recompute_all(): today and tomorrow, every station');
SELECT is((SELECT count(*) FROM ((SELECT charger_id, valid_from, valid_to, limit_kw, kind FROM csms.charger_limit
                                   EXCEPT SELECT * FROM before_recompute)
                                  UNION ALL (SELECT * FROM before_recompute
                                   EXCEPT SELECT charger_id, valid_from, valid_to, limit_kw, kind FROM csms.charger_limit)) d),
          0::bigint, '... idempotent: the same limits as the trigger wrote');
UPDATE csms.charger SET enabled = false WHERE charger_id = 'EX-C4';
SELECT ok(csms.recompute_all('EX-S1') > 0, 'a charger out of service, then csms.recompute_all(''EX-S1'')');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '12:00')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=50.0 EX-C4=0.0',
          'the disabled charger gets 0 and takes no share') FROM em;
UPDATE csms.charger SET enabled = true WHERE charger_id = 'EX-C4';
INSERT INTO elmo_group_settings VALUES ('EX-S1', 80);
SELECT ok(csms.recompute_all('EX-S1') > 0, 'contract capacity 80 kW, recomputed');
SELECT is(pg_temp.s1_at(pg_temp.at(1, '12:00')), 'EX-C1=7.0 EX-C2=22.0 EX-C3=25.5 EX-C4=25.5',
          'the contract capacity (below the plan) is what is split');
SELECT is((SELECT kind FROM csms.limits_at(pg_temp.at(1, '12:00')) WHERE charger_id = 'EX-C4'), 'contract', '... marked contract');

-- ---------------------------------------------------------------- not our station
SELECT is((test.post('update_group_capacity_forecast', test.day_body('EX-NOT-OURS', _elmo_local_day(now()) + 1, 50))).status,
          204, 'a forecast for a group that is no station of ours');
SELECT ok(EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = 'EX-NOT-OURS')
          AND NOT EXISTS (SELECT 1 FROM elmo_unapplied)
          AND NOT EXISTS (SELECT 1 FROM csms.charger_limit WHERE station_id = 'EX-NOT-OURS'),
          '... is applied, and the trigger leaves it alone');

-- ---------------------------------------------------------------- clean up
DROP SCHEMA csms CASCADE;
SELECT hasnt_trigger('capacity_forecast', 'csms_split_capacity', 'dropped with schema csms');
SELECT test.reset();
\set QUIET 0
SELECT * FROM finish();
