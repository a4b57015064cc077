# elmo-sim --clock starts ELMO's day where a test or a developer wants it, and it runs on from
# there.  Through the real path: a private simulator started at 09:59:56 on a fixed day sends
# its scheduled 10:00 assignment to the worker; an adjust request for the next day is accepted
# on that clock; moved to 15:59:57, the simulator's 16:00 reply reaches the worker and becomes
# the plan.  The HH:MM form starts at that local time today.  Dates are fixed, so the test does
# not depend on when it runs (the cluster keeps its real clock; the day is passed explicitly).
. "$(dirname "$0")/tap.sh"
plan 9
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
G=B6734_AE0100_00848825118
W=$(mktemp -d /tmp/elmo_simclock.XXXXXX)
SIM2_PID=
cleanup() {
  sim_stop
  [ -n "$SIM2_PID" ] && kill "$SIM2_PID" 2>/dev/null && wait "$SIM2_PID" 2>/dev/null
  sql "SELECT test.reset()" >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export SIM_LOG=$W/sim.log
sim_start "$(free_port 24500)" --allow-local-urls --handshake-delay-ms 200 --stations "$G=250" \
  --clock 2030-06-01T09:59:56+08:00
sim=http://127.0.0.1:$SIM_PORT
is "$(curl -s "$sim/sim/clock" | jq -r '.now[0:16]')" "2030-06-01T09:59" "started with --clock 2030-06-01T09:59:56+08:00"

sql "SELECT test.reset()" >/dev/null
psql -XAtq -v ON_ERROR_STOP=1 -c "SET client_min_messages = error" \
     -c "SELECT elmo_register('$sim/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT connected FROM elmo_registration)" 20; ok $? "the worker registered with it and is connected"

wait_sql "EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = '$G' AND kind = 'day_ahead')" 30
is "$(sql "SELECT f.forecast_day || ' ' || count(*) || ' ' || min(b.capacity) || ' ' || max(b.capacity)
             FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
            WHERE f.group_id = '$G' AND f.kind = 'day_ahead' GROUP BY f.forecast_day")" "2030-06-02 24 250 250" \
   "at 10:00 on its clock, the scheduled assignment for 2030-06-02 (24 hours of 250 kW) reached the worker"
is "$(curl -s "$sim/sim/callbacks?kind=assign" | jq -r '[.[] | select(.ok) | .queued_at[0:16]] | join(",")')" "2030-06-01T10:00" \
   "sent by the schedule at 10:00 simulated time"

id=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET elmo_oscp.enforce_deadlines = off" \
          -c "SELECT elmo_adjust_capacity('$G', 300, '2030-06-02')")
is "$(sql "SELECT elmo_wait($id, '20s')")" delivered "an adjust request for 2030-06-02 is accepted on the simulator's clock (before 14:05)"
is "$(curl -s "$sim/sim/state" | jq -r --arg g "$G" '.negotiations[$g][0].status')" EXTRA_REPLY_EDIT \
   "the simulator waits to answer it"

curl -s -o /dev/null -X POST "$sim/sim/clock" -d '{"now":"2030-06-01T15:59:57+08:00"}'
wait_sql "EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = '$G' AND kind = 'additional_reply')" 30
is "$(sql "SELECT elmo_capacity_at('$G', '2030-06-02 12:00+08') || ' ' || (SELECT state FROM elmo_adjust_request WHERE group_id = '$G')")" \
   "300 answered" "moved to 15:59:57, its 16:00 reply reached the worker: 300 kW is tomorrow's plan"

# the HH:MM form: that local time today (ELMO's zone), running on; /sim/reset returns to it
"$TOP/sim/elmo-sim" --listen 127.0.0.1 --port 0 --port-file "$W/port2" --no-schedule --clock 13:30 >"$W/sim2.log" 2>&1 &
SIM2_PID=$!
deadline=$((SECONDS + 10))
until [ -s "$W/port2" ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
sim2=http://127.0.0.1:$(cat "$W/port2")
is "$(curl -s "$sim2/sim/clock" | jq -r '.now[10:16] + .now[23:]')" "T13:30+08:00" "--clock 13:30 starts at 13:30 in ELMO's zone"
curl -s -o /dev/null -X POST "$sim2/sim/clock" -d '{"advance_seconds":7200}'
curl -s -o /dev/null -X POST "$sim2/sim/reset"
is "$(curl -s "$sim2/sim/clock" | jq -r '.now[10:18]')" "T13:30:0" "POST /sim/reset puts it back at 13:30, not on the real clock"
