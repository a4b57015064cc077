#!/usr/bin/env bash
# make test-majors: the extension on the PostgreSQL majors this machine's
# Debian does not ship, each in a chroot of the Debian suite that ships it:
#   - PostgreSQL 17 (trixie), 18 (forky): the Debian package built and tested
#     (test/package.sh), then the whole suite, as make test runs it on the
#     host: pg_regress, pgTAP, end to end (test/run.sh);
#   - the host's major: `make deb` here, the package tested in a clean chroot
#     of the host's suite (make test already ran the suite on the host).
# The .deb files are copied to dist/.
#
#   bash test/majors.sh [--prepare] [MAJOR...]    (default: 17 18)
#   --prepare  only create or update the cached chroots, all at once
#
# Chroots are kept in $ELMO_CHROOT_CACHE (/var/cache/elmo_oscp/chroots) and
# reused; each run works in a throw-away overlay of them.  Needs root.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
. test/chroot.sh

prepare_only=
[ "${1:-}" = --prepare ] && { prepare_only=1; shift; }
MAJORS=("$@")
[ ${#MAJORS[@]} -gt 0 ] || MAJORS=(17 18)

[ "$(id -u)" -eq 0 ] || { echo "test-majors needs root (debootstrap, chroot, mount)" >&2; exit 1; }
bash test/deps.sh --deb --majors || exit 1
HOST_MAJOR=$(pg_config --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
HOST_MAJOR=${HOST_MAJOR:-15}

RUN=$(mktemp -d /var/tmp/elmo_oscp_majors.XXXXXX)
children=()
cleanup() {
  local p
  for p in "${children[@]}"; do kill "$p" 2>/dev/null; done
  wait
  for r in "$RUN"/*/root; do [ -d "$r" ] && kill_inside "$r"; done
  unmount_all
  if [ -n "${KEEP:-}" ]; then echo "kept $RUN"; else remove_tree "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# --- the chroots: all of them at once (mostly downloads and unpacking)
declare -A SUITE
for m in "$HOST_MAJOR" "${MAJORS[@]}"; do
  SUITE[$m]=$(suite_for "$m") || exit 1
done
suites=$(printf '%s\n' "${SUITE[@]}" | sort -u)
t0=$SECONDS
echo "== chroots: $(echo $suites) in $CHROOT_CACHE"
declare -A PREP
for s in $suites; do
  for m in "${!SUITE[@]}"; do [ "${SUITE[$m]}" = "$s" ] && major=$m; done
  ( chroot_prepare "$s" "$major" "$RUN/prepare-$s.log" ) >"$RUN/prepare-$s.out" 2>&1 &
  PREP[$s]=$!
  children+=($!)
done
fail=0
for s in $suites; do
  if wait "${PREP[$s]}"; then
    echo "  $s: ready"
  else
    echo "  $s: FAILED"; sed 's/^/    /' "$RUN/prepare-$s.out"; fail=1
  fi
done
children=()
echo "  ($(elapsed $((SECONDS - t0))))"
[ $fail -eq 0 ] || exit 1
[ -z "$prepare_only" ] || exit 0

declare -A RESULT
# step NAME CMD...: runs a step, records ok/FAILED and its time
step() {
  local name=$1 t=$SECONDS; shift
  if "$@"; then RESULT[$name]="ok ($(elapsed $((SECONDS - t))))"
  else RESULT[$name]="FAILED ($(elapsed $((SECONDS - t))))"; fail=1; return 1; fi
}

# enter MAJOR: a fresh overlay of its suite's chroot with a copy of the source
# at /build/elmo_oscp; sets ROOT
enter() {
  ROOT=$RUN/$1/root
  chroot_enter "${SUITE[$1]}" "$RUN/$1" || { echo "cannot enter the ${SUITE[$1]} chroot" >&2; return 1; }
  bash tools/copy-source.sh "$ROOT/build/elmo_oscp"
}

inside() {
  in_chroot "$ROOT" ELMO_PG_MAJOR="$major" ELMO_PORT_OFFSET="${ELMO_PORT_OFFSET:-0}" KEEP="${KEEP:-}" ONLY="${ONLY:-}" CI="${CI:-}" -- \
    bash -c 'cd /build/elmo_oscp && "$@"' inside "$@"
}

# package MAJOR: tests the package built into /build/dist of the chroot
package() {
  local deb
  deb=$(cd "$ROOT/build/dist" && ls postgresql-"$1"-elmo-oscp_*.deb)
  cp "$ROOT/build/dist"/*.deb dist/
  step "$1 package" inside bash test/package.sh "/build/dist/$deb"
}

mkdir -p dist
# --- the host's major: make deb here, its package tested in a clean chroot
major=$HOST_MAJOR
echo; echo "== PostgreSQL $major: make deb on the host, package test in ${SUITE[$major]}"
if step "$major deb" env DIST="$RUN/dist-$major" bash tools/build-deb.sh; then
  if enter "$major"; then
    mkdir -p "$ROOT/build/dist" && cp "$RUN/dist-$major"/*.deb "$ROOT/build/dist/"
    package "$major"
  else
    RESULT["$major package"]=FAILED; fail=1
  fi
fi

# --- the other majors: package, then the whole suite
for major in "${MAJORS[@]}"; do
  echo; echo "== PostgreSQL $major in ${SUITE[$major]}"
  enter "$major" || { RESULT["$major suite"]=FAILED; fail=1; continue; }
  step "$major deb" inside env DIST=/build/dist bash tools/build-deb.sh && package "$major"
  step "$major suite" inside bash test/run.sh
done

echo; echo "== test-majors summary"
for major in "$HOST_MAJOR" "${MAJORS[@]}"; do
  for what in deb package suite; do
    [ -n "${RESULT[$major $what]:-}" ] && printf '  PostgreSQL %-3s %-8s %s\n' "$major" "$what" "${RESULT[$major $what]}"
  done
done
[ $fail -eq 0 ] || exit 1
echo "all majors passed"
