# A synchronous standby on loopback (streaming, named in the primary's
# synchronous_standby_names).  Under a steady stream of forecasts, a commit of
# the worker's waits for the standby, and that wait is cut short:
#   a. the standby stopped, pg_cancel_backend() on the waiting worker; the
#      worker carries on; then kill -9 of the primary's postmaster;
#   b. the standby stopped, kill -9 of the primary's postmaster;
#   c. the standby stopped, pg_ctl stop -m fast of the primary.
# Each time the standby is then promoted: every forecast answered 204 must be
# on it (the requests whose commit it never confirmed are closed without an
# answer), and the fast stop must not hang on the standby that is gone.
# Before the faults, synchronous_commit = remote_apply set by a reload is
# seen to apply to the worker: its commit waits while the standby's replay is
# paused.
. "$(dirname "$0")/tap.sh"
plan 28
W=$(mktemp -d /tmp/elmo_sync.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
N_PAIR=0
(
  stop_all() {
    [ -n "${LOAD_PID:-}" ] && { touch "$W/load.stop"; wait "$LOAD_PID" 2>/dev/null; }
    for d in "$W"/*/data; do
      [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
  }
  trap stop_all EXIT

  # queries on the primary (p) or the standby (s) of the current pair
  p() { psql -XAtq -h "$P_DIR" -p "$P_PORT" -d sync -v ON_ERROR_STOP=1 -c "$1"; }
  s() { psql -XAtq -h "$S_DIR" -p "$S_PORT" -d sync -v ON_ERROR_STOP=1 -c "$1"; }
  poll() {   # poll DEADLINE_S COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.05; done
  }
  is_t() { [ "$("$@" 2>/dev/null)" = t ]; }

  # make_pair: a primary serving database "sync", a streaming standby "sb1",
  # then synchronous_standby_names = 'sb1' once it streams
  make_pair() {
    N_PAIR=$((N_PAIR + 1))
    P_DIR=$W/p$N_PAIR; S_DIR=$W/s$N_PAIR
    P_HTTP=$(free_port $((23700 + 10 * N_PAIR))); S_HTTP=$(free_port $((23800 + 10 * N_PAIR)))
    cluster_init "$P_DIR" sync "$P_HTTP" "elmo_oscp.public_url = 'http://127.0.0.1:$P_HTTP/oscp/fp/2.0'" \
      "elmo_test.sim_port = '$ELMO_SIM_PORT'" || return 1
    P_PORT=$CL_PORT
    cluster_start || return 1
    as_pg "$PGBIN/createdb" -h "$P_DIR" -p "$P_PORT" -U postgres sync || return 1
    PGHOST=$P_DIR PGPORT=$P_PORT PGDATABASE=sync psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null || return 1
    TOKEN=$(p "SELECT test.fake_registration()")
    BODY=$(p "SELECT test.emergency_body('SYNC-G', now() + interval '20 min', now() + interval '1 hour', 7)")
    S_PORT=$(free_port $((P_PORT + 1 - ${ELMO_PORT_OFFSET:-0})))
    as_pg "$PGBIN/pg_basebackup" -h "$P_DIR" -p "$P_PORT" -U postgres -D "$S_DIR/data" -R -X stream -c fast >/dev/null 2>&1 || return 1
    { echo "port = $S_PORT"; echo "unix_socket_directories = '$S_DIR'"; echo "elmo_oscp.port = $S_HTTP"
      echo "cluster_name = 'sb1'"; } >> "$S_DIR/data/postgresql.conf"
    start_standby || return 1
    poll 30 is_t p "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = 'sb1' AND state = 'streaming')" || return 1
    p "ALTER SYSTEM SET synchronous_standby_names = 'sb1'" >/dev/null && p "SELECT pg_reload_conf()" >/dev/null
    poll 30 is_t p "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = 'sb1' AND sync_state = 'sync')" || return 1
    local deadline=$((SECONDS + 30))   # the worker has its token
    until [ "$(post "SYNC$N_PAIR-WARMUP")" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
    [ "$(post "SYNC$N_PAIR-WARMUP")" = 204 ]
  }
  start_standby() { as_pg "$PGBIN/pg_ctl" -D "$S_DIR/data" -l "$S_DIR/server.log" -w -t 60 start >/dev/null; }
  post() { http_status -m 25 -X POST -H 'Content-Type: application/json' -H "Authorization: Token $TOKEN" \
             -H "X-Request-ID: $1" --data-binary "$BODY" "http://127.0.0.1:$P_HTTP/oscp/fp/2.0/update_group_capacity_forecast"; }
  worker_waits() {   # the worker's batch waits for the standby
    is_t p "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'
                            AND wait_event = 'SyncRep' AND query = 'elmo_oscp: applying')"
  }

  # a steady stream: rounds of 10 forecasts at once, each with its own
  # X-Request-ID; "ID STATUS" per request in $W/answers (000: no answer)
  load_start() {
    rm -f "$W/load.stop"; : > "$W/answers"
    (
      r=0
      while [ ! -e "$W/load.stop" ]; do
        r=$((r + 1)); : > "$W/round.cfg"
        for i in $(seq 1 10); do
          [ "$i" -gt 1 ] && echo next >> "$W/round.cfg"
          printf 'url = "%s"\nmax-time = 25\nrequest = "POST"\nheader = "Content-Type: application/json"\nheader = "Authorization: Token %s"\nheader = "X-Request-ID: %s"\ndata = "@%s"\noutput = "/dev/null"\nwrite-out = "%s %%{http_code}\\n"\n' \
            "http://127.0.0.1:$P_HTTP/oscp/fp/2.0/update_group_capacity_forecast" "$TOKEN" "L$N_PAIR-$r-$i" "$W/body.json" "L$N_PAIR-$r-$i" >> "$W/round.cfg"
        done
        curl -s --parallel --parallel-immediate --parallel-max 10 -K "$W/round.cfg" >> "$W/answers" 2>/dev/null
      done
    ) &
    LOAD_PID=$!
  }
  load_stop() { touch "$W/load.stop"; wait "$LOAD_PID" 2>/dev/null; LOAD_PID=; }
  answered() { awk '$2 == "204"' "$W/answers" | wc -l; }
  answered_at_least() { [ "$(answered)" -ge "$1" ]; }

  # after a fault: the standby started and promoted; MISSING = forecasts
  # answered 204 that it does not have
  promote_and_count() {
    start_standby && as_pg "$PGBIN/pg_ctl" -D "$S_DIR/data" -w -t 60 promote >/dev/null || return 1
    awk '$2 == "204" { print $1 }' "$W/answers" > "$W/acked"
    MISSING=$( { echo "CREATE TEMP TABLE acked (request_id text);"; echo "COPY acked FROM STDIN;"
                 cat "$W/acked"; echo '\.'
                 echo "SELECT count(*) FROM acked a WHERE NOT EXISTS"
                 echo " (SELECT 1 FROM elmo_received_message r WHERE r.request_id = a.request_id);"
               } | psql -XAtq -h "$S_DIR" -p "$S_PORT" -d sync -v ON_ERROR_STOP=1)
    UNANSWERED=$(awk '$2 != "204"' "$W/answers" | wc -l)
    diag "answered 204: $(wc -l < "$W/acked"), not answered: $UNANSWERED, answered 204 but missing on the promoted standby: $MISSING"
  }

  # before_fault: the load running, 50 forecasts answered, then the standby stopped
  # (immediate: what it has not received it never gets) and the worker waiting for it
  before_fault() {
    load_start
    poll 60 answered_at_least 50 || return 1
    as_pg "$PGBIN/pg_ctl" -D "$S_DIR/data" -m immediate -w stop >/dev/null 2>&1
    poll 20 worker_waits
  }

  # ---- the pair for (a), and remote_apply by a reload
  make_pair; ok $? "a primary and its synchronous standby sb1; the worker serves"
  p "SELECT test.emergency_body('SYNC-G', now() + interval '20 min', now() + interval '1 hour', 7)" > "$W/body.json"
  s "SELECT pg_wal_replay_pause()" >/dev/null
  p "ALTER SYSTEM SET synchronous_commit = remote_apply" >/dev/null && p "SELECT pg_reload_conf()" >/dev/null
  # forecasts one at a time until one waits for the standby's replay (the reload reached the worker)
  waits_for_replay() {
    post "APPLY-$RANDOM$RANDOM" > "$W/apply_status" &
    APPLY_POST=$!
    poll 2 worker_waits && return 0
    wait "$APPLY_POST"; return 1
  }
  poll 20 waits_for_replay; ok $? "remote_apply by a reload: the worker's commit waits while the standby's replay is paused"
  mark=$(p "SELECT pg_current_wal_flush_lsn()")
  poll 20 is_t p "SELECT flush_lsn >= '$mark' FROM pg_stat_replication WHERE application_name = 'sb1'"
  worker_waits; waits=$?; kill -0 "$APPLY_POST" 2>/dev/null; pending=$?
  ok $((waits + pending)) "still unanswered once the standby has flushed it: the worker did not fall back to on"
  s "SELECT pg_wal_replay_resume()" >/dev/null
  wait "$APPLY_POST"
  is "$(cat "$W/apply_status")" 204 "answered 204 once the standby has replayed it"
  p "ALTER SYSTEM RESET synchronous_commit" >/dev/null && p "SELECT pg_reload_conf()" >/dev/null

  # ---- (a) the standby stopped, the wait cancelled, then kill -9 of the primary's postmaster
  before_fault; ok $? "a: under load, the standby stopped: the worker's commit waits for it"
  wpid=$(p "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'")
  is "$(p "SELECT pg_cancel_backend($wpid)")" t "a: pg_cancel_backend() on the waiting worker"
  poll 20 grep -q 'requests closed without an answer: the synchronous standbys have not confirmed the commit' "$P_DIR/server.log"
  ok $? "a: the batch whose wait was cut is closed without an answer, and the log says why"
  poll 20 worker_waits; ok $? "a: the worker carries on: its next batch waits for the standby"
  is "$(p "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'")" "$wpid" "a: the same worker"
  kill -9 "$(head -n 1 "$P_DIR/data/postmaster.pid")"; ok $? "a: kill -9 of the primary's postmaster"
  load_stop
  promote_and_count; ok $? "a: the standby started and promoted"
  is "$MISSING" 0 "a: every forecast answered 204 is on the promoted standby"
  [ "$UNANSWERED" -gt 0 ]; ok $? "a: and the forecasts it never had were not answered 204 ($UNANSWERED)"
  wait_sql_s() { PGHOST=$S_DIR PGPORT=$S_PORT PGDATABASE=sync wait_sql "$@"; }
  wait_sql_s "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker')" 20
  ok $? "a: the promoted standby's worker runs"
  stop_all

  # ---- (b) the standby stopped, then kill -9 of the primary's postmaster while the worker waits
  make_pair; ok $? "b: a new pair"
  p "SELECT test.emergency_body('SYNC-G', now() + interval '20 min', now() + interval '1 hour', 7)" > "$W/body.json"
  before_fault; ok $? "b: under load, the standby stopped: the worker's commit waits for it"
  kill -9 "$(head -n 1 "$P_DIR/data/postmaster.pid")"; ok $? "b: kill -9 of the primary's postmaster"
  load_stop
  poll 20 grep -q 'requests closed without an answer: the server is going away' "$P_DIR/server.log"
  ok $? "b: the waiting batch is closed without an answer, and the log says why"
  promote_and_count; ok $? "b: the standby started and promoted"
  is "$MISSING" 0 "b: every forecast answered 204 is on the promoted standby"
  [ "$UNANSWERED" -gt 0 ]; ok $? "b: and the forecasts it never had were not answered 204 ($UNANSWERED)"
  stop_all

  # ---- (c) the standby stopped, then a fast stop of the primary
  make_pair; ok $? "c: a new pair"
  p "SELECT test.emergency_body('SYNC-G', now() + interval '20 min', now() + interval '1 hour', 7)" > "$W/body.json"
  before_fault; ok $? "c: under load, the standby stopped: the worker's commit waits for it"
  t0=$SECONDS
  as_pg "$PGBIN/pg_ctl" -D "$P_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1
  ok $? "c: pg_ctl stop -m fast completes although the standby is gone"
  diag "the fast stop took $((SECONDS - t0)) s"
  grep -q 'requests closed without an answer' "$P_DIR/server.log"
  ok $? "c: the waiting batch is closed without an answer, and the log says why"
  load_stop
  promote_and_count; ok $? "c: the standby started and promoted"
  is "$MISSING" 0 "c: every forecast answered 204 is on the promoted standby"
  [ "$UNANSWERED" -gt 0 ]; ok $? "c: and the forecasts it never had were not answered 204 ($UNANSWERED)"
  stop_all
)
rm -rf "$W"
