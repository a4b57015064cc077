-- Receipt (_elmo_receive) of input at and past its limits: timestamps that
-- are not RFC 3339 (PostgreSQL's own input would read them, some at another
-- offset), texts longer than their documented maximum, JSON nested deeper
-- than the server's stack.  Each is a 400 naming the field, nothing stored;
-- the unusual but valid forms are stored at the instants they name.
\ir ../helpers.sql
BEGIN;
\ir ../inbound_fixtures.sql

SELECT plan(41);

-- an emergency whose block starts at [ts] (and ends a day later)
CREATE FUNCTION pg_temp.at_time(ts text) RETURNS text LANGUAGE sql AS $$
    SELECT json_build_object('group_id', 'pgtap-limits', 'type', 'CONSUMPTION', 'forecasted_blocks',
               json_build_array(json_build_object('capacity', 5, 'phase', 'ALL', 'unit', 'KW',
                   'start_time', ts, 'end_time', '2030-01-03T00:00:00Z')))::text $$;

-- ---------------------------------------------------------------- timestamps: RFC 3339 only

CREATE TEMP TABLE not_rfc3339 (n serial, ts text);
INSERT INTO not_rfc3339 (ts) VALUES
    ('2030-01-01T00:00:00 EST+08:00'), ('0001-11-26T00:00:00.000+08:00 BC'), ('2030-01-01T00:00:00+08:00 BC'),
    ('2030-01-01T24:00:00.000+08:00'), ('2030-01-01T10:20:00.000+08:0<'), ('2030-01-01T10:20:00000+08:00'),
    ('2030-01-01T00:00:00.000 +08:00'), ('2030-01-01T00:00:00.000+0800'), ('2030-01-01T00:00:00.000+08'),
    ('2030-01-01T00:60:00Z'), ('2030-13-01T00:00:00Z'), ('2030-01-01T00:00:00.Z'), ('2030-01-01T00:00:00Z '),
    ('2030-01-01T00:00:00.000+24:00'), ('2030-01-01T00:00:00.000+08:60'), ('now'), ('infinity'),
    ('2030-01-01T00:00:00'), ('20300101T000000Z'), ('2030-01-01T00:00:00.000+08:00[Asia/Taipei]');

SELECT is(r.status || ' ' || (r.error::json->>'field'), '400 forecasted_blocks[0].start_time',
          format('not RFC 3339: %s', b.ts))
  FROM not_rfc3339 b, LATERAL pg_temp.recv('update_group_capacity_forecast', pg_temp.at_time(b.ts),
                                            rid => 'PGTAP-LIM-TS-' || b.n) r
 ORDER BY b.n;

SELECT is((SELECT r.error::json->>'field' FROM pg_temp.recv('heartbeat', '{"offline_mode_at":"2030-01-01T24:00:00+08:00"}') r),
          'offline_mode_at', 'a heartbeat''s offline_mode_at at hour 24: 400 naming it');

-- unusual but RFC 3339: stored, at the instant each names
CREATE TEMP TABLE odd (n serial, ts text, instant timestamptz);
INSERT INTO odd (ts, instant) VALUES
    ('2030-01-01t00:00:00z', '2030-01-01 00:00:00+00'), ('2030-01-01 00:00:00+08:00', '2029-12-31 16:00:00+00'),
    ('2030-01-01T00:00:00-00:00', '2030-01-01 00:00:00+00'), ('2030-01-01T00:00:00.25-01:30', '2030-01-01 01:30:00.25+00'),
    ('2030-01-01T23:59:60Z', '2030-01-02 00:00:00+00');
CREATE TEMP TABLE odd_got AS SELECT o.n, pg_temp.forecast(pg_temp.at_time(o.ts)) AS message_id FROM odd o;
SELECT is((SELECT b.start_time FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
            WHERE f.message_id = g.message_id),
          o.instant, format('RFC 3339 %s is stored at %s', o.ts, o.instant))
  FROM odd o JOIN odd_got g USING (n) ORDER BY o.n;

-- ---------------------------------------------------------------- texts: documented maximum lengths

SELECT is((SELECT status FROM pg_temp.recv('update_group_capacity_forecast',
                                           replace(pg_temp.at_time('2030-01-01T00:00:00Z'), 'pgtap-limits', repeat('台', 255)))),
          204, 'a group_id of 255 characters (765 bytes) is accepted');
SELECT is((SELECT error FROM pg_temp.recv('update_group_capacity_forecast',
                                          replace(pg_temp.at_time('2030-01-01T00:00:00Z'), 'pgtap-limits', repeat('g', 256)))),
          '{"message" : "group_id: must be at most 255 characters", "field" : "group_id"}', 'a group_id of 256 characters: 400');
SELECT is((SELECT error FROM pg_temp.recv('update_group_capacity_forecast',
                                          replace(pg_temp.at_time('2030-01-01T00:00:00Z'), 'pgtap-limits', repeat('g', 8200)))),
          '{"message" : "group_id: must be at most 255 characters", "field" : "group_id"}', 'a group_id of 8,200 characters: 400 (not a failed NOTIFY)');

CREATE FUNCTION pg_temp.register(token text, version text DEFAULT '2.0', base_url text DEFAULT '/oscp/2.0') RETURNS text
    LANGUAGE sql AS $$
    SELECT json_build_object('token', token, 'version_url',
                             json_build_array(json_build_object('version', version, 'base_url', base_url)))::text $$;
SELECT is((SELECT status FROM pg_temp.recv('register', pg_temp.register(repeat('T', 1024)))), 204,
          'a register token of 1,024 characters is accepted');
SELECT is((SELECT error::json->>'message' FROM pg_temp.recv('register', pg_temp.register(repeat('T', 1025)))),
          'token: must be at most 1024 printable ASCII characters, no spaces', 'a token of 1,025 characters: 400');
SELECT is((SELECT error::json->>'field' FROM pg_temp.recv('register', pg_temp.register(E'abc\r\nX-Injected: 1'))),
          'token', 'a token with a line break (it goes into our HTTP headers): 400');
SELECT is((SELECT error::json->>'field' FROM pg_temp.recv('register', pg_temp.register('two words'))),
          'token', 'a token with a space: 400');
SELECT is((SELECT error FROM pg_temp.recv('register', pg_temp.register('t', repeat('2', 33)))),
          '{"message" : "version_url[0].version: must be at most 32 characters", "field" : "version_url[0].version"}',
          'a version of 33 characters: 400');
SELECT is((SELECT error::json->>'field' FROM pg_temp.recv('register', pg_temp.register('t', '2.0', 'https://x/' || repeat('p', 2039)))),
          'version_url[0].base_url', 'a base_url of 2,049 characters: 400');
SELECT is((SELECT status FROM pg_temp.recv('register', pg_temp.register('t', '2.0', 'https://x/' || repeat('p', 2038)))),
          204, 'a base_url of 2,048 characters is accepted');

-- ---------------------------------------------------------------- JSON nested deeper than the stack

SELECT is((SELECT r.status || ' ' || r.error FROM pg_temp.recv('update_group_capacity_forecast',
               '{"group_id":"g","type":"CONSUMPTION","forecasted_blocks":[{"capacity":' || repeat('[', 100000) || '1' || repeat(']', 100000) || '}]}') r),
          '400 {"message" : "body: JSON nested too deeply"}', 'a forecast nested 100,000 deep: 400');
SELECT is((SELECT r.status || ' ' || r.error FROM pg_temp.recv('register', '{"token":"t","version_url":' || repeat('[', 100000)) r),
          '400 {"message" : "body: JSON nested too deeply"}', 'a register nested 100,000 deep (never closed): 400');
SELECT is((SELECT r.status || ' ' || r.error FROM pg_temp.recv('handshake', '{"required_behaviour":' || repeat('{"a":', 100000) || '1' || repeat('}', 100001)) r),
          '400 {"message" : "body: JSON nested too deeply"}', 'a handshake nested 100,000 deep: 400');
SELECT is((SELECT status FROM pg_temp.recv('handshake', '{"required_behaviour":{"x":' || repeat('[', 1000) || repeat(']', 1000) || '}}')),
          204, 'a handshake with an unknown field nested 1,000 deep is accepted');

SELECT is((SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'PGTAP-LIM-%'), 0::bigint,
          'nothing is stored for any of the 400s');

SELECT * FROM finish();
ROLLBACK;
