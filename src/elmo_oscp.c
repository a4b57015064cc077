/*
 * elmo_oscp.c — module entry: GUCs, shared memory, the background worker.
 *
 * The library must come through shared_preload_libraries: the worker and its
 * shared memory can only be set up by the postmaster.  Loaded any other way
 * (for example by CREATE EXTENSION in a server that was not configured), it
 * raises an error that says how to fix it, so nothing half-works.
 */
#include "elmo_oscp.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "pgtime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* GUC storage */
char	   *elmo_database = NULL;
char	   *elmo_listen_addresses = NULL;
int			elmo_port = 8780;
char	   *elmo_path_prefix = NULL;
char	   *elmo_public_url = NULL;
char	   *elmo_timezone = NULL;
int			elmo_max_request_size = 1024 * 1024;
char	   *elmo_tls_cert_file = NULL;
char	   *elmo_tls_key_file = NULL;
int			elmo_max_connections = 256;
int			elmo_connection_timeout = 30;
int			elmo_apply_timeout = 2000;
int			elmo_batch_max = 256;
char	   *elmo_ca_file = NULL;
int			elmo_connect_timeout = 5000;
int			elmo_request_timeout = 15000;
int			elmo_max_in_flight = 32;
static int	elmo_max_attempts = 50;
static int	elmo_max_retry_age = 86400;
static char *elmo_adjust_deadline = NULL;
static bool elmo_enforce_deadlines = true;
static int	elmo_report_interval = 60;
static char *elmo_usage_source = NULL;
static int	elmo_retention = 7 * 86400;
static char *elmo_trigger_callback_url = NULL;

ElmoShared *elmo_shared = NULL;

static bool loaded_by_preload = false;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

static bool
check_path_prefix(char **newval, void **extra, GucSource source)
{
	size_t		len = strlen(*newval);

	if (len == 0 || (*newval)[0] != '/' || (*newval)[len - 1] == '/')
	{
		GUC_check_errdetail("elmo_oscp.path_prefix must start with \"/\" and must not end with \"/\".");
		return false;
	}
	return true;
}

static bool
check_timezone(char **newval, void **extra, GucSource source)
{
	/* The zone is used in SQL (AT TIME ZONE): refuse what PostgreSQL does not know. */
	if ((*newval)[0] == '\0' || pg_tzset(*newval) == NULL)
	{
		GUC_check_errdetail("elmo_oscp.timezone must name a time zone, for example \"Asia/Taipei\".");
		return false;
	}
	return true;
}

static bool
check_deadline(char **newval, void **extra, GucSource source)
{
	int			h,
				m;
	char		tail;

	if (sscanf(*newval, "%d:%d%c", &h, &m, &tail) != 2 || h < 0 || h > 23 || m < 0 || m > 59)
	{
		GUC_check_errdetail("elmo_oscp.adjust_deadline must be a local time of day as HH:MM, for example \"14:00\".");
		return false;
	}
	return true;
}

static void
define_gucs(void)
{
	DefineCustomStringVariable("elmo_oscp.database",
							   "Database the elmo_oscp worker connects to.",
							   "The extension must be created in this database.",
							   &elmo_database, "postgres", PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.listen_addresses",
							   "Address the OSCP listener binds to.",
							   "One IPv4 or IPv6 address, or \"*\" for all.",
							   &elmo_listen_addresses, "127.0.0.1", PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.port",
							"TCP port of the OSCP listener.",
							NULL, &elmo_port, 8780, 1, 65535, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.path_prefix",
							   "URL path under which ELMO's callbacks are served.",
							   NULL, &elmo_path_prefix, "/oscp/fp/2.0", PGC_SIGHUP, 0,
							   check_path_prefix, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.public_url",
							   "This CSMS's OSCP base URL as ELMO reaches it.",
							   "Sent to ELMO in register; for example https://csms.example.com/oscp/fp/2.0.",
							   &elmo_public_url, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.timezone",
							   "Time zone of ELMO's day (10:00, 14:00, 16:00, today and tomorrow).",
							   NULL, &elmo_timezone, "Asia/Taipei", PGC_SIGHUP, 0,
							   check_timezone, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.max_request_size",
							"Largest request body the listener accepts.",
							NULL, &elmo_max_request_size, 1024 * 1024, 1024, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.tls_cert_file",
							   "PEM certificate (chain) for HTTPS; empty serves plain HTTP.",
							   NULL, &elmo_tls_cert_file, "", PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.tls_key_file",
							   "PEM private key for HTTPS.",
							   NULL, &elmo_tls_key_file, "", PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.max_connections",
							"Most concurrent HTTP connections the listener keeps.",
							NULL, &elmo_max_connections, 256, 1, 10000, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.connection_timeout",
							"Idle HTTP connections are closed after this long.",
							NULL, &elmo_connection_timeout, 30, 1, 3600, PGC_POSTMASTER,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.apply_timeout",
							"Time budget for applying one batch of received messages before answering.",
							"When it is spent, the rest of the batch is stored and applied after the answers.",
							&elmo_apply_timeout, 2000, 1, 15000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.batch_max",
							"Most requests committed together (group commit).",
							NULL, &elmo_batch_max, 256, 1, 10000, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.ca_file",
							   "CA bundle used to verify ELMO's certificate; empty uses the system's.",
							   NULL, &elmo_ca_file, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.connect_timeout",
							"Connect timeout for requests to ELMO.",
							NULL, &elmo_connect_timeout, 5000, 1, 600000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.request_timeout",
							"Total timeout of one request to ELMO.",
							NULL, &elmo_request_timeout, 15000, 1, 600000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.max_in_flight",
							"Most requests to ELMO in flight at once.",
							NULL, &elmo_max_in_flight, 32, 1, 1024, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.max_attempts",
							"Attempts before a message to ELMO that keeps failing is given up.",
							NULL, &elmo_max_attempts, 50, 1, 100000, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.max_retry_age",
							"Age after which a message to ELMO that keeps failing is given up.",
							NULL, &elmo_max_retry_age, 86400, 1, INT_MAX, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.adjust_deadline",
							   "Local time after which elmo_adjust_capacity refuses requests for tomorrow.",
							   NULL, &elmo_adjust_deadline, "14:00", PGC_SIGHUP, 0,
							   check_deadline, NULL, NULL);
	DefineCustomBoolVariable("elmo_oscp.enforce_deadlines",
							 "Enforce ELMO's negotiation time rules in elmo_adjust_capacity.",
							 "Switch off only in tests.",
							 &elmo_enforce_deadlines, true, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.report_interval",
							"Interval of the automatic usage reports (aligned to it).",
							NULL, &elmo_report_interval, 60, 1, 86400, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.usage_source",
							   "Relation or function giving (group_id, kwh) for automatic usage reports.",
							   "Empty: no automatic reports.",
							   &elmo_usage_source, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("elmo_oscp.retention",
							"How long delivered and applied messages are kept.",
							NULL, &elmo_retention, 7 * 86400, 60, INT_MAX, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("elmo_oscp.trigger_callback_url",
							   "Testbed trigger-callback base URL; empty derives it from the ELMO URL.",
							   NULL, &elmo_trigger_callback_url, "", PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("elmo_oscp");
}

static void
elmo_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ElmoShared)));
}

static void
elmo_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	elmo_shared = ShmemInitStruct("elmo_oscp", sizeof(ElmoShared), &found);
	if (!found)
	{
		memset(elmo_shared, 0, sizeof(ElmoShared));
		SpinLockInit(&elmo_shared->mutex);
		elmo_shared->database_ok = true;	/* optimistic: at most one FATAL */
		pg_atomic_init_u64(&elmo_shared->generation, 1);
		for (int i = 0; i < 6; i++)
			pg_atomic_init_u64(&elmo_shared->requests[i], 0);
		pg_atomic_init_u64(&elmo_shared->received, 0);
		pg_atomic_init_u64(&elmo_shared->sent, 0);
		pg_atomic_init_u64(&elmo_shared->send_failures, 0);
		pg_atomic_init_u64(&elmo_shared->apply_failures, 0);
		ConditionVariableInit(&elmo_shared->outbox_cv);
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Never on a standby: started once recovery is over (and after promotion). */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "elmo_oscp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "elmo_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, ELMO_WORKER_NAME);
	snprintf(worker.bgw_type, BGW_MAXLEN, ELMO_WORKER_NAME);
	RegisterBackgroundWorker(&worker);
}

/*
 * DROP DATABASE of the database the worker serves must not fail because the
 * worker is connected to it: tell the worker to stay out (it then waits for
 * the database to exist again, without connecting) and wait until it left.
 */
static void
stop_worker_for_drop(void)
{
	pid_t		pid;

	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->database_ok = false;
	pid = elmo_shared->worker_pid;
	SpinLockRelease(&elmo_shared->mutex);
	if (pid == 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 1000; i++)	/* 10 s at most */
	{
		SpinLockAcquire(&elmo_shared->mutex);
		pid = elmo_shared->worker_pid;
		SpinLockRelease(&elmo_shared->mutex);
		if (pid == 0)
			break;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000);
	}
}

static void
elmo_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	volatile bool dropping = false;

	if (elmo_shared != NULL && IsA(stmt, DropdbStmt) &&
		strcmp(((DropdbStmt *) stmt)->dbname, elmo_database) == 0)
	{
		dropping = true;
		stop_worker_for_drop();
	}

	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
								 queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		/* the drop failed: the database is still there, let the worker back in */
		if (dropping)
		{
			SpinLockAcquire(&elmo_shared->mutex);
			elmo_shared->database_ok = true;
			SpinLockRelease(&elmo_shared->mutex);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
}

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("elmo_oscp can only be loaded via shared_preload_libraries"),
				 errdetail("Its background worker serves ELMO's callbacks and delivers outgoing messages; it can only be started by the postmaster."),
				 errhint("Add elmo_oscp to shared_preload_libraries in postgresql.conf, set elmo_oscp.database, and restart the server.")));

	loaded_by_preload = true;
	define_gucs();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = elmo_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = elmo_shmem_startup;

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = elmo_process_utility;

	register_worker();
}

bool
elmo_loaded_by_preload(void)
{
	return loaded_by_preload && elmo_shared != NULL;
}

/* Remember the worker's last error for elmo_status(); never pass a token here. */
void
elmo_set_last_error(const char *msg)
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
elmo_wake_worker(void)
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
