-- Outbound over real HTTP: the worker delivers the outbox to the bundled ELMO
-- simulator.  Each statement commits (no surrounding transaction): the worker
-- only ever sees committed messages.
\ir ../helpers.sql
SELECT plan(45);
SET client_min_messages = error;    -- http:// public URL: elmo_register warns

-- what the simulator received: one row per request, oldest first
CREATE FUNCTION pg_temp.sim_msgs()
    RETURNS TABLE(n bigint, method text, path text, status int, rid text, cid text, auth text,
                  ctype text, raw text, body jsonb)
    LANGUAGE sql AS $$
    SELECT e.n, e.m->>'method', e.m->>'path', (e.m->>'status')::int, e.m->'headers'->>'x-request-id',
           e.m->'headers'->>'x-correlation-id', e.m->'headers'->>'authorization',
           e.m->'headers'->>'content-type', e.m->>'raw_body', e.m->'body'
      FROM test.http('GET', test.sim('/sim/messages')) h,
           jsonb_array_elements(h.response::jsonb) WITH ORDINALITY e(m, n) $$;
CREATE FUNCTION pg_temp.sim(method text, path text, body text DEFAULT NULL) RETURNS int
    LANGUAGE sql AS $$ SELECT status FROM test.http(method, test.sim(path), body, ARRAY['Content-Type: application/json']) $$;
CREATE FUNCTION pg_temp.rid(oid bigint) RETURNS text LANGUAGE sql AS $$ SELECT request_id FROM elmo_outbox WHERE id = oid $$;
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);

SELECT test.reset();
SELECT pg_temp.sim('POST', '/sim/reset', '{}');
SELECT pg_temp.sim('DELETE', '/sim/messages');

-- ---------------------------------------------------------------- register, handshake, acknowledge
INSERT INTO ids SELECT 'register', elmo_register(test.sim('/oscp/2.0'), 'ELMO-TESTBED-TOKEN');
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'register'), '10s'), 'delivered', 'register delivered');
SELECT ok(test.wait_for($$(SELECT connected FROM elmo_registration)$$), 'ELMO registered us, handshake acknowledged: connected');
SELECT is(state, 'registered', 'registration: registered') FROM elmo_registration;
SELECT is(auth, 'Token ELMO-TESTBED-TOKEN', 'register authorized with the initial token')
  FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/register';
SELECT is(rid, pg_temp.rid((SELECT id FROM ids WHERE name = 'register')), 'X-Request-ID as stored')
  FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/register';
SELECT is(ctype, 'application/json', 'Content-Type: application/json') FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/register';
SELECT is(raw, '{"token":"' || (SELECT our_token FROM elmo_registration)
                || '","version_url":[{"version":"2.0","base_url":"' || current_setting('elmo_oscp.public_url') || '"}]}',
          'register body: our current token and public_url, in capture 02''s key order')
  FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/register';
SELECT is(cid, (SELECT handshake_request_id FROM elmo_registration), 'acknowledge: X-Correlation-ID = the handshake''s X-Request-ID')
  FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/handshake_acknowledge';
SELECT is(auth, 'Token ' || (SELECT elmo_token FROM elmo_registration), 'acknowledge authorized with ELMO''s token')
  FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/handshake_acknowledge';
SELECT is(raw, '{}', 'acknowledge body {}') FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/handshake_acknowledge';
SELECT is((SELECT body FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'register')),
          '{"token":"***","version_url":[{"version":"2.0","base_url":"' || current_setting('elmo_oscp.public_url') || '"}]}',
          'the stored register no longer holds the token');

-- ---------------------------------------------------------------- usage: commit wakes the worker; rollback sends nothing
BEGIN;
SELECT elmo_report_usage('B6734_AE0100_00848825118', 1000.25);
ROLLBACK;
INSERT INTO ids SELECT 'u1', elmo_report_usage('B6734_AE0100_00848825118', 1234.5);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'u1'), '5s'), 'delivered', 'usage report delivered');
SELECT ok((SELECT delivered_at - created_at < interval '2 s' FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1')),
          'at once: the commit woke the worker');
SELECT is(raw, (SELECT body FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'u1')), 'the exact body went out')
  FROM pg_temp.sim_msgs() WHERE rid = pg_temp.rid((SELECT id FROM ids WHERE name = 'u1'));
SELECT is(status, 204, 'ELMO answered 204') FROM pg_temp.sim_msgs() WHERE rid = pg_temp.rid((SELECT id FROM ids WHERE name = 'u1'));
SELECT is((SELECT count(*) FROM pg_temp.sim_msgs() WHERE raw LIKE '%1000.25%'), 0::bigint, 'nothing sent for the rolled-back call');

-- ---------------------------------------------------------------- retry after 500, same X-Request-ID, order in a group
SELECT is(pg_temp.sim('POST', '/sim/fault', '{"status":500,"count":1}'), 200, 'simulator: next request answered 500');
INSERT INTO ids SELECT 'o' || g, elmo_report_usage('B6734_AE0100_00848825118', 2000 + g) FROM generate_series(1, 4) g;
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'o4'), '15s'), 'delivered', 'the last of the group delivered');
SELECT is((SELECT array_agg(status ORDER BY n) FROM pg_temp.sim_msgs() WHERE rid = pg_temp.rid((SELECT id FROM ids WHERE name = 'o1'))),
          ARRAY[500, 204], 'the first: 500, then retried with the same X-Request-ID');
SELECT is((SELECT attempts FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'o1')), 2, 'two attempts recorded');
SELECT is((SELECT array_agg((body->'measurements'->0->>'value')::int ORDER BY n) FROM pg_temp.sim_msgs()
            WHERE status = 204 AND (body->'measurements'->0->>'value')::numeric BETWEEN 2001 AND 2004),
          ARRAY[2001, 2002, 2003, 2004], 'delivered in the order queued');

-- ---------------------------------------------------------------- ELMO's 4xx
INSERT INTO ids SELECT 'bad', elmo_report_usage('NO-SUCH-STATION', 1);
SELECT throws_ok($$SELECT elmo_wait((SELECT id FROM ids WHERE name = 'bad'), '5s')$$, 'OS001', NULL,
                 'elmo_wait raises when ELMO refused the message (capture 08b)');
SELECT matches(last_error, 'does not exist', 'ELMO''s message kept') FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'bad');

-- ---------------------------------------------------------------- compliance error, trigger callback (testbed)
INSERT INTO ids SELECT 'tc', elmo_trigger_callback('update_group_capacity_forecast', 'emergency_assign_capacity',
                                                   'B6734_AE0100_00848825118', 42);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'tc'), '5s'), 'delivered', 'trigger-callback delivered');
SELECT ok(test.wait_for($$EXISTS (SELECT 1 FROM capacity_forecast WHERE kind = 'emergency' AND group_id = 'B6734_AE0100_00848825118')$$),
          '... and the simulator called us back with an emergency');
SELECT matches((SELECT body FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'tc')), '"authorization":"Token \*\*\*"',
               'our token scrubbed from the stored trigger-callback');
INSERT INTO ids SELECT 'ce', elmo_report_compliance_error((SELECT max(id) FROM capacity_forecast), 'cannot comply');
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'ce'), '5s'), 'delivered', 'compliance error delivered');
SELECT is(cid, (SELECT request_id FROM capacity_forecast WHERE id = (SELECT max(id) FROM capacity_forecast)),
          'compliance error: X-Correlation-ID = the forecast''s X-Request-ID')
  FROM pg_temp.sim_msgs() WHERE path = '/oscp/2.0/group_capacity_compliance_error';

-- ---------------------------------------------------------------- adjust: one per station and day
SELECT pg_temp.sim('POST', '/sim/clock', '{"now":"' || to_char(_elmo_local_day(now()), 'YYYY-MM-DD') || 'T11:00:00+08:00"}');
SELECT is(pg_temp.sim('POST', '/sim/assign', '{"group_id":"B6734_AE0100_00848825118"}'), 200, 'simulator sends the 10:00 assignment');
SELECT ok(test.wait_for($$EXISTS (SELECT 1 FROM capacity_forecast WHERE kind = 'day_ahead' AND group_id = 'B6734_AE0100_00848825118')$$),
          'day-ahead assignment received');
SET elmo_oscp.enforce_deadlines = off;     -- the real clock may be past 14:00 in Taipei
INSERT INTO ids SELECT 'adj', elmo_adjust_capacity('B6734_AE0100_00848825118', 150);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'adj'), '5s'), 'delivered', 'adjust request accepted (capture 25a)');
SELECT is(state, 'pending', 'pending until ELMO replies') FROM elmo_adjust_request WHERE outbox_id = (SELECT id FROM ids WHERE name = 'adj');
RESET elmo_oscp.enforce_deadlines;
SELECT throws_ok($$SELECT _elmo_adjust_guard('B6734_AE0100_00848825118', _elmo_local_day(now()) + 1,
                                             _elmo_day_start(_elmo_local_day(now())) + interval '10 hours')$$,
                 '23505', NULL, 'a second request the same day is refused before it leaves');
SET elmo_oscp.enforce_deadlines = off;
INSERT INTO ids SELECT 'adj2', elmo_adjust_capacity('B6734_AE0100_00848825118', 160);
SELECT throws_ok($$SELECT elmo_wait((SELECT id FROM ids WHERE name = 'adj2'), '5s')$$, 'OS001', NULL,
                 'with the guards off ELMO answers 400 (capture 25b)');
SELECT is(state, 'failed', 'that adjust request failed') FROM elmo_adjust_request WHERE outbox_id = (SELECT id FROM ids WHERE name = 'adj2');
RESET elmo_oscp.enforce_deadlines;
SELECT pg_temp.sim('POST', '/sim/clock', '{"offset_seconds":0}');

-- ---------------------------------------------------------------- lock-out, and the way out
SELECT pg_temp.sim('POST', '/sim/fault', '{"status":403,"count":1,"message":"Invalid authorization token"}');
INSERT INTO ids SELECT 'l1', elmo_report_usage('B6734_AE0100_00848825118', 3000);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'l1'), '3s'), 'held', '403 Invalid authorization token: held');
SELECT is(state, 'locked_out', 'registration locked out') FROM elmo_registration;
SELECT is(connected, false, 'and not connected: ELMO takes nothing from us') FROM elmo_registration_status;
SELECT matches(hint, 'new initial token', 'the status view says what to do') FROM elmo_registration_status;
INSERT INTO ids SELECT 'l2', elmo_report_usage('B6734_AE0100_00848825118', 3001);
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'l2'), '1s'), 'held', 'later messages are held, not sent');
SELECT pg_temp.sim('POST', '/sim/admin/reset-token', '{"token":"PGTAP-NEW-INITIAL-TOKEN"}');
INSERT INTO ids SELECT 'register2', elmo_register(test.sim('/oscp/2.0'), 'PGTAP-NEW-INITIAL-TOKEN');
SELECT is(elmo_wait((SELECT id FROM ids WHERE name = 'l2'), '10s'), 'delivered', 'a new initial token: held messages delivered');
SELECT is(state, 'delivered', 'in order') FROM elmo_outbox WHERE id = (SELECT id FROM ids WHERE name = 'l1');
SELECT is(state, 'registered', 'registered again') FROM elmo_registration;

-- ---------------------------------------------------------------- automatic usage reports
CREATE TABLE test.pgtap_meters (group_id text, kwh numeric);
INSERT INTO test.pgtap_meters VALUES ('B6734_AE0100_00848825118', 5000), ('B6734_AE0100_00848821001', NULL);
ALTER TABLE test.pgtap_meters OWNER TO elmo_oscp_worker;    -- read as its owner, never as a superuser
ALTER SYSTEM SET elmo_oscp.usage_source = 'test.pgtap_meters';
ALTER SYSTEM SET elmo_oscp.report_interval = 1;
SELECT pg_reload_conf();
SELECT ok(test.wait_for($$(SELECT count(*) FROM elmo_outbox WHERE state = 'delivered' AND body LIKE '%"value":5000,%') >= 2$$, '20s'),
          'the worker reports every interval without being asked');
SELECT ok(EXISTS (SELECT 1 FROM elmo_usage_skipped WHERE group_id = 'B6734_AE0100_00848821001'), 'a NULL reading is skipped and shown');
ALTER SYSTEM RESET elmo_oscp.usage_source;
ALTER SYSTEM RESET elmo_oscp.report_interval;
SELECT pg_reload_conf();
DROP TABLE test.pgtap_meters;

SELECT * FROM finish();
