#!/usr/bin/env bash
# package.sh DEB... — installs built postgresql-NN-elmo-oscp packages with apt
# (their dependencies checked as on any system), runs the package test
# debian/tests/installcheck, and removes them again.  Meant for a clean system
# (test/majors.sh runs it in a throw-away chroot): files left by `make install`
# would hide a file missing from the package.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
[ $# -gt 0 ] || { echo "usage: $0 DEB..." >&2; exit 2; }

debs=() names=()
for f in "$@"; do
  debs+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
  names+=("$(dpkg-deb -f "$f" Package)")
done
export DEBIAN_FRONTEND=noninteractive
echo "== installing ${names[*]}"
apt-get install -y -q --no-install-recommends "${debs[@]}" >/tmp/elmo_oscp_package_install.log 2>&1 ||
  { cat /tmp/elmo_oscp_package_install.log >&2; echo "installing the package failed" >&2; exit 1; }
trap 'dpkg --purge "${names[@]}" >/dev/null 2>&1' EXIT

debian/tests/installcheck
