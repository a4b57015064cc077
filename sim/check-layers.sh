#!/bin/sh
# check-layers.sh MODULE... (bottom to top): every module calls (and includes)
# only itself and modules listed before it.  Reads the objects' symbol tables
# (nm), so it sees the calls the compiler really made.
status=0
rank() { i=0; for m in $LAYERS; do [ "$m" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done; echo -1; }
LAYERS="$*"
defs=$(for m in $LAYERS; do nm --defined-only -g "$m.o" | awk -v m="$m" 'NF == 3 { print $3, m }'; done)
for m in $LAYERS; do
  r=$(rank "$m")
  for sym in $(nm -u "$m.o" | awk '{ print $2 }'); do
    owner=$(printf '%s\n' "$defs" | awk -v s="$sym" '$1 == s { print $2; exit }')
    [ -n "$owner" ] || continue
    if [ "$(rank "$owner")" -gt "$r" ]; then
      echo "check-layers: $m calls $sym of $owner, a layer above it" >&2; status=1
    fi
  done
  for h in $(sed -n 's/^#include "\(.*\)\.h"$/\1/p' "$m.c" $( [ -f "$m.h" ] && echo "$m.h")); do
    hr=$(rank "$h")
    if [ "$hr" -lt 0 ]; then
      echo "check-layers: $m includes $h.h, no module of LAYERS" >&2; status=1
    elif [ "$hr" -gt "$r" ]; then
      echo "check-layers: $m includes $h.h, a layer above it" >&2; status=1
    fi
  done
done
[ $status -eq 0 ] && echo "check-layers: $# modules, every call and include goes down"
exit $status
