# SIGTERM reaches the worker (pg_terminate_backend, as a fast shutdown or a
# DROP DATABASE would send it) while a batch of forecasts is in hand: a CSMS
# trigger makes every apply slow.  The worker finishes what it has (commit,
# answers), then exits and is started again.  Every request gets an answer
# (connections accepted before the signal are served too), every 204 is
# stored, and the new worker serves.
. "$(dirname "$0")/tap.sh"
plan 7
N=30
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
url="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast"
W=$(mktemp -d)
cleanup() {
  sql "DROP TRIGGER IF EXISTS sigterm_slow ON capacity_forecast; DROP FUNCTION IF EXISTS test.sigterm_slow()" >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
worker_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'"; }
post() {   # post REQUEST-ID BODY-FILE: the HTTP status
  http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
    -H "X-Request-ID: $1" --data-binary "@$2" "$url"
}

sql "SELECT test.emergency_body('SIGTERM-G', now() + interval '20 min', now() + interval '1 hour', 7)" > "$W/warm.json"
deadline=$((SECONDS + 15))   # until the worker accepts the new token
until [ "$(post SIGTERM-WARMUP "$W/warm.json")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done

sql "CREATE FUNCTION test.sigterm_slow() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END \$\$;
     CREATE TRIGGER sigterm_slow AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.sigterm_slow();"
for i in $(seq 1 $N); do
  sql "SELECT test.emergency_body('SIGTERM-G$((i % 5))', now() + interval '20 min', now() + interval '1 hour', $((10 + i)))" > "$W/body$i.json"
  [ "$i" -gt 1 ] && echo next >> "$W/curl.cfg"
  cat >> "$W/curl.cfg" <<CFG
url = "$url"
request = "POST"
header = "Content-Type: application/json"
header = "Authorization: Token $token"
header = "X-Request-ID: SIGTERM-$i"
data-binary = "@$W/body$i.json"
output = "/dev/null"
write-out = "SIGTERM-$i %{http_code} %{exitcode}\n"
CFG
done
old=$(worker_pid)
curl -s --parallel --parallel-immediate --parallel-max $N -m 30 -K "$W/curl.cfg" > "$W/out.txt" &
curl_pid=$!
# a batch of these requests is in hand once the worker sleeps in their
# trigger (its query column alone would not do: it keeps the last activity)
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker' AND wait_event = 'PgSleep')" 20
ok $? "the worker is applying a batch (each apply sleeps 0.2 s)"
is "$(sql "SELECT pg_terminate_backend($old)")" t "SIGTERM to the worker (pg_terminate_backend)"
wait "$curl_pid"

is "$(awk '$2 == "000"' "$W/out.txt" | wc -l)" 0 "no request lost its connection without an answer"
is "$(awk '$2 == "204"' "$W/out.txt" | wc -l)" $N "all $N requests answered 204"
ids=$(awk '$2 == "204" {print "\x27" $1 "\x27"}' "$W/out.txt" | paste -sd,)
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id IN ('-'${ids:+,$ids})")" $N \
   "every request answered 204 is stored"
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker' AND pid <> $old)" 20
ok $? "a new worker was started"
sql "DROP TRIGGER sigterm_slow ON capacity_forecast"
deadline=$((SECONDS + 15))
until [ "$(post SIGTERM-AFTER "$W/warm.json")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id = 'SIGTERM-AFTER'")" 1 \
   "the new worker stores and answers forecasts"
