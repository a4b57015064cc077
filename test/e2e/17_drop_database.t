# DROP DATABASE of the worker's database.  The worker steps aside only for a
# DROP that PostgreSQL lets through its checks: one inside a transaction block
# or by a role that does not own the database leaves the worker running (same
# pid) and serving.  A DROP by the owner that fails later (a session still
# connected) lets the worker back in; one that succeeds finds the worker gone,
# and the worker comes back when the database is created again.
# A cluster of its own, serving database "dropme".
. "$(dirname "$0")/tap.sh"
plan 14
W=$(mktemp -d /tmp/elmo_drop.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
(
  HTTP=$(free_port 23500)
  cluster_init "$W/c" dropme "$HTTP" "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP/oscp/fp/2.0'" \
    "elmo_test.sim_port = '$ELMO_SIM_PORT'" || exit 1
  cluster_start || exit 1
  trap 'cluster_stop immediate' EXIT
  url="http://127.0.0.1:$HTTP/oscp/fp/2.0/update_group_capacity_forecast"
  on() { local db=$1; shift; psql -XAtq -d "$db" "$@" 2>&1; }

  # the database, owned by an ordinary role; the extension and a registration in it
  setup_db() {
    on postgres -c "CREATE DATABASE dropme OWNER dropme_owner" >/dev/null &&
    psql -Xq -d dropme -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null &&
    token=$(psql -XAtq -d dropme -c "SELECT test.fake_registration()") &&
    body=$(psql -XAtq -d dropme -c "SELECT test.emergency_body('DROP-G', now() + interval '20 min', now() + interval '1 hour', 5)")
  }
  post() { http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
             -H "X-Request-ID: $1" --data-binary "$body" "$url"; }
  # a forecast answered 204 and stored (the worker may need a moment to come back)
  serves() {
    local rid=$1 deadline=$((SECONDS + 30))
    until [ "$(post "$rid")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
    [ "$(on dropme -c "SELECT count(*) FROM elmo_received_message WHERE request_id = '$rid'")" = 1 ]
  }
  worker() { on postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker' AND datname = 'dropme'"; }

  on postgres -c "CREATE ROLE dropme_owner LOGIN; CREATE ROLE dropme_stranger LOGIN" >/dev/null
  setup_db; serves DROP-1
  ok $? "the worker serves database dropme"
  pid=$(worker)

  out=$(on postgres -c "BEGIN" -c "DROP DATABASE dropme")
  echo "$out" | grep -q "cannot run inside a transaction block"; ok $? "BEGIN; DROP DATABASE dropme: refused by PostgreSQL"
  serves DROP-2; ok $? "a forecast is still answered 204 and stored"
  is "$(worker)" "$pid" "by the same worker (pid $pid)"

  out=$(on postgres -U dropme_stranger -c "DROP DATABASE dropme")
  echo "$out" | grep -q "must be owner of database dropme"; ok $? "DROP DATABASE by a role that does not own it: refused"
  serves DROP-3; ok $? "a forecast is still answered 204 and stored"
  is "$(worker)" "$pid" "by the same worker (pid $pid)"

  # the owner's DROP passes the checks, then fails: a session is still connected
  ( psql -X -d dropme -c "SELECT pg_sleep(30)" >/dev/null 2>&1 ) &
  holder=$!
  PGDATABASE=postgres wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = 'dropme' AND query = 'SELECT pg_sleep(30)')" 10
  out=$(on postgres -U dropme_owner -c "DROP DATABASE dropme")
  echo "$out" | grep -q "is being accessed by other users"; ok $? "the owner's DROP with a session still connected fails"
  on postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'dropme' AND query = 'SELECT pg_sleep(30)'" >/dev/null
  wait "$holder"
  serves DROP-4; ok $? "the worker is let back in and serves"

  out=$(on postgres -U dropme_owner -c "DROP DATABASE dropme")
  is "$out" "" "the owner drops the database while the worker serves it"
  PGDATABASE=postgres wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker' AND datname IS NULL)" 20
  ok $? "the worker waits for the database, connected to none"
  grep -q 'elmo_oscp: database "dropme" does not exist yet; waiting for it' "$W/c/server.log"
  ok $? "and says so in the log"

  setup_db; ok $? "CREATE DATABASE dropme and CREATE EXTENSION again"
  serves DROP-5; ok $? "the worker is back and serves"
)
rm -rf "$W"
