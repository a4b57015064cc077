/*
 * shmem.c — the worker's shared memory: set up by the postmaster's hooks
 * (elmo_oscp.c), read by elmo_status() and elmo_wait() in any backend,
 * written by the worker; and waking the worker when a transaction commits.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "shmem.h"

ElmoShared *elmo_shared = NULL;

static bool wake_at_commit = false;
static bool latch_at_commit = false;	/* the latch only: no new messages */
static bool extension_changed_at_commit = false;
static TimestampTz capacity_due_at_commit = 0;	/* 0: none */
static bool capacity_recheck_at_commit = false;
static bool callback_registered = false;

Size
shmem_size(void)
{
	return MAXALIGN(sizeof(ElmoShared));
}

/* From the shmem_startup hook: find the struct, or create it the first time. */
void
shmem_attach(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	elmo_shared = ShmemInitStruct("elmo_oscp", sizeof(ElmoShared), &found);
	if (!found)
	{
		memset(elmo_shared, 0, sizeof(ElmoShared));
		SpinLockInit(&elmo_shared->mutex);
		elmo_shared->database_ok = true;	/* optimistic: at most one FATAL */
		pg_atomic_init_u64(&elmo_shared->generation, 1);
		pg_atomic_init_u64(&elmo_shared->extension_generation, 1);
		for (int i = 0; i < 6; i++)
			pg_atomic_init_u64(&elmo_shared->requests[i], 0);
		pg_atomic_init_u64(&elmo_shared->received, 0);
		pg_atomic_init_u64(&elmo_shared->sent, 0);
		pg_atomic_init_u64(&elmo_shared->send_failures, 0);
		pg_atomic_init_u64(&elmo_shared->apply_failures, 0);
		ConditionVariableInit(&elmo_shared->outbox_cv);
		ConditionVariableInit(&elmo_shared->worker_cv);
		pg_atomic_init_u64(&elmo_shared->capacity_due, 0);
		pg_atomic_init_u32(&elmo_shared->capacity_recheck, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Remember the worker's last error for elmo_status(); never pass a token here. */
void
shmem_set_last_error(const char *msg)
{
	if (elmo_shared == NULL)
		return;
	SpinLockAcquire(&elmo_shared->mutex);
	strlcpy(elmo_shared->last_error, msg ? msg : "", ELMO_ERRLEN);
	elmo_shared->last_error_at = GetCurrentTimestamp();
	SpinLockRelease(&elmo_shared->mutex);
}

/* Set the worker's latch: it looks at its timers again. */
static void
set_worker_latch(void)
{
	Latch	   *latch;

	SpinLockAcquire(&elmo_shared->mutex);
	latch = elmo_shared->worker_latch;
	SpinLockRelease(&elmo_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* Bump the generation and set the worker's latch (safe from any backend). */
void
shmem_wake_worker(void)
{
	if (elmo_shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&elmo_shared->generation, 1);
	set_worker_latch();
}

/* Lower the instant capacity_in_force next changes to at (never raise it). */
void
shmem_capacity_due(TimestampTz at)
{
	uint64		due;
	uint64		want = (uint64) Max(at, 0);

	if (elmo_shared == NULL)
		return;
	due = pg_atomic_read_u64(&elmo_shared->capacity_due);
	while (want < due)
		if (pg_atomic_compare_exchange_u64(&elmo_shared->capacity_due, &due, want))
			break;
}

static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (extension_changed_at_commit && elmo_shared != NULL)
				pg_atomic_fetch_add_u64(&elmo_shared->extension_generation, 1);
			if (capacity_due_at_commit != 0)
				shmem_capacity_due(capacity_due_at_commit);
			if (capacity_recheck_at_commit && elmo_shared != NULL)
				pg_atomic_write_u32(&elmo_shared->capacity_recheck, 1);
			if (wake_at_commit)
				shmem_wake_worker();
			else if (latch_at_commit && elmo_shared != NULL)
				set_worker_latch();
			break;
		default:
			break;
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		wake_at_commit = latch_at_commit = extension_changed_at_commit = capacity_recheck_at_commit = false;
		capacity_due_at_commit = 0;
	}
}

static void
register_xact_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
}

/*
 * Wake the worker when this transaction commits (not before: it would look
 * and find nothing); extension_changed: it also looks at the extension again.
 */
void
shmem_wake_worker_at_commit(bool extension_changed)
{
	register_xact_callback();
	wake_at_commit = true;
	extension_changed_at_commit |= extension_changed;
}

/*
 * When this transaction commits, capacity_in_force changes next at [at] (the
 * worker looks then), or wants a full refresh; the worker's latch is set, but
 * the generation stays (nothing new to send, no tokens to read again).
 */
void
shmem_capacity_due_at_commit(TimestampTz at)
{
	register_xact_callback();
	if (capacity_due_at_commit == 0 || at < capacity_due_at_commit)
		capacity_due_at_commit = Max(at, 1);
	latch_at_commit = true;
}

void
shmem_capacity_recheck_at_commit(void)
{
	register_xact_callback();
	capacity_recheck_at_commit = true;
	latch_at_commit = true;
}

void
shmem_read_worker(WorkerView *view)
{
	SpinLockAcquire(&elmo_shared->mutex);
	view->pid = elmo_shared->worker_pid;
	view->started_at = elmo_shared->worker_started_at;
	view->listening = elmo_shared->listening;
	view->tls = elmo_shared->tls;
	strlcpy(view->address, elmo_shared->bound_address, sizeof(view->address));
	view->port = elmo_shared->bound_port;
	strlcpy(view->last_error, elmo_shared->last_error, sizeof(view->last_error));
	view->last_error_at = elmo_shared->last_error_at;
	view->database_ok = elmo_shared->database_ok;
	view->database_dropping = elmo_shared->database_dropping;
	view->as_superuser = elmo_shared->as_superuser;
	SpinLockRelease(&elmo_shared->mutex);
}

/*
 * A DROP DATABASE of the worker's database starts (the worker must stay out:
 * it waits without connecting) or ends: committed, the database is gone and
 * the worker keeps waiting for it; rolled back, it is let back in at once.
 */
void
shmem_set_database_dropping(bool dropping, bool dropped)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->database_dropping = dropping;
	if (dropping)
		elmo_shared->database_ok = false;
	else if (!dropped)
		elmo_shared->database_ok = true;
	SpinLockRelease(&elmo_shared->mutex);
	if (!dropping)
		shmem_wake_worker();
}

/* Sleep until no worker runs, at most timeout_ms; true when it is gone. */
bool
shmem_wait_worker_gone(int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	bool		gone;

	ConditionVariablePrepareToSleep(&elmo_shared->worker_cv);
	for (;;)
	{
		long		secs;
		int			usecs;

		SpinLockAcquire(&elmo_shared->mutex);
		gone = (elmo_shared->worker_pid == 0);
		SpinLockRelease(&elmo_shared->mutex);
		if (gone)
			break;
		TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
		if (secs == 0 && usecs == 0)
			break;
		(void) ConditionVariableTimedSleep(&elmo_shared->worker_cv, secs * 1000 + (usecs + 999) / 1000,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return gone;
}

void
shmem_read_reach(ReachView *view)
{
	SpinLockAcquire(&elmo_shared->mutex);
	view->reachable = !elmo_shared->elmo_unreachable;
	view->failed_deliveries = elmo_shared->failed_deliveries;
	view->first_failure_at = elmo_shared->first_failure_at;
	view->last_reached_at = elmo_shared->last_reached_at;
	SpinLockRelease(&elmo_shared->mutex);
}

static void
worker_exited(int code, Datum arg)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->worker_pid = 0;
	elmo_shared->worker_latch = NULL;
	elmo_shared->listening = false;
	SpinLockRelease(&elmo_shared->mutex);
	ConditionVariableBroadcast(&elmo_shared->worker_cv);
}

/* Publish the worker's latch first thing: a DROP DATABASE may be waiting for it. */
void
shmem_worker_started(void)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->worker_pid = MyProcPid;
	elmo_shared->worker_latch = MyLatch;
	elmo_shared->worker_started_at = GetCurrentTimestamp();
	SpinLockRelease(&elmo_shared->mutex);
	on_shmem_exit(worker_exited, (Datum) 0);
}

void
shmem_set_listening(bool listening, bool tls, const char *address, int port)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->listening = listening;
	elmo_shared->tls = tls;
	elmo_shared->bound_port = port;
	strlcpy(elmo_shared->bound_address, address, sizeof(elmo_shared->bound_address));
	SpinLockRelease(&elmo_shared->mutex);
}

void
shmem_set_database_ok(bool ok)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->database_ok = ok;
	SpinLockRelease(&elmo_shared->mutex);
}

/*
 * The worker's, after each delivery attempt: reached (ELMO answered below
 * 500) or not (no connection, timeout, 5xx).  Returns 1 when ELMO just
 * became reachable again, -1 when it just became unreachable, else 0; *after
 * is the state after this one (before it, for a return of 1).
 */
int
shmem_note_delivery(bool reached, ReachView *after)
{
	int			change = 0;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&elmo_shared->mutex);
	if (reached)
	{
		after->failed_deliveries = elmo_shared->failed_deliveries;
		after->first_failure_at = elmo_shared->first_failure_at;
		if (elmo_shared->elmo_unreachable)
			change = 1;
		elmo_shared->elmo_unreachable = false;
		elmo_shared->failed_deliveries = 0;
		elmo_shared->first_failure_at = 0;
		elmo_shared->last_reached_at = now;
	}
	else
	{
		if (elmo_shared->failed_deliveries++ == 0)
			elmo_shared->first_failure_at = now;
		if (!elmo_shared->elmo_unreachable && elmo_shared->failed_deliveries >= ELMO_UNREACHABLE_AFTER)
		{
			elmo_shared->elmo_unreachable = true;
			change = -1;
		}
		after->failed_deliveries = elmo_shared->failed_deliveries;
		after->first_failure_at = elmo_shared->first_failure_at;
	}
	after->reachable = !elmo_shared->elmo_unreachable;
	after->last_reached_at = elmo_shared->last_reached_at;
	SpinLockRelease(&elmo_shared->mutex);
	return change;
}

/*
 * The worker's: is a capacity_in_force upkeep due at [now]?  Then it takes
 * it: nothing is due until the upkeep says when (shmem_capacity_due), and
 * *recheck tells whether every known group must be refreshed (the contract
 * capacities changed).
 */
bool
shmem_capacity_take_due(TimestampTz now, bool *recheck)
{
	*recheck = pg_atomic_exchange_u32(&elmo_shared->capacity_recheck, 0) != 0;
	if (!*recheck && pg_atomic_read_u64(&elmo_shared->capacity_due) > (uint64) Max(now, 0))
		return false;
	pg_atomic_write_u64(&elmo_shared->capacity_due, PG_UINT64_MAX);
	return true;
}

/* When the next capacity_in_force upkeep is due (0: now); false: none known. */
bool
shmem_capacity_next(TimestampTz *at)
{
	uint64		due = pg_atomic_read_u64(&elmo_shared->capacity_due);

	*at = 0;
	if (pg_atomic_read_u32(&elmo_shared->capacity_recheck) != 0)
		return true;
	if (due == PG_UINT64_MAX)
		return false;
	*at = (TimestampTz) due;
	return true;
}

void
shmem_set_as_superuser(bool as_superuser)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->as_superuser = as_superuser;
	SpinLockRelease(&elmo_shared->mutex);
}
