#!/usr/bin/env bash
# make demo: every ELMO flow, end to end, with the public SQL API only.
#
# By default: a throw-away cluster with elmo_oscp and the bundled ELMO
# simulator, both clocks set to 11:00 Taipei time today (so the 14:00 rule
# lets the adjust request through whenever you run it).  Exits 0 only if
# every step checked out.
#
# Against a real ELMO testbed instead (no simulator, real clock):
#   ELMO_URL=https://elmo-oscp-testbed.plato-io.com/oscp/2.0 \
#   ELMO_INITIAL_TOKEN=... ELMO_PUBLIC_URL=https://csms.example.com/oscp/fp/2.0 \
#   ELMO_LISTEN_PORT=8780 ELMO_GROUP=<your station id> make demo
# (ELMO must reach ELMO_PUBLIC_URL, i.e. this machine's port ELMO_LISTEN_PORT
# behind https on 443.)
set -uo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
. test/lib.sh

bash test/deps.sh || exit 1
make -s >/dev/null && make -s sim >/dev/null && make -s install >/dev/null || { echo "build failed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/elmo_oscp_demo.XXXXXX)
chmod 755 "$WORK"; [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"
export SIM_LOG=$WORK/sim.log
cleanup() { sim_stop; cluster_stop fast; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pass() { printf '   \033[32mok\033[0m  %s\n' "$*"; }
fail() { printf '   \033[31mFAILED\033[0m  %s\n' "$*"; failures=$((failures + 1)); }
show() { psql -X -P pager=off -c "$1" | sed 's/^/   /'; }
val()  { psql -XAtq -c "$1"; }
check() { # check "description" "SQL boolean" [deadline seconds]
  if wait_sql "$2" "${3:-30}"; then pass "$1"; else fail "$1"; fi
}

if [ -n "${ELMO_URL:-}" ]; then
  MODE=testbed
  : "${ELMO_INITIAL_TOKEN:?set ELMO_INITIAL_TOKEN}" "${ELMO_PUBLIC_URL:?set ELMO_PUBLIC_URL}" "${ELMO_GROUP:?set ELMO_GROUP}"
  HTTP_PORT=${ELMO_LISTEN_PORT:-8780}
  LISTEN=0.0.0.0
  GROUP=$ELMO_GROUP
  PUBLIC_URL=$ELMO_PUBLIC_URL
else
  MODE=simulator
  HTTP_PORT=$(free_port 18880)
  SIM_PORT=$(free_port $((HTTP_PORT + 1)))
  LISTEN=127.0.0.1
  ELMO_URL=http://127.0.0.1:$SIM_PORT/oscp/2.0
  ELMO_INITIAL_TOKEN=ELMO-TESTBED-TOKEN
  GROUP=B6734_AE0100_00848825118
  PUBLIC_URL=http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0
  # 11:00 in Taipei today, ticking, for the cluster and the simulator.  The
  # cluster's clock is moved with datefudge (libfaketime does not reach the
  # background worker: see test/e2e/40_capture_replay.t).
  TODAY=$(TZ=Asia/Taipei date +%F)
  FUDGE=$(ls /usr/lib/*/datefudge/datefudge.so | head -n1)
  CL_ENV="LD_PRELOAD=$FUDGE DATEFUDGE=$(( $(date +%s) - $(date -d "$TODAY 11:00:00 +08:00" +%s) ))"
  export CL_ENV
fi

step "Set-up ($MODE): a throw-away cluster with elmo_oscp"
cluster_init "$WORK/pg" elmo_demo "$HTTP_PORT" \
  "elmo_oscp.listen_addresses = '$LISTEN'" \
  "elmo_oscp.public_url = '$PUBLIC_URL'" || exit 1
cluster_start || exit 1
as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_demo || exit 1
val "CREATE EXTENSION elmo_oscp" >/dev/null
wait_listener 30 >/dev/null && pass "worker listening on $PUBLIC_URL" || fail "worker not listening"
if [ $MODE = simulator ]; then
  sim_start "$SIM_PORT" --allow-local-urls --no-schedule --handshake-delay-ms 1000 || exit 1
  curl -s -X POST -H 'Content-Type: application/json' -d "{\"now\":\"${TODAY}T11:00:00+08:00\"}" \
       "http://127.0.0.1:$SIM_PORT/sim/clock" >/dev/null
  pass "ELMO simulator on $ELMO_URL; both clocks at $(val "SELECT to_char(now() AT TIME ZONE 'Asia/Taipei', 'YYYY-MM-DD HH24:MI')") Taipei time"
fi

# The CSMS side of the demo: the example CSMS (examples/csms.sql: stations,
# chargers, per-charger limits from a trigger on capacity_forecast), and a
# one-line log of what its trigger saw.
psql -Xq -v ON_ERROR_STOP=1 -f examples/csms.sql >/dev/null || fail "examples/csms.sql did not load"
val "INSERT INTO csms.station VALUES ('$GROUP', 'Demo station');
     INSERT INTO csms.charger (charger_id, station_id, max_kw) VALUES
       ('CP-1', '$GROUP', 50), ('CP-2', '$GROUP', 50), ('CP-3', '$GROUP', 22), ('CP-4', '$GROUP', 7.4);" >/dev/null
val "CREATE TABLE demo_csms_log (at timestamptz DEFAULT now(), forecast_id bigint, kind text,
                                 blocks int, starts timestamptz, capacity_then numeric);
     CREATE FUNCTION demo_csms_react() RETURNS trigger LANGUAGE plpgsql AS \$\$
     DECLARE first_start timestamptz; n int;
     BEGIN
       -- the blocks are already there when this AFTER INSERT trigger runs
       SELECT min(start_time), count(*) INTO first_start, n FROM capacity_forecast_block WHERE forecast_id = NEW.id;
       INSERT INTO demo_csms_log (forecast_id, kind, blocks, starts, capacity_then)
       VALUES (NEW.id, NEW.kind, n, first_start, elmo_capacity_at(NEW.group_id, greatest(now(), first_start)));
       RETURN NEW;
     END \$\$;
     CREATE TRIGGER demo_csms_react AFTER INSERT ON capacity_forecast
       FOR EACH ROW EXECUTE FUNCTION demo_csms_react();
     -- the trigger runs as the worker's role, elmo_oscp_worker: it may write the log
     GRANT INSERT ON demo_csms_log TO elmo_oscp_worker;" >/dev/null

step "1. Register: elmo_register(elmo_url, initial_token)"
id=$(val "SELECT elmo_register('$ELMO_URL', '$ELMO_INITIAL_TOKEN')")
pass "register queued as message $id; elmo_wait($id) -> $(val "SELECT elmo_wait($id, '20s')")"
check "ELMO called back with its own token: registration is 'registered'" \
      "(SELECT state FROM elmo_registration_status) = 'registered'" 30

step "2. Handshake: ELMO's handshake arrives, we acknowledge"
check "handshake_acknowledge delivered: connected" "(SELECT connected FROM elmo_registration_status)" 30
show "SELECT state, connected, elmo_base_url, our_token, elmo_token FROM elmo_registration_status"

step "3. Day-ahead assignment for tomorrow (10:00 in real life)"
if [ $MODE = simulator ]; then
  val "SELECT elmo_trigger_callback('update_group_capacity_forecast', 'negotiation_assign_capacity', '$GROUP', 100)" >/dev/null
fi
check "tomorrow's assignment received (kind day_ahead)" \
      "EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = '$GROUP' AND kind = 'day_ahead')" 60
show "SELECT start_time AT TIME ZONE 'Asia/Taipei' AS local_start, end_time AT TIME ZONE 'Asia/Taipei' AS local_end, capacity, unit, kind
        FROM elmo_capacity_schedule('$GROUP', _elmo_local_day(now()) + 1)"

step "4. Ask for more: elmo_adjust_capacity(group, 150) before 14:00, ELMO replies by 16:00"
id=$(val "SELECT elmo_adjust_capacity('$GROUP', 150)")
st=$(val "SELECT elmo_wait($id, '20s')")
[ "$st" = delivered ] && pass "adjust_group_capacity_forecast delivered (24 hourly blocks of 150 kW)" || fail "adjust: $st"
if [ $MODE = simulator ]; then
  val "SELECT elmo_trigger_callback('update_group_capacity_forecast', 'negotiation_reply_request_additional_capacity', '$GROUP', 150)" >/dev/null
fi
check "ELMO's reply received (kind additional_reply)" \
      "EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = '$GROUP' AND kind = 'additional_reply')" 60
check "tomorrow's plan is now 150 kW" \
      "elmo_capacity_at('$GROUP', _elmo_day_start(_elmo_local_day(now()) + 1) + interval '12 hours') = 150"

step "5. Emergency: a same-day forecast, applied at once"
if [ $MODE = simulator ]; then
  val "SELECT elmo_trigger_callback('update_group_capacity_forecast', 'emergency_assign_capacity', '$GROUP', 50)" >/dev/null
fi
check "emergency received and applied" \
      "EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = '$GROUP' AND kind = 'emergency')" 60
check "the capacity in force drops now: elmo_capacity_at(group) = 50 kW" "elmo_capacity_at('$GROUP') = 50"
show "SELECT group_id, capacity, kind, until AT TIME ZONE 'Asia/Taipei' AS until_local FROM elmo_capacity_now"

step "6. Cumulative energy, reported every interval by the worker (shortened to 5 s here)"
val "CREATE TABLE demo_meter (group_id text PRIMARY KEY, kwh numeric);
     INSERT INTO demo_meter VALUES ('$GROUP', 1000);
     CREATE VIEW demo_usage AS SELECT group_id, kwh FROM demo_meter;
     -- read with its owner's rights, never a superuser's: the CSMS's role owns it
     ALTER TABLE demo_meter OWNER TO elmo_oscp_csms;
     ALTER VIEW demo_usage OWNER TO elmo_oscp_csms;" >/dev/null
val "ALTER SYSTEM SET elmo_oscp.usage_source = 'demo_usage'" >/dev/null
val "ALTER SYSTEM SET elmo_oscp.report_interval = '5s'" >/dev/null
val "SELECT pg_reload_conf()" >/dev/null
pass "elmo_oscp.usage_source = 'demo_usage' (a view over the CSMS's meters), report_interval = 5s" 
check "a first automatic report delivered" \
      "(SELECT count(*) FROM elmo_outbox WHERE message = 'update_group_measurements' AND state = 'delivered') >= 1" 30
val "UPDATE demo_meter SET kwh = kwh + 12.5" >/dev/null
check "the next one carries the new reading (1012.5 kWh)" \
      "EXISTS (SELECT 1 FROM elmo_outbox WHERE message = 'update_group_measurements' AND state = 'delivered' AND body LIKE '%1012.5%')" 30
id=$(val "SELECT elmo_report_usage('$GROUP', 1013.25)")
st=$(val "SELECT elmo_wait($id, '20s')")
[ "$st" = delivered ] && pass "and one by hand: elmo_report_usage('$GROUP', 1013.25) -> $st" || fail "elmo_report_usage: $st"
show "SELECT id, message, state, attempts, last_status, delivered_at FROM elmo_outbox_status ORDER BY id DESC LIMIT 4"

step "7. The CSMS reacted to every forecast through its trigger on capacity_forecast"
check "the trigger ran for each forecast" \
      "(SELECT count(*) FROM demo_csms_log) = (SELECT count(*) FROM capacity_forecast)"
show "SELECT to_char(at AT TIME ZONE 'Asia/Taipei', 'HH24:MI:SS') AS local_time, forecast_id, kind, blocks,
             to_char(starts AT TIME ZONE 'Asia/Taipei', 'MM-DD HH24:MI') AS starts_local, capacity_then AS kw_when_it_starts
        FROM demo_csms_log ORDER BY at"

check "examples/csms.sql split the capacity in force over the station's chargers" \
      "(SELECT sum(limit_kw) FROM csms.limits_at(now()) WHERE station_id = '$GROUP') BETWEEN 49 AND 50"
show "SELECT charger_id, limit_kw AS kw_now, limit_a AS amps_per_phase, kind,
             to_char(valid_to AT TIME ZONE 'Asia/Taipei', 'MM-DD HH24:MI') AS until_local
        FROM csms.limits_at(now()) WHERE station_id = '$GROUP' ORDER BY charger_id"
show "SELECT charger_id, limit_kw AS kw_tomorrow_noon FROM csms.limits_at(_elmo_day_start(_elmo_local_day(now()) + 1) + interval '12 hours')
       WHERE station_id = '$GROUP' ORDER BY charger_id"

step "Status"
show "SELECT listening, requests_2xx, requests_4xx, messages_received, messages_sent, registration_state FROM elmo_status()"

if [ $failures -eq 0 ]; then
  printf '\n\033[32mEvery flow checked out.\033[0m\n'
  exit 0
fi
printf '\n\033[31m%d step(s) failed.\033[0m Server log: %s/pg/server.log (KEEP=1 keeps it)\n' "$failures" "$WORK"
exit 1
