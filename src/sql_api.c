/*
 * sql_api.c — the C-language functions the install script declares: waking
 * the worker at commit (also as a trigger), tokens and request ids from pg_strong_random, the
 * worker's view of itself for elmo_status(), and elmo_wait().  They run in
 * any backend, inside its own transaction.
 *
 * A newer library may run under the SQL of an older release (between a
 * package upgrade and ALTER EXTENSION UPDATE): a symbol the SQL declares keeps
 * its arguments and result; a change gets a new symbol.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "db.h"
#include "ids.h"
#include "settings.h"
#include "shmem.h"
#include "statements.h"

/* custom SQLSTATE class "OS" (OSCP): a message to ELMO failed */
#define ERRCODE_ELMO_MESSAGE_FAILED MAKE_SQLSTATE('O','S','0','0','1')

PG_FUNCTION_INFO_V1(elmo_wake);
PG_FUNCTION_INFO_V1(elmo_kick);
PG_FUNCTION_INFO_V1(elmo_wake_trigger);
PG_FUNCTION_INFO_V1(elmo_random_token);
PG_FUNCTION_INFO_V1(elmo_request_id);
PG_FUNCTION_INFO_V1(elmo_worker_info);
PG_FUNCTION_INFO_V1(elmo_wait);
PG_FUNCTION_INFO_V1(elmo_worker_state);
PG_FUNCTION_INFO_V1(elmo_note_error);
PG_FUNCTION_INFO_V1(elmo_capacity_due);
PG_FUNCTION_INFO_V1(elmo_capacity_recheck);

static void
require_preloaded(const char *detail)
{
	if (elmo_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("elmo_oscp is not loaded through shared_preload_libraries"),
				 detail ? errdetail("%s", detail) : 0,
				 errhint("Add elmo_oscp to shared_preload_libraries and restart the server.")));
}

/*
 * _elmo_wake(): raise unless messages queued here can ever be delivered;
 * then make sure the worker is woken the moment this transaction commits.
 */
Datum
elmo_wake(PG_FUNCTION_ARGS)
{
	char	   *dbname;

	require_preloaded("No worker would ever deliver or receive ELMO messages.");
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("elmo_oscp functions cannot run on a standby"),
				 errhint("Call them on the primary; the worker runs there.")));
	dbname = get_database_name(MyDatabaseId);
	if (dbname == NULL || strcmp(dbname, elmo_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("elmo_oscp serves database \"%s\", not \"%s\"", elmo_database,
						dbname ? dbname : "?"),
				 errdetail("The worker only reads the queue of the database named by elmo_oscp.database."),
				 errhint("Connect to database \"%s\", or set elmo_oscp.database and restart the server.",
						 elmo_database)));

	shmem_wake_worker_at_commit(false);
	PG_RETURN_VOID();
}

/* _elmo_kick(): wake the worker at commit, no questions asked (the end of CREATE EXTENSION). */
Datum
elmo_kick(PG_FUNCTION_ARGS)
{
	if (elmo_shared != NULL)
		shmem_wake_worker_at_commit(false);
	PG_RETURN_VOID();
}

/*
 * _elmo_wake_trigger(): a statement trigger that wakes the worker at commit,
 * for rows that arrive without our functions (a restore's COPY).
 */
Datum
elmo_wake_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("_elmo_wake_trigger() is a trigger function")));
	if (elmo_shared != NULL)
		shmem_wake_worker_at_commit(false);
	return PointerGetDatum(NULL);
}

Datum
elmo_random_token(PG_FUNCTION_ARGS)
{
	char		out[ELMO_TOKEN_LEN + 1];
	text	   *t;

	ids_token(out);
	t = cstring_to_text(out);
	explicit_bzero(out, sizeof(out));
	PG_RETURN_TEXT_P(t);
}

Datum
elmo_request_id(PG_FUNCTION_ARGS)
{
	char		out[ELMO_REQUEST_ID_LEN + 1];

	ids_request_id(out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* _elmo_worker_info(): 18 columns, as the install script declares them. */
Datum
elmo_worker_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[18];
	bool		nulls[18];
	WorkerView	w;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	require_preloaded(NULL);
	shmem_read_worker(&w);

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum(w.pid);
	nulls[0] = (w.pid == 0);
	values[1] = TimestampTzGetDatum(w.started_at);
	nulls[1] = (w.pid == 0);
	values[2] = BoolGetDatum(w.pid != 0 && w.listening);
	values[3] = CStringGetTextDatum(w.address);
	nulls[3] = !w.listening;
	values[4] = Int32GetDatum(w.port);
	nulls[4] = !w.listening;
	values[5] = BoolGetDatum(w.tls);
	for (int i = 1; i <= 5; i++)
		values[5 + i] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->requests[i]));
	values[11] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->requests[0]));
	values[12] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->received));
	values[13] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->sent));
	values[14] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->send_failures));
	values[15] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->apply_failures));
	values[16] = CStringGetTextDatum(w.last_error);
	nulls[16] = (w.last_error[0] == '\0');
	values[17] = TimestampTzGetDatum(w.last_error_at);
	nulls[17] = (w.last_error[0] == '\0');

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * _elmo_worker_state(): what 0.1.0's _elmo_worker_info() does not have:
 * ELMO's reachability as deliveries show it.
 */
Datum
elmo_worker_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	ReachView	r;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	require_preloaded(NULL);
	shmem_read_reach(&r);
	values[0] = BoolGetDatum(r.reachable);
	values[1] = Int32GetDatum(r.failed_deliveries);
	values[2] = TimestampTzGetDatum(r.first_failure_at);
	nulls[2] = r.reachable || r.first_failure_at == 0;
	values[3] = TimestampTzGetDatum(r.last_reached_at);
	nulls[3] = (r.last_reached_at == 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* _elmo_note_error(text): a failure the SQL side found, as elmo_status()'s last_error. */
Datum
elmo_note_error(PG_FUNCTION_ARGS)
{
	if (elmo_shared != NULL && !PG_ARGISNULL(0))
		shmem_set_last_error(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* _elmo_capacity_due(at): capacity_in_force changes next at [at] (from commit on). */
Datum
elmo_capacity_due(PG_FUNCTION_ARGS)
{
	if (elmo_shared != NULL)
		shmem_capacity_due_at_commit(PG_GETARG_TIMESTAMPTZ(0));
	PG_RETURN_VOID();
}

/* _elmo_capacity_recheck(): refresh every group of capacity_in_force after commit. */
Datum
elmo_capacity_recheck(PG_FUNCTION_ARGS)
{
	if (elmo_shared != NULL)
		shmem_capacity_recheck_at_commit();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------- elmo_wait */

/* The timeout in µs: 0 reads the state once; a negative one is a mistake. */
static int64
wait_timeout_us(Interval *iv)
{
	double		us = (double) iv->time +
		((double) iv->day + (double) iv->month * DAYS_PER_MONTH) * USECS_PER_DAY;

	if (us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("elmo_wait's timeout must not be negative, got %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errdetail("It is how long to wait for the message's outcome."),
				 errhint("Omit it to wait up to 10 s, or pass for example '30s'; '0' reads the state without waiting.")));
	return us > (double) 365 * USECS_PER_DAY ? 365 * USECS_PER_DAY : (int64) us;
}

static void
check_wait_allowed(void)
{
	require_preloaded("No worker delivers the message.");
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("elmo_wait cannot see the worker's progress in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The transaction's snapshot never shows the outcome the worker records."),
				 errhint("Call elmo_wait in a READ COMMITTED transaction (the default).")));
}

/*
 * The message's state now (a fresh snapshot each time: READ COMMITTED).
 * Raises when there is no such message, when it was queued by this very
 * transaction (the worker cannot see it yet), and when it failed.
 */
static char *
outcome_now(const char *sql, int64 id)
{
	Oid			argtype = INT8OID;
	Datum		arg = Int64GetDatum(id);
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *state;

	if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 1) < 0)
		elog(ERROR, "elmo_wait: could not read the outbox");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no message " INT64_FORMAT " in elmo_outbox", id),
				 errdetail("It was never queued, its transaction has not committed, or retention removed it."),
				 errhint("Pass the id returned by the function that queued the message, after that transaction committed.")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (TransactionIdIsCurrentTransactionId(DatumGetTransactionId(SPI_getbinval(tup, desc, 4, &isnull))))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("message " INT64_FORMAT " was queued in this transaction", id),
				 errdetail("The worker cannot see it, and sends nothing, before this transaction commits."),
				 errhint("COMMIT first, then call elmo_wait(" INT64_FORMAT ").", id)));
	state = SPI_getvalue(tup, desc, 1);
	if (strcmp(state, "failed") == 0)
	{
		char	   *status = SPI_getvalue(tup, desc, 2);
		char	   *error = SPI_getvalue(tup, desc, 3);

		ereport(ERROR,
				(errcode(ERRCODE_ELMO_MESSAGE_FAILED),
				 errmsg("message " INT64_FORMAT " to ELMO failed", id),
				 errdetail("%s", error ? error : (status ? psprintf("HTTP %s", status) : "no answer")),
				 errhint("See elmo_outbox_status for the message and elmo_registration_status for the registration.")));
	}
	return state;
}

/*
 * elmo_wait(id, timeout): sleep on the condition variable the sender
 * broadcasts after each batch of recorded outcomes, until the message is
 * delivered (returns 'delivered'), failed (raises SQLSTATE OS001 with ELMO's
 * answer), or the timeout passed (returns the current state).
 */
Datum
elmo_wait(PG_FUNCTION_ARGS)
{
	int64		id;
	int64		timeout_us = 10 * USECS_PER_SEC;
	TimestampTz deadline;
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext loop_cxt;
	char	   *version = NULL;
	const char *sql;
	char	   *state;
	text	   *result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("elmo_wait needs a message id"),
				 errhint("Pass the id returned by the function that queued the message, for example elmo_report_usage().")));
	id = PG_GETARG_INT64(0);
	if (!PG_ARGISNULL(1))
		timeout_us = wait_timeout_us(PG_GETARG_INTERVAL_P(1));
	check_wait_allowed();

	(void) db_find_extension(NULL, &version);
	sql = statement_sql(STMT_OUTBOX_OUTCOME, version != NULL && strcmp(version, "0.1.0") == 0);
	deadline = GetCurrentTimestamp() + timeout_us;
	SPI_connect();
	loop_cxt = AllocSetContextCreate(CurrentMemoryContext, "elmo_wait", ALLOCSET_SMALL_SIZES);
	ConditionVariablePrepareToSleep(&elmo_shared->outbox_cv);
	for (;;)
	{
		MemoryContext old;

		MemoryContextReset(loop_cxt);
		old = MemoryContextSwitchTo(loop_cxt);
		state = outcome_now(sql, id);
		MemoryContextSwitchTo(old);
		if (strcmp(state, "delivered") == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			break;
		(void) ConditionVariableTimedSleep(&elmo_shared->outbox_cv, ms_until(deadline), PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	/* the result must outlive SPI's memory */
	MemoryContextSwitchTo(caller_cxt);
	result = cstring_to_text(state);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}
