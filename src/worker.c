/*
 * worker.c — the background worker: one thread, one WaitEventSet.
 *
 * The set holds the latch (woken at commit by any backend that queued a
 * message), postmaster death, libmicrohttpd's epoll descriptor (inbound) and
 * libcurl's epoll descriptor (outbound).  Every turn of the loop:
 *   MHD_run → finished requests are parked in the inbound batch
 *   inbound_flush → one transaction for the batch, then the answers
 *   sender_run → outbound transfers progress, outcomes recorded, more claimed
 *   timers → retried applies, housekeeping (usage reports, retention)
 */
#include "elmo_oscp.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

volatile sig_atomic_t elmo_got_sighup = false;

static WaitEventSet *wait_set = NULL;
static int	http_fd = -1;
static int	curl_fd = -1;
static bool extension_ready = false;
static TimestampTz next_housekeeping = 0;
static TimestampTz next_extension_check = 0;
static uint64 generation_seen = 0;	/* a kick from CREATE EXTENSION moves it */
static TimestampTz next_listen_retry = 0;

static void
worker_detach_shmem(int code, Datum arg)
{
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->worker_pid = 0;
	elmo_shared->worker_latch = NULL;
	elmo_shared->listening = false;
	elmo_shared->extension_ready = false;
	SpinLockRelease(&elmo_shared->mutex);
}

/*
 * After an error caught in PG_CATCH: log it (it never holds a token: we never
 * put one in a query or a message), remember it for elmo_status(), abort the
 * transaction and carry on.  Callers are never inside a C library's frame.
 */
void
elmo_abort_after_error(const char *where)
{
	ErrorData  *edata;
	char		buf[ELMO_ERRLEN];

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	MemoryContextSwitchTo(TopMemoryContext);

	snprintf(buf, sizeof(buf), "%s: %s", where, edata->message);
	elmo_set_last_error(buf);
	/* an undefined object means the extension may have gone away under us */
	if (edata->sqlerrcode == ERRCODE_UNDEFINED_FUNCTION ||
		edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
		next_extension_check = 0;
	ereport(LOG,
			(errmsg("elmo_oscp: %s failed: %s", where, edata->message),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
	FreeErrorData(edata);
	RESUME_INTERRUPTS();
}

/*
 * A short transaction of the worker's own, with SPI and a snapshot.  Call
 * both inside PG_TRY, with elmo_abort_after_error() in the PG_CATCH.
 */
void
elmo_xact_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (activity)
		pgstat_report_activity(STATE_RUNNING, activity);
}

void
elmo_xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* The first column of a one-row query as a timestamp (0 when NULL or no row). */
TimestampTz
elmo_spi_timestamp(const char *sql)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute(sql, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return 0;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * Is the extension created in this database?  If so, point search_path at
 * its schema so the worker's SQL finds it however the DBA placed it.
 */
static bool
check_extension(void)
{
	volatile bool ready = false;
	char	   *volatile schema = NULL;

	PG_TRY();
	{
		elmo_xact_begin(NULL);
		/* get_extension_schema() is not exported before PostgreSQL 16 */
		if (SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e "
						"JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
						"WHERE e.extname = 'elmo_oscp'", true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char	   *nsp = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (nsp)
			{
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				schema = pstrdup(nsp);
				MemoryContextSwitchTo(old);
				ready = true;
			}
		}
		if (ready)
		{
			char	   *path = psprintf("%s, pg_catalog", quote_identifier(schema));

			SetConfigOption("search_path", path, PGC_SUSET, PGC_S_OVERRIDE);
		}
		elmo_xact_commit();
	}
	PG_CATCH();
	{
		elmo_abort_after_error("extension check");
		ready = false;
	}
	PG_END_TRY();
	return ready;
}

static void
build_wait_set(void)
{
	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = CreateWaitEventSet(TopMemoryContext, 4);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	if (http_fd >= 0)
		AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, http_fd, NULL, NULL);
	if (curl_fd >= 0)
		AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, curl_fd, NULL, NULL);
}

static long
ms_until(TimestampTz t)
{
	TimestampTz now = GetCurrentTimestamp();

	if (t <= now)
		return 0;
	return (long) Min((t - now) / 1000 + 1, (TimestampTz) 60000);
}

static long
min_timeout(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}

/* Minute usage reports, heartbeats, adjust expiry, retention: all in SQL. */
static void
run_housekeeping(void)
{
	volatile TimestampTz next = 0;

	PG_TRY();
	{
		elmo_xact_begin("elmo_oscp: housekeeping");
		next = elmo_spi_timestamp("SELECT _elmo_housekeeping()");
		elmo_xact_commit();
	}
	PG_CATCH();
	{
		elmo_abort_after_error("housekeeping");
	}
	PG_END_TRY();
	/* at least every 10 s, so a changed usage_source or interval is noticed */
	next_housekeeping = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
	if (next > 0 && next < next_housekeeping)
		next_housekeeping = next;
}

static void
reload_config(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	/* the token cache and the sender pick the new settings up on their own */
	next_housekeeping = 0;
}

/*
 * Connecting to a database that does not exist is FATAL, and the postmaster
 * would restart us every second, each time with an error.  So until the
 * database has been seen, connect to none, look it up in pg_database every
 * few seconds, and restart into it once it is there.  A DROP DATABASE of it
 * clears the flag (see elmo_oscp.c) and we are back here.
 */
static void
wait_for_database(void)
{
	bool		logged = false;

	SpinLockAcquire(&elmo_shared->mutex);
	if (elmo_shared->database_ok)
	{
		SpinLockRelease(&elmo_shared->mutex);
		return;
	}
	SpinLockRelease(&elmo_shared->mutex);

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	for (;;)
	{
		bool		exists;

		CHECK_FOR_INTERRUPTS();
		StartTransactionCommand();
		exists = OidIsValid(get_database_oid(elmo_database, true));
		CommitTransactionCommand();
		if (exists)
		{
			SpinLockAcquire(&elmo_shared->mutex);
			elmo_shared->database_ok = true;
			SpinLockRelease(&elmo_shared->mutex);
			/* exit code 1: the postmaster starts us again, now connecting to it */
			proc_exit(1);
		}
		if (!logged)
			ereport(LOG,
					(errmsg("elmo_oscp: database \"%s\" does not exist yet; waiting for it", elmo_database),
					 errhint("Create it, or set elmo_oscp.database and restart the server.")));
		logged = true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 2000,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

void
elmo_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* Publish our latch first: a DROP DATABASE in progress may be waiting for us. */
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->worker_pid = MyProcPid;
	elmo_shared->worker_latch = MyLatch;
	elmo_shared->worker_started_at = GetCurrentTimestamp();
	elmo_shared->extension_ready = false;
	SpinLockRelease(&elmo_shared->mutex);
	on_shmem_exit(worker_detach_shmem, (Datum) 0);

	wait_for_database();
	/* if this connection is FATAL (no such database), the next start waits quietly */
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->database_ok = false;
	SpinLockRelease(&elmo_shared->mutex);
	BackgroundWorkerInitializeConnection(elmo_database, NULL, 0);
	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->database_ok = true;
	SpinLockRelease(&elmo_shared->mutex);
	SetConfigOption("application_name", ELMO_WORKER_NAME, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(ELMO_WORKER_NAME);
	/* The worker's own SQL must never be cut short by a DBA's default. */
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);

	ereport(LOG, (errmsg("elmo_oscp worker started for database \"%s\"", elmo_database)));

	/* The listener comes up at once: /health works even before CREATE EXTENSION. */
	if (http_server_start())
		http_fd = http_server_epoll_fd();
	else
		next_listen_retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
	sender_init();
	curl_fd = sender_epoll_fd();
	build_wait_set();

	for (;;)
	{
		WaitEvent	events[4];
		long		timeout = -1;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
			reload_config();

		/* the listener failed to bind: try again every 5 s, the port may come free */
		if (http_fd < 0 && GetCurrentTimestamp() >= next_listen_retry)
		{
			if (http_server_start())
			{
				http_fd = http_server_epoll_fd();
				build_wait_set();
			}
			else
				next_listen_retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
		}

		if (!extension_ready &&
			(GetCurrentTimestamp() >= next_extension_check ||
			 pg_atomic_read_u64(&elmo_shared->generation) != generation_seen))
		{
			generation_seen = pg_atomic_read_u64(&elmo_shared->generation);
			extension_ready = check_extension();
			SpinLockAcquire(&elmo_shared->mutex);
			elmo_shared->extension_ready = extension_ready;
			SpinLockRelease(&elmo_shared->mutex);
			next_extension_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
			if (extension_ready)
			{
				ereport(LOG, (errmsg("elmo_oscp: extension found, serving OSCP")));
				routes_reload_tokens();
				next_housekeeping = 0;
			}
		}
		else if (extension_ready && next_extension_check == 0)
		{
			/* an SQL error said an object is missing: was it DROP EXTENSION? */
			extension_ready = check_extension();
			next_extension_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
			if (!extension_ready)
			{
				SpinLockAcquire(&elmo_shared->mutex);
				elmo_shared->extension_ready = false;
				SpinLockRelease(&elmo_shared->mutex);
				ereport(LOG, (errmsg("elmo_oscp: extension dropped, waiting for CREATE EXTENSION elmo_oscp")));
			}
		}

		if (extension_ready)
			routes_reload_tokens();	/* cheap unless the generation moved */

		/* inbound first: ELMO waits at most 20 s for its answer */
		if (http_fd >= 0)
		{
			http_server_run();
			if (inbound_pending())
			{
				inbound_flush();
				http_server_run();	/* push the answers out now */
			}
		}

		/* every turn: transfers in flight must progress even after DROP EXTENSION */
		sender_run();

		if (extension_ready)
		{
			if (GetCurrentTimestamp() >= next_housekeeping && !inbound_pending())
				run_housekeeping();
			if (!inbound_pending())
				inbound_retry_applies();
		}

		/* table statistics: without them autovacuum never visits our tables */
		pgstat_report_stat(false);

		/* how long may we sleep? */
		if (http_fd >= 0)
			timeout = min_timeout(timeout, http_server_timeout_ms());
		else
			timeout = min_timeout(timeout, ms_until(next_listen_retry));
		timeout = min_timeout(timeout, sender_timeout_ms());
		if (extension_ready)
		{
			timeout = min_timeout(timeout, ms_until(next_housekeeping));
			timeout = min_timeout(timeout, inbound_retry_timeout_ms());
		}
		else
			timeout = min_timeout(timeout, ms_until(next_extension_check));
		if (inbound_pending())
			timeout = 0;

		(void) WaitEventSetWait(wait_set, timeout, events, lengthof(events),
								PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
