-- Inbound application (_elmo_apply and its machinery): registration state,
-- handshake acknowledge, forecasts and their blocks, CSMS triggers, failures,
-- retries, elmo_replay / elmo_discard, retention.
\ir ../helpers.sql
BEGIN;
\ir ../inbound_fixtures.sql


-- ids and rows kept between statements
CREATE TEMP TABLE kept (k text PRIMARY KEY, id bigint, m elmo_received_message);
CREATE FUNCTION pg_temp.keep(k text, id bigint) RETURNS bigint LANGUAGE sql AS
    $$ INSERT INTO kept (k, id) VALUES (k, id) RETURNING id $$;
CREATE FUNCTION pg_temp.keep_row(k text, m elmo_received_message) RETURNS bigint LANGUAGE sql AS
    $$ INSERT INTO kept (k, id, m) VALUES (k, (m).id, m) RETURNING id $$;
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT id FROM kept WHERE kept.k = $1 $$;
CREATE FUNCTION pg_temp.msg(k text) RETURNS elmo_received_message LANGUAGE sql STABLE AS $$ SELECT m FROM kept WHERE kept.k = $1 $$;

SELECT plan(54);

-- one registration, as elmo_register leaves it
DELETE FROM elmo_registration;
INSERT INTO elmo_registration (elmo_url, public_url, initial_token, our_token, previous_token, connected)
VALUES ('http://127.0.0.1:3000/oscp/2.0', 'https://csms.example/oscp/fp/2.0', 'PGTAP-INITIAL', 'PGTAP-CURRENT',
        'PGTAP-PREVIOUS', true);

-- ---------------------------------------------------------------- a forecast and the CSMS's triggers

CREATE TEMP TABLE seen (via text, forecast_id bigint, blocks bigint);
-- elmo_replay applies with the worker's role's rights: its triggers write here
GRANT ALL ON seen TO elmo_oscp_worker;
CREATE FUNCTION pg_temp.count_blocks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen SELECT TG_NAME, NEW.id, count(*) FROM capacity_forecast_block b WHERE b.forecast_id = NEW.id;
    RETURN NEW;
END $$;
CREATE TRIGGER pgtap_after AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION pg_temp.count_blocks();
CREATE TRIGGER pgtap_before BEFORE INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION pg_temp.count_blocks();
CREATE CONSTRAINT TRIGGER pgtap_deferred AFTER INSERT ON capacity_forecast DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION pg_temp.count_blocks();

SELECT pg_temp.keep('da_msg', pg_temp.forecast(pg_temp.body('day_ahead')));
SELECT pg_temp.keep('da_fc', (SELECT id FROM capacity_forecast WHERE message_id = pg_temp.id('da_msg')));

SELECT results_eq(
    $$SELECT f.group_id, f.forecast_type, f.kind, f.forecast_day, f.received_at, f.request_id, f.payload,
             f.starts_at, f.ends_at
        FROM capacity_forecast f WHERE f.id = pg_temp.id('da_fc')$$,
    $$SELECT m.group_id, 'CONSUMPTION', 'day_ahead', _elmo_local_day(now()) + 1, m.received_at, m.request_id, m.body,
             _elmo_day_start(_elmo_local_day(now()) + 1), _elmo_day_start(_elmo_local_day(now()) + 2)
        FROM elmo_received_message m WHERE m.id = pg_temp.id('da_msg')$$,
    'one capacity_forecast row: group, type, kind and day decided at receipt, receipt time, X-Request-ID, payload, span');
SELECT results_eq(
    $$SELECT block_no, start_time, end_time, capacity, unit, phase FROM capacity_forecast_block
       WHERE forecast_id = pg_temp.id('da_fc') ORDER BY block_no$$,
    $$SELECT h + 1, _elmo_day_start(_elmo_local_day(now()) + 1) + h * interval '1 hour',
             _elmo_day_start(_elmo_local_day(now()) + 1) + (h + 1) * interval '1 hour', 100::numeric, 'KW', 'ALL'
        FROM generate_series(0, 23) h$$,
    'its 24 blocks, numbered in payload order');
SELECT bag_eq($$SELECT via, blocks FROM seen WHERE forecast_id = pg_temp.id('da_fc')$$,
              $$VALUES ('pgtap_before', 24::bigint), ('pgtap_after', 24), ('pgtap_deferred', 24)$$,
              'BEFORE, AFTER and deferred constraint triggers on capacity_forecast all see every block, inside the apply');
SELECT results_eq($$SELECT state, apply_attempts, applied_at IS NOT NULL FROM elmo_received_message WHERE id = pg_temp.id('da_msg')$$,
                  $$VALUES ('applied', 1, true)$$, 'the message is applied');
SELECT is((SELECT last_heard_at FROM elmo_registration), (SELECT received_at FROM elmo_received_message WHERE id = pg_temp.id('da_msg')),
          'last_heard_at = the message''s receipt time');
SELECT is((SELECT previous_token FROM elmo_registration), NULL, 'a message authenticated with the current token retires the previous one');
CREATE TEMP TABLE reg_version AS SELECT ctid AS v FROM elmo_registration;
SELECT pg_temp.keep('batch2', pg_temp.forecast(pg_temp.body('emergency_utc')));
SELECT is((SELECT ctid FROM elmo_registration), (SELECT v FROM reg_version),
          'a second forecast received at the same time (one batch) leaves the registration row alone');
UPDATE elmo_registration SET previous_token = 'PGTAP-PREVIOUS';

SELECT throws_ok(format('SELECT _elmo_apply(%s)', pg_temp.id('da_msg')), '55000', NULL, 'applying twice raises');
SELECT throws_ok('SELECT _elmo_apply(-1)', 'P0002', NULL, 'applying a message that does not exist raises');

-- the reply to a pending adjust request answers it
INSERT INTO elmo_outbox (message, group_id, body) VALUES ('adjust_group_capacity_forecast', 'pgtap-inbound-g1', '{}');
INSERT INTO elmo_adjust_request (group_id, day, outbox_id, hourly_kw)
VALUES ('pgtap-inbound-g1', _elmo_local_day(now()) + 1, currval('elmo_outbox_id_seq'), '{}');
SELECT pg_temp.keep('adj', currval('elmo_adjust_request_id_seq'));
SELECT pg_temp.keep('reply_msg', pg_temp.forecast(pg_temp.body('reply')));
SELECT results_eq(
    $$SELECT a.state, a.reply_forecast_id, a.closed_at IS NOT NULL FROM elmo_adjust_request a WHERE a.id = pg_temp.id('adj')$$,
    $$SELECT 'answered', f.id, true FROM capacity_forecast f WHERE f.message_id = pg_temp.id('reply_msg') AND f.kind = 'additional_reply'$$,
    'the additional_reply answers the adjust request');

-- ---------------------------------------------------------------- a CSMS trigger that raises

CREATE TEMP TABLE broken (yes boolean);
INSERT INTO broken VALUES (true);
GRANT SELECT ON broken TO elmo_oscp_worker;
CREATE FUNCTION pg_temp.maybe_raise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT yes FROM broken) THEN RAISE EXCEPTION 'pgtap: CSMS trigger broke' USING ERRCODE = 'check_violation'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER pgtap_raise AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION pg_temp.maybe_raise();

-- what src/inbound.c does: receive, apply in a subtransaction, record a failure
CREATE FUNCTION pg_temp.deliver(body text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE id bigint; st text; er text;
BEGIN
    SELECT message_id INTO id FROM pg_temp.recv('update_group_capacity_forecast', body);
    BEGIN
        PERFORM _elmo_apply(id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, er = MESSAGE_TEXT;
        PERFORM _elmo_apply_failed(id, st, er);
    END;
    RETURN id;
END $$;

SELECT pg_temp.keep('bad_msg', pg_temp.deliver(pg_temp.body('emergency_utc')));
SELECT results_eq(
    $$SELECT state, apply_attempts, last_sqlstate, last_error,
             next_apply_at BETWEEN clock_timestamp() + interval '1 s' AND clock_timestamp() + interval '2 s'
        FROM elmo_received_message WHERE id = pg_temp.id('bad_msg')$$,
    $$VALUES ('apply_failed', 1, '23514', 'pgtap: CSMS trigger broke', true)$$,
    'a failed apply is kept as apply_failed with SQLSTATE, error, attempts and a retry time 2 s later');
SELECT is((SELECT count(*) FROM capacity_forecast WHERE message_id = pg_temp.id('bad_msg')), 0::bigint, '... and nothing of it was written');
SELECT ok(NOT (pg_temp.id('bad_msg') IN (SELECT _elmo_applies_due(100000))), 'it is not due before its retry time');
SELECT ok(_elmo_next_apply_at() <= (SELECT next_apply_at FROM elmo_received_message WHERE id = pg_temp.id('bad_msg')),
          '_elmo_next_apply_at() is no later than its retry time');
SELECT results_eq($$SELECT state, apply_attempts, last_error FROM elmo_unapplied WHERE id = pg_temp.id('bad_msg')$$,
                  $$VALUES ('apply_failed', 1, 'pgtap: CSMS trigger broke')$$, 'elmo_unapplied shows it');
SELECT throws_ok(format('SELECT elmo_replay(%s)', pg_temp.id('bad_msg')), '23514', 'pgtap: CSMS trigger broke',
                 'elmo_replay raises the error while the trigger still fails');
SELECT is((SELECT state FROM elmo_received_message WHERE id = pg_temp.id('bad_msg')), 'apply_failed', '... and the message stays as it was');

UPDATE broken SET yes = false;
SELECT is(elmo_replay(pg_temp.id('bad_msg')), 'applied', 'elmo_replay applies it once the trigger is fixed');
SELECT results_eq($$SELECT kind, group_id FROM capacity_forecast WHERE message_id = pg_temp.id('bad_msg')$$,
                  $$VALUES ('emergency', 'pgtap-inbound-g2')$$, '... its forecast is there');
SELECT results_eq($$SELECT state, apply_attempts FROM elmo_received_message WHERE id = pg_temp.id('bad_msg')$$,
                  $$VALUES ('applied', 2)$$, '... applied at the second attempt');
SELECT throws_ok(format('SELECT elmo_replay(%s)', pg_temp.id('bad_msg')), '55000', NULL, 'elmo_replay of an applied message raises');
SELECT throws_ok('SELECT elmo_replay(-1)', 'P0002', NULL, 'elmo_replay of an unknown message raises');
SELECT throws_ok(format('SELECT elmo_discard(%s, %L)', pg_temp.id('bad_msg'), 'x'), '55000', NULL, 'elmo_discard of an applied message raises');

UPDATE broken SET yes = true;
SELECT pg_temp.keep('bad2', pg_temp.deliver(pg_temp.body('emergency_utc')));
SELECT lives_ok(format('SELECT elmo_discard(%s, %L)', pg_temp.id('bad2'), 'pgtap: duplicate of an emergency'), 'elmo_discard of an unapplied message');
SELECT results_eq($$SELECT state, discarded_reason FROM elmo_received_message WHERE id = pg_temp.id('bad2')$$,
                  $$VALUES ('discarded', 'pgtap: duplicate of an emergency')$$, '... records it, with the reason');
SELECT ok(NOT (pg_temp.id('bad2') IN (SELECT id FROM elmo_unapplied)), '... and it leaves elmo_unapplied');

SELECT pg_temp.keep('bad3', pg_temp.deliver(pg_temp.body('emergency_utc')));
SELECT _elmo_apply_failed(pg_temp.id('bad3'), '23514', 'again') FROM generate_series(1, 9);
SELECT results_eq(
    $$SELECT apply_attempts, next_apply_at BETWEEN clock_timestamp() + interval '59 s' AND clock_timestamp() + interval '60 s'
        FROM elmo_received_message WHERE id = pg_temp.id('bad3')$$,
    $$VALUES (10, true)$$, 'the backoff never exceeds a minute');
UPDATE elmo_received_message SET next_apply_at = clock_timestamp() - interval '1 s' WHERE id = pg_temp.id('bad3');
SELECT ok(pg_temp.id('bad3') IN (SELECT _elmo_applies_due(100000)), 'a failed message is due at its retry time');
SELECT pg_temp.keep('fresh', (SELECT message_id FROM pg_temp.recv('update_group_capacity_forecast', pg_temp.body('emergency_utc'))));
SELECT ok(pg_temp.id('fresh') IN (SELECT _elmo_applies_due(100000)), 'a received message not yet applied is due at once');
SELECT ok(_elmo_next_apply_at() <= now(), '_elmo_next_apply_at() is not in the future while one is due');
DROP TRIGGER pgtap_raise ON capacity_forecast;

-- ---------------------------------------------------------------- registration messages

-- (the forecasts above, authenticated with the current token, retired it)
UPDATE elmo_registration SET previous_token = 'PGTAP-PREVIOUS';
SELECT pg_temp.keep_row('r', pg_temp.stored('register', pg_temp.body('register'), cur => false));
SELECT _elmo_apply((pg_temp.msg('r')).id);
SELECT results_eq(
    $$SELECT state, elmo_token, elmo_version, elmo_base_url, initial_token, previous_token, registered_at, last_error
        FROM elmo_registration$$,
    $$SELECT 'registered', (pg_temp.msg('r')).body->>'token', '2.0', 'http://127.0.0.1:3000/oscp/2.0',
             NULL::text, 'PGTAP-PREVIOUS', (pg_temp.msg('r')).received_at, NULL::text$$,
    'ELMO''s register: its token, version, base_url resolved against the ELMO URL, registered, initial token used up');
SELECT pg_temp.keep_row('r2', pg_temp.stored('register', pg_temp.body('register2'), cur => true));
SELECT _elmo_apply((pg_temp.msg('r2')).id);
SELECT results_eq($$SELECT elmo_token, previous_token FROM elmo_registration$$,
                  $$SELECT (pg_temp.msg('r2')).body->>'token', NULL::text$$,
                  'a register authenticated with the current token retires the previous token');

SELECT pg_temp.keep_row('r3', pg_temp.stored('register', '{"token":"PGTAP-ELMO-TOKEN","version_url":[{"version":"1.0","base_url":"/v1"},{"version":"2.0","base_url":"https://elmo.example/oscp/2.0/"}]}', 'PUT'));
SELECT _elmo_apply((pg_temp.msg('r3')).id);
SELECT results_eq($$SELECT state, elmo_token, elmo_version, elmo_base_url FROM elmo_registration$$,
                  $$VALUES ('registered', 'PGTAP-ELMO-TOKEN', '2.0', 'https://elmo.example/oscp/2.0')$$,
                  'PUT register: the 2.0 entry, an absolute base_url kept (without a trailing /)');

SELECT is(_elmo_resolve_url('https://elmo.example:8443/a/b', '/oscp/2.0'), 'https://elmo.example:8443/oscp/2.0', 'relative to the origin');
SELECT is(_elmo_resolve_url('https://elmo.example:8443/a/b', 'oscp/2.0'), 'https://elmo.example:8443/a/oscp/2.0', 'relative to the path');
SELECT is(_elmo_resolve_url('https://elmo.example', 'oscp/2.0'), 'https://elmo.example/oscp/2.0', 'relative to a bare origin');
SELECT is(_elmo_resolve_url('https://elmo.example/a', '//other.example/oscp'), 'https://other.example/oscp', 'network-path reference');

SELECT pg_temp.keep_row('h', pg_temp.stored('handshake', pg_temp.body('handshake')));
SELECT _elmo_apply((pg_temp.msg('h')).id);
SELECT results_eq(
    $$SELECT required_behaviour, heartbeat_interval, handshake_request_id, connected FROM elmo_registration$$,
    $$SELECT '{"measurement_configuration": ["CONTINUOUS"]}'::jsonb, NULL::int, (pg_temp.msg('h')).request_id, false$$,
    'handshake: required behaviour stored, not connected until our acknowledge is accepted');
SELECT results_eq(
    $$SELECT message, body, correlation_id FROM elmo_outbox WHERE message = 'handshake_acknowledge'
       AND correlation_id = (pg_temp.msg('h')).request_id$$,
    $$VALUES ('handshake_acknowledge', '{}', (pg_temp.msg('h')).request_id)$$,
    'handshake: an acknowledge {} is queued, correlated with the handshake''s X-Request-ID');

SELECT pg_temp.keep_row('h2', pg_temp.stored('handshake', '{"measurement_configuration":["CONTINUOUS"]}'));
SELECT _elmo_apply((pg_temp.msg('h2')).id);
SELECT is((SELECT required_behaviour FROM elmo_registration), '{"measurement_configuration": ["CONTINUOUS"]}'::jsonb,
          'the flat testbed handshake is stored in the OSCP form');
SELECT pg_temp.keep_row('h3', pg_temp.stored('handshake', '{"required_behaviour":{"heartbeat_interval":30,"measurement_configuration":["INTERMITTENT"]}}'));
SELECT _elmo_apply((pg_temp.msg('h3')).id);
SELECT is((SELECT heartbeat_interval FROM elmo_registration), 30, 'heartbeat_interval stored');
SELECT pg_temp.keep_row('h4', pg_temp.stored('handshake', '{}'));
SELECT _elmo_apply((pg_temp.msg('h4')).id);
SELECT results_eq($$SELECT required_behaviour, heartbeat_interval FROM elmo_registration$$,
                  $$VALUES ('{}'::jsonb, NULL::int)$$, 'an empty handshake: no required behaviour');

SELECT pg_temp.keep_row('hb', pg_temp.stored('heartbeat', '{"offline_mode_at":"2026-11-25T13:00:00.000+08:00"}'));
SELECT _elmo_apply((pg_temp.msg('hb')).id);
SELECT is((SELECT elmo_offline_mode_at FROM elmo_registration), '2026-11-25T05:00:00Z'::timestamptz, 'heartbeat: offline_mode_at stored');

UPDATE elmo_registration SET connected = true;
SELECT pg_temp.keep_row('d', pg_temp.stored('register', '', 'DELETE'));
SELECT _elmo_apply((pg_temp.msg('d')).id);
SELECT results_eq($$SELECT state, connected FROM elmo_registration$$, $$VALUES ('unregistered', false)$$,
                  'DELETE register: unregistered, not connected');


DELETE FROM elmo_registration;
SELECT pg_temp.keep_row('r4', pg_temp.stored('register', pg_temp.body('register')));
SELECT throws_ok(format('SELECT _elmo_apply(%s)', (pg_temp.msg('r4')).id), '55000',
                 'elmo_oscp: ELMO sent register but there is no registration',
                 'a register without a registration raises a clear error');

-- ---------------------------------------------------------------- stored as applied

-- The worker's path: _elmo_receive(..., apply_now) stores the message already
-- applied and _elmo_apply(id, true) only reads it (one version of the row);
-- _elmo_apply_later puts back what the worker did not apply after all.
SELECT pg_temp.keep('now1', (SELECT message_id FROM _elmo_receive('update_group_capacity_forecast', 'POST',
        'PGTAP-NOW-1', NULL, pg_temp.body('emergency_tpe'), true, true)));
SELECT results_eq(format('SELECT state, apply_attempts, applied_at IS NOT NULL FROM elmo_received_message WHERE id = %s', pg_temp.id('now1')),
                  $$VALUES ('applied', 1, true)$$, 'apply_now: stored as applied, one attempt');
CREATE TEMP TABLE now1_ctid AS SELECT ctid AS t FROM elmo_received_message WHERE id = pg_temp.id('now1');
SELECT _elmo_apply(pg_temp.id('now1'), true);
SELECT is((SELECT count(*) FROM capacity_forecast WHERE message_id = pg_temp.id('now1')), 1::bigint,
          '_elmo_apply(id, true) applies it');
SELECT is((SELECT ctid FROM elmo_received_message WHERE id = pg_temp.id('now1')), (SELECT t FROM now1_ctid),
          '... without writing the row again');
SELECT pg_temp.keep('now2', (SELECT message_id FROM _elmo_receive('update_group_capacity_forecast', 'POST',
        'PGTAP-NOW-2', NULL, pg_temp.body('emergency_tpe'), true)));
SELECT throws_ok(format('SELECT _elmo_apply(%s, true)', pg_temp.id('now2')), '55000', format('elmo_oscp: received message %s is received, not stored as applied', pg_temp.id('now2')),
                 '_elmo_apply(id, true) refuses a message stored as received');
SELECT pg_temp.keep('now3', (SELECT message_id FROM _elmo_receive('update_group_capacity_forecast', 'POST',
        'PGTAP-NOW-3', NULL, pg_temp.body('emergency_tpe'), true, true)));
SELECT _elmo_apply_later(pg_temp.id('now3'));
SELECT results_eq(format('SELECT state, apply_attempts, applied_at FROM elmo_received_message WHERE id = %s', pg_temp.id('now3')),
                  $$VALUES ('received', 0, NULL::timestamptz)$$, '_elmo_apply_later: back to received, as if stored so');
SELECT ok(pg_temp.id('now3') IN (SELECT id FROM elmo_unapplied), '... and waiting in elmo_unapplied');
SELECT lives_ok(format('SELECT _elmo_apply(%s)', pg_temp.id('now3')), '... applied later like any other');

-- ---------------------------------------------------------------- retention

UPDATE elmo_received_message SET received_at = now() - interval '30 days' WHERE id IN (pg_temp.id('da_msg'), pg_temp.id('bad3'));
SELECT _elmo_retention_inbound();
SELECT results_eq($$SELECT id FROM elmo_received_message WHERE id IN (pg_temp.id('da_msg'), pg_temp.id('bad3'))$$, ARRAY[pg_temp.id('bad3')],
                  'retention purges old applied messages and keeps unapplied ones');
SELECT is((SELECT count(*) FROM capacity_forecast WHERE id = pg_temp.id('da_fc')), 1::bigint, '... and keeps the forecasts');

SELECT * FROM finish();
ROLLBACK;
