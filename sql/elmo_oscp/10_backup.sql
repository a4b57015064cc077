-- Backup and restore: what pg_dump cannot keep by itself.  The extension's
-- tables are marked for pg_dump (01_schema.sql), but triggers on them are
-- not dumped, whoever made them.  The CSMS's are saved as they are made
-- (_elmo_save_triggers, 00_helpers.sql); after a restore the DBA creates them
-- again with elmo_restore_triggers() (README, "Backup and restore").

-- Saved triggers that this database lacks ('name on table', ...), or NULL.
CREATE OR REPLACE FUNCTION _elmo_triggers_missing() RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%s on %s', s.trigger_name, s.table_name), ', '
                      ORDER BY s.table_name, s.trigger_name)
      FROM _elmo_saved_trigger s
     WHERE NOT EXISTS (SELECT FROM pg_trigger t
                        WHERE t.tgrelid = to_regclass(s.table_name) AND t.tgname = s.trigger_name) $$;

-- Creates again the saved triggers this database lacks; returns the ones it
-- created.  One that cannot be created (its function is missing, say) is a
-- WARNING and stays saved for the next call.  With the caller's rights:
-- creating a trigger takes TRIGGER on the table, enabling or disabling one
-- its ownership; run it as the superuser who restored the backup.
CREATE OR REPLACE FUNCTION elmo_restore_triggers() RETURNS SETOF text
    LANGUAGE plpgsql SET search_path = @extschema@, pg_temp AS $$
DECLARE
    s _elmo_saved_trigger;
BEGIN
    FOR s IN SELECT * FROM _elmo_saved_trigger ORDER BY table_name, trigger_name LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_trigger t
                               WHERE t.tgrelid = to_regclass(s.table_name) AND t.tgname = s.trigger_name);
        BEGIN
            IF s.definition !~ '^CREATE (CONSTRAINT )?TRIGGER ' THEN
                RAISE EXCEPTION 'not a CREATE TRIGGER statement' USING ERRCODE = 'data_corrupted';
            END IF;
            EXECUTE s.definition;
            IF s.enabled <> 'O' THEN
                EXECUTE format('ALTER TABLE %I %s TRIGGER %I', s.table_name,
                               CASE s.enabled WHEN 'D' THEN 'DISABLE' WHEN 'A' THEN 'ENABLE ALWAYS'
                                              ELSE 'ENABLE REPLICA' END, s.trigger_name);
            END IF;
            RETURN NEXT format('%s on %s', s.trigger_name, s.table_name);
        EXCEPTION WHEN others THEN
            RAISE WARNING 'trigger % on % was not created again: %', s.trigger_name, s.table_name, SQLERRM
                USING DETAIL = s.definition,
                      HINT = 'Create what it needs (its function, say), then call elmo_restore_triggers() again.';
        END;
    END LOOP;
END $$;
