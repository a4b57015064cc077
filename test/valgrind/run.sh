#!/usr/bin/env bash
# make check-valgrind: the test suites against a cluster whose server
# processes (postmaster, backends, the elmo_oscp worker) all run under
# valgrind's memcheck, on a PostgreSQL built with USE_VALGRIND and
# assertions (test/valgrind/build-pg.sh, cached outside the repository).
# Fails when memcheck reports an error in elmo_oscp's code, a definite leak
# our code made, a server process killed by a signal, or a suite fails.
#
#   ELMO_VALGRIND_PG      where the memcheck build lives
#                         (default /var/cache/elmo_oscp/pg15-valgrind as root,
#                         else ~/.cache/elmo_oscp/pg15-valgrind)
#   ONLY=PATTERN          as for make test: just the pgTAP and end-to-end
#                         files (and regression tests) whose names contain it
#   ELMO_VALGRIND_ORIGINS yes: --track-origins, to see where an uninitialised
#                         value came from (about twice as slow)
#   KEEP=1                keep the work directory (logs, full report)
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
started=$SECONDS

if [ "$(id -u)" -eq 0 ]; then default_pg=/var/cache/elmo_oscp/pg15-valgrind
else default_pg=${XDG_CACHE_HOME:-$HOME/.cache}/elmo_oscp/pg15-valgrind; fi
PGV=${ELMO_VALGRIND_PG:-$default_pg}

bash test/deps.sh --valgrind || exit 1
bash test/valgrind/build-pg.sh "$PGV" || exit 1
install -m 755 test/valgrind/postgres-memcheck "$PGV/install/bin/postgres"
PGSRC=$(cd "$(ls -d "$PGV"/src/postgresql-15.*/ | sort -V | tail -n1)" && pwd)

WORK=$(mktemp -d /tmp/elmo_oscp_valgrind.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  sim_stop
  cluster_stop fast
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Built in a copy, so the work tree's objects (made against Debian's server
# headers) stay as they are; the debug info names the work tree's files.
echo "== build and install into the memcheck build"
mkdir -p "$WORK/build"
cp -a Makefile elmo_oscp.control src sql sim "$WORK/build/"
make -C "$WORK/build" -s clean >/dev/null 2>&1
make -C "$WORK/build" -s PG_CONFIG="$PGV/install/bin/pg_config" \
     COPT="-fdebug-prefix-map=$WORK/build=$TOP" all install >"$WORK/build.log" 2>&1 \
  || { tail -n 30 "$WORK/build.log"; exit 1; }
make -s sim >/dev/null || exit 1

export PATH=$PGV/install/bin:$PATH
. test/lib.sh
PGBIN=$PGV/install/bin

VGLOG=$WORK/valgrind
mkdir -p "$VGLOG"
[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK" "$VGLOG"
export ELMO_VALGRIND_LOG=$VGLOG
ELMO_VALGRIND_OPTS="--quiet --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END"
ELMO_VALGRIND_OPTS+=" --suppressions=$TOP/test/valgrind/postgresql.supp"
perl test/valgrind/postgresql15-leaks.pl > "$WORK/postgresql15-leaks.supp" || exit 1
ELMO_VALGRIND_OPTS+=" --suppressions=$WORK/postgresql15-leaks.supp"
ELMO_VALGRIND_OPTS+=" --suppressions=$TOP/test/valgrind/elmo_oscp.supp"
ELMO_VALGRIND_OPTS+=" --num-callers=30 --fullpath-after= --gen-suppressions=all"
# marks the processes an immediate shutdown stopped (summarize.pl)
ELMO_VALGRIND_OPTS+=" --trace-signals=yes"
ELMO_VALGRIND_OPTS+=" --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite"
[ "${ELMO_VALGRIND_ORIGINS:-no}" = yes ] && ELMO_VALGRIND_OPTS+=" --track-origins=yes"
export ELMO_VALGRIND_OPTS
export SIM_LOG=$WORK/sim.log

HTTP_PORT=$(free_port 18780)
SIM_PORT=$(free_port $((HTTP_PORT + 1)))
export ELMO_HTTP_PORT=$HTTP_PORT ELMO_SIM_PORT=$SIM_PORT ELMO_TEST_WORK=$WORK

echo "== cluster under memcheck"
cluster_init "$WORK/pg" elmo_test "$HTTP_PORT" \
  "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP_PORT/oscp/fp/2.0'" \
  "elmo_test.sim_port = '$SIM_PORT'" \
  "elmo_test.work = '$WORK'" || exit 1
cluster_start || exit 1
as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_test || exit 1
wait_listener 120 || exit 1
sim_start "$SIM_PORT" --allow-local-urls --no-schedule --handshake-delay-ms 200 || exit 1

declare -A RESULT TIME
fail=0

# Tests whose assertions race a wall-clock window shorter than memcheck's
# slowdown: they run (their code paths are checked like any other) but
# their failures do not count.  The first apply of the example CSMS compiles
# its PL/pgSQL inside elmo_oscp.apply_timeout (2 s); a usage report must be
# queued within the simulator's 3 s handshake delay; an emergency window
# lasts 2 s; the worker must register within 4 s of the simulator's start
# to get its 10:00 assignment; the listener's guard is held to a 1 s receive
# deadline and to latencies (p99 under 100 ms) no process under memcheck
# can keep; a primary and its synchronous standby, both under memcheck,
# must stream and serve within 30 s; a restored cluster must deliver what
# waited in its outbox, retries and backoff included, within 30 s.
SOFT=" test/pgtap/50_example_csms.sql test/e2e/12_outbound_durability.t test/e2e/51_example_listen.t"
SOFT+=" test/e2e/22_sim_clock.t test/e2e/31_slow_clients.t test/e2e/19_sync_standby.t test/e2e/61_dump_restore.t "
# Starts no server: it checks the work tree's own build.
SKIP=" test/e2e/05_build_without_jansson.t "

echo "== pg_regress"
t=$SECONDS
# the same pg_regress files as make test: the Makefile's REGRESS, run by make installcheck
read -ra REGRESS <<<"$(make -s -pn installcheck 2>/dev/null | sed -n 's/^REGRESS = //p')"
PGTAP_FILES=(test/pgtap/*.sql)
E2E_FILES=()
for f in test/e2e/*.t; do [[ $SKIP == *" $f "* ]] || E2E_FILES+=("$f"); done
if [ -n "${ONLY:-}" ]; then
  mapfile -t PGTAP_FILES < <(printf '%s\n' "${PGTAP_FILES[@]}" | grep -F -- "$ONLY")
  mapfile -t E2E_FILES < <(printf '%s\n' "${E2E_FILES[@]}" | grep -F -- "$ONLY")
  mapfile -t REGRESS < <(printf '%s\n' "${REGRESS[@]}" | grep -F -- "$ONLY")
  psql -XAtqc "CREATE EXTENSION IF NOT EXISTS elmo_oscp" >/dev/null
fi
rm -rf results regression.diffs regression.out
if [ ${#REGRESS[@]} -eq 0 ]; then
  RESULT[pg_regress]="not run"
elif make -s installcheck PG_CONFIG="$PGBIN/pg_config" REGRESS="${REGRESS[*]}" \
     PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres; then
  RESULT[pg_regress]=ok
else
  RESULT[pg_regress]=FAILED; fail=1
  [ -f regression.diffs ] && head -n 80 regression.diffs
fi
TIME[pg_regress]=$(( SECONDS - t ))s

strict() { for f in "$@"; do [[ $SOFT == *" $f "* ]] || echo "$f"; done; }
soft() { for f in "$@"; do [[ $SOFT == *" $f "* ]] && echo "$f"; done; }

# suite NAME COMMAND FILES... — strict files count, soft ones are reported
suite() {
  local name=$1 cmd=$2; shift 2
  local t=$SECONDS s o
  s=$(strict "$@"); o=$(soft "$@")
  RESULT[$name]=ok
  # shellcheck disable=SC2086
  [ -n "$s$o" ] || { RESULT[$name]="not run"; return; }
  [ -z "$s" ] || $cmd $s || { RESULT[$name]=FAILED; fail=1; }
  if [ -n "$o" ]; then
    echo "-- $name, timing-sensitive under memcheck (failures reported, not counted):"
    # shellcheck disable=SC2086
    $cmd $o || RESULT[$name]+=" (timing-sensitive: some failed)"
  fi
  TIME[$name]=$(( SECONDS - t ))s
}

echo "== pgTAP"
suite pgtap "pg_prove --timer --ext .sql -h $PGHOST -p $PGPORT -U postgres -d elmo_test" "${PGTAP_FILES[@]}"

echo "== end to end"
# shellcheck disable=SC2046
suite e2e "prove --timer -e bash" "${E2E_FILES[@]}"

# A fast stop lets every process exit normally, so memcheck's leak check runs.
sim_stop
cluster_stop fast

echo
echo "== memcheck"
perl test/valgrind/summarize.pl "$VGLOG" "$TOP" "$PGSRC" "$WORK/report.txt"
vg=$?
[ -n "${KEEP:-}" ] && echo "full report: $WORK/report.txt"
cp "$WORK/report.txt" "$TOP/valgrind-report.txt"
echo "(every distinct error in full: valgrind-report.txt)"

echo
echo "== summary ($(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s)"
for k in pg_regress pgtap e2e; do printf '  %-12s %-6s %s\n' "$k" "${TIME[$k]:-}" "${RESULT[$k]:-not run}"; done
printf '  %-12s %-6s %s\n' memcheck "" "$([ $vg -eq 0 ] && echo ok || echo FAILED)"
[ $fail -eq 0 ] && [ $vg -eq 0 ]
