#!/usr/bin/env bash
# Installs the Debian packages elmo_oscp needs to build, test and run its
# demo, when they are missing.  Idempotent; asks apt only when something is.
#   --bench  also what the benchmarks need
#   --ha     also what make test-ha needs
#   --deb    also what building the Debian package needs
#   --majors also what make test-majors needs on the host (debootstrap)
# The PostgreSQL major is ELMO_PG_MAJOR, else the installed pg_config's,
# else Debian 12's (15).
set -euo pipefail

MAJOR=${ELMO_PG_MAJOR:-$( (pg_config --version || true) 2>/dev/null | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')}
MAJOR=${MAJOR:-15}

PACKAGES=(
  make gcc pkg-config curl jq ca-certificates openssl datefudge
  "postgresql-$MAJOR" "postgresql-server-dev-$MAJOR" "postgresql-$MAJOR-pgtap"
  libtap-parser-sourcehandler-pgtap-perl      # pg_prove
  libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev
  prometheus prometheus-postgres-exporter     # examples/monitoring: promtool, the exporter
)
for opt in "$@"; do
  case $opt in
    --bench) PACKAGES+=(wrk nginx-light postgresql-contrib) ;;
    # make test-ha: Patroni, etcd as its store, HAProxy, and envsubst for examples/ha/
    --ha)    PACKAGES+=(patroni python3-etcd etcd-server etcd-client haproxy gettext-base) ;;
    --deb)   PACKAGES+=(build-essential dpkg-dev debhelper postgresql-server-dev-all) ;;
    --majors) PACKAGES+=(debootstrap) ;;
    # make check-valgrind builds PostgreSQL from source (test/valgrind/build-pg.sh)
    --valgrind) PACKAGES+=(valgrind bzip2 liblz4-dev zlib1g-dev) ;;
    *) echo "deps.sh: unknown option $opt" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "== installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d keeps the packages from starting their own services (Debian's
# postgresql, nginx, etcd and haproxy would otherwise start a server of their own).
had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
[ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
[ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
