# Backup and restore (README, "Backup and restore"): pg_dump keeps the
# extension's state, and after a restore into a NEW cluster with the library
# preloaded the worker carries on with the same registration and tokens:
# ELMO's next forecast is accepted, queued messages go out (one was in flight
# when the backup was taken), the CSMS's trigger is back and fires, ids go on.
#   1. pg_dump -Fc / pg_restore, exactly as the README says;
#   2. plain SQL (pg_dump > file, psql -f file) into a database whose worker
#      already serves the extension, so that nothing but the restored rows
#      tells it about the registration and the queue.
# Its own clusters (one after another, on the same HTTP port, which ELMO
# knows) and simulator, which plays ELMO throughout.
. "$(dirname "$0")/tap.sh"
plan 24
W=$(mktemp -d /tmp/elmo_dr.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
STATION=B6734_AE0100_00848825118
DB=elmo_dr

(
  SIM_PORT=$(free_port 23900)
  HTTP=$(free_port 24000)
  SIM=http://127.0.0.1:$SIM_PORT
  CONF=("elmo_oscp.public_url = 'http://127.0.0.1:$HTTP/oscp/fp/2.0'")
  SIM_LOG=$W/sim.log sim_start "$SIM_PORT" --allow-local-urls --no-schedule --handshake-delay-ms 200
  trap 'sim_stop; cluster_stop immediate' EXIT
  export PGOPTIONS='-c client_min_messages=error'     # http:// public URL: elmo_register warns

  # emergency KW: ELMO's emergency forecast; prints the status the worker answered
  emergency() { sim_emergency "$SIM" "$STATION" "$1"; }
  state() { sql "SELECT md5(string_agg(concat_ws(' ', our_token, previous_token, elmo_token, state, connected), ','))
                   FROM elmo_registration"; }
  delivered() { curl -s "$SIM/sim/messages?path=update_group_measurements" |
                  jq -r '[.[] | select(.status == 204) | .body.measurements[0].value] | map(tostring) | join(",")'; }

  # ---- cluster A: the CSMS in production
  cluster_init "$W/a" "$DB" "$HTTP" "${CONF[@]}" >/dev/null
  cluster_start
  as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres "$DB"
  sql "CREATE EXTENSION elmo_oscp" >/dev/null
  # the CSMS: its own role and schema, a trigger on capacity_forecast
  sql "CREATE ROLE e2e18_csms LOGIN; GRANT elmo_oscp_csms TO e2e18_csms;
       CREATE SCHEMA csms AUTHORIZATION e2e18_csms;" >/dev/null
  psql -XAtq -v ON_ERROR_STOP=1 -U e2e18_csms -c "
       CREATE TABLE csms.seen (forecast_id bigint, kind text, by_role text);
       CREATE FUNCTION csms.on_forecast() RETURNS trigger LANGUAGE plpgsql AS \$\$
       BEGIN INSERT INTO csms.seen VALUES (NEW.id, NEW.kind, current_user); RETURN NULL; END \$\$;
       CREATE TRIGGER csms_seen AFTER INSERT ON capacity_forecast FOR EACH ROW EXECUTE FUNCTION csms.on_forecast();
       GRANT USAGE ON SCHEMA csms TO elmo_oscp_worker;
       GRANT INSERT ON csms.seen TO elmo_oscp_worker;
       INSERT INTO elmo_group_settings VALUES ('$STATION', 300);" >/dev/null
  ok $? "a CSMS with its own role, a trigger on capacity_forecast and a contract capacity"
  sql "SELECT elmo_register('$SIM/oscp/2.0', 'ELMO-TESTBED-TOKEN')" >/dev/null
  wait_sql "(SELECT state = 'registered' AND connected FROM elmo_registration)" 30
  ok $? "registered with ELMO (the simulator) and connected"
  is "$(emergency 40)" 204 "ELMO's emergency forecast is answered 204"
  wait_sql "(SELECT count(*) = 1 FROM csms.seen)" 10
  ok $? "the CSMS's trigger fired"
  id=$(sql "SELECT elmo_report_usage('$STATION', 100)")
  wait_sql "(SELECT state = 'delivered' FROM elmo_outbox WHERE id = $id)" 20
  ok $? "a usage report is delivered"
  # ELMO refuses reports for now: two wait for a retry, one of them caught in flight by the backup
  curl -s -o /dev/null -X POST -d '{"status":503,"count":-1,"path":"update_group_measurements"}' "$SIM/sim/fault"
  q1=$(sql "SELECT elmo_report_usage('$STATION', 150)")
  wait_sql "(SELECT attempts > 0 AND state = 'queued' FROM elmo_outbox WHERE id = $q1)" 20
  q2=$(sql "SELECT elmo_report_usage('$STATION', 160)")
  wait_sql "(SELECT attempts > 0 AND state = 'queued' FROM elmo_outbox WHERE id = $q2)" 20
  sql "UPDATE elmo_outbox SET state = 'sending' WHERE id = $q2" >/dev/null
  ok $? "two usage reports wait for ELMO, one of them as if in flight (sending)"
  tokens=$(state)
  last_forecast=$(sql "SELECT max(id) FROM capacity_forecast")

  # the backup: the roles (cluster-wide), then the database, both ways
  "$PGBIN/pg_dumpall" --globals-only > "$W/globals.sql" &&
    "$PGBIN/pg_dump" -Fc -d "$DB" -f "$W/csms.dump" &&
    "$PGBIN/pg_dump" -d "$DB" -f "$W/csms.sql"
  ok $? "pg_dumpall --globals-only, pg_dump -Fc and pg_dump (plain SQL)"
  cluster_stop fast

  # restore ROLES-AND-DATABASE-COMMANDS...: a new cluster on the same port,
  # then the checks; the commands run with PG* pointing at it
  restore_and_check() {
    local how=$1 dir=$2 rc; shift 2
    cluster_init "$W/$dir" "$DB" "$HTTP" "${CONF[@]}" >/dev/null
    cluster_start
    "$@" > "$W/$dir.out" 2>&1; rc=$?
    ok $rc "$how: restored into a new cluster"; [ $rc -eq 0 ] || diag "$(tail -n 5 "$W/$dir.out")"
    is "$(sql "SELECT elmo_restore_triggers()")" "csms_seen on capacity_forecast" \
       "$how: elmo_restore_triggers() creates the CSMS's trigger again"
    is "$(state)" "$tokens" "$how: the same registration and tokens"
    curl -s -o /dev/null -X DELETE "$SIM/sim/fault"
    wait_sql "(SELECT bool_and(state = 'delivered') FROM elmo_outbox WHERE id IN ($q1, $q2))" 30; rc=$?
    ok $rc "$how: the reports that waited (the one in flight too) are delivered"
    [ $rc -eq 0 ] || diag "$(sql "SELECT concat_ws(' ', id, state, attempts, next_attempt_at, last_error) FROM elmo_outbox
                    WHERE id IN ($q1, $q2); SELECT concat_ws(' ', state, connected) FROM elmo_registration")"
    is "$(emergency 30)" 204 "$how: ELMO's next forecast is accepted (204)"
    wait_sql "(SELECT count(*) = 2 FROM csms.seen)" 10
    is "$(sql "SELECT by_role FROM csms.seen ORDER BY forecast_id DESC LIMIT 1")" elmo_oscp_worker \
       "$how: the CSMS's trigger fired, as elmo_oscp_worker"
    [ "$(sql "SELECT max(id) FROM capacity_forecast")" -gt "$last_forecast" ]
    ok $? "$how: forecast ids go on after the restored ones"
    is "$(sql "SELECT elmo_capacity_at('$STATION', now() + interval '10 years')")" 300 "$how: the group settings are there"
    cluster_stop fast
  }

  # 1. pg_dump -Fc and pg_restore: the README's commands
  custom() {
    psql -X -d postgres -f "$W/globals.sql" >/dev/null 2>&1     # "role postgres already exists": fine
    as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres "$DB" &&
      "$PGBIN/pg_restore" -d "$DB" "$W/csms.dump"
  }
  restore_and_check "pg_dump -Fc | pg_restore" b custom
  is "$(delivered)" "100,150,160" "ELMO got the three readings, in order, each once"

  # 2. plain SQL, into a database whose worker already serves the extension
  plain() {
    psql -X -d postgres -f "$W/globals.sql" >/dev/null 2>&1
    as_pg "$PGBIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres "$DB" &&
      sql "CREATE EXTENSION elmo_oscp" &&
      wait_sql "(SELECT usename = 'elmo_oscp_worker' FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker')" 20 &&
      wait_sql "(SELECT count(*) > 0 FROM elmo_status() WHERE listening)" 20 &&
      psql -X -v ON_ERROR_STOP=1 -d "$DB" -f "$W/csms.sql"
  }
  restore_and_check "pg_dump | psql" c plain
)
rm -rf "$W"
