# Bad input is answered 400 with a JSON error naming the field, and nothing
# is stored; what is accepted is stored exactly as sent.
#   X-Request-ID / X-Correlation-ID: kept exactly (spaces included), or 400
#     above 128 characters or outside printable ASCII; register and handshake
#     are never refused for a header: a bad ID is replaced by a generated one.
. "$(dirname "$0")/tap.sh"
plan 14
export PGOPTIONS='-c client_min_messages=error'
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
deadline=$((SECONDS + 15))
until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" -H "X-Request-ID: BAD-WARMUP" \
          --data-binary '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}' "$FP/heartbeat")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
sql "SELECT test.emergency_body('BAD-G1', now() + interval '20 min', now() + interval '1 hour', 50)" > "$W/forecast.json"

# post MESSAGE BODY-FILE [curl args...]: "STATUS RESPONSE-BODY"
post() {
  local msg=$1 file=$2; shift 2
  curl -s -o "$W/answer" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
       -H "Authorization: Token $token" --data-binary "@$file" "$@" "$FP/$msg" > "$W/status"
  echo "$(cat "$W/status") $(cat "$W/answer")"
}
stored() { sql "SELECT count(*) FROM elmo_received_message WHERE request_id = $(printf '%s' "$1" | sed "s/'/''/g; s/^/'/; s/$/'/")"; }
field_of() { jq -r '.field // empty' <<< "${1#* }" 2>/dev/null; }

# ---------------------------------------------------------------- X-Request-ID
rid100=$(printf 'R%.0s' $(seq 1 100))
is "$(post update_group_capacity_forecast "$W/forecast.json" -H "X-Request-ID: $rid100")" "204 " "a 100-character X-Request-ID is accepted"
is "$(stored "$rid100")" 1 "... and stored exactly, all 100 characters"
is "$(post update_group_capacity_forecast "$W/forecast.json" -H "X-Request-ID: BAD-ID-1")" "204 " "X-Request-ID BAD-ID-1"
is "$(post update_group_capacity_forecast "$W/forecast.json" -H "X-Request-ID: BAD-ID -1")" "204 " "X-Request-ID 'BAD-ID -1' (a space inside): another request"
is "$(stored 'BAD-ID -1')$(stored 'BAD-ID-1')" 11 "both stored, each under its own ID"
rid129=$(printf 'L%.0s' $(seq 1 129))
a=$(post update_group_capacity_forecast "$W/forecast.json" -H "X-Request-ID: $rid129")
is "${a%% *} $(field_of "$a")" "400 X-Request-ID" "a 129-character X-Request-ID: 400 naming X-Request-ID"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'LLLL%'")" 0 "... nothing stored"
a=$(post update_group_capacity_forecast "$W/forecast.json" -H $'X-Request-ID: BAD-CTL\x01-1')
is "${a%% *} $(field_of "$a")" "400 X-Request-ID" "an X-Request-ID with a control byte: 400"
a=$(post update_group_capacity_forecast "$W/forecast.json" -H $'X-Request-ID: BAD-\xc3\xa9-1')
is "${a%% *} $(field_of "$a")" "400 X-Request-ID" "an X-Request-ID with a non-ASCII character: 400"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'BAD-CTL%' OR request_id IN ('BAD--1', 'BAD-' || chr(233) || '-1')")" 0 "... nothing stored (not even the ID stripped)"
a=$(post update_group_capacity_forecast "$W/forecast.json" -H "X-Request-ID: BAD-ID-2" -H "X-Correlation-ID: $rid129")
is "${a%% *} $(field_of "$a")" "400 X-Correlation-ID" "a 129-character X-Correlation-ID: 400 naming it"
echo '{}' > "$W/handshake.json"
generated="SELECT count(*) FROM elmo_received_message WHERE message = 'handshake' AND request_id ~ '^[0-9A-Z]{32}\$'"
before=$(sql "$generated")
log_from=$(($(stat -c %s "$PGHOST/server.log") + 1))
is "$(post handshake "$W/handshake.json" -H "X-Request-ID: $rid129")" "204 " "a handshake with a 129-character X-Request-ID: 204 (never refused for a header)"
is "$(($(sql "$generated") - before))" 1 "... stored under a generated X-Request-ID"
tail -c +"$log_from" "$PGHOST/server.log" | grep -q "POST handshake came with an X-Request-ID longer than 128 characters or not printable ASCII; stored under the generated X-Request-ID"
ok $? "... and the server log says so"
