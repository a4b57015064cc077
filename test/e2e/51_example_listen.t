# The example CSMS's LISTEN client (examples/listen.sh) prints each forecast ELMO sends,
# the per-charger limits the example's trigger computed (and their OCPP SetChargingProfile),
# and the limits in force when an emergency's window begins and ends (on the extension's
# elmo_capacity_changed, not by polling).
. "$(dirname "$0")/tap.sh"
plan 13
export PGOPTIONS='-c client_min_messages=warning'
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
OUT=$(mktemp /tmp/e2e51_listen.XXXXXX)
LPID=
cleanup() {
  [ -n "$LPID" ] && kill "$LPID" 2>/dev/null && wait "$LPID" 2>/dev/null
  psql -Xq -c "DROP SCHEMA IF EXISTS csms CASCADE" -c "SELECT test.reset()" >/dev/null 2>&1
  rm -f "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# poll the client's output for a line matching an extended regex (deadline in seconds)
wait_out() {
  local deadline=$((SECONDS + ${2:-15}))
  until grep -Eq -- "$1" "$OUT"; do
    [ $SECONDS -ge $deadline ] && { diag "no line matching: $1"; sed 's/^/#   /' "$OUT" | tail -n 20; return 1; }
    sleep 0.1
  done
}
post() {   # post BODY-SQL REQUEST-ID -> HTTP status
  http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $TOKEN" -H "X-Request-ID: $2" \
              --data-binary "$(sql "SELECT $1")" "$FP/update_group_capacity_forecast"
}

psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
TOKEN=$(sql "SELECT test.fake_registration()")
psql -Xq -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS csms CASCADE" -f "$TOP/examples/csms.sql" \
     -c "INSERT INTO csms.station VALUES ('EX-L1', 'listen test')" \
     -c "INSERT INTO csms.charger (charger_id, station_id, max_kw) VALUES ('EX-L1-A', 'EX-L1', 11), ('EX-L1-B', 'EX-L1', 50)" >/dev/null
ok $? "examples/csms.sql loaded, one station with an 11 kW and a 50 kW charger"

PGAPPNAME=e2e51-listen "$TOP/examples/listen.sh" --ocpp --poll 0.1 >"$OUT" 2>&1 &
LPID=$!
wait_out '^[0-9:]+ listening on database'
ok $? "listen.sh is listening"
wait_out 'EX-L1-B +[0-9.]+ kW .*\(no ELMO limit\)'
ok $? "it starts with the limits in force: no ELMO limit yet"

tomorrow=$(sql "SELECT _elmo_local_day(now()) + 1")
is "$(post "test.day_body('EX-L1', '$tomorrow', 40)" E2E51-DAY-1)" 204 "ELMO's day-ahead for tomorrow, 40 kW, posted to the worker"
fid=$(sql "SELECT id FROM capacity_forecast WHERE request_id = 'E2E51-DAY-1'")
wait_out "ELMO forecast #$fid \(day_ahead\) for group EX-L1, day $tomorrow"
ok $? "it prints the forecast notification"
wait_out "new limits for station EX-L1 on $tomorrow \(day_ahead, 2 rows\)"
ok $? "and that new limits were computed for that day"
wait_out 'EX-L1-A +\(max 11 kW\) +00:00-24:00 11\.0 kW/15\.9 A' && wait_out 'EX-L1-B +\(max 50 kW\) +00:00-24:00 29\.0 kW/42\.0 A'
ok $? "the per-charger limits: 11 kW (its max) and the remaining 29 kW"
wait_out 'SetChargingProfile -> EX-L1-B: \{'
prof=$(grep -m1 -o 'SetChargingProfile -> EX-L1-B: .*' "$OUT" | sed 's/^SetChargingProfile -> EX-L1-B: //')
# numbers compared by value: jq 1.7 keeps their spelling (29000.0), 1.6 does not
is "$(jq -c '.csChargingProfiles | [.chargingProfilePurpose, .chargingSchedule.chargingRateUnit, .chargingSchedule.chargingSchedulePeriod]
             | walk(if type == "number" then . + 0 else . end)' <<<"$prof" 2>&1)" \
   '["ChargePointMaxProfile","W",[{"limit":29000,"startPeriod":0}]]' "and the OCPP SetChargingProfile it would send"

is "$(post "test.emergency_body('EX-L1', now() + interval '1 s', now() + interval '3 s', 10)" E2E51-EM-1)" 204 \
   "an emergency: 10 kW, starting in a second, for two seconds"
wait_out 'capacity in force for group EX-L1: 10 KW \(emergency\)' 15
ok $? "when its window begins, elmo_capacity_changed: 10 KW (emergency)"
wait_out 'EX-L1-B +5\.0 kW +[0-9.]+ A +\(emergency\)' 15
ok $? "and the limits in force are printed: 5 kW each"
deadline=$((SECONDS + 15))
until [ "$(awk '/EX-L1-B .*\(emergency\)/ { e = 1 } e && /EX-L1-B .*\(no ELMO limit\)/ { print "yes"; exit }' "$OUT")" = yes ]; do
  [ $SECONDS -ge $deadline ] && break
  sleep 0.1
done
[ $SECONDS -lt $deadline ]
ok $? "when it ends, they are printed again: no ELMO limit"

kill "$LPID"; wait "$LPID"; rc=$?; LPID=
wait_sql "NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'e2e51-listen')" 10; gone=$?
[ $rc -eq 0 ] && [ $gone -eq 0 ]
ok $? "SIGTERM: it exits 0 and closes its connection"
