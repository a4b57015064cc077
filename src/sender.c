/*
 * sender.c — delivers the outbox to ELMO: libcurl multi on the worker's thread.
 *
 * libcurl runs in its socket-action mode: CURLMOPT_SOCKETFUNCTION puts its
 * sockets into a private epoll set (sender_epoll_fd(), which the worker adds
 * to its WaitEventSet) and CURLMOPT_TIMERFUNCTION records when curl wants to
 * be called back.  Each sender_run():
 *   1. drives curl: ready sockets, and the timeout when it has passed;
 *   2. harvests finished transfers and records every outcome in ONE
 *      transaction (_elmo_record), then wakes elmo_wait() callers;
 *   3. claims more due messages (_elmo_claim) in one short transaction when
 *      something may have become due, and hands them to curl after COMMIT.
 * No transaction is open while requests are in flight.  The curl callbacks
 * touch only the malloc'd structures below: never palloc, ereport or SPI.
 * Every SPI transaction is wrapped in PG_TRY; errors are logged and the loop
 * carries on (a claim rolled back is claimed again; rows left 'sending' are
 * requeued by _elmo_recover() at the next start).
 */
#include "elmo_oscp.h"

#include <errno.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define RESPONSE_CAP	2048	/* bytes of ELMO's answer we keep */
#define MAX_EVENTS		64
#define IDLE_HANDLES	64		/* easy handles kept for reuse */

typedef struct Transfer
{
	struct Transfer *prev,
			   *next;			/* in the active or the finished list */
	CURL	   *easy;
	struct curl_slist *headers;
	int64		id;				/* elmo_outbox.id */
	char	   *method;
	char	   *url;
	char	   *authorization;	/* NULL: no Authorization header */
	char	   *request_id;
	char	   *correlation_id;
	char	   *body;
	/* filled by curl (write callback) and at harvest */
	size_t		response_len;
	char		response[RESPONSE_CAP];
	char		errbuf[CURL_ERROR_SIZE];
	CURLcode	result;
	long		http_status;	/* 0: no HTTP answer */
	char		timing[320];	/* JSON, when not 2xx */
} Transfer;

static bool curl_ready = false;
static int	epfd = -1;
static CURLM *multi = NULL;
static int64 curl_deadline_us = -1;	/* monotonic; -1: curl wants no timeout */
static char socket_known;		/* marker assigned to sockets in epfd */

static Transfer *active = NULL;	/* handed to curl */
static int	in_flight = 0;
static Transfer *finished = NULL;	/* done, outcome not recorded yet */
static CURL *idle_handles[IDLE_HANDLES];
static int	n_idle = 0;

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

static int64
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
list_push(Transfer **head, Transfer *t)
{
	t->prev = NULL;
	t->next = *head;
	if (*head)
		(*head)->prev = t;
	*head = t;
}

static void
list_remove(Transfer **head, Transfer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		*head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
}

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

static void
transfer_free(Transfer *t)
{
	if (t->easy)
	{
		if (n_idle < IDLE_HANDLES)
			idle_handles[n_idle++] = t->easy;
		else
			curl_easy_cleanup(t->easy);
	}
	curl_slist_free_all(t->headers);
	free(t->method);
	free(t->url);
	free(t->authorization);
	free(t->request_id);
	free(t->correlation_id);
	free(t->body);
	free(t);
}

static void
free_list(Transfer **head)
{
	while (*head)
	{
		Transfer   *t = *head;

		list_remove(head, t);
		transfer_free(t);
	}
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

/* ---------------------------------------------------------------- curl callbacks: plain C only */

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	Transfer   *t = (Transfer *) userdata;
	size_t		n = size * nmemb;
	size_t		room = RESPONSE_CAP - t->response_len;

	if (room > 0)
	{
		size_t		k = n < room ? n : room;

		memcpy(t->response + t->response_len, data, k);
		t->response_len += k;
	}
	return n;					/* the rest is read and dropped */
}

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		(void) epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(multi, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = s;
	if (socketp == NULL)
	{
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(multi, s, &socket_known);
	}
	else if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		(void) epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	curl_deadline_us = timeout_ms < 0 ? -1 : monotonic_us() + (int64) timeout_ms * 1000;
	return 0;
}

/* ---------------------------------------------------------------- curl side (no transaction) */

static char *
header_line(const char *name, const char *value)
{
	size_t		len = strlen(name) + 2 + strlen(value) + 1;
	char	   *line = malloc(len);
	char	   *p;

	if (line == NULL)
		return NULL;
	snprintf(line, len, "%s: %s", name, value);
	for (p = line; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	return line;
}

static bool
add_header(Transfer *t, const char *name, const char *value)
{
	char	   *line;
	struct curl_slist *l;

	if (value == NULL)
		return true;
	line = header_line(name, value);
	if (line == NULL)
		return false;
	l = curl_slist_append(t->headers, line);
	free(line);
	if (l == NULL)
		return false;
	t->headers = l;
	return true;
}

/* Configure and hand one claimed message to curl; false if it cannot be. */
static bool
start_transfer(Transfer *t)
{
	CURL	   *e;

	e = n_idle > 0 ? idle_handles[--n_idle] : curl_easy_init();
	if (e == NULL)
		return false;
	curl_easy_reset(e);
	t->easy = e;

	if (!add_header(t, "Content-Type", "application/json") ||
		!add_header(t, "Authorization", t->authorization) ||
		!add_header(t, "X-Request-ID", t->request_id) ||
		!add_header(t, "X-Correlation-ID", t->correlation_id) ||
		!add_header(t, "Expect", ""))	/* no 100-continue round trip */
		return false;

	curl_easy_setopt(e, CURLOPT_URL, t->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (void *) t);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(t->body));
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
	if (strcmp(t->method, "POST") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *) t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) elmo_connect_timeout);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) elmo_request_timeout);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (elmo_ca_file && elmo_ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, elmo_ca_file);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "elmo_oscp/" ELMO_OSCP_VERSION);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
		return false;
	list_push(&active, t);
	in_flight++;
	return true;
}

static void
drive_curl(void)
{
	struct epoll_event events[MAX_EVENTS];
	int			running;
	int			n;

	n = epoll_wait(epfd, events, MAX_EVENTS, 0);
	for (int i = 0; i < n; i++)
	{
		int			mask = 0;

		if (events[i].events & EPOLLIN)
			mask |= CURL_CSELECT_IN;
		if (events[i].events & EPOLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (events[i].events & (EPOLLERR | EPOLLHUP))
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(multi, events[i].data.fd, mask, &running);
	}
	if (curl_deadline_us >= 0 && monotonic_us() >= curl_deadline_us)
	{
		curl_deadline_us = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/* Move every finished transfer from curl to the finished list. */
static void
harvest(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		CURL	   *e = msg->easy_handle;
		char	   *priv = NULL;
		Transfer   *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
		t = (Transfer *) priv;
		t->result = msg->data.result;
		t->http_status = 0;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &t->http_status);
		/* a transfer that broke before an answer is a network failure */
		if (t->result != CURLE_OK && t->http_status < 200)
			t->http_status = 0;
		if (t->http_status < 200 || t->http_status > 299)
		{
			curl_off_t	dns = 0,
						connect = 0,
						tls = 0,
						first = 0,
						total = 0;

			curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &dns);
			curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect);
			curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &tls);
			curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &first);
			curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total);
			/* milliseconds since the start of the attempt, as curl counts them */
			snprintf(t->timing, sizeof(t->timing),
					 "{\"dns_ms\": %.3f, \"connect_ms\": %.3f, \"tls_ms\": %.3f, "
					 "\"first_byte_ms\": %.3f, \"total_ms\": %.3f, \"curl_code\": %d}",
					 dns / 1000.0, connect / 1000.0, tls / 1000.0, first / 1000.0,
					 total / 1000.0, (int) t->result);
			pg_atomic_fetch_add_u64(&elmo_shared->send_failures, 1);
		}
		else
			pg_atomic_fetch_add_u64(&elmo_shared->sent, 1);
		curl_multi_remove_handle(multi, e);
		list_remove(&active, t);
		in_flight--;
		list_push(&finished, t);
	}
}

/* ---------------------------------------------------------------- SQL side */

static void
xact_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

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

		xact_begin("elmo_oscp: requeueing a delivery");
		SPI_execute_with_args("UPDATE elmo_outbox SET state = 'queued', "
							  "next_attempt_at = now() + interval '1 min' "
							  "WHERE id = $1 AND state = 'sending'",
							  1, types, values, NULL, false, 0);
		xact_commit();
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
		xact_begin("elmo_oscp: recording a delivery");
		prepare_plans();
		record_one(t);
		xact_commit();
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
		list_push(&claimed, t);
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

		list_remove(&claimed, t);
		if (!start_transfer(t))
		{
			/* recorded as a network failure next turn: retried with backoff */
			snprintf(t->errbuf, sizeof(t->errbuf), "could not start the transfer (out of memory)");
			t->result = CURLE_OUT_OF_MEMORY;
			t->http_status = 0;
			if (t->easy)
			{
				curl_easy_cleanup(t->easy);
				t->easy = NULL;
			}
			list_push(&finished, t);
		}
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
		xact_begin(do_claim ? "elmo_oscp: recording deliveries, claiming messages"
				   : "elmo_oscp: recording deliveries");
		prepare_plans();
		if (had_finished)
			record_all();
		if (do_claim)
			claim_rows(lim);
		xact_commit();
		ok = true;
	}
	PG_CATCH();
	{
		sql_failed();
	}
	PG_END_TRY();

	if (!ok)
	{
		free_list(&claimed);
		n_claimed = 0;
		for (Transfer *t = finished; t; t = t->next)
			if (!record_alone(t))
				requeue_one(t->id);
	}
	if (had_finished)
	{
		free_list(&finished);
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
		xact_begin("elmo_oscp: requeueing interrupted deliveries");
		prepare_plans();
		if (SPI_execute("SELECT _elmo_recover()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "elmo_oscp: _elmo_recover failed");
		xact_commit();
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
	if (curl_ready)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		ereport(LOG, (errmsg("elmo_oscp: libcurl could not be initialized: nothing will be sent to ELMO")));
		elmo_set_last_error("sender: libcurl could not be initialized");
		return;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	multi = curl_multi_init();
	if (epfd < 0 || multi == NULL)
	{
		ereport(LOG, (errmsg("elmo_oscp: the sender could not start (%s): nothing will be sent to ELMO",
							 epfd < 0 ? "epoll_create1 failed" : "curl_multi_init failed")));
		elmo_set_last_error("sender: could not start");
		if (epfd >= 0)
			close(epfd);
		epfd = -1;
		return;
	}
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_ready = true;
}

void
sender_shutdown(void)
{
	if (!curl_ready)
		return;
	/* in-flight rows stay 'sending': _elmo_recover() requeues them at the next start */
	while (active)
	{
		Transfer   *t = active;

		curl_multi_remove_handle(multi, t->easy);
		list_remove(&active, t);
		transfer_free(t);
	}
	free_list(&finished);
	in_flight = 0;
	while (n_idle > 0)
		curl_easy_cleanup(idle_handles[--n_idle]);
	curl_multi_cleanup(multi);
	multi = NULL;
	close(epfd);
	epfd = -1;
	curl_global_cleanup();
	curl_ready = false;
}

int
sender_epoll_fd(void)
{
	return curl_ready ? epfd : -1;
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
	long		timeout = -1;
	TimestampTz now;

	if (!curl_ready)
		return -1;
	if (curl_deadline_us >= 0)
	{
		int64		us = curl_deadline_us - monotonic_us();

		timeout = us <= 0 ? 0 : (long) Min((us + 999) / 1000, (int64) 60000);
	}
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

	if (!curl_ready)
		return;

	drive_curl();
	harvest();

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
		free_list(&finished);
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
	db_turn(do_claim, elmo_max_in_flight - in_flight);

	/* let curl start what was just added without waiting for another turn */
	drive_curl();
	harvest();
}
