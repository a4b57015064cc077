-- The capacity in force: resolved from the stored forecasts each time it is
-- read, so it is always ELMO's rule applied to everything received so far.
-- It is what the CSMS reads: granted to PUBLIC.  Every forecast answered 204
-- counts from its start, applied or not: a CSMS trigger that fails delays its
-- own reaction, never what ELMO assigned.  So the functions that read
-- received messages (not readable by PUBLIC) run as their owner; they only
-- read.  Plans are ordered by receipt, so a late application never changes
-- which one is in force.  Every function a CSMS calls here sets its
-- search_path to the extension's schema, so it works called by its qualified
-- name (elmo.elmo_capacity_at) from any session.
--
-- capacity_in_force (end of this file) keeps the result per group, at every
-- instant it changes, for triggers and LISTENers.

-- ---------------------------------------------------------------- ELMO's days

-- Today and tomorrow in ELMO's zone (elmo_oscp.timezone), whatever the
-- session's TimeZone: current_date + 1 in a UTC session names Taipei's today
-- from 00:00 to 08:00 Taipei time.
CREATE OR REPLACE FUNCTION elmo_today() RETURNS date
    LANGUAGE sql STABLE SET search_path = @extschema@, pg_temp
    AS $$ SELECT _elmo_local_day(now()) $$;

CREATE OR REPLACE FUNCTION elmo_tomorrow() RETURNS date
    LANGUAGE sql STABLE SET search_path = @extschema@, pg_temp
    AS $$ SELECT _elmo_local_day(now()) + 1 $$;

-- ---------------------------------------------------------------- capacity in force

-- What gives the capacity at an instant: the lowest of the plan (the covering
-- block of the most recently received day_ahead/additional_reply among those
-- covering it), every covering emergency block, the contract capacity.  Ties:
-- emergency, then plan, then contract.  All NULL when nothing is known.
-- Capacities are compared as sent (ELMO always sends KW).  Forecasts not
-- applied (yet) come from their received message, forecast_id NULL; they are
-- few (a failing CSMS trigger), and found through the index of unapplied
-- messages.  Receipt order: received_at, then the message's id.  A forecast's
-- blocks are always read through their index (OFFSET 0 keeps the planner from
-- choosing another join): the worker plans once, often while the tables are
-- still empty, and a hash join over every block grows with the table.
CREATE OR REPLACE FUNCTION _elmo_capacity_resolve(group_id text, at timestamptz,
        OUT capacity numeric, OUT unit text, OUT kind text, OUT forecast_id bigint)
    LANGUAGE plpgsql STABLE
    -- the definer's: the CSMS may not read received messages, but their forecasts are in force
    SECURITY DEFINER SET search_path = @extschema@, pg_temp
    SET plan_cache_mode = force_generic_plan    -- planning would cost 5x the lookup
    AS $fn$
BEGIN
    SELECT c.capacity, c.unit, c.kind, c.forecast_id INTO capacity, unit, kind, forecast_id FROM (
        (SELECT p.capacity, p.unit, p.kind, p.forecast_id, 2 AS prio, p.received_at, p.message_id
           FROM ((SELECT b.capacity, b.unit, f.kind, f.id AS forecast_id, f.received_at, f.message_id
                    FROM capacity_forecast f,
                         LATERAL (SELECT b.capacity, b.unit FROM capacity_forecast_block b
                                   WHERE b.forecast_id = f.id AND b.start_time <= $2 AND b.end_time > $2
                                  OFFSET 0) b
                   WHERE f.group_id = $1 AND f.kind IN ('day_ahead', 'additional_reply')
                     AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
                     AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $2
                   ORDER BY f.received_at DESC, f.message_id DESC NULLS LAST, f.id DESC
                   LIMIT 1)
                 UNION ALL
                 SELECT x.capacity, x.unit, m.kind, NULL::bigint, m.received_at, m.id
                   FROM elmo_received_message m,
                        jsonb_to_recordset(m.body->'forecasted_blocks')
                            AS x(capacity numeric, unit text, start_time timestamptz, end_time timestamptz)
                  WHERE m.state IN ('received', 'apply_failed', 'discarded')
                    AND m.message = 'update_group_capacity_forecast' AND m.group_id = $1
                    AND m.kind IN ('day_ahead', 'additional_reply')
                    AND x.start_time <= $2 AND x.end_time > $2) p
          ORDER BY p.received_at DESC, p.message_id DESC NULLS LAST, p.forecast_id DESC NULLS LAST
          LIMIT 1)
        UNION ALL
        SELECT b.capacity, b.unit, f.kind, f.id, 1, f.received_at, f.message_id
          FROM capacity_forecast f,
               LATERAL (SELECT b.capacity, b.unit FROM capacity_forecast_block b
                         WHERE b.forecast_id = f.id AND b.start_time <= $2 AND b.end_time > $2
                        OFFSET 0) b
         WHERE f.group_id = $1 AND f.kind = 'emergency'
           AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
           AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $2
        UNION ALL
        SELECT x.capacity, x.unit, m.kind, NULL::bigint, 1, m.received_at, m.id
          FROM elmo_received_message m,
               jsonb_to_recordset(m.body->'forecasted_blocks')
                   AS x(capacity numeric, unit text, start_time timestamptz, end_time timestamptz)
         WHERE m.state IN ('received', 'apply_failed', 'discarded')
           AND m.message = 'update_group_capacity_forecast' AND m.group_id = $1 AND m.kind = 'emergency'
           AND x.start_time <= $2 AND x.end_time > $2
        UNION ALL
        SELECT s.contract_capacity_kw, 'KW', 'contract', NULL::bigint, 3, NULL::timestamptz, NULL::bigint
          FROM elmo_group_settings s
         WHERE s.group_id = $1 AND s.contract_capacity_kw IS NOT NULL
    ) c
    ORDER BY c.capacity, c.prio, c.received_at DESC NULLS LAST, c.message_id DESC NULLS LAST,
             c.forecast_id DESC NULLS LAST
    LIMIT 1;
END
$fn$;

-- Every block boundary of a group's forecasts in (from, to]: the instants at
-- which its capacity may change.  Applied forecasts and those not (yet).
-- PL/pgSQL for its cached plan: a SQL function called from a query is planned
-- again at every call, which cost ten times the lookup itself.
CREATE OR REPLACE FUNCTION _elmo_capacity_boundaries(group_id text, from_ts timestamptz, to_ts timestamptz)
    RETURNS SETOF timestamptz
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, pg_temp
    SET plan_cache_mode = force_generic_plan
    AS $fn$
BEGIN
    RETURN QUERY
    SELECT v.x
      FROM capacity_forecast f,
           LATERAL (SELECT b.start_time, b.end_time FROM capacity_forecast_block b
                     WHERE b.forecast_id = f.id OFFSET 0) b,
           LATERAL (VALUES (b.start_time), (b.end_time)) AS v(x)
     WHERE f.group_id = $1
       AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
       AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $3
       AND v.x > $2 AND v.x <= $3
    UNION
    SELECT v.x
      FROM elmo_received_message m,
           jsonb_to_recordset(m.body->'forecasted_blocks') AS x(start_time timestamptz, end_time timestamptz),
           LATERAL (VALUES (x.start_time), (x.end_time)) AS v(x)
     WHERE m.state IN ('received', 'apply_failed', 'discarded')
       AND m.message = 'update_group_capacity_forecast' AND m.group_id = $1
       AND v.x > $2 AND v.x <= $3;
END
$fn$;

-- The capacity in force for a group at an instant (NULL: nothing known).
CREATE OR REPLACE FUNCTION elmo_capacity_at(group_id text, at timestamptz DEFAULT now()) RETURNS numeric
    LANGUAGE plpgsql STABLE SET search_path = @extschema@, pg_temp
    AS $$ BEGIN RETURN (_elmo_capacity_resolve($1, $2)).capacity; END $$;

-- The resolved schedule of a local day (by default ELMO's tomorrow):
-- contiguous, non-overlapping segments, equal neighbours merged, unknown
-- stretches left out.  applied: false for a forecast in force that is not
-- applied yet (its CSMS trigger failed).
CREATE OR REPLACE FUNCTION elmo_capacity_schedule(group_id text, day date DEFAULT elmo_tomorrow())
    RETURNS TABLE(start_time timestamptz, end_time timestamptz, capacity numeric, unit text,
                  kind text, forecast_id bigint, applied boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
    WITH d AS (
        SELECT _elmo_day_start($2) AS d0, _elmo_day_start($2 + 1) AS d1
    ), pts AS (
        SELECT d.d0 AS p FROM d
        UNION SELECT d.d1 FROM d
        UNION SELECT x.x FROM d, _elmo_capacity_boundaries($1, d.d0, d.d1) x(x) WHERE x.x < d.d1
    ), seg AS (
        SELECT pts.p AS s, lead(pts.p) OVER (ORDER BY pts.p) AS e FROM pts
    ), res AS (
        SELECT seg.s, seg.e, r.capacity AS c, r.unit AS u, r.kind AS k, r.forecast_id AS fid
          FROM seg CROSS JOIN LATERAL _elmo_capacity_resolve($1, seg.s) r
         WHERE seg.e IS NOT NULL AND r.capacity IS NOT NULL
    ), brk AS (
        SELECT res.*,
               CASE WHEN lag(res.e) OVER w = res.s AND lag(res.c) OVER w = res.c
                         AND lag(res.u) OVER w = res.u AND lag(res.k) OVER w = res.k
                         AND lag(res.fid) OVER w IS NOT DISTINCT FROM res.fid
                    THEN 0 ELSE 1 END AS nb
          FROM res WINDOW w AS (ORDER BY res.s)
    ), grp AS (
        SELECT brk.*, sum(brk.nb) OVER (ORDER BY brk.s) AS g FROM brk
    )
    SELECT min(grp.s), max(grp.e), grp.c, grp.u, grp.k, grp.fid,
           grp.k = 'contract' OR grp.fid IS NOT NULL
      FROM grp
     GROUP BY grp.g, grp.c, grp.u, grp.k, grp.fid
     ORDER BY 1 $$;

-- The next instant after `at` at which the capacity, kind or forecast in force
-- changes, as far as is known (NULL: no change known).
CREATE OR REPLACE FUNCTION _elmo_capacity_until(group_id text, at timestamptz,
                                     capacity numeric, kind text, forecast_id bigint)
    RETURNS timestamptz
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
    SELECT p.t
      FROM (SELECT DISTINCT x.x AS t FROM _elmo_capacity_boundaries($1, $2, 'infinity') x(x)) p
      LEFT JOIN LATERAL _elmo_capacity_resolve($1, p.t) r ON true
     WHERE (r.capacity, r.kind, r.forecast_id) IS DISTINCT FROM ($3, $4, $5)
     ORDER BY p.t
     LIMIT 1 $$;

-- The capacity in force now for every group with forecasts or settings.
CREATE OR REPLACE VIEW elmo_capacity_now AS
    WITH RECURSIVE fg(group_id) AS (      -- distinct groups, by skipping through the index
        (SELECT f.group_id FROM capacity_forecast f ORDER BY f.group_id LIMIT 1)
        UNION ALL
        SELECT (SELECT f.group_id FROM capacity_forecast f
                 WHERE f.group_id > fg.group_id ORDER BY f.group_id LIMIT 1)
          FROM fg WHERE fg.group_id IS NOT NULL
    ), g AS (
        SELECT fg.group_id FROM fg WHERE fg.group_id IS NOT NULL
        UNION
        SELECT s.group_id FROM elmo_group_settings s
    )
    SELECT g.group_id, r.capacity, r.kind, r.forecast_id,
           _elmo_capacity_until(g.group_id, now(), r.capacity, r.kind, r.forecast_id) AS until
      FROM g LEFT JOIN LATERAL _elmo_capacity_resolve(g.group_id, now()) r ON true;

-- ---------------------------------------------------------------- a day's plan, hour by hour

-- One row per hour of a local day (by default ELMO's tomorrow), for a table
-- or a plot: the capacity in force (the lowest during the hour: what the CSMS
-- must stay under for all of it), what decided it (decided_by: day_ahead,
-- additional_reply, emergency or contract), and the values it was decided
-- from: ELMO's 10:00 assignment, what this CSMS asked for, what ELMO's reply
-- granted, the lowest emergency, the contract capacity.  bar draws the
-- capacity as #s, 40 for the day's largest.
CREATE OR REPLACE FUNCTION elmo_day_plan(group_id text, day date DEFAULT elmo_tomorrow())
    RETURNS TABLE(hour int, start_time timestamptz, end_time timestamptz, capacity numeric, unit text,
                  decided_by text, forecast_id bigint, assigned numeric, asked numeric, granted numeric,
                  emergency numeric, contract numeric, bar text)
    LANGUAGE sql STABLE SET search_path = @extschema@, pg_temp AS $$
    WITH h AS (
        SELECT t AS s, t + interval '1 hour' AS e,
               extract(hour FROM t AT TIME ZONE _elmo_tz())::int AS hr
          FROM generate_series(_elmo_day_start($2), _elmo_day_start($2 + 1) - interval '1 hour',
                               interval '1 hour') t
    ), sched AS (
        SELECT * FROM elmo_capacity_schedule($1, $2)
    ), plan AS (          -- the latest forecast of each kind for the day
        SELECT DISTINCT ON (f.kind) f.kind, f.id
          FROM capacity_forecast f
         WHERE f.group_id = $1 AND f.forecast_day = $2 AND f.kind IN ('day_ahead', 'additional_reply')
         ORDER BY f.kind, f.received_at DESC, f.id DESC
    ), req AS (
        SELECT a.hourly_kw FROM elmo_adjust_request a
         WHERE a.group_id = $1 AND a.day = $2 AND a.state IN ('pending', 'answered')
         ORDER BY a.id DESC LIMIT 1
    ), hourly AS (
        SELECT h.hr, h.s, h.e, low.capacity, low.unit, low.kind, low.forecast_id,
               (SELECT b.capacity FROM plan p JOIN capacity_forecast_block b ON b.forecast_id = p.id
                 WHERE p.kind = 'day_ahead' AND b.start_time <= h.s AND b.end_time > h.s) AS assigned,
               (SELECT r.hourly_kw[h.hr + 1] FROM req r) AS asked,
               (SELECT b.capacity FROM plan p JOIN capacity_forecast_block b ON b.forecast_id = p.id
                 WHERE p.kind = 'additional_reply' AND b.start_time <= h.s AND b.end_time > h.s) AS granted,
               (SELECT min(b.capacity) FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
                 WHERE f.group_id = $1 AND f.kind = 'emergency'
                   AND b.start_time < h.e AND b.end_time > h.s) AS emergency,
               (SELECT s.contract_capacity_kw FROM elmo_group_settings s WHERE s.group_id = $1) AS contract
          FROM h
          LEFT JOIN LATERAL (
                SELECT sc.capacity, sc.unit, sc.kind, sc.forecast_id FROM sched sc
                 WHERE sc.start_time < h.e AND sc.end_time > h.s
                 ORDER BY sc.capacity, sc.kind <> 'emergency', sc.kind = 'contract', sc.start_time
                 LIMIT 1) low ON true
    )
    SELECT r.hr, r.s, r.e, r.capacity, r.unit, r.kind, r.forecast_id, r.assigned, r.asked, r.granted,
           r.emergency, r.contract,
           repeat('#', coalesce(round(40 * r.capacity / nullif(max(r.capacity) OVER (), 0))::int, 0))
      FROM hourly r
     ORDER BY r.s $$;

-- ---------------------------------------------------------------- capacity_in_force, kept by the worker

-- The next instant after `at` at which the capacity, unit or kind in force
-- changes (not merely the forecast giving it), as far as is known; NULL: none.
CREATE OR REPLACE FUNCTION _elmo_capacity_next_change(group_id text, at timestamptz,
                                                      capacity numeric, unit text, kind text)
    RETURNS timestamptz
    LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    t timestamptz;
    r record;
BEGIN
    FOR t IN SELECT DISTINCT x.x FROM _elmo_capacity_boundaries($1, $2, 'infinity') x(x) ORDER BY 1 LOOP
        r := _elmo_capacity_resolve($1, t);
        IF (r.capacity, r.unit, r.kind) IS DISTINCT FROM ($3, $4, $5) THEN
            RETURN t;
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;

-- Brings a group's row of capacity_in_force up to instant `at`.  A change of
-- capacity, unit or kind is NOTIFYed on elmo_capacity_changed (at commit);
-- its `since` is the boundary it happened at when the row's `until` has
-- passed, else `at` (a forecast that changed it at once).  Tells the worker
-- when to look again (_elmo_capacity_due).
CREATE OR REPLACE FUNCTION _elmo_capacity_refresh(group_id text, at timestamptz) RETURNS void
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r       record;
    old     capacity_in_force;
    v_until timestamptz;
    v_since timestamptz := $2;
    changed boolean := true;
BEGIN
    r := _elmo_capacity_resolve($1, $2);
    v_until := _elmo_capacity_next_change($1, $2, r.capacity, r.unit, r.kind);
    SELECT * INTO old FROM capacity_in_force c WHERE c.group_id = $1 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO capacity_in_force (group_id, capacity, unit, kind, since, until)
        VALUES ($1, r.capacity, r.unit, r.kind, v_since, v_until);
    ELSIF (old.capacity, old.unit, old.kind) IS DISTINCT FROM (r.capacity, r.unit, r.kind) THEN
        IF old.until <= $2 THEN             -- a change on schedule: the last boundary passed
            SELECT greatest(old.until, max(x.x)) INTO v_since
              FROM _elmo_capacity_boundaries($1, old.until, $2) x(x);
        END IF;
        UPDATE capacity_in_force c
           SET capacity = r.capacity, unit = r.unit, kind = r.kind, since = v_since, until = v_until
         WHERE c.group_id = $1;
    ELSE
        IF old.until IS DISTINCT FROM v_until THEN
            UPDATE capacity_in_force c SET until = v_until WHERE c.group_id = $1;
        END IF;
        changed := false;
    END IF;
    IF changed AND (r.capacity IS NOT NULL OR old.group_id IS NOT NULL) THEN
        PERFORM pg_notify('elmo_capacity_changed',
                          json_build_object('group_id', $1, 'capacity', r.capacity, 'unit', r.unit,
                                            'kind', r.kind, 'since', v_since, 'until', v_until)::text);
    END IF;
    IF v_until IS NOT NULL THEN
        PERFORM _elmo_capacity_due(v_until);
    END IF;
END
$fn$;

-- The worker's: refreshes every group whose row's next change has come or
-- that a forecast received may have changed (scope 'due'), or also every
-- group with a row or a contract capacity ('known': after elmo_group_settings
-- changed), or every group with a forecast in force now or later ('all': at
-- start and after an update, which reads every forecast's span once).  A
-- group whose refresh fails (a CSMS trigger on capacity_in_force that raises)
-- is left for the next round, 5 s later, and the others go on.  Returns when
-- to look again.
CREATE OR REPLACE FUNCTION _elmo_capacity_upkeep(scope text) RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    g text;
    groups refcursor;
    next_at timestamptz;
    failed boolean := false;
BEGIN
    -- 'due', the one run after receipts, gets a query of its own: one that
    -- also covers the other scopes is planned again at every call (its plan
    -- depends on the scope), which cost more than refreshing a group.
    IF $1 = 'due' THEN
        OPEN groups FOR
            SELECT c.group_id FROM capacity_in_force c WHERE c.until <= now()
            UNION
            SELECT d.group_id FROM _elmo_capacity_dirty d
            ORDER BY 1;
    ELSE                                        -- every row, so those due too
        OPEN groups FOR
            SELECT d.group_id FROM _elmo_capacity_dirty d
            UNION
            SELECT c.group_id FROM capacity_in_force c
            UNION
            SELECT s.group_id FROM elmo_group_settings s
            UNION
            SELECT f.group_id FROM capacity_forecast f
             WHERE $1 = 'all' AND coalesce(f.ends_at, 'infinity'::timestamptz) > now()
            UNION
            SELECT m.group_id FROM elmo_received_message m
             WHERE $1 = 'all' AND m.state IN ('received', 'apply_failed', 'discarded')
               AND m.message = 'update_group_capacity_forecast'
            ORDER BY 1;
    END IF;
    LOOP
        FETCH groups INTO g;
        EXIT WHEN NOT FOUND;
        BEGIN
            PERFORM _elmo_capacity_refresh(g, now());
            DELETE FROM _elmo_capacity_dirty d WHERE d.group_id = g;
        EXCEPTION WHEN others THEN
            failed := true;
            RAISE WARNING 'elmo_oscp: capacity_in_force of group % could not be updated: %', g, SQLERRM
                USING DETAIL = 'SQLSTATE ' || SQLSTATE,
                      HINT = 'A trigger on capacity_in_force raised; it is tried again in 5 s.';
        END;
    END LOOP;
    CLOSE groups;
    SELECT min(c.until) INTO next_at FROM capacity_in_force c;
    IF failed THEN
        next_at := least(next_at, now() + interval '5 s');
    END IF;
    IF next_at IS NOT NULL THEN
        PERFORM _elmo_capacity_due(next_at);
    END IF;
    RETURN next_at;
END
$fn$;

-- elmo_group_settings changed (the contract capacity is part of the rule):
-- the worker refreshes every group right after this transaction commits.
-- SECURITY DEFINER so any role that may write the settings may ask it; it
-- only sets a flag in shared memory.
CREATE OR REPLACE FUNCTION _elmo_group_settings_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $fn$
BEGIN
    PERFORM _elmo_capacity_recheck();
    RETURN NULL;
END
$fn$;
-- Here, after its function, rather than in the schema part: an update script
-- runs this part after the migration, so the function exists by then.
CREATE OR REPLACE TRIGGER elmo_group_settings_capacity
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON elmo_group_settings
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_group_settings_changed();
