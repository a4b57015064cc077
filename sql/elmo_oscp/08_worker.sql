-- What the C code reads and writes, as functions: it never touches a table
-- itself (src/statements.c lists every statement it runs).  Code only: every
-- statement here can run again (an update script does).

-- The tokens the listener accepts from ELMO: ours, and the previous one until
-- ELMO has used ours.  No row: not registered (every request is refused).
CREATE OR REPLACE FUNCTION _elmo_listener_tokens(OUT current_token text, OUT previous_token text)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    AS $$ SELECT r.our_token, r.previous_token FROM elmo_registration r $$;

-- An outcome _elmo_record could not take: send the message again in a minute
-- (the same X-Request-ID), rather than leave it 'sending' until a restart.
CREATE OR REPLACE FUNCTION _elmo_requeue(id bigint) RETURNS void
    LANGUAGE sql
    AS $$ UPDATE elmo_outbox o SET state = 'queued', next_attempt_at = now() + interval '1 min'
           WHERE o.id = _elmo_requeue.id AND o.state = 'sending' $$;

-- One message's outcome so far, for elmo_wait: its state, ELMO's last answer,
-- and the transaction that queued it (elmo_wait refuses to wait for a message
-- its own transaction queued: the worker cannot see it yet).
CREATE OR REPLACE FUNCTION _elmo_outbox_outcome(id bigint, OUT state text, OUT last_status int,
                                     OUT last_error text, OUT queued_xmin xid)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    AS $$ SELECT o.state, o.last_status, o.last_error, o.xmin FROM elmo_outbox o
           WHERE o.id = _elmo_outbox_outcome.id $$;

-- Whether ELMO may be calling us: a registration it was, or is being, told
-- of, and not given up.  (The worker restarts to change its role only when
-- ELMO cannot be calling: src/worker.c.)
CREATE OR REPLACE FUNCTION _elmo_registration_live() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT EXISTS (SELECT FROM elmo_registration r WHERE r.state <> 'unregistered') $$;
