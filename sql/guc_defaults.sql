-- Every elmo_oscp setting, its default and when it can change.  (The
-- listener's address and port, public_url and database are set by the test
-- harness, so their values are not shown.)
SELECT name,
       CASE WHEN name IN ('elmo_oscp.port', 'elmo_oscp.public_url', 'elmo_oscp.database',
                          'elmo_oscp.listen_addresses') THEN '(set by the harness)'
            ELSE boot_val END AS default_value,
       unit, context
  FROM pg_settings
 WHERE name LIKE 'elmo\_oscp.%'
 ORDER BY name;

-- enforce_deadlines is superuser-settable per session (for tests)
SET elmo_oscp.enforce_deadlines = off;
SHOW elmo_oscp.enforce_deadlines;
RESET elmo_oscp.enforce_deadlines;
-- the others change in postgresql.conf (or ALTER SYSTEM) and a reload;
-- bad values are refused with a clear message
SET elmo_oscp.path_prefix = '/other';
ALTER SYSTEM SET elmo_oscp.path_prefix = 'no-slash';
ALTER SYSTEM SET elmo_oscp.path_prefix = '/trailing/';
ALTER SYSTEM SET elmo_oscp.adjust_deadline = '25:00';
ALTER SYSTEM SET elmo_oscp.timezone = 'Mars/Olympus_Mons';
ALTER SYSTEM SET elmo_oscp.apply_timeout = '20s';
ALTER SYSTEM SET elmo_oscp.allowed_clients = '10.1.2.3/8';
ALTER SYSTEM SET elmo_oscp.allowed_clients = '203.0.113.7, elmo.example.com';
SET elmo_oscp.unknown_setting = 1;
