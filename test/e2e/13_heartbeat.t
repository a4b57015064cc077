# We send heartbeat only when ELMO's handshake asked for one (heartbeat_interval),
# on that interval, with offline_mode_at in ELMO's timestamp form; never otherwise.
. "$(dirname "$0")/tap.sh"
plan 6
SIM=http://127.0.0.1:$ELMO_SIM_PORT
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sql "SELECT test.reset()" >/dev/null
curl -s -o /dev/null -X POST "$SIM/sim/reset"
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT connected FROM elmo_registration)" 20; ok $? "registered and connected (ELMO's handshake asks for no heartbeat)"
handshake() {
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
       -H "Authorization: Token $(sql "SELECT our_token FROM elmo_registration")" -H "X-Request-ID: $1" \
       --data-binary "$2" "http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/handshake"
}
beats() { curl -s "$SIM/sim/messages?path=heartbeat" | jq length; }
is "$(beats)" 0 "no heartbeat sent while none was asked for"
is "$(handshake HB-ON-1 '{"required_behaviour":{"heartbeat_interval":1,"measurement_configuration":["CONTINUOUS"]}}')" 204 \
   "a handshake asking for a heartbeat every second"
deadline=$((SECONDS + 20))
until [ "$(beats)" -ge 3 ] || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
[ "$(beats)" -ge 3 ]; ok $? "heartbeats go out on that interval ($(beats) so far)"
curl -s "$SIM/sim/messages?path=heartbeat" | jq -e 'all(.[]; .body.offline_mode_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}\\+08:00$"))' >/dev/null
ok $? "each with offline_mode_at as YYYY-MM-DDTHH:MM:SS.mmm+08:00"
handshake HB-OFF-1 '{"required_behaviour":{"measurement_configuration":["CONTINUOUS"]}}' >/dev/null
wait_sql "(SELECT heartbeat_interval IS NULL FROM elmo_registration)" 10
n=$(beats); t_end=$((SECONDS + 3))
while [ $SECONDS -lt $t_end ]; do sleep 0.5; done   # nothing may arrive: a fixed window is the test
[ "$(beats)" -le $((n + 1)) ]; ok $? "a later handshake without an interval stops them"
