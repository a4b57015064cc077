# capacity_in_force and NOTIFY elmo_capacity_changed, through the real path: forecasts
# POSTed over HTTP into the worker, with block boundaries a few seconds ahead.  A LISTENing
# client (test/tools/listen_stamp.c) must hear each change of a group's capacity in force
# within 1 s of the instant it happens: at a block's start and end, where an emergency
# starts and ends inside the plan, at receipt of a forecast in force at once, and when the
# contract capacity changes; and nothing where the value stays the same.  The table row
# follows, and a CSMS trigger on it sees every change; a CSMS trigger on it that raises
# never costs ELMO its 204, nor the other groups their updates.
. "$(dirname "$0")/tap.sh"
plan 19
G=CIF-G1
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
W=$(mktemp -d /tmp/elmo_cif.XXXXXX)
cleanup() {
  [ -n "${LPID:-}" ] && kill "$LPID" 2>/dev/null
  psql -Xq -c "DROP TABLE IF EXISTS public.e2e52_seen CASCADE" -c "DROP FUNCTION IF EXISTS public.e2e52_on_change() CASCADE" \
       -c "DROP FUNCTION IF EXISTS public.e2e52_bad() CASCADE" \
       -c "SELECT test.reset()" >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -I"$(pg_config --includedir)" -o "$W/listen_stamp" "$TOP/test/tools/listen_stamp.c" \
   -L"$(pg_config --libdir)" -lpq
ok $? "the LISTEN client builds"
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
deadline=$((SECONDS + 15))
until [ "$(sql "SELECT (test.post('heartbeat', '{\"offline_mode_at\":\"2030-01-01T00:00:00+08:00\"}')).status")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
# a CSMS trigger on the table: every change it sees
sql "CREATE TABLE public.e2e52_seen (group_id text, capacity numeric, kind text, since timestamptz);
     CREATE FUNCTION public.e2e52_on_change() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN
         IF NEW.capacity IS DISTINCT FROM OLD.capacity OR NEW.kind IS DISTINCT FROM OLD.kind THEN
             INSERT INTO public.e2e52_seen VALUES (NEW.group_id, NEW.capacity, NEW.kind, NEW.since);
         END IF;
         RETURN NULL;
     END \$\$;
     CREATE TRIGGER e2e52 AFTER UPDATE ON capacity_in_force FOR EACH ROW EXECUTE FUNCTION public.e2e52_on_change();
     -- it runs as the worker's role (elmo_oscp.role), which may write its table
     GRANT INSERT ON public.e2e52_seen TO elmo_oscp_worker" >/dev/null
ok $? "a CSMS trigger on capacity_in_force"

"$W/listen_stamp" 40 elmo_capacity_changed > "$W/heard" 2>"$W/listen.err" &
LPID=$!
deadline=$((SECONDS + 10))
until grep -q ready "$W/heard" || [ $SECONDS -ge $deadline ]; do sleep 0.05; done

post() {   # post REQUEST_ID BODY: prints the HTTP status
  http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
    -H "X-Request-ID: $1" --data-binary "$2" "$FP/update_group_capacity_forecast"
}
# B: a whole second, 3 s ahead.  Forecast 1: 30 kW [B, B+2), 30 [B+2, B+4), 20 [B+4, B+6);
# forecast 2 (an emergency): 10 kW [B+3, B+5).
B=$(sql "SELECT extract(epoch FROM date_trunc('second', clock_timestamp()) + interval '3 s')::bigint")
at() { echo "to_timestamp($B + $1)"; }
blk() { echo "json_build_object('capacity', $3, 'phase', 'ALL', 'unit', 'KW', 'start_time', _elmo_ts($(at "$1")), 'end_time', _elmo_ts($(at "$2")))"; }
f1=$(sql "SELECT json_build_object('group_id', '$G', 'type', 'CONSUMPTION', 'forecasted_blocks',
                 json_build_array($(blk 0 2 30), $(blk 2 4 30), $(blk 4 6 20)))")
f2=$(sql "SELECT json_build_object('group_id', '$G', 'type', 'CONSUMPTION', 'forecasted_blocks', json_build_array($(blk 3 5 10)))")
is "$(post CIF-1 "$f1") $(post CIF-2 "$f2")" "204 204" "two forecasts with boundaries 3 to 9 s ahead: 204"
is "$(sql "SELECT coalesce(capacity::text, 'NULL') || ' ' || (until = $(at 0)) FROM capacity_in_force WHERE group_id = '$G'")" \
   "NULL true" "capacity_in_force at once: nothing in force yet, the next change at the first block's start"
wait_sql "now() > $(at 7)" 20

# what was heard: since (ms), capacity, kind, heard (ms)
heard() {
  awk -F'\t' '$2 == "elmo_capacity_changed" { print $1 "\t" $3 }' "$W/heard" |
  while IFS=$'\t' read -r t p; do
    s=$(jq -r '.since' <<<"$p"); c=$(jq -r '.capacity // "null"' <<<"$p"); k=$(jq -r '.kind // "null"' <<<"$p")
    g=$(jq -r '.group_id' <<<"$p")
    [ "$g" = "$G" ] && echo "$(date -d "$s" +%s%3N) $c $k $t"
  done
}
heard > "$W/h1"
rel=$(awk -v b=$((B * 1000)) '{ printf "%s%d:%s:%s", (NR > 1 ? " " : ""), ($1 - b) / 1000, $2, $3 }' "$W/h1")
is "$rel" "0:30:emergency 3:10:emergency 5:20:emergency 6:null:null" \
   "changes heard at B, B+3 (an emergency below the plan), B+5 (its end), B+6 (nothing known); none at B+2 or B+4 (same value)"
late=$(awk '{ d = $4 - $1; if (d > m) m = d } END { print m + 0 }' "$W/h1")
[ "$late" -le 1000 ] && [ "$(awk '$4 < $1' "$W/h1" | wc -l)" -eq 0 ]
ok $? "each within 1 s of the instant it happened, none before (latest: ${late} ms)"

# a forecast in force at once: heard at receipt
t0=$(date +%s%3N)
f3=$(sql "SELECT test.emergency_body('$G', now() - interval '1 min', now() + interval '1 hour', 15)")
is "$(post CIF-3 "$f3")" 204 "an emergency in force now: 204"
wait_sql "(SELECT capacity = 15 FROM capacity_in_force WHERE group_id = '$G')" 5
ok $? "capacity_in_force: 15 at once"
deadline=$((SECONDS + 5))
until [ "$(heard | awk '$2 == 15' | wc -l)" -ge 1 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
h=$(heard | awk '$2 == 15 { print $1, $4 }')
[ -n "$h" ] && [ $(( ${h#* } - t0 )) -le 1000 ] && [ $(( ${h% *} - t0 )) -ge 0 ]
ok $? "heard within 1 s of the POST, since = its receipt ($(( ${h#* } - t0 )) ms)"

# the contract capacity is part of the rule
t0=$(date +%s%3N)
sql "INSERT INTO elmo_group_settings VALUES ('$G', 12)" >/dev/null
deadline=$((SECONDS + 5))
until [ "$(heard | awk '$2 == 12' | wc -l)" -ge 1 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
h=$(heard | awk '$2 == 12 { print $3, $4 }')
[ "${h% *}" = contract ] && [ $(( ${h#* } - t0 )) -le 1000 ]
ok $? "a contract capacity below it: heard as kind contract within 1 s ($(( ${h#* } - t0 )) ms)"
is "$(sql "SELECT capacity || ' ' || unit || ' ' || kind || ' ' || (until IS NULL) FROM capacity_in_force WHERE group_id = '$G'")" \
   "12 KW contract true" "the row: 12 KW contract, no change known"
is "$(sql "SELECT elmo_capacity_at('$G')")" 12 "elmo_capacity_at agrees"

# the trigger saw each change, with the same since as the notification
is "$(sql "SELECT string_agg(coalesce(capacity::text, 'null') || ':' || coalesce(kind, 'null'), ' ' ORDER BY since) FROM public.e2e52_seen WHERE group_id = '$G'")" \
   "30:emergency 10:emergency 20:emergency null:null 15:emergency 12:contract" "the CSMS trigger on capacity_in_force saw every change, in order"
is "$(sql "SELECT count(*) FROM public.e2e52_seen s WHERE s.group_id = '$G' AND s.since IN ($(at 0), $(at 3), $(at 5), $(at 6))")" 4 \
   "... the scheduled ones with since at their boundaries"
n=$(heard | wc -l)
is "$n" 6 "six notifications for the group in all"
is "$(awk -F'\t' '$2 == "elmo_capacity_changed"' "$W/heard" | head -n1 | cut -f3 | jq -r 'keys_unsorted | join(",")')" \
   "group_id,capacity,unit,kind,since,until" "payload: group_id, capacity, unit, kind, since, until"

# a CSMS trigger on capacity_in_force that raises: ELMO still gets its 204, other groups follow
sql "CREATE OR REPLACE FUNCTION public.e2e52_bad() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN IF NEW.group_id = 'CIF-BAD' THEN RAISE EXCEPTION 'csms bug on capacity_in_force'; END IF; RETURN NULL; END \$\$;
     CREATE TRIGGER e2e52_bad AFTER INSERT OR UPDATE ON capacity_in_force FOR EACH ROW EXECUTE FUNCTION public.e2e52_bad()" >/dev/null
is "$(post CIF-4 "$(sql "SELECT test.emergency_body('CIF-BAD', now() - interval '1 min', now() + interval '1 hour', 7)")") $(post CIF-5 "$(sql "SELECT test.emergency_body('CIF-G2', now() - interval '1 min', now() + interval '1 hour', 8)")")" \
   "204 204" "a forecast whose capacity_in_force trigger raises is answered 204, as is another group's"
wait_sql "(SELECT capacity = 8 FROM capacity_in_force WHERE group_id = 'CIF-G2')" 5
ok $? "the other group's row follows"
wait_sql "(SELECT count(*) = 0 FROM capacity_in_force WHERE group_id = 'CIF-BAD') AND elmo_capacity_at('CIF-BAD') = 7" 5
ok $? "the failing group has no row yet, but its capacity in force is 7 kW all the same"
