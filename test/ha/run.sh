#!/usr/bin/env bash
# make test-ha: install what is missing (PostgreSQL, Patroni, etcd, HAProxy),
# build, install, then run test/ha/*.t through prove.  Each test starts and
# stops its own stack on loopback (see test/ha/stack.sh); nothing is left running.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
. test/lib.sh

bash test/deps.sh --ha || exit 1
echo "== build and install"
make -s >/dev/null && make -s sim >/dev/null && make -s install >/dev/null || { echo "build failed" >&2; exit 1; }
echo "== high availability (Patroni, etcd, HAProxy)"
start=$SECONDS
prove -v -e bash test/ha/*.t
rc=$?
echo "== high availability: $((SECONDS - start)) s"
exit $rc
