# elmo-sim answers every captured "fake CSMS -> ELMO" request exactly as the real ELMO did.
#
# Replays, in sent_at_utc order, every numbered capture whose direction is "fake CSMS -> ELMO"
# plus rerun/*, against a private simulator, and compares the status code and the body (JSON
# semantically via `jq -S .`; an empty body must be empty).  Needs bash, curl and jq only, no
# PostgreSQL.  ELMO_CAPTURES overrides the capture directory (default test/captures/real-elmo-wire).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENDORED=$ROOT/test/captures/real-elmo-wire
CAP=${ELMO_CAPTURES:-$VENDORED}
SHARED=$(cd "$ROOT/.." && pwd)/shared/spec/real-elmo-wire
SIM_BIN=$ROOT/sim/elmo-sim
INIT=INITIAL-ELMO-TOKEN-FOR-CSMS-1
CLOCK='2026-11-25T13:00:00+08:00'

# What the capture session did between requests (the recipe the captures were taken with):
# ELMO's 10:00 assignment before the first adjust of a day, an administrator's token reset
# before each fresh start with the initial token.
declare -A HOOK=(
  [25a-adjust-valid-24-blocks.json]='POST /sim/assign {"send":false}'
  [33b-adjust-above-contract-500kW-station2-contract-100.json]='POST /sim/assign {"group_id":"B6734_AE0100_00848821001","send":false}'
  [rerun/05-adjust.json]='POST /sim/assign {"send":false}'
  [rerun/01-register.json]="POST /sim/admin/reset-token {\"token\":\"$INIT\"}"
  [54a-handshake_acknowledge-with-INITIAL-token-before-any-register.json]="POST /sim/admin/reset-token {\"token\":\"$INIT\"}"
)

n=0; failed=0
ok()   { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
diag() { local l; while IFS= read -r l; do echo "# $l"; done <<<"$*"; }

TMP=$(mktemp -d /tmp/elmo_simconf.XXXXXX)
SIM_PID=
cleanup() {
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the captures, in the order they were sent
mapfile -t CAPTURES < <(
  cd "$CAP" 2>/dev/null && ls -1 -- [0-9]*.json rerun/*.json 2>/dev/null | tr '\n' '\0' |
  xargs -0 -r jq -r 'select(type == "object" and .direction == "fake CSMS -> ELMO")
                 | "\(.sent_at_utc)\t\(input_filename)"' | sort | cut -f2)
# ELMO's tokens in the order it issued them: the token of each register it sent the CSMS
mapfile -t ELMO_TOKENS < <(
  cd "$CAP" 2>/dev/null && cat -- [0-9]*.json inbox/*.json 2>/dev/null |
  jq -r 'select(type == "object" and .direction == "ELMO -> fake CSMS" and (.path | endswith("/register")))
         | "\(.received_at_utc)\t\(.raw_body | fromjson | .token)"' | sort | cut -f2 | awk '!seen[$0]++')

NEG=5
echo "1..$(( ${#CAPTURES[@]} + 4 + NEG ))"
[ ${#CAPTURES[@]} -ge 1 ] && [ ${#ELMO_TOKENS[@]} -ge 1 ]
ok $? "${#CAPTURES[@]} fake CSMS -> ELMO captures and ${#ELMO_TOKENS[@]} ELMO tokens found in ${CAP#"$ROOT"/}"
[ $failed -eq 0 ] || { echo "Bail out! no captures to replay in $CAP"; exit 1; }

if [ -d "$SHARED" ]; then
  d=$(diff -r "$VENDORED" "$SHARED" 2>&1); r=$?
  ok $r "vendored test/captures/real-elmo-wire is identical to $SHARED"
  [ $r -eq 0 ] || diag "$(head -n 20 <<<"$d")"
else
  skip "no $SHARED beside the repository to compare the vendored captures with"
fi

# ---- our own simulator on a free loopback port
"$SIM_BIN" --listen 127.0.0.1 --port 0 --port-file "$TMP/port" --initial-token "$INIT" --no-schedule \
  --callback-timeout-ms 2000 >"$TMP/sim.log" 2>&1 &
SIM_PID=$!
PORT=
for _ in $(seq 100); do
  [ -s "$TMP/port" ] && PORT=$(cat "$TMP/port") && curl -fs -o /dev/null "http://127.0.0.1:$PORT/sim/state" && break
  PORT=; kill -0 "$SIM_PID" 2>/dev/null || break; sleep 0.05
done
BASE=http://127.0.0.1:$PORT
simctl() {   # simctl METHOD PATH [BODY] -> the body; fails unless 2xx
  curl -fsS -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$BASE$2"
}
[ -n "$PORT" ] && simctl POST /sim/clock "{\"now\":\"$CLOCK\"}" >/dev/null
ok $? "simulator listening on 127.0.0.1:${PORT:-?}, clock at $CLOCK"
[ -n "$PORT" ] || { diag "$(tail -n 20 "$TMP/sim.log")"; [ -x "$SIM_BIN" ] || diag "build it: make -C sim"; exit 1; }

# same WANT_STATUS WANT_RAW_BODY GOT_STATUS GOT_RAW_BODY: 0 when the answers are the same;
# otherwise 1 and the difference in $WHY.
same() {
  WHY=
  if [ "$1" != "$3" ]; then WHY="status: got $3, expected $1"
  elif [ -z "$2" ] || [ -z "$4" ]; then [ "$2" = "$4" ] || WHY="body: got '$4', expected '$2'"
  else
    local w g
    if w=$(jq -S . <<<"$2" 2>/dev/null) && g=$(jq -S . <<<"$4" 2>/dev/null); then
      [ "$w" = "$g" ] || WHY="body differs"
    else
      [ "$2" = "$4" ] || WHY="body (not JSON) differs"
    fi
    [ -z "$WHY" ] || WHY="$WHY"$'\n'"  got:      $4"$'\n'"  expected: $2"
  fi
  [ -z "$WHY" ]
}

declare -A TOKMAP   # ELMO token in the captures -> the simulator's token
# load FILE: one jq pass over a capture; sets METHOD PATH_ HAS_BODY BODY HAS_CT WANT_STATUS WANT_BODY HEADERS
load() {
  local x
  mapfile -d '' -t x < <(jq -j 'if (.request.method | type) != "string" or (.request.path | type) != "string"
        or (.response.status | type) != "number" or (.response.raw_body | type) != "string"
      then error("not a request with its answer") else . end
    | [.request.method, .request.path, (.request.body != null | tostring),
      (.request.body | tojson),
      ((.request.headers | keys | map(ascii_downcase) | index("content-type")) != null | tostring),
      (.response.status | tostring), .response.raw_body,
      (.request.headers | to_entries | map("\(.key)\t\(.value)") | join("\n"))] | map(. + "\u0000") | add' "$1")
  [ ${#x[@]} -eq 8 ] || { METHOD=; WANT_STATUS="(unreadable capture $1)"; return 1; }
  METHOD=${x[0]} PATH_=${x[1]} HAS_BODY=${x[2]} BODY=${x[3]} HAS_CT=${x[4]}
  WANT_STATUS=${x[5]} WANT_BODY=${x[6]} HEADERS=${x[7]}
}
# replay FILE: send the captured request (ELMO tokens substituted); sets GOT_STATUS, GOT_BODY
replay() {
  local k v ct args=()
  GOT_STATUS='(not sent)' GOT_BODY=
  load "$1" || return 1
  while IFS=$'\t' read -r k v; do
    [ -n "$k" ] || continue
    for ct in "${!TOKMAP[@]}"; do v=${v//"$ct"/"${TOKMAP[$ct]}"}; done
    if [ -n "$v" ]; then args+=(-H "$k: $v"); else args+=(-H "$k;"); fi
  done <<<"$HEADERS"
  if [ "$HAS_BODY" = true ]; then
    printf '%s' "$BODY" >"$TMP/req"
    args+=(--data-binary "@$TMP/req")
    [ "$HAS_CT" = true ] || args+=(-H 'Content-Type:')   # curl would add a form content type
  fi
  GOT_STATUS=$(curl -sS -o "$TMP/resp" -w '%{http_code}' -X "$METHOD" -H 'Accept:' -H 'User-Agent:' -H 'Expect:' \
    "${args[@]}" "$BASE$PATH_" 2>"$TMP/curl.err") || GOT_STATUS="curl: $(cat "$TMP/curl.err")"
  GOT_BODY=$(cat "$TMP/resp" 2>/dev/null; printf x); GOT_BODY=${GOT_BODY%x}
}

# ---- every capture
next_token=0
for name in "${CAPTURES[@]}"; do
  if [ -n "${HOOK[$name]:-}" ]; then
    read -r hm hp hb <<<"${HOOK[$name]}"
    simctl "$hm" "$hp" "$hb" >/dev/null || diag "setup for $name failed: $hm $hp $hb"
  fi
  replay "$CAP/$name"
  same "$WANT_STATUS" "$WANT_BODY" "$GOT_STATUS" "$GOT_BODY"
  ok $? "$name"
  [ -z "$WHY" ] || diag "$WHY"
  # ELMO answered 204 to a POST register: it had issued its next token
  if [ "$METHOD $PATH_ $WANT_STATUS" = "POST /oscp/2.0/register 204" ]; then
    if [ $next_token -lt ${#ELMO_TOKENS[@]} ]; then
      TOKMAP[${ELMO_TOKENS[$next_token]}]=$(simctl GET /sim/state | jq -r .elmo_token)
    else
      diag "$name: no captured ELMO token left to map"
    fi
    next_token=$((next_token + 1))
  fi
done

kill -0 "$SIM_PID" 2>/dev/null
ok $? "the simulator is still running after the replay"

# ---- the comparison can fail
same 204 '' 204 ''; ok $? "same: two empty 204 answers match"
same 403 '{"message":"x","error":"Forbidden","statusCode":403}' 403 '{ "statusCode": 403, "error": "Forbidden", "message": "x" }'
ok $? "same: JSON bodies compare semantically (key order, spacing)"
! same 204 '' 204 '{}'
ok $? "same: a body where ELMO sent none is a mismatch"
! same 403 '{"message":"Invalid authorization token","error":"Forbidden","statusCode":403}' \
       403 '{"message":"Invalid authorisation token","error":"Forbidden","statusCode":403}'
ok $? "same: a different message is a mismatch"
# a capture whose status was altered, replayed against the simulator, is detected
alt=$(cd "$CAP" 2>/dev/null && ls -1 06g-*.json 2>/dev/null | head -n 1)
if [ -n "$alt" ]; then
  jq '.response.status = 200' "$CAP/$alt" >"$TMP/altered.json"
  replay "$TMP/altered.json"
  same "$WANT_STATUS" "$WANT_BODY" "$GOT_STATUS" "$GOT_BODY"
  [ $? -ne 0 ] && [ "$GOT_STATUS" = "$(jq -r .response.status "$CAP/$alt")" ]
  ok $? "a copy of $alt with its status changed to 200 is detected as a mismatch"
else
  ok 1 "a capture to alter (06g-*.json) exists"
fi

[ $failed -eq 0 ] || diag "simulator log: $(tail -n 15 "$TMP/sim.log")"
exit $failed
