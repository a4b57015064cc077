# What we send is what ELMO accepted: the extension's register, handshake_acknowledge,
# adjust_group_capacity_forecast, update_group_measurements and
# group_capacity_compliance_error, as the simulator received them, each compared with the
# captures ELMO answered 2xx for the same method and path (02, 07b/rerun/02, 25a, 08a, 09a
# and their siblings): the same ELMO-relevant headers (Authorization, X-Request-ID,
# X-Correlation-ID, Content-Type), the same body field names and JSON types (timestamps as
# timestamps).  Authorization is "Token ...", X-Request-ID 32 of [0-9A-Z], every timestamp
# YYYY-MM-DDTHH:MM:SS.mmm+08:00, the form ELMO itself sends.  And elmo_register warns for a public_url
# exactly when ELMO would refuse the base_url it sends (captures 01a-01d refused, 02 accepted).
. "$(dirname "$0")/tap.sh"
plan 14
export PGOPTIONS='-c client_min_messages=error'   # usage reports for stations ELMO never assigned capacity to warn
CAP=$TOP/test/captures/real-elmo-wire
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sim="http://127.0.0.1:$ELMO_SIM_PORT"
simctl() { curl -s -o /dev/null -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$sim$2"; }
cleanup() { simctl POST /sim/reset '{}' >/dev/null; sql "SELECT test.reset()" >/dev/null 2>&1; }
trap cleanup EXIT
trap 'exit 130' INT TERM
G=B6734_AE0100_00848825118

# ---------------------------------------------------------------- public_url: warn iff ELMO would refuse it
sql "SELECT test.reset()" >/dev/null
# ELMO's verdict on each base_url it was sent in a POST register (captures)
declare -A VERDICT
while IFS=$'\t' read -r url status; do VERDICT[$url]=$status; done < <(cd "$CAP" && cat -- [0-9]*.json rerun/*.json |
  jq -r 'select(type == "object" and .direction == "fake CSMS -> ELMO" and .request.method == "POST"
                and (.request.path | endswith("/register")) and (.request.body.version_url | length) == 1
                and .request.body.version_url[0].version == "2.0")
         | "\(.request.body.version_url[0].base_url)\t\(.response.status)"')
for f in "$CAP"/01[a-d]-*.json "$CAP"/02-*.json; do
  url=$(jq -r '.request.body.version_url[0].base_url' "$f")
  out=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "BEGIN" \
          -c "SELECT elmo_register('$sim/oscp/2.0', 'ANY-INITIAL-TOKEN', '$url')" \
          -c "SELECT body::jsonb->'version_url'->0->>'base_url' FROM elmo_outbox ORDER BY id DESC LIMIT 1" -c "ROLLBACK" 2>&1)
  sent=$(grep -v '^WARNING\|^DETAIL\|^HINT' <<<"$out" | tail -n1)
  warned=no; grep -q '^WARNING:  the real ELMO will refuse this public_url' <<<"$out" && warned=yes
  verdict=${VERDICT[$sent]:-no capture}
  case $verdict in 400) want=yes ;; 2??) want=no ;; *) want="(ELMO's answer unknown)" ;; esac
  is "$warned" "$want" "$(basename "$f" .json): public_url $url, sent as $sent, which ELMO answers $verdict: warned $want"
done

# ---------------------------------------------------------------- send each message
simctl POST /sim/reset '{}' >/dev/null
sql "SELECT test.reset()" >/dev/null
reg=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET client_min_messages = error" -c "SELECT elmo_register(test.sim('/oscp/2.0'), 'ELMO-TESTBED-TOKEN')")
wait_sql "(SELECT connected FROM elmo_registration)" 20
ok $? "registered and connected (register $reg, handshake_acknowledge)"
simctl POST /sim/clock "{\"now\":\"$(sql "SELECT _elmo_local_day(now())")T11:00:00+08:00\"}" >/dev/null
simctl POST /sim/assign "{\"group_id\":\"$G\"}" >/dev/null
wait_sql "EXISTS (SELECT 1 FROM capacity_forecast WHERE kind = 'day_ahead' AND group_id = '$G')" 10
fid=$(sql "SELECT max(id) FROM capacity_forecast WHERE group_id = '$G'")
ids=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET client_min_messages = error" -c "SET elmo_oscp.enforce_deadlines = off" \
  -c "SELECT elmo_adjust_capacity('$G', 150)" -c "SELECT elmo_report_usage('$G', 1234.5)" \
  -c "SELECT elmo_report_compliance_error($fid, 'cannot comply', (SELECT payload->'forecasted_blocks' FROM capacity_forecast WHERE id = $fid))" | paste -sd,)
wait_sql "(SELECT count(*) FROM elmo_outbox WHERE id IN ($ids) AND state IN ('delivered', 'failed')) = 3" 15
simctl POST /sim/clock '{"offset_seconds":0}' >/dev/null
msgs=$(curl -s "$sim/sim/messages")

# one line per request: <method path> TAB <ELMO-relevant header names> TAB <body: its leaf paths and JSON types>
# (timestamps typed as such; array elements as []), e.g. "measurements.[].value=number"
SHAPE='def shape: if type == "object" then map_values(shape)
                   elif type == "array" then (map(shape) | unique)
                   elif type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T") then "timestamp"
                   else type end;
       def leaves: shape | [paths(scalars) as $p | "\($p | map(if type == "number" then "[]" else . end) | join("."))=\(getpath($p))"]
                         | unique | join(" ");
       def hdrs: [keys[] | ascii_downcase | select(IN("authorization", "x-request-id", "x-correlation-id", "content-type"))] | sort | join(",");'
captured=$(cd "$CAP" && for f in [0-9]*.json rerun/*.json; do
  jq -r --arg f "$f" "$SHAPE"' select(type == "object" and .direction == "fake CSMS -> ELMO" and .response.status >= 200 and .response.status < 300)
      | "\(.request.method) \(.request.path)\t\(.request.headers | hdrs)\t\(.request.body | leaves)\t\($f)"' "$f"; done)
# Known differences from every capture ELMO accepted: reported as TODO tests, while the fields
# we do send must still be among the captured ones, with the same types.
declare -A GAP=()
for name in register handshake_acknowledge adjust_group_capacity_forecast update_group_measurements group_capacity_compliance_error; do
  ours=$(jq -r --arg p "/oscp/2.0/$name" "$SHAPE"' [.[] | select(.path == $p and .status == 204)][0] // empty
      | "\(.method) \(.path)\t\(.headers | hdrs)\t\(.body | leaves)"' <<<"$msgs")
  # exact: same headers, same leaves; within: same headers, our leaves a subset of the capture's
  read -r exact within < <(awk -F'\t' -v o="$ours" '
      BEGIN { split(o, w, "\t"); n = split(w[3], ol, " ") }
      $1 == w[1] && $2 == w[2] {
        if ($3 == w[3]) ex = ex (ex ? "," : "") $4
        delete cl; m = split($3, c, " "); for (i = 1; i <= m; i++) cl[c[i]] = 1
        sub_ok = 1; for (i = 1; i <= n; i++) if (!(ol[i] in cl)) sub_ok = 0
        if (sub_ok) wi = wi (wi ? "," : "") $4
      }
      END { print (ex ? ex : "-"), (wi ? wi : "-") }' <<<"$captured")
  _tap_n=$((_tap_n + 1))
  desc="$name: answered 204, headers ($(cut -f2 <<<"$ours")) and body fields as ELMO accepted in ${exact/#-/$within}"
  if [ -n "$ours" ] && [ "$exact" != - ]; then echo "ok $_tap_n - $desc${GAP[$name]:+ # TODO ${GAP[$name]}}"
  elif [ -n "$ours" ] && [ "$within" != - ] && [ -n "${GAP[$name]:-}" ]; then echo "not ok $_tap_n - $desc # TODO ${GAP[$name]}"
  else echo "not ok $_tap_n - $desc"; _tap_failed=1; diag "ours: $ours"; grep -F "/$name" <<<"$captured" | sed 's/^/# capture: /'; fi
done

ours=$(jq -c '[.[] | select(.path | test("/oscp/2.0/(register|handshake_acknowledge|adjust_group_capacity_forecast|update_group_measurements|group_capacity_compliance_error)$"))]' <<<"$msgs")
is "$(jq -r '[.[] | (.headers.authorization | test("^Token [^ ]+$")) and (.headers["x-request-id"] | test("^[0-9A-Z]{32}$"))] | unique | join(",")' <<<"$ours")" true \
   "every message: Authorization 'Token <token>', X-Request-ID 32 characters of [0-9A-Z]"
bad=$(jq -r '[.[] | .body | .. | strings | select(test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T")) | select(test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}\\+08:00$") | not)] | unique | join(" ")' <<<"$ours")
n=$(jq '[.[] | .body | .. | strings | select(test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T"))] | length' <<<"$ours")
is "$bad" "" "all $n timestamps sent look like 2026-11-26T00:00:00.000+08:00"
is "$(jq '[.[] | select(.path | endswith("/adjust_group_capacity_forecast")) | .body.forecasted_blocks | length] | unique | join(",")' <<<"$ours")" '"24"' \
   "adjust: 24 hourly blocks (ELMO refuses 23 or 25: captures 11b, 11c)"
