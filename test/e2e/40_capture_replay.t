# Every request the real ELMO sent a CSMS (test/captures/real-elmo-wire: the numbered files
# whose direction is "ELMO -> fake CSMS", then everything in inbox/), replayed at the worker
# byte for byte over a raw socket: the captured request line, headers in the captured order
# and spelling, the raw body; only the token in Authorization is swapped for the test's.
# Each is answered 204.  register -> ELMO's token and base URL kept; handshake -> a
# handshake_acknowledge queued with X-Correlation-ID = its X-Request-ID; forecasts -> stored
# with their blocks (+00:00 and +08:00 read as the same instants `date` reads) and classified
# by their shape (24 contiguous hourly blocks of a later local day: day_ahead).  The CSMS's
# adjust requests that ELMO accepted (25a, 25c, 33b, rerun/05) are made at the same point of
# the timeline, so ELMO's replies to them (27a, 27b, 33d, inbox/025) are additional_reply.
# The inbox/ copies of numbered requests (same X-Request-ID) are answered 204 and stored once.
# Runs its own cluster, its clock moved back to the captures' day (2026-11-25, 20:59 in
# Taipei), since classification depends on the day of receipt.  The clock is moved with
# datefudge, not libfaketime: libfaketime's select() wrapper sets a thread-local "don't fake"
# flag, and PostgreSQL 15's postmaster starts background workers from signal handlers that
# interrupt that select(), so the elmo_oscp worker inherited the flag and ran on the real clock.
. "$(dirname "$0")/tap.sh"
CAP=$TOP/test/captures/real-elmo-wire
FUDGE=$(ls /usr/lib/*/datefudge/datefudge.so 2>/dev/null | head -n1)
[ -n "$FUDGE" ] || { echo "1..0 # SKIP datefudge not installed (test/deps.sh installs it)"; exit 0; }
DAY_MS=86400000 TZ_MS=28800000                  # Asia/Taipei: +08:00 all year
lday() { echo $(( ($1 + TZ_MS) / DAY_MS )); }   # epoch ms -> local day number
ms() { date -u -d "$1" +%s%3N; }

# ---- the timeline: pass 1 the numbered files, pass 2 inbox/ (and rerun/), each by time
# <pass> <time> <file> <kind: elmo | adjust>
mapfile -t EVENTS < <(cd "$CAP" && for f in [0-9]*.json inbox/*.json rerun/*.json; do
    jq -r --arg f "$f" 'select(type == "object")
      | (if ($f | test("^(inbox|rerun)/")) then 2 else 1 end) as $pass
      | if .direction == "ELMO -> fake CSMS" then "\($pass) \(.received_at_utc) \($f) elmo"
        elif .direction == "fake CSMS -> ELMO" and (.request.path | endswith("/adjust_group_capacity_forecast"))
             and .response.status == 204 then "\($pass) \(.sent_at_utc) \($f) adjust"
        else empty end' "$f"; done | sort -k1,1n -k2,2 -k3,3)
nreq=0 nadj=0
for e in "${EVENTS[@]}"; do case $e in *elmo) nreq=$((nreq + 1)) ;; *adjust) nadj=$((nadj + 1)) ;; esac; done
plan $((4 + 2 * nreq + nadj + 5))

W=$(mktemp -d /tmp/elmo_replay.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
cleanup() { cluster_stop immediate; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# the captures themselves: consistent, so that replaying them means something
bad=$(cd "$CAP" && for e in "${EVENTS[@]}"; do set -- $e; [ "$4" = elmo ] || continue
  jq -r --arg f "$3" '(.raw_body | utf8bytelength) as $n
    | ([.headers[] | select(.[0] | ascii_downcase == "content-length") | .[1]] == [($n | tostring)]) as $len
    | (.request_line == "\(.method) \(.path) HTTP/1.1") as $line
    | ([.headers[] | select(.[0] | ascii_downcase == "x-request-id")] | length == 1) as $rid
    | if $len and $line and $rid then empty else $f end' "$3"; done)
is "$bad" "" "$nreq ELMO -> CSMS requests, $nadj accepted adjusts: Content-Length = raw body, request line = method + path, one X-Request-ID"

# ---- our own cluster, its clock 30 s before ELMO's first request
first=$(for e in "${EVENTS[@]}"; do set -- $e; echo "$2"; done | sort | head -n1)
back=$(( $(date -u +%s) - $(date -u -d "$first" +%s) + 30 ))   # seconds the clock is moved back
dead=$(free_port 23300)                          # ELMO's URL: nobody listens (outbox retries)
http=$(free_port $((dead + 1)))
CL_ENV="LD_PRELOAD=$FUDGE DATEFUDGE=$back"
cluster_init "$W/pg" elmo_replay "$http" "elmo_oscp.public_url = 'https://csms.example.com/oscp/fp/2.0'" \
  "elmo_test.sim_port = '$dead'" >/dev/null &&
cluster_start && as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_replay &&
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null 2>&1 && wait_listener 30
up=$?
ok $up "a second cluster, its clock moved back ${back} s, listener on 127.0.0.1:$http"
[ $up -eq 0 ] || { echo "Bail out! no cluster"; tail -n 20 "$W/pg/server.log"; exit 1; }
is "$(sql "SELECT _elmo_local_day(now()) || ' ' || current_setting('elmo_oscp.path_prefix')")" \
   "$(date -u -d "@$(( $(lday "$(ms "$first")") * 86400 ))" +%F) /oscp/fp/2.0" \
   "its clock is on the captures' day in Taipei; path prefix as in the captures"

# a registration whose token we know; ELMO's side empty until its register arrives
token=$(sql "SELECT test.fake_registration()")
elmo_url="http://127.0.0.1:$dead/tpc/elmo/oscp/2.0"
sql "UPDATE elmo_registration SET elmo_url = '$elmo_url', elmo_token = NULL, elmo_base_url = NULL"
deadline=$((SECONDS + 15))
until probe=$(http_status -X POST -H "Authorization: Token $token" -H 'X-Request-ID: PROBE' -H 'Content-Type: application/json' \
                --data-binary '{}' "http://127.0.0.1:$http/oscp/fp/2.0/update_group_capacity_forecast")
      [ "$probe" = 400 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
is "$probe $(sql "SELECT count(*) FROM elmo_received_message")" "400 0" \
   "the worker knows the test's token (an empty forecast: 400, not 401); nothing received yet"

# send FILE: the captured request on a fresh connection, only the token swapped; sets CODE
send() {
  jq -j --arg tok "$token" '.request_line + "\r\n"
      + ([.headers[] | if (.[0] | ascii_downcase) == "authorization" then [.[0], ("Token " + $tok)] else . end
          | "\(.[0]): \(.[1])\r\n"] | add) + "\r\n" + .raw_body' "$CAP/$1" > "$W/req"
  CODE=000
  { exec 3<>"/dev/tcp/127.0.0.1/$http"; } 2>/dev/null || return
  cat "$W/req" >&3
  local line=
  IFS= read -r -t 25 line <&3
  exec 3<&- 3>&-
  [[ $line =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]] && CODE=${BASH_REMATCH[1]}
}

declare -A SEEN PENDING   # X-Request-ID -> first file; "group day" -> an adjust is pending
elmo_token= elmo_base="http://127.0.0.1:$dead/oscp/2.0"   # origin of elmo_url + ELMO's relative /oscp/2.0
nfc=0 nhs=0
for e in "${EVENTS[@]}"; do
  set -- $e; f=$3 kind=$4 t=$(ms "$2")
  if [ "$kind" = adjust ]; then
    group=$(jq -r .request.body.group_id "$CAP/$f")
    kw=$(jq -r '"{" + (.request.body.forecasted_blocks | map(.capacity | tostring) | join(",")) + "}"' "$CAP/$f")
    id=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET client_min_messages = error" -c "SET elmo_oscp.enforce_deadlines = off" \
              -c "SELECT elmo_adjust_capacity('$group', '$kw'::numeric[])")
    day=$(( $(lday "$t") + 1 ))
    PENDING["$group $day"]=1
    is "$(sql "SELECT state || ' ' || (day - date '1970-01-01') FROM elmo_adjust_request WHERE outbox_id = '$id'")" "pending $day" \
       "$f: the CSMS asks ELMO for more capacity for $group tomorrow (pending)"
    continue
  fi
  msg=$(jq -r '.path | sub(".*/"; "")' "$CAP/$f")
  rid=$(jq -r '.headers[] | select(.[0] | ascii_downcase == "x-request-id") | .[1]' "$CAP/$f")
  send "$f"
  is "$CODE" 204 "$f: $msg answered 204"
  if [ -n "${SEEN[$rid]:-}" ]; then     # second copy: stored once, nothing applied again
    case $msg in
      register) extra="(SELECT elmo_token = '$elmo_token' FROM elmo_registration)" ;;
      handshake) extra="(SELECT count(*) FROM elmo_outbox WHERE message = 'handshake_acknowledge' AND correlation_id = '$rid') = 1" ;;
      *) extra="(SELECT count(*) FROM capacity_forecast WHERE request_id = '$rid') = 1" ;;
    esac
    is "$(sql "SELECT (SELECT count(*) FROM elmo_received_message WHERE request_id = '$rid') || ' ' || ($extra)")" "1 true" \
       "$f: same X-Request-ID as ${SEEN[$rid]}: stored once, not applied again"
    continue
  fi
  SEEN[$rid]=$f
  body=$(jq -r .raw_body "$CAP/$f")
  case $msg in
    register)
      elmo_token=$(jq -r '.token' <<<"$body")
      wait_sql "(SELECT elmo_token = '$elmo_token' FROM elmo_registration)" 10
      is "$(sql "SELECT state || ' ' || length(elmo_token) || ' ' || (elmo_token = '$elmo_token') || ' ' || elmo_base_url FROM elmo_registration")" \
         "registered ${#elmo_token} true $elmo_base" "$f: ELMO's token kept, its base_url /oscp/2.0 resolved against $elmo_url"
      ;;
    handshake)
      nhs=$((nhs + 1))
      wait_sql "EXISTS (SELECT 1 FROM elmo_outbox WHERE message = 'handshake_acknowledge' AND correlation_id = '$rid')" 10
      is "$(sql "SELECT count(*) || ' ' || (r.handshake_request_id = '$rid') || ' ' || (r.required_behaviour = '$body'::jsonb->'required_behaviour')
                   FROM elmo_outbox o, elmo_registration r WHERE o.message = 'handshake_acknowledge' AND o.correlation_id = '$rid'
                  GROUP BY r.handshake_request_id, r.required_behaviour")" "1 true true" \
         "$f: handshake_acknowledge queued with X-Correlation-ID $rid; required_behaviour kept"
      ;;
    update_group_capacity_forecast)
      nfc=$((nfc + 1))
      group=$(jq -r .group_id <<<"$body")
      # the blocks as `date` reads their times, in epoch ms, with capacity/unit/phase
      mapfile -t T < <(jq -r '.forecasted_blocks[] | .start_time, .end_time' <<<"$body" | date -u -f - +%s%3N)
      want_blocks=$(paste -d' ' <(printf '%s\n' "${T[@]}" | paste -d' ' - -) \
                                <(jq -r '.forecasted_blocks[] | "\(.capacity) \(.unit) \(.phase)"' <<<"$body") | paste -sd';')
      # the shape rule: 24 contiguous hourly blocks covering one whole local day later than the day of receipt
      n=$(( ${#T[@]} / 2 )) s0=${T[0]} shape=0
      if [ $n -eq 24 ] && [ $(( (s0 + TZ_MS) % DAY_MS )) -eq 0 ] && [ "${T[47]}" -eq $((s0 + DAY_MS)) ] \
         && [ "$(lday "$s0")" -gt "$(lday "$t")" ]; then
        shape=1
        for i in $(seq 0 23); do
          [ $(( T[2*i+1] - T[2*i] )) -eq 3600000 ] || shape=0
          [ $i -eq 0 ] || [ "${T[2*i]}" -eq "${T[2*i-1]}" ] || shape=0
        done
      fi
      if [ $shape = 0 ]; then want=emergency
      elif [ -n "${PENDING["$group $(lday "$s0")"]:-}" ]; then want=additional_reply; unset "PENDING[$group $(lday "$s0")]"
      else want=day_ahead; fi
      want_day=$(date -u -d "@$(( $(lday "$s0") * 86400 ))" +%F)
      wait_sql "EXISTS (SELECT 1 FROM capacity_forecast WHERE request_id = '$rid')" 10
      got=$(sql "SELECT f.kind || ' ' || f.forecast_day || ' ' || (_elmo_local_day(f.received_at) = date '$(date -u -d "@$(( $(lday "$t") * 86400 ))" +%F)')
                  FROM capacity_forecast f WHERE f.request_id = '$rid'")
      got_blocks=$(sql "SELECT string_agg((extract(epoch FROM b.start_time) * 1000)::bigint || ' ' || (extract(epoch FROM b.end_time) * 1000)::bigint
                                          || ' ' || trim_scale(b.capacity) || ' ' || b.unit || ' ' || b.phase, ';' ORDER BY b.block_no)
                          FROM capacity_forecast_block b JOIN capacity_forecast f ON f.id = b.forecast_id
                         WHERE f.request_id = '$rid'")
      offs=$(jq -r '[.forecasted_blocks[].start_time | .[-6:]] | unique | join(",")' <<<"$body")
      is "$got | $got_blocks" "$want $want_day true | $want_blocks" "$f: $want for $want_day ($n block(s) at $offs), stored with its blocks at the instants captured"
      ;;
    *) ok 1 "$f: no check for $msg" ;;
  esac
done

is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id <> 'PROBE'")" ${#SEEN[@]} \
   "${#SEEN[@]} distinct requests received, each once"
is "$(sql "SELECT count(*) FROM capacity_forecast")" $nfc "$nfc forecasts stored"
is "$(sql "SELECT count(*) FROM elmo_outbox WHERE message = 'handshake_acknowledge'")" $nhs "$nhs handshake_acknowledge queued, one per handshake"
is "$(sql "SELECT string_agg(DISTINCT state, ',') FROM elmo_adjust_request")" answered "every adjust request answered by ELMO's reply"
is "$(sql "SELECT count(*) FROM elmo_unapplied")" 0 "nothing left unapplied"
