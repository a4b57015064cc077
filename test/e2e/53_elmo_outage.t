# An ELMO outage, a lock-out and a failing usage_source are visible to the operator, through
# real HTTP between the worker and the simulator (the harness's, $ELMO_SIM_PORT):
#   1. ELMO drops every request: elmo_status() says elmo_reachable = f after 3 failed deliveries
#      in a row, with last_error, last_error_at and oldest_undelivered_age; the registration hint
#      no longer says "Connected"; one WARNING in the server log; the alert elmo_unreachable once
#      ELMO has been unreachable longer than elmo_oscp.unreachable_alert_after; /health still
#      answers {"status":"ok"} and nothing more.  ELMO back: reachable, one LOG line.
#   2. ELMO's 400: last_error says so.
#   3. ELMO's 401: locked out, last_error says so, one alert (WARNING + NOTIFY elmo_alert).
#   4. elmo_oscp.usage_source names nothing: last_error says so.
. "$(dirname "$0")/tap.sh"
plan 25
export PGOPTIONS='-c client_min_messages=error'
SIM=http://127.0.0.1:$ELMO_SIM_PORT
G1=B6734_AE0100_00848825118
LOG=$ELMO_TEST_WORK/pg/server.log
W=$(mktemp -d /tmp/elmo_outage.XXXXXX)

simctl() { curl -fsS -o /dev/null -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$SIM$2"; }
status() { sql "SELECT $1 FROM elmo_status()"; }
log_count() { tail -c +$((LOG0 + 1)) "$LOG" | grep -c -- "$1"; }
cleanup() {
  [ -n "${LPID:-}" ] && kill "$LPID" 2>/dev/null
  psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.usage_source" -c "ALTER SYSTEM RESET elmo_oscp.report_interval" \
       -c "ALTER SYSTEM RESET elmo_oscp.unreachable_alert_after" -c "SELECT pg_reload_conf()" -c "SELECT test.reset()" >/dev/null 2>&1
  curl -s -o /dev/null -X DELETE "$SIM/sim/fault"
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -I"$(pg_config --includedir)" -o "$W/listen_stamp" "$TOP/test/tools/listen_stamp.c" \
   -L"$(pg_config --libdir)" -lpq || { echo "Bail out! cannot build the LISTEN client"; exit 1; }
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sql "SELECT test.reset()" >/dev/null
simctl POST /sim/reset '{}'
"$W/listen_stamp" 120 elmo_alert > "$W/alerts" 2>"$W/listen.err" &
LPID=$!
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 15
ok $? "registered with the simulator, handshake acknowledged"
LOG0=$(stat -c %s "$LOG")

# ---------------------------------------------------------------- 1. ELMO drops every request
psql -Xq -c "ALTER SYSTEM SET elmo_oscp.unreachable_alert_after = '3s'" -c "SELECT pg_reload_conf()" >/dev/null
simctl POST /sim/fault '{"drop":true,"count":-1}'
u1=$(sql "SELECT elmo_report_usage('$G1', 1000.5)")
wait_sql "NOT (SELECT elmo_reachable FROM elmo_status())" 20
ok $? "ELMO drops every request: elmo_reachable = f"
is "$(status "last_error ~ 'update_group_measurements' AND last_error_at > now() - interval '30 s'")" t \
   "last_error names the message that could not be delivered, last_error_at is recent"
is "$(status "oldest_undelivered_age > interval '0' AND elmo_unreachable_since IS NOT NULL")" t \
   "oldest_undelivered_age and elmo_unreachable_since are set"
is "$(status "registration_state || ' ' || connected")" "registered true" "still registered and connected (readiness: reachable is the third part)"
hint=$(sql "SELECT hint FROM elmo_registration_status")
[[ $hint != *"Connected: messages flow both ways"* && $hint == *"not been reachable"* ]]
ok $? "the registration hint says ELMO is not reachable: $hint"
body=$(curl -s "http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/health")
is "$body" '{"status":"ok"}' "/health: ok, and nothing about the registration"
wait_sql "EXISTS (SELECT 1 FROM elmo_alerts WHERE alert = 'elmo_unreachable')" 20
ok $? "unreachable longer than unreachable_alert_after (3 s): alert elmo_unreachable"
deadline=$((SECONDS + 5))
until grep -q '"alert" : "elmo_unreachable"' "$W/alerts" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
grep -q '"alert" : "elmo_unreachable"' "$W/alerts"
ok $? "... NOTIFY elmo_alert heard"
wait_sql "(SELECT attempts >= 5 FROM elmo_outbox WHERE id = $u1)" 30
is "$(log_count 'ELMO is unreachable:')" 1 "one WARNING in the server log, however many deliveries fail"
is "$(log_count 'alert elmo_unreachable')" 1 "one alert line"
simctl DELETE /sim/fault
wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $u1)" 30
ok $? "ELMO back: the report is delivered"
is "$(status elmo_reachable)" t "elmo_reachable = t again"
is "$(log_count 'ELMO is reachable again')" 1 "one LOG line when it is back"
is "$(sql "SELECT hint FROM elmo_registration_status")" "Connected: messages flow both ways." "the hint is back to normal"
is "$(status "oldest_undelivered_age IS NULL")" t "nothing undelivered"

# ---------------------------------------------------------------- 2. a 400
simctl POST /sim/fault '{"status":400,"count":1,"path":"update_group_measurements","message":"value is out of range"}'
u2=$(sql "SELECT elmo_report_usage('$G1', 1001.5)")
wait_sql "(SELECT state = 'failed' FROM elmo_outbox WHERE id = $u2)" 15
ok $? "ELMO answers 400: failed"
is "$(status "last_error ~ 'HTTP 400' AND last_error ~ 'elmo_outbox $u2'")" t "last_error: ELMO's 400, and which message"
is "$(status elmo_reachable)" t "a 400 is an answer: ELMO is reachable"

# ---------------------------------------------------------------- 3. a lock-out
simctl POST /sim/fault '{"status":401,"count":-1}'
l1=$(sql "SELECT elmo_report_usage('$G1', 1100)")
wait_sql "(SELECT state = 'locked_out' FROM elmo_registration)" 15
ok $? "ELMO answers 401: locked out"
is "$(status "registration_state || ' ' || (last_error ~ 'HTTP 401')")" "locked_out true" "elmo_status(): locked_out, last_error ELMO's 401"
l2=$(sql "SELECT elmo_report_usage('$G1', 1101)")
wait_sql "(SELECT state = 'held' FROM elmo_outbox WHERE id = $l2)" 10
deadline=$((SECONDS + 5))
until grep -q '"alert" : "locked_out"' "$W/alerts" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
is "$(grep -c '"alert" : "locked_out"' "$W/alerts")" 1 "one NOTIFY elmo_alert locked_out"
is "$(log_count 'alert locked_out')" 1 "one alert line in the server log per lock-out"
simctl DELETE /sim/fault
simctl POST /sim/admin/reset-token '{"token":"E2E53-NEW-INITIAL-TOKEN"}'
sql "SELECT elmo_register('$SIM/oscp/2.0', 'E2E53-NEW-INITIAL-TOKEN')" >/dev/null
wait_sql "(SELECT count(*) = 2 FROM elmo_outbox WHERE id IN ($l1, $l2) AND state = 'delivered')" 20
ok $? "registered again: the held reports are delivered"

# ---------------------------------------------------------------- 4. usage_source names nothing
psql -Xq -c "ALTER SYSTEM SET elmo_oscp.usage_source = 'public.e2e53_no_such_view'" \
     -c "ALTER SYSTEM SET elmo_oscp.report_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
wait_sql "(SELECT last_error ~ 'usage_source' AND last_error ~ 'e2e53_no_such_view' FROM elmo_status())" 20
ok $? "a usage_source that names nothing: last_error says so"
