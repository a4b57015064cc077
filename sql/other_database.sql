-- The extension may be created in another database (pg_dump/restore, a
-- staging copy), but its functions refuse to queue messages there: only the
-- database named by elmo_oscp.database has a worker.  CREATE EXTENSION warns
-- which database that is.
CREATE DATABASE elmo_regress_other;
\c elmo_regress_other
CREATE EXTENSION elmo_oscp;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT elmo_report_usage('G1', 1);
SELECT elmo_register('https://elmo.example.com/oscp/2.0', 'TOKEN');
-- reading is fine
SELECT elmo_capacity_at('G1');
\c elmo_test
DROP DATABASE elmo_regress_other;
