-- Who may do what with the extension's objects.  The lists below are the
-- promise of the README's "Roles and privileges": anything PUBLIC may use
-- beyond the allow-list, or a role that lacks or gains a privilege, changes
-- this output.
SET client_min_messages = error;     -- CREATE EXTENSION in a database the worker does not serve warns
CREATE EXTENSION IF NOT EXISTS elmo_oscp;
RESET client_min_messages;

-- Every privilege a role has on a member of the extension, one line each.
CREATE FUNCTION pg_temp.privileges_of(role text)
    RETURNS TABLE(object text, privilege text)
    LANGUAGE sql AS $$
    WITH member AS (
        SELECT d.classid, d.objid FROM pg_depend d
          JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'elmo_oscp'
         WHERE d.deptype = 'e'
    )
    SELECT 'function ' || m.objid::regprocedure, 'EXECUTE'
      FROM member m
     WHERE m.classid = 'pg_proc'::regclass AND has_function_privilege(role, m.objid, 'EXECUTE')
    UNION ALL
    SELECT CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'S' THEN 'sequence ' ELSE 'table ' END || c.oid::regclass,
           string_agg(p, ', ' ORDER BY p)
      FROM member m
      JOIN pg_class c ON c.oid = m.objid,
           unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
     WHERE m.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'v')
       AND has_table_privilege(role, c.oid, p)
     GROUP BY c.relkind, c.oid
    UNION ALL
    SELECT 'sequence ' || c.oid::regclass, string_agg(p, ', ' ORDER BY p)
      FROM member m
      JOIN pg_class c ON c.oid = m.objid,
           unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
     WHERE m.classid = 'pg_class'::regclass AND c.relkind = 'S'
       AND has_sequence_privilege(role, c.oid, p)
     GROUP BY c.oid
    ORDER BY 1 $$;

-- PUBLIC: only what reads with the caller's own rights (the owner of
-- elmo_oscp.usage_source reads it through this).
SELECT * FROM pg_temp.privileges_of('public');

-- elmo_oscp_reader: the state and the views, elmo_status(), the capacity in
-- force (and the helpers they call with the reader's rights).
SELECT * FROM pg_temp.privileges_of('elmo_oscp_reader');

-- elmo_oscp_csms: what the reader has, the API, TRIGGER on the forecast
-- tables, and its per-group settings.
SELECT * FROM pg_temp.privileges_of('elmo_oscp_csms')
EXCEPT SELECT * FROM pg_temp.privileges_of('elmo_oscp_reader')
ORDER BY 1;

-- elmo_oscp_worker: every table and every internal function, and (as a
-- member of elmo_oscp_csms) the API, for the CSMS's triggers.
SELECT count(*) FILTER (WHERE object LIKE 'function \_elmo\_%') = (SELECT count(*) FROM pg_proc p
            JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
           WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'elmo_oscp')
             AND p.proname LIKE '\_elmo\_%') AS every_internal_function,
       count(*) FILTER (WHERE object LIKE 'function elmo\_%') AS api_functions,
       bool_and(privilege LIKE 'DELETE, INSERT, SELECT%' AND privilege LIKE '%UPDATE')
           FILTER (WHERE object LIKE 'table %') AS every_table_read_and_written
  FROM pg_temp.privileges_of('elmo_oscp_worker');

-- The roles: the reader is pg_monitor's, the CSMS has the reader's rights,
-- the worker logs in (a background worker must) and is no superuser.
SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb,
       pg_has_role('pg_monitor', oid, 'USAGE') AS pg_monitor_has_it,
       pg_has_role('elmo_oscp_csms', oid, 'USAGE') AS elmo_oscp_csms_has_it
  FROM pg_roles WHERE rolname LIKE 'elmo\_oscp\_%' ORDER BY rolname;

-- The README's three lines, then the roles at work.
CREATE ROLE regress_elmo_csms LOGIN;
CREATE ROLE regress_elmo_monitor LOGIN;
CREATE ROLE regress_elmo_nobody LOGIN;
GRANT elmo_oscp_csms TO regress_elmo_csms;
GRANT pg_monitor TO regress_elmo_monitor;
CREATE SCHEMA regress_csms AUTHORIZATION regress_elmo_csms;

-- An error as SQLSTATE and message, without this server's database names.
CREATE FUNCTION pg_temp.try(sql text) RETURNS text
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || replace(replace(SQLERRM, current_setting('elmo_oscp.database'), '<elmo_oscp.database>'),
                                       current_database(), '<this database>');
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;

SET ROLE regress_elmo_nobody;
SELECT pg_temp.try('SELECT count(*) FROM capacity_forecast') AS nobody_reads_forecasts,
       pg_temp.try('SELECT elmo_capacity_at(''G1'')') AS nobody_reads_capacity,
       pg_temp.try('SELECT * FROM elmo_status()') AS nobody_reads_status;
RESET ROLE;

SET ROLE regress_elmo_monitor;
SELECT pg_temp.try('SELECT count(*) FROM elmo_status()') AS monitor_status,
       pg_temp.try('SELECT count(*) FROM elmo_registration_status') AS monitor_registration,
       pg_temp.try('SELECT count(*) FROM elmo_capacity_now') AS monitor_capacity_now,
       pg_temp.try('SELECT elmo_capacity_schedule(''G1'', ''2026-12-01'')') AS monitor_schedule,
       pg_temp.try('SELECT count(*) FROM elmo_registration') AS monitor_tokens,
       pg_temp.try('SELECT elmo_report_usage(''G1'', 1)') AS monitor_reports;
RESET ROLE;

SET ROLE regress_elmo_csms;
SELECT pg_temp.try('INSERT INTO elmo_group_settings VALUES (''G1'', 100)') AS csms_settings,
       pg_temp.try('SELECT elmo_capacity_at(''G1'')::text') AS csms_capacity,
       pg_temp.try('SELECT elmo_replay(0)') AS csms_replay,
       pg_temp.try('SELECT elmo_discard(0, ''no'')') AS csms_discard,
       left(pg_temp.try('SELECT elmo_report_usage(''G1'', 1)'), 5) AS csms_reports,
       pg_temp.try('SELECT count(*) FROM elmo_received_message') AS csms_raw_messages;
CREATE FUNCTION regress_csms.on_forecast() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER regress_csms_forecast AFTER INSERT ON capacity_forecast
    FOR EACH ROW EXECUTE FUNCTION regress_csms.on_forecast();
SELECT elmo_capacity_at('G1') AS contract_capacity;
RESET ROLE;

-- The CSMS's trigger is saved for a restore (elmo_restore_triggers()).
SELECT table_name, trigger_name, definition, enabled FROM _elmo_saved_trigger;
DROP TRIGGER regress_csms_forecast ON capacity_forecast;
SELECT count(*) AS saved_after_drop FROM _elmo_saved_trigger;

DELETE FROM elmo_group_settings WHERE group_id = 'G1';
DROP SCHEMA regress_csms CASCADE;
DROP ROLE regress_elmo_csms, regress_elmo_monitor, regress_elmo_nobody;
