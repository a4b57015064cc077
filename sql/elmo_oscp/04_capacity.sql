-- The capacity in force: resolved from the stored forecasts each time it is
-- read, so it is always ELMO's rule applied to everything received so far.
-- It is what the CSMS reads: granted to PUBLIC.  Every forecast answered 204
-- counts from its start, applied or not: a CSMS trigger that fails delays its
-- own reaction, never what ELMO assigned.  Plans are ordered by receipt, so a
-- late application never changes which one is in force.  Every function a
-- CSMS calls here sets its search_path to the extension's schema, so it works
-- called by its qualified name (elmo.elmo_capacity_at) from any session.

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
-- Capacities are compared as sent (ELMO always sends KW).
CREATE OR REPLACE FUNCTION _elmo_capacity_resolve(group_id text, at timestamptz,
        OUT capacity numeric, OUT unit text, OUT kind text, OUT forecast_id bigint)
    LANGUAGE plpgsql STABLE SET search_path = @extschema@, pg_temp
    SET plan_cache_mode = force_generic_plan    -- planning would cost 5x the lookup
    AS $fn$
BEGIN
    SELECT c.capacity, c.unit, c.kind, c.forecast_id INTO capacity, unit, kind, forecast_id FROM (
        (SELECT b.capacity, b.unit, f.kind, f.id AS forecast_id, 2 AS prio, f.received_at
           FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
          WHERE f.group_id = $1 AND f.kind IN ('day_ahead', 'additional_reply')
            AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
            AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $2
            AND b.start_time <= $2 AND b.end_time > $2
          ORDER BY f.received_at DESC, f.id DESC
          LIMIT 1)
        UNION ALL
        SELECT b.capacity, b.unit, f.kind, f.id, 1, f.received_at
          FROM capacity_forecast f JOIN capacity_forecast_block b ON b.forecast_id = f.id
         WHERE f.group_id = $1 AND f.kind = 'emergency'
           AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
           AND coalesce(f.starts_at, '-infinity'::timestamptz) <= $2
           AND b.start_time <= $2 AND b.end_time > $2
        UNION ALL
        SELECT s.contract_capacity_kw, 'KW', 'contract', NULL::bigint, 3, NULL::timestamptz
          FROM elmo_group_settings s
         WHERE s.group_id = $1 AND s.contract_capacity_kw IS NOT NULL
    ) c
    ORDER BY c.capacity, c.prio, c.received_at DESC NULLS LAST, c.forecast_id DESC
    LIMIT 1;
END
$fn$;

-- The capacity in force for a group at an instant (NULL: nothing known).
CREATE OR REPLACE FUNCTION elmo_capacity_at(group_id text, at timestamptz DEFAULT now()) RETURNS numeric
    LANGUAGE plpgsql STABLE SET search_path = @extschema@, pg_temp
    AS $$ BEGIN RETURN (_elmo_capacity_resolve($1, $2)).capacity; END $$;

-- The resolved schedule of a local day (by default ELMO's tomorrow):
-- contiguous, non-overlapping segments, equal neighbours merged, unknown
-- stretches left out.
CREATE OR REPLACE FUNCTION elmo_capacity_schedule(group_id text, day date DEFAULT elmo_tomorrow())
    RETURNS TABLE(start_time timestamptz, end_time timestamptz, capacity numeric, unit text,
                  kind text, forecast_id bigint)
    LANGUAGE sql STABLE SET search_path = @extschema@, pg_temp AS $$
    WITH d AS (
        SELECT _elmo_day_start($2) AS d0, _elmo_day_start($2 + 1) AS d1
    ), pts AS (
        SELECT d.d0 AS p FROM d
        UNION SELECT d.d1 FROM d
        UNION SELECT v.x
                FROM d, capacity_forecast f
                JOIN capacity_forecast_block b ON b.forecast_id = f.id,
                     LATERAL (VALUES (b.start_time), (b.end_time)) AS v(x)
               WHERE f.group_id = $1
                 AND coalesce(f.ends_at, 'infinity'::timestamptz) > d.d0
                 AND coalesce(f.starts_at, '-infinity'::timestamptz) < d.d1
                 AND v.x > d.d0 AND v.x < d.d1
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
    SELECT min(grp.s), max(grp.e), grp.c, grp.u, grp.k, grp.fid
      FROM grp
     GROUP BY grp.g, grp.c, grp.u, grp.k, grp.fid
     ORDER BY 1 $$;

-- The next instant after `at` at which the capacity, kind or forecast in force
-- changes, as far as is known (NULL: no change known).
CREATE OR REPLACE FUNCTION _elmo_capacity_until(group_id text, at timestamptz,
                                     capacity numeric, kind text, forecast_id bigint)
    RETURNS timestamptz
    LANGUAGE sql STABLE SET search_path = @extschema@, pg_temp AS $$
    SELECT p.t
      FROM (SELECT DISTINCT v.x AS t
              FROM capacity_forecast f
              JOIN capacity_forecast_block b ON b.forecast_id = f.id,
                   LATERAL (VALUES (b.start_time), (b.end_time)) AS v(x)
             WHERE f.group_id = $1 AND coalesce(f.ends_at, 'infinity'::timestamptz) > $2
               AND v.x > $2) p
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
