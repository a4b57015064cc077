-- Inbound receipt (_elmo_receive): validation with precise errors, nothing
-- stored on error, duplicates, classification at receipt by shape, with
-- ELMO's real request bodies.
\ir ../helpers.sql
BEGIN;
\ir ../inbound_fixtures.sql


SELECT plan(45);

-- ---------------------------------------------------------------- what ELMO really sends is accepted

SELECT is((SELECT status FROM pg_temp.recv('register', pg_temp.body('register'))), 204, 'ELMO''s register (03) is accepted');
SELECT is((SELECT status FROM pg_temp.recv('handshake', pg_temp.body('handshake'))), 204, 'ELMO''s handshake (04) is accepted');
SELECT is((SELECT status FROM pg_temp.recv('handshake', '{"measurement_configuration":["CONTINUOUS"]}')), 204, 'the testbed''s flat handshake is accepted');
SELECT is((SELECT status FROM pg_temp.recv('handshake', '{}')), 204, 'an empty handshake {} is accepted');
SELECT is((SELECT status FROM pg_temp.recv('handshake', '{"required_behaviour":{"heartbeat_interval":30,"measurement_configuration":["INTERMITTENT"],"new":1},"x":2}')), 204,
          'a full OSCP handshake with unknown fields is accepted');
SELECT is((SELECT status FROM pg_temp.recv('heartbeat', '{"offline_mode_at":"2026-11-25T13:00:00.000+08:00"}')), 204, 'a heartbeat is accepted');
SELECT is((SELECT status FROM pg_temp.recv('register', pg_temp.body('register'), 'PUT')), 204, 'PUT register is accepted');

SELECT is((pg_temp.stored('register', '', 'DELETE')).body, '{}'::jsonb, 'DELETE register with an empty body is stored as {}');
SELECT is((SELECT status FROM pg_temp.recv('register', pg_temp.body('register'), 'DELETE')), 204, 'DELETE register with a full body is accepted');

-- ---------------------------------------------------------------- stored as received, classified

CREATE TEMP TABLE got AS
SELECT n, r.message_id
  FROM (VALUES ('day_ahead'), ('emergency_utc'), ('emergency_tpe')) v(n),
       LATERAL pg_temp.recv('update_group_capacity_forecast', pg_temp.body(v.n)) r;

SELECT results_eq(
    $$SELECT g.n, m.state, m.kind, m.group_id, m.forecast_day, m.adjust_request_id
        FROM got g JOIN elmo_received_message m ON m.id = g.message_id ORDER BY g.n$$,
    $$VALUES ('day_ahead', 'received', 'day_ahead', 'pgtap-inbound-g1', _elmo_local_day(now()) + 1, NULL::bigint),
             ('emergency_tpe', 'received', 'emergency', 'pgtap-inbound-g2', _elmo_local_day(now()) + 1, NULL),
             ('emergency_utc', 'received', 'emergency', 'pgtap-inbound-g2',
              _elmo_local_day((to_char(_elmo_local_day(now()), 'YYYY-MM-DD') || 'T13:21:00.000+00:00')::timestamptz), NULL)$$,
    'the 10:00 assignment for tomorrow is day_ahead; the emergencies (+00:00 and +08:00, even one dated tomorrow) are emergency');

SELECT is((SELECT raw_body FROM elmo_received_message m JOIN got g ON g.message_id = m.id WHERE g.n = 'day_ahead'),
          pg_temp.body('day_ahead'), 'the raw body is kept as received');

-- an adjust request pending for g1 and tomorrow turns the same shape into the reply
INSERT INTO elmo_outbox (message, group_id, body) VALUES ('adjust_group_capacity_forecast', 'pgtap-inbound-g1', '{}');
INSERT INTO elmo_adjust_request (group_id, day, outbox_id, hourly_kw)
VALUES ('pgtap-inbound-g1', _elmo_local_day(now()) + 1, currval('elmo_outbox_id_seq'), '{}');
SELECT results_eq(
    $$SELECT (m).kind, (m).adjust_request_id
        FROM (SELECT pg_temp.stored('update_group_capacity_forecast', pg_temp.body('reply')) AS m) x$$,
    $$VALUES ('additional_reply', currval('elmo_adjust_request_id_seq'))$$,
    'the 16:00 reply while an adjust request is pending is additional_reply, naming the request');
SELECT is((pg_temp.stored('update_group_capacity_forecast', pg_temp.body('day_ahead_d2'))).kind,
          'day_ahead', 'an assignment for the day after tomorrow (no request pending for it) is day_ahead');
SELECT is((pg_temp.stored('update_group_capacity_forecast', pg_temp.body('day_ahead', _elmo_local_day(now()) - 1))).kind,
          'emergency', '24 hourly blocks for today are an emergency');
SELECT is((pg_temp.stored('update_group_capacity_forecast',
                          replace(pg_temp.body('day_ahead'), ':00:00.000+08:00', ':30:00.000+08:00'))).kind,
          'emergency', '24 hourly blocks not starting at local midnight are an emergency');
SELECT is((pg_temp.stored('update_group_capacity_forecast',
                          (SELECT jsonb_set(b, '{forecasted_blocks}', (b->'forecasted_blocks') - 23)::text
                             FROM (SELECT pg_temp.body('day_ahead')::jsonb AS b) x))).kind,
          'emergency', '23 hourly blocks are an emergency');
SELECT is((pg_temp.stored('update_group_capacity_forecast',
                          (SELECT jsonb_set(b, '{forecasted_blocks}',
                                            (SELECT jsonb_agg(e ORDER BY o DESC)
                                               FROM jsonb_array_elements(b->'forecasted_blocks') WITH ORDINALITY t(e, o)))::text
                             FROM (SELECT replace(pg_temp.body('day_ahead'), 'g1', 'g2')::jsonb AS b) x))).kind,
          'day_ahead', 'the order of the blocks does not matter');

SELECT is((SELECT status FROM pg_temp.recv('update_group_capacity_forecast',
           '{"group_id":"pgtap-inbound-g3","type":"CONSUMPTION","forecasted_blocks":[{"capacity":0,"phase":"ALL","unit":"KW","start_time":"2026-11-25T13:00:00Z","end_time":"2026-11-25T14:00:00z","new_field":true},{"capacity":12.34,"phase":"THREE","unit":"W","start_time":"2026-11-25T14:00:00Z","end_time":"2026-11-25T14:30:00-01:00"}],"new_top":[1]}')),
          204, 'capacity 0 and fractions, Z and any offset, unknown fields: accepted');

-- ---------------------------------------------------------------- duplicates

SELECT is((pg_temp.stored('handshake', '{}', rid => 'PGTAP-DUP')).request_id, 'PGTAP-DUP', 'first copy stored');
SELECT results_eq($$SELECT status, message_id FROM pg_temp.recv('update_group_capacity_forecast', pg_temp.body('emergency_utc'), rid => 'PGTAP-DUP')$$,
                  $$VALUES (204, NULL::bigint)$$, 'a repeated X-Request-ID is answered 204 with no message id');
SELECT is((SELECT count(*) FROM elmo_received_message WHERE request_id = 'PGTAP-DUP'), 1::bigint, '... and stored once');
SELECT is((pg_temp.stored('heartbeat', '{"offline_mode_at":"2026-11-25T13:00:00Z"}', cur => false)).used_current_token,
          false, 'used_current_token is stored');

-- ---------------------------------------------------------------- precise errors, nothing stored

CREATE TEMP TABLE bad (n serial, msg text, method text, body text, err text);
INSERT INTO bad (msg, method, body, err) VALUES
 ('update_group_capacity_forecast', 'POST', '{"group_id":',
  '{"message" : "malformed JSON: invalid input syntax for type json (The input string ended unexpectedly.)"}'),
 ('update_group_capacity_forecast', 'POST', '', '{"message" : "malformed JSON: empty body"}'),
 ('update_group_capacity_forecast', 'POST', '[1]', '{"message" : "body: must be a JSON object"}'),
 ('update_group_capacity_forecast', 'POST', '{"type":"CONSUMPTION","forecasted_blocks":[]}',
  '{"message" : "group_id: is required", "field" : "group_id"}'),
 ('update_group_capacity_forecast', 'POST', '{"group_id":"g","type":"consumption","forecasted_blocks":[]}',
  '{"message" : "type: must be one of CONSUMPTION, GENERATION, FALLBACK_CONSUMPTION, FALLBACK_GENERATION, OPTIMUM", "field" : "type"}'),
 ('update_group_capacity_forecast', 'POST', '{"group_id":"g","type":"CONSUMPTION","forecasted_blocks":[]}',
  '{"message" : "forecasted_blocks: must be a non-empty array", "field" : "forecasted_blocks"}'),
 ('update_group_capacity_forecast', 'POST',
  replace(pg_temp.body('day_ahead'), '"capacity":100,"phase":"ALL","unit":"KW","start_time":"' || to_char(_elmo_local_day(now()) + 1, 'YYYY-MM-DD') || 'T03:',
                                     '"capacity":-1,"phase":"ALL","unit":"KW","start_time":"' || to_char(_elmo_local_day(now()) + 1, 'YYYY-MM-DD') || 'T03:'),
  '{"message" : "forecasted_blocks[3].capacity: must be a finite number >= 0", "field" : "forecasted_blocks[3].capacity"}'),
 ('update_group_capacity_forecast', 'POST', replace(pg_temp.body('emergency_utc'), '"capacity":42', '"capacity":"42"'),
  '{"message" : "forecasted_blocks[0].capacity: must be a finite number >= 0", "field" : "forecasted_blocks[0].capacity"}'),
 ('update_group_capacity_forecast', 'POST', replace(pg_temp.body('emergency_utc'), '"capacity":42', '"capacity":NaN'),
  '{"message" : "malformed JSON: invalid input syntax for type json (Token \"NaN\" is invalid.)"}'),
 ('update_group_capacity_forecast', 'POST', replace(pg_temp.body('emergency_utc'), '"ALL"', '"all"'),
  '{"message" : "forecasted_blocks[0].phase: must be one of UNKNOWN, ONE, TWO, THREE, ALL", "field" : "forecasted_blocks[0].phase"}'),
 ('update_group_capacity_forecast', 'POST', replace(pg_temp.body('emergency_utc'), '"KW"', '"kW"'),
  '{"message" : "forecasted_blocks[0].unit: must be one of A, W, KW, WH, KWH", "field" : "forecasted_blocks[0].unit"}'),
 ('update_group_capacity_forecast', 'POST', replace(pg_temp.body('emergency_utc'), 'T13:21:00.000+00:00', 'T13:21:00.000'),
  '{"message" : "forecasted_blocks[0].start_time: must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T00:00:00.000+08:00", "field" : "forecasted_blocks[0].start_time"}'),
 ('update_group_capacity_forecast', 'POST', replace(pg_temp.body('emergency_utc'), 'T14:21:00.000+00:00', 'T13:21:00.000+00:00'),
  '{"message" : "forecasted_blocks[0].end_time: must be later than start_time", "field" : "forecasted_blocks[0].end_time"}'),
 ('update_group_capacity_forecast', 'POST',
  '{"group_id":"g","type":"CONSUMPTION","forecasted_blocks":[{"capacity":1,"phase":"ALL","unit":"KW","start_time":"2026-02-30T13:00:00Z","end_time":"2026-03-01T14:00:00Z"}]}',
  '{"message" : "forecasted_blocks[0].start_time: is not a valid timestamp: date/time field value out of range: \"2026-02-30T13:00:00Z\"", "field" : "forecasted_blocks[0].start_time"}'),
 ('update_group_capacity_forecast', 'POST',
  '{"group_id":"g","type":"CONSUMPTION","forecasted_blocks":[{"capacity":1,"phase":"ALL","unit":"KW","start_time":"2026-11-25T13:00:00Z","end_time":"2026-11-25T15:00:00Z"},{"capacity":1,"phase":"ALL","unit":"KW","start_time":"2026-11-25T15:00:00Z","end_time":"2026-11-25T16:00:00Z"},{"capacity":1,"phase":"ALL","unit":"KW","start_time":"2026-11-25T22:00:00+08:00","end_time":"2026-11-25T23:00:00+08:00"}]}',
  '{"message" : "forecasted_blocks[2]: overlaps forecasted_blocks[0]", "field" : "forecasted_blocks[2]"}'),
 ('update_group_capacity_forecast', 'POST', '{"group_id":"g","type":"CONSUMPTION","forecasted_blocks":[[]]}',
  '{"message" : "forecasted_blocks[0]: must be an object", "field" : "forecasted_blocks[0]"}'),
 ('register', 'POST', '{"version_url":[{"version":"2.0","base_url":"/oscp/2.0"}]}', '{"message" : "token: is required", "field" : "token"}'),
 ('register', 'POST', '{"token":"t","version_url":[{"version":"2.0"}]}',
  '{"message" : "version_url[0].base_url: is required", "field" : "version_url[0].base_url"}'),
 ('register', 'PUT', '{"token":"t","version_url":[]}', '{"message" : "version_url: must be a non-empty array", "field" : "version_url"}'),
 ('handshake', 'POST', '{"required_behaviour":{"heartbeat_interval":0}}',
  '{"message" : "required_behaviour.heartbeat_interval: must be a number >= 1 (seconds)", "field" : "required_behaviour.heartbeat_interval"}'),
 ('handshake', 'POST', '{"measurement_configuration":["CONTINUOUS","SOMETIMES"]}',
  '{"message" : "measurement_configuration[1]: must be one of CONTINUOUS, INTERMITTENT", "field" : "measurement_configuration[1]"}'),
 ('heartbeat', 'POST', '{"offline_mode_at":"2026-11-25 13:00:00"}',
  '{"message" : "offline_mode_at: must be an RFC 3339 timestamp with an offset or Z, e.g. 2026-11-26T00:00:00.000+08:00", "field" : "offline_mode_at"}');

SELECT is(r.error, b.err, format('400 %s %s: %s', b.method, b.msg, b.err::json->>'message'))
  FROM bad b, LATERAL pg_temp.recv(b.msg, b.body, b.method, rid => 'PGTAP-BAD-' || b.n) r
 ORDER BY b.n;

SELECT is((SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'PGTAP-BAD-%'), 0::bigint,
          'nothing is stored for an invalid message');

SELECT * FROM finish();
ROLLBACK;
