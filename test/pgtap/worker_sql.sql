-- The functions the worker and elmo_wait call instead of reading or writing
-- tables themselves (src/statements.c), in one transaction the worker never sees.
\ir ../helpers.sql
SELECT test.reset();
BEGIN;
SELECT plan(10);

SELECT ok(NOT has_function_privilege('public', f, 'execute'), f || ': not for PUBLIC')
  FROM unnest(ARRAY['_elmo_listener_tokens()', '_elmo_requeue(bigint)', '_elmo_outbox_outcome(bigint)']) f;

-- the listener's tokens
SELECT is((SELECT count(*) FROM _elmo_listener_tokens()), 0::bigint, 'no registration: no tokens, every request refused');
INSERT INTO elmo_registration (state, elmo_url, public_url, our_token, previous_token)
VALUES ('registered', 'https://elmo.example.com/oscp/2.0', 'https://csms.example.com/oscp/fp/2.0', 'TOKEN-NOW', 'TOKEN-BEFORE');
SELECT results_eq($$SELECT current_token, previous_token FROM _elmo_listener_tokens()$$,
                  $$VALUES ('TOKEN-NOW'::text, 'TOKEN-BEFORE'::text)$$, 'ours and the previous one');
UPDATE elmo_registration SET previous_token = NULL;
SELECT results_eq($$SELECT current_token, previous_token FROM _elmo_listener_tokens()$$,
                  $$VALUES ('TOKEN-NOW'::text, NULL::text)$$, 'once retired, ours alone');

-- requeue: only a message still 'sending', a minute later
CREATE TEMP TABLE m AS
WITH q AS (INSERT INTO elmo_outbox (message, body, state, next_attempt_at)
           VALUES ('pgtap-requeue', '{}', 'queued', now() - interval '1 hour'),
                  ('pgtap-requeue', '{}', 'delivered', now() - interval '1 hour')
           RETURNING id, state)
SELECT id, CASE state WHEN 'queued' THEN 'sending' ELSE state END AS was FROM q;
-- claimed (a message inserted as sending would be queued again at once)
UPDATE elmo_outbox o SET state = 'sending' FROM m WHERE o.id = m.id AND m.was = 'sending';
SELECT _elmo_requeue(id) FROM m;
SELECT results_eq($$SELECT was, o.state, o.next_attempt_at = now() + interval '1 min'
                      FROM m JOIN elmo_outbox o USING (id) ORDER BY id$$,
                  $$VALUES ('sending'::text, 'queued'::text, true), ('delivered', 'delivered', false)$$,
                  'a sending message is queued again in a minute; a delivered one is left alone');

-- a message's outcome for elmo_wait
UPDATE elmo_outbox SET state = 'failed', last_status = 400, last_error = 'HTTP 400: bad group'
 WHERE id = (SELECT id FROM m WHERE was = 'sending');
SELECT results_eq($$SELECT o.state, o.last_status, o.last_error, age(o.queued_xmin) = 0
                      FROM m, _elmo_outbox_outcome(m.id) o WHERE m.was = 'sending'$$,
                  $$VALUES ('failed'::text, 400, 'HTTP 400: bad group'::text, true)$$,
                  'state, ELMO''s answer, and the transaction that queued it (this one)');
SELECT is((SELECT count(*) FROM _elmo_outbox_outcome(-1)), 0::bigint, 'an unknown id: no row');

SELECT ok(NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname IN ('_elmo_listener_tokens', '_elmo_requeue', '_elmo_outbox_outcome')
                        AND prosecdef), 'none runs with its owner''s rights');

SELECT * FROM finish();
ROLLBACK;
