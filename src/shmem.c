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
static bool extension_changed_at_commit = false;
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

/* Bump the generation and set the worker's latch (safe from any backend). */
void
shmem_wake_worker(void)
{
	Latch	   *latch;

	if (elmo_shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&elmo_shared->generation, 1);
	SpinLockAcquire(&elmo_shared->mutex);
	latch = elmo_shared->worker_latch;
	SpinLockRelease(&elmo_shared->mutex);
	if (latch)
		SetLatch(latch);
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
			if (wake_at_commit)
				shmem_wake_worker();
			wake_at_commit = extension_changed_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = extension_changed_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * Wake the worker when this transaction commits (not before: it would look
 * and find nothing); extension_changed: it also looks at the extension again.
 */
void
shmem_wake_worker_at_commit(bool extension_changed)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
	wake_at_commit = true;
	extension_changed_at_commit |= extension_changed;
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
