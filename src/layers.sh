#!/bin/sh
# layers.sh OBJECT... — run by `make`: fails when a file in src/ reaches
# sideways or up (see the diagram in src/CONTRACT.md): an #include of a header
# of the same or a higher layer, or a call into (a symbol defined by) an
# object of the same or a higher layer.  A file's own header does not count.
set -eu
src=$(dirname "$0")

# The layer of each file; a new file must be placed here.
layer() {
	case "$1" in
		no_postgres|routes|http_client|addresses) echo 0 ;;
		connections) echo 1 ;;
		http_server) echo 2 ;;
		compat) echo 10 ;;
		settings|shmem|ids|statements|durability|log_filter) echo 11 ;;
		db|drop_guard) echo 12 ;;
		connect) echo 13 ;;
		inbound|sender|tokens|sql_api|rfc3339|capacity|run_as) echo 20 ;;
		worker) echo 30 ;;
		elmo_oscp) echo 40 ;;
		*) echo "src/layers.sh: src/$1 has no layer: add it to the table in src/layers.sh" >&2
		   echo 99 ;;
	esac
}

bad=0
complain() { echo "src/layers.sh: $*" >&2; bad=1; }

# includes
for f in "$src"/*.c "$src"/*.h; do
	base=$(basename "$f"); base=${base%.*}
	l=$(layer "$base")
	[ "$l" -eq 99 ] && bad=1
	for inc in $(sed -n 's/^#include "\([a-z_]*\)\.h".*/\1/p' "$f"); do
		[ "$inc" = "$base" ] || [ ! -f "$src/$inc.h" ] && continue
		li=$(layer "$inc")
		[ "$li" -lt "$l" ] || complain "$base (layer $l) includes $inc.h (layer $li)"
	done
done

# calls: each object's undefined symbols, against what the others define
defs=$(mktemp)
trap 'rm -f "$defs"' EXIT
for o in "$@"; do
	base=$(basename "$o" .o)
	nm -g --defined-only "$o" | awk -v b="$base" 'NF == 3 { print $3, b }'
done > "$defs"
for o in "$@"; do
	base=$(basename "$o" .o)
	l=$(layer "$base")
	for sym in $(nm -u "$o" | awk '{ print $NF }'); do
		owner=$(awk -v s="$sym" '$1 == s { print $2; exit }' "$defs")
		[ -n "$owner" ] || continue
		lo=$(layer "$owner")
		[ "$lo" -lt "$l" ] || complain "$base (layer $l) uses $sym from $owner (layer $lo)"
	done
done
exit $bad
