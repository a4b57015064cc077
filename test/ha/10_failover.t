# High availability with a real stack: etcd, two PostgreSQL nodes under Patroni
# in synchronous mode, HAProxy sending ELMO's callbacks to the worker of the
# primary, the simulator as ELMO.  Under a steady stream of forecasts:
#   1. kill -9 of the primary's postmaster;
#   2. the standby cut off (the primary's walsender stopped) while commits wait
#      for it, then kill -9 of the primary's postmaster;
#   3. a switchover by patronictl.
# Each time: every forecast answered 204 is on the new primary, and the worker
# serves through HAProxy within a measured time.  After 1, the outgoing messages
# queued and in flight on the old primary are delivered from the new one.
. "$(dirname "$0")/../e2e/tap.sh"
. "$(dirname "$0")/stack.sh"
plan 28

G=B6734_AE0100_00848825118
A=B6734_AE0100_00848825118 B=B6734_AE0100_00848821001 C=Q1907_CC4701_18364851681
FAILOVER_DEADLINE=30     # seconds from the fault to a 204 through HAProxy
SUMMARY=()

ha_setup
cleanup() { ha_stop; if [ -n "${KEEP:-}" ]; then echo "# kept $HA_WORK"; else rm -rf "$HA_WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
T0=$(now_ms)

# ---- the stack
ha_start_etcd; ok $? "etcd answers on 127.0.0.1:$ETCD_PORT"
ha_start_node 1 && poll 60 is_primary 1
ok $? "Patroni bootstraps node1 (${HA_HOST[1]}) as the primary"
ha_start_node 2 && poll 120 is_sync_standby 2
ok $? "node2 (${HA_HOST[2]}) is cloned and becomes the synchronous standby"
pgq 1 "CREATE DATABASE csms" postgres >/dev/null && pgq 1 "CREATE EXTENSION elmo_oscp" >/dev/null
ok $? "CREATE EXTENSION elmo_oscp on the primary"
ha_start_haproxy && sim_start "$SIM_PORT" --allow-local-urls --no-schedule --handshake-delay-ms 200 && poll 30 haproxy_up
ok $? "HAProxy forwards $ELMO_PUBLIC_URL to node1's worker"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FRONT_PORT/sim/state")" 404 \
   "HAProxy forwards nothing outside the OSCP path"

# ---- registration through the real flow: our register goes to the simulator,
# its register callback and handshake come back through HAProxy
pgq 1 "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null 2>&1
registered() { [ "$(pgq 1 "SELECT state || ',' || connected FROM elmo_registration")" = "registered,true" ]; }
poll 30 registered
ok $? "registered and connected: ELMO's register and handshake reached the worker through HAProxy"
is "$(curl -s "$SIM/sim/callbacks" | jq -r '[.[] | select(.kind == "register" or .kind == "handshake") | "\(.kind) \(.url) \(.status)"] | join(", ")')" \
   "register $ELMO_PUBLIC_URL/register 204, handshake $ELMO_PUBLIC_URL/handshake 204" \
   "ELMO's callbacks went to the public URL and were answered 204"
diag "stack up and registered in $(( ($(now_ms) - T0) / 1000 )) s"

# ---- helpers for one fault
# forecasts the simulator got a 204 for since the last reset of its record
acked_count() { curl -s "$SIM/sim/callbacks?kind=emergency" | jq '[.[] | select(.status == 204)] | length'; }
acked_at_least() { [ "$(acked_count)" -ge "$1" ]; }
sim_idle() { [ "$(curl -s "$SIM/sim/callbacks" | jq '[.[] | select(.state == "queued" or .state == "sending")] | length')" = 0 ]; }

# before_fault — a clean record, the load running, at least 200 forecasts answered
before_fault() {
  curl -s -o /dev/null -X DELETE "$SIM/sim/callbacks"
  ha_load_start "$G"
  poll 60 acked_at_least 200
}

# measure_failover OLD NEW — times from the fault (FAULT_AT) to NEW being the
# primary, its listener up, and HAProxy serving it
measure_failover() {
  local old=$1 new=$2 t_promoted t_listener t_served
  poll $FAILOVER_DEADLINE is_primary "$new" && t_promoted=$(( $(now_ms) - FAULT_AT ))
  poll $FAILOVER_DEADLINE listener_up "$new" && t_listener=$(( $(now_ms) - FAULT_AT ))
  # HAProxy sends nothing to the old primary any more: any 204 comes from NEW
  poll $FAILOVER_DEADLINE haproxy_up && t_served=$(( $(now_ms) - FAULT_AT ))
  diag "node$new promoted after ${t_promoted:-?} ms, its worker listening after ${t_listener:-?} ms," \
       "served through HAProxy after ${t_served:-?} ms"
  SERVED_MS=${t_served:-none}
  [ -n "${t_served:-}" ]
}

# after_fault NEW LABEL — 200 more forecasts answered, the load stopped, every
# forecast answered 204 looked up on NEW; sets LOST
after_fault() {
  local new=$1 base
  base=$(acked_count)
  poll 60 acked_at_least $((base + 200))
  ha_load_stop
  poll 60 sim_idle
  curl -s "$SIM/sim/callbacks?kind=emergency" >"$HA_WORK/callbacks.json"
  jq -r '.[] | select(.status == 204) | .headers["x-request-id"]' "$HA_WORK/callbacks.json" >"$HA_WORK/acked"
  diag "forecasts sent: $(jq length "$HA_WORK/callbacks.json");" \
       "answers: $(jq -r 'group_by(.status) | map("\(.[0].status // .[0].error): \(length)") | join(", ")' "$HA_WORK/callbacks.json")"
  LOST=$( { echo "CREATE TEMP TABLE acked (request_id text);"; echo "COPY acked FROM STDIN;"
            cat "$HA_WORK/acked"; echo '\.'
            echo "SELECT string_agg(request_id, ' ') FROM acked a"
            echo " WHERE NOT EXISTS (SELECT 1 FROM elmo_received_message r WHERE r.request_id = a.request_id);"
          } | as_pg psql -h "$HA_WORK/n$new" -p "$PG_PORT" -U postgres -d csms -XAtq -v ON_ERROR_STOP=1)
  LOST_N=$(echo $LOST | wc -w)
  [ "$LOST_N" -eq 0 ] || diag "answered 204 but missing on node$new: $LOST_N (e.g. $(echo $LOST | cut -d' ' -f1-5))"
  ACKED_N=$(wc -l <"$HA_WORK/acked")
  SUMMARY+=("$2: served after $SERVED_MS ms, $LOST_N of $ACKED_N answered 204 missing")
}

# applied_on NEW — every forecast answered 204 is also in capacity_forecast
applied_on() {
  local missing
  missing=$( { echo "CREATE TEMP TABLE acked (request_id text);"; echo "COPY acked FROM STDIN;"
               cat "$HA_WORK/acked"; echo '\.'
               echo "SELECT count(*) FROM acked a WHERE NOT EXISTS"
               echo " (SELECT 1 FROM capacity_forecast f WHERE f.request_id = a.request_id);"
             } | as_pg psql -h "$HA_WORK/n$1" -p "$PG_PORT" -U postgres -d csms -XAtq)
  [ "$missing" = "$LOST_N" ]
}

# ---- 1. kill -9 of the primary's postmaster, with outgoing messages queued and in flight
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
     -d '{"delay_ms":4000,"count":3,"path":"update_group_measurements"}' "$SIM/sim/fault"
pgq 1 "SELECT elmo_report_usage(g, 100 + r) FROM (VALUES ('$A'), ('$B'), ('$C')) v(g), generate_series(1, 2) r ORDER BY r, g" >/dev/null
OUT_IDS=$(pgq 1 "SELECT string_agg(request_id, ' ' ORDER BY request_id) FROM elmo_outbox WHERE message = 'update_group_measurements'")
in_flight() { [ "$(pgq 1 "SELECT count(*) FROM elmo_outbox WHERE message = 'update_group_measurements' AND state = 'sending'")" = 3 ]; }
poll 20 in_flight; in_flight_ok=$?
before_fault; load_ok=$?
ok $((in_flight_ok + load_ok)) "1: under load (forecasts answered 204 through HAProxy), 3 usage reports in flight and 3 queued"
FAULT_AT=$(now_ms); kill -9 "$(postmaster_pid 1)"
measure_failover 1 2
ok $? "1: after kill -9 of node1's postmaster, Patroni promotes node2 and its worker serves through HAProxy"
after_fault 2 "kill -9"
is "$LOST_N" 0 "1: every one of the $ACKED_N forecasts answered 204 is on node2"
poll 30 applied_on 2; ok $? "1: and applied (in capacity_forecast)"
delivered_on2() { [ "$(pgq 2 "SELECT count(*) FROM elmo_outbox WHERE message = 'update_group_measurements' AND state = 'delivered'")" = 6 ]; }
poll 60 delivered_on2
ok $? "1: the 6 usage reports queued on node1 are delivered from node2"
curl -s "$SIM/sim/messages?path=update_group_measurements" >"$HA_WORK/measurements.json"
seen=$(jq -r '[.[] | select(.status == 204) | .headers["x-request-id"]] | unique | sort | join(" ")' "$HA_WORK/measurements.json")
is "$seen" "$OUT_IDS" "1: ELMO accepted each under the X-Request-ID it was given on node1"
dups=$(jq '[group_by(.headers["x-request-id"])[] | select(length > 1)] | length' "$HA_WORK/measurements.json")
diag "reports ELMO received twice (sent by node1, resent by node2, same X-Request-ID): $dups"
order_ok=0
for g in $A $B $C; do
  got=$(jq -r --arg g "$g" '[.[] | select(.status == 204 and .body.group_id == $g) | .body.measurements[0].value]
        | reduce .[] as $v ([]; if index($v) then . else . + [$v] end) | map(tostring) | join(",")' "$HA_WORK/measurements.json")
  [ "$got" = "101,102" ] || { order_ok=1; diag "group $g: ELMO got the readings in the order $got"; }
done
ok $order_ok "1: within each group, ELMO got them in the order they were queued"
poll 120 is_sync_standby 1
ok $? "1: node1 rejoins (pg_rewind) as the synchronous standby"

# ---- 2. the standby cut off, then the primary killed: the stream pauses, node2's
# walsender is stopped with everything sent, the stream resumes, and the worker's
# next commit waits for a standby that will never have it
before_fault; load_ok=$?
ha_load_stop; poll 60 sim_idle
walsender=$(pgq 2 "SELECT pid FROM pg_stat_replication WHERE application_name = 'node1'")
kill -STOP "$walsender"
all_sent=$(pgq 2 "SELECT sent_lsn = pg_current_wal_flush_lsn() FROM pg_stat_replication WHERE application_name = 'node1'")
ha_load_start "$G"
waits_for_standby() {
  [ "$(pgq 2 "SELECT wait_event = 'SyncRep' AND pg_current_wal_flush_lsn() > (SELECT sent_lsn FROM pg_stat_replication
              WHERE application_name = 'node1') FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'")" = t ]
}
poll 10 waits_for_standby; waits=$?
[ "$all_sent" = t ] || diag "WAL not yet sent when the walsender was stopped"
ok $((load_ok + waits)) "2: under load, node2's walsender stopped: the worker's commit waits for the standby"
FAULT_AT=$(now_ms); kill -9 "$(postmaster_pid 2)"
kill -9 "$walsender"     # what it holds never reaches node1, as over a broken link
measure_failover 2 1
ok $? "2: after kill -9 of node2's postmaster, Patroni promotes node1 and its worker serves through HAProxy"
after_fault 1 "standby cut off + kill -9"
is "$LOST_N" 0 "2: every one of the $ACKED_N forecasts answered 204 is on node1 (none answered before the standby had it)"
poll 30 applied_on 1; ok $? "2: and applied (in capacity_forecast)"
poll 120 is_sync_standby 2
ok $? "2: node2 rejoins (pg_rewind) as the synchronous standby"

# ---- 3. a switchover by patronictl
before_fault; load_ok=$?
ok $load_ok "3: under load"
FAULT_AT=$(now_ms)
as_pg env HOME="$HA_WORK" patronictl -c "$HA_WORK/n1/patroni.yml" switchover --leader node1 --candidate node2 --force >"$HA_WORK/switchover.log" 2>&1
ok $? "3: patronictl switchover --leader node1 --candidate node2"
measure_failover 1 2
ok $? "3: node2 is the primary and its worker serves through HAProxy"
after_fault 2 "switchover"
is "$LOST_N" 0 "3: every one of the $ACKED_N forecasts answered 204 is on node2"
poll 30 applied_on 2; ok $? "3: and applied (in capacity_forecast)"
poll 120 is_sync_standby 1
ok $? "3: node1 follows as the synchronous standby"
is "$(pgq 2 "SELECT count(*) FROM elmo_outbox WHERE state NOT IN ('delivered')")" 0 "no outgoing message left undelivered"
for line in "${SUMMARY[@]}"; do diag "$line"; done
diag "whole run: $(( ($(now_ms) - T0) / 1000 )) s"
