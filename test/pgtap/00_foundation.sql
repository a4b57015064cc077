-- The worker runs, serves HTTP over a real socket, answers errors in JSON,
-- and comes back after being terminated.
\ir ../helpers.sql
SELECT plan(24);

-- the worker restarts once to connect as its role when the extension has just been created
SELECT ok(test.wait_for($$EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'
                                    AND usename = current_setting('elmo_oscp.role'))$$),
          'the worker is in pg_stat_activity, connected as elmo_oscp.role');
SELECT is((SELECT application_name FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'),
          'elmo_oscp worker', 'with a clear application_name');
SELECT is((SELECT datname::text FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'),
          current_setting('elmo_oscp.database'), 'connected to elmo_oscp.database');

-- GET /health
CREATE TEMP TABLE r AS SELECT * FROM test.http('GET', test.fp('health'));
SELECT is(status, 200, 'GET health answers 200') FROM r;
SELECT is(response::jsonb, '{"status": "ok"}'::jsonb, 'health: liveness, and nothing an outsider should know') FROM r;
SELECT ok(strpos(response, (SELECT extversion FROM pg_extension WHERE extname = 'elmo_oscp')) = 0
          AND strpos(response, current_database()) = 0, '... no version, no database name') FROM r;
SELECT ok(response !~ 'registered|connected|_at', '... no registration state or timestamps') FROM r;

-- errors: JSON bodies with a message
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('no_such_message'), '{}');
SELECT is(status, 404, 'unknown message: 404') FROM r;
SELECT ok((response::jsonb) ? 'message', '404 has a JSON message') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('GET', 'http://127.0.0.1:' || current_setting('elmo_oscp.port') || '/elsewhere');
SELECT is(status, 404, 'a path outside the prefix: 404') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('GET', test.fp('update_group_capacity_forecast'));
SELECT is(status, 405, 'GET on a POST message: 405') FROM r;
SELECT ok((response::jsonb) ? 'message', '405 has a JSON message') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('PATCH', test.fp('register'), '{}');
SELECT is(status, 405, 'PATCH register: 405') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('update_group_measurements'), '{}');
SELECT is(status, 501, 'an OSCP message we do not implement: 501') FROM r;

-- authentication, size, content type, request id
SELECT lives_ok($$SELECT test.fake_registration()$$, 'a registration with a known token');
SELECT ok(test.wait_for($$(SELECT status FROM test.post('heartbeat', '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}')) = 204$$),
          'the worker picks the new token up');
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('heartbeat'), '{}',
    ARRAY['Content-Type: application/json', 'X-Request-ID: A1']);
SELECT is(status, 401, 'no Authorization: 401') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('heartbeat'), '{}',
    ARRAY['Content-Type: application/json', 'X-Request-ID: A2', 'Authorization: Token wrong']);
SELECT is(status, 401, 'a wrong token: 401') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('heartbeat'), '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}',
    ARRAY['Content-Type: application/json', 'X-Request-ID: ' || _elmo_request_id(), 'Authorization: ' || test.token()]);
SELECT is(status, 204, 'the bare token (testbed form) is accepted') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('heartbeat'), '{}',
    ARRAY['Content-Type: text/plain', 'X-Request-ID: A3', 'Authorization: Token ' || test.token()]);
SELECT is(status, 415, 'a content type other than JSON: 415') FROM r;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('heartbeat'), '{}',
    ARRAY['Content-Type: application/json', 'Authorization: Token ' || test.token()]);
SELECT is(status, 400, 'no X-Request-ID on a forecast or heartbeat: 400') FROM r;
-- (a body too large for a command line: curl reads it from a file the server writes)
SELECT format('COPY (SELECT repeat(''x'', 1100000)) TO %L', current_setting('elmo_test.work') || '/big.json') AS copy_big \gset
:copy_big;
DROP TABLE r; CREATE TEMP TABLE r AS SELECT * FROM test.http('POST', test.fp('heartbeat'), '@' || current_setting('elmo_test.work') || '/big.json',
    ARRAY['Content-Type: application/json', 'X-Request-ID: A4', 'Authorization: Token ' || test.token()]);
SELECT is(status, 413, 'a body over elmo_oscp.max_request_size: 413') FROM r;

-- terminated, the worker comes back (the postmaster restarts it)
CREATE TEMP TABLE w AS SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker';
SELECT ok((SELECT pg_terminate_backend(pid) FROM w), 'pg_terminate_backend(worker)');
SELECT ok(test.wait_for($$EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'
                                   AND pid <> (SELECT pid FROM w))
                          AND (SELECT status FROM test.http('GET', test.fp('health'))) = 200$$, '20s'),
          'a new worker serves /health again');

SELECT * FROM finish();
