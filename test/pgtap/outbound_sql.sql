-- Outbound machinery in SQL, in one transaction the worker never sees: message
-- bodies (against the captures in spec/real-elmo-wire/), the claim/record state
-- machine, guards and validation, token scrubbing, views, housekeeping.
\ir ../helpers.sql
SELECT test.reset();
BEGIN;
SELECT plan(110);
SET LOCAL elmo_oscp.enforce_deadlines = on;
SET LOCAL client_min_messages = error;   -- the warnings are the point of some calls

CREATE FUNCTION pg_temp.st(oid bigint) RETURNS text LANGUAGE sql AS
    $$ SELECT state FROM elmo_outbox WHERE id = oid $$;
CREATE FUNCTION pg_temp.claimed() RETURNS SETOF bigint LANGUAGE sql AS
    $$ SELECT id FROM _elmo_claim(100) ORDER BY id $$;
-- pretend time passed for every retry
CREATE FUNCTION pg_temp.due() RETURNS void LANGUAGE sql AS
    $$ UPDATE elmo_outbox SET next_attempt_at = now() WHERE state = 'queued' $$;

-- ---------------------------------------------------------------- nothing without a registration
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', 1)$$, '55000', NULL,
                 'a business message needs a registration');
SELECT throws_ok($$SELECT elmo_register('http://127.0.0.1:1/oscp/2.0')$$, '22023', NULL,
                 'a first registration needs an initial token');
SELECT throws_ok($$SELECT elmo_register('not a url', 'T')$$, '22023', NULL, 'elmo_url must be a URL');

-- ---------------------------------------------------------------- register (capture 02)
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
INSERT INTO ids SELECT 'register', elmo_register('https://elmo.example.com/oscp/2.0/', 'INITIAL-ELMO-TOKEN-FOR-CSMS-1', 'https://csms.example.com/oscp/fp/2.0');
SELECT is(r.state, 'pending', 'elmo_register: registration pending') FROM elmo_registration r;
SELECT is(r.elmo_url, 'https://elmo.example.com/oscp/2.0', 'trailing / of elmo_url dropped') FROM elmo_registration r;
SELECT ok(r.our_token ~ '^[A-Za-z0-9_-]{64}$', 'our token: 64 URL-safe characters') FROM elmo_registration r;
SELECT is(o.body, '{"token":"' || r.our_token || '","version_url":[{"version":"2.0","base_url":"https://csms.example.com/oscp/fp/2.0"}]}',
          'register body: token, one version_url, in capture 02''s key order')
  FROM elmo_outbox o, elmo_registration r WHERE o.id = (SELECT id FROM ids WHERE name = 'register');
SELECT is(o.url, 'https://elmo.example.com/oscp/2.0/register', 'register goes to elmo_url/register')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'register');
SELECT is(o.auth, 'initial', 'authorized by the initial token') FROM elmo_outbox o
 WHERE o.id = (SELECT id FROM ids WHERE name = 'register');
SELECT ok(o.request_id ~ '^[0-9A-Z]{32}$', 'X-Request-ID: 32 characters of [0-9A-Z]') FROM elmo_outbox o
 WHERE o.id = (SELECT id FROM ids WHERE name = 'register');

-- business messages wait for the handshake
INSERT INTO ids SELECT 'u1', elmo_report_usage('pgtap-out-g1', 1234.5, '2026-11-25 21:00:08+08');
SELECT is(o.body, '{"group_id":"pgtap-out-g1","measurements":[{"value":1234.5,"phase":"ALL","unit":"KWH","direction":"IMPORT","measure_time":"2026-11-25T21:00:08.000+08:00","energy_type":"TOTAL"}]}',
          'update_group_measurements body (capture 08a, one reading)')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'u1');

CREATE TEMP TABLE c AS SELECT * FROM _elmo_claim(100);
SELECT is((SELECT array_agg(id) FROM c), ARRAY[(SELECT id FROM ids WHERE name = 'register')],
          'claim: only the register goes before the handshake');
SELECT is("authorization", 'Token INITIAL-ELMO-TOKEN-FOR-CSMS-1', 'claim: Authorization with the initial token') FROM c;
SELECT is(url, 'https://elmo.example.com/oscp/2.0/register', 'claim: the URL') FROM c;
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'u1')), 'waiting_for_handshake',
          'the usage report waits for the handshake');
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'register')), 'sending', 'the register is sending');
SELECT is((SELECT attempts FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'register')), 1, 'attempt counted');

SELECT lives_ok($$SELECT _elmo_record((SELECT id FROM ids WHERE name = 'register'), 204, NULL, '', NULL)$$, 'record 204');
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'register')), 'delivered', '2xx: delivered');
SELECT is(o.body, '{"token":"***","version_url":[{"version":"2.0","base_url":"https://csms.example.com/oscp/fp/2.0"}]}',
          'the token is scrubbed from the delivered register')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'register');
SELECT is(r.state, 'pending', 'a delivered register changes nothing else') FROM elmo_registration r;

-- ELMO's register and handshake, as the inbound side applies them
UPDATE elmo_registration SET state = 'registered', elmo_token = 'ELMO-TOKEN-ONE-0123456789abcdef', initial_token = NULL,
       elmo_base_url = 'https://elmo.example.com/oscp/2.0', registered_at = now();
SELECT _elmo_registration_changed();
INSERT INTO ids SELECT 'ack', _elmo_enqueue('handshake_acknowledge', '{}', NULL, 'PJ9FY07R4CTQ5281KUCXMXRQOC0GA5QC');
DROP TABLE c; CREATE TEMP TABLE c AS SELECT * FROM _elmo_claim(100);
SELECT is((SELECT array_agg(id) FROM c), ARRAY[(SELECT id FROM ids WHERE name = 'ack')], 'claim: the acknowledge goes');
SELECT is("authorization", 'Token ELMO-TOKEN-ONE-0123456789abcdef', 'with ELMO''s token') FROM c;
SELECT is(correlation_id, 'PJ9FY07R4CTQ5281KUCXMXRQOC0GA5QC', 'X-Correlation-ID = the handshake''s X-Request-ID') FROM c;
SELECT is(body, '{}', 'acknowledge body {} (rerun/02)') FROM c;
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'ack'), 204, NULL, NULL, NULL);
SELECT ok(r.connected AND r.connected_at IS NOT NULL, 'acknowledge delivered: connected') FROM elmo_registration r;
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'u1')), 'queued', 'waiting messages released');

-- ---------------------------------------------------------------- order in a group, retries
INSERT INTO ids SELECT 'u2', elmo_report_usage('pgtap-out-g1', 1300);
INSERT INTO ids SELECT 'v1', elmo_report_usage('pgtap-out-g2', 7);
SELECT is(ARRAY(SELECT pg_temp.claimed()), ARRAY[(SELECT id FROM ids WHERE name = 'u1'), (SELECT id FROM ids WHERE name = 'v1')],
          'claim: the oldest message of each group, one per group');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'u1'), 503,
                    NULL, '{"message":"down for maintenance","error":"Service Unavailable","statusCode":503}', '{"total_ms": 3}');
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'u1')), 'queued', '503: queued again');
SELECT ok((SELECT next_attempt_at > now() AND next_attempt_at <= now() + interval '1 s' FROM elmo_outbox
            WHERE id = (SELECT id FROM ids WHERE name = 'u1')), 'first backoff: at most a second');
SELECT is((SELECT last_error FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1')),
          'HTTP 503: down for maintenance', 'ELMO''s message kept');
SELECT ok(_elmo_next_attempt_at() > now(), '_elmo_next_attempt_at: the retry');
SELECT is_empty($$SELECT pg_temp.claimed()$$, 'nothing due: the retry waits, its group behind it');
SELECT pg_temp.due();
SELECT is(ARRAY(SELECT pg_temp.claimed()), ARRAY[(SELECT id FROM ids WHERE name = 'u1')], 'the retry is claimed first');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'u1'), 0, 'Failed to connect to elmo.example.com port 443: Connection refused',
                    NULL, '{"dns_ms": 0.1, "connect_ms": 0, "total_ms": 0.3}');
SELECT is((SELECT last_error FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1')),
          'Failed to connect to elmo.example.com port 443: Connection refused', 'network error kept');
SELECT ok((SELECT timing ? 'dns_ms' FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1')), 'timing kept');
SELECT pg_temp.due();
UPDATE elmo_outbox SET attempts = current_setting('elmo_oscp.max_attempts')::int - 1
 WHERE id = (SELECT id FROM ids WHERE name = 'u1');
SELECT is(ARRAY(SELECT pg_temp.claimed()), ARRAY[(SELECT id FROM ids WHERE name = 'u1')], 'last attempt');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'u1'), 429, NULL, NULL, NULL);
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'u1')), 'failed', 'max_attempts reached: failed');
SELECT matches((SELECT last_error FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1')),
               '^gave up after \d+ attempts', 'says why');
SELECT is(ARRAY(SELECT pg_temp.claimed()), ARRAY[(SELECT id FROM ids WHERE name = 'u2')], 'a failed message no longer blocks its group');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'u2'), 400, NULL,
                    '{"message":["measurements: Should have at least one item"],"error":"Bad Request","statusCode":400}', NULL);
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'u2')), 'failed', '400: failed at once');
SELECT is((SELECT last_error FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u2')),
          'HTTP 400: measurements: Should have at least one item', 'ELMO''s message array kept (capture 08c)');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'v1'), 202, NULL, NULL, NULL);
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'v1')), 'delivered', '202 counts as delivered');
SELECT lives_ok($$SELECT _elmo_record((SELECT id FROM ids WHERE name = 'v1'), 500, NULL, NULL, NULL)$$,
                'a second outcome for the same message is ignored');
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'v1')), 'delivered', '... and changes nothing');

-- ---------------------------------------------------------------- usage validation
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', -1)$$, '22023', NULL, 'negative kWh refused');
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', 'NaN')$$, '22023', NULL, 'NaN refused');
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', NULL)$$, '22023', NULL, 'NULL refused');
SELECT throws_ok($$SELECT elmo_report_usage('', 1)$$, '22023', NULL, 'empty group_id refused');
SELECT is((SELECT count(*)::int FROM elmo_usage_last WHERE group_id = 'pgtap-out-g1'), 0,
          'the group''s readings were refused or never delivered: none is the baseline');
SELECT lives_ok($$SELECT elmo_report_usage('pgtap-out-g1', 1200)$$, 'so a reading below the refused 1300 is taken');
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', 1000)$$, '22023', NULL, 'a decrease is an error');
SELECT lives_ok($$SELECT elmo_report_usage('pgtap-out-g1', 1000, allow_decrease => true)$$, 'unless allowed (meter replaced)');
SELECT is((SELECT kwh FROM elmo_usage_last WHERE group_id = 'pgtap-out-g1'), 1000::numeric, 'the last reading is tracked');
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', 1001, now() + interval '1 minute')$$, '22023',
                 NULL, 'a reading stamped in the future is refused at the call');
SELECT is((SELECT kwh FROM elmo_usage_last WHERE group_id = 'pgtap-out-g1'), 1000::numeric, '... and is no baseline');
SELECT is((SELECT count(*) FROM (SELECT elmo_report_usage('pgtap-out-set-' || g, g) FROM generate_series(1, 5) g) s), 5::bigint,
          'set-returning style: one message per call');

-- ---------------------------------------------------------------- 403 not connected, lock-out, token rotation
INSERT INTO ids SELECT 'w1', elmo_report_usage('pgtap-out-g3', 1);
SELECT is(ARRAY(SELECT id FROM _elmo_claim(100) WHERE id = (SELECT id FROM ids WHERE name = 'w1')),
          ARRAY[(SELECT id FROM ids WHERE name = 'w1')], 'claimed');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'w1'), 403, NULL,
                    '{"message":"CSMS[1] is not connected, should register and handshake first","error":"Forbidden","statusCode":403}', NULL);
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w1')), 'waiting_for_handshake', '403 not connected: waits (capture 05b)');
SELECT ok(NOT r.connected, 'and we know we are not connected') FROM elmo_registration r;
SELECT _elmo_registration_changed();
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w1')), 'waiting_for_handshake', 'no retry storm until the handshake');
UPDATE elmo_registration SET connected = true, connected_at = now();
SELECT _elmo_registration_changed();
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w1')), 'queued', 'released once connected');
SELECT is(ARRAY(SELECT id FROM _elmo_claim(100) WHERE id = (SELECT id FROM ids WHERE name = 'w1')),
          ARRAY[(SELECT id FROM ids WHERE name = 'w1')], 'claimed again');
-- ELMO re-registered meanwhile: the token the request carried is not the current one
UPDATE elmo_registration SET elmo_token = 'ELMO-TOKEN-TWO-0123456789abcdef';
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'w1'), 403, NULL,
                    '{"message":"Invalid authorization token","error":"Forbidden","statusCode":403}', NULL);
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w1')), 'queued', '403 for a token rotated meanwhile: just retried');
SELECT is(r.state, 'registered', '... not a lock-out') FROM elmo_registration r;
SELECT is((SELECT "authorization" FROM _elmo_claim(100) WHERE id = (SELECT id FROM ids WHERE name = 'w1')),
          'Token ELMO-TOKEN-TWO-0123456789abcdef', 'with the new token');
INSERT INTO ids SELECT 'w2', elmo_report_usage('pgtap-out-g4', 1);
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'w1'), 403, NULL,
                    '{"message":"Invalid authorization token","error":"Forbidden","statusCode":403}', NULL);
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w1')), 'held', '403 invalid token: held');
SELECT is(r.state, 'locked_out', 'registration locked out') FROM elmo_registration r;
SELECT matches(r.hint, 'new initial token.*elmo_register', 'the view says what to do') FROM elmo_registration_status r;
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w2')), 'held', 'the other messages are held too');
SELECT is_empty($$SELECT * FROM _elmo_claim(100)$$, 'nothing is claimed while locked out');
INSERT INTO ids SELECT 'register2', elmo_register('https://elmo.example.com/oscp/2.0', 'NEW-INITIAL-TOKEN-FROM-ADMIN', 'https://csms.example.com/oscp/fp/2.0');
SELECT is(r.state, 'pending', 'a new initial token: pending again') FROM elmo_registration r;
SELECT ok(r.elmo_token IS NULL AND NOT r.connected, 'ELMO''s old token forgotten, not connected') FROM elmo_registration r;
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w2')), 'queued', 'held messages released');
SELECT is((SELECT array_agg(id) FROM _elmo_claim(100)), ARRAY[(SELECT id FROM ids WHERE name = 'register2')],
          'only the register goes; the rest waits for the handshake');
SELECT is(pg_temp.st((SELECT id FROM ids WHERE name = 'w2')), 'waiting_for_handshake', 'parked');

-- ---------------------------------------------------------------- update, unregister
UPDATE elmo_registration SET state = 'registered', elmo_token = 'ELMO-TOKEN-THREE-0123456789abcd', connected = true;
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'register2'), 204, NULL, NULL, NULL);
INSERT INTO ids SELECT 'put', elmo_update_registration();
SELECT is(method, 'PUT', 'elmo_update_registration: PUT register (capture 50a)') FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'put');
SELECT ok(r.previous_token IS NOT NULL AND r.previous_token <> r.our_token, 'token rotated, previous one kept') FROM elmo_registration r;
INSERT INTO ids SELECT 'delete', elmo_unregister();
SELECT is(o.body, '{"token":"' || r.our_token || '","version_url":[{"version":"2.0","base_url":"https://csms.example.com/oscp/fp/2.0"}]}',
          'DELETE register carries the full body (capture 51a)')
  FROM elmo_outbox o, elmo_registration r WHERE o.id = (SELECT id FROM ids WHERE name = 'delete') AND o.method = 'DELETE';
SELECT is((SELECT array_agg(url ORDER BY id) FROM _elmo_claim(100) WHERE method <> 'POST'),
          ARRAY['https://elmo.example.com/oscp/2.0/register'], 'register messages go one at a time, in order');
SELECT throws_ok($$SELECT elmo_report_usage('pgtap-out-g1', 2000)$$, '55000', 'this CSMS is unregistering from ELMO',
                 'once DELETE register is queued, a message about a station is refused, not parked');
UPDATE elmo_outbox SET state = 'sending' WHERE id = (SELECT id FROM ids WHERE name = 'delete');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'delete'), 400, NULL,
                    '{"message":"bad request","error":"Bad Request","statusCode":400}', NULL);
SELECT lives_ok($$SELECT _elmo_registration_open()$$, 'ELMO refused the DELETE: such messages are taken again');

-- ---------------------------------------------------------------- adjust (captures 25a, 25b)
SELECT throws_ok($$SELECT _elmo_adjust_guard('pgtap-out-g1', '2026-11-27', '2026-11-25 13:59:59+08')$$, '22023', NULL,
                 'adjust: only tomorrow');
SELECT throws_ok($$SELECT _elmo_adjust_guard('pgtap-out-g1', '2026-11-26', '2026-11-25 14:00:00+08')$$, '55000', NULL,
                 'adjust: not after 14:00');
SELECT lives_ok($$SELECT _elmo_adjust_guard('pgtap-out-g1', '2026-11-26', '2026-11-25 13:59:59+08')$$,
                'adjust: tomorrow before 14:00 (only a warning without a day-ahead plan)');
SELECT set_config('elmo_oscp.enforce_deadlines', 'off', true);
INSERT INTO ids SELECT 'adj', elmo_adjust_capacity('pgtap-out-g1', 150, '2026-11-26');
SELECT is(left(o.body, length(w.want)), w.want, 'adjust body: group_id, type, forecasted_blocks (capture 25a)')
  FROM elmo_outbox o, (VALUES ('{"group_id":"pgtap-out-g1","type":"CONSUMPTION","forecasted_blocks":[{"capacity":150,"phase":"ALL","unit":"KW","start_time":"2026-11-26T00:00:00.000+08:00","end_time":"2026-11-26T01:00:00.000+08:00"},{"capacity":150,"phase":"ALL","unit":"KW",')) w(want)
 WHERE o.id = (SELECT id FROM ids WHERE name = 'adj');
SELECT is(jsonb_array_length(o.body::jsonb -> 'forecasted_blocks'), 24, '24 blocks') FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'adj');
SELECT is(o.body::jsonb -> 'forecasted_blocks' -> 23 ->> 'end_time', '2026-11-27T00:00:00.000+08:00', 'the last one ends at midnight')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'adj');
SELECT is(a.state, 'pending', 'the adjust request is pending') FROM elmo_adjust_request a WHERE a.outbox_id = (SELECT id FROM ids WHERE name = 'adj');
SELECT set_config('elmo_oscp.enforce_deadlines', 'on', true);
SELECT throws_ok($$SELECT _elmo_adjust_guard('pgtap-out-g1', '2026-11-26', '2026-11-25 10:00:00+08')$$, '23505', NULL,
                 'a second request for the same group and day is refused');
SELECT throws_ok($$SELECT elmo_adjust_capacity('pgtap-out-g1', ARRAY[1, 2, 3]::numeric[])$$, '22023', NULL, 'hourly_kw needs 24 values');
SELECT throws_ok($$SELECT elmo_adjust_capacity('pgtap-out-g1', -5::numeric)$$, '22023', NULL, 'no negative capacity');
UPDATE elmo_outbox SET state = 'sending' WHERE id = (SELECT id FROM ids WHERE name = 'adj');
SELECT _elmo_record((SELECT id FROM ids WHERE name = 'adj'), 404, NULL,
                    '{"message":"ChargingStation[pgtap-out-g1] negotiation not found","error":"Not Found","statusCode":404}', NULL);
SELECT is(a.state, 'failed', '404 from ELMO: the adjust request failed (capture 11a)') FROM elmo_adjust_request a
 WHERE a.outbox_id = (SELECT id FROM ids WHERE name = 'adj');

-- ---------------------------------------------------------------- compliance error (capture 09a), trigger callback
INSERT INTO capacity_forecast (group_id, forecast_type, kind, forecast_day, received_at, request_id, payload)
VALUES ('pgtap-out-g1', 'CONSUMPTION', 'emergency', '2026-11-25', now(), 'PGTAP-OUT-FORECAST-1', '{}');
INSERT INTO ids SELECT 'ce', elmo_report_compliance_error((SELECT id FROM capacity_forecast WHERE request_id = 'PGTAP-OUT-FORECAST-1'),
    'cannot comply', '[{"unit":"KW","phase":"ALL","capacity":10,"end_time":"2026-11-26T01:00:00+08:00","start_time":"2026-11-26T00:00:00+08:00"}]');
SELECT is(o.body, '{"message":"cannot comply","forecasted_blocks":[{"capacity":10,"phase":"ALL","unit":"KW","start_time":"2026-11-26T00:00:00+08:00","end_time":"2026-11-26T01:00:00+08:00"}]}',
          'compliance error body, blocks in OSCP key order')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'ce');
SELECT is(o.correlation_id, 'PGTAP-OUT-FORECAST-1', 'X-Correlation-ID = the forecast''s X-Request-ID')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'ce');
SELECT throws_ok($$SELECT elmo_report_compliance_error((SELECT id FROM capacity_forecast WHERE request_id = 'PGTAP-OUT-FORECAST-1'), '')$$,
                 '22023', NULL, 'an empty message is refused (capture 09c)');
INSERT INTO ids SELECT 'tc', elmo_trigger_callback('update_group_capacity_forecast', 'emergency_assign_capacity', 'pgtap-out-g1', 50);
SELECT is(o.url, 'https://elmo.example.com/trigger-callback/2.0/update_group_capacity_forecast', 'trigger-callback URL from elmo_url''s origin')
  FROM elmo_outbox o WHERE o.id = (SELECT id FROM ids WHERE name = 'tc');
SELECT is(o.body, '{"callback_url":"https://csms.example.com/oscp/fp/2.0/update_group_capacity_forecast","header":{"authorization":"Token '
                  || r.our_token || '"},"purpose":"emergency_assign_capacity","group_id":"pgtap-out-g1","capacity":50}',
          'trigger-callback body')
  FROM elmo_outbox o, elmo_registration r WHERE o.id = (SELECT id FROM ids WHERE name = 'tc');

-- ---------------------------------------------------------------- views, status, housekeeping
SELECT ok(NOT EXISTS (SELECT 1 FROM elmo_registration_status s, elmo_registration r
                       WHERE s::text LIKE '%' || r.our_token || '%' OR s::text LIKE '%' || r.elmo_token || '%'),
          'the registration view shows no token');
SELECT matches(s.our_token, '^.{4}….{4}$', 'tokens masked as abcd…wxyz') FROM elmo_registration_status s;
SELECT is((SELECT outbox_held + outbox_queued + outbox_waiting_for_handshake + outbox_sending FROM elmo_status()),
          (SELECT count(*) FROM elmo_outbox WHERE state IN ('held', 'queued', 'waiting_for_handshake', 'sending')),
          'elmo_status counts the outbox');
CREATE TEMP TABLE pgtap_meters (group_id text, kwh numeric);
INSERT INTO pgtap_meters VALUES ('pgtap-out-g1', 2000), ('pgtap-out-m2', NULL), ('pgtap-out-m3', -1);
SELECT lives_ok($$SELECT _elmo_usage_queue(array_agg(group_id), array_agg(kwh), array_agg(NULL::timestamptz))
                     FROM pgtap_meters$$,
                'an automatic usage report (the readings as the worker reads them from elmo_oscp.usage_source)');
SELECT is((SELECT count(*) FROM elmo_outbox WHERE message = 'update_group_measurements' AND group_id = 'pgtap-out-g1'
              AND body LIKE '%"value":2000,%'), 1::bigint, 'the automatic report sent the good reading');
SELECT is((SELECT array_agg(group_id ORDER BY group_id) FROM elmo_usage_skipped), ARRAY['pgtap-out-m2', 'pgtap-out-m3'],
          'NULL and negative readings are skipped and shown');
UPDATE elmo_adjust_request SET state = 'pending', day = '2020-01-01';
SELECT ok(_elmo_housekeeping() <= now() + interval '10 min', 'housekeeping asks to run again within 10 minutes');
SELECT is((SELECT state FROM elmo_adjust_request LIMIT 1), 'expired', 'an unanswered adjust request expires when its day begins');

-- ---------------------------------------------------------------- privileges, elmo_wait
SELECT ok(NOT has_function_privilege('public', 'elmo_report_usage(text, numeric, timestamptz, boolean)', 'EXECUTE'),
          'queuing is not granted to PUBLIC');
SELECT ok(NOT has_function_privilege('public', '_elmo_claim(int)', 'EXECUTE'), 'nor the machinery');
SELECT throws_ok($$SELECT elmo_wait((SELECT id FROM ids WHERE name = 'tc'), '1s')$$, '55000', NULL,
                 'elmo_wait inside the transaction that queued the message: error');
SELECT throws_ok($$SELECT elmo_wait(-1, '1s')$$, 'P0002', NULL, 'elmo_wait of an unknown id: error');

SELECT * FROM finish();
ROLLBACK;
