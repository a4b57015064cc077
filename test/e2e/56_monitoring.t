# Monitoring with Debian's own tools: examples/monitoring/ checked by promtool (rules, their
# unit tests, the Prometheus configuration), then the real prometheus-postgres-exporter run
# against the harness's cluster with examples/monitoring/queries.yaml, as a login role that
# has only elmo_oscp_reader (or, where that role does not exist, only SELECT on elmo_metrics
# and EXECUTE on elmo_status()); the metrics of elmo_metrics must be in its /metrics.
. "$(dirname "$0")/tap.sh"
MON=$TOP/examples/monitoring
EXPORTER=$(command -v prometheus-postgres-exporter)
PROMTOOL=$(command -v promtool)
[ -n "$EXPORTER" ] && [ -n "$PROMTOOL" ] || { echo "1..0 # SKIP prometheus and prometheus-postgres-exporter not installed (test/deps.sh installs them)"; exit 0; }
plan 14
W=$(mktemp -d /tmp/elmo_mon.XXXXXX)
ROLE=e2e56_exporter
cleanup() {
  [ -n "${EPID:-}" ] && kill "$EPID" 2>/dev/null && wait "$EPID" 2>/dev/null
  psql -Xq -c "SELECT test.reset()" -c "DROP OWNED BY $ROLE" -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
  [ -n "${KEEPW:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PROMTOOL" check rules "$MON/alerts.yml" >/dev/null
ok $? "promtool check rules examples/monitoring/alerts.yml"
(cd "$MON" && "$PROMTOOL" test rules alerts_test.yml >/dev/null)
ok $? "promtool test rules examples/monitoring/alerts_test.yml"
"$PROMTOOL" check config "$MON/prometheus.yml" >/dev/null
ok $? "promtool check config examples/monitoring/prometheus.yml"

# something to measure: a registration, a forecast in force, a queued message
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
deadline=$((SECONDS + 15))
until [ "$(sql "SELECT (test.post('update_group_capacity_forecast', test.emergency_body('MON-G1', now() - interval '1 min', now() + interval '1 hour', 42), 'MON-1')).status")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
wait_sql "(SELECT capacity = 42 FROM capacity_in_force WHERE group_id = 'MON-G1')" 10
ok $? "an emergency of 42 kW in force"

# the exporter's role: the reader role, nothing more
sql "DROP ROLE IF EXISTS $ROLE; CREATE ROLE $ROLE LOGIN" >/dev/null
if [ "$(sql "SELECT count(*) FROM pg_roles WHERE rolname = 'elmo_oscp_reader'")" = 1 ]; then
  sql "GRANT elmo_oscp_reader TO $ROLE" >/dev/null; how="granted elmo_oscp_reader"
else
  sql "GRANT SELECT ON elmo_metrics TO $ROLE; GRANT EXECUTE ON FUNCTION elmo_status() TO $ROLE" >/dev/null
  how="SELECT on elmo_metrics, EXECUTE on elmo_status()"
fi
is "$(psql -XAtq -U "$ROLE" -c "SELECT value FROM elmo_metrics WHERE metric = 'elmo_worker_up'")" 1 "a role with $how reads elmo_metrics"

port=$(free_port 23900)
DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=$ROLE dbname=$PGDATABASE sslmode=disable" \
  "$EXPORTER" --web.listen-address="127.0.0.1:$port" --extend.query-path="$MON/queries.yaml" \
  --disable-default-metrics --disable-settings-metrics > "$W/exporter.log" 2>&1 &
EPID=$!
deadline=$((SECONDS + 20))
until curl -fs "http://127.0.0.1:$port/metrics" > "$W/metrics" 2>/dev/null && grep -q '^elmo_worker_up' "$W/metrics" \
      || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
# the exporter labels every metric with its server: left out here
m() { grep -E "^$1( |\{)" "$W/metrics" | sed 's/server="[^"]*",\?//; s/,}/}/; s/{}//'; }
is "$(m elmo_worker_up)" "elmo_worker_up 1" "prometheus-postgres-exporter serves elmo_worker_up 1"
is "$(m elmo_reachable)" "elmo_reachable 1" "elmo_reachable"
is "$(m elmo_registered) / $(m elmo_connected)" "elmo_registered 1 / elmo_connected 1" "elmo_registered, elmo_connected"
is "$(m elmo_capacity_in_force)" 'elmo_capacity_in_force{group_id="MON-G1",kind="emergency",unit="KW"} 42' \
   "elmo_capacity_in_force, labelled by group, kind and unit"
is "$(m elmo_received_messages_total | grep 'kind="emergency"')" 'elmo_received_messages_total{kind="emergency"} 1' \
   "elmo_received_messages_total by kind"
m elmo_requests_total | grep -q 'class="2xx"'
ok $? "elmo_requests_total by status class"
is "$(m elmo_outbox_messages | wc -l) $(m elmo_alerts_total | wc -l)" "5 4" "elmo_outbox_messages by state, elmo_alerts_total by alert"
m elmo_outbox_oldest_age_seconds | grep -q '^elmo_outbox_oldest_age_seconds ' && grep -q '^# TYPE elmo_messages_sent_total counter' "$W/metrics"
ok $? "elmo_outbox_oldest_age_seconds; counters typed as counters"
is "$(grep -E '^pg_exporter_last_scrape_error ' "$W/metrics" | awk '{ print $2 }')" 0 "the exporter reports no scrape error"
