# Failure paths a real deployment meets, through real HTTP between the worker and the
# simulator (the harness's, $ELMO_SIM_PORT):
#   1. ELMO down when a usage report is due: retried with backoff, delivered once it is back,
#      exactly once as the simulator sees it, in order.
#   2. ELMO answering 401: registration locked_out with a clear last_error and hint, messages
#      held, no retry storm; recovery with a new initial token.
#   3. A forged callback (wrong token): 401, nothing stored.
#   4. The simulator's strict checks catch malformed outgoing messages: 400, message failed,
#      ELMO's message kept.
#   5. Automatic usage reports (elmo_oscp.usage_source, report_interval 2 s): repeated, increasing;
#      a group whose reading goes down is skipped and listed in elmo_usage_skipped.
# Shared state is reset before and after (test.reset(), POST /sim/reset, the two settings).
. "$(dirname "$0")/tap.sh"
plan 54
export PGOPTIONS='-c client_min_messages=error'     # http:// public URL: elmo_register warns

SIM=http://127.0.0.1:$ELMO_SIM_PORT
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
G1=B6734_AE0100_00848825118      # the simulator's stations
G2=B6734_AE0100_00848821001

simctl() {   # simctl METHOD PATH [BODY]: fails unless 2xx
  curl -fsS -o /dev/null -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$SIM$2"
}
# what the simulator received under /oscp/2.0, one compact JSON object per request
sim_msgs() { curl -fsS "$SIM/sim/messages"; }
sim_count() { sim_msgs | jq "[.[] | select($1)] | length"; }   # sim_count JQ-CONDITION
# poll until a jq condition on the simulator's messages holds (deadline in seconds)
wait_sim() {
  local deadline=$((SECONDS + ${2:-20}))
  until [ "$(sim_msgs | jq "$1")" = true ]; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}
state_of() { sql "SELECT state FROM elmo_outbox WHERE id = $1"; }
rid_of() { sql "SELECT request_id FROM elmo_outbox WHERE id = $1"; }

cleanup() {
  psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.usage_source" -c "ALTER SYSTEM RESET elmo_oscp.report_interval" \
       -c "SELECT pg_reload_conf()" >/dev/null 2>&1
  psql -Xq -c "DROP VIEW IF EXISTS public.e2e50_usage" -c "DROP TABLE IF EXISTS public.e2e50_meter" \
       -c "DELETE FROM _elmo_usage_skip WHERE group_id IN ('$G1', '$G2')" -c "SELECT test.reset()" >/dev/null 2>&1
  curl -s -o /dev/null -X DELETE "$SIM/sim/fault"
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sql "SELECT test.reset()" >/dev/null
simctl POST /sim/reset '{}'
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 15
ok $? "registered with the simulator, handshake acknowledged"

# ---------------------------------------------------------------- 1. ELMO down when a report is due
simctl POST /sim/fault '{"drop":true,"count":-1}'
ok $? "ELMO goes down: every request's connection dropped without an answer"
u1=$(sql "SELECT elmo_report_usage('$G1', 1000.5)")
wait_sql "(SELECT attempts >= 2 AND state = 'queued' FROM elmo_outbox WHERE id = $u1)" 15
ok $? "the report due is retried with backoff and stays queued"
is "$(sql "SELECT last_status IS NULL AND last_error IS NOT NULL AND next_attempt_at > now() FROM elmo_outbox WHERE id = $u1")" t \
   "no HTTP status, the network error kept, the next attempt scheduled later"
u2=$(sql "SELECT elmo_report_usage('$G1', 1001.5)")
r1=$(rid_of "$u1"); r2=$(rid_of "$u2")
is "$(state_of "$u2")" queued "the next report of the group waits behind it"
tries=$(sql "SELECT attempts FROM elmo_outbox WHERE id = $u1")
simctl DELETE /sim/fault
ok $? "ELMO is back (after $tries attempts)"
wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $u2)" 30
ok $? "both reports delivered once ELMO is back"
is "$(state_of "$u1")" delivered "the first one too"
is "$(sim_count ".headers[\"x-request-id\"] == \"$r1\" and .status == 204")" 1 "the simulator accepted the first report exactly once"
is "$(sim_count ".headers[\"x-request-id\"] == \"$r1\" and .status != 204 and (.dropped | not)")" 0 \
   "every other request of it was a dropped connection, same X-Request-ID"
# (libcurl may send a request twice in one attempt: when a reused connection dies before
# an answer, it retries once on a fresh one; so the simulator may see more than attempts)
[ "$(sim_count ".headers[\"x-request-id\"] == \"$r1\" and .dropped")" -ge "$(sql "SELECT attempts - 1 FROM elmo_outbox WHERE id = $u1")" ]
ok $? "... at least one per failed attempt"
is "$(sim_count ".headers[\"x-request-id\"] == \"$r2\"")" 1 "the second report was sent once: never while ELMO was down"
is "$(sim_msgs | jq -c "[.[] | select(.status == 204 and (.headers[\"x-request-id\"] == \"$r1\" or .headers[\"x-request-id\"] == \"$r2\")) | .body.measurements[0].value]")" \
   '[1000.5,1001.5]' "in the order queued, with their values"

# ---------------------------------------------------------------- 2. ELMO answering 401
simctl DELETE /sim/messages
simctl POST /sim/fault '{"status":401,"count":-1}'
ok $? "ELMO answers 401 to everything"
l1=$(sql "SELECT elmo_report_usage('$G1', 1100)")
wait_sql "(SELECT state = 'locked_out' FROM elmo_registration)" 15
ok $? "the registration becomes locked_out"
is "$(state_of "$l1")" held "the refused report is held, not failed"
is "$(sql "SELECT state FROM elmo_registration_status")" locked_out "elmo_registration_status: locked_out"
is "$(sql "SELECT last_error ~ 'HTTP 401' AND last_error ~ 'new initial token' FROM elmo_registration_status")" t \
   "its last_error: ELMO's 401, and what to do"
is "$(sql "SELECT hint ~ 'new initial token' AND hint ~ 'elmo_register\\(' FROM elmo_registration_status")" t \
   "its hint: ask for a new initial token, then elmo_register(url, token)"
l2=$(sql "SELECT elmo_report_usage('$G1', 1101)")
wait_sql "(SELECT state = 'held' FROM elmo_outbox WHERE id = $l2)" 10
ok $? "a later report is held at once"
n0=$(sim_count true)
t0=$SECONDS
sleep 3      # watching for requests that must not come: a fixed window is the point
is "$(sim_count true)" "$n0" "no retry storm: nothing reached ELMO during $((SECONDS - t0)) s"
is "$n0" 1 "... ELMO saw the one request it refused"
is "$(sql "SELECT attempts FROM elmo_outbox WHERE id = $l1")/$(sql "SELECT attempts FROM elmo_outbox WHERE id = $l2")" 1/0 \
   "one attempt for the refused report, none for the later one"
# ELMO's administrator issues a new initial token; the DBA follows the hint
simctl DELETE /sim/fault
simctl POST /sim/admin/reset-token '{"token":"E2E50-NEW-INITIAL-TOKEN"}'
ok $? "ELMO's administrator issues a new initial token"
sql "SELECT elmo_register('$SIM/oscp/2.0', 'E2E50-NEW-INITIAL-TOKEN')" >/dev/null
wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 15
ok $? "elmo_register(url, new_initial_token): registered and connected again"
is "$(sim_count ".path == \"/oscp/2.0/register\" and .headers.authorization == \"Token E2E50-NEW-INITIAL-TOKEN\" and .status == 204")" 1 \
   "the register carried the new initial token"
wait_sql "(SELECT count(*) = 2 FROM elmo_outbox WHERE id IN ($l1, $l2) AND state = 'delivered')" 15
ok $? "the held reports are delivered"
is "$(sql "SELECT state || '/' || coalesce(last_error, '-') || '/' || hint FROM elmo_registration_status")" \
   "registered/-/Connected: messages flow both ways." "the status view is clear again"

# ---------------------------------------------------------------- 3. a forged callback
url=$FP/update_group_capacity_forecast
body=$(sql "SELECT test.emergency_body('$G1', now() + interval '20 min', now() + interval '1 hour', 5)")
before=$(sql "SELECT (SELECT count(*) FROM elmo_received_message) || '/' || (SELECT count(*) FROM capacity_forecast)")
reg_before=$(sql "SELECT md5(row(r.*)::text) FROM elmo_registration r")
post() { http_status -X POST -H 'Content-Type: application/json' -H "X-Request-ID: $1" ${3:+-H "Authorization: $3"} --data-binary "$2" "$FP/$4"; }
is "$(post E2E50-FORGED-1 "$body" 'Token FORGED-TOKEN' update_group_capacity_forecast)" 401 "a forecast with a forged token: 401"
is "$(post E2E50-FORGED-2 "$body" '' update_group_capacity_forecast)" 401 "... without Authorization: 401"
elmo_tok=$(sql "SELECT elmo_token FROM elmo_registration")
is "$(post E2E50-FORGED-3 "$body" "Token $elmo_tok" update_group_capacity_forecast)" 401 "... with ELMO's token (the one we present to ELMO): 401"
is "$(post E2E50-FORGED-4 '{"token":"HIJACK","version_url":[{"version":"2.0","base_url":"http://evil.example"}]}' \
          'Token FORGED-TOKEN' register)" 401 "a forged register: 401"
is "$(sql "SELECT (SELECT count(*) FROM elmo_received_message) || '/' || (SELECT count(*) FROM capacity_forecast)")" "$before" \
   "nothing stored: no received message, no forecast"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'E2E50-FORGED-%'")" 0 "none of the forged X-Request-IDs"
is "$(sql "SELECT md5(row(r.*)::text) FROM elmo_registration r")" "$reg_before" "the registration untouched"
is "$(post E2E50-GENUINE-1 "$body" "Token $(sql "SELECT our_token FROM elmo_registration")" update_group_capacity_forecast)" 204 \
   "the same body with our token: 204 (the refusal was the token's)"

# ---------------------------------------------------------------- 4. the simulator's strict checks
m1=$(sql "SELECT _elmo_enqueue('update_group_measurements', '{\"group_id\":\"X\",\"measurements\":[]}')")
m2=$(sql "SELECT _elmo_enqueue('update_group_measurements', '{\"group_id\":\"$G1\",\"measurements\":[{\"value\":-5,\"phase\":\"ALL\",\"unit\":\"KWH\",\"direction\":\"NET\",\"measure_time\":\"2026-01-01T00:00:00.000+08:00\"}]}')")
wait_sql "(SELECT count(*) = 2 FROM elmo_outbox WHERE id IN ($m1, $m2) AND state IN ('failed', 'delivered'))" 15
ok $? "two malformed measurements sent (no measurement; a negative one)"
is "$(sql "SELECT state || ' ' || last_status FROM elmo_outbox WHERE id = $m1")" "failed 400" "empty measurements: ELMO 400, failed at once"
is "$(sql "SELECT last_error ~ 'measurements' AND last_error ~ 'at least one' FROM elmo_outbox WHERE id = $m1")" t "ELMO's message kept"
is "$(sql "SELECT state || ' ' || last_status || ' ' || (last_error ~ 'greater than or equal to 0') FROM elmo_outbox WHERE id = $m2")" \
   "failed 400 true" "a negative value: 400, failed, ELMO's message kept"
is "$(sim_count ".headers[\"x-request-id\"] == \"$(rid_of "$m1")\" and .status == 400")" 1 "the simulator answered 400, once (no retry)"
err=$(psql -XAtq -c "SELECT elmo_wait($m1, '2s')" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q 'at least one' <<<"$err"
ok $? "elmo_wait raises with ELMO's message"
g=$(sql "SELECT elmo_report_usage('$G1', 1200)")
is "$(sql "SELECT elmo_wait($g, '10s')")" delivered "a well-formed report still goes through"

# ---------------------------------------------------------------- 5. automatic usage reports
sql "CREATE TABLE public.e2e50_meter (group_id text PRIMARY KEY, base numeric NOT NULL, per_second numeric NOT NULL,
                                      t0 timestamptz NOT NULL DEFAULT now())" >/dev/null
sql "INSERT INTO public.e2e50_meter (group_id, base, per_second) VALUES ('$G1', 10000, 1), ('$G2', 500, 0)" >/dev/null
sql "CREATE VIEW public.e2e50_usage AS
       SELECT group_id, round(base + per_second * extract(epoch FROM now() - t0), 3) AS kwh FROM public.e2e50_meter;
     ALTER TABLE public.e2e50_meter OWNER TO elmo_oscp_csms;    -- read as its owner, never as a superuser
     ALTER VIEW public.e2e50_usage OWNER TO elmo_oscp_csms" >/dev/null
simctl DELETE /sim/messages
psql -Xq -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET elmo_oscp.usage_source = 'public.e2e50_usage'" \
     -c "ALTER SYSTEM SET elmo_oscp.report_interval = '2s'" -c "SELECT pg_reload_conf()" >/dev/null
ok $? "usage_source = a view of meter readings, report_interval = 2 s"
reports() {   # the reports of a group ELMO accepted: [[value, measure_time], ...]
  sim_msgs | jq -c "[.[] | select(.path == \"/oscp/2.0/update_group_measurements\" and .status == 204
                             and .body.group_id == \"$1\") | [.body.measurements[0].value, .body.measurements[0].measure_time]]"
}
wait_sim "[.[] | select(.body.group_id == \"$G1\" and .status == 204)] | length >= 3" 30
ok $? "reports arrive at ELMO without being asked, repeatedly"
r=$(reports "$G1")
is "$(jq '[.[][0]] | . == (sort | unique) and .[0] >= 10000' <<<"$r")" true "with increasing readings: $(jq -c '[.[][0]]' <<<"$r")"
is "$(jq '[.[][1]] | . == (sort | unique)' <<<"$r")" true "and increasing measure times"
is "$(sim_count ".path == \"/oscp/2.0/update_group_measurements\" and .status != 204")" 0 "ELMO accepted every one (strict checks passed)"
wait_sim "[.[] | select(.body.group_id == \"$G2\" and .status == 204 and .body.measurements[0].value == 500)] | length >= 1" 20
ok $? "the second meter (500 kWh) is reported too"
sql "UPDATE public.e2e50_meter SET base = 400 WHERE group_id = '$G2'" >/dev/null
wait_sql "EXISTS (SELECT 1 FROM elmo_usage_skipped WHERE group_id = '$G2' AND kwh = 400 AND last_kwh = 500)" 20
ok $? "its reading goes down to 400: skipped, listed in elmo_usage_skipped"
is "$(sql "SELECT reason FROM elmo_usage_skipped WHERE group_id = '$G2'")" "reading below the last one reported" "... with the reason"
n1=$(jq length <<<"$(reports "$G1")")
wait_sim "[.[] | select(.body.group_id == \"$G1\" and .status == 204)] | length > $n1" 20
ok $? "the other group is still reported"
is "$(sim_count ".body.group_id == \"$G2\" and .body.measurements[0].value < 500")" 0 "the lower reading never reached ELMO"
psql -Xq -v ON_ERROR_STOP=1 -c "ALTER SYSTEM RESET elmo_oscp.usage_source" -c "ALTER SYSTEM RESET elmo_oscp.report_interval" \
     -c "SELECT pg_reload_conf()" >/dev/null
wait_sql "current_setting('elmo_oscp.usage_source') = '' AND current_setting('elmo_oscp.report_interval') = '1min'" 10
ok $? "both settings reset"
