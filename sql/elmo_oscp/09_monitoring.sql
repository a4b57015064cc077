-- What an operator watches: alerts (NOTIFY elmo_alert, a WARNING in the
-- server log, the view elmo_alerts) and metrics (the view elmo_metrics, for
-- Prometheus through postgres_exporter: examples/monitoring/).

-- ---------------------------------------------------------------- alerts

-- Raises an alert once: the same alert, group and subject (a day, an outage,
-- a message) are alerted only the first time.  True when it was raised now.
CREATE OR REPLACE FUNCTION _elmo_alert(alert text, group_id text, subject text, detail text, hint text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    INSERT INTO _elmo_alert (alert, group_id, subject, detail) VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RAISE WARNING 'elmo_oscp alert %: %', $1, $4 USING HINT = coalesce($5, '');
    PERFORM pg_notify('elmo_alert', json_build_object('alert', $1, 'group_id', $2, 'detail', $4)::text);
    RETURN true;
END
$fn$;

-- The groups whose day-ahead assignment is expected every day: those in
-- elmo_group_settings, and those ELMO sent a plan for in the week up to `day`
-- (a plan of any kind, applied or not).
CREATE OR REPLACE FUNCTION _elmo_expected_groups(day date) RETURNS SETOF text
    LANGUAGE sql STABLE AS $$
    SELECT s.group_id FROM elmo_group_settings s
    UNION
    SELECT f.group_id FROM capacity_forecast f
     WHERE f.forecast_day BETWEEN $1 - 6 AND $1 AND f.kind IN ('day_ahead', 'additional_reply')
    UNION
    SELECT m.group_id FROM elmo_received_message m
     WHERE m.state IN ('received', 'apply_failed', 'discarded') AND m.message = 'update_group_capacity_forecast'
       AND m.forecast_day BETWEEN $1 - 6 AND $1 AND m.kind IN ('day_ahead', 'additional_reply') $$;

-- Has a plan for that group and day been received (applied or not)?
CREATE OR REPLACE FUNCTION _elmo_has_plan(group_id text, day date) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM capacity_forecast f
                    WHERE f.group_id = $1 AND f.forecast_day = $2 AND f.kind IN ('day_ahead', 'additional_reply'))
        OR EXISTS (SELECT 1 FROM elmo_received_message m
                    WHERE m.state IN ('received', 'apply_failed', 'discarded')
                      AND m.message = 'update_group_capacity_forecast' AND m.group_id = $1
                      AND m.forecast_day = $2 AND m.kind IN ('day_ahead', 'additional_reply')) $$;

-- ELMO's day-ahead assignment for tomorrow is due at 10:00 local time: by
-- elmo_oscp.day_ahead_deadline (10:05), alert day_ahead_missing for each
-- expected group without one, while a registration exists (registered or
-- locked out).  Looks once per local day, at the deadline or at the first
-- call after it; `at` is the instant to judge (the worker passes now()).
-- Returns when to look next.
CREATE OR REPLACE FUNCTION _elmo_check_day_ahead(at timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    today date := _elmo_local_day($1);
    deadline time := _elmo_setting('day_ahead_deadline')::time;
    due timestamptz := _elmo_day_start(today) + deadline::interval;
    last_at timestamptz;
    g text;
BEGIN
    IF $1 < due THEN
        RETURN due;
    END IF;
    SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'day_ahead_check';
    IF last_at IS NULL OR last_at < due THEN
        IF EXISTS (SELECT 1 FROM elmo_registration r WHERE r.state IN ('registered', 'locked_out')) THEN
            FOR g IN SELECT x.group_id FROM _elmo_expected_groups(today) x(group_id) ORDER BY 1 LOOP
                IF NOT _elmo_has_plan(g, today + 1) THEN
                    PERFORM _elmo_alert('day_ahead_missing', g, (today + 1)::text,
                        format('no day-ahead assignment for group %s and %s was received by %s (%s)',
                               g, today + 1, to_char(deadline, 'HH24:MI'), _elmo_tz()),
                        'ELMO sends tomorrow''s assignment at 10:00. Check elmo_registration_status and '
                        || 'elmo_status(); ask ELMO''s operator whether it was sent.');
                END IF;
            END LOOP;
        END IF;
        INSERT INTO elmo_timer AS t VALUES ('day_ahead_check', $1)
        ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    END IF;
    RETURN _elmo_day_start(today + 1) + deadline::interval;
END
$fn$;

-- ELMO unreachable for longer than elmo_oscp.unreachable_alert_after: alert
-- once per outage.  Returns when to look next (NULL: nothing to wait for).
CREATE OR REPLACE FUNCTION _elmo_check_unreachable(at timestamptz) RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    s record;
    after interval := _elmo_setting('unreachable_alert_after')::interval;
BEGIN
    SELECT * INTO s FROM _elmo_worker_state();
    IF s.elmo_reachable OR s.unreachable_since IS NULL THEN
        RETURN NULL;
    END IF;
    IF $1 < s.unreachable_since + after THEN
        RETURN s.unreachable_since + after;
    END IF;
    PERFORM _elmo_alert('elmo_unreachable', NULL, s.unreachable_since::text,
        format('ELMO has been unreachable since %s: %s deliveries in a row failed', s.unreachable_since,
               s.failed_deliveries),
        'Messages to ELMO stay queued and are retried. elmo_status() has the last error; check DNS, '
        || 'firewall and TLS (elmo_oscp.ca_file) from the database server.');
    RETURN NULL;
END
$fn$;

-- The worker's apply of a received message failed for the Nth time: alert
-- apply_failing at the third (about 15 s after receipt, with the backoff).
CREATE OR REPLACE FUNCTION _elmo_check_apply_failing(message_id bigint, group_id text, message text,
                                                     attempts int, error text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF attempts = 3 THEN
        PERFORM _elmo_alert('apply_failing', $2, $1::text,
            format('applying received message %s (%s) keeps failing: %s attempts, the last: %s',
                   $1, $3, $4, left($5, 500)),
            format('ELMO''s message is kept and in force. See elmo_unapplied; fix the CSMS trigger, or call '
                   || 'elmo_replay(%s) or elmo_discard(%s, reason).', $1, $1));
    END IF;
END
$fn$;

-- Alerts raised, newest first.
CREATE OR REPLACE VIEW elmo_alerts AS
    SELECT a.id, a.alert, a.group_id, a.detail, a.raised_at
      FROM _elmo_alert a
     ORDER BY a.id DESC;

-- ---------------------------------------------------------------- metrics

-- Every metric, Prometheus-style: metric (a name beginning elmo_), labels
-- (jsonb), value.  Counters (_total) count since the server started (from
-- the worker's shared memory) or from what is stored (received forecasts by
-- kind, alerts); the rest are gauges.  Cheap enough to read every few
-- seconds: the counts use the partial indexes of what is pending.  The
-- queries file for postgres_exporter and the alert rules that use these are
-- in examples/monitoring/.
CREATE OR REPLACE VIEW elmo_metrics AS
    WITH s AS (SELECT * FROM elmo_status()),
    g AS (SELECT r.state, r.connected, r.last_heard_at FROM elmo_registration r WHERE r.id = 1),
    u AS (SELECT count(*) FILTER (WHERE m.state = 'apply_failed') AS failed,
                 count(*) FILTER (WHERE m.state IN ('received', 'apply_failed')) AS unapplied,
                 min(m.received_at) FILTER (WHERE m.state IN ('received', 'apply_failed')) AS oldest
            FROM elmo_received_message m WHERE m.state IN ('received', 'apply_failed', 'discarded'))
    SELECT x.metric, x.labels, x.value
      FROM (
        SELECT v.metric, '{}'::jsonb AS labels, v.value
          FROM s, u, (SELECT 1) one LEFT JOIN g ON true,
               LATERAL (VALUES
                 ('elmo_worker_up', (s.worker_pid IS NOT NULL)::int::float8),
                 ('elmo_listening', s.listening::int::float8),
                 ('elmo_registered', (coalesce(g.state, '') = 'registered')::int::float8),
                 ('elmo_connected', coalesce(g.connected, false)::int::float8),
                 ('elmo_locked_out', (coalesce(g.state, '') = 'locked_out')::int::float8),
                 ('elmo_reachable', s.elmo_reachable::int::float8),
                 ('elmo_unreachable_seconds',
                  coalesce(extract(epoch FROM now() - s.elmo_unreachable_since), 0)::float8),
                 ('elmo_last_heard_age_seconds', extract(epoch FROM now() - g.last_heard_at)::float8),
                 ('elmo_connections_dropped_total', s.connections_dropped::float8),
                 ('elmo_messages_sent_total', s.messages_sent::float8),
                 ('elmo_send_failures_total', s.send_failures::float8),
                 ('elmo_apply_failures_total', s.apply_failures::float8),
                 ('elmo_apply_failed', u.failed::float8),
                 ('elmo_unapplied_messages', u.unapplied::float8),
                 ('elmo_unapplied_oldest_age_seconds', coalesce(extract(epoch FROM now() - u.oldest), 0)::float8),
                 ('elmo_outbox_oldest_age_seconds',
                  coalesce(extract(epoch FROM s.oldest_undelivered_age), 0)::float8),
                 ('elmo_usage_skipped', (SELECT count(*) FROM _elmo_usage_skip)::float8)
               ) AS v(metric, value)
        UNION ALL
        SELECT 'elmo_requests_total', jsonb_build_object('class', c.class), c.n::float8
          FROM s, LATERAL (VALUES ('1xx', s.requests_1xx), ('2xx', s.requests_2xx), ('3xx', s.requests_3xx),
                                  ('4xx', s.requests_4xx), ('5xx', s.requests_5xx)) AS c(class, n)
        UNION ALL
        SELECT 'elmo_outbox_messages', jsonb_build_object('state', o.state), o.n::float8
          FROM s, LATERAL (VALUES ('queued', s.outbox_queued), ('sending', s.outbox_sending),
                                  ('waiting_for_handshake', s.outbox_waiting_for_handshake),
                                  ('held', s.outbox_held), ('failed', s.outbox_failed)) AS o(state, n)
        UNION ALL
        SELECT 'elmo_received_messages_total', jsonb_build_object('kind', k.kind), k.n::float8
          FROM (SELECT kinds.kind, coalesce(sum(c.n), 0) AS n
                  FROM (VALUES ('day_ahead'), ('additional_reply'), ('emergency')) kinds(kind)
                  LEFT JOIN (SELECT f.kind, count(*) AS n FROM capacity_forecast f GROUP BY f.kind
                             UNION ALL
                             SELECT m.kind, count(*) FROM elmo_received_message m
                              WHERE m.state IN ('received', 'apply_failed', 'discarded')
                                AND m.message = 'update_group_capacity_forecast'
                              GROUP BY m.kind) c ON c.kind = kinds.kind
                 GROUP BY kinds.kind) k
        UNION ALL
        SELECT 'elmo_capacity_in_force', jsonb_build_object('group_id', c.group_id, 'unit', c.unit, 'kind', c.kind),
               c.capacity::float8
          FROM capacity_in_force c WHERE c.capacity IS NOT NULL
        UNION ALL
        SELECT 'elmo_alerts_total', jsonb_build_object('alert', a.alert), a.n::float8
          FROM (SELECT kinds.alert, count(x.id) AS n
                  FROM (VALUES ('day_ahead_missing'), ('locked_out'), ('elmo_unreachable'), ('apply_failing'))
                       kinds(alert)
                  LEFT JOIN _elmo_alert x ON x.alert = kinds.alert
                 GROUP BY kinds.alert) a
      ) x
     WHERE x.value IS NOT NULL;
