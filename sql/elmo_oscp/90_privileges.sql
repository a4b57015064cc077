-- Who may use what.  Code: every update script runs it again, so a privilege
-- added here reaches upgraded databases too; taking one away also needs a
-- REVOKE in the migration (sql/README.md).

-- ---------------------------------------------------------------- tables and views

-- Tokens, raw messages and the worker's machinery: not for PUBLIC.
REVOKE ALL ON elmo_registration FROM PUBLIC;
REVOKE ALL ON elmo_received_message FROM PUBLIC;
REVOKE ALL ON elmo_outbox FROM PUBLIC;
REVOKE ALL ON elmo_timer FROM PUBLIC;
REVOKE ALL ON _elmo_usage_skip FROM PUBLIC;

-- The CSMS's own machinery may read the tables it works with.
GRANT SELECT ON capacity_forecast, capacity_forecast_block TO PUBLIC;
GRANT SELECT ON elmo_group_settings TO PUBLIC;
-- what was asked for each day (elmo_day_plan shows it next to what was granted)
GRANT SELECT ON elmo_adjust_request TO PUBLIC;
GRANT SELECT ON elmo_capacity_now TO PUBLIC;
GRANT SELECT ON capacity_in_force TO PUBLIC;

-- Alerts and metrics are the operator's.
REVOKE ALL ON _elmo_alert, _elmo_capacity_dirty FROM PUBLIC;
REVOKE ALL ON elmo_alerts, elmo_metrics FROM PUBLIC;

-- ---------------------------------------------------------------- functions

-- The capacity in force is what the CSMS reads.
GRANT EXECUTE ON FUNCTION elmo_capacity_at(text, timestamptz), elmo_capacity_schedule(text, date),
                          elmo_day_plan(text, date), elmo_today(), elmo_tomorrow()
    TO PUBLIC;

-- Receipt and application: the worker's, and the DBA's (elmo_replay, elmo_discard).
REVOKE ALL ON FUNCTION _elmo_receive(text, text, text, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION _elmo_apply(bigint), _elmo_apply_failed(bigint, text, text),
                       _elmo_applies_due(int), _elmo_next_apply_at(),
                       _elmo_retention_inbound(),
                       elmo_replay(bigint), elmo_discard(bigint, text)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION
    _elmo_store_received(text, text, text, text, text, jsonb, text, text, date, boolean),
    _elmo_heard(timestamptz, boolean), _elmo_apply_heartbeat(jsonb, timestamptz, boolean),
    _elmo_apply_register(jsonb, timestamptz, boolean, text), _elmo_apply_unregister(timestamptz, boolean),
    _elmo_apply_handshake(text, jsonb, timestamptz, boolean),
    _elmo_apply_registration(bigint, text, text, text, jsonb, timestamptz, boolean)
  FROM PUBLIC;

-- Outbox machinery: the public functions and the worker call it, nobody else.
REVOKE ALL ON FUNCTION
    _elmo_enqueue(text, text, text, text, text, text, text), _elmo_registration_changed(),
    _elmo_claim(int), _elmo_record(bigint, int, text, text, jsonb), _elmo_recover(),
    _elmo_registration(boolean), _elmo_registration_open(), _elmo_record_accepted(text, text),
    _elmo_record_retry(elmo_outbox, int, text, text, jsonb),
    _elmo_record_locked_out(elmo_outbox, elmo_registration, int, text, text, jsonb),
    _elmo_record_not_connected(elmo_outbox, elmo_registration, int, text, text, jsonb),
    _elmo_record_failed(elmo_outbox, elmo_registration, int, text, text, jsonb)
  FROM PUBLIC;

-- Queuing messages (and reading their outcome) is for roles the DBA grants it to.
REVOKE ALL ON FUNCTION
    elmo_register(text, text, text), elmo_update_registration(text), elmo_unregister(),
    elmo_adjust_capacity(text, numeric[], date), elmo_adjust_capacity(text, numeric, date),
    elmo_adjust_capacity(text, text, date), elmo_retry(bigint),
    elmo_report_usage(text, numeric, timestamptz, boolean),
    elmo_report_compliance_error(bigint, text, jsonb),
    elmo_trigger_callback(text, text, text, numeric), elmo_wait(bigint, interval),
    _elmo_adjust_guard(text, date, timestamptz), _elmo_adjust_scale_check(text, date, numeric[]),
    _elmo_group_id(text)
  FROM PUBLIC;

-- The worker's periodic jobs.
REVOKE ALL ON FUNCTION
    _elmo_housekeeping(), _elmo_report_usage_auto(text), _elmo_retention_outbound(),
    _elmo_usage_refused(text, bigint)
  FROM PUBLIC;

-- The worker's state in shared memory, and what the SQL side tells it.
REVOKE ALL ON FUNCTION
    _elmo_worker_state(), _elmo_note_error(text), _elmo_capacity_due(timestamptz), _elmo_capacity_recheck()
  FROM PUBLIC;

-- capacity_in_force, kept by the worker.
REVOKE ALL ON FUNCTION
    _elmo_capacity_boundaries(text, timestamptz, timestamptz),
    _elmo_capacity_next_change(text, timestamptz, numeric, text, text),
    _elmo_capacity_refresh(text, timestamptz),
    _elmo_capacity_upkeep(text), _elmo_group_settings_changed()
  FROM PUBLIC;

-- Alerts.
REVOKE ALL ON FUNCTION
    _elmo_alert(text, text, text, text, text), _elmo_expected_groups(date), _elmo_has_plan(text, date),
    _elmo_check_day_ahead(timestamptz), _elmo_check_unreachable(timestamptz),
    _elmo_check_apply_failing(bigint, text, text, int, text)
  FROM PUBLIC;
