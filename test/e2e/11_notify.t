# A LISTENing CSMS is told of every stored forecast (channel elmo_capacity_forecast).
. "$(dirname "$0")/tap.sh"
plan 3
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
url="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast"
out=$(mktemp)
# a listener that stays connected for a few seconds and prints what it hears
( psql -X -c "LISTEN elmo_capacity_forecast" -c "SELECT pg_sleep(4)" -c "SELECT 1" > "$out" 2>&1 ) &
lpid=$!
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(4)%')" 10
body=$(sql "SELECT test.emergency_body('NOTIFY-G1', now() + interval '20 min', now() + interval '1 hour', 33)")
deadline=$((SECONDS + 15))
until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
          -H "X-Request-ID: NOTIFY-1" --data-binary "$body" "$url")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
wait "$lpid"
grep -q 'Asynchronous notification "elmo_capacity_forecast"' "$out"; ok $? "the listener got a notification"
id=$(sql "SELECT id FROM capacity_forecast WHERE request_id = 'NOTIFY-1'")
grep -q "\"id\" *: *$id" "$out"; ok $? "its payload names the forecast id ($id)"
grep -q '"kind" *: *"emergency"' "$out"; ok $? "and its kind"
rm -f "$out"
