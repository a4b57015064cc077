-- The extension installs, its names work unqualified with the default
-- search_path, its tables are closed to PUBLIC (privileges.sql says who may
-- read them), and DROP EXTENSION removes everything.  (client_min_messages =
-- error: in a database the worker does not serve, CREATE EXTENSION warns
-- naming both, names this server chose.)
SET client_min_messages = error;
CREATE EXTENSION IF NOT EXISTS elmo_oscp;
RESET client_min_messages;
SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'elmo_oscp';
SHOW search_path;

-- the design card's names, unqualified
SELECT 'capacity_forecast'::regclass, 'capacity_forecast_block'::regclass,
       'elmo_group_settings'::regclass, 'elmo_outbox'::regclass;

-- a CSMS trigger on capacity_forecast, unqualified
CREATE FUNCTION csms_on_forecast() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER csms_forecast AFTER INSERT ON capacity_forecast
    FOR EACH ROW EXECUTE FUNCTION csms_on_forecast();

-- tables are not readable by PUBLIC: tokens, raw messages, forecasts alike
CREATE ROLE elmo_regress_reader;
SET ROLE elmo_regress_reader;
SELECT count(*) FROM elmo_registration;
SELECT count(*) FROM elmo_received_message;
SELECT count(*) FROM elmo_outbox;
SELECT count(*) FROM capacity_forecast;
RESET ROLE;
DROP ROLE elmo_regress_reader;

-- DROP EXTENSION takes every object with it (the CSMS's trigger too: it was on our table)
DROP EXTENSION elmo_oscp;
SELECT count(*) AS relations_left FROM pg_class
 WHERE relname LIKE 'elmo\_%' OR relname LIKE 'capacity\_forecast%';
SELECT count(*) AS functions_left FROM pg_proc
 WHERE proname LIKE '\_elmo\_%' OR proname LIKE 'elmo\_%';
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname = 'csms_forecast';
DROP FUNCTION csms_on_forecast();

-- and it comes back for the suites that follow
SET client_min_messages = error;
CREATE EXTENSION elmo_oscp;
RESET client_min_messages;
SELECT count(*) > 0 AS installed FROM pg_extension WHERE extname = 'elmo_oscp';
