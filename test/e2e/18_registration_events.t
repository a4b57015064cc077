# One vocabulary for the registration: /health, elmo_status() and the view name
# the same states, and every NOTIFY elmo_registration has the same keys,
# whichever side raised it (our messages' outcomes, ELMO's register and
# handshake), through a whole register, handshake, unregister with the simulator.
. "$(dirname "$0")/tap.sh"
plan 7
SIM=http://127.0.0.1:$ELMO_SIM_PORT
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
OUT=$(mktemp /tmp/e2e18_listen.XXXXXX)
LPID=
cleanup() {
  [ -n "$LPID" ] && kill "$LPID" 2>/dev/null && wait "$LPID" 2>/dev/null
  sql "SELECT test.reset()" >/dev/null 2>&1
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
  rm -f "$OUT"
}
trap cleanup EXIT
export PGOPTIONS='-c client_min_messages=error'     # http:// public URL: elmo_register warns
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sql "SELECT test.reset()" >/dev/null
curl -s -o /dev/null -X POST "$SIM/sim/reset"

# the distinct words for the state: the view's, elmo_status()'s, and /health's where it tells one
states() {
  { curl -s "$FP/health" | jq -r '.registration.state // empty'
    sql "SELECT state FROM elmo_registration_status"; sql "SELECT registration_state FROM elmo_status()"; } | sort -u | tr '\n' ' '
}
is "$(states)" "not_registered " "no registration: /health, the view and elmo_status() all say not_registered"

# a LISTENing client, until the registration is unregistered
psql -X -c "LISTEN elmo_registration" \
     -c "SELECT test.wait_for(\$\$(SELECT state FROM elmo_registration) = 'unregistered'\$\$, '40s')" -c "SELECT 1" >"$OUT" 2>&1 &
LPID=$!
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%test.wait_for(%unregistered%' AND pid <> pg_backend_pid())" 10
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT connected FROM elmo_registration)" 20
is "$(states)" "registered " "registered with the simulator: the same word everywhere"
sql "SELECT elmo_unregister()" >/dev/null
wait_sql "(SELECT state = 'unregistered' FROM elmo_registration)" 20
ok $? "unregistered"
wait "$LPID"; LPID=

payloads=$(sed -n 's/^Asynchronous notification "elmo_registration" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/p' "$OUT")
n=$(printf '%s\n' "$payloads" | grep -c .)
[ "$n" -ge 5 ]; ok $? "the client heard every event ($n)"
is "$(printf '%s\n' "$payloads" | jq -c 'keys' | sort -u)" '["connected","error","event","state"]' \
   "every payload has the same keys: state, event, connected, error"
is "$(printf '%s\n' "$payloads" | jq -r .event | tr '\n' ' ')" "register_requested register handshake connected unregistered " \
   "events: our register, ELMO's register, its handshake, our acknowledge accepted, our DELETE accepted"
is "$(printf '%s\n' "$payloads" | jq -r '"\(.state)/\(.connected)"' | tr '\n' ' ')" \
   "pending/false registered/false registered/false registered/true unregistered/false " \
   "state and connected as each event left them"
