# Without shared_preload_libraries, CREATE EXTENSION fails with the documented error and hint.
. "$(dirname "$0")/tap.sh"
plan 3
W=$(mktemp -d /tmp/elmo_np.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
( # a second cluster, preload removed
  cluster_init "$W/pg" postgres "$(free_port 23000)"
  sed -i "s/^shared_preload_libraries = 'elmo_oscp'/#&/" "$CL_DIR/data/postgresql.conf"
  cluster_start
  out=$(psql -X -v VERBOSITY=verbose -c "CREATE EXTENSION elmo_oscp" 2>&1)
  echo "$out" | grep -q "elmo_oscp can only be loaded via shared_preload_libraries"; ok $? "CREATE EXTENSION fails: only via shared_preload_libraries"
  echo "$out" | grep -q "HINT:  Add elmo_oscp to shared_preload_libraries"; ok $? "with a hint that says how to fix it"
  is "$(psql -XAtc "SELECT count(*) FROM pg_extension WHERE extname = 'elmo_oscp'")" 0 "nothing was created"
  cluster_stop fast
)
rm -rf "$W"
