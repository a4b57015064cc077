# The register race (captures 03, README "Consequences"): ELMO's register reaches the CSMS
# about 20 ms after ELMO answered our register with 204, often before our sender recorded that
# 204.  A private simulator sends its register callback BEFORE answering our register
# (--register-callback-first) and again right after (--register-callback-twice): both are
# accepted with the token elmo_register just issued, and the registration ends registered,
# then connected.  Then a valid register or handshake from ELMO is answered 204 whatever else
# is going on: a CSMS trigger on capacity_forecast failing in the same batch, the outbox busy.
. "$(dirname "$0")/tap.sh"
plan 14
export PGOPTIONS='-c client_min_messages=error'   # usage reports for stations ELMO never assigned capacity to warn
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
W=$(mktemp -d /tmp/elmo_race.XXXXXX)
cleanup() {
  sim_stop
  psql -Xq -c "DROP TRIGGER IF EXISTS race_fail ON capacity_forecast" -c "DROP FUNCTION IF EXISTS test.race_fail()" \
       -c "SELECT test.reset()" >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export SIM_LOG=$W/sim.log
SIM_PORT=$(free_port 23400)
sim_start "$SIM_PORT" --allow-local-urls --no-schedule --register-callback-first --register-callback-twice \
  --handshake-delay-ms 200 --callback-timeout-ms 5000
ok $? "a private simulator on 127.0.0.1:$SIM_PORT sends its register callback before its 204, and again after"
sim="http://127.0.0.1:$SIM_PORT"
worker="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0"

# ---------------------------------------------------------------- the race
sql "SELECT test.reset()" >/dev/null
reg=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET client_min_messages = error" -c "SELECT elmo_register('$sim/oscp/2.0', 'ELMO-TESTBED-TOKEN')")
wait_sql "(SELECT connected FROM elmo_registration)" 20
is "$(sql "SELECT r.state || ' ' || r.connected || ' ' || o.state FROM elmo_registration r JOIN elmo_outbox o ON o.id = r.register_outbox_id")" \
   "registered true delivered" "elmo_register: registered, then connected after the handshake and acknowledge"
cbs=$(curl -s "$sim/sim/callbacks")
is "$(jq -r '[sort_by(.sent_at)[] | "\(.kind) \(.status)"] | join(", ")' <<<"$cbs")" "register 204, register 204, handshake 204" \
   "ELMO's callbacks: register (before its 204), register again (after), handshake: all answered 204"
our=$(sql "SELECT our_token FROM elmo_registration")
is "$(jq -r '[sort_by(.id)[] | select(.kind == "register") | .headers.authorization == "Token '"$our"'"] | unique | join(",")' <<<"$cbs")" true \
   "both register callbacks carried the token elmo_register had just issued"
is "$(sql "SELECT count(*) || ' ' || bool_and(m.received_at < o.delivered_at)
             FROM elmo_received_message m, elmo_outbox o WHERE m.message = 'register' AND o.id = $reg AND m.request_id = (
               SELECT request_id FROM elmo_received_message WHERE message = 'register' ORDER BY id LIMIT 1)")" "1 true" \
   "the first callback was received and committed before our sender recorded ELMO's 204 (the race happened)"
is "$(sql "SELECT count(*) FILTER (WHERE state = 'applied') || ' ' || count(*) FROM elmo_received_message WHERE message = 'register'")" "2 2" \
   "both register callbacks stored and applied"
elmo_tok=$(jq -r '[sort_by(.id)[] | select(.kind == "register")][0].body | fromjson | .token' <<<"$cbs")
is "$(sql "SELECT (elmo_token = '$elmo_tok') || ' ' || elmo_base_url || ' ' || (previous_token IS NULL) FROM elmo_registration")" \
   "true $sim/oscp/2.0 true" "ELMO's token and base URL kept; our previous token retired"
hs=$(sql "SELECT handshake_request_id FROM elmo_registration")
is "$(curl -s "$sim/sim/messages?path=handshake_acknowledge" | jq -r '[.[] | "\(.status) \(.headers["x-correlation-id"])"] | join(",")')" \
   "204 $hs" "our handshake_acknowledge answered 204, X-Correlation-ID = ELMO's handshake"

# ---------------------------------------------------------------- 204 whatever else is going on
# post_cfg FILE NAME BODY RID: one request as ELMO sends it (capture 03's headers) in a curl config
post_cfg() {
  printf '%s' "$3" > "$W/$4.json"
  [ -s "$1" ] && echo next >> "$1"
  cat >> "$1" <<CFG
url = "$worker/$2"
request = "POST"
header = "Accept: application/json, text/plain, */*"
header = "Content-Type: application/json"
header = "Authorization: Token $our"
header = "X-Request-ID: $4"
data-binary = "@$W/$4.json"
output = "/dev/null"
write-out = "$4 %{http_code} %{time_total}\n"
CFG
}
reg_body="{\"token\":\"$elmo_tok\",\"version_url\":[{\"base_url\":\"/oscp/2.0\",\"version\":\"2.0\"}]}"
hs_body='{"required_behaviour":{"measurement_configuration":["CONTINUOUS"]}}'
applied() {  # applied RID: 'applied' and, for a register, registered_at = its receipt; for a handshake, its acknowledge queued
  sql "SELECT m.state || ' ' || CASE m.message
              WHEN 'register' THEN (SELECT registered_at = m.received_at FROM elmo_registration)::text
              ELSE (SELECT count(*) FROM elmo_outbox o WHERE o.message = 'handshake_acknowledge' AND o.correlation_id = m.request_id)::text END
         FROM elmo_received_message m WHERE m.request_id = '$1'"
}

# 1. a CSMS trigger on capacity_forecast fails, forecasts in the same batch as ELMO's register and handshake
sql "CREATE FUNCTION test.race_fail() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN RAISE EXCEPTION 'the CSMS trigger failed'; END \$\$;
     CREATE TRIGGER race_fail AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.race_fail();"
n=$(date +%s%N)
for i in 1 2 3; do
  post_cfg "$W/t.cfg" update_group_capacity_forecast \
    "$(sql "SELECT test.emergency_body('RACE-G$i', now() + interval '20 min', now() + interval '80 min', 10)")" "RACEF$i$n"
done
post_cfg "$W/t.cfg" register "$reg_body" "RACER1$n"
post_cfg "$W/t.cfg" handshake "$hs_body" "RACEH1$n"
curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 10 -K "$W/t.cfg" > "$W/t.out"
is "$(sort "$W/t.out" | awk '{print $2}' | uniq -c | awk '{print $1 "x" $2}')" "5x204" \
   "failing CSMS trigger: 3 forecasts, ELMO's register and handshake sent at once, all answered 204"
is "$(applied "RACER1$n"), $(applied "RACEH1$n"), $(sql "SELECT count(*) FROM elmo_unapplied WHERE group_id LIKE 'RACE-G%'")" \
   "applied true, applied 1, 3" "the register and handshake applied; the 3 forecasts kept for a retry (elmo_unapplied)"
sql "DROP TRIGGER race_fail ON capacity_forecast; DROP FUNCTION test.race_fail();"

# 2. the outbox busy: ELMO slow (3 s a message), 300 messages queued, 32 in flight
wait_sql "(SELECT connected FROM elmo_registration)" 10
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary \
  '{"delay_ms":3000,"count":-1,"path":"update_group_measurements"}' "$sim/sim/fault"
sql "SELECT count(elmo_report_usage('BUSY-G' || g, g)) FROM generate_series(1, 300) g" >/dev/null
wait_sql "(SELECT count(*) FROM elmo_outbox WHERE state = 'sending') >= 10" 10
r=$?
busy=$(sql "SELECT count(*) FILTER (WHERE state = 'sending') || ' sending, ' || count(*) FILTER (WHERE state = 'queued') || ' queued'
              FROM elmo_outbox WHERE message = 'update_group_measurements'")
ok $r "the outbox is busy: $busy"
: > "$W/b.cfg"
post_cfg "$W/b.cfg" register "$reg_body" "RACER2$n"
post_cfg "$W/b.cfg" handshake "$hs_body" "RACEH2$n"
curl -s -K "$W/b.cfg" > "$W/b.out"
is "$(awk '{print $2}' "$W/b.out" | paste -sd' ')" "204 204" "outbox busy: ELMO's register and handshake answered 204"
awk '{ if ($3 >= 2.0) bad = 1 } END { exit bad }' "$W/b.out"
ok $? "at once ($(awk '{printf "%s %ss ", ($1 ~ /RACER/ ? "register" : "handshake"), $3}' "$W/b.out"); < 2 s while ELMO takes 3 s a message)"
is "$(applied "RACER2$n"), $(applied "RACEH2$n")" "applied true, applied 1" "and applied: registration updated, acknowledge queued"
