# The worker connects as elmo_oscp.role (elmo_oscp_worker by default), so no
# code of the CSMS runs as a superuser because of us:
#   1. a CSMS trigger fired by a forecast over HTTP runs as that role, and
#      what only a superuser may do fails in it;
#   2. elmo_replay, called by a CSMS role, applies with that role's rights too;
#   3. elmo_oscp.usage_source is read with its owner's rights (a table the
#      worker's role cannot read), and never when a superuser owns it;
#   4. a role that is missing, cannot log in or lacks the worker's privileges
#      gives one clear log line each, and no crash loop (own cluster).
. "$(dirname "$0")/tap.sh"
plan 21
export PGOPTIONS='-c client_min_messages=error'     # http:// public URL: elmo_register warns
SIM=http://127.0.0.1:$ELMO_SIM_PORT
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
G=B6734_AE0100_00848825118       # one of the simulator's stations
LOG=$ELMO_TEST_WORK/pg/server.log

cleanup() {
  psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.usage_source" -c "ALTER SYSTEM RESET elmo_oscp.report_interval" \
       -c "SELECT pg_reload_conf()" -c "SELECT test.reset()" \
       -c "DROP TRIGGER IF EXISTS e2e17 ON capacity_forecast" -c "DROP FUNCTION IF EXISTS test.e2e17()" \
       -c "DROP TABLE IF EXISTS test.e2e17_seen" -c "DROP SCHEMA IF EXISTS e2e17 CASCADE" \
       -c "DROP ROLE IF EXISTS e2e17_csms" >/dev/null 2>&1
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
}
cleanup
trap cleanup EXIT
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null

post() {   # post REQUEST-ID KW: ELMO's emergency forecast over HTTP; prints the status
  http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $(sql "SELECT test.token()")" \
    -H "X-Request-ID: $1" \
    --data-binary "$(sql "SELECT test.emergency_body('$G', now() + interval '20 min', now() + interval '1 hour', $2)")" \
    "$FP/update_group_capacity_forecast"
}

# ---------------------------------------------------------------- 1. a CSMS trigger, as the worker applies
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 20
ok $? "registered with the simulator"
sql "CREATE ROLE e2e17_csms LOGIN; GRANT elmo_oscp_csms TO e2e17_csms;
     CREATE TABLE test.e2e17_seen (request_id text, applied_as text, session_as text,
                                   set_role text, read_file text, create_role text);
     -- what it saw, and the SQLSTATE of what only a superuser may do
     CREATE FUNCTION test.e2e17() RETURNS trigger LANGUAGE plpgsql AS \$\$
     DECLARE r test.e2e17_seen;
     BEGIN
         IF NEW.request_id LIKE 'E2E17-REPLAY-%' AND session_user = 'elmo_oscp_worker' THEN
             RAISE EXCEPTION 'e2e17: applied by the worker, wanted by elmo_replay';
         END IF;
         r := ROW(NEW.request_id, current_user, session_user, 'done', 'done', 'done');
         BEGIN SET ROLE postgres; EXCEPTION WHEN others THEN r.set_role := SQLSTATE; END;
         BEGIN PERFORM pg_read_file('postgresql.conf'); EXCEPTION WHEN others THEN r.read_file := SQLSTATE; END;
         BEGIN CREATE ROLE e2e17_intruder SUPERUSER; EXCEPTION WHEN others THEN r.create_role := SQLSTATE; END;
         INSERT INTO test.e2e17_seen SELECT r.*;
         RETURN NULL;
     END \$\$;
     CREATE TRIGGER e2e17 AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.e2e17();" >/dev/null
is "$(post E2E17-1 40)" 204 "ELMO's forecast is answered 204"
seen() { sql "SELECT concat_ws(' ', applied_as, session_as, set_role, read_file, create_role) FROM test.e2e17_seen WHERE request_id = '$1'"; }
is "$(seen E2E17-1)" "elmo_oscp_worker elmo_oscp_worker 42501 42501 42501" \
   "the CSMS's trigger ran as elmo_oscp_worker, and SET ROLE postgres, pg_read_file, CREATE ROLE ... SUPERUSER failed (42501)"
is "$(sql "SELECT count(*) FROM pg_roles WHERE rolname = 'e2e17_intruder'")" 0 "no superuser was made"
is "$(sql "SELECT usename FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'")" elmo_oscp_worker \
   "pg_stat_activity shows the worker logged in as elmo_oscp_worker"

# ---------------------------------------------------------------- 2. elmo_replay by a CSMS role
is "$(post E2E17-REPLAY-1 41)" 204 "a forecast whose trigger fails when the worker applies it: 204"
wait_sql "(SELECT state = 'apply_failed' FROM elmo_received_message WHERE request_id = 'E2E17-REPLAY-1')" 10
ok $? "it is kept as apply_failed"
id=$(sql "SELECT id FROM elmo_received_message WHERE request_id = 'E2E17-REPLAY-1'")
is "$(psql -XAtq -U e2e17_csms -c "SELECT elmo_replay($id)" 2>&1)" applied "elmo_replay($id), called by a member of elmo_oscp_csms: applied"
is "$(seen E2E17-REPLAY-1)" "elmo_oscp_worker e2e17_csms 42501 42501 42501" \
   "its trigger ran as elmo_oscp_worker (not as the caller, not as elmo_replay's owner), with no superuser rights"

# ---------------------------------------------------------------- 3. usage_source, with its owner's rights
# a schema only its owner may use: the worker's role cannot read the meters
sql "CREATE SCHEMA e2e17 AUTHORIZATION e2e17_csms;
     SET ROLE e2e17_csms;
     CREATE TABLE e2e17.meter (group_id text, kwh numeric);
     INSERT INTO e2e17.meter VALUES ('$G', 1717);
     CREATE VIEW e2e17.usage AS SELECT group_id, kwh FROM e2e17.meter;" >/dev/null
is "$(psql -XAtq -c "SET ROLE elmo_oscp_worker" -c "SELECT count(*) FROM e2e17.usage" 2>&1 | grep -c 'permission denied')" 1 \
   "elmo_oscp_worker itself may not read e2e17.usage"
psql -Xq -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET elmo_oscp.usage_source = 'e2e17.usage'" \
     -c "ALTER SYSTEM SET elmo_oscp.report_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
wait_sql "EXISTS (SELECT FROM elmo_outbox WHERE message = 'update_group_measurements' AND body LIKE '%\"value\":1717,%'
                                           AND state = 'delivered')" 20
ok $? "usage_source owned by e2e17_csms: its reading (1717 kWh) is read with its owner's rights and delivered"
sql "ALTER VIEW e2e17.usage OWNER TO postgres; UPDATE e2e17.meter SET kwh = 1818" >/dev/null
n0=$(grep -c 'is owned by the superuser "postgres": it is not read with a superuser' "$LOG")
deadline=$((SECONDS + 20))
until [ "$(grep -c 'is owned by the superuser "postgres": it is not read with a superuser' "$LOG")" -gt "$n0" ] ||
      [ $SECONDS -ge $deadline ]; do sleep 0.2; done
[ "$(grep -c 'is owned by the superuser "postgres": it is not read with a superuser' "$LOG")" -gt "$n0" ]
ok $? "owned by a superuser: refused, with a WARNING that says why and what to do"
sleep 2   # two more report intervals
is "$(sql "SELECT count(*) FROM elmo_outbox WHERE body LIKE '%\"value\":1818,%'")" 0 "and nothing read as a superuser was sent"

# ---------------------------------------------------------------- 4. a role that cannot serve: its own cluster
W=$(mktemp -d /tmp/elmo_role.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
(
  HTTP=$(free_port 23800)
  cluster_init "$W/pg" elmo_role "$HTTP" "elmo_oscp.role = 'e2e17_worker'" >/dev/null
  cluster_start
  trap 'cluster_stop immediate' EXIT
  as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_role
  L=$W/pg/server.log
  lines() { grep -c "$1" "$L"; }
  until_line() { local d=$((SECONDS + 20)); until [ "$(lines "$1")" -ge 1 ] || [ $SECONDS -ge $d ]; do sleep 0.2; done; }

  until_line 'role "e2e17_worker" (elmo_oscp.role) does not exist; waiting for it'
  sleep 5   # the worker looks every 2 s: two more looks
  is "$(lines 'role "e2e17_worker" (elmo_oscp.role) does not exist')" 1 "a missing role: one log line, while the worker waits"
  sql "CREATE ROLE e2e17_worker NOLOGIN" >/dev/null
  until_line 'role "e2e17_worker" (elmo_oscp.role) cannot log in'
  sleep 5
  is "$(lines 'role "e2e17_worker" (elmo_oscp.role) cannot log in')" 1 "a role that cannot log in: one log line"
  sql "ALTER ROLE e2e17_worker LOGIN; CREATE EXTENSION elmo_oscp" >/dev/null
  until_line 'role "e2e17_worker" (elmo_oscp.role) lacks the worker'"'"'s privileges'
  sleep 6   # the worker looks again every 5 s
  is "$(lines "lacks the worker's privileges: not serving ELMO until GRANT elmo_oscp_worker TO e2e17_worker")" 1 \
     "connected, but without the worker's privileges: one log line, and it serves nothing"
  is "$(lines 'serving OSCP')" 0 "it says it serves nothing"
  sql "GRANT elmo_oscp_worker TO e2e17_worker" >/dev/null
  until_line 'extension elmo_oscp .* found in schema public, serving OSCP'
  is "$(lines 'serving OSCP')" 1 "GRANT elmo_oscp_worker TO e2e17_worker: the worker serves, as e2e17_worker"
  is "$(sql "SELECT usename FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'")" e2e17_worker "logged in as e2e17_worker"
  is "$(lines 'FATAL')" 0 "no FATAL in the server log, ever"
  is "$(lines 'background worker "elmo_oscp worker" (PID [0-9]*) exited')" 2 \
     "the worker restarted twice in all (its first try, then to connect once it could): no crash loop"
)
rm -rf "$W"
