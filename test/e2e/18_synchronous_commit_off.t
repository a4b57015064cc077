# synchronous_commit = off (or local) does not apply to the worker, wherever it
# is set: postgresql.conf (at start or by a reload), ALTER DATABASE, ALTER
# ROLE, a CSMS trigger's SET LOCAL.  A forecast answered 204
# survives a kill -9 of every server process.  The WAL writer is slowed
# (wal_writer_delay = 10s) and the background writer idle, so a commit made
# asynchronously would still be in shared memory when the processes die.
# A cluster of its own, serving database "scoff".
. "$(dirname "$0")/tap.sh"
plan 14
N=20
W=$(mktemp -d /tmp/elmo_scoff.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
(
  HTTP=$(free_port 23600)
  cluster_init "$W/c" scoff "$HTTP" "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP/oscp/fp/2.0'" \
    "elmo_test.sim_port = '$ELMO_SIM_PORT'" \
    "synchronous_commit = off" "wal_writer_delay = 10s" "bgwriter_lru_maxpages = 0" "autovacuum = off" || exit 1
  cluster_start || exit 1
  trap 'cluster_stop immediate' EXIT
  url="http://127.0.0.1:$HTTP/oscp/fp/2.0/update_group_capacity_forecast"
  as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres scoff
  psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
  token=$(sql "SELECT test.fake_registration()")
  body=$(sql "SELECT test.emergency_body('SCOFF-G', now() + interval '20 min', now() + interval '1 hour', 5)")
  post() { http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
             -H "X-Request-ID: $1" --data-binary "$body" "$url"; }
  worker_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'"; }

  # every server process killed at once, as a power cut kills them, then a restart
  kill_all() {
    local pm
    pm=$(head -n 1 "$W/c/data/postmaster.pid")
    kill -9 "$pm" $(ps -o pid= --ppid "$pm") 2>/dev/null
    while kill -0 "$pm" 2>/dev/null; do sleep 0.05; done
    rm -f "$W/c/data/postmaster.pid"
    cluster_start
  }

  # phase LABEL: N forecasts answered 204 one after the other, every server
  # process killed right after the last answer; all N must be there after
  phase() {
    local label=$1 i answered=0 deadline=$((SECONDS + 30))
    until [ "$(post "$label-WARMUP")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
    for i in $(seq 1 $N); do
      [ "$(post "$label-$i")" = 204 ] && answered=$((answered + 1))
    done
    kill_all
    is "$answered/$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE '$label-%' AND request_id <> '$label-WARMUP'")" \
       "$N/$N" "$2: $N forecasts answered 204, all $N still there after kill -9 of every server process"
  }

  # a new worker, which reads the database's and the role's settings as it connects
  restart_worker() {
    local old
    old=$(worker_pid)
    sql "SELECT pg_terminate_backend($old)" >/dev/null
    wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker' AND pid <> $old)" 20
  }

  is "$(sql "SHOW synchronous_commit")" off "synchronous_commit = off in postgresql.conf"
  phase CONF "postgresql.conf"
  grep -q 'elmo_oscp: synchronous_commit = off does not apply to the worker, which commits with on' "$W/c/server.log"
  ok $? "the worker says in the log that it commits with on"

  sql "ALTER SYSTEM SET synchronous_commit = on" >/dev/null
  sql "ALTER DATABASE scoff SET synchronous_commit = off; SELECT pg_reload_conf()" >/dev/null
  is "$(psql -XAtqc "SHOW synchronous_commit")" off "synchronous_commit = on in the server, off for the database"
  restart_worker; ok $? "a new worker connects"
  phase DATABASE "ALTER DATABASE ... SET synchronous_commit = off"

  sql "ALTER DATABASE scoff RESET synchronous_commit; ALTER ROLE postgres SET synchronous_commit = off" >/dev/null
  is "$(psql -XAtqc "SHOW synchronous_commit")" off "off for the role the worker runs as"
  restart_worker; ok $? "a new worker connects"
  phase ROLE "ALTER ROLE ... SET synchronous_commit = off"

  # a reload that weakens the setting does not reach the worker either
  sql "ALTER ROLE postgres RESET synchronous_commit" >/dev/null
  restart_worker; ok $? "a new worker connects, with synchronous_commit = on everywhere"
  sql "ALTER SYSTEM SET synchronous_commit = off" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
  wait_sql "(SELECT setting FROM pg_settings WHERE name = 'synchronous_commit') = 'off'" 10
  ok $? "synchronous_commit = off by a reload"
  phase RELOAD "after a reload to off"

  # nor does a CSMS trigger's SET LOCAL, which would last until the batch's COMMIT
  sql "ALTER SYSTEM RESET synchronous_commit" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
  sql "CREATE FUNCTION test.async_commit() RETURNS trigger LANGUAGE plpgsql AS \$\$
       BEGIN PERFORM set_config('synchronous_commit', 'off', true); RETURN NEW; END \$\$;
       CREATE TRIGGER async_commit AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.async_commit();"
  ok $? "a CSMS trigger that sets synchronous_commit = off for the transaction"
  phase TRIGGER "a trigger's SET LOCAL synchronous_commit = off"
)
rm -rf "$W"
