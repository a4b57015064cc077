# Calls that ELMO would refuse or a unit mistake get a WARNING at the call:
# an adjust request 1,000 times ELMO's assignment (W typed as kW), a usage
# report for a group ELMO never assigned capacity to.  Each call is rolled
# back: nothing is sent.
. "$(dirname "$0")/tap.sh"
plan 6
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
trap 'sql "SELECT test.reset()" >/dev/null 2>&1' EXIT
export PGOPTIONS='-c client_min_messages=warning'
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
TOKEN=$(sql "SELECT test.fake_registration()")
tomorrow=$(sql "SELECT _elmo_local_day(now()) + 1")
deadline=$((SECONDS + 15))
until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $TOKEN" -H 'X-Request-ID: E2E52-DAY' \
          --data-binary "$(sql "SELECT test.day_body('WARN-G1', '$tomorrow', 200)")" "$FP/update_group_capacity_forecast")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
is "$(sql "SELECT count(*) FROM capacity_forecast WHERE group_id = 'WARN-G1' AND kind = 'day_ahead'")" 1 "ELMO assigned 200 kW for tomorrow"

call() {   # call SQL: the messages the call raised, in the transaction it is rolled back in
  psql -X -q -v VERBOSITY=default -c "SET elmo_oscp.enforce_deadlines = off" -c BEGIN -c "$1" -c ROLLBACK 2>&1 >/dev/null \
    | grep -E '^(WARNING|ERROR|DETAIL|HINT):'
}
out=$(call "SELECT elmo_adjust_capacity('WARN-G1', 200000)")
echo "$out" | grep -q "^WARNING:  asking 200000 kW for 00:00 on $tomorrow: 1000 times the most ELMO assigned that day or the contract capacity (200 kW)"
ok $? "200,000 kW asked where ELMO assigned 200: a WARNING that names the hour and the factor"
echo "$out" | grep -q '^DETAIL:  Capacities are in kW; a value in W is 1,000 times too large'; ok $? "and says why"
is "$(call "SELECT elmo_adjust_capacity('WARN-G1', 250)")" "" "250 kW: no warning"

out=$(call "SELECT elmo_report_usage('WARN-NEVER-ASSIGNED', 1)")
echo "$out" | grep -q '^WARNING:  ELMO has assigned no capacity to group WARN-NEVER-ASSIGNED yet' \
  && [ -z "$(call "SELECT elmo_report_usage('WARN-G1', 1)")" ]
ok $? "a usage report for a group ELMO never assigned capacity to: a WARNING (none for one it did)"
is "$(call "SELECT elmo_report_usage('WARN-NEVER-2', 1); SELECT elmo_report_usage('WARN-NEVER-2', 2)" | grep -c '^WARNING')" 1 \
   "once per group: at its first reading, not at every report"
