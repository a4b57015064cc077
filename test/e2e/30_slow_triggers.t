# With a CSMS trigger that sleeps on every forecast, 50 forecasts sent at once
# are all answered 204 within a few seconds (one apply budget per batch), are
# all applied later, and a crash in between loses none of them.  The server
# log never holds a token.
. "$(dirname "$0")/tap.sh"
plan 7
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
sql "CREATE OR REPLACE FUNCTION test.sleepy() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END \$\$;
     DROP TRIGGER IF EXISTS sleepy ON capacity_forecast;
     CREATE TRIGGER sleepy AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.sleepy();"
url="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast"
W=$(mktemp -d)
# wait until the worker accepts the new token
deadline=$((SECONDS + 15))
until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" -H "X-Request-ID: SLEEPY-WARMUP" \
          --data-binary '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}' "http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/heartbeat")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.05; done

for i in $(seq 1 50); do
  body=$(sql "SELECT test.emergency_body('SLEEPY-G$((i % 5))', now() + interval '20 min', now() + interval '1 hour', $((10 + i)))")
  printf '%s' "$body" > "$W/body$i.json"
  [ "$i" -gt 1 ] && echo next >> "$W/curl.cfg"   # (a trailing "next" would be an empty request)
  cat >> "$W/curl.cfg" <<CFG
url = "$url"
request = "POST"
header = "Content-Type: application/json"
header = "Authorization: Token $token"
header = "X-Request-ID: SLEEPY-$i"
data-binary = "@$W/body$i.json"
output = "/dev/null"
write-out = "%{http_code} %{time_total}\n"
CFG
done
curl -s --parallel --parallel-immediate --parallel-max 50 -K "$W/curl.cfg" > "$W/out.txt"
is "$(awk '$1 == 204' "$W/out.txt" | wc -l)" 50 "50 forecasts sent at once: all answered 204"
slowest=$(sort -k2 -n "$W/out.txt" | tail -n1 | awk '{print $2}')
awk -v t="$slowest" 'BEGIN { exit !(t < 5.0) }'; ok $? "the slowest answer took ${slowest}s (< 5 s; each trigger sleeps 0.3 s)"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'SLEEPY-%' AND request_id <> 'SLEEPY-WARMUP'")" 50 "all 50 received"
diag "applied before the crash: $(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'SLEEPY-%' AND state = 'applied'")"

as_pg "$PGBIN/pg_ctl" -D "$PGHOST/data" -m immediate -w stop >/dev/null 2>&1
as_pg "$PGBIN/pg_ctl" -D "$PGHOST/data" -l "$PGHOST/server.log" -w -t 60 start >/dev/null
ok $? "crash and restart while applies were pending"
wait_sql "(SELECT count(*) FROM capacity_forecast WHERE request_id LIKE 'SLEEPY-%') = 50" 60
ok $? "all 50 applied after the restart, by the worker alone"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'SLEEPY-%' AND state <> 'applied' AND request_id <> 'SLEEPY-WARMUP'")" 0 "none left unapplied"
sql "DROP TRIGGER sleepy ON capacity_forecast; DROP FUNCTION test.sleepy();"
! grep -qF "$token" "$PGHOST/server.log"; ok $? "the server log holds no token"
rm -rf "$W"
