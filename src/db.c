/*
 * db.c — how the worker talks to PostgreSQL.
 *
 * Every transaction of the worker's goes through db_transaction(): SPI and a
 * snapshot around the work, and when the work raises, the error is reported
 * as PostgreSQL reports any error (all its fields, and a context line naming
 * what the worker was doing), remembered in short for elmo_status(), and the
 * transaction rolled back; the worker carries on.  Nothing here ever runs
 * inside libmicrohttpd's or libcurl's callbacks.
 *
 * The statements (statements.c) are planned once and kept.  PostgreSQL's plan
 * cache re-plans a kept plan when what it uses changes: a function dropped
 * and created again by DROP/CREATE EXTENSION, or the search_path the worker
 * points at the extension's schema.  Only a new extension version may change
 * the statements' text: db_use_extension() forgets every plan then.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "db.h"
#include "durability.h"
#include "shmem.h"

static SPIPlanPtr plans[STMT_COUNT];
static bool extension_0_1_0 = false;
static MemoryContext caller_cxt = NULL;	/* of the running db_transaction */
static bool missing_object = false;
static TimeoutId budget_timeout = MAX_TIMEOUTS; /* not registered yet */

/* ---------------------------------------------------------------- transactions */

static void
worker_error_context(void *arg)
{
	errcontext("elmo_oscp worker: %s", (const char *) arg);
}

/*
 * After an error caught in db_transaction: report it with all its fields
 * (SQLSTATE, detail, hint, context; never a token: none is ever put in a
 * query or a message), remember it in short, roll back.
 */
static void
report_and_abort(const char *what, MemoryContext cxt)
{
	ErrorData  *edata;
	char		buf[ELMO_ERRLEN];

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();

	snprintf(buf, sizeof(buf), "%s: %s", what, edata->message);
	shmem_set_last_error(buf);
	/* an undefined object: the extension may have gone away under us */
	if (edata->sqlerrcode == ERRCODE_UNDEFINED_FUNCTION ||
		edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
		missing_object = true;
	FreeErrorData(edata);
	RESUME_INTERRUPTS();
}

/*
 * Run work(arg) in a transaction of its own, shown in pg_stat_activity as
 * "elmo_oscp: <what>".  True when it committed.  The caller's memory context
 * is current again on return either way; db_keep() copies results into it.
 *
 * A cancel (pg_cancel_backend) counts only inside a transaction: between
 * transactions the worker holds it off, and one that came then had nothing
 * to cancel.  During COMMIT it can only end a wait for the synchronous
 * standbys (see durability.c).
 */
bool
db_transaction(const char *what, DbWork work, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint32		cancel_holdoff = QueryCancelHoldoffCount;
	ErrorContextCallback errcallback;
	char		activity[96];
	volatile bool ok = true;

	snprintf(activity, sizeof(activity), "elmo_oscp: %s", what);
	caller_cxt = cxt;
	QueryCancelPending = false;
	QueryCancelHoldoffCount = 0;
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		errcallback.callback = worker_error_context;
		errcallback.arg = (void *) what;
		errcallback.previous = error_context_stack;
		error_context_stack = &errcallback;
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		work(arg);
		SPI_finish();
		PopActiveSnapshot();
		HOLD_CANCEL_INTERRUPTS();
		durability_before_commit();
		CommitTransactionCommand();
		durability_after_commit();
		error_context_stack = errcallback.previous;
	}
	PG_CATCH();
	{
		durability_after_commit();
		report_and_abort(what, cxt);
		ok = false;
	}
	PG_END_TRY();
	QueryCancelHoldoffCount = cancel_holdoff;
	pgstat_report_activity(STATE_IDLE, NULL);
	caller_cxt = NULL;
	MemoryContextSwitchTo(cxt);
	return ok;
}

static void
budget_spent(void)
{
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Inside a transaction: run work(arg) in a subtransaction, cut short after
 * timeout_ms (0: no limit).  NULL when it succeeded; else the error (in the
 * caller's memory), the subtransaction rolled back, *timed_out telling
 * whether our timer cut it.  The timer is the worker's own: PostgreSQL's
 * statement timeout forgets that it fired while it raises the cancel, and
 * a cancel from pg_cancel_backend() must stay told apart from it.
 */
ErrorData *
db_subtransaction(DbWork work, void *arg, int timeout_ms, bool *timed_out)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	*timed_out = false;
	if (budget_timeout == MAX_TIMEOUTS)
		budget_timeout = RegisterTimeout(USER_TIMEOUT, budget_spent);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	if (timeout_ms > 0)
		enable_timeout_after(budget_timeout, timeout_ms);
	PG_TRY();
	{
		work(arg);
		if (timeout_ms > 0)
			disable_timeout(budget_timeout, true);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		if (timeout_ms > 0)
			disable_timeout(budget_timeout, true);
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	if (timeout_ms > 0 && get_timeout_indicator(budget_timeout, true))
	{
		if (edata != NULL)
			*timed_out = true;
		else
			QueryCancelPending = false; /* it fired as the work ended: our cancel, not a user's */
	}
	return edata;
}

/* A copy of s that outlives the running transaction (NULL stays NULL). */
char *
db_keep(const char *s)
{
	if (s == NULL)
		return NULL;
	return MemoryContextStrdup(caller_cxt ? caller_cxt : CurrentMemoryContext, s);
}

/* Did an error since the last call say that a table or function is missing? */
bool
db_take_missing_object(void)
{
	bool		missing = missing_object;

	missing_object = false;
	return missing;
}

/* ---------------------------------------------------------------- statements */

/* The extension was found (again), at this version: plan afresh. */
void
db_use_extension(const char *version)
{
	for (int i = 0; i < STMT_COUNT; i++)
	{
		if (plans[i] != NULL)
			SPI_freeplan(plans[i]);
		plans[i] = NULL;
	}
	extension_0_1_0 = (version != NULL && strcmp(version, "0.1.0") == 0);
}

static SPIPlanPtr
plan_for(StatementId id)
{
	if (plans[id] == NULL)
	{
		const Statement *s = &statements[id];
		const char *sql = statement_sql(id, extension_0_1_0);
		SPIPlanPtr	p = SPI_prepare(sql, s->nargs, (Oid *) s->argtypes);

		if (p == NULL)
			elog(ERROR, "elmo_oscp: cannot prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "elmo_oscp: SPI_keepplan failed for %s", s->name);
		plans[id] = p;
	}
	return plans[id];
}

/* Inside db_transaction: run a statement; the number of rows it returned. */
uint64
db_run(StatementId id, Datum *values, const char *nulls, long max_rows)
{
	int			rc = SPI_execute_plan(plan_for(id), values, nulls, false, max_rows);

	if (rc < 0)
		elog(ERROR, "elmo_oscp: %s failed: %s", statements[id].name, SPI_result_code_string(rc));
	return SPI_processed;
}

/* A column (from 1) of a row of what db_run returned. */
Datum
db_value(uint64 row, int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, isnull);
}

/* ... as text, in SPI's memory (gone at commit: db_keep() what must stay). */
char *
db_text(uint64 row, int column)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column);
}

/* The timestamp a statement without arguments returns; 0 for NULL or no row. */
TimestampTz
db_run_timestamp(StatementId id)
{
	bool		isnull;
	Datum		d;

	if (db_run(id, NULL, NULL, 1) != 1)
		return 0;
	d = db_value(0, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* ---------------------------------------------------------------- the extension */

/*
 * Inside a transaction: is elmo_oscp created in this database?  Then its
 * schema and version, in the current memory context.  Read from the catalog
 * by its unique index on the name, as CREATE EXTENSION itself looks.
 */
/* A catalog's rows whose name column equals name; by that index when one is given. */
static SysScanDesc
scan_by_name(Relation rel, AttrNumber name_column, Oid index, const char *name)
{
	ScanKeyData key;

	ScanKeyInit(&key, name_column, BTEqualStrategyNumber, F_NAMEEQ, CStringGetDatum(name));
	return systable_beginscan(rel, index, OidIsValid(index), NULL, 1, &key);
}

bool
db_find_extension(char **schema, char **version)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	scan = scan_by_name(rel, Anum_pg_extension_extname, ExtensionNameIndexId, "elmo_oscp");
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found)
	{
		bool		isnull;
		Datum		v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);

		if (schema)
			*schema = get_namespace_name(((Form_pg_extension) GETSTRUCT(tup))->extnamespace);
		if (version)
			*version = isnull ? NULL : TextDatumGetCString(v);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Inside a transaction: the database of this name (InvalidOid: none), and
 * whether it allows connections.  Read from the table itself, not its index:
 * a worker connected to no database cannot open a shared index whose cache
 * entry the server has not written yet (a fresh cluster, or after a crash),
 * while pg_database's table is always at hand.  It has a row per database,
 * so the scan costs nothing.
 */
Oid
db_find_database(const char *name, bool *allows_connections)
{
	Relation	rel = table_open(DatabaseRelationId, AccessShareLock);
	SysScanDesc scan = scan_by_name(rel, Anum_pg_database_datname, InvalidOid, name);
	HeapTuple	tup = systable_getnext(scan);
	Oid			oid = InvalidOid;

	if (HeapTupleIsValid(tup))
	{
		oid = ((Form_pg_database) GETSTRUCT(tup))->oid;
		*allows_connections = ((Form_pg_database) GETSTRUCT(tup))->datallowconn;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return oid;
}

/* ---------------------------------------------------------------- time */

/* Milliseconds from now until t, rounded up, at most a minute (a wait then
 * looks again); 0 when past. */
long
ms_until(TimestampTz t)
{
	TimestampTz now = GetCurrentTimestamp();

	if (t <= now)
		return 0;
	return (long) Min((t - now + 999) / 1000, (TimestampTz) 60000);
}

/* The shorter of two waits in ms, where -1 means "no limit". */
long
timeout_min(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}
