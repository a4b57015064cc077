# The worker on its own clock at the instants that matter, through datefudge preloaded into a
# cluster of this test's own (libfaketime does not reach the worker): at local midnight
# tomorrow's plan comes into force and a LISTENing client hears elmo_capacity_changed within
# 1 s, since = midnight; at 10:05 (elmo_oscp.day_ahead_deadline) a registered group without
# tomorrow's day-ahead assignment gets the alert day_ahead_missing: a WARNING in the server
# log and NOTIFY elmo_alert, once.  The clock is yesterday's in Taipei, so the test never
# depends on when it runs.
. "$(dirname "$0")/tap.sh"
FUDGE=$(ls /usr/lib/*/datefudge/datefudge.so 2>/dev/null | head -n1)
[ -n "$FUDGE" ] || { echo "1..0 # SKIP datefudge not installed (test/deps.sh installs it)"; exit 0; }
plan 12
W=$(mktemp -d /tmp/elmo_dayahead.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
cleanup() { [ -n "${LPID:-}" ] && kill "$LPID" 2>/dev/null; cluster_stop immediate; [ -n "${KEEPW:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
cc -O2 -Wall -I"$(pg_config --includedir)" -o "$W/listen_stamp" "$TOP/test/tools/listen_stamp.c" \
   -L"$(pg_config --libdir)" -lpq || { echo "Bail out! cannot build the LISTEN client"; exit 1; }

YESTERDAY=$(TZ=Asia/Taipei date -d yesterday +%F)
TODAY=$(TZ=Asia/Taipei date +%F)
G=DAYA-G1
start_at() {   # start_at LOCAL-TIME: the cluster (re)started with its clock at that instant of yesterday
  cluster_stop fast
  BACK=$(( $(date +%s) - $(date -d "$YESTERDAY $1 +08:00" +%s) ))
  CL_ENV="LD_PRELOAD=$FUDGE DATEFUDGE=$BACK" cluster_start
}
http=$(free_port 23500)
cluster_init "$W/pg" elmo_dayahead "$http" "elmo_oscp.public_url = 'http://127.0.0.1:$http/oscp/fp/2.0'" \
  "elmo_test.sim_port = '$(free_port 23600)'" >/dev/null
start_at 10:04:30 && as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_dayahead &&
wait_listener 30 && psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null 2>&1
ok $? "a cluster of its own, its clock at $YESTERDAY 10:04:30 in Taipei"
token=$(sql "SELECT test.fake_registration()")
deadline=$((SECONDS + 15))
until [ "$(sql "SELECT (test.post('heartbeat', '{\"offline_mode_at\":\"2030-01-01T00:00:00+08:00\"}')).status")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.1; done

# ---------------------------------------------------------------- 10:05, no plan for tomorrow
# DAYA-G1 had ELMO's plan for today (assigned the day before); DAYA-G2 is in elmo_group_settings
sql "INSERT INTO capacity_forecast (group_id, forecast_type, kind, forecast_day, received_at, request_id, payload)
     VALUES ('$G', 'CONSUMPTION', 'day_ahead', '$YESTERDAY', now() - interval '1 day', 'DAYA-R0', '{}');
     INSERT INTO elmo_group_settings VALUES ('DAYA-G2', 50)" >/dev/null
LOG0=$(stat -c %s "$W/pg/server.log")
"$W/listen_stamp" 60 elmo_alert > "$W/alerts" 2>"$W/listen.err" &
LPID=$!
is "$(sql "SELECT count(*) FROM elmo_alerts")" 0 "no alert before 10:05"
wait_sql "EXISTS (SELECT 1 FROM elmo_alerts WHERE alert = 'day_ahead_missing')" 40
ok $? "by 10:05 the alert day_ahead_missing"
is "$(sql "SELECT string_agg(group_id, ' ' ORDER BY group_id) FROM elmo_alerts WHERE alert = 'day_ahead_missing'")" "DAYA-G1 DAYA-G2" \
   "for the group ELMO assigned before and the one in elmo_group_settings"
deadline=$((SECONDS + 5)); until [ "$(grep -c day_ahead_missing "$W/alerts")" -ge 2 ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
is "$(grep -c '"alert" : "day_ahead_missing"' "$W/alerts")" 2 "NOTIFY elmo_alert, once per group"
is "$(tail -c +$((LOG0 + 1)) "$W/pg/server.log" | grep -c 'WARNING:  elmo_oscp alert day_ahead_missing')" 2 "a WARNING in the server log for each"
kill "$LPID" 2>/dev/null; wait "$LPID" 2>/dev/null; LPID=

# ---------------------------------------------------------------- midnight
start_at 23:59:40 && wait_listener 30
ok $? "restarted at $YESTERDAY 23:59:40"
"$W/listen_stamp" 60 elmo_capacity_changed > "$W/heard" 2>"$W/listen.err" &
LPID=$!
deadline=$((SECONDS + 10)); until grep -q ready "$W/heard" || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
deadline=$((SECONDS + 15)); st=
until [ "$st" = 204 ] || [ $SECONDS -ge $deadline ]; do
  st=$(sql "SELECT (test.post('update_group_capacity_forecast', test.day_body('$G', '$TODAY', 120), 'DAYA-1')).status"); done
is "$st $(sql "SELECT kind FROM capacity_forecast WHERE request_id = 'DAYA-1'")" "204 day_ahead" \
   "tomorrow's plan (120 kW, $TODAY), received before midnight: a day_ahead"
is "$(sql "SELECT coalesce(capacity::text, 'NULL') || ' ' || (until = '$TODAY 00:00+08') FROM capacity_in_force WHERE group_id = '$G'")" \
   "NULL true" "nothing in force yet; the next change at midnight"
wait_sql "now() > '$TODAY 00:00:02+08'" 40
heard=$(awk -F'\t' '$2 == "elmo_capacity_changed"' "$W/heard" | grep "\"$G\"" | head -n1)
since=$(cut -f3 <<<"$heard" | jq -r .since)
is "$(cut -f3 <<<"$heard" | jq -r '"\(.group_id) \(.capacity) \(.kind)"') $(date -d "$since" +%s)" \
   "$G 120 day_ahead $(date -d "$TODAY 00:00 +08:00" +%s)" "at midnight: elmo_capacity_changed, 120 kW day_ahead, since midnight"
late=$(( $(cut -f1 <<<"$heard") - BACK * 1000 - $(date -d "$TODAY 00:00 +08:00" +%s) * 1000 ))
[ "$late" -ge 0 ] && [ "$late" -le 1000 ]
ok $? "heard within 1 s of midnight (${late} ms, on the cluster's clock)"
is "$(sql "SELECT capacity || ' ' || kind FROM capacity_in_force WHERE group_id = '$G'")" "120 day_ahead" "capacity_in_force follows"
