# The recommended install, CREATE EXTENSION elmo_oscp SCHEMA elmo: the pgTAP
# suites of the worker (HTTP in, CSMS triggers, outbound to the simulator,
# automatic usage reports), the API and the day's plan pass with the extension
# there; and the example CSMS works from sessions whose search_path does not
# name that schema.
. "$(dirname "$0")/tap.sh"
SUITES=(00_foundation 10_inbound_http 20_failing_triggers outbound_http api_arguments day_plan 50_example_csms)
plan $(( ${#SUITES[@]} + 10 ))
SIM=http://127.0.0.1:$ELMO_SIM_PORT
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
OUT=$(mktemp /tmp/e2e17_listen.XXXXXX)
LPID=
restore() {
  [ -n "$LPID" ] && kill "$LPID" 2>/dev/null && wait "$LPID" 2>/dev/null
  PGOPTIONS='-c client_min_messages=warning -c search_path=public,elmo' psql -Xq -c "SELECT test.reset()" \
    -c "DROP SCHEMA IF EXISTS csms CASCADE" -c "DROP EXTENSION IF EXISTS elmo_oscp" -c "DROP SCHEMA IF EXISTS elmo CASCADE" \
    -c "CREATE EXTENSION elmo_oscp" >/dev/null 2>&1
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
  rm -f "$OUT"
}
trap restore EXIT
trap 'exit 130' INT TERM
export PGOPTIONS='-c client_min_messages=warning'
LOG=$ELMO_TEST_WORK/pg/server.log
L0=$(stat -c %s "$LOG")

sql "SELECT test.reset()" >/dev/null 2>&1
psql -Xq -v ON_ERROR_STOP=1 -c "DROP EXTENSION elmo_oscp" -c "CREATE SCHEMA elmo" -c "CREATE EXTENSION elmo_oscp SCHEMA elmo" >/dev/null
ok $? "CREATE EXTENSION elmo_oscp SCHEMA elmo"
is "$(sql "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proname LIKE '%elmo%'")" 0 \
   "nothing of it in public"
deadline=$((SECONDS + 15))
until tail -c +$((L0 + 1)) "$LOG" | grep -q 'found in schema elmo, serving OSCP' || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
tail -c +$((L0 + 1)) "$LOG" | grep -q 'found in schema elmo, serving OSCP'
ok $? "the worker found it (its log says so; /health is liveness only)"

# The suites name the extension's objects unqualified: they run as a CSMS
# role would after ALTER ROLE ... SET search_path = public, elmo.
for s in "${SUITES[@]}"; do
  PGOPTIONS="$PGOPTIONS -c search_path=public,elmo" pg_prove -Q --ext .sql -d "$PGDATABASE" "$TOP/test/pgtap/$s.sql" >"$OUT" 2>&1
  rc=$?
  [ $rc -ne 0 ] && sed 's/^/#   /' "$OUT" | tail -n 15 >&2
  ok $rc "pgTAP $s, with the extension in schema elmo"
done

# The example CSMS, loaded and used by sessions that do not have elmo on their search_path.
TOKEN=$(PGOPTIONS="$PGOPTIONS -c search_path=public,elmo" sql "SELECT test.fake_registration()")
psql -Xq -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS csms CASCADE" -f "$TOP/examples/csms.sql" \
     -c "INSERT INTO csms.station VALUES ('EX-E1', 'schema test')" \
     -c "INSERT INTO csms.charger (charger_id, station_id, max_kw) VALUES ('EX-E1-A', 'EX-E1', 11), ('EX-E1-B', 'EX-E1', 50)" >"$OUT" 2>&1
rc=$?; [ $rc -ne 0 ] && sed 's/^/#   /' "$OUT"
ok $rc "examples/csms.sql loads from a session with the default search_path"
is "$(psql -XAtc 'SHOW search_path')" '"$user", public' "(that search_path: no elmo)"

PGAPPNAME=e2e17-listen "$TOP/examples/listen.sh" --poll 0.1 >"$OUT" 2>&1 &
LPID=$!
tomorrow=$(sql "SELECT elmo.elmo_tomorrow()")
body=$(PGOPTIONS="$PGOPTIONS -c search_path=public,elmo" sql "SELECT test.day_body('EX-E1', '$tomorrow', 40)")
deadline=$((SECONDS + 15))
until grep -q '^[0-9:]* listening on database' "$OUT" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
is "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $TOKEN" -H 'X-Request-ID: E2E17-DAY' \
        --data-binary "$body" "$FP/update_group_capacity_forecast")" 204 "ELMO's day-ahead (40 kW) answered 204"
is "$(sql "SELECT string_agg(charger_id || '=' || limit_kw, ' ' ORDER BY charger_id) FROM csms.charger_limit
            WHERE valid_from = '$tomorrow'::timestamp AT TIME ZONE current_setting('elmo_oscp.timezone')")" 'EX-E1-A=11.0 EX-E1-B=29.0' \
   "the example's trigger, run by the worker, split it across the chargers"
is "$(sql "SELECT elmo.elmo_capacity_at('EX-E1', '$tomorrow'::timestamp AT TIME ZONE current_setting('elmo_oscp.timezone') + interval '12 hours')
                   || ' ' || (SELECT count(*) FROM elmo.elmo_day_plan('EX-E1') WHERE capacity = 40)")" '40 24' \
   "elmo.elmo_capacity_at and elmo.elmo_day_plan, qualified, from such a session"
is "$(sql "SELECT csms.recompute_all('EX-E1', '$tomorrow', '$tomorrow')")" 2 \
   "csms.recompute_all() from a session without elmo on its search_path"
deadline=$((SECONDS + 15))
until grep -q "new limits for station EX-E1 on $tomorrow" "$OUT" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
grep -Eq "ELMO forecast #[0-9]+ \(day_ahead\) for group EX-E1, day $tomorrow" "$OUT" && grep -Eq '^ +40 KW$|  40 KW' "$OUT" \
  && grep -Eq 'EX-E1-B +\(max 50 kW\) +00:00-24:00 29\.0 kW' "$OUT"
rc=$?; [ $rc -ne 0 ] && sed 's/^/#   /' "$OUT" | tail -n 15
ok $rc "examples/listen.sh, from such a session, prints the forecast and the new limits"
