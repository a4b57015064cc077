# test/lib.sh — a throw-away PostgreSQL cluster with elmo_oscp preloaded, and
# the bundled ELMO simulator.  Sourced by test/run.sh, test/demo.sh, bench/.
# Clusters run as the postgres OS user when we are root (PostgreSQL refuses root).

PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo "/usr/lib/postgresql/${ELMO_PG_MAJOR:-15}/bin")}
TOP=${TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A TCP port nobody listens on (loopback), starting at $1 (+ ELMO_PORT_OFFSET,
# so that two test runs on one machine start their searches apart).
free_port() {
  local p=$(( ${1:-20000} + ${ELMO_PORT_OFFSET:-0} ))
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || grep -q " $p\$" "${PORTS_TAKEN:-/dev/null}" 2>/dev/null; do
    p=$((p + 1))
  done
  echo "$p"
}

# cluster_init DIR DBNAME HTTP_PORT [extra postgresql.conf lines...]
cluster_init() {
  CL_DIR=$1; CL_DB=$2; CL_HTTP_PORT=$3; shift 3
  mkdir -p "$CL_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$CL_DIR"
  CL_PORT=$(free_port $((RANDOM % 2000 + 41000)))
  as_pg "$PGBIN/initdb" -D "$CL_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$CL_DIR/initdb.log" 2>&1 \
    || { cat "$CL_DIR/initdb.log" >&2; return 1; }
  {
    echo "port = $CL_PORT"
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$CL_DIR'"
    echo "shared_preload_libraries = 'elmo_oscp'"
    echo "elmo_oscp.database = '$CL_DB'"
    echo "elmo_oscp.listen_addresses = '127.0.0.1'"
    echo "elmo_oscp.port = $CL_HTTP_PORT"
    echo "log_line_prefix = '%m [%p] %b '"
    echo "log_min_messages = info"
    echo "max_connections = 60"
    for line in "$@"; do echo "$line"; done
  } >> "$CL_DIR/data/postgresql.conf"
  export PGHOST=$CL_DIR PGPORT=$CL_PORT PGUSER=postgres PGDATABASE=$CL_DB
}

# cluster_start — CL_ENV may hold env settings for the postmaster, e.g. a datefudge LD_PRELOAD
cluster_start() {
  as_pg env ${CL_ENV:-} "$PGBIN/pg_ctl" -D "$CL_DIR/data" -l "$CL_DIR/server.log" -w -t 60 start >/dev/null \
    || { tail -n 30 "$CL_DIR/server.log" >&2; return 1; }
}

cluster_stop() {
  [ -n "${CL_DIR:-}" ] && [ -f "$CL_DIR/data/postmaster.pid" ] && \
    as_pg "$PGBIN/pg_ctl" -D "$CL_DIR/data" -m "${1:-fast}" -w -t 60 stop >/dev/null 2>&1 || true
}

# Poll until the elmo_oscp listener answers /health (deadline in seconds).
wait_listener() {
  local deadline=$((SECONDS + ${1:-30}))
  until curl -s -o /dev/null "http://127.0.0.1:$CL_HTTP_PORT/oscp/fp/2.0/health"; do
    [ $SECONDS -ge $deadline ] && { echo "listener did not come up" >&2; tail -n 20 "$CL_DIR/server.log" >&2; return 1; }
    sleep 0.1
  done
}

# Poll until a SQL expression is true (deadline in seconds).
wait_sql() {
  local sql=$1 deadline=$((SECONDS + ${2:-30}))
  until [ "$(psql -XAtqc "SELECT ($sql)::boolean" 2>/dev/null)" = t ]; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.05
  done
}

# sim_start PORT [flags...] — the bundled ELMO simulator, loopback only.
sim_start() {
  SIM_PORT=$1; shift
  "$TOP/sim/elmo-sim" --listen 127.0.0.1 --port "$SIM_PORT" "$@" >"${SIM_LOG:-/dev/null}" 2>&1 &
  SIM_PID=$!
  local deadline=$((SECONDS + 10))
  until curl -s -o /dev/null "http://127.0.0.1:$SIM_PORT/sim/state"; do
    [ $SECONDS -ge $deadline ] && { echo "simulator did not come up" >&2; return 1; }
    sleep 0.05
  done
}

sim_stop() {
  [ -n "${SIM_PID:-}" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  SIM_PID=
}
