/*
 * sql_functions.c — the C-language SQL functions behind the SQL API:
 * waking the worker at commit, tokens and request ids from
 * pg_strong_random, and the worker's view of itself for elmo_status().
 */
#include "elmo_oscp.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(elmo_wake);
PG_FUNCTION_INFO_V1(elmo_kick);
PG_FUNCTION_INFO_V1(elmo_random_token);
PG_FUNCTION_INFO_V1(elmo_request_id);
PG_FUNCTION_INFO_V1(elmo_worker_info);

static bool wake_at_commit = false;
static bool callback_registered = false;

static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				elmo_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

static void
wake_worker_at_commit(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * Raise unless messages queued here can ever be delivered; then make sure
 * the worker is woken the moment this transaction commits (not polled).
 */
Datum
elmo_wake(PG_FUNCTION_ARGS)
{
	char	   *dbname;

	if (!elmo_loaded_by_preload())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("elmo_oscp is not loaded through shared_preload_libraries"),
				 errdetail("No worker would ever deliver or receive ELMO messages."),
				 errhint("Add elmo_oscp to shared_preload_libraries and restart the server.")));
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

	wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* Wake the worker at commit, no questions asked (the end of CREATE EXTENSION). */
Datum
elmo_kick(PG_FUNCTION_ARGS)
{
	if (elmo_shared == NULL)
		PG_RETURN_VOID();
	wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* 48 random bytes as base64url without padding: 64 characters. */
Datum
elmo_random_token(PG_FUNCTION_ARGS)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint8		raw[48];
	char		out[65];
	int			o = 0;

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random token")));
	for (int i = 0; i < 48; i += 3)
	{
		uint32		v = ((uint32) raw[i] << 16) | ((uint32) raw[i + 1] << 8) | raw[i + 2];

		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = alphabet[(v >> 6) & 63];
		out[o++] = alphabet[v & 63];
	}
	out[o] = '\0';
	explicit_bzero(raw, sizeof(raw));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* 32 characters of [0-9A-Z], uniformly (rejection sampling). */
void
elmo_make_request_id(char *out)
{
	static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
	int			o = 0;

	while (o < 32)
	{
		uint8		raw[48];

		if (!pg_strong_random(raw, sizeof(raw)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random request id")));
		for (int i = 0; i < 48 && o < 32; i++)
			if (raw[i] < 252)	/* 252 = 7 * 36 */
				out[o++] = alphabet[raw[i] % 36];
	}
	out[32] = '\0';
}

Datum
elmo_request_id(PG_FUNCTION_ARGS)
{
	char		out[33];

	elmo_make_request_id(out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

Datum
elmo_worker_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[18];
	bool		nulls[18];
	pid_t		pid;
	TimestampTz started,
				err_at;
	bool		listening,
				tls;
	char		address[64];
	int			port;
	char		last_error[ELMO_ERRLEN];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (elmo_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("elmo_oscp is not loaded through shared_preload_libraries"),
				 errhint("Add elmo_oscp to shared_preload_libraries and restart the server.")));

	SpinLockAcquire(&elmo_shared->mutex);
	pid = elmo_shared->worker_pid;
	started = elmo_shared->worker_started_at;
	listening = elmo_shared->listening;
	tls = elmo_shared->tls;
	strlcpy(address, elmo_shared->bound_address, sizeof(address));
	port = elmo_shared->bound_port;
	strlcpy(last_error, elmo_shared->last_error, sizeof(last_error));
	err_at = elmo_shared->last_error_at;
	SpinLockRelease(&elmo_shared->mutex);

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum(pid);
	nulls[0] = (pid == 0);
	values[1] = TimestampTzGetDatum(started);
	nulls[1] = (pid == 0);
	values[2] = BoolGetDatum(pid != 0 && listening);
	values[3] = CStringGetTextDatum(address);
	nulls[3] = !listening;
	values[4] = Int32GetDatum(port);
	nulls[4] = !listening;
	values[5] = BoolGetDatum(tls);
	for (int i = 1; i <= 5; i++)
		values[5 + i] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->requests[i]));
	values[11] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->requests[0]));
	values[12] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->received));
	values[13] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->sent));
	values[14] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->send_failures));
	values[15] = Int64GetDatum((int64) pg_atomic_read_u64(&elmo_shared->apply_failures));
	values[16] = CStringGetTextDatum(last_error);
	nulls[16] = (last_error[0] == '\0');
	values[17] = TimestampTzGetDatum(err_at);
	nulls[17] = (last_error[0] == '\0');

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
