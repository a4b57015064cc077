#!/usr/bin/env bash
# make bench: the speed figures of issues 3 (inbound) and 4 (outbound), each
# next to a baseline measured in the same run on the same machine.
#
#   inbound    10,000 emergency forecasts (1 block) and 10,000 day-ahead
#              forecasts (24 blocks, ~100 groups) over 32 keep-alive
#              connections at the worker (wrk + bench/post.lua: exact counts,
#              a unique X-Request-ID each); baselines: nginx answering 204 to
#              the same POSTs (HTTP ceiling) and pgbench inserting one forecast
#              row per transaction with 32 clients (one-commit-per-request ceiling)
#   notify     p50/p99 from a forecast POST to a LISTENing client's NOTIFY, idle
#              (bench/notify_latency.c, 300 sequential requests)
#   outbound   10,000 elmo_report_usage() queued in one transaction, time from
#              commit until all are delivered to nginx answering 204; baseline:
#              wrk against the same nginx endpoint with the same bodies
#
# fsync and synchronous_commit are on.  Results: a table on stdout and in
# bench/results/latest.txt.  Exits non-zero when a correctness check fails
# (a non-204, rows missing, a message not delivered); a missed speed goal is
# reported, never a failure.
#
# Knobs (environment): BENCH_N (10000), BENCH_CONNS (32), BENCH_WRK_THREADS (2),
# BENCH_NOTIFY_N (300), KEEP=1 keeps the work directory, BENCH_PROFILE=1 adds
# track_functions = all and prints where the SQL time of each burst went
# (costs some speed: not for the official figures), BENCH_PG_EXTRA="a = 1; b = 2"
# adds postgresql.conf lines (experiments; they are printed with the results).
set -uo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
. test/lib.sh

N=${BENCH_N:-10000}
CONNS=${BENCH_CONNS:-32}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
NOTIFY_N=${BENCH_NOTIFY_N:-300}
NOTIFY_WARMUP=20
WRK_LIMIT=60            # seconds: upper bound of one wrk run
APPLY_WAIT=60           # seconds: stored forecasts applied / messages delivered
GROUPS_N=100            # distinct group ids per burst
RUN_ID=$(date +%s)$RANDOM
T_START=$SECONDS

note() { printf '== %s\n' "$*" >&2; }

bash test/deps.sh --bench || exit 1
note "build and install"
make -s >/dev/null && make -s install >/dev/null || { echo "build failed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/elmo_oscp_bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"
export PORTS_TAKEN=$WORK/ports
NGINX_PID=

cleanup() {
  if [ -n "$NGINX_PID" ]; then
    kill "$NGINX_PID" 2>/dev/null
    wait "$NGINX_PID" 2>/dev/null
  fi
  cluster_stop immediate
  [ -n "${KEEP:-}" ] && echo "work directory kept: $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note "notify_latency (cc)"
cc -O2 -Wall -I"$(pg_config --includedir)" -o "$WORK/notify_latency" bench/notify_latency.c \
   -L"$(pg_config --libdir)" -lpq -lcurl || { echo "cannot build bench/notify_latency.c" >&2; exit 1; }

HTTP_PORT=$(free_port $((RANDOM % 1000 + 18880))); echo " $HTTP_PORT" >> "$PORTS_TAKEN"
NGINX_PORT=$(free_port $((HTTP_PORT + 1))); echo " $NGINX_PORT" >> "$PORTS_TAKEN"
WORKER_URL=http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast
NGINX_URL=http://127.0.0.1:$NGINX_PORT/oscp/fp/2.0/update_group_capacity_forecast
NGINX_ELMO=http://127.0.0.1:$NGINX_PORT/oscp/2.0

# ---------------------------------------------------------------- nginx
note "nginx on 127.0.0.1:$NGINX_PORT"
mkdir -p "$WORK/nginx"
sed -e "s|@PORT@|$NGINX_PORT|g" -e "s|@DIR@|$WORK/nginx|g" bench/nginx.conf.in > "$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
NGINX_PID=$!
deadline=$((SECONDS + 10))
until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "$NGINX_URL")" = 204 ]; do
  if [ $SECONDS -ge $deadline ] || ! kill -0 "$NGINX_PID" 2>/dev/null; then
    echo "nginx did not come up" >&2; cat "$WORK/nginx/error.log" >&2; exit 1
  fi
  sleep 0.05
done

# ---------------------------------------------------------------- cluster
note "cluster (fsync on, synchronous_commit on)"
PG_SETTINGS=("fsync = on" "synchronous_commit = on" "shared_buffers = 256MB"
             "max_wal_size = 4GB" "checkpoint_timeout = 30min")
[ -n "${BENCH_PROFILE:-}" ] && PG_SETTINGS+=("track_functions = all")
if [ -n "${BENCH_PG_EXTRA:-}" ]; then           # e.g. "elmo_oscp.batch_max = 64; elmo_oscp.max_in_flight = 64"
  IFS=';' read -r -a extra <<<"$BENCH_PG_EXTRA"
  for line in "${extra[@]}"; do PG_SETTINGS+=("$(sed 's/^ *//; s/ *$//' <<<"$line")"); done
fi
cluster_init "$WORK/pg" elmo_bench "$HTTP_PORT" "${PG_SETTINGS[@]}" \
  "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0'" \
  "elmo_test.sim_port = '$NGINX_PORT'" || exit 1
cluster_start || exit 1
as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_bench || exit 1
wait_listener 30 || exit 1

q() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

q "CREATE EXTENSION elmo_oscp" || exit 1
psql -Xq -v ON_ERROR_STOP=1 -f test/helpers.sql >/dev/null || exit 1
TOKEN=$(q "SELECT test.fake_registration()") && [ -n "$TOKEN" ] || { echo "fake_registration failed" >&2; exit 1; }

# Until the worker knows the token, it answers 401: wait for a 204 (a probe
# forecast, not counted below).
emerg_sql() {   # emerg_sql GROUP_EXPR KW_EXPR: one block around now, on one line
  echo "replace(test.emergency_body($1, now() - interval '1 hour', now() + interval '1 hour', $2), E'\\n', ' ')"
}
q "SELECT $(emerg_sql "'probe'" 42)" > "$WORK/probe.json"
deadline=$((SECONDS + 15)); i=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
          -H "Authorization: Token $TOKEN" -H "X-Request-ID: probe-$RUN_ID-$i" \
          --data-binary @"$WORK/probe.json" "$WORKER_URL")" = 204 ]; do
  [ $SECONDS -ge $deadline ] && { echo "the worker never accepted a forecast" >&2; tail -n 20 "$WORK/pg/server.log" >&2; exit 1; }
  i=$((i + 1)); sleep 0.1
done

# Bodies: one per line (json_agg puts newlines between elements).
q "SELECT $(emerg_sql "'BE' || g" "100 + g") FROM generate_series(1, $GROUPS_N) g" > "$WORK/emergency.bodies"
# tomorrow (the day after when midnight is near: it must still be a future day when sent)
q "SELECT replace(test.day_body('BD' || g, _elmo_local_day(now() + interval '10 minutes') + 1, 50 + g), E'\\n', ' ')
     FROM generate_series(1, $GROUPS_N) g" > "$WORK/day.bodies"
q "SELECT _elmo_usage_body('G' || g, g, now()) FROM generate_series(1, $GROUPS_N) g" > "$WORK/usage.bodies" \
  || q "SELECT json_build_object('group_id', 'G' || g, 'measurements', json_build_array(json_build_object(
          'value', g, 'phase', 'ALL', 'unit', 'KWH', 'direction', 'IMPORT', 'measure_time', _elmo_ts(now()))))
          FROM generate_series(1, $GROUPS_N) g" > "$WORK/usage.bodies"
q "SELECT $(emerg_sql "'@GROUP@'" 42)" > "$WORK/notify.template"

# ---------------------------------------------------------------- helpers
declare -A W           # W[name.key] from wrk's RESULT line
declare -A M           # other measurements
FAIL=()                # correctness failures
fail() { FAIL+=("$*"); echo "FAILED: $*" >&2; }

# run_wrk NAME URL BODIES TAG TOKEN: N requests, CONNS connections.
run_wrk() {
  local name=$1 url=$2 bodies=$3 tag=$4 token=$5 out=$WORK/wrk_$1.out line kv
  timeout $((WRK_LIMIT + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WRK_LIMIT}s" --timeout 20s \
    -s "$TOP/bench/post.lua" "$url" -- "$bodies" "$N" "$WRK_THREADS" "$tag" "$token" >"$out" 2>&1
  line=$(grep '^RESULT ' "$out")
  if [ -z "$line" ]; then
    fail "$name: wrk gave no result"; sed 's/^/    /' "$out" >&2; return 1
  fi
  for kv in ${line#RESULT }; do W[$name.${kv%%=*}]=${kv#*=}; done
  if [ "${W[$name.answered]}" != "$N" ] || [ "${W[$name.issued]}" != "$N" ]; then
    fail "$name: ${W[$name.issued]} requests sent, ${W[$name.answered]} answered, $N expected"
  fi
  if [ "${W[$name.non204]}" != 0 ]; then
    fail "$name: ${W[$name.non204]} answers were not 204 (first: $(sed -n 's/^FIRST_BAD //p' "$out"))"
  fi
  local e=$((W[$name.err_connect] + W[$name.err_read] + W[$name.err_write] + W[$name.err_timeout]))
  [ $e -eq 0 ] || fail "$name: socket errors (connect ${W[$name.err_connect]}, read ${W[$name.err_read]}, write ${W[$name.err_write]}, timeout ${W[$name.err_timeout]})"
}

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; }   # utime + stime
# machine: "busy total" jiffies over all cores
machine_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
WORKER_PID=$(q "SELECT worker_pid FROM _elmo_worker_info()")

# cpu_begin / cpu_end NAME: worker CPU (% of one core) and machine CPU (% of all cores)
cpu_begin() { C_W0=$(proc_ticks "$WORKER_PID"); read -r C_B0 C_T0 < <(machine_ticks); C_S0=$(date +%s.%N); }
cpu_end() {
  local w1 b1 t1 s1; w1=$(proc_ticks "$WORKER_PID"); read -r b1 t1 < <(machine_ticks); s1=$(date +%s.%N)
  M[$1.worker_cpu]=$(awk -v a="$C_W0" -v b="$w1" -v s0="$C_S0" -v s1="$s1" -v hz="$CLK_TCK" \
                      'BEGIN{ if (a == "" || b == "") print "?"; else printf "%.0f", 100 * (b - a) / hz / (s1 - s0) }')
  M[$1.machine_cpu]=$(awk -v b0="$C_B0" -v t0="$C_T0" -v b1="$b1" -v t1="$t1" -v n="$(nproc)" \
                      'BEGIN{ printf "%.0f", 100 * n * (b1 - b0) / (t1 - t0) }')
}

# Commit records in the WAL between two LSNs (how many requests share a commit).
wal_commits() {
  as_pg "$PGBIN/pg_waldump" -p "$WORK/pg/data/pg_wal" -s "$1" -e "$2" -r Transaction --stats=record 2>/dev/null \
    | awk '$1 == "Transaction/COMMIT" {print $2; found=1} END {if (!found) print "?"}'
}

lsn() { q "SELECT pg_current_wal_insert_lsn()"; }

# BENCH_PROFILE: function statistics since profile_begin (the worker flushes
# its statistics at most once a second, in its loop: wait that second, then
# make it turn once with a health request).
profile_begin() { [ -z "${BENCH_PROFILE:-}" ] || q "SELECT pg_stat_reset()" >/dev/null; }
profile_end() {
  [ -n "${BENCH_PROFILE:-}" ] || return 0
  sleep 1.1
  curl -s -o /dev/null -m 5 "http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0/health"
  sleep 0.3
  M[$1.profile]=$(psql -Xq -P footer=off -c "
    SELECT funcname AS function, calls, round(self_time) AS self_ms, round(total_time) AS total_ms,
           round((self_time * 1000 / nullif(calls, 0))::numeric, 1) AS self_us_per_call
      FROM pg_stat_user_functions WHERE calls > 0 ORDER BY self_time DESC LIMIT 8" | sed '/^ *$/d; s/^/    /')
}

# The pgbench baseline's table and script: one forecast row per transaction,
# a jsonb payload the size of an emergency body.
q "CREATE TABLE bench_forecast (id bigserial PRIMARY KEY, group_id text NOT NULL, request_id text NOT NULL UNIQUE,
                                received_at timestamptz NOT NULL DEFAULT now(), payload jsonb NOT NULL)" || exit 1
{
  echo "\\set g random(1, $GROUPS_N)"
  printf "INSERT INTO bench_forecast (group_id, request_id, payload) VALUES ('BP' || :g, md5(random()::text), '%s');\n" \
    "$(head -n 1 "$WORK/emergency.bodies" | sed "s/'/''/g")"
} > "$WORK/pgbench.sql"
# ---------------------------------------------------------------- notify
note "notify latency: $NOTIFY_N sequential forecasts, idle (before any load)"
if "$WORK/notify_latency" "$WORKER_URL" "$TOKEN" "$WORK/notify.template" "$NOTIFY_N" "$NOTIFY_WARMUP" "nl$RUN_ID" \
     "$WORK/notify.dump" >"$WORK/notify.out" 2>&1; then
  for kv in $(sed -n 's/^RESULT //p' "$WORK/notify.out"); do M[notify.${kv%%=*}]=${kv#*=}; done
  # the slowest few, and when they were sent: a rhythm points at timers, none at the disk
  M[notify.slowest]=$(sort -k3,3nr "$WORK/notify.dump" | head -n 5 |
                      awk '{printf "%s%.2f ms at +%.0f ms", (NR > 1 ? ", " : ""), $3 / 1000, $2}')
else
  fail "notify latency: $(tr '\n' ' ' < "$WORK/notify.out")"
fi

# For scale: one client committing one forecast row at a time, idle (the
# floor under any request → commit → NOTIFY latency).
if timeout 60 pgbench -n -M prepared -c 1 -t "$NOTIFY_N" -f "$WORK/pgbench.sql" -l --log-prefix="$WORK/pgb1" \
     >"$WORK/pgbench1.out" 2>&1; then
  read -r "M[commit1.p50]" "M[commit1.p99]" < <(cat "$WORK"/pgb1.* | awk '{print $3}' | sort -n | awk '
    {v[NR] = $1} END {i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999); print v[i50], v[i99]}')
else
  fail "pgbench (1 client): exit $? ($(tail -n 3 "$WORK/pgbench1.out" | tr '\n' ' '))"
fi
q "TRUNCATE bench_forecast" >/dev/null

# ---------------------------------------------------------------- inbound
note "baseline: nginx 204 (emergency and day-ahead bodies)"
run_wrk nginx_emergency "$NGINX_URL" "$WORK/emergency.bodies" "ne$RUN_ID" "$TOKEN"
run_wrk nginx_day "$NGINX_URL" "$WORK/day.bodies" "nd$RUN_ID" "$TOKEN"

note "baseline: pgbench, one forecast row per transaction, $CONNS clients"
q "CHECKPOINT" >/dev/null
PGB_T=$(( (N + CONNS - 1) / CONNS ))
timeout 180 pgbench -n -M prepared -c "$CONNS" -j 2 -t "$PGB_T" -f "$WORK/pgbench.sql" >"$WORK/pgbench.out" 2>&1 \
  || fail "pgbench: exit $? ($(tail -n 3 "$WORK/pgbench.out" | tr '\n' ' '))"
M[pgbench.tps]=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$WORK/pgbench.out")
M[pgbench.lat]=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$WORK/pgbench.out")
M[pgbench.rows]=$(q "SELECT count(*) FROM bench_forecast")
[ "${M[pgbench.rows]}" = $((PGB_T * CONNS)) ] || fail "pgbench: ${M[pgbench.rows]} rows, $((PGB_T * CONNS)) expected"
[ -n "${M[pgbench.tps]}" ] || { fail "pgbench: no tps in its output"; M[pgbench.tps]=0; }

# worker_burst NAME KIND BODIES BLOCKS TAG (TAG: X-Request-ID prefix, unique)
worker_burst() {
  local name=$1 kind=$2 bodies=$3 blocks=$4 tag=$5$RUN_ID lsn0 lsn1 t0 n
  note "worker: $N $kind forecasts"
  q "CHECKPOINT" >/dev/null
  lsn0=$(lsn)
  profile_begin
  cpu_begin
  run_wrk "$name" "$WORKER_URL" "$bodies" "$tag" "$TOKEN"
  cpu_end "$name"
  # a 204 means committed: every receipt is there now
  n=$(q "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE '$tag-%'")
  M[$name.receipts]=$n
  [ "$n" = "$N" ] || fail "$name: $n messages stored (elmo_received_message), $N expected"
  t0=$SECONDS
  if [ "$n" = 0 ]; then
    :   # nothing to wait for: already failed
  elif ! wait_sql "(SELECT count(*) FROM capacity_forecast WHERE request_id LIKE '$tag-%') >= $N" "$APPLY_WAIT"; then
    fail "$name: not all forecasts applied within ${APPLY_WAIT}s ($(q "SELECT string_agg(state || ' ' || c, ', ') FROM (SELECT state, count(*) c FROM elmo_received_message WHERE request_id LIKE '$tag-%' GROUP BY 1) s"))"
  fi
  M[$name.apply_lag]=$((SECONDS - t0))
  read -r "M[$name.forecasts]" "M[$name.kind_ok]" "M[$name.blocks]" < <(q "
    SELECT count(*), count(*) FILTER (WHERE kind = '$kind'), (SELECT count(*) FROM capacity_forecast_block b
             JOIN capacity_forecast f ON f.id = b.forecast_id WHERE f.request_id LIKE '$tag-%')
      FROM capacity_forecast WHERE request_id LIKE '$tag-%'" | tr '|' ' ')
  [ "${M[$name.forecasts]}" = "$N" ] || fail "$name: ${M[$name.forecasts]} rows in capacity_forecast, $N expected"
  [ "${M[$name.kind_ok]}" = "$N" ] || fail "$name: ${M[$name.kind_ok]} of ${M[$name.forecasts]} forecasts classified $kind"
  [ "${M[$name.blocks]}" = $((N * blocks)) ] || fail "$name: ${M[$name.blocks]} blocks, $((N * blocks)) expected"
  lsn1=$(lsn)
  M[$name.commits]=$(wal_commits "$lsn0" "$lsn1")
  M[$name.wal_mb]=$(q "SELECT round(pg_wal_lsn_diff('$lsn1', '$lsn0') / 1048576.0)")
  profile_end "$name"
}

worker_burst worker_emergency emergency "$WORK/emergency.bodies" 1 we
worker_burst worker_day day_ahead "$WORK/day.bodies" 24 wd

# ---------------------------------------------------------------- outbound
note "baseline: wrk against nginx with update_group_measurements bodies"
run_wrk nginx_usage "$NGINX_ELMO/update_group_measurements" "$WORK/usage.bodies" "nu$RUN_ID" ELMO-SIDE-TOKEN

OUT_WHY=
outbound() {
  local probe state before out
  q "UPDATE elmo_registration SET elmo_base_url = '$NGINX_ELMO', connected = true; SELECT _elmo_kick()" >/dev/null \
    || { OUT_WHY="cannot point the registration at nginx"; return; }
  # one message first: is delivery there at all?
  if ! probe=$(q "SELECT elmo_report_usage('probe', 0, now())" 2>"$WORK/outbound.err"); then
    OUT_WHY="elmo_report_usage failed: $(head -n 1 "$WORK/outbound.err")"; return
  fi
  if ! wait_sql "(SELECT state IN ('delivered', 'failed') FROM elmo_outbox WHERE id = $probe)" 15; then
    OUT_WHY="a single message was not delivered within 15 s ($(q "SELECT state || ', attempts ' || attempts || ', ' || coalesce(last_error, '') FROM elmo_outbox WHERE id = $probe"))"
    return
  fi
  state=$(q "SELECT state || ' ' || coalesce(last_status::text, '-') || ' ' || coalesce(last_error, '') FROM elmo_outbox WHERE id = $probe")
  [ "${state%% *}" = delivered ] || { OUT_WHY="a single message ended $state"; return; }

  note "outbound: $N elmo_report_usage() in one transaction"
  before=$(q "SELECT coalesce(max(id), 0) FROM elmo_outbox")
  q "CHECKPOINT" >/dev/null
  profile_begin
  cpu_begin
  # commit time taken in the same session, right after COMMIT
  out=$(psql -XAtq -v ON_ERROR_STOP=1 2>"$WORK/outbound.err" <<SQL
SELECT extract(epoch FROM clock_timestamp());
BEGIN;
-- each group's first reading warns that ELMO never assigned it capacity: not what is measured
SET LOCAL client_min_messages = error; SET LOCAL log_min_messages = error;
SELECT count(elmo_report_usage('G' || i, i, now())) FROM generate_series(1, $N) i;
COMMIT;
SELECT extract(epoch FROM clock_timestamp());
SQL
) || { cpu_end outbound; OUT_WHY="queuing failed: $(head -n 1 "$WORK/outbound.err")"; return; }
  M[outbound.t_begin]=$(sed -n 1p <<<"$out")
  M[outbound.t_commit]=$(sed -n 3p <<<"$out")
  if ! wait_sql "(SELECT count(*) FROM elmo_outbox WHERE id > $before AND state IN ('delivered', 'failed')) >= $N" "$APPLY_WAIT"; then
    cpu_end outbound
    fail "outbound: not all $N messages delivered within ${APPLY_WAIT}s ($(q "SELECT string_agg(state || ' ' || c, ', ') FROM (SELECT state, count(*) c FROM elmo_outbox WHERE id > $before GROUP BY 1) s"))"
    OUT_WHY="not all messages delivered within ${APPLY_WAIT}s"
    return
  fi
  cpu_end outbound
  profile_end outbound
  read -r "M[outbound.delivered]" "M[outbound.failed]" "M[outbound.t_last]" "M[outbound.attempts]" < <(q "
    SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'failed'),
           extract(epoch FROM max(delivered_at)), sum(attempts)
      FROM elmo_outbox WHERE id > $before" | tr '|' ' ')
  [ "${M[outbound.delivered]}" = "$N" ] || fail "outbound: ${M[outbound.delivered]} of $N delivered, ${M[outbound.failed]} failed"
  M[outbound.rate]=$(awk -v n="$N" -v a="${M[outbound.t_commit]}" -v b="${M[outbound.t_last]}" 'BEGIN{printf "%.0f", n / (b - a)}')
  M[outbound.secs]=$(awk -v a="${M[outbound.t_commit]}" -v b="${M[outbound.t_last]}" 'BEGIN{printf "%.3f", b - a}')
  M[outbound.queue_secs]=$(awk -v a="${M[outbound.t_begin]}" -v b="${M[outbound.t_commit]}" 'BEGIN{printf "%.2f", b - a}')
}
outbound

# ---------------------------------------------------------------- report
ms() { awk -v u="$1" 'BEGIN{ if (u == "") print "-"; else printf "%.2f", u / 1000 }'; }
num() { awk -v x="$1" 'BEGIN{ if (x == "" || x == "?") print "-"; else printf "%\047.0f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
goal() {   # goal LABEL VALUE TARGET [less]
  local v=$2 t=$3 ok
  if [ -z "$v" ] || [ "$v" = "-" ]; then ok="not measured"
  elif [ "${4:-}" = less ]; then ok=$(awk -v v="$v" -v t="$t" 'BEGIN{print (v + 0 < t + 0) ? "met" : "NOT met"}')
  else ok=$(awk -v v="$v" -v t="$t" 'BEGIN{print (v + 0 >= t + 0) ? "met" : "NOT met"}'); fi
  printf '  %-50s %s\n' "$1" "$ok"
}
rps() { awk -v x="${W[$1.rps]:-}" 'BEGIN{ if (x == "") print ""; else printf "%.0f", x }'; }
row() {   # row LABEL NAME
  printf '  %-36s %9s %9s %9s %8s\n' "$1" "$(num "$(rps "$2")")" "$(ms "${W[$2.p50_us]:-}")" \
    "$(ms "${W[$2.p99_us]:-}")" "${W[$2.non204]:--}"
}
per_commit() { awk -v n="$N" -v c="$1" 'BEGIN{ if (c == "" || c == "?" || c + 0 == 0) print "?"; else printf "%.1f", n / c }'; }

RES_E=$(rps worker_emergency); RES_D=$(rps worker_day)
{
  echo "elmo_oscp benchmark  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  $(nproc) cores  git $(git describe --always --dirty 2>/dev/null || echo '?')"
  echo "  cluster: ${PG_SETTINGS[*]}"
  echo "  load: $N requests per row, $CONNS keep-alive connections, wrk -t$WRK_THREADS; $GROUPS_N group ids per burst"
  echo
  echo "inbound: POST update_group_capacity_forecast"
  printf '  %-36s %9s %9s %9s %8s\n' "" "req/s" "p50 ms" "p99 ms" "non-204"
  row "nginx 204, emergency body (ceiling)" nginx_emergency
  row "nginx 204, day-ahead body (ceiling)" nginx_day
  printf '  %-36s %9s %9s %9s %8s  (latency avg %s ms)\n' "pgbench, 1 row/commit, $CONNS clients" "$(num "${M[pgbench.tps]}")" \
    - - - "${M[pgbench.lat]:--}"
  row "worker, emergency (1 block)" worker_emergency
  row "worker, day-ahead (24 blocks)" worker_day
  echo
  echo "  ratios   emergency: worker/nginx $(ratio "$RES_E" "$(rps nginx_emergency)"), worker/pgbench $(ratio "$RES_E" "${M[pgbench.tps]}")"
  echo "           day-ahead: worker/nginx $(ratio "$RES_D" "$(rps nginx_day)"), worker/pgbench $(ratio "$RES_D" "${M[pgbench.tps]}")"
  for k in worker_emergency worker_day; do
    printf '  %-9s commits %s (%s forecasts/commit), WAL %s MB, worker CPU %s%% of a core, machine %s%% of %s%%, stored->applied %ss\n' \
      "${k#worker_}" "$(num "${M[$k.commits]:-}")" "$(per_commit "${M[$k.commits]:-}")" "${M[$k.wal_mb]:--}" \
      "${M[$k.worker_cpu]:-?}" "${M[$k.machine_cpu]:-?}" "$(( $(nproc) * 100 ))" "${M[$k.apply_lag]:--}"
  done
  echo
  echo "notify: POST -> LISTENing client's NOTIFY, idle, $NOTIFY_N sequential requests"
  if [ -n "${M[notify.n]:-}" ]; then
    echo "  NOTIFY p50 $(ms "${M[notify.notify_p50_us]}") ms, p99 $(ms "${M[notify.notify_p99_us]}") ms, max $(ms "${M[notify.notify_max_us]}") ms;" \
         "204 p50 $(ms "${M[notify.http_p50_us]}") ms, p99 $(ms "${M[notify.http_p99_us]}") ms; NOTIFY before 204: ${M[notify.notify_before_204]} of ${M[notify.n]}"
  else
    echo "  not measured (see failures)"
  fi
  [ -n "${M[notify.slowest]:-}" ] && echo "  slowest NOTIFYs: ${M[notify.slowest]}"
  echo "  for scale: one pgbench client inserting a forecast row per commit, idle: p50 $(ms "${M[commit1.p50]:-}") ms, p99 $(ms "${M[commit1.p99]:-}") ms"
  echo
  echo "outbound: $N elmo_report_usage() in one transaction -> nginx 204"
  if [ -z "$OUT_WHY" ]; then
    printf '  %-36s %9s\n' "" "msgs/s"
    printf '  %-36s %9s   (p50 %s ms, p99 %s ms)\n' "wrk -> nginx, same bodies (ceiling)" "$(num "$(rps nginx_usage)")" \
      "$(ms "${W[nginx_usage.p50_us]:-}")" "$(ms "${W[nginx_usage.p99_us]:-}")"
    printf '  %-36s %9s   (%s s from commit to the last delivered)\n' "worker, commit -> all delivered" \
      "$(num "${M[outbound.rate]}")" "${M[outbound.secs]}"
    echo "  ratio worker/wrk $(ratio "${M[outbound.rate]}" "$(rps nginx_usage)"); queuing took ${M[outbound.queue_secs]} s;" \
         "attempts ${M[outbound.attempts]}; worker CPU ${M[outbound.worker_cpu]:-?}% of a core, machine ${M[outbound.machine_cpu]:-?}%"
  else
    echo "  outbound: not measured: $OUT_WHY"
    printf '  %-36s %9s\n' "wrk -> nginx, same bodies (ceiling)" "$(num "$(rps nginx_usage)")"
  fi
  if [ -n "${BENCH_PROFILE:-}" ]; then
    echo
    echo "profile (track_functions = all: slower than the figures above would be)"
    for k in worker_emergency worker_day outbound; do
      [ -n "${M[$k.profile]:-}" ] && { echo "  $k"; echo "${M[$k.profile]}"; }
    done
  fi
  echo
  echo "goals"
  goal "inbound emergency >= 5,000 forecasts/s" "$RES_E" 5000
  goal "inbound emergency >= pgbench rate" "$RES_E" "${M[pgbench.tps]}"
  goal "inbound day-ahead >= 2,500 forecasts/s (design)" "$RES_D" 2500
  goal "notify p99 < 5 ms (idle)" "$(ms "${M[notify.notify_p99_us]:-}")" 5 less
  goal "outbound >= 5,000 messages/s" "$([ -z "$OUT_WHY" ] && echo "${M[outbound.rate]:-}")" 5000
  echo
  if [ ${#FAIL[@]} -eq 0 ]; then
    echo "correctness: ok ($N answered 204 and stored per kind, blocks complete, every NOTIFY seen$([ -z "$OUT_WHY" ] && echo ", every message delivered"))"
  else
    echo "correctness: FAILED"
    printf '  - %s\n' "${FAIL[@]}"
  fi
  echo "runtime $((SECONDS - T_START)) s"
} > "$WORK/report.txt"

mkdir -p bench/results
cp "$WORK/report.txt" bench/results/latest.txt
echo
cat "$WORK/report.txt"
if [ ${#FAIL[@]} -ne 0 ]; then
  echo "server log tail ($WORK/pg/server.log):"; tail -n 30 "$WORK/pg/server.log"
  exit 1
fi
exit 0
