# A forecast answered 204 survives an immediate-mode restart (a crash) of the
# cluster; outgoing messages queued or in flight at the crash are delivered
# afterwards, exactly once as seen by ELMO.
. "$(dirname "$0")/tap.sh"
plan 7
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
url="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast"
body=$(sql "SELECT test.emergency_body('G-DURABLE', now() + interval '20 min', now() + interval '80 min', 42)")
rid=DURABLE$(date +%s%N)

# the worker may need a moment to load the new token
deadline=$((SECONDS + 15))
until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
          -H "X-Request-ID: $rid" --data-binary "$body" "$url")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
is "$(sql "SELECT count(*) FROM capacity_forecast WHERE request_id = '$rid'")" 1 "forecast answered 204 and stored"

as_pg "$PGBIN/pg_ctl" -D "$PGHOST/data" -m immediate -w stop >/dev/null 2>&1
ok $? "cluster stopped in immediate mode (a crash)"
as_pg "$PGBIN/pg_ctl" -D "$PGHOST/data" -l "$PGHOST/server.log" -w -t 60 start >/dev/null
ok $? "cluster restarted"
is "$(sql "SELECT count(*) FROM capacity_forecast WHERE request_id = '$rid'")" 1 "the forecast is still there after the crash"
is "$(sql "SELECT count(*) FROM capacity_forecast_block b JOIN capacity_forecast f ON f.id = b.forecast_id WHERE f.request_id = '$rid'")" 1 "with its block"
wait_listener 30 >/dev/null 2>&1
is "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
       -H "X-Request-ID: $rid" --data-binary "$body" "$url")" 204 "the same X-Request-ID again after the restart: 204, stored once"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id = '$rid'")" 1 "received once"
