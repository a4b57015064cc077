#!/usr/bin/env bash
# make fuzz: a fuzzing campaign against the worker's HTTP listener.
# Builds and installs the extension and test/fuzz/elmo-fuzz, starts a
# throw-away cluster (as test/run.sh does) with a registration whose token the
# fuzzer reads, then runs elmo-fuzz: the regression cases in test/fuzz/regress/
# first, then FUZZ_CASES generated cases (default 20000) of FUZZ_SEED (default
# random; printed, so that a run can be repeated).  Failing cases are saved in
# FUZZ_SAVE (default test/fuzz/failures/).  Other arguments go to elmo-fuzz
# (e.g. --stop, --verbose, --replay FILE).  Exits non-zero on any failure.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
. test/lib.sh

CASES=${FUZZ_CASES:-20000}
SAVE=${FUZZ_SAVE:-$TOP/test/fuzz/failures}

bash test/deps.sh || exit 1
echo "== build and install"
make -s >/dev/null && make -s install >/dev/null || { echo "build failed" >&2; exit 1; }
make -s -C test/fuzz >/dev/null || { echo "elmo-fuzz build failed" >&2; exit 1; }
test/fuzz/elmo-fuzz --captures test/captures/real-elmo-wire --self-test || exit 1

WORK=$(mktemp -d /tmp/elmo_oscp_fuzz.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"
cleanup() {
  cluster_stop immediate
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTP_PORT=$(free_port 18880)
# fsync off: durability is not what this tests, and every accepted case commits.
cluster_init "$WORK/pg" elmo_fuzz "$HTTP_PORT" \
  "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0'" \
  "elmo_test.sim_port = '$HTTP_PORT'" \
  "fsync = off" || exit 1
cluster_start || exit 1
as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_fuzz || exit 1
psql -Xq -v ON_ERROR_STOP=1 -f test/helpers.sql >/dev/null || exit 1
wait_listener 30 || exit 1
token=$(psql -XAtq -c "SELECT test.fake_registration()") || exit 1
# ELMO's URL: the listener itself, on a path it answers 404, so that what the
# accepted handshakes queue fails at once instead of being retried all along.
psql -XAtq -c "UPDATE elmo_registration SET elmo_url = 'http://127.0.0.1:$HTTP_PORT/not-elmo',
               elmo_base_url = 'http://127.0.0.1:$HTTP_PORT/not-elmo'" >/dev/null || exit 1

# until the worker knows the token: an empty forecast is a 400, not a 401
deadline=$((SECONDS + 15))
until code=$(http_code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Token $token" \
               -H 'X-Request-ID: FUZZ-PROBE' -H 'Content-Type: application/json' --data-binary '{}' \
               "http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0/update_group_capacity_forecast"); echo "$http_code")
      [ "$code" = 400 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
[ "$code" = 400 ] || { echo "the worker does not take the test's token (probe answered $code)" >&2; exit 1; }

echo "== elmo-fuzz (server log: $WORK/pg/server.log${KEEP:+, kept})"
test/fuzz/elmo-fuzz --port "$HTTP_PORT" --captures test/captures/real-elmo-wire \
  --log "$WORK/pg/server.log" --regress test/fuzz/regress --known test/fuzz/known-library-defects \
  --save "$SAVE" \
  --cases "$CASES" ${FUZZ_SEED:+--seed "$FUZZ_SEED"} "$@"
