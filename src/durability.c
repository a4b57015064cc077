/*
 * durability.c — a 204 only after the commit is as durable as the cluster
 * promises.
 *
 * COMMIT returns with the commit flushed locally (the worker never commits
 * with synchronous_commit below on) and, where synchronous replication is in
 * force, confirmed by the synchronous standbys.  Not always, though: when
 * the wait for the standbys is cut short (a cancel, SIGTERM, the postmaster's
 * death), PostgreSQL keeps the commit and only warns.  A failover could then
 * undo what ELMO was told is stored, so after each commit the worker compares
 * the commit's end with what the standbys confirmed, and answers only when
 * they have it.  The check reads shared memory under a shared lock: a few
 * instructions next to the commit it follows.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/pmsignal.h"
#include "utils/guc.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "durability.h"

/* Stopping: how long the worker still waits for the standbys to confirm. */
#define STOP_WAIT_MS 3000

static volatile sig_atomic_t committing = false;
static volatile sig_atomic_t cut_requested = false;
static int	level_at_commit = SYNCHRONOUS_COMMIT_ON;
static TimestampTz stop_deadline = 0;
static TimeoutId wait_timeout = MAX_TIMEOUTS;	/* not registered yet */
static int	overridden_level = -1;	/* last weaker setting logged */

/* ---------------------------------------------------------------- the setting */

static void
set_local_level(const char *value)
{
	(void) set_config_option("synchronous_commit", value, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * synchronous_commit below remote_write (off, local), from postgresql.conf,
 * ALTER DATABASE or ALTER ROLE, would let COMMIT return before the flush or
 * without the standbys: the worker uses on instead.  A stronger setting is
 * kept; after a reload, the setting is read again from where it comes.
 */
void
durability_enforce_session(void)
{
	SetConfigOption("synchronous_commit", NULL, PGC_SUSET, PGC_S_SESSION);
	if (synchronous_commit >= SYNCHRONOUS_COMMIT_REMOTE_WRITE)
	{
		overridden_level = -1;
		return;
	}
	if (overridden_level != synchronous_commit)
		ereport(LOG,
				(errmsg("elmo_oscp: synchronous_commit = %s does not apply to the worker, which commits with on",
						GetConfigOption("synchronous_commit", false, false)),
				 errdetail("A 204 tells ELMO that its message is stored for good: the worker answers after its commit is flushed, and confirmed by the synchronous standbys where they are set.")));
	overridden_level = synchronous_commit;
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
}

/* ---------------------------------------------------------------- the commit */

/*
 * Just before COMMIT.  A CSMS trigger's SET LOCAL synchronous_commit = off
 * does not weaken the worker's commit.  Once SIGTERM came, COMMIT does not
 * wait for the standbys (a fast shutdown must not hang on a standby that is
 * gone): durability_of_last_commit() waits for them, a few seconds at most.
 */
void
durability_before_commit(void)
{
	if (synchronous_commit < SYNCHRONOUS_COMMIT_REMOTE_WRITE)
		set_local_level("on");
	level_at_commit = synchronous_commit;
	if (ShutdownRequestPending)
		set_local_level("local");
	committing = true;
}

void
durability_after_commit(void)
{
	committing = false;
	/* a cut asked for when no wait came: nothing to cancel any more */
	if (cut_requested)
	{
		cut_requested = false;
		QueryCancelPending = false;
	}
}

/* From the SIGTERM handler: a wait for the standbys under way ends now. */
void
durability_cut_wait(void)
{
	if (!committing)
		return;
	cut_requested = true;
	QueryCancelPending = true;
	InterruptPending = true;
}

/* ---------------------------------------------------------------- the check */

static bool
standbys_named(void)
{
	return max_wal_senders > 0 && SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0';
}

static bool
standbys_confirmed(XLogRecPtr lsn)
{
	int			mode;
	bool		confirmed;

	switch (level_at_commit)
	{
		case SYNCHRONOUS_COMMIT_REMOTE_WRITE:
			mode = SYNC_REP_WAIT_WRITE;
			break;
		case SYNCHRONOUS_COMMIT_REMOTE_APPLY:
			mode = SYNC_REP_WAIT_APPLY;
			break;
		default:
			mode = SYNC_REP_WAIT_FLUSH;
			break;
	}
	LWLockAcquire(SyncRepLock, LW_SHARED);
	confirmed = lsn <= ((volatile WalSndCtlData *) WalSndCtl)->lsn[mode];
	LWLockRelease(SyncRepLock);
	return confirmed;
}

static void
wait_expired(void)
{
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* Stopping: PostgreSQL's own wait for the standbys, cut at the deadline. */
static bool
wait_for_standbys(XLogRecPtr lsn)
{
	if (stop_deadline == 0)
		stop_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_WAIT_MS);
	if (GetCurrentTimestamp() >= stop_deadline)
		return false;
	if (wait_timeout == MAX_TIMEOUTS)
		wait_timeout = RegisterTimeout(USER_TIMEOUT, wait_expired);
	enable_timeout_at(wait_timeout, stop_deadline);
	HOLD_INTERRUPTS();
	SyncRepWaitForLSN(lsn, true);
	RESUME_INTERRUPTS();
	disable_timeout(wait_timeout, true);
	if (get_timeout_indicator(wait_timeout, true))
		QueryCancelPending = false; /* our own, whether the wait took it or not */
	return standbys_confirmed(lsn);
}

/*
 * After the worker's commit: may its requests be answered 204?  Not while
 * the synchronous standbys have not confirmed it, even though PostgreSQL
 * returned from COMMIT.
 */
CommitDurability
durability_of_last_commit(void)
{
	XLogRecPtr	lsn = XactLastCommitEnd;
	bool		stopping;

	if (XLogRecPtrIsInvalid(lsn))
		return COMMIT_DURABLE;	/* the worker has written nothing yet */
	if (GetFlushRecPtr(NULL) < lsn)
		XLogFlush(lsn);

	/*
	 * A reload that emptied synchronous_standby_names released the commits
	 * waiting for the standbys: see the setting as the server now does.
	 */
	if (ConfigReloadPending)
	{
		ProcessConfigFile(PGC_SIGHUP);
		durability_enforce_session();
	}
	if (!standbys_named() || standbys_confirmed(lsn))
		return COMMIT_DURABLE;
	/* a pending die (the postmaster died during the wait) or the postmaster gone: no more waiting */
	stopping = ProcDiePending || !PostmasterIsAlive();
	if (!stopping && ShutdownRequestPending && wait_for_standbys(lsn))
		return COMMIT_DURABLE;
	return stopping ? COMMIT_SERVER_STOPPING : COMMIT_UNCONFIRMED;
}

const char *
durability_reason(CommitDurability d)
{
	switch (d)
	{
		case COMMIT_DURABLE:
			break;
		case COMMIT_UNCONFIRMED:
			return "the synchronous standbys have not confirmed the commit (the wait for them was cut short)";
		case COMMIT_SERVER_STOPPING:
			return "the server is going away before the synchronous standbys confirmed the commit";
	}
	return "";
}
