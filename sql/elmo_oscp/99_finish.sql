-- Last: say so when the worker serves another database (here nothing is
-- received from ELMO and nothing is sent), then wake the worker at commit of
-- CREATE EXTENSION or ALTER EXTENSION UPDATE.
DO $$
BEGIN
    IF current_database() <> _elmo_setting('database') THEN
        RAISE WARNING 'elmo_oscp is installed in database "%", but its worker serves database "%"',
                      current_database(), _elmo_setting('database')
            USING DETAIL = 'ELMO''s messages are stored, and messages to ELMO sent, only in the database '
                           'named by elmo_oscp.database; here the functions that queue messages raise an error.',
                  HINT = format('Create the extension in database %I, or set elmo_oscp.database = %L and restart the server.',
                                _elmo_setting('database'), current_database());
    END IF;
END $$;

SELECT _elmo_kick();
