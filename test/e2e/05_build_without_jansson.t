# The extension builds without jansson: only the simulator (a test and demo tool) needs it.
# A database server must not have to install libjansson-dev, so `make` never compiles anything
# under sim/, and elmo_oscp.so does not link jansson.  Where we may (root, mount namespaces),
# a scratch copy is built with jansson's headers and pkg-config file made unusable (its
# shared library stays: the linker itself needs it).
. "$(dirname "$0")/tap.sh"
plan 5

dry=$(make -C "$TOP" -n -B all 2>&1)
! grep -Eq "(^|[ =])sim/|-C sim( |\$)|$TOP/sim/|jansson" <<<"$dry"; ok $? "make (dry run, everything rebuilt) neither enters sim/ nor names jansson"
! ldd "$TOP/elmo_oscp.so" | grep -q jansson; ok $? "elmo_oscp.so does not link libjansson"

if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2>/dev/null; then
  for t in 3 4 5; do echo "ok $t # SKIP needs root and mount namespaces (unshare -m)"; done
  exit 0
fi
S=$(mktemp -d /tmp/elmo_nojansson.XXXXXX)
trap 'rm -rf "$S"' EXIT
cp -r "$TOP/Makefile" "$TOP/elmo_oscp.control" "$TOP/src" "$TOP/sql" "$TOP/sim" "$S/"
printf '#error "jansson is hidden for this test"\n' > "$S/poison.h"
# In a private mount namespace: jansson's files are covered for this shell and its children only.
unshare -m bash -c '
  S=$1
  for f in /usr/include/jansson.h /usr/include/jansson_config.h; do mount --bind "$S/poison.h" "$f"; done
  for f in /usr/lib/*/libjansson.a /usr/lib/*/pkgconfig/jansson.pc; do
    [ -e "$f" ] && mount --bind /dev/null "$f"
  done
  make -s -C "$S" clean >/dev/null 2>&1
  make -s -C "$S" >"$S/ext.log" 2>&1; echo $? > "$S/ext.rc"
  make -s -C "$S" sim >"$S/sim.log" 2>&1; echo $? > "$S/sim.rc"
' _ "$S"
is "$(cat "$S/ext.rc")" 0 "the extension builds in a scratch copy with jansson hidden"
[ "$(cat "$S/ext.rc")" = 0 ] || diag "$(tail -n 15 "$S/ext.log")"
[ -f "$S/elmo_oscp.so" ] && ! [ -e "$S/sim/elmo-sim" ]; ok $? "it made elmo_oscp.so and no simulator"
[ "$(cat "$S/sim.rc")" != 0 ] && grep -q 'jansson is hidden' "$S/sim.log"
ok $? "there, make sim fails on the hidden jansson (the hiding works)"
