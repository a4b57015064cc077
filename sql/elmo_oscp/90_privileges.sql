-- Who may use what.  Code: every update script runs it again, so a privilege
-- added here reaches upgraded databases too; taking one away also needs a
-- REVOKE in the migration (sql/README.md).
--
-- PUBLIC gets nothing but _elmo_usage_read (below).  The three roles
-- (01_schema.sql) get what the README's "Roles and privileges" promises, and
-- test/pgtap/privileges.sql holds both to it.

-- ---------------------------------------------------------------- nothing for PUBLIC; the worker's

-- Every function, table, view and sequence of the extension: PUBLIC loses
-- what PostgreSQL gives it by default (EXECUTE on functions); the worker's
-- role gets the tables and the internal functions (its statements call
-- them, and they work on the tables with its rights).  Found through the
-- extension's membership, so whatever a later version adds is covered.
DO $$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT d.classid, d.objid
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'elmo_oscp'
              WHERE d.deptype = 'e' AND d.classid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_class'::regclass)
              ORDER BY d.classid, d.objid
    LOOP
        IF o.classid = 'pg_catalog.pg_proc'::regclass THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', o.objid::regprocedure);
            IF (SELECT p.proname LIKE '\_elmo\_%' FROM pg_catalog.pg_proc p WHERE p.oid = o.objid) THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO elmo_oscp_worker', o.objid::regprocedure);
            END IF;
        ELSE
            CASE (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = o.objid)
                WHEN 'r' THEN
                    EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC', o.objid::regclass);
                    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO elmo_oscp_worker', o.objid::regclass);
                WHEN 'v' THEN
                    EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC', o.objid::regclass);
                    EXECUTE format('GRANT SELECT ON TABLE %s TO elmo_oscp_worker', o.objid::regclass);
                WHEN 'S' THEN
                    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC', o.objid::regclass);
                    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO elmo_oscp_worker', o.objid::regclass);
                ELSE
                    NULL;
            END CASE;
        END IF;
    END LOOP;
END $$;

-- The owner of elmo_oscp.usage_source reads it through this, with its own
-- rights (src/run_as.c): nothing its caller could not read anyway.
GRANT EXECUTE ON FUNCTION _elmo_usage_read(text) TO PUBLIC;

-- A schema PUBLIC may not use (not public): the roles must reach the
-- extension's objects.  (The script runs with that schema first in its
-- search_path.)
DO $$
BEGIN
    IF NOT has_schema_privilege('public', current_schema(), 'USAGE') THEN
        GRANT USAGE ON SCHEMA @extschema@ TO elmo_oscp_reader, elmo_oscp_csms, elmo_oscp_worker;
    END IF;
END $$;

-- ---------------------------------------------------------------- elmo_oscp_reader

-- The state, the views, elmo_status(), the capacity in force.
GRANT SELECT ON capacity_forecast, capacity_forecast_block, elmo_group_settings, elmo_adjust_request,
                elmo_usage_last, capacity_in_force, elmo_capacity_now, elmo_registration_status,
                elmo_outbox_status, elmo_unapplied, elmo_usage_skipped, elmo_alerts, elmo_metrics
    TO elmo_oscp_reader;
GRANT EXECUTE ON FUNCTION elmo_status(), elmo_capacity_at(text, timestamptz), elmo_capacity_schedule(text, date),
                          elmo_day_plan(text, date), elmo_today(), elmo_tomorrow()
    TO elmo_oscp_reader;
-- What those views and functions call with the reader's own rights.
GRANT EXECUTE ON FUNCTION
    _elmo_capacity_resolve(text, timestamptz), _elmo_capacity_until(text, timestamptz, numeric, text, bigint),
    _elmo_mask(text), _elmo_setting(text), _elmo_tz(), _elmo_local_day(timestamptz), _elmo_day_start(date)
  TO elmo_oscp_reader;

-- ---------------------------------------------------------------- elmo_oscp_csms

-- The documented API: messages to ELMO (SECURITY DEFINER: they queue in
-- tables the CSMS cannot write), their outcome, unapplied messages.
GRANT EXECUTE ON FUNCTION
    elmo_register(text, text, text), elmo_update_registration(text), elmo_unregister(),
    elmo_adjust_capacity(text, numeric[], date), elmo_adjust_capacity(text, numeric, date),
    elmo_adjust_capacity(text, text, date), elmo_retry(bigint),
    elmo_report_usage(text, numeric, timestamptz, boolean),
    elmo_report_compliance_error(bigint, text, jsonb),
    elmo_trigger_callback(text, text, text, numeric), elmo_wait(bigint, interval),
    elmo_replay(bigint), elmo_discard(bigint, text)
  TO elmo_oscp_csms;
-- Its own triggers on the forecast tables and capacity_in_force (they run as
-- elmo_oscp.role), and its per-group settings.
GRANT TRIGGER ON capacity_forecast, capacity_forecast_block, capacity_in_force TO elmo_oscp_csms;
GRANT INSERT, UPDATE, DELETE ON elmo_group_settings TO elmo_oscp_csms;
