# When elmo_oscp.port is taken, the worker says so (elmo_status, the log) and
# keeps trying every few seconds: the listener comes up once the port is free.
. "$(dirname "$0")/tap.sh"
plan 6
W=$(mktemp -d /tmp/elmo_port.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
(
  port=$(free_port 23500)
  "$TOP/sim/elmo-sim" --listen 127.0.0.1 --port "$port" --no-schedule >/dev/null 2>&1 &   # squats on the port
  squatter=$!
  trap 'kill $squatter 2>/dev/null' EXIT
  until curl -s -o /dev/null "http://127.0.0.1:$port/sim/state"; do sleep 0.05; done
  cluster_init "$W/pg" postgres "$port"
  cluster_start
  sql "CREATE EXTENSION elmo_oscp" >/dev/null
  wait_sql "(SELECT last_error FROM elmo_status()) LIKE 'cannot listen on 127.0.0.1:$port%'" 20
  ok $? "elmo_status() says the listener cannot bind"
  is "$(sql "SELECT listening FROM elmo_status()")" f "and that it is not listening"
  hint=$(grep -A1 "cannot listen on 127.0.0.1:$port" "$CL_DIR/server.log" | grep -m1 'HINT:')
  echo "$hint" | grep -q 'no other process listens on elmo_oscp.port'; ok $? "the log's hint says to free the port"
  echo "$hint" | grep -qi 'certificate'; [ $? -ne 0 ]; ok $? "and, on a plain-HTTP listener, nothing about a certificate"
  kill $squatter; wait $squatter 2>/dev/null
  wait_sql "(SELECT listening FROM elmo_status())" 20
  ok $? "once the port is free the worker listens, without a restart"
  is "$(http_status "http://127.0.0.1:$port/oscp/fp/2.0/health")" 200 "and serves /health"
  cluster_stop fast
)
rm -rf "$W"
