-- Every table of the extension, each created once, here, with all its columns
-- and indexes.  This part runs once, at CREATE EXTENSION: an update changes a
-- table in its migration (sql/migrations/), and the CREATE here must describe
-- the table that migration leaves, column for column in the same order
-- (sql/README.md).
--
-- No CHECKs on received kinds and states, nor on capacity_forecast.kind and
-- the blocks' times: only this extension's functions write those columns, with
-- validated or literal values, and each CHECK cost ~2.5 µs per statement.
-- Privileges are granted in 90_privileges.sql.

-- ---------------------------------------------------------------- roles

-- The extension's roles.  Roles belong to the cluster, not to a database:
-- one may exist already (another database, an earlier install, a restore of
-- pg_dumpall --globals-only), and DROP EXTENSION leaves them.
--   elmo_oscp_reader  reads the state and the views (pg_monitor has it)
--   elmo_oscp_csms    the CSMS: the API, TRIGGER on the forecast tables,
--                     elmo_group_settings; and what the reader has
--   elmo_oscp_worker  the worker connects as it (elmo_oscp.role): the
--                     extension's tables and internal functions, and what
--                     the CSMS has (its triggers run as this role).  LOGIN
--                     because a background worker must log in; no password,
--                     so nobody logs in as it by password.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'elmo_oscp_reader') THEN
        CREATE ROLE elmo_oscp_reader NOLOGIN;
        GRANT elmo_oscp_reader TO pg_monitor;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'elmo_oscp_csms') THEN
        CREATE ROLE elmo_oscp_csms NOLOGIN IN ROLE elmo_oscp_reader;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'elmo_oscp_worker') THEN
        CREATE ROLE elmo_oscp_worker LOGIN IN ROLE elmo_oscp_csms;
    END IF;
END $$;

-- ---------------------------------------------------------------- registration

-- One row: this CSMS's registration with ELMO.  Holds tokens: never PUBLIC.
CREATE TABLE elmo_registration (
    id              int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'registered', 'unregistered', 'locked_out')),
    elmo_url        text NOT NULL,          -- ELMO's OSCP base given to elmo_register
    public_url      text NOT NULL,          -- our base URL, as sent to ELMO
    initial_token   text,                   -- ELMO administrator's token; NULL once used
    our_token       text NOT NULL,          -- ELMO must present this when calling us
    previous_token  text,                   -- still accepted until ELMO uses our_token
    elmo_token      text,                   -- ELMO's token for our calls (its register)
    elmo_base_url   text,                   -- ELMO's base_url, resolved against elmo_url
    elmo_version    text,
    register_outbox_id bigint,              -- the register message we queued last
    handshake_request_id text,              -- X-Request-ID of ELMO's last handshake
    required_behaviour jsonb,               -- from ELMO's handshake
    heartbeat_interval int,                 -- seconds; NULL: ELMO wants no heartbeat
    connected       boolean NOT NULL DEFAULT false,  -- our handshake_acknowledge accepted
    last_heard_at   timestamptz,            -- any authenticated message from ELMO
    elmo_offline_mode_at timestamptz,       -- from ELMO's heartbeat
    last_error      text,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    registered_at   timestamptz,
    connected_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- inbound

-- Every message ELMO sent us, as received (no token), before and after it is applied.
CREATE TABLE elmo_received_message (
    id              bigserial PRIMARY KEY,
    message         text NOT NULL,          -- register, handshake, heartbeat, update_group_capacity_forecast
    method          text NOT NULL DEFAULT 'POST',
    request_id      text NOT NULL UNIQUE,   -- X-Request-ID (a generated one when ELMO sent none)
    correlation_id  text,                   -- X-Correlation-ID, when given
    raw_body        text NOT NULL,
    body            jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- decided once, at receipt, so that applying again never re-classifies
    group_id        text,
    kind            text,                   -- day_ahead, additional_reply or emergency
    forecast_day    date,
    adjust_request_id bigint,               -- the adjust request a reply answers
    state           text NOT NULL DEFAULT 'received',  -- received, applied, apply_failed, discarded
    apply_attempts  int NOT NULL DEFAULT 0,
    last_sqlstate   text,
    last_error      text,
    next_apply_at   timestamptz,
    applied_at      timestamptz,
    discarded_reason text,
    -- the request authenticated with our current token, not the previous one:
    -- applying it retires the previous token
    used_current_token boolean NOT NULL DEFAULT false
);
-- Messages not applied: those waiting, and the forecasts the DBA discarded,
-- which stay in force all the same (the capacity rules read their blocks).
CREATE INDEX elmo_received_message_unapplied
    ON elmo_received_message (id) WHERE state IN ('received', 'apply_failed', 'discarded');
-- The capacity rules read a group's forecasts not applied at every refresh:
-- by group, so they never walk the entries other groups' messages left behind
-- (dead once applied, until the next vacuum: thousands after a burst).
CREATE INDEX elmo_received_message_in_force
    ON elmo_received_message (group_id)
    WHERE state IN ('received', 'apply_failed', 'discarded') AND message = 'update_group_capacity_forecast';
-- Retention finds old raw messages by receipt time; BRIN: next to nothing per insert.
CREATE INDEX elmo_received_message_received_at ON elmo_received_message USING brin (received_at);

-- One row per capacity forecast applied; its blocks are inserted first, so an
-- AFTER INSERT trigger on this table sees them all.
CREATE TABLE capacity_forecast (
    id              bigserial PRIMARY KEY,
    group_id        text NOT NULL,
    forecast_type   text NOT NULL,          -- OSCP type: CONSUMPTION, ...
    kind            text NOT NULL,          -- day_ahead, additional_reply or emergency
    forecast_day    date NOT NULL,          -- local day of the first block's start
    received_at     timestamptz NOT NULL,   -- receipt time: the latest plan received wins
    request_id      text NOT NULL UNIQUE,   -- ELMO's X-Request-ID
    message_id      bigint,                 -- elmo_received_message.id (may be purged)
    payload         jsonb NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    -- The span of the blocks (earliest start, latest end), so the capacity
    -- rules only look at forecasts that can cover an instant.  Filled by
    -- _elmo_apply; a row inserted by other means may leave them NULL (= unknown
    -- span, always looked at).
    starts_at       timestamptz,
    ends_at         timestamptz
);
CREATE INDEX capacity_forecast_group ON capacity_forecast (group_id, forecast_day);
CREATE INDEX capacity_forecast_group_span
    ON capacity_forecast (group_id, (coalesce(ends_at, 'infinity'::timestamptz)));

-- Blocks are found through their forecast (forecast_id), never by time alone.
CREATE TABLE capacity_forecast_block (
    forecast_id     bigint NOT NULL,        -- capacity_forecast.id
    block_no        int NOT NULL,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz NOT NULL,   -- later than start_time
    capacity        numeric NOT NULL,
    unit            text NOT NULL,
    phase           text NOT NULL,
    PRIMARY KEY (forecast_id, block_no)
);
-- Blocks are deleted with their forecast (_elmo_forecast_deleted, 00_helpers.sql).
CREATE TRIGGER capacity_forecast_delete_blocks AFTER DELETE ON capacity_forecast
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION _elmo_forecast_deleted();
CREATE TRIGGER capacity_forecast_truncate_blocks AFTER TRUNCATE ON capacity_forecast
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_forecast_deleted();

-- Bodies compress with lz4 where the server has it: ~4x faster than pglz.
DO $$
BEGIN
    ALTER TABLE elmo_received_message ALTER raw_body SET COMPRESSION lz4, ALTER body SET COMPRESSION lz4;
    ALTER TABLE capacity_forecast ALTER payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END $$;

-- Per-group settings the CSMS records.
CREATE TABLE elmo_group_settings (
    group_id        text PRIMARY KEY,
    contract_capacity_kw numeric CHECK (contract_capacity_kw >= 0)
);

-- ---------------------------------------------------------------- outbound

-- Every message we send to ELMO: queued in the caller's transaction, delivered
-- by the worker after commit.  Bodies are kept as text (exact key order and
-- number format); tokens are scrubbed from them once sent.
CREATE TABLE elmo_outbox (
    id              bigserial PRIMARY KEY,
    message         text NOT NULL,          -- OSCP message name, or trigger-callback/<name>
    method          text NOT NULL DEFAULT 'POST',
    group_id        text,                   -- per-group delivery order
    url             text,                   -- fixed target; NULL: ELMO's base URL + '/' + message
    auth            text NOT NULL DEFAULT 'elmo'
                    CHECK (auth IN ('elmo', 'initial', 'ours')),  -- which token authorizes it
    request_id      text NOT NULL UNIQUE DEFAULT _elmo_request_id(),
    correlation_id  text,
    body            text NOT NULL,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'delivered', 'failed',
                                     'waiting_for_handshake', 'held')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     int,
    last_error      text,
    response_body   text,                   -- truncated
    timing          jsonb,                  -- curl's dns/connect/tls/transfer breakdown
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz,
    -- md5 of the token the last attempt was authorized with: a 401/403 answer
    -- to a token that has been rotated since the request left is a retry, not
    -- a lock-out
    token_fingerprint text,
    -- when elmo_retry queued it again after it failed: max_retry_age counts from here
    retried_at      timestamptz
);
CREATE INDEX elmo_outbox_due ON elmo_outbox (next_attempt_at, id)
    WHERE state IN ('queued', 'sending');
CREATE INDEX elmo_outbox_group ON elmo_outbox (group_id, id)
    WHERE state NOT IN ('delivered', 'failed');
-- elmo_status() counts failed messages without scanning delivered history.
CREATE INDEX elmo_outbox_failed ON elmo_outbox (id) WHERE state = 'failed';

-- Our adjust_group_capacity_forecast requests: a pending one makes ELMO's next
-- forecast for that group and day an additional_reply.
CREATE TABLE elmo_adjust_request (
    id              bigserial PRIMARY KEY,
    group_id        text NOT NULL,
    day             date NOT NULL,
    outbox_id       bigint NOT NULL REFERENCES elmo_outbox (id),
    hourly_kw       numeric[] NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'answered', 'failed', 'expired')),
    reply_forecast_id bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);
CREATE UNIQUE INDEX elmo_adjust_request_one_pending
    ON elmo_adjust_request (group_id, day) WHERE state = 'pending';

-- Last reading reported per group (cumulative kWh never goes down).
CREATE TABLE elmo_usage_last (
    group_id        text PRIMARY KEY,
    kwh             numeric NOT NULL,
    measured_at     timestamptz NOT NULL,
    outbox_id       bigint
);

-- ---------------------------------------------------------------- the worker's own

-- When the worker last ran its periodic jobs (usage_report, heartbeat, retention).
CREATE TABLE elmo_timer (
    name            text PRIMARY KEY,
    last_run_at     timestamptz NOT NULL
);

-- Groups the last automatic usage report left out, and why (view elmo_usage_skipped).
CREATE TABLE _elmo_usage_skip (
    group_id        text PRIMARY KEY,
    kwh             numeric,
    last_kwh        numeric,
    reason          text NOT NULL,
    skipped_at      timestamptz NOT NULL
);

-- ---------------------------------------------------------------- capacity in force, alerts

-- One row per group: the capacity in force now, kept by the worker at every
-- instant it changes (a block boundary, a forecast received, the contract
-- capacity), so that the CSMS can put a trigger on it.  NOTIFY
-- elmo_capacity_changed goes with every change of capacity, unit or kind.
CREATE TABLE capacity_in_force (
    group_id        text PRIMARY KEY,
    capacity        numeric,                -- NULL: nothing known
    unit            text,
    kind            text,                   -- day_ahead, additional_reply, emergency or contract
    since           timestamptz NOT NULL,   -- when it came into force
    until           timestamptz             -- its next change as far as is known; NULL: none
);
CREATE INDEX capacity_in_force_until ON capacity_in_force (until);

-- Groups a forecast received may have changed: the worker refreshes their row
-- right after the answers went out (never on the answering path: a CSMS
-- trigger on capacity_in_force must not delay ELMO's 204).
CREATE TABLE _elmo_capacity_dirty (
    group_id        text PRIMARY KEY
);

-- Every alert raised (NOTIFY elmo_alert), once: subject says which day,
-- outage or message it was about.
CREATE TABLE _elmo_alert (
    id              bigserial PRIMARY KEY,
    alert           text NOT NULL,          -- day_ahead_missing, locked_out, elmo_unreachable, apply_failing
    group_id        text,
    subject         text NOT NULL,
    detail          text NOT NULL,
    raised_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX _elmo_alert_once ON _elmo_alert (alert, coalesce(group_id, ''), subject);
-- ---------------------------------------------------------------- backup and restore

-- The CSMS's own triggers on the extension's tables.  pg_dump never dumps a
-- trigger on an extension's table (it dumps neither the table nor what hangs
-- on it), so the event trigger below keeps each one here as pg_get_triggerdef
-- shows it, and elmo_restore_triggers() creates them again after a restore.
CREATE TABLE _elmo_saved_trigger (
    table_name      text NOT NULL,
    trigger_name    text NOT NULL,
    definition      text NOT NULL,          -- CREATE [CONSTRAINT] TRIGGER ...
    enabled         "char" NOT NULL,        -- pg_trigger.tgenabled: O, D, R or A
    trigger_oid     oid,                    -- in this cluster (a restore brings another's)
    saved_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, trigger_name)
);
CREATE TRIGGER _elmo_saved_trigger_arrives BEFORE INSERT ON _elmo_saved_trigger
    FOR EACH ROW EXECUTE FUNCTION _elmo_saved_trigger_arrives();
CREATE EVENT TRIGGER elmo_oscp_save_triggers ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER', 'ALTER TRIGGER', 'ALTER TABLE')
    EXECUTE FUNCTION _elmo_save_triggers();
CREATE EVENT TRIGGER elmo_oscp_forget_triggers ON sql_drop
    EXECUTE FUNCTION _elmo_forget_triggers();

-- A registration that arrives by COPY (a restore) must release the messages
-- it allows and reach the worker's copy of the tokens, as elmo_register's
-- does; queued messages that arrive so must be claimed: wake the worker at
-- commit.  (Not on UPDATE: the worker updates the registration at every
-- batch, and our functions wake it themselves.)
CREATE TRIGGER elmo_registration_arrived AFTER INSERT OR DELETE OR TRUNCATE ON elmo_registration
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_registration_arrived();
CREATE TRIGGER elmo_outbox_wake AFTER INSERT ON elmo_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION _elmo_wake_trigger();
-- A message that arrives in state sending (in a backup taken while it was on
-- its way) was never recorded: send it again, with the same X-Request-ID.
CREATE TRIGGER elmo_outbox_restored_sending BEFORE INSERT ON elmo_outbox
    FOR EACH ROW WHEN (NEW.state = 'sending') EXECUTE FUNCTION _elmo_outbox_restored_sending();

-- What pg_dump keeps: every table of protocol or CSMS state, and the
-- sequences, so that ids go on where they were.  Received and delivered
-- messages that retention (elmo_oscp.retention) is about to delete are left
-- out.  capacity_in_force goes with them (and the groups waiting for its
-- upkeep), so a restored database reads what it read.  Not kept: the
-- worker's own timers (elmo_timer: a restored database's worker writes them
-- before the data arrives, and running each job once more is harmless),
-- _elmo_usage_skip (remade at every usage report) and the alerts raised
-- (_elmo_alert: one still true is raised again).
-- The conditions run in pg_dump's session, with an empty search_path.
SELECT pg_catalog.pg_extension_config_dump('elmo_registration', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_received_message',
    $$WHERE state NOT IN ('applied', 'discarded')
          OR coalesce(received_at >= now() - current_setting('elmo_oscp.retention', true)::interval, true)$$);
SELECT pg_catalog.pg_extension_config_dump('elmo_received_message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_forecast', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_forecast_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_forecast_block', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_group_settings', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_outbox',
    $$WHERE state <> 'delivered'
          OR coalesce(created_at >= now() - current_setting('elmo_oscp.retention', true)::interval, true)
          OR id IN (SELECT a.outbox_id FROM @extschema@.elmo_adjust_request a)$$);
SELECT pg_catalog.pg_extension_config_dump('elmo_outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_adjust_request', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_adjust_request_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('elmo_usage_last', '');
SELECT pg_catalog.pg_extension_config_dump('_elmo_saved_trigger', '');
SELECT pg_catalog.pg_extension_config_dump('capacity_in_force', '');
SELECT pg_catalog.pg_extension_config_dump('_elmo_capacity_dirty', '');
