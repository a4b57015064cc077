# A reading ELMO refused never becomes the baseline of "cumulative energy never goes down":
# with the simulator, a 1e20 kWh reading answered 400 must not make every later automatic
# report of that group be skipped ("reading below the last one reported").  Readings stamped
# in the future are refused at the call.
. "$(dirname "$0")/tap.sh"
plan 9
export PGOPTIONS='-c client_min_messages=error'
SIM=http://127.0.0.1:$ELMO_SIM_PORT
G1=B6734_AE0100_00848825118
simctl() { curl -fsS -o /dev/null -X "$1" -H 'Content-Type: application/json' ${3:+--data-binary "$3"} "$SIM$2"; }
sim_msgs() { curl -fsS "$SIM/sim/messages"; }
cleanup() {
  psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.usage_source" -c "ALTER SYSTEM RESET elmo_oscp.report_interval" \
       -c "SELECT pg_reload_conf()" >/dev/null 2>&1
  psql -Xq -c "DROP VIEW IF EXISTS public.e2e55_usage" -c "DROP TABLE IF EXISTS public.e2e55_meter" \
       -c "SELECT test.reset()" >/dev/null 2>&1
  curl -s -o /dev/null -X DELETE "$SIM/sim/fault"
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
sql "SELECT test.reset()" >/dev/null
simctl POST /sim/reset '{}'
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 15
ok $? "registered with the simulator"

r1=$(sql "SELECT elmo_report_usage('$G1', 1000)")
is "$(sql "SELECT elmo_wait($r1)")" delivered "a reading of 1000 kWh delivered"
simctl POST /sim/fault '{"status":400,"count":1,"path":"update_group_measurements","message":"value: must be a plausible reading"}'
r2=$(sql "SELECT elmo_report_usage('$G1', 1e20)")
wait_sql "(SELECT state = 'failed' FROM elmo_outbox WHERE id = $r2)" 15
ok $? "a reading of 1e20 kWh: ELMO answers 400, failed"
is "$(sql "SELECT kwh FROM elmo_usage_last WHERE group_id = '$G1'")" 1000 "the baseline is the last reading not refused: 1000"

# automatic reports go on from there
sql "CREATE TABLE public.e2e55_meter (group_id text PRIMARY KEY, kwh numeric NOT NULL);
     INSERT INTO public.e2e55_meter VALUES ('$G1', 1001);
     CREATE VIEW public.e2e55_usage AS SELECT group_id, kwh FROM public.e2e55_meter;
     ALTER TABLE public.e2e55_meter OWNER TO elmo_oscp_csms;    -- read as its owner, never as a superuser
     ALTER VIEW public.e2e55_usage OWNER TO elmo_oscp_csms" >/dev/null
simctl DELETE /sim/messages
psql -Xq -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET elmo_oscp.usage_source = 'public.e2e55_usage'" \
     -c "ALTER SYSTEM SET elmo_oscp.report_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
deadline=$((SECONDS + 20))
until [ "$(sim_msgs | jq "[.[] | select(.body.group_id == \"$G1\" and .status == 204 and .body.measurements[0].value == 1001)] | length")" -ge 1 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
is "$(sim_msgs | jq "[.[] | select(.body.group_id == \"$G1\" and .status == 204 and .body.measurements[0].value == 1001)] | length > 0")" true \
   "the next automatic report (1001 kWh) reaches ELMO"
is "$(sql "SELECT count(*) FROM elmo_usage_skipped WHERE group_id = '$G1'")" 0 "the group is not skipped"
psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.usage_source" -c "SELECT pg_reload_conf()" >/dev/null

# stamped in the future: refused at the call, with SQLSTATE, detail and hint
out=$(psql -XAtq -v VERBOSITY=verbose -c "SELECT elmo_report_usage('$G1', 1002, now() + interval '10 minutes')" 2>&1)
grep -q 'ERROR:  22023: reading for group .* is stamped in the future' <<<"$out"
ok $? "a reading stamped 10 minutes ahead: refused (22023)"
grep -q '^DETAIL:' <<<"$out" && grep -q '^HINT:' <<<"$out"
ok $? "... with a detail and a hint"
is "$(sql "SELECT kwh FROM elmo_usage_last WHERE group_id = '$G1'")" 1001 "the baseline stays the last reading sent (1001)"
