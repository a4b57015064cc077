# Upgrading: 0.1.0's install script with the current library (the window
# between installing a new library and ALTER EXTENSION ... UPDATE) keeps
# serving ELMO; ALTER EXTENSION elmo_oscp UPDATE keeps the registration,
# forecasts, outbox and the CSMS's trigger, and leaves exactly the schema a
# fresh install of the current version creates; then the worker serves again.
# Its own cluster (elmo_oscp.database is the upgraded database) and simulator.
. "$(dirname "$0")/tap.sh"
plan 23
# usage reports for stations ELMO never assigned capacity to warn, and so does the
# fresh install in a database the worker does not serve
export PGOPTIONS='-c client_min_messages=error'
W=$(mktemp -d /tmp/elmo_up.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
OLD=0.1.0
NEW=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$TOP/elmo_oscp.control")
STATION=B6734_AE0100_00848825118

# The schema as pg_dump --binary-upgrade shows it (every extension member,
# with its membership), without what differs between any two databases:
# OIDs (the extension's configuration tables are compared by name below),
# relfrozenxid, pg_dump's per-run \restrict key, sequence positions (state,
# compared below), and the stored "missing value" of a column added by ALTER
# TABLE (it only serves rows older than the column, and 0.1.0 added
# used_current_token to an empty table).
schema_dump() {
  "$PGBIN/pg_dump" --schema-only --binary-upgrade -d "$1" |
    grep -v -e '^\\restrict ' -e '^\\unrestrict ' -e 'binary_upgrade_set_next_' \
            -e '^SET relfrozenxid = ' -e "^WHERE oid = '[0-9]*';\$" \
            -e 'binary_upgrade_set_missing_value(' -e '^-- set missing value\.$' |
    sed -E -e "s/^(SELECT pg_catalog\.setval\('[^']+', )[0-9]+, (true|false)\);\$/\1N);/" \
           -e "/binary_upgrade_create_empty_extension\(/s/'\{[0-9,]+\}'/'{OIDS}'/" | cat -s
}
EXTCONFIG_SQL="SELECT coalesce(extconfig::regclass[]::text, '-') || ' ' || coalesce(extcondition::text, '-')
                 FROM pg_extension WHERE extname = 'elmo_oscp'"
# What the state is: rows of every table holding protocol or CSMS state, each
# as JSON, minus what the worker may change meanwhile (delivery progress).
STATE_SQL="
  SELECT 'registration ' || md5(string_agg(to_jsonb(r)::text, ',')) FROM elmo_registration r
  UNION ALL SELECT 'forecasts ' || count(*) || ' ' || md5(string_agg(to_jsonb(f)::text, ',' ORDER BY id)) FROM capacity_forecast f
  UNION ALL SELECT 'blocks ' || count(*) || ' ' || md5(string_agg(to_jsonb(b)::text, ',' ORDER BY forecast_id, block_no)) FROM capacity_forecast_block b
  UNION ALL SELECT 'received ' || count(*) || ' ' || md5(string_agg((to_jsonb(m) - 'raw_body' - 'body')::text, ',' ORDER BY id))
              FROM elmo_received_message m
  UNION ALL SELECT 'bodies ' || md5(string_agg(m.raw_body || m.body::text, ',' ORDER BY id))
              FROM elmo_received_message m WHERE m.message <> 'register'
  UNION ALL SELECT 'outbox ' || count(*) || ' ' || md5(string_agg(concat_ws(' ', id, message, request_id, body), ',' ORDER BY id)) FROM elmo_outbox
  UNION ALL SELECT 'usage ' || md5(string_agg(to_jsonb(u)::text, ',' ORDER BY group_id)) FROM elmo_usage_last u
  UNION ALL SELECT 'settings ' || md5(string_agg(to_jsonb(s)::text, ',' ORDER BY group_id)) FROM elmo_group_settings s
  UNION ALL SELECT 'csms ' || count(*) || ' ' || md5(string_agg(to_jsonb(c)::text, ',' ORDER BY forecast_id)) FROM csms_seen c"
# A CSMS of the simplest kind: a trigger on capacity_forecast recording what it saw.
CSMS_SQL="
  CREATE TABLE csms_seen (forecast_id bigint PRIMARY KEY, group_id text NOT NULL, kind text NOT NULL);
  CREATE FUNCTION csms_on_forecast() RETURNS trigger LANGUAGE plpgsql AS \$\$
  BEGIN
      INSERT INTO csms_seen VALUES (NEW.id, NEW.group_id, NEW.kind);
      RETURN NEW;
  END \$\$;
  CREATE TRIGGER csms_forecast AFTER INSERT ON capacity_forecast
      FOR EACH ROW EXECUTE FUNCTION csms_on_forecast();"

(
  SIM_PORT=$(free_port 23600)
  HTTP=$(free_port 23700)
  SIM=http://127.0.0.1:$SIM_PORT
  cluster_init "$W/pg" elmo_up "$HTTP" "elmo_oscp.public_url = 'http://127.0.0.1:$HTTP/oscp/fp/2.0'" >/dev/null
  cluster_start
  SIM_LOG=$W/sim.log sim_start "$SIM_PORT" --allow-local-urls --no-schedule --handshake-delay-ms 200
  trap 'sim_stop; cluster_stop immediate' EXIT
  as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_up
  as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres elmo_fresh
  wait_listener 30 >/dev/null

  # emergency: ask the simulator to send ELMO's emergency forecast; prints
  # the HTTP status the worker answered it with (empty: no answer in time)
  emergency() { sim_emergency "$SIM" "$STATION" "$1"; }

  # ---- 0.1.0's SQL, the current library: the window before the update
  sql "CREATE EXTENSION elmo_oscp VERSION '$OLD'; $CSMS_SQL" >/dev/null
  is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'elmo_oscp'")" "$OLD" "CREATE EXTENSION elmo_oscp VERSION '$OLD'"
  sql "SET client_min_messages = error; SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
  wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 30
  ok $? "registered with the simulator and connected (ELMO's register and handshake answered 204)"
  is "$(emergency 40)" 204 "ELMO's emergency forecast is answered 204 by the worker"
  wait_sql "EXISTS (SELECT 1 FROM capacity_forecast WHERE group_id = '$STATION' AND kind = 'emergency')" 10
  ok $? "it is stored in capacity_forecast"
  is "$(sql "SELECT count(*) FROM csms_seen")" 1 "the CSMS's trigger fired"
  id=$(sql "SELECT elmo_report_usage('$STATION', 100)")
  wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $id)" 20
  ok $? "a usage report queued with $OLD's SQL is delivered"
  sql "INSERT INTO elmo_group_settings VALUES ('$STATION', 300)" >/dev/null
  # a message ELMO refuses for now (503) is still queued at the update
  curl -s -o /dev/null -X POST -d '{"status":503,"count":-1,"path":"update_group_measurements"}' "$SIM/sim/fault"
  held=$(sql "SELECT elmo_report_usage('$STATION', 150)")
  wait_sql "(SELECT attempts > 0 AND state = 'queued' FROM elmo_outbox WHERE id = $held)" 20
  ok $? "a second usage report is refused by ELMO (503) and waits for a retry"

  # ---- the update, while the worker runs
  TOKEN_AT_REST_SQL="SELECT count(*) FILTER (WHERE m.raw_body LIKE '%' || r.elmo_token || '%' OR m.body::text LIKE '%' || r.elmo_token || '%')
                             || ' of ' || count(*) FROM elmo_received_message m, elmo_registration r WHERE m.message = 'register'"
  is "$(sql "$TOKEN_AT_REST_SQL")" "1 of 1" "$OLD keeps ELMO's token in the register it sent"
  before=$(sql "$STATE_SQL")
  psql -XAtq -v ON_ERROR_STOP=1 -c "ALTER EXTENSION elmo_oscp UPDATE" 2>"$W/update.err"
  ok $? "ALTER EXTENSION elmo_oscp UPDATE"; [ -s "$W/update.err" ] && diag "$(cat "$W/update.err")"
  is "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'elmo_oscp'")" "$NEW" "the extension is at $NEW"
  after=$(sql "$STATE_SQL")
  is "$after" "$before" "registration, tokens, forecasts, messages, usage baseline, group settings and the CSMS's rows kept"
  is "$(sql "$TOKEN_AT_REST_SQL")" "0 of 1" \
     "ELMO's token is out of the register it sent, which 0.1.0 kept as sent"
  is "$(sql "SELECT count(*) FROM _elmo_saved_trigger WHERE trigger_name = 'csms_forecast'")" 1 \
     "the CSMS's trigger is saved for a restore"
  is "$(sql "SELECT count(*) FROM pg_trigger WHERE tgname = 'csms_forecast' AND tgrelid = 'capacity_forecast'::regclass")" 1 \
     "the CSMS's trigger on capacity_forecast is still there"

  # ---- the same schema as a fresh install
  PGDATABASE=elmo_fresh sql "CREATE EXTENSION elmo_oscp; $CSMS_SQL" >/dev/null
  is "$(PGDATABASE=elmo_fresh sql "SELECT extversion FROM pg_extension WHERE extname = 'elmo_oscp'")" "$NEW" \
     "a fresh CREATE EXTENSION elmo_oscp (with the same CSMS trigger) in another database installs $NEW"
  schema_dump elmo_up > "$W/upgraded.sql"; schema_dump elmo_fresh > "$W/fresh.sql"
  n=$(grep -c '^ALTER EXTENSION elmo_oscp ADD ' "$W/fresh.sql")
  [ "$n" -gt 50 ]; ok $? "the dump lists the extension's $n members"
  d=$(diff -u "$W/fresh.sql" "$W/upgraded.sql"); r=$?
  ok $r "pg_dump --schema-only --binary-upgrade: the upgraded database and the fresh install are identical"
  [ $r -eq 0 ] || diag "$(head -n 60 <<<"$d")"
  is "$(sql "$EXTCONFIG_SQL")" "$(PGDATABASE=elmo_fresh sql "$EXTCONFIG_SQL")" \
     "the same tables are the extension's configuration (dumped with the data), with the same filters"

  # ---- the worker serves the upgraded database
  is "$(emergency 30)" 204 "after the update, ELMO's next emergency forecast is answered 204"
  is "$(sql "SELECT count(*) FROM capacity_forecast WHERE group_id = '$STATION'") $(sql "SELECT count(*) FROM csms_seen")" "2 2" \
     "it is stored and the CSMS's trigger fired again"
  curl -s -o /dev/null -X DELETE "$SIM/sim/fault"
  wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $held)" 60
  ok $? "the usage report queued before the update is delivered once ELMO accepts it"
  id=$(sql "SELECT elmo_report_usage('$STATION', 200)")
  wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $id)" 20
  ok $? "a usage report queued after the update is delivered"
  is "$(curl -s "$SIM/sim/messages?path=update_group_measurements" | jq -r '[.[] | select(.status == 204) | .body.measurements[0].value] | map(tostring) | join(",")')" \
     "100,150,200" "ELMO accepted the three readings, in order"
)
rm -rf "$W"
