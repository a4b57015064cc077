/*
 * inbound.c — from a completed HTTP request to a committed row and an answer.
 *
 * The requests the listener completed in one turn share one transaction
 * (group commit), at most elmo_oscp.batch_max of them: each is received
 * (validated and stored as it came, by _elmo_receive), then applied in its
 * own subtransaction (_elmo_apply: the forecast rows, the CSMS's triggers,
 * NOTIFY), all within one time budget, elmo_oscp.apply_timeout, for the
 * whole batch.  A message is stored already marked applied, so that applying
 * it does not write its row a second time (the largest single cost of a
 * forecast); a failing apply rolls back only its subtransaction and puts the
 * message back to 'received', as does an apply the budget cuts short, which
 * is applied after the answers went out.  Only after COMMIT is any request
 * resumed, and a 204 only once the commit is as durable as the cluster
 * promises (durability.c): so a 204 always means stored.  Every answer is
 * copied into the request's own memory when it is known: SPI's memory is
 * gone after the commit.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "db.h"
#include "durability.h"
#include "ids.h"
#include "inbound.h"
#include "settings.h"
#include "shmem.h"

typedef enum ApplyResult
{
	APPLY_OK,
	APPLY_FAILED,
	APPLY_OUT_OF_TIME
} ApplyResult;

/* One batch: its requests and what the transaction found for each. */
typedef struct Batch
{
	HttpRequest **reqs;
	int64	   *message_id;		/* 0: nothing stored (error or duplicate) */
	int			n;
	bool		extension_ready;
	bool		apply_now;		/* stored as applied, then applied (see batch_work) */
	int			stored;
	bool		deferred;		/* an apply was deferred or failed */
} Batch;

static TimestampTz next_retry_at = 0;	/* 0: look now */

/*
 * When a batch ran out of apply budget (a slow CSMS trigger), the batches of
 * the next apply_timeout only receive and commit (unless the retry pass has
 * applied the backlog sooner): a burst spread over several batches is then
 * charged the budget once, not once per batch.
 */
static TimestampTz overloaded_until = 0;

/* What one apply works on: the message, and whether it was stored as applied. */
typedef struct ApplyArg
{
	int64		message_id;
	bool		stored_applied;
} ApplyArg;

static void
apply_work(void *arg)
{
	ApplyArg   *a = (ApplyArg *) arg;
	Datum		vals[2] = {Int64GetDatum(a->message_id), BoolGetDatum(a->stored_applied)};

	db_run(STMT_APPLY, vals, NULL, 1);
}

/* A message stored as applied that is not: back to received. */
static void
apply_later(int64 message_id)
{
	Datum		id = Int64GetDatum(message_id);

	db_run(STMT_APPLY_LATER, &id, NULL, 1);
}

/* The apply's error in the log, with every field it came with, and what to do. */
static void
warn_apply_failed(int64 message_id, ErrorData *edata)
{
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("elmo_oscp: applying received message %lld failed; it is kept and will be retried",
					(long long) message_id),
			 errdetail_internal("%s (SQLSTATE %s)%s%s", edata->message, unpack_sql_state(edata->sqlerrcode),
								edata->detail ? "\n" : "", edata->detail ? edata->detail : ""),
			 errhint("%s%sSee the view elmo_unapplied; fix the trigger, or call elmo_replay(%lld) or elmo_discard(%lld, reason).",
					 edata->hint ? edata->hint : "", edata->hint ? " " : "",
					 (long long) message_id, (long long) message_id),
			 edata->context ? errcontext("%s", edata->context) : 0));
}

/*
 * Inside a transaction: apply one stored message in its own subtransaction,
 * within [deadline].  Failures are recorded (and the CSMS told by NOTIFY in
 * _elmo_apply_failed); running out of time records nothing when
 * [record_timeout] is false: the message simply stays 'received'.
 * [stored_applied]: the message was stored as applied by this transaction;
 * unless the apply succeeds it goes back to 'received' first.
 */
static ApplyResult
apply_one(int64 message_id, TimestampTz deadline, bool record_timeout, bool stored_applied)
{
	long		remaining = ms_until(deadline);
	ApplyResult result = APPLY_FAILED;
	ApplyArg	arg = {message_id, stored_applied};
	ErrorData  *edata;
	bool		timed_out;
	Datum		vals[3];

	if (remaining <= 0)
	{
		if (stored_applied)
			apply_later(message_id);
		return APPLY_OUT_OF_TIME;
	}
	edata = db_subtransaction(apply_work, &arg, (int) remaining, &timed_out);
	if (edata == NULL)
		return APPLY_OK;

	if (stored_applied)
		apply_later(message_id);
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
	vals[0] = Int64GetDatum(message_id);
	vals[1] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	vals[2] = CStringGetTextDatum(edata->message);
	db_run(STMT_APPLY_FAILED, vals, NULL, 1);
	pg_atomic_fetch_add_u64(&elmo_shared->apply_failures, 1);
	warn_apply_failed(message_id, edata);
	FreeErrorData(edata);
	return result;
}

/*
 * GET /health: liveness for a load balancer, and nothing more.  A reverse
 * proxy may expose it to anyone, so it tells nothing about this CSMS (no
 * version, database or registration): readiness is elmo_status()'s.
 */
static void
answer_health(HttpRequest *req)
{
	http_request_set_answer(req, 200, "{\"status\":\"ok\"}");
}

static void
answer_not_ready(HttpRequest *req)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\":");
	escape_json(&buf, psprintf("the elmo_oscp extension is not created in database %s", elmo_database));
	appendStringInfoChar(&buf, '}');
	http_request_set_answer(req, 503, buf.data);
}

/*
 * A body that cannot be stored as text is answered 400 here: JSON is UTF-8,
 * and a NUL byte would silently cut the text short.  True when it was.
 */
static bool
refuse_unreadable_body(HttpRequest *req)
{
	int			valid = pg_encoding_verifymbstr(PG_UTF8, req->body, (int) req->body_len);
	StringInfoData buf;

	if (valid >= (int) req->body_len)
		return false;
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\":");
	escape_json(&buf, psprintf(req->body[valid] == '\0' ? "body: contains a NUL byte (at byte offset %d)"
							   : "body: is not valid UTF-8 (at byte offset %d)", valid));
	appendStringInfoChar(&buf, '}');
	http_request_set_answer(req, 400, buf.data);
	return true;
}

/* _elmo_receive for one request: its answer set, the stored message's id returned. */
static int64
receive_one(HttpRequest *req, bool apply_now)
{
	RequestInfo *info = &req->info;
	Datum		vals[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int			status;
	Datum		id;

	if (refuse_unreadable_body(req))
		return 0;
	if (info->request_id[0] == '\0')
	{
		/* register/handshake are never refused for a header: make one */
		char		rid[ELMO_REQUEST_ID_LEN + 1];

		ids_request_id(rid);
		strlcpy(info->request_id, rid, sizeof(info->request_id));
		if (info->request_id_unusable)
			ereport(LOG,
					(errmsg("elmo_oscp: %s %s came with an X-Request-ID longer than %d characters or not printable ASCII; stored under the generated X-Request-ID %s",
							info->method, info->message, ROUTE_ID_MAX, rid)));
	}
	vals[0] = CStringGetTextDatum(info->message);
	vals[1] = CStringGetTextDatum(info->method);
	vals[2] = CStringGetTextDatum(info->request_id);
	vals[3] = CStringGetTextDatum(info->correlation_id);
	if (info->correlation_id[0] == '\0')
		nulls[3] = 'n';
	vals[4] = CStringGetTextDatum(req->body);
	vals[5] = BoolGetDatum(info->used_current_token);
	vals[6] = BoolGetDatum(apply_now);
	if (db_run(STMT_RECEIVE, vals, nulls, 1) != 1)
		elog(ERROR, "_elmo_receive returned no row");
	status = DatumGetInt32(db_value(0, 1, &isnull));
	http_request_set_answer(req, status, status == 204 ? NULL : db_text(0, 2));
	id = db_value(0, 3, &isnull);
	return isnull ? 0 : DatumGetInt64(id);
}

/* The transaction of a batch: receive every request, apply within one budget. */
static void
batch_work(void *arg)
{
	Batch	   *b = (Batch *) arg;
	TimestampTz deadline;

	b->stored = 0;
	b->deferred = false;

	/*
	 * Unless a slow CSMS trigger made the worker defer its applies, each
	 * message is stored as applied and applied right after: one version of its
	 * row, not a second one written by the apply.  What is not applied after
	 * all goes back to 'received' within this transaction (apply_one).
	 */
	b->apply_now = GetCurrentTimestamp() >= overloaded_until;
	for (int i = 0; i < b->n; i++)
	{
		HttpRequest *req = b->reqs[i];

		b->message_id[i] = 0;
		if (strcmp(req->info.message, "health") == 0)
			answer_health(req);
		else if (!b->extension_ready)
			answer_not_ready(req);
		else if ((b->message_id[i] = receive_one(req, b->apply_now)) != 0)
			b->stored++;
	}

	pgstat_report_activity(STATE_RUNNING, "elmo_oscp: applying");
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), elmo_apply_timeout);
	for (int i = 0; i < b->n; i++)
	{
		ApplyResult r;

		if (b->message_id[i] == 0)
			continue;
		if (!b->apply_now)
		{
			b->deferred = true; /* stays 'received', applied after the answers */
			continue;
		}
		r = apply_one(b->message_id[i], deadline, false, true);
		/* deferred or failed: the retry pass must look again soon */
		if (r != APPLY_OK)
			b->deferred = true;
		if (r == APPLY_OUT_OF_TIME)
			overloaded_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), elmo_apply_timeout);
	}
}

/*
 * The commit is not as durable as the cluster promises (durability.c): no
 * request of the batch that would be answered 204 is answered at all.  ELMO
 * sees a failure, never an acknowledgement a failover could undo.
 */
static void
withhold_acknowledgements(Batch *b, CommitDurability d)
{
	StringInfoData ids;
	int			withheld = 0;

	initStringInfo(&ids);
	for (int i = 0; i < b->n; i++)
	{
		if (b->reqs[i]->status != 204)
			continue;
		http_request_drop(b->reqs[i]);
		if (withheld < 10)
			appendStringInfo(&ids, "%s%s", withheld ? ", " : "", b->reqs[i]->info.request_id);
		withheld++;
	}
	if (withheld == 0)
		return;
	ereport(WARNING,
			(errmsg("elmo_oscp: %d requests closed without an answer: %s",
					withheld, durability_reason(d)),
			 errdetail("Their messages are committed on this server, but a failover to a standby that lacks them would lose them: ELMO is not told they are stored and counts them as failed. X-Request-ID: %s%s.",
					   ids.data, withheld > 10 ? ", ..." : ""),
			 errhint("See pg_stat_replication and synchronous_standby_names.")));
}

/* One transaction for b; true when it committed. */
static bool
run_batch(Batch *b)
{
	bool		retired = false;
	CommitDurability d;

	if (!db_transaction("receiving", batch_work, b))
		return false;
	d = durability_of_last_commit();
	if (d != COMMIT_DURABLE)
		withhold_acknowledgements(b, d);
	/* ELMO used our current token: the apply retired the previous one */
	for (int i = 0; i < b->n; i++)
		retired |= (b->message_id[i] != 0 && b->reqs[i]->info.used_current_token &&
					b->reqs[i]->info.previous_token_live);
	if (retired)
		shmem_wake_worker();
	pg_atomic_fetch_add_u64(&elmo_shared->received, b->stored);
	if (b->deferred)
		next_retry_at = 0;
	return true;
}

/*
 * Store and answer every request of the list (the listener's completed
 * requests, in the order they came), batch_max per commit.  Every request is
 * answered and resumed.
 */
void
inbound_handle(HttpRequest *list, int count, bool extension_ready)
{
	HttpRequest **reqs = palloc(sizeof(HttpRequest *) * count);
	int64	   *ids = palloc(sizeof(int64) * count);
	int			n = 0;

	for (HttpRequest *r = list; r != NULL && n < count; r = r->next)
		reqs[n++] = r;

	for (int first = 0; first < n; first += elmo_batch_max)
	{
		Batch		b = {&reqs[first], &ids[first], Min(elmo_batch_max, n - first), extension_ready};

		if (!run_batch(&b))
		{
			/* one bad request must not cost the others their answer: one by one */
			for (int i = 0; i < b.n; i++)
			{
				Batch		one = {&b.reqs[i], &b.message_id[i], 1, extension_ready};

				if (b.n == 1 || !run_batch(&one))
					http_request_set_answer(b.reqs[i], 500,
											"{\"message\":\"internal error while storing the message; see the server log\"}");
			}
		}
		for (int i = 0; i < b.n; i++)
			http_request_resume(b.reqs[i]);
	}
}

/*
 * Apply what the budget deferred and retry what failed, one message per
 * transaction.  The worker calls it only while no request waits for its
 * answer.
 */
typedef struct RetryWork
{
	bool		applied;
	TimestampTz next;
} RetryWork;

static void
retry_work(void *arg)
{
	RetryWork  *r = (RetryWork *) arg;
	Datum		one = Int32GetDatum(1);
	bool		isnull;
	int64		id = 0;

	if (db_run(STMT_APPLIES_DUE, &one, NULL, 1) == 1)
	{
		Datum		d = db_value(0, 1, &isnull);

		if (!isnull)
			id = DatumGetInt64(d);
	}
	if (id != 0)
	{
		apply_one(id, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), elmo_apply_timeout), true, false);
		r->applied = true;
	}
	else
		r->next = db_run_timestamp(STMT_NEXT_APPLY_AT);
}

bool
inbound_retry_due(void)
{
	return next_retry_at == 0 || GetCurrentTimestamp() >= next_retry_at;
}

/* One message applied (again): true when there may be more right now. */
bool
inbound_retry_one(void)
{
	RetryWork	r = {false, 0};
	TimestampTz cap;

	if (!db_transaction("retrying an apply", retry_work, &r))
	{
		next_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
		return false;
	}
	if (r.applied)
	{
		next_retry_at = 0;
		return true;
	}
	overloaded_until = 0;		/* nothing is waiting to be applied now */
	cap = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60000);
	next_retry_at = (r.next != 0 && r.next < cap) ? r.next : cap;
	return false;
}

long
inbound_retry_timeout_ms(void)
{
	return ms_until(next_retry_at);
}
