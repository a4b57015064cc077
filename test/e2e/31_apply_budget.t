# elmo_oscp.apply_timeout cuts a slow apply short: the message is answered
# 204, stays 'received' (no WARNING, no elmo_apply_failed NOTIFY, nothing
# recorded against it) and is applied right after the answer.  A
# pg_cancel_backend() aimed at the worker is not taken for the budget: it
# cancels the apply it hits, which is recorded as failed and retried; aimed
# at the idle worker, it cancels nothing and the worker carries on.
# The CSMS trigger waits for an advisory lock this test holds, so the apply
# is slow exactly as long as the test wants.
. "$(dirname "$0")/tap.sh"
plan 16
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
url="http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast"
LOG=$ELMO_TEST_WORK/pg/server.log
W=$(mktemp -d); chmod 755 "$W"
LOCK=4242
holder=; listener=
cleanup() {
  sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ('budget_lock', 'budget_listen')" >/dev/null 2>&1
  [ -n "$holder" ] && wait "$holder" 2>/dev/null
  sql "DROP TRIGGER IF EXISTS budget_wait ON capacity_forecast; DROP FUNCTION IF EXISTS test.budget_wait()" >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
worker_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'"; }
post() {   # post REQUEST-ID GROUP: the HTTP status
  http_status -m 30 -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" \
    -H "X-Request-ID: $1" --data-binary "$(sql "SELECT test.emergency_body('$2', now() + interval '20 min', now() + interval '1 hour', 9)")" "$url"
}
state() { sql "SELECT state FROM elmo_received_message WHERE request_id = '$1'"; }
lock() {
  ( PGAPPNAME=budget_lock psql -X -c "SELECT pg_advisory_lock($LOCK)" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 ) &
  holder=$!
  wait_sql "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                     WHERE l.locktype = 'advisory' AND l.objid = $LOCK AND l.granted AND a.application_name = 'budget_lock')" 10
}
unlock() {
  sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'budget_lock'" >/dev/null
  wait "$holder" 2>/dev/null; holder=
}

deadline=$((SECONDS + 15))   # until the worker accepts the new token
until [ "$(post BUDGET-WARMUP BUDGET-W)" = 204 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
sql "CREATE FUNCTION test.budget_wait() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN IF NEW.group_id = 'BUDGET-G' THEN PERFORM pg_advisory_xact_lock_shared($LOCK); END IF; RETURN NEW; END \$\$;
     CREATE TRIGGER budget_wait AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION test.budget_wait();"
pid=$(worker_pid)

# a LISTENing client, fed through a fifo, printing what it hears after each command
mkfifo "$W/listen.in"
( PGAPPNAME=budget_listen psql -X < "$W/listen.in" > "$W/listen.out" 2>&1 ) &
listener=$!
exec 7>"$W/listen.in"
echo "LISTEN elmo_apply_failed;" >&7
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'budget_listen' AND query LIKE 'LISTEN%')" 10

# ---- 1. the budget runs out
lock; ok $? "the CSMS trigger is held up (advisory lock taken)"
t0=$(date +%s%N)
is "$(post BUDGET-1 BUDGET-G)" 204 "a forecast whose apply outlasts apply_timeout is answered 204"
is "$(state BUDGET-1)" received "it stays 'received' after the answer"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
diag "answered after $ms ms (apply_timeout 2 s)"
unlock
wait_sql "(SELECT state FROM elmo_received_message WHERE request_id = 'BUDGET-1') = 'applied'" 20
ok $? "it is applied once the trigger can go on"
is "$(sql "SELECT apply_attempts || ' ' || coalesce(last_error, '-') FROM elmo_received_message WHERE request_id = 'BUDGET-1'")" \
   "1 -" "no failed attempt was recorded against it"
id1=$(sql "SELECT id FROM elmo_received_message WHERE request_id = 'BUDGET-1'")
! grep -q "applying received message $id1 failed" "$LOG"; ok $? "no WARNING about it in the server log"

# ---- 2. pg_cancel_backend() while an apply runs: that apply fails, and is retried
lock
( post BUDGET-2 BUDGET-G > "$W/status2" ) &
poster=$!
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'
                   AND query = 'elmo_oscp: applying' AND wait_event_type = 'Lock')" 10
ok $? "the worker waits in the trigger"
is "$(sql "SELECT pg_cancel_backend($pid)")" t "pg_cancel_backend() on the worker"
wait "$poster"
is "$(cat "$W/status2")" 204 "the forecast is answered 204"
is "$(sql "SELECT state || ': ' || last_error FROM elmo_received_message WHERE request_id = 'BUDGET-2'")" \
   "apply_failed: canceling statement due to user request" "the cancelled apply is recorded as failed, with the cancel's message"
id2=$(sql "SELECT id FROM elmo_received_message WHERE request_id = 'BUDGET-2'")
grep -q "applying received message $id2 failed" "$LOG"; ok $? "with a WARNING in the server log"
unlock
wait_sql "(SELECT state FROM elmo_received_message WHERE request_id = 'BUDGET-2') = 'applied'" 30
ok $? "and applied by a retry"

# ---- 3. pg_cancel_backend() while the worker is idle: nothing to cancel
wait_sql "EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid AND state = 'idle')" 10
is "$(sql "SELECT pg_cancel_backend($pid)")" t "pg_cancel_backend() on the idle worker"
is "$(post BUDGET-3 BUDGET-W)" 204 "the next forecast is answered 204"
is "$(worker_pid)" "$pid" "by the same worker: it did not exit"

# the listener heard only the failure of the cancelled apply
echo "SELECT 'done';" >&7
exec 7>&-
wait "$listener"
is "$(grep -o '"id" *: *[0-9]*' "$W/listen.out" | grep -o '[0-9]*$' | paste -sd' ')" "$id2" \
   "elmo_apply_failed was notified for the cancelled apply only, not for the budget cut"
