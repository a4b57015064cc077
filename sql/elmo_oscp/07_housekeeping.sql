-- The worker's periodic jobs (src/worker.c calls _elmo_housekeeping): expiring
-- adjust requests, automatic usage reports, heartbeats, alerts, retention.  They run
-- in SQL so that their rules sit next to the tables they keep, and the worker
-- only needs to know when to call again.

-- ---------------------------------------------------------------- housekeeping (the worker)

-- One automatic usage report from elmo_oscp.usage_source: a relation or a
-- set-returning function of the CSMS giving (group_id text, kwh numeric
-- [, measured_at timestamptz]).  Groups whose reading is NULL, not finite,
-- negative or below the last one reported are skipped (view elmo_usage_skipped).
CREATE OR REPLACE FUNCTION _elmo_report_usage_auto(source text) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    rel regclass;
    fn regproc;
    from_sql text;
    q text;
    sent bigint;
    skipped bigint;
    sample text;
BEGIN
    rel := to_regclass(source);
    IF rel IS NOT NULL THEN
        from_sql := rel::text;
    ELSE
        fn := to_regproc(regexp_replace(source, '\(\s*\)\s*$', ''));
        IF fn IS NULL THEN
            PERFORM _elmo_note_error(format('usage report: elmo_oscp.usage_source %L names no relation or function', source));
            RAISE WARNING 'elmo_oscp.usage_source % names no relation or function: no usage report sent', quote_literal(source)
                USING HINT = 'Name a view, table or set-returning function giving (group_id, kwh[, measured_at]); the worker''s search_path is the extension''s schema, so qualify other schemas.';
            RETURN;
        END IF;
        from_sql := fn::text || '()';
    END IF;
    q := $q$
        WITH src AS (
            SELECT DISTINCT ON (s.group_id::text) s.group_id::text AS group_id, s.kwh::numeric AS kwh,
                   coalesce(%s, now()) AS measured_at
              FROM %s s
             WHERE s.group_id IS NOT NULL AND s.group_id::text <> ''
             ORDER BY s.group_id::text, 3 DESC
        ), chk AS (
            SELECT s.*, l.kwh AS last_kwh,
                   CASE WHEN s.kwh IS NULL THEN 'no reading (NULL)'
                        WHEN s.kwh IN ('NaN', 'Infinity', '-Infinity') THEN 'reading is not finite'
                        WHEN s.kwh < 0 THEN 'negative reading'
                        WHEN s.measured_at > now() THEN 'reading stamped in the future'
                        WHEN s.kwh < l.kwh THEN 'reading below the last one reported'
                   END AS reason
              FROM src s LEFT JOIN elmo_usage_last l ON l.group_id = s.group_id
        ), ins AS (
            INSERT INTO elmo_outbox (message, group_id, body)
            SELECT 'update_group_measurements', c.group_id, _elmo_usage_body(c.group_id, c.kwh, c.measured_at)
              FROM chk c WHERE c.reason IS NULL ORDER BY c.group_id
            RETURNING id, group_id
        ), upd AS (
            INSERT INTO elmo_usage_last AS l (group_id, kwh, measured_at, outbox_id)
            SELECT c.group_id, c.kwh, c.measured_at, i.id FROM ins i JOIN chk c ON c.group_id = i.group_id
            ON CONFLICT (group_id) DO UPDATE
               SET kwh = EXCLUDED.kwh, measured_at = EXCLUDED.measured_at, outbox_id = EXCLUDED.outbox_id
            RETURNING 1
        ), skp AS (
            INSERT INTO _elmo_usage_skip AS k (group_id, kwh, last_kwh, reason, skipped_at)
            SELECT c.group_id, c.kwh, c.last_kwh, c.reason, now() FROM chk c WHERE c.reason IS NOT NULL
            ON CONFLICT (group_id) DO UPDATE
               SET kwh = EXCLUDED.kwh, last_kwh = EXCLUDED.last_kwh, reason = EXCLUDED.reason,
                   skipped_at = EXCLUDED.skipped_at
            RETURNING group_id, reason
        )
        SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM skp),
               (SELECT string_agg(x.group_id || ': ' || x.reason, ', ')
                  FROM (SELECT * FROM skp ORDER BY group_id LIMIT 10) x)
    $q$;
    BEGIN
        EXECUTE format(q, 's.measured_at::timestamptz', from_sql) INTO sent, skipped, sample;
    EXCEPTION WHEN undefined_column THEN
        EXECUTE format(q, 'NULL::timestamptz', from_sql) INTO sent, skipped, sample;
    END;
    DELETE FROM _elmo_usage_skip WHERE skipped_at < now();
    IF sent > 0 THEN
        PERFORM _elmo_wake();
    END IF;
    IF skipped > 0 THEN
        RAISE WARNING 'elmo_oscp: % group(s) left out of the usage report: %', skipped,
                      sample || CASE WHEN skipped > 10 THEN ', …' ELSE '' END
            USING DETAIL = 'ELMO reads each value as a lifetime cumulative kWh that never goes down.',
                  HINT = 'See the view elmo_usage_skipped; after a meter replacement report once with elmo_report_usage(group_id, kwh, allow_decrease => true).';
    END IF;
END;
$$;

-- Delivered messages older than elmo_oscp.retention (those an adjust request
-- names stay): walk the primary key from the oldest row only.
CREATE OR REPLACE FUNCTION _elmo_retention_outbound() RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    horizon timestamptz := now() - _elmo_setting('retention')::interval;
    cut bigint;
BEGIN
    SELECT o.id INTO cut FROM elmo_outbox o WHERE o.created_at >= horizon ORDER BY o.id LIMIT 1;
    DELETE FROM elmo_outbox o
     WHERE (cut IS NULL OR o.id < cut) AND o.state = 'delivered' AND o.created_at < horizon
       AND NOT EXISTS (SELECT 1 FROM elmo_adjust_request a WHERE a.outbox_id = o.id);
END;
$$;

-- Periodic work; returns when it wants to run next.
CREATE OR REPLACE FUNCTION _elmo_housekeeping() RETURNS timestamptz
    LANGUAGE plpgsql
    AS $$
DECLARE
    r elmo_registration;
    open boolean;
    next_at timestamptz := _elmo_day_start(_elmo_local_day(now()) + 1);
    source text := _elmo_setting('usage_source');
    every interval;
    secs numeric;
    boundary timestamptz;
    last_at timestamptz;
BEGIN
    SELECT * INTO r FROM elmo_registration g WHERE g.id = 1;
    open := FOUND AND r.connected AND r.state NOT IN ('locked_out', 'unregistered');

    -- adjust requests ELMO did not answer expire when their day begins
    UPDATE elmo_adjust_request a SET state = 'expired', closed_at = now()
     WHERE a.state = 'pending' AND _elmo_day_start(a.day) <= now();

    -- automatic usage reports, aligned to report_interval
    IF source IS NOT NULL THEN
        every := _elmo_setting('report_interval')::interval;
        secs := greatest(extract(epoch FROM every), 1);
        boundary := to_timestamp(floor(extract(epoch FROM now()) / secs) * secs);
        SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'usage_report';
        IF last_at IS NULL OR last_at < boundary THEN
            IF open THEN
                BEGIN
                    PERFORM _elmo_report_usage_auto(source);
                EXCEPTION WHEN others THEN
                    PERFORM _elmo_note_error(format('usage report from %s failed: %s', source, SQLERRM));
                    RAISE WARNING 'elmo_oscp: usage report from % failed: %', source, SQLERRM
                        USING HINT = 'Fix elmo_oscp.usage_source or what it reads; the next interval tries again.';
                END;
            END IF;
            INSERT INTO elmo_timer AS t VALUES ('usage_report', boundary)
            ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
        END IF;
        next_at := least(next_at, boundary + make_interval(secs => secs));
    END IF;

    -- heartbeats, only when ELMO's handshake asked for them
    IF open AND r.heartbeat_interval > 0 THEN
        every := make_interval(secs => r.heartbeat_interval);
        SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'heartbeat';
        IF last_at IS NULL OR last_at + every <= now() THEN
            IF NOT EXISTS (SELECT 1 FROM elmo_outbox o
                            WHERE o.message = 'heartbeat' AND o.state NOT IN ('delivered', 'failed')) THEN
                PERFORM _elmo_enqueue('heartbeat', '{"offline_mode_at":"' || _elmo_ts(now() + 2 * every) || '"}');
            END IF;
            last_at := now();
            INSERT INTO elmo_timer AS t VALUES ('heartbeat', last_at)
            ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
        END IF;
        next_at := least(next_at, last_at + every);
    END IF;

    -- alerts: tomorrow's plan missing, ELMO unreachable too long
    next_at := least(next_at, _elmo_check_day_ahead(now()), _elmo_check_unreachable(now()));

    -- retention, every 10 minutes
    SELECT t.last_run_at INTO last_at FROM elmo_timer t WHERE t.name = 'retention';
    IF last_at IS NULL OR last_at + interval '10 min' <= now() THEN
        PERFORM _elmo_retention_outbound();
        PERFORM _elmo_retention_inbound();
        last_at := now();
        INSERT INTO elmo_timer AS t VALUES ('retention', last_at)
        ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    END IF;
    RETURN least(next_at, last_at + interval '10 min');
END;
$$;
