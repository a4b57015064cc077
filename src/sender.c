/*
 * sender.c — delivers the outbox to ELMO: libcurl multi on the worker's thread.
 *
 * libcurl (http_client.c) runs in its socket-action mode on a private epoll
 * set (sender_epoll_fd(), which the worker adds to its WaitEventSet).  This
 * file is the outbox side of it.  Each sender_run():
 *   1. drives curl: ready sockets, and the timeout when it has passed;
 *   2. records every finished transfer's outcome in ONE transaction
 *      (_elmo_record), then wakes elmo_wait() callers;
 *   3. claims more due messages (_elmo_claim) in the same transaction when
 *      something may have become due, and hands them to curl after COMMIT.
 * No transaction is open while requests are in flight.  When a transaction
 * fails, a claim rolled back is claimed again, outcomes are recorded one per
 * transaction, and a row left 'sending' is requeued by _elmo_recover() at the
 * next start.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "db.h"
#include "http_client.h"
#include "sender.h"
#include "settings.h"
#include "shmem.h"

static Transfer *finished = NULL;	/* done, outcome not recorded yet */

static bool was_ready = false;	/* extension present at the last turn */
static bool recovered = false;	/* _elmo_recover() done since it appeared */
static bool claim_wanted = true;
static uint64 last_generation = 0;
static TimestampTz next_due = 0;	/* next retry after the last claim; 0: none */
static TimestampTz retry_sql_at = 0;	/* after an SQL error: not before */

/* filled by claim_rows() inside a transaction: statics survive a longjmp */
static Transfer *claimed = NULL;
static int	n_claimed = 0;

/* ---------------------------------------------------------------- SQL side */

/* malloc'd copy (curl's callbacks read it); raises inside a transaction only */
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

	values[0] = Int64GetDatum(t->id);
	values[1] = Int32GetDatum((int32) t->http_status);
	if (t->result != CURLE_OK)
		values[2] = CStringGetTextDatum(t->errbuf);
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
	db_run(STMT_RECORD, values, nulls, 0);
}

/* Inside a transaction: claim up to lim messages into the claimed list. */
static void
claim_rows(int lim)
{
	Datum		arg = Int32GetDatum(lim);
	uint64		n = db_run(STMT_CLAIM, &arg, NULL, 0);
	bool		isnull;

	for (uint64 i = 0; i < n; i++)
	{
		Transfer   *t = calloc(1, sizeof(Transfer));

		if (t == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		transfer_push(&claimed, t);
		n_claimed++;
		t->id = DatumGetInt64(db_value(i, 1, &isnull));
		t->method = dup_or_null(db_text(i, 2));
		t->url = dup_or_null(db_text(i, 3));
		t->authorization = dup_or_null(db_text(i, 4));
		t->request_id = dup_or_null(db_text(i, 5));
		t->correlation_id = dup_or_null(db_text(i, 6));
		t->body = dup_or_null(db_text(i, 7));
		if (t->method == NULL || t->url == NULL || t->request_id == NULL || t->body == NULL)
			elog(ERROR, "elmo_oscp: _elmo_claim returned an incomplete message (id " INT64_FORMAT ")", t->id);
	}
	next_due = db_run_timestamp(STMT_NEXT_ATTEMPT_AT);
}

/* One turn's transaction: record what finished, claim up to lim more (0: none). */
static void
turn_work(void *arg)
{
	int			lim = *(int *) arg;

	for (Transfer *t = finished; t; t = t->next)
		record_one(t);
	if (lim > 0)
		claim_rows(lim);
}

static void
record_alone_work(void *arg)
{
	record_one((Transfer *) arg);
}

/* Last resort for an outcome _elmo_record could not take: try again in a minute. */
static void
requeue_work(void *arg)
{
	Datum		id = Int64GetDatum(((Transfer *) arg)->id);

	db_run(STMT_REQUEUE, &id, NULL, 0);
}

static void
recover_work(void *arg)
{
	db_run(STMT_RECOVER, NULL, NULL, 0);
}

static void
sql_failed(void)
{
	claim_wanted = true;		/* try again once retry_sql_at has passed */
	retry_sql_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
}

/* Hand what was claimed (and committed) to curl. */
static void
start_claimed(void)
{
	HttpClientSettings s = {elmo_connect_timeout, elmo_request_timeout, elmo_ca_file};

	while (claimed)
	{
		Transfer   *t = claimed;

		transfer_remove(&claimed, t);
		http_client_start(t, &s, &finished);
	}
	n_claimed = 0;
}

/*
 * ELMO's reachability, from every finished transfer: an HTTP answer below 500
 * reaches it; no connection, a timeout or a 5xx does not.  One log line when
 * it becomes unreachable (ELMO_UNREACHABLE_AFTER failures in a row), one when
 * it answers again.
 */
static void
note_reachability(void)
{
	for (Transfer *t = finished; t; t = t->next)
	{
		bool		reached = (t->result == CURLE_OK && t->http_status > 0 && t->http_status < 500);
		ReachView	v;
		int			change = shmem_note_delivery(reached, &v);

		if (change < 0)
			ereport(WARNING,
					(errmsg("elmo_oscp: ELMO is unreachable: %d deliveries in a row failed", v.failed_deliveries),
					 errdetail("The last one: %s %s: %s.", t->method, t->url,
							   t->result != CURLE_OK ? (t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result))
							   : psprintf("HTTP %ld", t->http_status)),
					 errhint("Messages stay queued and are retried. Check that ELMO is reachable from the database server (DNS, firewall, TLS); elmo_status() shows elmo_reachable.")));
		else if (change > 0)
			ereport(LOG,
					(errmsg("elmo_oscp: ELMO is reachable again, after %d failed deliveries over %.0f s",
							v.failed_deliveries,
							(double) (GetCurrentTimestamp() - v.first_failure_at) / USECS_PER_SEC)));
	}
}

/*
 * One transaction per turn: record every finished transfer, then claim up to
 * lim more when do_claim.  If it fails, the outcomes are recorded one per
 * transaction (one that still fails is requeued, or left 'sending' for the
 * recovery at the next start) and the claim waits for retry_sql_at.
 */
static void
db_turn(bool do_claim, int lim)
{
	bool		had_finished = (finished != NULL);
	int			claim = do_claim ? lim : 0;
	bool		ok;

	note_reachability();
	ok = db_transaction(do_claim ? "recording deliveries, claiming messages"
									: "recording deliveries", turn_work, &claim);

	if (!ok)
	{
		sql_failed();
		transfer_free_all(&claimed);
		n_claimed = 0;
		for (Transfer *t = finished; t; t = t->next)
			if (!db_transaction("recording a delivery", record_alone_work, t))
				(void) db_transaction("requeueing a delivery", requeue_work, t);
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

/* ---------------------------------------------------------------- the worker's interface */

void
sender_init(void)
{
	char		error[128];
	char		msg[160];

	if (!http_client_init(error, sizeof(error)))
	{
		ereport(LOG, (errmsg("elmo_oscp: the sender could not start (%s): nothing will be sent to ELMO", error)));
		snprintf(msg, sizeof(msg), "sender: %s", error);
		shmem_set_last_error(msg);
	}
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

int
sender_in_flight(void)
{
	return http_client_ready() ? http_client_in_flight() : 0;
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

/* How long the worker may sleep as far as the sender is concerned; -1: no limit. */
long
sender_timeout_ms(bool may_claim)
{
	long		timeout;
	TimestampTz now;

	if (!http_client_ready())
		return -1;
	timeout = http_client_timeout_ms();
	if (finished)
		return 0;
	if (!was_ready || !may_claim)
		return timeout;
	now = GetCurrentTimestamp();
	if (retry_sql_at > now)
		return timeout_min(timeout, ms_until(retry_sql_at));
	if (!recovered || claim_ready(now))
		return 0;
	if (next_due > 0)
		timeout = timeout_min(timeout, ms_until(next_due));
	return timeout;
}

static void
publish_counts(void)
{
	uint64_t	sent = 0,
				failed = 0;

	http_client_take_counts(&sent, &failed);
	if (sent)
		pg_atomic_fetch_add_u64(&elmo_shared->sent, sent);
	if (failed)
		pg_atomic_fetch_add_u64(&elmo_shared->send_failures, failed);
}

/* may_claim: false while shutting down (finish what is in flight, take nothing new). */
void
sender_run(bool extension_ready, bool may_claim)
{
	bool		do_claim;
	TimestampTz now;
	uint64		generation;

	if (!http_client_ready())
		return;

	http_client_run(&finished);
	publish_counts();

	if (extension_ready != was_ready)
	{
		/* the extension appeared, or went away (DROP EXTENSION) */
		was_ready = extension_ready;
		recovered = false;
		claim_wanted = true;
		next_due = 0;
		retry_sql_at = 0;
	}
	if (!extension_ready)
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
		if (!db_transaction("requeueing interrupted deliveries", recover_work, NULL))
		{
			sql_failed();
			return;
		}
		recovered = true;
		claim_wanted = true;
	}

	generation = pg_atomic_read_u64(&elmo_shared->generation);
	do_claim = may_claim && claim_ready(now);
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
	publish_counts();
}
