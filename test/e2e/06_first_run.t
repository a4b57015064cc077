# A first start before the database named by elmo_oscp.database exists: the
# worker says so once, in its own words (no FATAL, no internal error), and
# starts serving once the database is created.  CREATE EXTENSION in another
# database warns which database the worker serves.
. "$(dirname "$0")/tap.sh"
plan 6
W=$(mktemp -d /tmp/elmo_first.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
(
  port=$(free_port 23700)
  cluster_init "$W/pg" csms_first "$port"     # a fresh cluster: no database csms_first yet
  cluster_start
  log=$CL_DIR/server.log
  deadline=$((SECONDS + 20))
  until grep -q 'database "csms_first" does not exist yet; waiting for it' "$log" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
  grep -q 'elmo_oscp: database "csms_first" does not exist yet; waiting for it' "$log"
  ok $? "the worker says it waits for the database"
  as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres csms_first
  deadline=$((SECONDS + 20))
  until [ "$(http_status "http://127.0.0.1:$port/oscp/fp/2.0/health")" = 200 ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
  grep -q 'elmo_oscp worker started for database "csms_first"' "$log"
  ok $? "once created, the worker connects to it and serves /health"
  # from the server's start until then (at least one more look at pg_database)
  is "$(grep -c 'elmo_oscp worker \(FATAL\|ERROR\|PANIC\)' "$log")" 0 "the worker logged no FATAL or ERROR meanwhile"
  is "$(grep -c 'waiting for it' "$log")" 1 "and said it waits once"

  out=$(psql -X -d postgres -c "CREATE EXTENSION elmo_oscp" 2>&1)
  echo "$out" | grep -q 'WARNING:  elmo_oscp is installed in database "postgres", but its worker serves database "csms_first"'
  ok $? "CREATE EXTENSION in another database warns which database the worker serves"
  out=$(psql -X -d csms_first -c "CREATE EXTENSION elmo_oscp" 2>&1)
  echo "$out" | grep -q WARNING; [ $? -ne 0 ]
  ok $? "and not in the database it serves"
  cluster_stop fast
)
rm -rf "$W"
