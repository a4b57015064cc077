# The simulator's control API is what its documentation says (GET /sim/help, --help-api, the
# README): every documented example request, replayed in its story against a private simulator,
# gets the documented status and an answer of the documented shape; a malformed body gets a 400
# that quotes the expected body; a fault without a count applies once.  Needs no PostgreSQL.
. "$(dirname "$0")/tap.sh"
plan 11
G=B6734_AE0100_00848825118
W=$(mktemp -d /tmp/elmo_simapi.XXXXXX)
SIM_PID=
cleanup() { sim_stop; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
export SIM_LOG=$W/sim.log
sim_start "$(free_port 24300)" --allow-local-urls
sim=http://127.0.0.1:$SIM_PORT
csms=http://127.0.0.1:$(free_port 24400)/csms    # nobody listens: ELMO's callbacks fail, its state moves on

HELP=$(curl -s "$sim/sim/help")
doc() { jq -c --arg m "$1" --arg p "$2" '.[] | select(.method == $m and .path == $p)' <<<"$HELP"; }
shape() { jq -cS 'if type == "array" then .[0] else . end | if type == "object" then keys else type end'; }
VISITED=()
BAD=()
# replay METHOD PATH: the documented example, checked against the documentation
replay() {
  local d st body got
  VISITED+=("$1 $2")
  d=$(doc "$1" "$2")
  [ -n "$d" ] || { BAD+=("$1 $2: not documented"); return; }
  body=$(jq -c '.request // empty' <<<"$d")
  got=$(curl -s -o "$W/answer" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
             ${body:+--data-binary "$body"} "$sim$2")
  st=$(jq '.status' <<<"$d")
  if [ "$got" != "$st" ]; then BAD+=("$1 $2: status $got, documented $st: $(cat "$W/answer")"); return; fi
  [ "$st" = 204 ] && return
  if [ "$(shape < "$W/answer")" != "$(jq '.answer' <<<"$d" | shape)" ]; then
    BAD+=("$1 $2: answer $(shape < "$W/answer"), documented $(jq '.answer' <<<"$d" | shape)")
  fi
}
oscp() {   # oscp PATH TOKEN BODY [extra curl args]: as a CSMS calls ELMO
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -H "Authorization: Token $2" \
       -H "X-Request-ID: SIMAPI$RANDOM$RANDOM" "${@:4}" --data-binary "$3" "$sim/oscp/2.0/$1"
}

# ---- the story of the examples: 2026-12-01, 13:30 in ELMO's zone
replay POST /sim/clock
replay GET /sim/clock
replay GET /sim/config
replay GET /sim/help
s=$(oscp register ELMO-TESTBED-TOKEN "{\"token\":\"CSMS-TOKEN\",\"version_url\":[{\"version\":\"2.0\",\"base_url\":\"$csms\"}]}")
tok=$(curl -s "$sim/sim/state" | jq -r .elmo_token)
s="$s $(oscp handshake_acknowledge "$tok" '{"required_behaviour":{"measurement_configuration":["CONTINUOUS"]}}' -H 'X-Correlation-ID: HS1')"
replay POST /sim/assign
blocks=$(jq -nc '[range(24) | {capacity: 150, phase: "ALL", unit: "KW",
  start_time: ("2026-12-02T" + (. | tostring | if length < 2 then "0" + . else . end) + ":00:00+08:00")}]
  | to_entries | map(.value + {end_time: (if .key == 23 then "2026-12-03T00:00:00+08:00"
    else "2026-12-02T" + ((.key + 1) | tostring | if length < 2 then "0" + . else . end) + ":00:00+08:00" end)}) | map(.)')
s="$s $(oscp adjust_group_capacity_forecast "$tok" "{\"group_id\":\"$G\",\"type\":\"CONSUMPTION\",\"forecasted_blocks\":$blocks}")"
is "$s" "204 204 204" "a CSMS registers, acknowledges ELMO's handshake, asks for more for 2026-12-02"
replay GET /sim/state
replay GET /sim/messages
replay GET /sim/callbacks
replay POST /sim/reply
replay POST /sim/emergency
replay POST /sim/fault
replay DELETE /sim/fault
replay POST /sim/config
replay DELETE /sim/messages
replay DELETE /sim/callbacks
replay POST /sim/admin/reset-token
replay POST /sim/reset
is "${BAD[*]:-}" "" "each documented example is answered the documented status, in the documented shape"

is "$(jq -r '.[] | "\(.method) \(.path)"' <<<"$HELP" | sort | tr '\n' ,)" "$(printf '%s\n' "${VISITED[@]}" | sort | tr '\n' ,)" \
   "the story replays every endpoint GET /sim/help documents, and only those"
missing=$(jq -r '.[] | "\(.method) \(.path)"' <<<"$HELP" | while read -r m p; do
  "$TOP/sim/elmo-sim" --help-api | grep -qx "$m $p\(?.*\)\?" || echo "--help-api: $m $p"
  grep -q "$m $p\b" "$TOP/README.md" || echo "README: $m $p"; done)
is "$missing" "" "elmo-sim --help-api and the README document each of them"

# ---- what the story's answers said
curl -s -X POST "$sim/sim/clock" -d '{"now":"2026-12-01T13:30:00+08:00"}' >/dev/null
st=$(curl -s -X POST "$sim/sim/assign" -d "{\"group_id\":\"$G\",\"day\":\"2026-12-02\",\"capacity\":120,\"send\":false}")
is "$(jq -c '[.day, .sent]' <<<"$st")" '["2026-12-02",false]' "assign with send false opens the day's negotiation and sends nothing"
is "$(curl -s "$sim/sim/state" | jq -c --arg g "$G" '[.registered, .negotiations[$g][0].status, .negotiations[$g][0].assigned[0]]')" \
   '[false,"NEGOTIATING",120]' "after the reset: nobody registered, the new negotiation NEGOTIATING at 120 kW"

# ---- 400s say what is expected
bad=$(jq -r '.[] | select(.method == "POST" and .request != null) | .path' <<<"$HELP" | while read -r p; do
  a=$(curl -s -X POST --data-binary '[1]' "$sim$p")
  [ "$(jq -c .expected <<<"$a")" = "$(doc POST "$p" | jq -c .request)" ] && [ "$(jq .statusCode <<<"$a")" = 400 ] \
    || echo "$p: $a"; done)
is "$bad" "" "a body that is not an object: 400 quoting the endpoint's example body, for every POST endpoint"
is "$(curl -s -X POST "$sim/sim/config" -d '{"schedul":false}' | jq -r .message)" "unknown setting schedul" \
   "an unknown setting is named, not ignored"
is "$(curl -s -X POST "$sim/sim/fault" -d '{"status":500,"count":0}' | jq -r '[.statusCode, .message] | join(" ")')" \
   "400 count must be >= 1, or -1 for until DELETE /sim/fault" "count 0 is refused (it would arm nothing)"

# ---- a fault without a count applies once
curl -s -o /dev/null -X POST "$sim/sim/admin/reset-token" -d '{"token":"T0"}'
f=$(curl -s -X POST "$sim/sim/fault" -d '{"status":503,"path":"register"}' | jq .count)
reg='{"token":"CSMS-TOKEN","version_url":[{"version":"2.0","base_url":"'"$csms"'"}]}'
a=$(oscp register T0 "$reg")
curl -s -o /dev/null -X POST "$sim/sim/admin/reset-token" -d '{"token":"T0"}'
b=$(oscp register T0 "$reg")
is "$f $a $b" "1 503 204" "a fault armed without a count has count 1: the next request gets it, the one after does not"
is "$(curl -s "$sim/sim/state" | jq -c .fault)" null "and it is then disarmed"
