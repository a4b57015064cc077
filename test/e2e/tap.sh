# test/e2e/tap.sh — a few TAP helpers for the bash end-to-end tests.
# Sourced by test/e2e/*.t; run by `prove -e bash test/e2e/*.t` from test/run.sh,
# which exports PGHOST/PGPORT/PGDATABASE, ELMO_HTTP_PORT, ELMO_SIM_PORT, ELMO_TEST_WORK.
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$TOP/test/lib.sh"
_tap_n=0
_tap_failed=0
plan() { echo "1..$1"; }
ok() {   # ok CONDITION-EXIT-CODE DESCRIPTION
  _tap_n=$((_tap_n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $_tap_n - $2"; else echo "not ok $_tap_n - $2"; echo "#   failed: $2" >&2; _tap_failed=1; fi
}
is() {   # is GOT EXPECTED DESCRIPTION
  _tap_n=$((_tap_n + 1))
  if [ "$1" = "$2" ]; then echo "ok $_tap_n - $3"
  else echo "not ok $_tap_n - $3"; { echo "#   $3"; echo "#   got:      '$1'"; echo "#   expected: '$2'"; } | tee /dev/stderr; _tap_failed=1; fi
}
diag() { echo "# $*"; }
sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
http_status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# sim_emergency SIM_URL GROUP KW: the simulator sends ELMO's emergency forecast;
# prints the HTTP status the worker answered it with (empty: no answer in 20 s)
sim_emergency() {
  local id deadline=$((SECONDS + 20)) st=
  id=$(curl -s -X POST -d "{\"group_id\":\"$2\",\"capacity\":$3}" "$1/sim/emergency" | jq -r .callback_id)
  while [ $SECONDS -lt $deadline ]; do
    st=$(curl -s "$1/sim/callbacks" | jq -r --argjson id "$id" '.[] | select(.id == $id) | .status // empty')
    [ -n "$st" ] && break
    sleep 0.05
  done
  echo "$st"
}
