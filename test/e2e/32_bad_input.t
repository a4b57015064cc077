# Bad input is answered 400 with a JSON error naming the field, and nothing
# is stored; what is accepted is stored exactly as sent.
#   X-Request-ID / X-Correlation-ID: kept exactly (spaces included), or 400
#     above 128 characters or outside printable ASCII; register and handshake
#     are never refused for a header: a bad ID is replaced by a generated one.
#   Bodies: a NUL byte or invalid UTF-8 is a 400 (register and handshake too).
#   Framing: two Content-Length headers are a 400, and the connection is closed;
#     HTTP/1.1 without Host is a 400, also when a header line with no name made
#     the HTTP library end the headers before Host.
. "$(dirname "$0")/tap.sh"
plan 28
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
is "$(post update_group_capacity_forecast "$W/forecast.json" -H "X-Request-ID: BAD-TRAIL  ")" "204 " "X-Request-ID 'BAD-TRAIL  ' (blanks after it)"
is "$(stored 'BAD-TRAIL')" 1 "... stored without the blanks HTTP does not count as the value"
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

# ---------------------------------------------------------------- bodies that are no text
printf '{"group_id":"BAD-G\0NUL","type":"CONSUMPTION","forecasted_blocks":[]}' > "$W/nul.json"
a=$(post update_group_capacity_forecast "$W/nul.json" -H "X-Request-ID: BAD-NUL-1")
is "${a%% *} $(jq -r .message <<< "${a#* }")" "400 body: contains a NUL byte (at byte offset 18)" "a NUL byte in a forecast: 400 saying where"
printf '\0{"required_behaviour":{}}' > "$W/nul-first.json"
a=$(post handshake "$W/nul-first.json" -H "X-Request-ID: BAD-NUL-2")
is "${a%% *}" 400 "a handshake body starting with a NUL byte: 400 (bodies are validated)"
printf '{"group_id":"BAD-\xff\xfe","type":"CONSUMPTION","forecasted_blocks":[]}' > "$W/latin.json"
a=$(post update_group_capacity_forecast "$W/latin.json" -H "X-Request-ID: BAD-UTF8-1")
is "${a%% *} $(jq -r .message <<< "${a#* }")" "400 body: is not valid UTF-8 (at byte offset 17)" "invalid UTF-8 in a forecast: 400 saying where"
printf '{"token":"T\xc3","version_url":[{"version":"2.0","base_url":"http://x"}]}' > "$W/reg.json"
a=$(post register "$W/reg.json" -H "X-Request-ID: BAD-UTF8-2")
is "${a%% *}" 400 "invalid UTF-8 in a register: 400"
printf '{"required_behaviour":{"heartbeat_interval":30,"x":"\xe4\xb8"}}' > "$W/hs.json"
a=$(post handshake "$W/hs.json" -H "X-Request-ID: BAD-UTF8-3")
is "${a%% *}" 400 "invalid UTF-8 in a handshake: 400"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'BAD-NUL-%' OR request_id LIKE 'BAD-UTF8-%'")" 0 "none of them stored"
printf '{"group_id":"BAD-G-\xe5\x8f\xb0\xe9\x9b\xbb","type":"CONSUMPTION","forecasted_blocks":[{"capacity":5,"phase":"ALL","unit":"KW","start_time":"2030-01-01T00:00:00.000+08:00","end_time":"2030-01-01T01:00:00.000+08:00"}]}' > "$W/utf8.json"
is "$(post update_group_capacity_forecast "$W/utf8.json" -H "X-Request-ID: BAD-UTF8-OK")" "204 " "valid UTF-8 (a Chinese group name) is accepted"
is "$(sql "SELECT group_id FROM elmo_received_message WHERE request_id = 'BAD-UTF8-OK'")" "BAD-G-台電" "... and stored as sent"

# raw_status REQUEST: the first status line answered to these bytes, sent in
# one write (a request that arrives in pieces may meet a closed connection,
# and its reset can discard the answer before it is read); with "closed"
# after it when the server then closed the connection (within 5 s)
raw_status() {
  perl -MIO::Socket::INET -MIO::Select -e '
    my ($port, $req) = @ARGV; $req =~ s/\\r/\r/g; $req =~ s/\\n/\n/g;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "connect: $!";
    syswrite($s, $req); my ($in, $closed) = ("", 0); my $sel = IO::Select->new($s);
    while ($sel->can_read(5)) { my $n = sysread($s, my $b, 65536); if (!$n) { $closed = 1; last } $in .= $b }
    my ($line) = split /\r?\n/, $in; print(($line // ""), ($closed ? " closed" : ""), "\n");' "$ELMO_HTTP_PORT" "$1"
}

# ---------------------------------------------------------------- framing
body=$(cat "$W/forecast.json")
is "$(raw_status "POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Token $token\r\nX-Request-ID: BAD-CL-TWICE\r\nContent-Length: ${#body}\r\nContent-Length: $((${#body} + 1))\r\n\r\n$body")" \
   "HTTP/1.1 400 Bad Request closed" "two Content-Length headers: 400, and the connection closed after it"

is "$(raw_status "POST /oscp/fp/2.0/handshake HTTP/1.1\r\nAuthorization: Token $token\r\nX-Request-ID: BAD-NONAME\r\n: junk\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")" \
   "HTTP/1.1 400 Bad Request closed" "a header line with no name before Host: 400 (the library would end the headers there)"
is "$(raw_status "POST /oscp/fp/2.0/handshake HTTP/1.1\r\nAuthorization: Token $token\r\nX-Request-ID: BAD-NOHOST\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")" \
   "HTTP/1.1 400 Bad Request closed" "HTTP/1.1 without Host: 400"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id IN ('BAD-NONAME', 'BAD-NOHOST')")" 0 "... neither stored"
