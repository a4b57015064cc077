# On a hot standby the worker does not run and the SQL API refuses clearly;
# after promotion the worker starts and serves.
. "$(dirname "$0")/tap.sh"
plan 6
W=$(mktemp -d /tmp/elmo_sb.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
(
  cluster_init "$W/primary" postgres "$(free_port 23200)"
  cluster_start
  sql "CREATE EXTENSION elmo_oscp" >/dev/null
  P_HOST=$PGHOST P_PORT=$PGPORT
  SB_PORT=$(free_port 23300) SB_HTTP=$(free_port 23400)
  as_pg "$PGBIN/pg_basebackup" -h "$P_HOST" -p "$P_PORT" -U postgres -D "$W/standby/data" -R -X stream -c fast >/dev/null 2>&1
  ok $? "a standby from pg_basebackup"
  { echo "port = $SB_PORT"; echo "unix_socket_directories = '$W/standby'"; echo "elmo_oscp.port = $SB_HTTP"; } \
    >> "$W/standby/data/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" -D "$W/standby/data" -l "$W/standby/server.log" -w -t 60 start >/dev/null
  export PGHOST=$W/standby PGPORT=$SB_PORT
  is "$(sql "SELECT pg_is_in_recovery()")" t "it runs as a hot standby"
  is "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'")" 0 "no elmo_oscp worker on the standby"
  out=$(psql -X -c "SELECT elmo_report_usage('G1', 1)" 2>&1)
  echo "$out" | grep -q "elmo_oscp functions cannot run on a standby"; ok $? "the SQL API refuses on a standby, with a clear error"
  as_pg "$PGBIN/pg_ctl" -D "$W/standby/data" -w promote >/dev/null
  wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker')" 20
  ok $? "after promotion the worker starts"
  deadline=$((SECONDS + 20))
  until [ "$(http_status "http://127.0.0.1:$SB_HTTP/oscp/fp/2.0/health")" = 200 ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
  is "$(http_status "http://127.0.0.1:$SB_HTTP/oscp/fp/2.0/health")" 200 "and serves /health"
  as_pg "$PGBIN/pg_ctl" -D "$W/standby/data" -m fast -w stop >/dev/null 2>&1
  export PGHOST=$P_HOST PGPORT=$P_PORT
  cluster_stop fast
)
rm -rf "$W"
