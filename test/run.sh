#!/usr/bin/env bash
# make test: install what is missing, build, install, then run every suite
# against a throw-away cluster and the bundled ELMO simulator:
#   1. pg_regress   make installcheck: sql/*.sql against expected/*.out
#   2. pgTAP        test/pgtap/*.sql through pg_prove
#   3. end to end   test/e2e/*.t (bash, TAP) through prove: restarts, crashes,
#                   a second cluster, the simulator in both directions
# Exits non-zero on any failure; the cluster and simulator are stopped whatever happens.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
. test/lib.sh

bash test/deps.sh || exit 1
echo "== build and install"
make -s >/dev/null && make -s sim >/dev/null && make -s install >/dev/null || { echo "build failed" >&2; exit 1; }
# the pg_regress tests: the Makefile's REGRESS, which make installcheck runs
read -ra REGRESS <<<"$(make -s -pn installcheck 2>/dev/null | sed -n 's/^REGRESS = //p')"

WORK=$(mktemp -d /tmp/elmo_oscp_test.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK"
export SIM_LOG=$WORK/sim.log
cleanup() {
  sim_stop
  cluster_stop immediate
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTP_PORT=$(free_port 18780)
SIM_PORT=$(free_port $((HTTP_PORT + 1)))
export ELMO_HTTP_PORT=$HTTP_PORT ELMO_SIM_PORT=$SIM_PORT ELMO_TEST_WORK=$WORK

cluster_init "$WORK/pg" elmo_test "$HTTP_PORT" \
  "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0'" \
  "elmo_test.sim_port = '$SIM_PORT'" \
  "elmo_test.work = '$WORK'" || exit 1
cluster_start || exit 1
as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_test || exit 1
wait_listener 30 || exit 1
sim_start "$SIM_PORT" --allow-local-urls --no-schedule --handshake-delay-ms 200 || exit 1

declare -A RESULT
fail=0
# ONLY=PATTERN runs just the pgTAP and end-to-end files whose names contain it
# (and pg_regress only when a regression test's name matches): for iterating.
PGTAP_FILES=(test/pgtap/*.sql) E2E_FILES=(test/e2e/*.t)
if [ -n "${ONLY:-}" ]; then
  mapfile -t PGTAP_FILES < <(printf '%s\n' "${PGTAP_FILES[@]}" | grep -F -- "$ONLY")
  mapfile -t E2E_FILES < <(printf '%s\n' "${E2E_FILES[@]}" | grep -F -- "$ONLY")
  mapfile -t REGRESS < <(printf '%s\n' "${REGRESS[@]}" | grep -F -- "$ONLY")
  psql -XAtqc "CREATE EXTENSION IF NOT EXISTS elmo_oscp" >/dev/null
fi

echo "== pg_regress (make installcheck)"
rm -rf results regression.diffs regression.out
if [ ${#REGRESS[@]} -eq 0 ]; then
  RESULT[pg_regress]="not run"
elif make -s installcheck REGRESS="${REGRESS[*]}" PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres; then
  RESULT[pg_regress]=ok
else
  RESULT[pg_regress]=FAILED; fail=1
  [ -f regression.diffs ] && head -n 80 regression.diffs
fi

echo "== pgTAP"
if [ ${#PGTAP_FILES[@]} -eq 0 ]; then
  RESULT[pgtap]="not run"
elif pg_prove --ext .sql -h "$PGHOST" -p "$PGPORT" -U postgres -d elmo_test "${PGTAP_FILES[@]}"; then
  RESULT[pgtap]=ok
else
  RESULT[pgtap]=FAILED; fail=1
fi

echo "== end to end"
if [ ${#E2E_FILES[@]} -eq 0 ]; then
  RESULT[e2e]="not run"
elif prove -e bash "${E2E_FILES[@]}"; then
  RESULT[e2e]=ok
else
  RESULT[e2e]=FAILED; fail=1
fi

echo
echo "== summary"
for k in pg_regress pgtap e2e; do printf '  %-12s %s\n' "$k" "${RESULT[$k]:-not run}"; done
if [ $fail -ne 0 ]; then
  echo "server log tail ($WORK/pg/server.log):"; tail -n 40 "$WORK/pg/server.log"
  exit 1
fi
echo "all suites passed"
