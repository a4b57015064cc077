/*
 * inbound.c — from a parked HTTP request to a committed row and an answer.
 *
 * Every request that finished during one MHD_run() shares one transaction
 * (group commit): each is received (validated and stored as it came, by
 * _elmo_receive), then applied in its own subtransaction (_elmo_apply: the
 * forecast rows, the CSMS's triggers, NOTIFY), all within one time budget,
 * elmo_oscp.apply_timeout, for the whole batch.  A failing apply rolls back
 * only its subtransaction; an apply the budget cuts short stays 'received'
 * and is applied after the answers went out.  Only after COMMIT is any
 * request answered 204.
 */
#include "elmo_oscp.h"

#include <stdlib.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

typedef enum ApplyResult
{
	APPLY_OK,
	APPLY_FAILED,
	APPLY_OUT_OF_TIME
} ApplyResult;

/* Per request, while its batch is processed. */
typedef struct Receipt
{
	HttpRequest *req;
	int			status;
	char	   *error;			/* JSON, palloc'd in the batch context */
	int64		message_id;		/* 0: nothing stored (error or duplicate) */
} Receipt;

static HttpRequest *pending_head = NULL;
static HttpRequest *pending_tail = NULL;
static int	pending_count = 0;
static TimestampTz next_retry_at = 0;	/* 0: look now */
static SPIPlanPtr plan_receive = NULL;

/*
 * When a batch ran out of apply budget (a slow CSMS trigger), the batches of
 * the next apply_timeout only receive and commit (unless the retry pass has
 * applied the backlog sooner): a burst spread over several batches is then
 * charged the budget once, not once per batch.
 */
static TimestampTz overloaded_until = 0;

/*
 * The hot path's statements, parsed and planned once per worker.  A saved
 * plan survives DROP/CREATE EXTENSION: the plan cache re-resolves names.
 */
static SPIPlanPtr
saved_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*slot = p;
	}
	return *slot;
}

void
inbound_park(HttpRequest *req)
{
	req->next = NULL;
	if (pending_tail)
		pending_tail->next = req;
	else
		pending_head = req;
	pending_tail = req;
	pending_count++;
}

bool
inbound_pending(void)
{
	return pending_head != NULL;
}

static void
answer_and_resume(HttpRequest *req, int status, const char *json)
{
	http_set_answer(req, status, json);
	http_resume(req);
}

/*
 * Apply one stored message in its own subtransaction, within [deadline].
 * Failures are recorded (and the CSMS told by NOTIFY in _elmo_apply_failed);
 * running out of time records nothing when [record_timeout] is false: the
 * message simply stays 'received'.
 */
static ApplyResult
apply_one(int64 message_id, TimestampTz deadline, bool record_timeout)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ApplyResult result = APPLY_OK;
	ErrorData  *volatile edata = NULL;
	volatile bool timed_out = false;
	long		remaining = (long) ((deadline - GetCurrentTimestamp()) / 1000);
	Datum		arg = Int64GetDatum(message_id);
	Oid			argtype = INT8OID;

	if (remaining <= 0)
		return APPLY_OUT_OF_TIME;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	enable_timeout_after(STATEMENT_TIMEOUT, (int) remaining);
	PG_TRY();
	{
		static SPIPlanPtr plan = NULL;

		SPI_execute_plan(saved_plan(&plan, "SELECT _elmo_apply($1)", 1, &argtype), &arg, NULL, false, 1);
		disable_timeout(STATEMENT_TIMEOUT, false);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		timed_out = get_timeout_indicator(STATEMENT_TIMEOUT, false);
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	/* a timer that fired between the apply's end and disable_timeout */
	QueryCancelPending = false;

	if (edata == NULL)
		return APPLY_OK;

	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && timed_out)
	{
		result = APPLY_OUT_OF_TIME;
		if (!record_timeout)
		{
			FreeErrorData(edata);
			return result;
		}
		edata->message = psprintf("applying took longer than elmo_oscp.apply_timeout (%d ms); the CSMS's triggers on capacity_forecast must be fast",
								  elmo_apply_timeout);
	}
	else
		result = APPLY_FAILED;

	{
		static SPIPlanPtr plan = NULL;
		Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
		Datum		vals[3];

		vals[0] = Int64GetDatum(message_id);
		vals[1] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
		vals[2] = CStringGetTextDatum(edata->message);

		SPI_execute_plan(saved_plan(&plan, "SELECT _elmo_apply_failed($1, $2, $3)", 3, types), vals, NULL, false, 1);
	}
	pg_atomic_fetch_add_u64(&elmo_shared->apply_failures, 1);
	ereport(WARNING,
			(errmsg("elmo_oscp: applying received message %lld failed; it is kept and will be retried",
					(long long) message_id),
			 errdetail("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode)),
			 errhint("See the view elmo_unapplied; fix the trigger, or call elmo_replay(%lld) or elmo_discard(%lld, reason).",
					 (long long) message_id, (long long) message_id)));
	FreeErrorData(edata);
	return result;
}

static char *
health_json(void)
{
	StringInfoData buf;
	bool		ready;

	SpinLockAcquire(&elmo_shared->mutex);
	ready = elmo_shared->extension_ready;
	SpinLockRelease(&elmo_shared->mutex);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"status\":\"ok\",\"version\":");
	escape_json(&buf, ELMO_OSCP_VERSION);
	appendStringInfoString(&buf, ",\"database\":");
	escape_json(&buf, elmo_database);
	appendStringInfo(&buf, ",\"extension_installed\":%s", ready ? "true" : "false");
	if (ready && SPI_execute("SELECT _elmo_health()::text", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char	   *h = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		appendStringInfo(&buf, ",\"registration\":%s", h ? h : "null");
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* Receive every request of [rc], apply within one budget, commit. */
static bool
run_batch(Receipt *rc, int n)
{
	volatile bool ok = true;
	bool		ready;
	volatile int stored = 0;
	volatile bool deferred = false;

	SpinLockAcquire(&elmo_shared->mutex);
	ready = elmo_shared->extension_ready;
	SpinLockRelease(&elmo_shared->mutex);

	PG_TRY();
	{
		TimestampTz deadline;

		elmo_xact_begin("elmo_oscp: receiving");

		for (int i = 0; i < n; i++)
		{
			HttpRequest *req = rc[i].req;
			Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID};
			Datum		vals[6];
			char		nulls[6] = "      ";
			char		rid[33];

			rc[i].message_id = 0;
			rc[i].error = NULL;
			if (strcmp(req->message, "health") == 0)
			{
				rc[i].status = 200;
				rc[i].error = health_json();
				continue;
			}
			if (!ready)
			{
				rc[i].status = 503;
				rc[i].error = psprintf("{\"message\":\"the elmo_oscp extension is not created in database %s\"}",
									   quote_identifier(elmo_database));
				continue;
			}
			if (req->request_id[0] == '\0')
			{
				/* register/handshake are never refused for a header: make one */
				elmo_make_request_id(rid);
				strlcpy(req->request_id, rid, sizeof(req->request_id));
			}
			vals[0] = CStringGetTextDatum(req->message);
			vals[1] = CStringGetTextDatum(req->method);
			vals[2] = CStringGetTextDatum(req->request_id);
			vals[3] = CStringGetTextDatum(req->correlation_id);
			if (req->correlation_id[0] == '\0')
				nulls[3] = 'n';
			vals[4] = CStringGetTextDatum(req->body);
			vals[5] = BoolGetDatum(req->used_current_token);
			if (SPI_execute_plan(saved_plan(&plan_receive,
											"SELECT status, error, message_id FROM _elmo_receive($1, $2, $3, $4, $5, $6)",
											6, types),
								 vals, nulls, false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "_elmo_receive returned no row");
			{
				HeapTuple	tup = SPI_tuptable->vals[0];
				TupleDesc	td = SPI_tuptable->tupdesc;
				bool		isnull;
				Datum		d;

				rc[i].status = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
				rc[i].error = SPI_getvalue(tup, td, 2);
				d = SPI_getbinval(tup, td, 3, &isnull);
				rc[i].message_id = isnull ? 0 : DatumGetInt64(d);
				if (rc[i].message_id)
					stored++;
			}
		}

		/* apply, each in its own subtransaction, one budget for the batch */
		pgstat_report_activity(STATE_RUNNING, "elmo_oscp: applying");
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), elmo_apply_timeout);
		for (int i = 0; i < n; i++)
		{
			ApplyResult r;

			if (rc[i].message_id == 0)
				continue;
			if (GetCurrentTimestamp() < overloaded_until)
			{
				deferred = true;	/* stays 'received', applied after the answers */
				continue;
			}
			r = apply_one(rc[i].message_id, deadline, false);
			/* deferred or failed: the retry pass must look again soon */
			if (r != APPLY_OK)
				deferred = true;
			if (r == APPLY_OUT_OF_TIME)
				overloaded_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), elmo_apply_timeout);
		}

		elmo_xact_commit();
	}
	PG_CATCH();
	{
		elmo_abort_after_error("receiving a request");
		ok = false;
	}
	PG_END_TRY();

	if (ok)
	{
		bool		retired = false;

		/* ELMO used our current token: the apply retired the previous one */
		for (int i = 0; i < n && routes_previous_token_live(); i++)
			retired |= (rc[i].message_id != 0 && rc[i].req->used_current_token);
		if (retired)
			elmo_wake_worker();
		pg_atomic_fetch_add_u64(&elmo_shared->received, stored);
		if (deferred)
			next_retry_at = 0;
	}
	return ok;
}

void
inbound_flush(void)
{
	HttpRequest *list = pending_head;
	int			n = pending_count;
	Receipt    *rc;
	int			i = 0;
	MemoryContext batch_cxt;
	MemoryContext old;

	pending_head = pending_tail = NULL;
	pending_count = 0;
	if (list == NULL)
		return;

	batch_cxt = AllocSetContextCreate(TopMemoryContext, "elmo_oscp inbound batch",
									  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(batch_cxt);
	rc = palloc0(sizeof(Receipt) * n);
	for (HttpRequest *r = list; r; r = r->next)
		rc[i++].req = r;

	/* at most elmo_oscp.batch_max requests per commit; each chunk answered at its commit */
	for (int first = 0; first < n; first += elmo_batch_max)
	{
		int			count = Min(elmo_batch_max, n - first);
		Receipt    *chunk = &rc[first];

		if (!run_batch(chunk, count))
		{
			/* one bad request must not cost the others their answer: one by one */
			for (i = 0; i < count; i++)
			{
				MemoryContextSwitchTo(batch_cxt);
				if (count == 1 || !run_batch(&chunk[i], 1))
				{
					chunk[i].status = 500;
					chunk[i].error = "{\"message\":\"internal error while storing the message; see the server log\"}";
				}
			}
		}
		MemoryContextSwitchTo(batch_cxt);

		for (i = 0; i < count; i++)
		{
			int			status = chunk[i].status;

			answer_and_resume(chunk[i].req, status, status == 204 ? NULL : chunk[i].error);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(batch_cxt);
}

/*
 * Apply what the budget deferred and retry what failed, one message per
 * transaction, never while a request waits for its answer.
 */
void
inbound_retry_applies(void)
{
	volatile int done = 0;

	if (next_retry_at != 0 && GetCurrentTimestamp() < next_retry_at)
		return;

	while (done < 16 && !inbound_pending())
	{
		volatile int64 id = 0;
		volatile TimestampTz next = 0;
		volatile bool more = false;

		PG_TRY();
		{
			elmo_xact_begin(NULL);
			id = 0;
			if (SPI_execute("SELECT _elmo_applies_due(1)", false, 1) == SPI_OK_SELECT && SPI_processed == 1)
			{
				bool		isnull;
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

				if (!isnull)
					id = DatumGetInt64(d);
			}
			if (id != 0)
			{
				pgstat_report_activity(STATE_RUNNING, "elmo_oscp: retrying an apply");
				apply_one(id, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), elmo_apply_timeout), true);
				more = true;
			}
			else
				next = elmo_spi_timestamp("SELECT _elmo_next_apply_at()");
			elmo_xact_commit();
		}
		PG_CATCH();
		{
			elmo_abort_after_error("retrying an apply");
			next_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
			return;
		}
		PG_END_TRY();

		if (!more)
		{
			TimestampTz cap;

			overloaded_until = 0;	/* nothing is waiting to be applied now */
			cap = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60000);

			next_retry_at = (next != 0 && next < cap) ? next : cap;
			return;
		}
		done++;
		/* let requests that arrived meanwhile go first */
		http_server_run();
	}
	next_retry_at = 0;
}

long
inbound_retry_timeout_ms(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (next_retry_at <= now)
		return 0;
	return (long) Min((next_retry_at - now) / 1000 + 1, (TimestampTz) 60000);
}
