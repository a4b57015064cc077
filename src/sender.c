/*
 * sender.c — delivers the outbox to ELMO: libcurl multi on the worker's thread.
 *
 * libcurl (http_client.c) runs in its socket-action mode on a private epoll
 * set (sender_epoll_fd(), which the worker adds to its WaitEventSet).  This
 * file is the outbox side of it.  Each sender_run():
 *   1. drives curl: ready sockets, and the timeout when it has passed;
 *   2. harvests finished transfers and records every outcome in ONE
 *      transaction (_elmo_record), then wakes elmo_wait() callers;
 *   3. claims more due messages (_elmo_claim) in one short transaction when
 *      something may have become due, and hands them to curl after COMMIT.
 * No transaction is open while requests are in flight.  Every SPI
 * transaction is wrapped in PG_TRY; errors are logged and the loop carries on
 * (a claim rolled back is claimed again; rows left 'sending' are requeued by
 * _elmo_recover() at the next start).
 */
#include "elmo_oscp.h"
#include "http_client.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

static Transfer *finished = NULL;	/* done, outcome not recorded yet */

static bool was_ready = false;	/* extension present at the last turn */
static bool recovered = false;	/* _elmo_recover() done since it appeared */
static bool claim_wanted = true;
static uint64 last_generation = 0;
static TimestampTz next_due = 0;	/* next retry after the last claim; 0: none */
static TimestampTz retry_sql_at = 0;	/* after an SQL error: not before */

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static bool plans_stale = false;

/* ---------------------------------------------------------------- helpers */

/* malloc'd copy (callbacks read it); raises inside a transaction only */
static char *
dup_or_null(const char *s)
{
	char	   *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return d;
}

static bool
extension_ready(void)
{
	bool		ready;

	SpinLockAcquire(&elmo_shared->mutex);
	ready = elmo_shared->extension_ready;
	SpinLockRelease(&elmo_shared->mutex);
	return ready;
}

/* ---------------------------------------------------------------- SQL side */

static void
sql_failed(void)
{
	elmo_abort_after_error("sender");
	plans_stale = true;
	claim_wanted = true;		/* try again once retry_sql_at has passed */
	retry_sql_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
}

static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "elmo_oscp: SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "elmo_oscp: SPI_keepplan failed");
	return plan;
}

/* Inside a transaction: (re)prepare the statements we run all the time. */
static void
prepare_plans(void)
{
	if (plans_stale)
	{
		/* an error may mean DROP/CREATE EXTENSION: plan afresh */
		if (claim_plan)
			SPI_freeplan(claim_plan);
		if (next_plan)
			SPI_freeplan(next_plan);
		if (record_plan)
			SPI_freeplan(record_plan);
		claim_plan = next_plan = record_plan = NULL;
		plans_stale = false;
	}
	if (claim_plan == NULL)
	{
		Oid			types[1] = {INT4OID};

		claim_plan = keep_plan("SELECT id, method, url, \"authorization\", request_id, "
							   "correlation_id, body FROM _elmo_claim($1)", 1, types);
	}
	if (next_plan == NULL)
		next_plan = keep_plan("SELECT _elmo_next_attempt_at()", 0, NULL);
	if (record_plan == NULL)
	{
		Oid			types[5] = {INT8OID, INT4OID, TEXTOID, TEXTOID, JSONBOID};

		record_plan = keep_plan("SELECT _elmo_record($1, $2, $3, $4, $5)", 5, types);
	}
}

/* ELMO's answer as text the database accepts: valid UTF-8, no NUL. */
static char *
response_text(const Transfer *t)
{
	StringInfoData buf;
	const unsigned char *s = (const unsigned char *) t->response;
	size_t		len = t->response_len;
	size_t		i = 0;

	initStringInfo(&buf);
	while (i < len)
	{
		int			l;

		if (s[i] == 0)
		{
			i++;
			continue;
		}
		if (s[i] < 0x80)
		{
			appendStringInfoChar(&buf, (char) s[i++]);
			continue;
		}
		l = pg_utf_mblen(s + i);
		if (i + l <= len && pg_utf8_islegal(s + i, l))
		{
			appendBinaryStringInfo(&buf, (const char *) s + i, l);
			i += l;
		}
		else
		{
			appendStringInfoChar(&buf, '?');
			i++;
		}
	}
	return pg_any_to_server(buf.data, buf.len, PG_UTF8);
}

static void
record_one(Transfer *t)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			ret;

	values[0] = Int64GetDatum(t->id);
	values[1] = Int32GetDatum((int32) t->http_status);
	if (t->result != CURLE_OK)
		values[2] = CStringGetTextDatum(t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result));
	else
		nulls[2] = 'n';
	if (t->response_len > 0)
		values[3] = CStringGetTextDatum(response_text(t));
	else
		nulls[3] = 'n';
	if (t->timing[0])
		values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(t->timing));
	else
		nulls[4] = 'n';
	ret = SPI_execute_plan(record_plan, values, nulls, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "elmo_oscp: _elmo_record failed: %s", SPI_result_code_string(ret));
}

/* Last resort for one outcome _elmo_record could not take: try again in a minute. */
static void
requeue_one(int64 id)
{
	PG_TRY();
	{
		Oid			types[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(id)};

		elmo_xact_begin("elmo_oscp: requeueing a delivery");
		SPI_execute_with_args("UPDATE elmo_outbox SET state = 'queued', "
							  "next_attempt_at = now() + interval '1 min' "
							  "WHERE id = $1 AND state = 'sending'",
							  1, types, values, NULL, false, 0);
		elmo_xact_commit();
	}
	PG_CATCH();
	{
		sql_failed();
	}
	PG_END_TRY();
}

static void
record_all(void)
{
	for (Transfer *t = finished; t; t = t->next)
		record_one(t);
}

/* One outcome in its own transaction (after the batch failed). */
static bool
record_alone(Transfer *t)
{
	volatile bool ok = false;

	PG_TRY();
	{
		elmo_xact_begin("elmo_oscp: recording a delivery");
		prepare_plans();
		record_one(t);
		elmo_xact_commit();
		ok = true;
	}
	PG_CATCH();
	{
		sql_failed();
	}
	PG_END_TRY();
	return ok;
}

static char *
getvalue_dup(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return dup_or_null(v);
}

/* filled by claim_rows() inside a transaction: statics survive a longjmp */
static Transfer *claimed = NULL;
static int	n_claimed = 0;

/* Inside a transaction: claim up to lim messages into the claimed list. */
static void
claim_rows(int lim)
{
	Datum		arg[1];
	int			ret;
	bool		isnull;

	arg[0] = Int32GetDatum(lim);
	ret = SPI_execute_plan(claim_plan, arg, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "elmo_oscp: _elmo_claim failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Transfer   *t = calloc(1, sizeof(Transfer));

		if (t == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		transfer_push(&claimed, t);
		n_claimed++;
		t->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		t->method = getvalue_dup(tup, desc, 2);
		t->url = getvalue_dup(tup, desc, 3);
		t->authorization = getvalue_dup(tup, desc, 4);
		t->request_id = getvalue_dup(tup, desc, 5);
		t->correlation_id = getvalue_dup(tup, desc, 6);
		t->body = getvalue_dup(tup, desc, 7);
		if (t->method == NULL || t->url == NULL || t->request_id == NULL || t->body == NULL)
			elog(ERROR, "elmo_oscp: _elmo_claim returned an incomplete message (id " INT64_FORMAT ")", t->id);
	}
	ret = SPI_execute_plan(next_plan, NULL, NULL, false, 1);
	next_due = 0;
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			next_due = DatumGetTimestampTz(d);
	}
}

/* Hand what was claimed (and committed) to curl. */
static void
start_claimed(void)
{
	while (claimed)
	{
		Transfer   *t = claimed;

		transfer_remove(&claimed, t);
		http_client_start(t, &finished);
	}
	n_claimed = 0;
}

/*
 * One transaction per turn: record every finished transfer (_elmo_record),
 * then claim up to lim more (_elmo_claim) when do_claim.  If it fails, the
 * outcomes are recorded one per transaction (one that still fails is
 * requeued, or left 'sending' for the recovery at the next start) and the
 * claim waits for retry_sql_at.
 */
static void
db_turn(bool do_claim, int lim)
{
	volatile bool ok = false;
	bool		had_finished = (finished != NULL);

	PG_TRY();
	{
		elmo_xact_begin(do_claim ? "elmo_oscp: recording deliveries, claiming messages"
				   : "elmo_oscp: recording deliveries");
		prepare_plans();
		if (had_finished)
			record_all();
		if (do_claim)
			claim_rows(lim);
		elmo_xact_commit();
		ok = true;
	}
	PG_CATCH();
	{
		sql_failed();
	}
	PG_END_TRY();

	if (!ok)
	{
		transfer_free_all(&claimed);
		n_claimed = 0;
		for (Transfer *t = finished; t; t = t->next)
			if (!record_alone(t))
				requeue_one(t->id);
	}
	if (had_finished)
	{
		transfer_free_all(&finished);
		ConditionVariableBroadcast(&elmo_shared->outbox_cv);
		claim_wanted = true;	/* slots are free again */
	}
	if (ok && do_claim)
	{
		claim_wanted = (n_claimed >= lim);	/* a full batch: there may be more */
		start_claimed();
	}
}

static bool
recover(void)
{
	volatile bool ok = false;

	PG_TRY();
	{
		elmo_xact_begin("elmo_oscp: requeueing interrupted deliveries");
		prepare_plans();
		if (SPI_execute("SELECT _elmo_recover()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "elmo_oscp: _elmo_recover failed");
		elmo_xact_commit();
		ok = true;
	}
	PG_CATCH();
	{
		sql_failed();
	}
	PG_END_TRY();
	return ok;
}

/* ---------------------------------------------------------------- the worker's interface */

void
sender_init(void)
{
	http_client_init();
}

void
sender_shutdown(void)
{
	if (!http_client_ready())
		return;
	/* in-flight rows stay 'sending': _elmo_recover() requeues them at the next start */
	transfer_free_all(&finished);
	http_client_shutdown();
}

int
sender_epoll_fd(void)
{
	return http_client_epoll_fd();
}

/*
 * Should this turn claim?  When something may have become due (a commit
 * bumped the generation, a retry fell due, transfers finished) and there is
 * room.  While busy, wait until a quarter of the slots are free, so that a
 * claim takes a batch rather than one row at a time.
 */
static bool
claim_ready(TimestampTz now)
{
	int			in_flight = http_client_in_flight();
	int			room = elmo_max_in_flight - in_flight;

	if (room <= 0 || (retry_sql_at != 0 && now < retry_sql_at))
		return false;
	if (!claim_wanted &&
		pg_atomic_read_u64(&elmo_shared->generation) == last_generation &&
		!(next_due > 0 && now >= next_due))
		return false;
	return in_flight == 0 || room >= Max(1, elmo_max_in_flight / 4);
}

long
sender_timeout_ms(void)
{
	long		timeout;
	TimestampTz now;

	if (!http_client_ready())
		return -1;
	timeout = http_client_timeout_ms();
	if (!was_ready)
		return timeout;
	now = GetCurrentTimestamp();
	if (retry_sql_at > now)
	{
		long		ms = (long) ((retry_sql_at - now) / 1000 + 1);

		return timeout < 0 ? ms : Min(timeout, ms);
	}
	if (finished || !recovered || claim_ready(now))
		return 0;
	if (next_due > 0)
	{
		long		ms = next_due <= now ? 0 : (long) Min((next_due - now) / 1000 + 1, (TimestampTz) 60000);

		timeout = timeout < 0 ? ms : Min(timeout, ms);
	}
	return timeout;
}

void
sender_run(void)
{
	bool		ready;
	bool		do_claim;
	TimestampTz now;
	uint64		generation;

	if (!http_client_ready())
		return;

	http_client_run(&finished);

	ready = extension_ready();
	if (ready != was_ready)
	{
		/* the extension appeared, or went away (DROP EXTENSION) */
		was_ready = ready;
		recovered = false;
		plans_stale = true;
		claim_wanted = true;
		next_due = 0;
		retry_sql_at = 0;
	}
	if (!ready)
	{
		/* nowhere to record these: their rows went with the extension */
		transfer_free_all(&finished);
		return;
	}

	now = GetCurrentTimestamp();
	if (retry_sql_at > now)
		return;
	retry_sql_at = 0;

	if (!recovered)
	{
		if (!recover())
			return;
		recovered = true;
		claim_wanted = true;
	}

	generation = pg_atomic_read_u64(&elmo_shared->generation);
	do_claim = claim_ready(now);
	if (!finished && !do_claim)
		return;
	if (do_claim)
	{
		/* read before the claim: a commit after it makes the next turn claim */
		last_generation = generation;
		claim_wanted = false;
	}
	db_turn(do_claim, elmo_max_in_flight - http_client_in_flight());

	/* let curl start what was just added without waiting for another turn */
	http_client_run(&finished);
}
