# test/ha/stack.sh — the high-availability stack of test/ha/*.t, on loopback:
# one etcd, two PostgreSQL nodes under Patroni (node 1 on 127.0.0.2, node 2 on
# 127.0.0.3, each configured from examples/ha/patroni.yml.in), HAProxy in front
# of their elmo_oscp listeners (examples/ha/haproxy.cfg.in) and the bundled ELMO
# simulator sending through HAProxy.  Sourced after test/e2e/tap.sh.

HA_HOST=([1]=127.0.0.2 [2]=127.0.0.3)
HA_PIDS=()

# spawn_as_pg PROGRAM ARGS... & — the program as the postgres OS user, in the
# background job's own process (exec all the way down), so $! is its pid and a
# signal reaches it directly.  It starts in $HA_WORK: Patroni's child processes
# change into their parent's directory, which postgres may not enter (a
# checkout under a private temporary directory).
spawn_as_pg() {
  cd "$HA_WORK" || exit 1
  if [ "$(id -u)" -eq 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$HA_WORK" "$@"
  else
    exec env HOME="$HA_WORK" "$@"
  fi
}

# A TCP port nobody listens on at any of the given addresses, from $1 (+ ELMO_PORT_OFFSET).
free_port_on() {
  local p=$(( $1 + ${ELMO_PORT_OFFSET:-0} )) a; shift
  while :; do
    for a in "$@"; do
      if (exec 3<>"/dev/tcp/$a/$p") 2>/dev/null; then p=$((p + 1)); continue 2; fi
    done
    echo "$p"; return
  done
}

now_ms() { date +%s%3N; }

# poll DEADLINE_S COMMAND... — run COMMAND every 50 ms until it succeeds
poll() {
  local deadline=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@"; do
    [ "$(now_ms)" -ge $deadline ] && return 1
    sleep 0.05
  done
}

rest_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://${HA_HOST[$1]}:$REST_PORT$2"; }
is_primary() { [ "$(rest_status "$1" /primary)" = 200 ]; }
is_sync_standby() { [ "$(rest_status "$1" /sync)" = 200 ]; }
# node N's postmaster pid, empty when it is not running
postmaster_pid() {
  local f=$HA_WORK/n$1/data/postmaster.pid pid
  [ -f "$f" ] || return 0
  pid=$(head -n 1 "$f" 2>/dev/null)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
# pgq N SQL — a query on node N (database csms) through its Unix socket
pgq() { as_pg psql -h "$HA_WORK/n$1" -p "$PG_PORT" -U postgres -d "${3:-csms}" -XAtq -v ON_ERROR_STOP=1 -c "$2"; }
listener_up() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://${HA_HOST[$1]}:$OSCP_PORT/oscp/fp/2.0/health")" = 200 ]; }
haproxy_up() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$ELMO_PUBLIC_URL/health")" = 200 ]; }

# render TEMPLATE OUT — envsubst, refusing a template variable that is not set
render() {
  local v
  for v in $(grep -o '\${[A-Z0-9_]*}' "$1" | tr -d '${}' | sort -u); do
    [ -n "${!v:-}" ] || { echo "render $1: $v is not set" >&2; return 1; }
  done
  envsubst < "$1" > "$2"
}

ha_start_etcd() {
  spawn_as_pg etcd --name etcd1 --data-dir "$HA_WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "etcd1=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    >"$HA_WORK/etcd.log" 2>&1 &
  HA_ETCD_PID=$!; HA_PIDS+=("$HA_ETCD_PID")
  poll 30 etcdctl --endpoints "127.0.0.1:$ETCD_PORT" endpoint health >/dev/null 2>&1
}

# ha_start_node N — Patroni for node N (it bootstraps or clones its PostgreSQL)
ha_start_node() {
  local n=$1 dir=$HA_WORK/n$1
  mkdir -p "$dir"; [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  NODE_NAME=node$n NODE_HOST=${HA_HOST[$n]} PG_DATA_DIR=$dir/data PG_SOCKET_DIR=$dir PGPASS_FILE=$dir/pgpass \
    render "$TOP/examples/ha/patroni.yml.in" "$dir/patroni.yml" || return 1
  spawn_as_pg patroni "$dir/patroni.yml" >"$dir/patroni.log" 2>&1 &
  HA_PATRONI_PID[$n]=$!; HA_PIDS+=("$!")
}

ha_start_haproxy() {
  render "$TOP/examples/ha/haproxy.cfg.in" "$HA_WORK/haproxy.cfg" || return 1
  haproxy -c -q -f "$HA_WORK/haproxy.cfg" || return 1
  spawn_as_pg haproxy -db -f "$HA_WORK/haproxy.cfg" >"$HA_WORK/haproxy.log" 2>&1 &
  HA_HAPROXY_PID=$!; HA_PIDS+=("$!")
}

# Everything started above, stopped whatever state it is in; PostgreSQL stopped
# by its Patroni, or at once if Patroni is gone.
ha_stop() {
  local p n deadline
  [ -n "${HA_LOAD_PID:-}" ] && { touch "$HA_WORK/load.stop"; kill "$HA_LOAD_PID" 2>/dev/null; wait "$HA_LOAD_PID" 2>/dev/null; }
  sim_stop
  [ -n "${HA_HAPROXY_PID:-}" ] && kill "$HA_HAPROXY_PID" 2>/dev/null
  for n in 1 2; do [ -n "${HA_PATRONI_PID[$n]:-}" ] && kill "${HA_PATRONI_PID[$n]}" 2>/dev/null; done
  deadline=$((SECONDS + 30))
  for n in 1 2; do
    p=${HA_PATRONI_PID[$n]:-}
    while [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  done
  for n in 1 2; do
    [ -n "$(postmaster_pid $n)" ] && as_pg "$PGBIN/pg_ctl" -D "$HA_WORK/n$n/data" -m immediate -w stop >/dev/null 2>&1
  done
  [ -n "${HA_ETCD_PID:-}" ] && kill "$HA_ETCD_PID" 2>/dev/null
  for p in "${HA_PIDS[@]}"; do
    deadline=$((SECONDS + 10))
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  HA_PIDS=()
}

# ha_setup — ports, work directory, every process, the csms database
ha_setup() {
  HA_WORK=$(mktemp -d /tmp/elmo_ha.XXXXXX)
  chmod 755 "$HA_WORK"; [ "$(id -u)" -eq 0 ] && chown postgres: "$HA_WORK"
  export SIM_LOG=$HA_WORK/sim.log
  ETCD_PORT=$(free_port_on 20600 127.0.0.1)
  ETCD_PEER_PORT=$(free_port_on $((ETCD_PORT + 1 - ${ELMO_PORT_OFFSET:-0})) 127.0.0.1)
  PG_PORT=$(free_port_on 20610 "${HA_HOST[1]}" "${HA_HOST[2]}")
  REST_PORT=$(free_port_on 20620 "${HA_HOST[1]}" "${HA_HOST[2]}")
  OSCP_PORT=$(free_port_on 20630 "${HA_HOST[1]}" "${HA_HOST[2]}")
  FRONT_PORT=$(free_port_on 20640 127.0.0.1)
  SIM_PORT=$(free_port_on 20650 127.0.0.1)
  SIM=http://127.0.0.1:$SIM_PORT
  # the templates' variables (see examples/ha/README.md)
  export ETCD_HOSTS=127.0.0.1:$ETCD_PORT PG_PORT REST_PORT OSCP_PORT
  export PG_BIN_DIR=$PGBIN NODES_NETWORK=127.0.0.0/8 CSMS_DATABASE=csms
  export ELMO_PUBLIC_URL=http://127.0.0.1:$FRONT_PORT/oscp/fp/2.0
  export SUPERUSER_PASSWORD=$(openssl rand -hex 12) REPLICATION_PASSWORD=$(openssl rand -hex 12)
  export REST_PASSWORD=$(openssl rand -hex 12)
  export ELMO_FRONTEND=127.0.0.1:$FRONT_PORT NODE1_NAME=node1 NODE1_HOST=${HA_HOST[1]} NODE2_NAME=node2 NODE2_HOST=${HA_HOST[2]}
}

# ha_load_start GROUP — a steady stream of emergency forecasts: the simulator,
# as ELMO, sends each through HAProxy with its own X-Request-ID and records the
# answer (GET /sim/callbacks).  About 20 forecasts every 50 ms until ha_load_stop.
ha_load_start() {
  local cfg=$HA_WORK/load.curl i
  : > "$cfg"
  for i in $(seq 20); do
    [ "$i" -gt 1 ] && echo next >> "$cfg"
    printf 'url = "%s/sim/emergency"\ndata = "{\\"group_id\\":\\"%s\\",\\"capacity\\":%d}"\noutput = "/dev/null"\n' \
      "$SIM" "$1" $((20 + i)) >> "$cfg"
  done
  rm -f "$HA_WORK/load.stop"
  ( while [ ! -e "$HA_WORK/load.stop" ]; do curl -s -K "$cfg"; sleep 0.05; done ) &
  HA_LOAD_PID=$!
}

ha_load_stop() {
  touch "$HA_WORK/load.stop"
  wait "$HA_LOAD_PID" 2>/dev/null
  HA_LOAD_PID=
}
