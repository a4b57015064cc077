-- From 0.1.0 to 0.2.0: what running the code parts again cannot do.  The
-- update script is this file followed by every code part of sql/elmo_oscp/
-- (functions, views and privileges, created or replaced); see sql/README.md.
--
-- Tables: what 0.2.0 added to them, in the order 01_schema.sql has it.

-- elmo_retry: a failed message queued again (no default: no table rewrite).
ALTER TABLE elmo_outbox ADD COLUMN retried_at timestamptz;

-- Functions 0.2.0 no longer has.
DROP FUNCTION IF EXISTS _elmo_conf(text, text);         -- settings: _elmo_setting(name)
DROP FUNCTION IF EXISTS _elmo_blocks_error(jsonb);      -- now _elmo_blocks_problem(jsonb)
