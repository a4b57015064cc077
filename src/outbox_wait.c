/*
 * outbox_wait.c — elmo_wait(id, timeout): wait for one outgoing message's outcome.
 *
 * Reads the message's state with a fresh snapshot each time (READ COMMITTED)
 * and sleeps on the condition variable the sender broadcasts after every
 * batch of recorded outcomes.  Returns 'delivered'; raises SQLSTATE OS001
 * ("elmo message failed", DETAIL = the last HTTP status and ELMO's message)
 * when it failed; on timeout returns the current state (queued, sending,
 * waiting_for_handshake, held).
 */
#include "elmo_oscp.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* custom SQLSTATE class "OS" (OSCP): a message to ELMO failed */
#define ERRCODE_ELMO_MESSAGE_FAILED MAKE_SQLSTATE('O','S','0','0','1')

PG_FUNCTION_INFO_V1(elmo_wait);

Datum
elmo_wait(PG_FUNCTION_ARGS)
{
	int64		id;
	int64		timeout_us = 10 * USECS_PER_SEC;
	TimestampTz deadline;
	MemoryContext loop_cxt;
	char	   *state = NULL;
	char	   *result;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("elmo_wait needs a message id"),
				 errhint("Pass the id returned by the function that queued the message, for example elmo_report_usage().")));
	id = PG_GETARG_INT64(0);
	if (!PG_ARGISNULL(1))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(1);
		double		us = (double) iv->time +
			((double) iv->day + (double) iv->month * DAYS_PER_MONTH) * USECS_PER_DAY;

		timeout_us = us <= 0 ? 0 : (us > (double) 365 * USECS_PER_DAY ? 365 * USECS_PER_DAY : (int64) us);
	}
	if (elmo_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("elmo_oscp is not loaded through shared_preload_libraries"),
				 errdetail("No worker delivers the message."),
				 errhint("Add elmo_oscp to shared_preload_libraries and restart the server.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("elmo_wait cannot see the worker's progress in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The transaction's snapshot never shows the outcome the worker records."),
				 errhint("Call elmo_wait in a READ COMMITTED transaction (the default).")));

	deadline = GetCurrentTimestamp() + timeout_us;
	args[0] = Int64GetDatum(id);
	SPI_connect();
	loop_cxt = AllocSetContextCreate(CurrentMemoryContext, "elmo_wait", ALLOCSET_SMALL_SIZES);
	ConditionVariablePrepareToSleep(&elmo_shared->outbox_cv);
	for (;;)
	{
		MemoryContext old;
		HeapTuple	tup;
		TupleDesc	desc;
		bool		isnull;
		TransactionId xmin;
		TimestampTz now;
		long		ms;

		MemoryContextReset(loop_cxt);
		old = MemoryContextSwitchTo(loop_cxt);
		if (SPI_execute_with_args("SELECT state, last_status, last_error, xmin FROM elmo_outbox WHERE id = $1",
								  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "elmo_wait: could not read elmo_outbox");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("no message " INT64_FORMAT " in elmo_outbox", id),
					 errdetail("It was never queued, its transaction has not committed, or retention removed it."),
					 errhint("Pass the id returned by the function that queued the message, after that transaction committed.")));
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 4, &isnull));
		if (TransactionIdIsCurrentTransactionId(xmin))
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
		MemoryContextSwitchTo(old);
		if (strcmp(state, "delivered") == 0)
			break;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		ms = (long) Min((deadline - now + 999) / 1000, (TimestampTz) 3600 * 1000);
		(void) ConditionVariableTimedSleep(&elmo_shared->outbox_cv, ms, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	result = SPI_palloc(strlen(state) + 1);
	strcpy(result, state);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}
