-- The extension may be created in another database (pg_dump/restore, a
-- staging copy), but its functions refuse to queue messages there: only the
-- database named by elmo_oscp.database has a worker.  (Whatever that is on
-- the server the test runs on: its name is shown as <elmo_oscp.database>.)
SELECT current_database() AS regress_database \gset
CREATE DATABASE elmo_regress_other;
ALTER DATABASE elmo_regress_other SET lc_messages TO 'C';    -- as pg_regress sets its own
\c elmo_regress_other
-- (CREATE EXTENSION warns which database the worker serves: a name this
-- server chose; test/e2e/06_first_run.t reads that warning)
SET client_min_messages = error;
CREATE EXTENSION elmo_oscp;
RESET client_min_messages;
CREATE FUNCTION pg_temp.shown(sql text) RETURNS TABLE(error text, detail text, hint text)
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    error := SQLSTATE || ': ' || SQLERRM;
    SELECT replace(x, '"' || current_setting('elmo_oscp.database') || '"', '<elmo_oscp.database>')
      INTO error FROM (SELECT error AS x) y;
    hint := replace(hint, '"' || current_setting('elmo_oscp.database') || '"', '<elmo_oscp.database>');
    RETURN NEXT;
END $$;
\x on
SELECT * FROM pg_temp.shown('SELECT elmo_report_usage(''G1'', 1)');
SELECT * FROM pg_temp.shown('SELECT elmo_register(''https://elmo.example.com/oscp/2.0'', ''TOKEN'')');
\x off
-- reading is fine
SELECT elmo_capacity_at('G1');
\c :regress_database
DROP DATABASE elmo_regress_other;
