/*
 * elmo_oscp.c — module entry: settings, shared memory, the background worker
 * and the hooks (DROP DATABASE and extension DDL here; the drop guard and
 * the log filter in their own files), set up from _PG_init.
 *
 * The library must come through shared_preload_libraries: the worker and its
 * shared memory can only be set up by the postmaster.  Loaded any other way
 * (for example by CREATE EXTENSION in a server that was not configured), it
 * raises an error that says how to fix it, so nothing half-works.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"

#include "compat.h"
#include "drop_guard.h"
#include "log_filter.h"
#include "settings.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static object_access_hook_type prev_object_access = NULL;
static bool dropping_our_database = false;

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

/* The DROP DATABASE that stopped the worker ended: committed or rolled back. */
static void
drop_xact_callback(XactEvent event, void *arg)
{
	if (!dropping_our_database)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
			shmem_set_database_dropping(false, event == XACT_EVENT_COMMIT);
			dropping_our_database = false;
			break;
		default:
			break;
	}
}

/*
 * DROP DATABASE of the database the worker serves must not fail because the
 * worker is connected to it.  PostgreSQL calls this hook once the caller is
 * known to own the database, outside a transaction block, and before it
 * looks for sessions connected to it: tell the worker to stay out (it then
 * waits for the database without connecting) and wait until it has left.
 * Its exit broadcasts the condition variable.  Any DROP that fails before
 * this point (a transaction block, a role without the right) leaves the
 * worker alone.
 */
static void
stop_worker_for_drop(void)
{
	static bool callback_registered = false;
	WorkerView	w;

	if (!callback_registered)
	{
		RegisterXactCallback(drop_xact_callback, NULL);
		callback_registered = true;
	}
	shmem_set_database_dropping(true, false);
	dropping_our_database = true;
	shmem_read_worker(&w);
	if (w.pid == 0)
		return;
	kill(w.pid, SIGTERM);
	if (!shmem_wait_worker_gone(10000))
		ereport(WARNING,
				(errmsg("elmo_oscp: the worker did not leave database \"%s\" within 10 s", elmo_database)));
}

static void
elmo_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == DatabaseRelationId && elmo_shared != NULL &&
		objectId == get_database_oid(elmo_database, true))
		stop_worker_for_drop();
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

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

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
	prev_object_access = object_access_hook;
	object_access_hook = elmo_object_access;
	drop_guard_install();
	log_filter_install();

	register_worker();
}
