# Answer bodies are copied out of the transaction's memory before it ends:
# 400s of every size up to elmo_oscp.max_request_size, and many at once, come
# back exactly as _elmo_receive wrote them; /health bodies under load are whole.
. "$(dirname "$0")/tap.sh"
plan 6
N=200
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
FP="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0"
url="$FP/update_group_capacity_forecast"
W=$(mktemp -d); chmod 755 "$W"
trap 'rm -rf "$W"' EXIT
post() {   # post REQUEST-ID BODY-FILE ANSWER-FILE: the HTTP status
  curl -s -o "$3" -w '%{http_code}' -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
    -H "X-Request-ID: $1" --data-binary "@$2" "$url"
}
# what _elmo_receive answers for a body in a file (the server reads it)
expected() {
  sql "SELECT error FROM _elmo_receive('update_group_capacity_forecast', 'POST', 'BODIES-EXPECTED', NULL,
                                       pg_read_file('$1'), true)"
}
deadline=$((SECONDS + 15))   # until the worker accepts the new token
printf '{}' > "$W/empty.json"
until [ "$(post BODIES-WARMUP "$W/empty.json" /dev/null)" = 400 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done

# Malformed JSON: PostgreSQL's message quotes the bad token whole, so the 400
# body grows with the request, past the sizes the allocator keeps apart.
bad=0
for n in 100 20000 150000 400000 1000000; do
  head -c "$n" /dev/zero | tr '\0' A | sed 's/^/{"group_id": /; s/$/}/' > "$W/big$n.json"
  status=$(post "BODIES-BIG-$n" "$W/big$n.json" "$W/answer$n")
  expected "$W/big$n.json" > "$W/expected$n"
  if [ "$status" != 400 ] || ! cmp -s <(printf '%s\n' "$(cat "$W/answer$n")") "$W/expected$n"; then
    diag "$n bytes: HTTP $status, $(wc -c < "$W/answer$n") bytes answered, $(wc -c < "$W/expected$n") expected"
    bad=$((bad + 1))
  fi
done
is "$bad" 0 "400s with bodies from 100 bytes to 1 MB: each answer exactly what _elmo_receive said"

# Many at once, each its own error: no answer carries another's body, or garbage.
for i in $(seq 1 $N); do
  printf '{"group_id": BAD%d}' "$i" > "$W/bad$i.json"
  [ "$i" -gt 1 ] && echo next >> "$W/curl.cfg"
  cat >> "$W/curl.cfg" <<CFG
url = "$url"
request = "POST"
header = "Content-Type: application/json"
header = "Authorization: Token $token"
header = "X-Request-ID: BODIES-$i"
data-binary = "@$W/bad$i.json"
output = "$W/got$i"
CFG
done
curl -s --parallel --parallel-immediate --parallel-max 50 -K "$W/curl.cfg"
sql "SELECT i || ' ' || error FROM generate_series(1, $N) i,
            _elmo_receive('update_group_capacity_forecast', 'POST', 'BODIES-EXPECTED', NULL, '{\"group_id\": BAD' || i || '}', true)
      ORDER BY i" > "$W/expected_all"
for i in $(seq 1 $N); do echo "$i $(cat "$W/got$i" 2>/dev/null)"; done > "$W/got_all"
is "$(grep -c 'Token \\"BAD' "$W/expected_all")" $N "(each expected answer names its own bad token)"
cmp -s "$W/got_all" "$W/expected_all"
ok $? "$N malformed forecasts sent at once: every answer is its own, byte for byte"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'BODIES-%'")" 0 "none of them stored"

# /health under load: every body whole (liveness only: nothing about the registration)
: > "$W/health.cfg"
for i in $(seq 1 50); do
  [ "$i" -gt 1 ] && echo next >> "$W/health.cfg"
  printf 'url = "%s/health"\noutput = "%s/health%d"\n' "$FP" "$W" "$i" >> "$W/health.cfg"
done
curl -s --parallel --parallel-immediate --parallel-max 50 -K "$W/health.cfg"
good=0
for i in $(seq 1 50); do
  jq -e '. == {"status": "ok"}' \
     "$W/health$i" >/dev/null 2>&1 && good=$((good + 1))
done
is "$good" 50 "50 /health requests at once: every body is whole, {\"status\":\"ok\"}"
is "$(http_status "$FP/health")" 200 "the worker still serves"
