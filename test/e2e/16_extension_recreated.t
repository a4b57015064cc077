# The worker keeps its statements planned; DROP EXTENSION and CREATE EXTENSION
# in another schema, while it runs, must leave it serving both directions with
# the new objects: the plans follow the functions and the search_path.
. "$(dirname "$0")/tap.sh"
plan 7
SIM=http://127.0.0.1:$ELMO_SIM_PORT
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
G=B6734_AE0100_00848825118       # one of the simulator's stations
restore() {
  # whatever the test left registered goes: the drop guard is told so
  PGOPTIONS='-c client_min_messages=warning -c elmo_oscp.allow_drop_registered=on' \
    psql -Xq -c "DROP EXTENSION IF EXISTS elmo_oscp" \
    -c "DROP SCHEMA IF EXISTS e2e16 CASCADE" -c "CREATE EXTENSION elmo_oscp" >/dev/null 2>&1
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
}
trap restore EXIT
export PGOPTIONS='-c client_min_messages=error'     # http:// public URL: elmo_register warns

# register with the simulator, a usage report out, a forecast in: every statement planned
serve_both_ways() {   # serve_both_ways TAG: "ok" when both directions work
  local u rid body deadline
  sql "SELECT test.reset()" >/dev/null
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
  sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
  wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 20 || { echo "not registered"; return; }
  u=$(sql "SELECT elmo_report_usage('$G', 500)")
  wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $u)" 20 || { echo "usage report not delivered"; return; }
  body=$(sql "SELECT test.emergency_body('$G', now() + interval '20 min', now() + interval '1 hour', 33)")
  rid=E2E16-$1
  deadline=$((SECONDS + 15))
  until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $(sql "SELECT test.token()")" \
            -H "X-Request-ID: $rid" --data-binary "$body" "$FP/update_group_capacity_forecast")" = 204 ]; do
    [ $SECONDS -ge $deadline ] && { echo "forecast not answered 204"; return; }
    sleep 0.1
  done
  [ "$(sql "SELECT count(*) FROM capacity_forecast WHERE request_id = '$rid'")" = 1 ] || { echo "forecast not stored"; return; }
  echo ok
}

psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
is "$(serve_both_ways BEFORE)" ok "before: a usage report delivered, a forecast answered 204 and stored"
# what the worker says in the server log from now on (/health is liveness only)
LOG=$ELMO_TEST_WORK/pg/server.log
L0=$(stat -c %s "$LOG")
logged() {   # logged PATTERN: poll the log since L0 for it, 15 s at most
  local deadline=$((SECONDS + 15))
  until tail -c +$((L0 + 1)) "$LOG" | grep -q -- "$1"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.1; done
}

sql "SELECT test.reset()" >/dev/null
sql "DROP EXTENSION elmo_oscp" >/dev/null
ok $? "DROP EXTENSION while the worker runs"
logged 'extension dropped, waiting for CREATE EXTENSION'
ok $? "the worker noticed: the log says it waits for CREATE EXTENSION"

sql "CREATE SCHEMA e2e16; CREATE EXTENSION elmo_oscp SCHEMA e2e16" >/dev/null
ok $? "CREATE EXTENSION again, in another schema"
export PGOPTIONS="$PGOPTIONS -c search_path=e2e16,public"
logged 'found in schema e2e16, serving OSCP'
ok $? "the worker found it"
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
is "$(serve_both_ways AFTER)" ok "after: a usage report delivered, a forecast answered 204 and stored"
is "$(sql "SELECT count(*) FROM e2e16.capacity_forecast WHERE request_id = 'E2E16-AFTER'")" 1 "in the new schema's tables"
