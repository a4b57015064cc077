/*
 * elmo_oscp.c — module entry: settings, shared memory, the background worker
 * and the hooks, set up from _PG_init.
 *
 * The library must come through shared_preload_libraries: the worker and its
 * shared memory can only be set up by the postmaster.  Loaded any other way
 * (for example by CREATE EXTENSION in a server that was not configured), it
 * raises an error that says how to fix it, so nothing half-works.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"

#include "settings.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

static void
elmo_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size());
}

static void
elmo_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	shmem_attach();
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
	WorkerView	w;

	shmem_set_database_ok(false);
	shmem_read_worker(&w);
	if (w.pid == 0)
		return;
	kill(w.pid, SIGTERM);
	for (int i = 0; i < 1000 && w.pid != 0; i++)	/* 10 s at most */
	{
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000);
		shmem_read_worker(&w);
	}
}

/* CREATE, ALTER (UPDATE, SET SCHEMA) or DROP of an extension: the worker looks again after COMMIT. */
static bool
changes_an_extension(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_CreateExtensionStmt:
		case T_AlterExtensionStmt:
			return true;
		case T_DropStmt:
			return ((DropStmt *) stmt)->removeType == OBJECT_EXTENSION;
		case T_AlterObjectSchemaStmt:
			return ((AlterObjectSchemaStmt *) stmt)->objectType == OBJECT_EXTENSION;
		default:
			return false;
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
			shmem_set_database_ok(true);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (elmo_shared != NULL && changes_an_extension(stmt))
		shmem_wake_worker_at_commit(true);
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

	settings_define();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = elmo_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = elmo_shmem_startup;

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = elmo_process_utility;

	register_worker();
}
