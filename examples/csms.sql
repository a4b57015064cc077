-- examples/csms.sql — a small database-centric CSMS reacting to ELMO.
--
-- Load it into the database elmo_oscp serves (psql -f examples/csms.sql), after
-- CREATE EXTENSION elmo_oscp.  Everything lives in schema csms, except one
-- trigger on the extension's capacity_forecast table; DROP SCHEMA csms CASCADE
-- removes it all (the trigger goes with its function).
--
-- Model: a station is an OSCP group (its station_id is the group_id ELMO
-- assigned); it has chargers, each with a maximum power.  Whenever ELMO's
-- capacity for a station changes (a day-ahead assignment, a reply to an adjust
-- request, an emergency), the trigger splits the capacity in force across the
-- station's chargers and writes one row per charger and time segment into
-- csms.charger_limit: the limit a SetChargingProfile would carry (kW, and A
-- per phase) with its validity.  It then NOTIFYs csms_charger_limits; the
-- LISTEN side (examples/listen.sh) does the slow part: talking to chargers.
--
-- The names of the extension (capacity_forecast, elmo_capacity_schedule, ...)
-- are left unqualified, so this file works whatever schema the extension was
-- created in (public, or elmo after CREATE EXTENSION elmo_oscp SCHEMA elmo):
-- it looks the schema up, and the functions that use those names keep the
-- search_path they were created with (SET search_path FROM CURRENT), so they
-- work from any session and from the worker alike.  The CSMS's own objects
-- are always qualified (csms.…): the worker runs the trigger with its own
-- search_path, the extension's schema alone.

\set ON_ERROR_STOP 1
SELECT current_setting('search_path') AS csms_saved_search_path,
       (SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'elmo_oscp') AS csms_elmo_schema \gset
\if :{?csms_elmo_schema}
\else
\echo 'examples/csms.sql: CREATE EXTENSION elmo_oscp first'
\quit
\endif
SET search_path = csms, :csms_elmo_schema;

CREATE SCHEMA csms;

-- ---------------------------------------------------------------- tables

CREATE TABLE csms.station (
    station_id  text PRIMARY KEY,           -- the OSCP group_id ELMO assigned to this station
    name        text
);

CREATE TABLE csms.charger (
    charger_id  text PRIMARY KEY,           -- the OCPP charge point identity
    station_id  text NOT NULL REFERENCES csms.station ON DELETE CASCADE,
    max_kw      numeric NOT NULL CHECK (max_kw > 0),
    phases      int NOT NULL DEFAULT 3 CHECK (phases IN (1, 3)),
    voltage_v   numeric NOT NULL DEFAULT 230 CHECK (voltage_v > 0),  -- phase to neutral
    enabled     boolean NOT NULL DEFAULT true   -- out of service: limit 0, takes no share
);
CREATE INDEX ON csms.charger (station_id);

-- The per-charger schedule: within a local day, segments never overlap and
-- never cross midnight.  No row covering an instant: ELMO set no limit then
-- (the charger may use max_kw; see csms.limits_at).
CREATE TABLE csms.charger_limit (
    charger_id  text NOT NULL REFERENCES csms.charger ON DELETE CASCADE,
    station_id  text NOT NULL,
    valid_from  timestamptz NOT NULL,       -- SetChargingProfile validFrom
    valid_to    timestamptz NOT NULL,       -- ... validTo
    limit_kw    numeric NOT NULL,           -- chargingRateUnit W: limit_kw * 1000
    limit_a     numeric NOT NULL,           -- chargingRateUnit A: per phase
    station_kw  numeric NOT NULL,           -- the station's capacity in force it was split from
    kind        text NOT NULL,              -- day_ahead, additional_reply, emergency, contract
    forecast_id bigint,                     -- capacity_forecast.id (NULL: contract capacity)
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charger_id, valid_from),
    CHECK (valid_from < valid_to)
);
CREATE INDEX ON csms.charger_limit (station_id, valid_from);
CREATE INDEX ON csms.charger_limit (valid_to);

-- ---------------------------------------------------------------- the splitting rule

-- ELMO's local time zone (the extension's setting elmo_oscp.timezone).
CREATE FUNCTION csms.tz() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT current_setting('elmo_oscp.timezone') $$;

-- Split a station's capacity across its enabled chargers, max-min fair
-- ("water filling"): every charger gets an equal share, a charger whose max is
-- below its share gets its max, and what it leaves is shared equally among
-- the others.  So chargers are visited from the smallest max up, each taking
-- min(max_kw, what is left / chargers left).  Results:
--   * no charger above its max_kw; when the capacity covers every max, each gets its max;
--   * otherwise the shares add up to the capacity (less rounding);
--   * limits are rounded DOWN to 0.1 kW (OCPP's resolution), so the sum never
--     exceeds the capacity;
--   * disabled chargers get 0 and take no share.
-- Not modelled: an EV's minimum charging current (IEC 61851: 6 A).  A share
-- below it means the EV pauses; a production CSMS may then rather give whole
-- shares to fewer chargers (e.g. by session priority).
CREATE FUNCTION csms.split_capacity(station_id text, capacity_kw numeric)
    RETURNS TABLE(charger_id text, limit_kw numeric, limit_a numeric)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    remaining numeric := greatest(coalesce(capacity_kw, 0), 0);
    n int;
    share numeric;
    c record;
BEGIN
    SELECT count(*) INTO n FROM csms.charger ch WHERE ch.station_id = split_capacity.station_id AND ch.enabled;
    FOR c IN SELECT ch.charger_id, ch.max_kw, ch.phases, ch.voltage_v, ch.enabled
               FROM csms.charger ch
              WHERE ch.station_id = split_capacity.station_id
              ORDER BY ch.enabled DESC, ch.max_kw, ch.charger_id
    LOOP
        IF c.enabled THEN
            share := least(c.max_kw, remaining / n);
            remaining := remaining - share;
            n := n - 1;
        ELSE
            share := 0;
        END IF;
        charger_id := c.charger_id;
        limit_kw := trunc(share, 1);
        limit_a := trunc(limit_kw * 1000 / (c.phases * c.voltage_v), 1);
        RETURN NEXT;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- recomputing limits

-- Rewrites the limits of one station for one local day from the capacity in
-- force (elmo_capacity_schedule: the plan, emergencies and the contract
-- capacity already resolved by ELMO's rule) and NOTIFYs csms_charger_limits.
-- Returns the number of limit rows written.
CREATE FUNCTION csms.recompute_limits(station_id text, day date,
                                      forecast_id bigint DEFAULT NULL, kind text DEFAULT NULL)
    RETURNS int
    LANGUAGE plpgsql VOLATILE
    SET search_path FROM CURRENT            -- elmo_capacity_schedule, wherever it is
    AS $$
DECLARE
    d0 timestamptz := day::timestamp AT TIME ZONE csms.tz();
    d1 timestamptz := (day + 1)::timestamp AT TIME ZONE csms.tz();
    n int;
BEGIN
    DELETE FROM csms.charger_limit l
     WHERE l.station_id = recompute_limits.station_id AND l.valid_from >= d0 AND l.valid_from < d1;
    INSERT INTO csms.charger_limit (charger_id, station_id, valid_from, valid_to, limit_kw, limit_a,
                                    station_kw, kind, forecast_id)
    SELECT sp.charger_id, recompute_limits.station_id, s.start_time, s.end_time, sp.limit_kw, sp.limit_a,
           s.kw, s.kind, s.forecast_id
      FROM (SELECT sc.start_time, sc.end_time, sc.kind, sc.forecast_id,
                   CASE upper(sc.unit) WHEN 'KW' THEN sc.capacity WHEN 'W' THEN sc.capacity / 1000 END AS kw
              FROM elmo_capacity_schedule(recompute_limits.station_id, day) sc) s
      CROSS JOIN LATERAL csms.split_capacity(recompute_limits.station_id, s.kw) sp
     WHERE s.kw IS NOT NULL;                 -- ELMO sends kW; other units are not power limits
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_notify('csms_charger_limits',
                      json_build_object('station_id', station_id, 'day', day, 'rows', n,
                                        'forecast_id', forecast_id, 'kind', kind)::text);
    RETURN n;
END
$$;

-- On demand: all stations (or one), for today and tomorrow (or a range of
-- local days).  Call it after changing chargers (added, disabled, max_kw) or a
-- station's contract capacity (elmo_group_settings), or from a timer.
-- Returns the number of limit rows written.
CREATE FUNCTION csms.recompute_all(station_id text DEFAULT NULL, from_day date DEFAULT NULL,
                                   to_day date DEFAULT NULL)
    RETURNS int
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    today date := (now() AT TIME ZONE csms.tz())::date;
    n int := 0;
    s text;
    d date;
BEGIN
    FOR s IN SELECT st.station_id FROM csms.station st
              WHERE recompute_all.station_id IS NULL OR st.station_id = recompute_all.station_id
              ORDER BY 1
    LOOP
        FOR d IN SELECT generate_series(coalesce(from_day, today), coalesce(to_day, today + 1), '1 day')::date LOOP
            n := n + csms.recompute_limits(s, d);
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;

-- The trigger: a forecast was applied.  Fast: it recomputes only the days the
-- forecast covers, for its station only (a few dozen rows), and leaves
-- talking to chargers to the LISTEN side.  It runs inside the extension's
-- apply, before ELMO gets its 204; if it raised, the forecast would stay
-- stored and be applied again later (view elmo_unapplied).
CREATE FUNCTION csms.on_capacity_forecast() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT            -- capacity_forecast_block, wherever it is
    AS $$
DECLARE
    first_at timestamptz := NEW.starts_at;
    last_at timestamptz := NEW.ends_at;
    d date;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM csms.station s WHERE s.station_id = NEW.group_id) THEN
        RETURN NULL;                            -- not one of our stations
    END IF;
    IF first_at IS NULL OR last_at IS NULL THEN  -- a row written by other means
        SELECT min(b.start_time), max(b.end_time) INTO first_at, last_at
          FROM capacity_forecast_block b WHERE b.forecast_id = NEW.id;
    END IF;
    FOR d IN SELECT generate_series((first_at AT TIME ZONE csms.tz())::date,
                                    ((last_at - interval '1 microsecond') AT TIME ZONE csms.tz())::date,
                                    '1 day')::date
    LOOP
        PERFORM csms.recompute_limits(NEW.group_id, d, NEW.id, NEW.kind);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER csms_split_capacity
    AFTER INSERT ON capacity_forecast
    FOR EACH ROW EXECUTE FUNCTION csms.on_capacity_forecast();

-- The trigger runs when the worker applies a forecast, with the rights of the
-- role the worker connects as (elmo_oscp.role: elmo_oscp_worker unless set
-- otherwise), never a superuser's.  That role reads the stations and
-- chargers and rewrites the limits; the extension's functions it calls
-- (elmo_capacity_schedule) it has already.
GRANT USAGE ON SCHEMA csms TO elmo_oscp_worker;
GRANT SELECT ON csms.station, csms.charger TO elmo_oscp_worker;
GRANT SELECT, INSERT, DELETE ON csms.charger_limit TO elmo_oscp_worker;

-- ---------------------------------------------------------------- reading limits

-- Each charger's limit at an instant; chargers without an ELMO limit then get
-- their max_kw (kind 'none').
CREATE FUNCTION csms.limits_at(at timestamptz DEFAULT now())
    RETURNS TABLE(station_id text, charger_id text, limit_kw numeric, limit_a numeric,
                  valid_from timestamptz, valid_to timestamptz, kind text, forecast_id bigint)
    LANGUAGE sql STABLE
    AS $$
    SELECT c.station_id, c.charger_id,
           coalesce(l.limit_kw, trunc(CASE WHEN c.enabled THEN c.max_kw ELSE 0 END, 1)),
           coalesce(l.limit_a, trunc(CASE WHEN c.enabled THEN c.max_kw ELSE 0 END * 1000
                                     / (c.phases * c.voltage_v), 1)),
           l.valid_from, l.valid_to, coalesce(l.kind, 'none'), l.forecast_id
      FROM csms.charger c
      LEFT JOIN csms.charger_limit l
             ON l.charger_id = c.charger_id AND l.valid_from <= at AND l.valid_to > at
     ORDER BY c.station_id, c.charger_id $$;

CREATE VIEW csms.charger_limit_now AS SELECT * FROM csms.limits_at(now());

-- The next instant after `after` at which some charger's limit starts or
-- ends (an emergency's window beginning or ending, a new hour of the plan):
-- when a client that pushes only the limit in force must push again.
CREATE FUNCTION csms.next_limit_change(after timestamptz DEFAULT now()) RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$
    SELECT least((SELECT min(l.valid_from) FROM csms.charger_limit l WHERE l.valid_from > after),
                 (SELECT min(l.valid_to) FROM csms.charger_limit l WHERE l.valid_to > after)) $$;

-- The OCPP 1.6 SetChargingProfile.req for a charger and a local day: a
-- ChargePointMaxProfile (connector 0) in W, one period per limit segment;
-- stretches without an ELMO limit get the charger's max.
CREATE FUNCTION csms.ocpp_profile(charger_id text, day date) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    WITH d AS (
        SELECT day::timestamp AT TIME ZONE csms.tz() AS d0, (day + 1)::timestamp AT TIME ZONE csms.tz() AS d1
    ), b AS (                                   -- where a period starts
        SELECT d.d0 AS t FROM d
        UNION SELECT v.t FROM d, csms.charger_limit l, LATERAL (VALUES (l.valid_from), (l.valid_to)) v(t)
               WHERE l.charger_id = ocpp_profile.charger_id AND v.t > d.d0 AND v.t < d.d1
    ), per AS (
        SELECT b.t, coalesce(l.limit_kw, CASE WHEN c.enabled THEN c.max_kw ELSE 0 END) AS kw
          FROM b JOIN csms.charger c ON c.charger_id = ocpp_profile.charger_id
          LEFT JOIN csms.charger_limit l
                 ON l.charger_id = c.charger_id AND l.valid_from <= b.t AND l.valid_to > b.t
    )
    SELECT jsonb_build_object(
             'connectorId', 0,
             'csChargingProfiles', jsonb_build_object(
                 'chargingProfileId', abs(hashtext(ocpp_profile.charger_id || day::text)),
                 'stackLevel', 0,
                 'chargingProfilePurpose', 'ChargePointMaxProfile',
                 'chargingProfileKind', 'Absolute',
                 'validFrom', to_char(d.d0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                 'validTo', to_char(d.d1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                 'chargingSchedule', jsonb_build_object(
                     'duration', extract(epoch FROM d.d1 - d.d0)::int,
                     'startSchedule', to_char(d.d0 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                     'chargingRateUnit', 'W',
                     'chargingSchedulePeriod',
                         (SELECT jsonb_agg(jsonb_build_object('startPeriod', extract(epoch FROM per.t - d.d0)::int,
                                                              'limit', per.kw * 1000) ORDER BY per.t)
                            FROM per))))
      FROM d
     WHERE EXISTS (SELECT 1 FROM csms.charger c WHERE c.charger_id = ocpp_profile.charger_id) $$;

-- the session's search_path as it was
SELECT set_config('search_path', :'csms_saved_search_path', false) \g /dev/null
