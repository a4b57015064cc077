# Outgoing messages: business messages wait for our handshake_acknowledge
# (ELMO would answer 403 before it), and a crash with messages queued and in
# flight loses none: each reaches ELMO with its own X-Request-ID, in order
# within its group.
. "$(dirname "$0")/tap.sh"
plan 9
export PGOPTIONS='-c client_min_messages=error'   # usage reports for stations ELMO never assigned capacity to warn
SIM=http://127.0.0.1:$ELMO_SIM_PORT
simpost() { curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d "$2" "$SIM$1"; }
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sql "SELECT test.reset()" >/dev/null
curl -s -o /dev/null -X POST "$SIM/sim/reset"
curl -s -o /dev/null -X DELETE "$SIM/sim/messages"
trap 'simpost /sim/config "{\"handshake_delay_ms\":200}"; curl -s -o /dev/null -X DELETE "$SIM/sim/fault"' EXIT
A=B6734_AE0100_00848825118 B=B6734_AE0100_00848821001 C=Q1907_CC4701_18364851681

# 1. held until the handshake is acknowledged
simpost /sim/config '{"handshake_delay_ms":3000}'
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT state FROM elmo_registration) = 'registered'" 20; ok $? "registered (ELMO's handshake comes 3 s later)"
early=$(sql "SELECT elmo_report_usage('$A', 100)")
wait_sql "(SELECT state FROM elmo_outbox WHERE id = $early) = 'waiting_for_handshake'" 10
ok $? "a usage report queued before the handshake waits (waiting_for_handshake)"
wait_sql "(SELECT state FROM elmo_outbox WHERE id = $early) = 'delivered'" 20
ok $? "delivered once our handshake_acknowledge was accepted"
is "$(curl -s "$SIM/sim/messages?path=update_group_measurements" | jq '[.[] | select(.status == 403)] | length')" 0 \
   "ELMO never had to answer 403 'not connected'"

# 2. a crash with messages queued and in flight
curl -s -o /dev/null -X DELETE "$SIM/sim/messages"
simpost /sim/fault '{"delay_ms":1500,"count":3}'
sql "SELECT elmo_report_usage(g, 100 + r) FROM (VALUES ('$A'), ('$B'), ('$C')) v(g), generate_series(1, 3) r ORDER BY r, g" >/dev/null
wait_sql "(SELECT count(*) FROM elmo_outbox WHERE message = 'update_group_measurements' AND state = 'sending') > 0" 10
ok $? "transfers in flight (ELMO is slow)"
diag "at the crash: $(sql "SELECT string_agg(state || '=' || n, ' ') FROM (SELECT state, count(*) n FROM elmo_outbox WHERE id > $early AND message = 'update_group_measurements' GROUP BY state) s")"
as_pg "$PGBIN/pg_ctl" -D "$PGHOST/data" -m immediate -w stop >/dev/null 2>&1
as_pg "$PGBIN/pg_ctl" -D "$PGHOST/data" -l "$PGHOST/server.log" -w -t 60 start >/dev/null
ok $? "crash (immediate stop) and restart"
wait_sql "(SELECT count(*) FROM elmo_outbox WHERE id > $early AND message = 'update_group_measurements' AND state = 'delivered') = 9" 60
ok $? "all 9 delivered after the restart"
queued=$(sql "SELECT string_agg(request_id, ' ' ORDER BY request_id) FROM elmo_outbox WHERE id > $early AND message = 'update_group_measurements'")
seen=$(curl -s "$SIM/sim/messages?path=update_group_measurements" | jq -r '[.[] | select(.status == 204) | .headers["x-request-id"]] | unique | sort | join(" ")')
is "$seen" "$queued" "ELMO accepted every one, each with its own X-Request-ID (a resend reuses it)"
order_ok=0
for g in $A $B $C; do
  got=$(curl -s "$SIM/sim/messages?path=update_group_measurements" | jq -r --arg g "$g" \
        '[.[] | select(.status == 204 and .body.group_id == $g) | .body.measurements[0].value] | reduce .[] as $v ([]; if index($v) then . else . + [$v] end) | map(tostring) | join(",")')
  [ "$got" = "101,102,103" ] || { order_ok=1; diag "group $g received in order: $got"; }
done
ok $order_ok "within each group, ELMO saw the readings in the order they were queued"
