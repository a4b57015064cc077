#!/usr/bin/env bash
# make deb: the Debian binary package postgresql-NN-elmo-oscp for each
# PostgreSQL major this system supports (debian/pgversions), built with
# pg_buildext and dpkg-buildpackage from a clean copy of the source.  The
# .deb files land in dist/ (or $DIST).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
DIST=${DIST:-$TOP/dist}

bash test/deps.sh --deb

# The package version must be the extension's, or the package would claim
# a release it does not contain.
ext=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" elmo_oscp.control)
pkg=$(dpkg-parsechangelog -S Version); pkg=${pkg%-*}
if [ "$ext" != "$pkg" ]; then
  echo "debian/changelog is at $pkg but elmo_oscp.control at $ext: add a changelog entry (dch -v $ext-1)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/elmo_oscp_deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/elmo-oscp-$ext
bash tools/copy-source.sh "$src"
cd "$src"
# debian/control names one binary package per major this system supports
pg_buildext updatecontrol
echo "== dpkg-buildpackage for PostgreSQL $(pg_buildext supported-versions | xargs)"
if ! dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log" >&2
  echo "dpkg-buildpackage failed (full log above, last 60 lines)" >&2
  exit 1
fi
mkdir -p "$DIST"
for f in "$work"/*.deb; do
  cp "$f" "$DIST/"
  echo "built $DIST/$(basename "$f")"
done
