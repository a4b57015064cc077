-- DROP EXTENSION elmo_oscp is refused while ELMO holds this CSMS's
-- registration (its token would be lost, and only Taiwan Power's
-- administrator gives a new one), by every way of dropping it, unless the
-- session says it means it.
SET client_min_messages = error;     -- CREATE EXTENSION in a database the worker does not serve warns
DROP EXTENSION IF EXISTS elmo_oscp;
CREATE SCHEMA regress_guard;
CREATE EXTENSION elmo_oscp SCHEMA regress_guard;
SET search_path = regress_guard, public;

-- ELMO's register applied: registered, with ELMO's token
INSERT INTO elmo_registration (state, elmo_url, public_url, our_token, elmo_token)
VALUES ('registered', 'https://elmo.example/oscp/2.0', 'https://csms.example/oscp/fp/2.0',
        'OUR-TOKEN-0123456789', 'ELMO-TOKEN-0123456789');
CREATE FUNCTION public.regress_guard_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER regress_guard_seen AFTER INSERT ON capacity_forecast
    FOR EACH ROW EXECUTE FUNCTION public.regress_guard_seen();

\set VERBOSITY default
DROP EXTENSION elmo_oscp;
DROP SCHEMA regress_guard CASCADE;
\set VERBOSITY terse
-- nothing went
SELECT extname FROM pg_extension WHERE extname = 'elmo_oscp';
SELECT tgname FROM pg_trigger WHERE tgname = 'regress_guard_seen';

-- a registration under way that holds ELMO's token (a re-registration), or
-- an initial token not used yet, is kept the same way
UPDATE elmo_registration SET state = 'pending';
DROP EXTENSION elmo_oscp;
UPDATE elmo_registration SET elmo_token = NULL, initial_token = 'INITIAL-TOKEN-0123456789';
DROP EXTENSION elmo_oscp;

-- what ELMO no longer holds may go: unregistered, or refused (locked out)
UPDATE elmo_registration SET state = 'locked_out';
BEGIN;
DROP EXTENSION elmo_oscp;
ROLLBACK;
UPDATE elmo_registration SET state = 'unregistered';
BEGIN;
DROP EXTENSION elmo_oscp;
ROLLBACK;

-- and a registered one with the override, in this session only
UPDATE elmo_registration SET state = 'registered';
SET elmo_oscp.allow_drop_registered = on;
DROP SCHEMA regress_guard CASCADE;
RESET elmo_oscp.allow_drop_registered;
SELECT count(*) AS extensions_left FROM pg_extension WHERE extname = 'elmo_oscp';
DROP FUNCTION public.regress_guard_seen();
RESET search_path;

-- back for the tests that follow
CREATE EXTENSION elmo_oscp;
RESET client_min_messages;
