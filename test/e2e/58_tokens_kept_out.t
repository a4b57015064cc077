# Tokens are kept where they must be and nowhere else:
#   1. an initial token passed to elmo_register never reaches the server log,
#      whatever fails in the statement (a bad URL, no EXECUTE, an error after
#      the call, a typo, wrong arguments), under the default settings
#      (log_min_error_statement = error: an error logs its statement);
#   2. ELMO's token, sent in its register callback, is in elmo_registration
#      and no longer in the stored message (raw_body, body) once applied.
. "$(dirname "$0")/tap.sh"
plan 11
export PGOPTIONS='-c client_min_messages=error'     # http:// public URL: elmo_register warns
SIM=http://127.0.0.1:$ELMO_SIM_PORT
LOG=$ELMO_TEST_WORK/pg/server.log

cleanup() {
  psql -Xq -c "SELECT test.reset()" -c "DROP ROLE IF EXISTS e2e19_nobody" >/dev/null 2>&1
  curl -s -o /dev/null -X POST "$SIM/sim/reset"
}
cleanup
trap cleanup EXIT
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
is "$(sql "SHOW log_min_error_statement")" error "log_min_error_statement is the default: an error logs its statement"

# ---------------------------------------------------------------- 1. the server log
T=E2E19-INITIAL-$(sql "SELECT _elmo_random_token()")
sql "CREATE ROLE e2e19_nobody LOGIN" >/dev/null
before=$(grep -c 'client backend ERROR:' "$LOG")
fails() { ! psql -XAtq -v ON_ERROR_STOP=1 "$@" >/dev/null 2>&1; }
fails -c "SELECT elmo_register('ftp:no-url', '$T')" &&
  fails -U e2e19_nobody -c "SELECT elmo_register('$SIM/oscp/2.0', '$T')" &&
  fails -c "SELECT elmo_register('$SIM/oscp/2.0', '$T'), 1/0" &&
  fails -c "SELECT elmo_register('$SIM/oscp/2.0', '$T)" &&
  fails -c "SELECT elmo_register('$SIM/oscp/2.0', '$T', 'https://csms.example/oscp/fp/2.0', 'one too many')" &&
  fails -c "BEGIN" -c "SELECT elmo_register('$SIM/oscp/2.0', '$T')" -c "SELECT 1/0"
ok $? "six statements calling elmo_register with a token fail"
fails -c "SELECT 'E2E19-NOT-A-TOKEN', 1/0"
ok $? "and one that does not call it"
deadline=$((SECONDS + 10))
until [ "$(grep -c 'client backend ERROR:' "$LOG")" -ge $((before + 7)) ] || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
is "$(( $(grep -c 'client backend ERROR:' "$LOG") - before ))" 7 "each error is in the server log"
is "$(grep -c 'E2E19-NOT-A-TOKEN' "$LOG")" 1 "an error's statement is logged (the one without a token)"
is "$(grep -c "$T" "$LOG")" 0 "the initial token is nowhere in the server log"
grep -q 'syntax error (in a statement calling elmo_register: not quoted)\|unterminated quoted string (in a statement calling elmo_register: not quoted)' "$LOG"
ok $? "the syntax error is logged, without quoting the statement"
is "$(sql "SELECT count(*) FROM elmo_registration")" 0 "and none of them registered"

# ---------------------------------------------------------------- 2. ELMO's token at rest
sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 20
ok $? "registered with the simulator: ELMO's register callback applied"
elmo_token=$(curl -s "$SIM/sim/state" | jq -r .elmo_token)
is "$(sql "SELECT elmo_token = '$elmo_token' FROM elmo_registration")" t "elmo_registration holds ELMO's token"
is "$(sql "SELECT count(*) FILTER (WHERE raw_body LIKE '%$elmo_token%' OR body::text LIKE '%$elmo_token%') || ' of '
               || count(*) || ' ' || string_agg(DISTINCT body->>'token', ',')
             FROM elmo_received_message WHERE message = 'register'")" "0 of 1 ***" \
   "the register ELMO sent is stored without it (raw_body and body: \"token\":\"***\")"
