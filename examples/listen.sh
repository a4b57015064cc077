#!/usr/bin/env bash
# examples/listen.sh — a LISTEN-based CSMS client for examples/csms.sql (bash + psql).
#
# Prints every notification elmo_oscp and the example CSMS send, and the
# per-charger limits a real CSMS would now push to its chargers with OCPP
# SetChargingProfile; also prints the limits in force whenever the capacity
# in force of a station changes (elmo_capacity_changed: an emergency's window
# begins or ends, the plan's value changes at an hour, tomorrow's plan starts
# at midnight, a forecast in force at once arrives): no polling for it.
#
#   PGHOST=... PGDATABASE=... examples/listen.sh [--ocpp] [--poll SECONDS]
#
#   --ocpp          also print each charger's SetChargingProfile.req (OCPP 1.6 JSON)
#   --poll SECONDS  how often psql is asked for notifications (default 0.5)
#
# psql cannot block waiting for a notification, so this client runs one psql
# and asks it for news every --poll seconds (a trivial query on an idle
# connection).  A real CSMS uses its driver's notification wait instead
# (libpq: PQconsumeInput + PQnotifies on socket readiness; psycopg:
# conn.notifies(); node-postgres: client.on('notification')).  Stops on
# SIGINT/SIGTERM or when the connection ends.
set -uo pipefail

OCPP=0
POLL=0.5
while [ $# -gt 0 ]; do
  case $1 in
    --ocpp) OCPP=1 ;;
    --poll) POLL=${2:?--poll needs seconds}; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

coproc PSQL { exec psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=0 -v VERBOSITY=terse 2>&1; }
PSQL_CHILD=$PSQL_PID
PSQL_OUT=${PSQL[0]} PSQL_IN=${PSQL[1]}
trap 'kill "$PSQL_CHILD" 2>/dev/null; exit 0' INT TERM
trap 'kill "$PSQL_CHILD" 2>/dev/null' EXIT

NOTES=()   # notifications not handled yet: "channel<TAB>payload"
ROWS=()    # the last query's output lines

# run SQL: send it, read its output into ROWS up to a marker; notification
# lines psql prints meanwhile are queued in NOTES.
run() {
  local line re='^Asynchronous notification "([^"]*)" with payload "(.*)" received from server process with PID [0-9]+\.$'
  ROWS=()
  printf '%s\n' "$1" '\echo @@listen.sh@@' >&"$PSQL_IN" || { echo "psql has gone" >&2; exit 1; }
  while IFS= read -r line <&"$PSQL_OUT"; do
    [ "$line" = '@@listen.sh@@' ] && return 0
    if [[ $line =~ $re ]]; then
      NOTES+=("${BASH_REMATCH[1]}"$'\t'"${BASH_REMATCH[2]}")
    elif [[ $line == ERROR:* || $line == FATAL:* || $line == psql:* ]]; then
      echo "$line" >&2
    else
      ROWS+=("$line")
    fi
  done
  echo "psql has gone" >&2
  exit 1
}

q() { printf "'%s'" "${1//\'/\'\'}"; }   # a SQL literal
# local time of day (ELMO's zone), seconds only when there are some
hm() { echo "regexp_replace(to_char(($1) AT TIME ZONE csms.tz(), '${2:-}HH24:MI:SS'), ':00\$', '')"; }
stamp() { date '+%H:%M:%S'; }

# The limits of one station for one local day, as they would go to the chargers.
print_limits() {   # STATION DAY
  local st day r
  st=$(q "$1"); day=$(q "$2")
  run "SELECT l.charger_id, c.max_kw,
              string_agg($(hm l.valid_from) || '-' || replace($(hm l.valid_to), '00:00', '24:00')
                         || ' ' || l.limit_kw || ' kW/' || l.limit_a || ' A', ', ' ORDER BY l.valid_from)
         FROM csms.charger_limit l JOIN csms.charger c USING (charger_id)
        WHERE l.station_id = $st
          AND l.valid_from >= $day::date::timestamp AT TIME ZONE csms.tz()
          AND l.valid_from < ($day::date + 1)::timestamp AT TIME ZONE csms.tz()
        GROUP BY 1, 2 ORDER BY 1;"
  [ ${#ROWS[@]} -eq 0 ] && echo "    (no limits: ELMO gave no capacity for that day)"
  for r in "${ROWS[@]}"; do
    IFS=$'\t' read -r ch max segs <<<"$r"
    printf '    %-14s (max %s kW)  %s\n' "$ch" "$max" "$segs"
  done
  if [ $OCPP = 1 ]; then
    run "SELECT c.charger_id, csms.ocpp_profile(c.charger_id, $day::date)
           FROM csms.charger c WHERE c.station_id = $st ORDER BY 1;"
    for r in "${ROWS[@]}"; do
      IFS=$'\t' read -r ch prof <<<"$r"
      echo "    SetChargingProfile -> $ch: $prof"
    done
  fi
}

print_now() {
  run "SELECT station_id, charger_id, limit_kw, limit_a, kind,
              coalesce($(hm valid_to 'MM-DD '), '-')
         FROM csms.charger_limit_now;"
  echo "$(stamp) limits in force now (what each charger must not exceed):"
  local r
  for r in "${ROWS[@]}"; do
    IFS=$'\t' read -r st ch kw a kind until <<<"$r"
    [ "$kind" = none ] && kind='no ELMO limit'
    printf '    %-24s %-14s %7s kW %7s A  %-17s until %s\n' "$st" "$ch" "$kw" "$a" "($kind)" "$until"
  done
}

handle() {   # CHANNEL PAYLOAD
  local ch=$1 p=$2 r
  case $ch in
    elmo_capacity_forecast)
      run "SELECT p->>'id', p->>'group_id', p->>'kind', p->>'forecast_day' FROM (SELECT $(q "$p")::jsonb p) x;"
      IFS=$'\t' read -r id group kind day <<<"${ROWS[0]}"
      echo "$(stamp) ELMO forecast #$id ($kind) for group $group, day $day"
      # its blocks, equal neighbours merged
      run "SELECT $(hm 'min(start_time)' 'MM-DD '), $(hm 'max(end_time)' 'MM-DD '), capacity, unit
             FROM (SELECT b.*, sum(b.brk) OVER (ORDER BY b.start_time) AS g
                     FROM (SELECT start_time, end_time, capacity, unit,
                                  CASE WHEN lag(end_time) OVER w = start_time AND lag(capacity) OVER w = capacity
                                       THEN 0 ELSE 1 END AS brk
                             FROM capacity_forecast_block WHERE forecast_id = $(q "$id")::bigint
                           WINDOW w AS (ORDER BY start_time)) b) x
            GROUP BY g, capacity, unit ORDER BY min(start_time);"
      for r in "${ROWS[@]}"; do
        IFS=$'\t' read -r s e c u <<<"$r"
        printf '    %s .. %s  %s %s\n' "$s" "$e" "$c" "$u"
      done ;;
    csms_charger_limits)
      run "SELECT p->>'station_id', p->>'day', p->>'rows', coalesce(p->>'kind', 'recomputed') FROM (SELECT $(q "$p")::jsonb p) x;"
      IFS=$'\t' read -r st day n why <<<"${ROWS[0]}"
      echo "$(stamp) new limits for station $st on $day ($why, $n rows): push to the chargers"
      print_limits "$st" "$day" ;;
    elmo_registration)
      echo "$(stamp) registration: $p" ;;
    elmo_apply_failed)
      echo "$(stamp) a message from ELMO could not be applied (retried later; see elmo_unapplied): $p" ;;
    elmo_capacity_changed)
      run "SELECT p->>'group_id', coalesce((p->>'capacity') || ' ' || (p->>'unit'), 'none'), coalesce(p->>'kind', 'nothing known'),
                  $(hm "(p->>'since')::timestamptz" 'MM-DD '),
                  EXISTS (SELECT 1 FROM csms.station s WHERE s.station_id = p->>'group_id')
             FROM (SELECT $(q "$p")::jsonb p) x;"
      IFS=$'\t' read -r group cap kind since ours <<<"${ROWS[0]}"
      echo "$(stamp) capacity in force for group $group: $cap ($kind) since $since"
      [ "$ours" = t ] && print_now ;;
    elmo_alert)
      echo "$(stamp) ALERT: $p" ;;
    *)
      echo "$(stamp) $ch: $p" ;;
  esac
}

# the extension's tables by their names, whatever schema it was created in
read -r -d '' FIND_EXTENSION <<'SQL'
DO $$ BEGIN
    PERFORM set_config('search_path', current_setting('search_path') || ', ' || quote_ident(n.nspname), false)
       FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'elmo_oscp';
END $$;
SQL
CHANNELS=(elmo_capacity_forecast elmo_capacity_changed csms_charger_limits elmo_registration elmo_apply_failed elmo_alert)
run "$FIND_EXTENSION
     $(printf 'LISTEN %s; ' "${CHANNELS[@]}") SELECT current_database();"
echo "$(stamp) listening on database ${ROWS[0]:-?} (channels ${CHANNELS[*]})"
print_now

while true; do
  # one round trip: psql prints what arrived meanwhile
  run "SELECT 1;"
  while [ ${#NOTES[@]} -gt 0 ]; do
    # ELMO's forecasts first: the example's trigger notifies before the extension does
    batch=()
    for note in "${NOTES[@]}"; do [[ $note == elmo_capacity_forecast$'\t'* ]] && batch+=("$note"); done
    for note in "${NOTES[@]}"; do [[ $note == elmo_capacity_forecast$'\t'* ]] || batch+=("$note"); done
    NOTES=()
    for note in "${batch[@]}"; do handle "${note%%$'\t'*}" "${note#*$'\t'}"; done
  done
  sleep "$POLL"
done
