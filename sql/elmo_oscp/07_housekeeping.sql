-- The worker's periodic jobs (src/worker.c calls _elmo_housekeeping): expiring
-- adjust requests, automatic usage reports, heartbeats, alerts, retention.  They run
-- in SQL so that their rules sit next to the tables they keep, and the worker
-- only needs to know when to call again.

-- ---------------------------------------------------------------- housekeeping (the worker)

-- What elmo_oscp.usage_source names, read as whoever calls this: a relation
-- or a set-returning function giving (group_id, kwh[, measured_at]).  The
-- worker calls it through _elmo_usage_rows() (src/run_as.c), with the rights
-- of the source's owner, who therefore may execute it: it reads nothing its
-- caller could not read with a SELECT of its own.
CREATE OR REPLACE FUNCTION _elmo_usage_read(source text)
    RETURNS TABLE(group_id text, kwh numeric, measured_at timestamptz)
    LANGUAGE plpgsql AS $$
DECLARE
    -- a relation, or a set-returning function called without arguments
    from_sql text := coalesce(to_regclass(source)::text,
                              to_regproc(regexp_replace(source, '\(\s*\)\s*$', ''))::text || '()');
    q text := 'SELECT s.group_id::text, s.kwh::numeric, %s FROM %s s';
BEGIN
    IF from_sql IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        RETURN QUERY EXECUTE format(q, 's.measured_at::timestamptz', from_sql);
    EXCEPTION WHEN undefined_column THEN
        RETURN QUERY EXECUTE format(q, 'NULL::timestamptz', from_sql);
    END;
END;
$$;

-- The C function that reads elmo_oscp.usage_source as its owner (never as a
-- superuser: it refuses a source a superuser owns).
CREATE OR REPLACE FUNCTION _elmo_usage_rows()
    RETURNS TABLE(group_id text, kwh numeric, measured_at timestamptz)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'elmo_usage_rows';

-- One automatic usage report from elmo_oscp.usage_source (source: its
-- value): its rows, read with its owner's rights (_elmo_usage_rows, which
-- raises when it names nothing or a superuser owns it), go to
-- _elmo_usage_queue.
CREATE OR REPLACE FUNCTION _elmo_report_usage_auto(source text) RETURNS void
    LANGUAGE sql
    AS $$
    SELECT _elmo_usage_queue(array_agg(s.group_id), array_agg(s.kwh), array_agg(s.measured_at))
      FROM _elmo_usage_rows() s $$;

-- Queues one message per group of these readings (the latest reading of a
-- group; measured_at NULL: now).  Groups whose reading is NULL, not finite,
-- negative or below the last one reported are skipped (view
-- elmo_usage_skipped), with a WARNING.
CREATE OR REPLACE FUNCTION _elmo_usage_queue(group_id text[], kwh numeric[], measured_at timestamptz[])
    RETURNS void
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    sent bigint;
    skipped bigint;
    sample text;
BEGIN
    WITH src AS (
        SELECT DISTINCT ON (r.group_id) r.group_id, r.kwh, coalesce(r.measured_at, now()) AS measured_at
          FROM unnest(_elmo_usage_queue.group_id, _elmo_usage_queue.kwh, _elmo_usage_queue.measured_at)
               AS r(group_id, kwh, measured_at)
         WHERE r.group_id IS NOT NULL AND r.group_id <> ''
         ORDER BY r.group_id, 3 DESC
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
        RETURNING id, elmo_outbox.group_id
    ), upd AS (
        INSERT INTO elmo_usage_last AS l (group_id, kwh, measured_at, outbox_id)
        SELECT c.group_id, c.kwh, c.measured_at, i.id FROM ins i JOIN chk c ON c.group_id = i.group_id
        ON CONFLICT ON CONSTRAINT elmo_usage_last_pkey DO UPDATE
           SET kwh = EXCLUDED.kwh, measured_at = EXCLUDED.measured_at, outbox_id = EXCLUDED.outbox_id
        RETURNING 1
    ), skp AS (
        INSERT INTO _elmo_usage_skip AS k (group_id, kwh, last_kwh, reason, skipped_at)
        SELECT c.group_id, c.kwh, c.last_kwh, c.reason, now() FROM chk c WHERE c.reason IS NOT NULL
        ON CONFLICT ON CONSTRAINT _elmo_usage_skip_pkey DO UPDATE
           SET kwh = EXCLUDED.kwh, last_kwh = EXCLUDED.last_kwh, reason = EXCLUDED.reason,
               skipped_at = EXCLUDED.skipped_at
        RETURNING k.group_id, k.reason
    )
    SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM skp),
           (SELECT string_agg(x.group_id || ': ' || x.reason, ', ')
              FROM (SELECT * FROM skp ORDER BY skp.group_id LIMIT 10) x)
      INTO sent, skipped, sample;
    DELETE FROM _elmo_usage_skip k WHERE k.skipped_at < now();
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
    hint text;
    missing text;
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
                    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
                    PERFORM _elmo_note_error(format('usage report from %s failed: %s', source, SQLERRM));
                    RAISE WARNING 'elmo_oscp: usage report from % failed: %', source, SQLERRM
                        USING HINT = coalesce(nullif(hint, '') || ' ', '')
                                     || 'Fix elmo_oscp.usage_source or what it reads; the next interval tries again.';
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
        -- and a reminder after a restore that lacked elmo_restore_triggers()
        missing := _elmo_triggers_missing();
        IF missing IS NOT NULL THEN
            RAISE WARNING 'elmo_oscp: the CSMS''s triggers % are saved but missing from this database', missing
                USING DETAIL = 'pg_dump does not dump triggers on an extension''s tables; a restore leaves them out.',
                      HINT = 'Run SELECT elmo_restore_triggers(); as the superuser who restored the backup.';
        END IF;
        last_at := now();
        INSERT INTO elmo_timer AS t VALUES ('retention', last_at)
        ON CONFLICT (name) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    END IF;
    RETURN least(next_at, last_at + interval '10 min');
END;
$$;
