/*
 * oracle.c — what must hold after every case, checked against the answers
 * and against the database (through libpq, as the superuser of the
 * throw-away cluster):
 *   answered      every complete, well-formed request gets an answer;
 *   no 5xx        except 501 for an OSCP message this side does not take;
 *   answers       parse; the listener's 4xx bodies are JSON {"message": ...}, valid UTF-8;
 *   token         nothing but /health is accepted without a valid token;
 *   framing       no 2xx for a request HTTP says to refuse (e.g. two Content-Lengths);
 *   stored        a 204 stored exactly one row, or none for a repeated ID;
 *                 a 4xx or no answer stored nothing;
 *   exact         the row holds the X-Request-ID and the body exactly as sent
 *                 (a register once applied: ELMO's token in it is "***");
 *   UTF-8         every stored text is valid UTF-8 (PostgreSQL's convert_to);
 *   appliable     an accepted message does not fail to apply;
 *   RFC 3339      an accepted forecast has RFC 3339 times, stored at the
 *                 instants they name;
 *   no crash      the worker keeps its pid; no crash in the server log.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "timestamps.h"

#include <ctype.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---------------------------------------------------------------- accepted IDs */

typedef struct IdSet
{
	Buf		   *keys;
	int		   *case_no;
	size_t		cap;
	size_t		n;
} IdSet;

static uint64_t
hash_bytes(const unsigned char *p, size_t n)
{
	uint64_t	h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static long
idset_find(IdSet *s, const unsigned char *p, size_t n)
{
	if (s->cap == 0)
		return -1;
	for (size_t i = hash_bytes(p, n) & (s->cap - 1);; i = (i + 1) & (s->cap - 1))
	{
		if (s->keys[i].p == NULL)
			return -1;
		if (buf_eq(&s->keys[i], p, n))
			return (long) i;
	}
}

static void
idset_add(IdSet *s, const unsigned char *p, size_t n, int case_no)
{
	if (idset_find(s, p, n) >= 0)
		return;
	if ((s->n + 1) * 2 > s->cap)
	{
		IdSet		bigger = {0};

		bigger.cap = s->cap ? s->cap * 2 : 1024;
		bigger.keys = calloc(bigger.cap, sizeof(Buf));
		bigger.case_no = calloc(bigger.cap, sizeof(int));
		for (size_t i = 0; i < s->cap; i++)
			if (s->keys[i].p)
				idset_add(&bigger, s->keys[i].p, s->keys[i].len, s->case_no[i]);
		for (size_t i = 0; i < s->cap; i++)
			buf_free(&s->keys[i]);
		free(s->keys);
		free(s->case_no);
		*s = bigger;
	}
	for (size_t i = hash_bytes(p, n) & (s->cap - 1);; i = (i + 1) & (s->cap - 1))
		if (s->keys[i].p == NULL)
		{
			buf_set(&s->keys[i], p, n);
			s->case_no[i] = case_no;
			s->n++;
			return;
		}
}

/* ---------------------------------------------------------------- the checker */

typedef struct Pending
{
	long long	id;
	int			case_no;
	int			npairs;
	int64_t    *pairs;			/* start, end in microseconds, sorted */
} Pending;

struct Checker
{
	PGconn	   *db;
	char		token[1024];
	int			worker_pid;
	char		log_path[1024];
	long		log_offset;
	Buf			log_new;		/* server log lines written during the last case */
	long long	last_id;		/* highest elmo_received_message.id seen */
	IdSet		accepted;
	Pending    *pending;
	int			npending;
	int			cap_pending;
	long long  *reported;		/* rows whose failure to apply was reported */
	int			nreported;
};

static void
add_failure(Failure *f, int *nf, int maxf, const char *oracle, const char *key, const char *fmt,...)
	__attribute__((format(printf, 6, 7)));

static void
add_failure(Failure *f, int *nf, int maxf, const char *oracle, const char *key, const char *fmt,...)
{
	va_list		ap;
	Failure    *x;
	int			n;

	if (*nf >= maxf)
		return;
	x = &f[(*nf)++];
	memset(x, 0, sizeof(*x));
	copy_str(x->oracle, sizeof(x->oracle), oracle);
	copy_str(x->key, sizeof(x->key), key);
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(&x->detail, (size_t) n);
	va_start(ap, fmt);
	vsnprintf((char *) x->detail.p, (size_t) n + 1, fmt, ap);
	va_end(ap);
	x->detail.len = (size_t) n;
}

void
failure_free(Failure *f)
{
	buf_free(&f->detail);
}

static PGresult *
query(Checker *k, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(k->db, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "elmo-fuzz: query failed: %s\n%s\n", PQerrorMessage(k->db), sql);
		PQclear(res);
		return NULL;
	}
	return res;
}

int
checker_worker_pid(Checker *k)
{
	PGresult   *res = query(k, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'elmo_oscp worker'", 0, NULL);
	int			pid = 0;

	if (res && PQntuples(res) == 1)
		pid = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return pid;
}

Checker *
checker_new(const char *conninfo, const char *log_path, char *err, size_t errlen)
{
	Checker    *k = calloc(1, sizeof(Checker));
	PGresult   *res;
	FILE	   *lf;

	k->db = PQconnectdb(conninfo);
	if (PQstatus(k->db) != CONNECTION_OK)
	{
		snprintf(err, errlen, "cannot connect to the database: %s", PQerrorMessage(k->db));
		return NULL;
	}
	/* PostgreSQL's own notion of valid UTF-8: convert_to checks its input */
	res = PQexec(k->db, "SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS elmo_fuzz;"
				 "CREATE OR REPLACE FUNCTION elmo_fuzz.utf8_ok(t text) RETURNS boolean LANGUAGE plpgsql AS $$"
				 " BEGIN PERFORM convert_to(t, 'UTF8'); RETURN true;"
				 " EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN RETURN false; END $$");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		snprintf(err, errlen, "cannot create elmo_fuzz.utf8_ok: %s", PQerrorMessage(k->db));
		return NULL;
	}
	PQclear(res);
	res = query(k, "SELECT our_token, coalesce((SELECT max(id) FROM elmo_received_message), 0) FROM elmo_registration", 0, NULL);
	if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
	{
		snprintf(err, errlen, "no registration with a token in the database (test.fake_registration() makes one)");
		return NULL;
	}
	copy_str(k->token, sizeof(k->token), PQgetvalue(res, 0, 0));
	k->last_id = atoll(PQgetvalue(res, 0, 1));
	PQclear(res);
	/* IDs accepted before this run count as repeated */
	res = query(k, "SELECT request_id FROM elmo_received_message", 0, NULL);
	for (int r = 0; res && r < PQntuples(res); r++)
		idset_add(&k->accepted, (const unsigned char *) PQgetvalue(res, r, 0), (size_t) PQgetlength(res, r, 0), 0);
	PQclear(res);
	k->worker_pid = checker_worker_pid(k);
	if (k->worker_pid == 0)
	{
		snprintf(err, errlen, "the elmo_oscp worker is not running");
		return NULL;
	}
	copy_str(k->log_path, sizeof(k->log_path), log_path ? log_path : "");
	if (log_path && (lf = fopen(log_path, "r")) != NULL)
	{
		fseek(lf, 0, SEEK_END);
		k->log_offset = ftell(lf);
		fclose(lf);
	}
	return k;
}

const char *
checker_token(Checker *k)
{
	return k->token;
}

void
checker_free(Checker *k)
{
	if (k == NULL)
		return;
	PQfinish(k->db);
	buf_free(&k->log_new);
	free(k);
}

/* the server log written since the last call */
static void
read_log(Checker *k)
{
	FILE	   *lf;
	char		tmp[65536];
	size_t		n;

	k->log_new.len = 0;
	buf_cstr(&k->log_new);
	if (k->log_path[0] == '\0' || (lf = fopen(k->log_path, "r")) == NULL)
		return;
	fseek(lf, k->log_offset, SEEK_SET);
	while ((n = fread(tmp, 1, sizeof(tmp), lf)) > 0)
	{
		if (k->log_new.len < 1024 * 1024)
			buf_add(&k->log_new, tmp, n);
		k->log_offset += (long) n;
	}
	fclose(lf);
	buf_cstr(&k->log_new);
}

/*
 * The first log line containing `what` (written by process `pid` unless 0),
 * and its gist: the rest of the line without numbers and quoted text.
 */
static bool
log_line(Checker *k, const char *what, int pid, char *line, size_t size, char *gist, size_t gsize)
{
	const char *s = (const char *) k->log_new.p;
	const char *hit = s;
	const char *start = NULL,
			   *end = NULL;
	char		tag[32];
	size_t		j = 0;
	bool		quoted = false;

	snprintf(tag, sizeof(tag), "[%d]", pid);
	while (hit && (hit = strstr(hit, what)) != NULL)
	{
		start = hit;
		while (start > s && start[-1] != '\n')
			start--;
		end = strchr(hit, '\n');
		if (end == NULL)
			end = hit + strlen(hit);
		if (pid == 0 || memmem(start, (size_t) (end - start), tag, strlen(tag)) != NULL)
			break;
		hit = end;
	}
	if (hit == NULL)
		return false;
	snprintf(line, size, "%.*s", (int) (end - start), start);
	for (const char *p = hit + strlen(what); p < end && j + 1 < gsize; p++)
	{
		if (j == 0 && *p == ' ')
			continue;
		if (*p == '"')
			quoted = !quoted;
		else if (!quoted && !isdigit((unsigned char) *p))
			gist[j++] = *p;
	}
	gist[j] = '\0';
	while (j > 0 && gist[j - 1] == ' ')
		gist[--j] = '\0';
	return true;
}

int
checker_health(Checker *k, Failure *f, int maxf)
{
	static const char *const crash[] = {
		"terminated by signal", "was terminated", "exited with exit code", "PANIC:", "TRAP:",
		"all server processes terminated", "server process (PID",
	};
	int			nf = 0;
	int			pid;
	const char *s = (const char *) k->log_new.p;

	for (size_t i = 0; s && i < sizeof(crash) / sizeof(crash[0]); i++)
	{
		char		line[512],
					gist[160];

		if (log_line(k, crash[i], 0, line, sizeof(line), gist, sizeof(gist)))
		{
			char		key[200];

			snprintf(key, sizeof(key), "crash: %s", crash[i]);
			add_failure(f, &nf, maxf, "crash", key, "the server log says: %s", line);
			break;
		}
	}
	pid = checker_worker_pid(k);
	if (pid != k->worker_pid)
	{
		add_failure(f, &nf, maxf, "crash", "crash: worker pid changed",
					"the elmo_oscp worker's pid was %d, is now %d", k->worker_pid, pid);
		k->worker_pid = pid;
	}
	return nf;
}

/* ---------------------------------------------------------------- per case */

typedef struct Row
{
	long long	id;
	Buf			rid;
	Buf			raw;
	char		message[64];
	char		method[16];
	char		state[32];
	char		error[512];
	bool		utf8_ok;
	bool		token_scrubbed; /* an applied register: its token is "***" */
	int			owner_conn;		/* the request it belongs to, -1: none */
	int			owner_req;
} Row;

static bool
error_body_ok(const Answer *a, const Buf *request_body, char *why, size_t size)
{
	json_error_t err;
	json_t	   *j,
			   *m;
	bool		ok = false;

	if (!utf8_valid(a->body.p, a->body.len))
	{
		/* the request's own bytes echoed, or bytes from nowhere (memory read after it was freed) */
		long		at = utf8_invalid_at(a->body.p, a->body.len);
		size_t		n = 0;
		bool		echo;

		while (at >= 0 && n < 4 && (size_t) at + n < a->body.len && a->body.p[at + n] >= 0x80)
			n++;			/* the bytes that are not UTF-8 */
		echo = at >= 0 && n > 0 && request_body->len &&
			memmem(request_body->p, request_body->len, a->body.p + at, n) != NULL;

		snprintf(why, size, "not valid UTF-8 (%s)", echo ? "it echoes bytes of the request" : "bytes not from the request");
		return false;
	}
	j = json_loadb((const char *) a->body.p, a->body.len, 0, &err);
	if (j == NULL)
	{
		snprintf(why, size, "not JSON (%s)", err.text);
		return false;
	}
	m = json_object_get(j, "message");
	if (json_is_string(m) && json_string_length(m) > 0)
		ok = true;
	else if (json_is_array(m) && json_array_size(m) > 0)
	{
		size_t		i;
		json_t	   *e;

		ok = true;
		json_array_foreach(m, i, e)
			if (!json_is_string(e))
			ok = false;
	}
	if (!ok)
		snprintf(why, size, "no \"message\" (a non-empty string or array of strings)");
	json_decref(j);
	return ok;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t		x = *(const int64_t *) a,
				y = *(const int64_t *) b;

	return x < y ? -1 : x > y;
}

static int
cmp_pair(const void *a, const void *b)
{
	int			c = cmp_i64(a, b);

	return c ? c : cmp_i64((const int64_t *) a + 1, (const int64_t *) b + 1);
}

/*
 * An accepted forecast: every block time RFC 3339, end after start; the
 * instants in *pairs (sorted) for comparing with what was stored.
 */
static int
forecast_times(const Buf *body, int64_t **pairs, int *npairs, char *why, size_t size)
{
	json_error_t err;
	json_t	   *j = json_loadb((const char *) body->p, body->len, 0, &err);
	json_t	   *blocks,
			   *b;
	size_t		i;
	int			bad = 0;

	*pairs = NULL;
	*npairs = 0;
	if (j == NULL)
		return -1;				/* jansson cannot read it (e.g. 1e400): not judged here */
	blocks = json_object_get(j, "forecasted_blocks");
	if (!json_is_array(blocks))
	{
		json_decref(j);
		return -1;
	}
	*pairs = calloc(json_array_size(blocks) * 2 + 2, sizeof(int64_t));
	json_array_foreach(blocks, i, b)
	{
		json_t	   *s = json_object_get(b, "start_time"),
				   *e = json_object_get(b, "end_time");
		int64_t		su,
					eu;

		if (!json_is_string(s) || !rfc3339_parse((const unsigned char *) json_string_value(s), json_string_length(s), &su))
		{
			snprintf(why, size, "forecasted_blocks[%zu].start_time \"%s\" is not RFC 3339", i,
					 json_is_string(s) ? preview((const unsigned char *) json_string_value(s), json_string_length(s), 80) : "(not a string)");
			bad = 1;
			break;
		}
		if (!json_is_string(e) || !rfc3339_parse((const unsigned char *) json_string_value(e), json_string_length(e), &eu))
		{
			snprintf(why, size, "forecasted_blocks[%zu].end_time \"%s\" is not RFC 3339", i,
					 json_is_string(e) ? preview((const unsigned char *) json_string_value(e), json_string_length(e), 80) : "(not a string)");
			bad = 1;
			break;
		}
		if (eu <= su)
		{
			snprintf(why, size, "forecasted_blocks[%zu] ends at or before its start (%s)", i,
					 json_string_value(e));
			bad = 2;
			break;
		}
		(*pairs)[2 * *npairs] = su;
		(*pairs)[2 * *npairs + 1] = eu;
		(*npairs)++;
	}
	json_decref(j);
	qsort(*pairs, (size_t) *npairs, 2 * sizeof(int64_t), cmp_pair);
	return bad;
}

/* stored block instants of a received message's forecast == pairs */
static bool
blocks_match(Checker *k, long long id, const int64_t *pairs, int npairs, char *why, size_t size)
{
	char		idtext[32];
	const char *params[1] = {idtext};
	PGresult   *res;
	int64_t    *got;
	int			n;
	bool		ok = true;

	snprintf(idtext, sizeof(idtext), "%lld", id);
	res = query(k, "SELECT trunc(extract(epoch FROM b.start_time) * 1000000)::text,"
				" trunc(extract(epoch FROM b.end_time) * 1000000)::text"
				" FROM capacity_forecast_block b JOIN capacity_forecast f ON f.id = b.forecast_id"
				" WHERE f.request_id = (SELECT request_id FROM elmo_received_message WHERE id = $1)", 1, params);
	if (res == NULL)
		return true;
	n = PQntuples(res);
	got = calloc((size_t) n * 2 + 2, sizeof(int64_t));
	for (int i = 0; i < n; i++)
	{
		got[2 * i] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		got[2 * i + 1] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	qsort(got, (size_t) n, 2 * sizeof(int64_t), cmp_pair);
	if (n != npairs)
	{
		snprintf(why, size, "%d blocks sent, %d stored", npairs, n);
		ok = false;
	}
	else
		for (int i = 0; i < 2 * n; i++)
			if (got[i] != pairs[i])
			{
				char		want[64],
							have[64];

				rfc3339_format(want, sizeof(want), pairs[i], 0, 6, 'T', true);
				rfc3339_format(have, sizeof(have), got[i], 0, 6, 'T', true);
				snprintf(why, size, "a block %s was sent as %s, stored as %s", i % 2 ? "end" : "start", want, have);
				ok = false;
				break;
			}
	free(got);
	PQclear(res);
	return ok;
}

static void
pending_add(Checker *k, long long id, int case_no, int64_t *pairs, int npairs)
{
	if (k->npending == k->cap_pending)
	{
		k->cap_pending = k->cap_pending ? k->cap_pending * 2 : 64;
		k->pending = realloc(k->pending, sizeof(Pending) * (size_t) k->cap_pending);
	}
	k->pending[k->npending++] = (Pending) {id, case_no, npairs, pairs};
}

static bool
id_in(const Model *m, const Buf *rid)
{
	for (int i = 0; i < m->nids; i++)
		if (buf_eq(&m->ids[i], rid->p, rid->len))
			return true;
	return false;
}

/*
 * The listener's rule for register and handshake, which are never refused
 * for a header: an X-Request-ID it cannot keep exactly (over 128 characters,
 * or not printable ASCII) is replaced by a generated one, as a missing one is.
 */
#define REQUEST_ID_MAX 128

static bool
id_usable(const Buf *id)
{
	if (id->len == 0 || id->len > REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < id->len; i++)
		if (id->p[i] < 0x20 || id->p[i] > 0x7e)
			return false;
	return true;
}

/*
 * The server makes up the ID: none sent, or (register/handshake) the one it
 * reads unusable, or not seen (the headers may end before it).
 */
static bool
id_generated(const Model *m)
{
	if (m->nids == 0 || m->headers_may_end)
		return true;
	return (strcmp(m->message, "register") == 0 || strcmp(m->message, "handshake") == 0) &&
		!id_usable(&m->ids[0]);
}

static const char *
where(int conn, int req, const Case *c)
{
	static char s[64];

	if (c->nconn == 1 && c->conn[0].nreq == 1)
		s[0] = '\0';
	else if (c->nconn == 1)
		snprintf(s, sizeof(s), "request %d: ", req + 1);
	else
		snprintf(s, sizeof(s), "connection %d: ", conn + 1);
	return s;
}

int
checker_case(Checker *k, const Case *c, const Plan *plan, ConnOutcome *o, Failure *f, int maxf,
			 int case_no)
{
	const Model (*models)[MAX_REQ] = plan->m;
	const int  *required = plan->required;
	int			nf = 0;
	Row		   *rows = NULL;
	int			nrows = 0;
	char		lastid[32];
	const char *params[1] = {lastid};
	PGresult   *res;
	char		key[160],
				why[512];

	read_log(k);

	/* answers */
	for (int i = 0; i < c->nconn; i++)
	{
		bool		closing = false;

		if (o[i].refused)
		{
			add_failure(f, &nf, maxf, "crash", "crash: connection refused",
						"%sthe listener refused the connection", where(i, 0, c));
			continue;
		}
		for (int j = 0; j < c->conn[i].nreq; j++)
		{
			const Model *m = &models[i][j];
			const Answer *a = &o[i].req[j].answer;
			const char *msg = m->message[0] ? m->message : "(other path)";

			if (a->status == 0)
			{
				if (j < required[i] && o[i].req[j].written && !closing)
				{
					snprintf(key, sizeof(key), "unanswered %s", msg);
					add_failure(f, &nf, maxf, "answered", key,
								"%sa complete %s request got no answer (%s)", where(i, j, c), msg,
								o[i].timed_out ? "none within the answer timeout" :
								o[i].eof ? "the server closed the connection" : "connection failed");
				}
				continue;
			}
			if (a->conn_close)
				closing = true;
			if (a->parse_error[0])
			{
				snprintf(key, sizeof(key), "bad answer");
				add_failure(f, &nf, maxf, "answer", key, "%s%s", where(i, j, c), a->parse_error);
				continue;
			}
			if (a->status >= 500 && !(a->status == 501 && m->not_implemented) &&
				!(a->status == 505 && m->version_odd))
			{
				char		line[512] = "",
							gist[160] = "";

				/* the worker logs what went wrong as "...: receiving a request failed: <error>" */
				if (!log_line(k, " failed: ", k->worker_pid, line, sizeof(line), gist, sizeof(gist)) &&
					!log_line(k, "ERROR:", k->worker_pid, line, sizeof(line), gist, sizeof(gist)))
					log_line(k, "WARNING:", k->worker_pid, line, sizeof(line), gist, sizeof(gist));
				snprintf(key, sizeof(key), "%d %s%s%s", a->status, msg, gist[0] ? ":" : "", gist);
				add_failure(f, &nf, maxf, "5xx", key, "%s%s answered %d: %s%s%s", where(i, j, c), msg,
							a->status, preview(a->body.p, a->body.len, 200), line[0] ? "\n    server log: " : "", line);
			}
			if (a->status >= 200 && a->status < 300 && !m->health && !m->auth_ok)
			{
				snprintf(key, sizeof(key), "%d without a valid token", a->status);
				add_failure(f, &nf, maxf, "token", key, "%s%s answered %d without a valid Authorization",
							where(i, j, c), msg, a->status);
			}
			if (a->status >= 200 && a->status < 300 && a->status != 204 && !(a->status == 200 && m->health))
			{
				snprintf(key, sizeof(key), "%d for %s", a->status, msg);
				add_failure(f, &nf, maxf, "answer", key, "%s%s answered %d", where(i, j, c), msg, a->status);
			}
			if (a->status == 204 && a->body.len)
				add_failure(f, &nf, maxf, "answer", "204 with a body", "%s204 with a %zu-byte body",
							where(i, j, c), a->body.len);
			if (a->status >= 200 && a->status < 300 && m->bad_framing)
			{
				snprintf(key, sizeof(key), "2xx for a request HTTP says to refuse");
				add_failure(f, &nf, maxf, "framing", key,
							"%s%s answered %d although its framing is invalid (RFC 9112: answer 400 and close)",
							where(i, j, c), msg, a->status);
			}
			if (strcmp(m->method, "HEAD") == 0)
				continue;		/* no body in answers to HEAD */
			if (a->body.len >= 7 && memcmp(a->body.p, "HTTP/1.", 7) == 0)
				add_failure(f, &nf, maxf, "answer", "status line and headers sent twice",
							"%s%s answered %d, its body another status line: %s", where(i, j, c), msg, a->status,
							preview(a->body.p, a->body.len, 120));
			/* the listener's own answers are JSON; the HTTP library's (HTML) are not judged */
			else if (a->status >= 400 && a->json && !error_body_ok(a, &c->conn[i].req[j].body, why, sizeof(why)))
			{
				snprintf(key, sizeof(key), "%d body %s", a->status, why);
				/* the parser's message out of the key */
				if (strncmp(why, "not JSON", 8) == 0)
					snprintf(key, sizeof(key), "%d body not JSON", a->status);
				add_failure(f, &nf, maxf, "error body", key, "%s%s answered %d with a body that is %s: %s",
							where(i, j, c), msg, a->status, why, preview(a->body.p, a->body.len, 200));
			}
		}
	}

	/* rows stored during the case */
	snprintf(lastid, sizeof(lastid), "%lld", k->last_id);
	res = query(k, "SELECT m.id, m.request_id, m.raw_body, m.message, m.method, m.state, coalesce(m.last_error, ''),"
				" elmo_fuzz.utf8_ok(m::text) AND coalesce((SELECT bool_and(elmo_fuzz.utf8_ok(f::text))"
				"   FROM capacity_forecast f WHERE f.request_id = m.request_id), true),"
				" m.message = 'register' AND m.state = 'applied' AND m.body->>'token' = '***'"
				" FROM elmo_received_message m WHERE m.id > $1 ORDER BY m.id", 1, params);
	if (res)
	{
		nrows = PQntuples(res);
		rows = calloc((size_t) nrows + 1, sizeof(Row));
		for (int r = 0; r < nrows; r++)
		{
			Row		   *w = &rows[r];

			w->id = atoll(PQgetvalue(res, r, 0));
			buf_set(&w->rid, PQgetvalue(res, r, 1), (size_t) PQgetlength(res, r, 1));
			buf_set(&w->raw, PQgetvalue(res, r, 2), (size_t) PQgetlength(res, r, 2));
			copy_str(w->message, sizeof(w->message), PQgetvalue(res, r, 3));
			copy_str(w->method, sizeof(w->method), PQgetvalue(res, r, 4));
			copy_str(w->state, sizeof(w->state), PQgetvalue(res, r, 5));
			copy_str(w->error, sizeof(w->error), PQgetvalue(res, r, 6));
			w->utf8_ok = PQgetvalue(res, r, 7)[0] == 't';
			w->token_scrubbed = PQgetvalue(res, r, 8)[0] == 't';
			w->owner_conn = w->owner_req = -1;
			if (w->id > k->last_id)
				k->last_id = w->id;
		}
		PQclear(res);
	}

	/* each row to the request that sent its X-Request-ID (an answered one first) */
	for (int r = 0; r < nrows; r++)
		for (int pass = 0; pass < 2 && rows[r].owner_conn < 0; pass++)
			for (int i = 0; i < c->nconn && rows[r].owner_conn < 0; i++)
				for (int j = 0; j < c->conn[i].nreq && rows[r].owner_conn < 0; j++)
					if (id_in(&models[i][j], &rows[r].rid) &&
						(pass == 1 || o[i].req[j].answer.status == 204))
						rows[r].owner_conn = i, rows[r].owner_req = j;
	/* a generated ID: a request without a usable X-Request-ID, same message (and body, if it can be) */
	for (int pass = 0; pass < 2; pass++)
		for (int r = 0; r < nrows; r++)
			for (int i = 0; i < c->nconn && rows[r].owner_conn < 0; i++)
				for (int j = 0; j < c->conn[i].nreq && rows[r].owner_conn < 0; j++)
				{
					const Model *m = &models[i][j];
					bool		taken = false;

					for (int q = 0; q < nrows; q++)
						taken |= rows[q].owner_conn == i && rows[q].owner_req == j;
					if (!taken && id_generated(m) && o[i].req[j].answer.status == 204 &&
						(m->message[0] == '\0' || strcmp(m->message, rows[r].message) == 0) &&
						(pass == 1 || !m->body_known || buf_eq(&m->body, rows[r].raw.p, rows[r].raw.len)))
						rows[r].owner_conn = i, rows[r].owner_req = j;
				}

	for (int r = 0; r < nrows; r++)
	{
		Row		   *w = &rows[r];

		if (w->owner_conn < 0)
		{
			Buf			sent = {0};

			for (int i = 0; i < c->nconn; i++)
				for (int j = 0; j < c->conn[i].nreq; j++)
					for (int q = 0; q < models[i][j].nids; q++)
					{
						buf_adds(&sent, sent.len ? ", \"" : "\"");
						escape_bytes(&sent, models[i][j].ids[q].p,
									 models[i][j].ids[q].len > 120 ? 120 : models[i][j].ids[q].len);
						buf_adds(&sent, models[i][j].ids[q].len > 120 ? "...\"" : "\"");
					}
			{
				/* cut short (a prefix of one sent), or characters dropped or changed */
				bool		prefix = false;

				for (int i = 0; i < c->nconn; i++)
					for (int j = 0; j < c->conn[i].nreq; j++)
						for (int q = 0; q < models[i][j].nids; q++)
							prefix |= models[i][j].ids[q].len > w->rid.len &&
								memcmp(models[i][j].ids[q].p, w->rid.p, w->rid.len) == 0;
				snprintf(key, sizeof(key), "stored X-Request-ID %s", prefix ? "cut short" : "with characters dropped or changed");
			}
			add_failure(f, &nf, maxf, "id altered", key,
						"a %s row was stored with X-Request-ID \"%s\" (%zu bytes); the X-Request-IDs sent were: %s",
						w->message, preview(w->rid.p, w->rid.len, 120), w->rid.len, sent.len ? (char *) sent.p : "none");
			buf_free(&sent);
		}
		else
		{
			const Model *m = &models[w->owner_conn][w->owner_req];
			int			st = o[w->owner_conn].req[w->owner_req].answer.status;
			const char *wh = where(w->owner_conn, w->owner_req, c);

			/*
			 * Stored: only with a 204.  Without an answer, the server must not
			 * have stored a request it never got whole; one that was complete
			 * when we hung up first may be stored (the client gave up).
			 */
			if (st != 204 && (st != 0 || m->incomplete || !(o[w->owner_conn].gave_up_at >= 0 &&
															  w->owner_req >= o[w->owner_conn].gave_up_at)))
			{
				if (st)
					snprintf(key, sizeof(key), "stored for a %d answer (%s)", st, m->message[0] ? m->message : w->message);
				else
					snprintf(key, sizeof(key), "stored without an answer (%s, %s)", m->message[0] ? m->message : w->message,
							 m->incomplete ? "request incomplete" : "connection closed by the server");
				add_failure(f, &nf, maxf, "stored", key, "%sa %s row was stored although %s", wh, w->message,
							st ? "the answer was not 204" : m->incomplete ? "the request never came whole" :
							"the server closed the connection without answering");
			}
			if (m->body_known && !w->token_scrubbed && !buf_eq(&m->body, w->raw.p, w->raw.len))
			{
				size_t		d = 0;

				while (d < m->body.len && d < w->raw.len && m->body.p[d] == w->raw.p[d])
					d++;
				snprintf(key, sizeof(key), "stored body differs (%s)",
						 w->raw.len < m->body.len && d == w->raw.len ? "cut short" : "altered");
				add_failure(f, &nf, maxf, "exact", key,
							"%s%s: %zu bytes sent, %zu stored; they differ from byte %zu (sent %s)", wh,
							w->message, m->body.len, w->raw.len, d,
							d < m->body.len ? preview(m->body.p + d, m->body.len - d, 40) : "(end)");
			}
			if (m->message[0] && strcmp(m->message, w->message) != 0)
			{
				snprintf(key, sizeof(key), "stored as %s, sent to %s", w->message, m->message);
				add_failure(f, &nf, maxf, "exact", key, "%s%s", wh, key);
			}
			if (!w->utf8_ok)
			{
				snprintf(key, sizeof(key), "invalid UTF-8 stored (%s)", w->message);
				add_failure(f, &nf, maxf, "UTF-8", key,
							"%s%s row %lld holds text that is not valid UTF-8 (convert_to fails); X-Request-ID \"%s\"",
							wh, w->message, w->id, preview(w->rid.p, w->rid.len, 60));
			}
			if (strcmp(w->state, "apply_failed") == 0)
			{
				char		gist[80];
				size_t		g = 0;

				for (const char *p = w->error; *p && g + 1 < sizeof(gist) && g < 60; p++)
					if (!isdigit((unsigned char) *p))
						gist[g++] = *p;
				gist[g] = '\0';
				snprintf(key, sizeof(key), "apply failed: %s", gist);
				k->reported = realloc(k->reported, sizeof(long long) * (size_t) (k->nreported + 1));
				k->reported[k->nreported++] = w->id;
				add_failure(f, &nf, maxf, "appliable", key, "%saccepted %s (row %lld) failed to apply: %s",
							wh, w->message, w->id, w->error);
			}
			if (st == 204 && strcmp(w->message, "update_group_capacity_forecast") == 0 && m->body_known)
			{
				int64_t    *pairs;
				int			npairs;
				int			bad = forecast_times(&m->body, &pairs, &npairs, why, sizeof(why));

				if (bad == 1)
					add_failure(f, &nf, maxf, "RFC 3339", "accepted a time that is not RFC 3339", "%s%s", wh, why);
				else if (bad == 2)
					add_failure(f, &nf, maxf, "RFC 3339", "accepted a block ending before it starts", "%s%s", wh, why);
				else if (bad == 0 && strcmp(w->state, "applied") == 0)
				{
					if (!blocks_match(k, w->id, pairs, npairs, why, sizeof(why)))
						add_failure(f, &nf, maxf, "RFC 3339", "stored instants differ from those sent", "%s%s", wh, why);
				}
				else if (bad == 0 && strcmp(w->state, "received") == 0)
				{
					pending_add(k, w->id, case_no, pairs, npairs);
					pairs = NULL;
				}
				free(pairs);
			}
		}
	}

	/* each 204: one row, or none for an X-Request-ID accepted before */
	for (int i = 0; i < c->nconn; i++)
		for (int j = 0; j < c->conn[i].nreq; j++)
		{
			const Model *m = &models[i][j];
			int			n = 0;
			const Row  *mine = NULL;

			if (o[i].req[j].answer.status != 204)
				continue;
			for (int r = 0; r < nrows; r++)
				if (rows[r].owner_conn == i && rows[r].owner_req == j)
					n++, mine = &rows[r];
			if (n > 1)
				add_failure(f, &nf, maxf, "stored", "one request stored twice", "%s%d rows for one request",
							where(i, j, c), n);
			if (n == 0)
			{
				bool		repeated = false;

				for (int q = 0; q < m->nids; q++)
					repeated |= idset_find(&k->accepted, m->ids[q].p, m->ids[q].len) >= 0;
				for (int r = 0; r < nrows; r++)
					repeated |= rows[r].owner_conn < 0;	/* its ID altered: reported above */
				if (!repeated)
				{
					snprintf(key, sizeof(key), "204 but nothing stored (%s)", m->message[0] ? m->message : "other path");
					add_failure(f, &nf, maxf, "stored", key,
								"%s%s answered 204, no row stored, and its X-Request-ID \"%s\" was not accepted before"
								" (where IDs are altered, an earlier one may have become this one)",
								where(i, j, c), m->message, m->nids ? preview(m->ids[0].p, m->ids[0].len, 80) : "(none)");
				}
			}
			if (mine && m->nids == 0 && strcmp(mine->message, "register") != 0 &&
				strcmp(mine->message, "handshake") != 0)
				add_failure(f, &nf, maxf, "stored", "business message accepted without X-Request-ID",
							"%s%s stored under a generated X-Request-ID", where(i, j, c), mine->message);
			if (mine)
				idset_add(&k->accepted, mine->rid.p, mine->rid.len, case_no);
		}

	for (int r = 0; r < nrows; r++)
	{
		buf_free(&rows[r].rid);
		buf_free(&rows[r].raw);
	}
	free(rows);
	nf += checker_health(k, f + nf, maxf - nf);
	return nf;
}

int
checker_final(Checker *k, Failure *f, int maxf, int timeout_s)
{
	int			nf = 0;
	PGresult   *res;
	char		why[512];

	for (int waited = 0;; waited++)
	{
		res = query(k, "SELECT count(*) FROM elmo_received_message WHERE state = 'received'", 0, NULL);
		if (res == NULL || atoi(PQgetvalue(res, 0, 0)) == 0 || waited >= timeout_s * 10)
		{
			if (res && atoi(PQgetvalue(res, 0, 0)) > 0)
				add_failure(f, &nf, maxf, "appliable", "still not applied at the end",
							"%s accepted messages still 'received' %d s after the campaign",
							PQgetvalue(res, 0, 0), timeout_s);
			PQclear(res);
			break;
		}
		PQclear(res);
		usleep(100000);
	}
	/* failures of applies deferred past the answers (those seen at once were reported) */
	{
		Buf			seen = {0};
		const char *params[1];

		buf_adds(&seen, "{0");
		for (int i = 0; i < k->nreported; i++)
			buf_addf(&seen, ",%lld", k->reported[i]);
		buf_adds(&seen, "}");
		params[0] = buf_cstr(&seen);
		res = query(k, "SELECT id, request_id, message, coalesce(last_error, '') FROM elmo_received_message"
					" WHERE state = 'apply_failed' AND NOT id = ANY ($1::bigint[]) ORDER BY id", 1, params);
		for (int r = 0; res && r < PQntuples(res); r++)
		{
			long		at = idset_find(&k->accepted, (const unsigned char *) PQgetvalue(res, r, 1),
										(size_t) PQgetlength(res, r, 1));

			add_failure(f, &nf, maxf, "appliable", "apply failed after the answers",
						"case %d: accepted %s (row %s) failed to apply: %s", at >= 0 ? k->accepted.case_no[at] : -1,
						PQgetvalue(res, r, 2), PQgetvalue(res, r, 0), PQgetvalue(res, r, 3));
		}
		PQclear(res);
		buf_free(&seen);
	}
	for (int i = 0; i < k->npending; i++)
	{
		Pending    *p = &k->pending[i];
		char		idtext[32];
		const char *params[1] = {idtext};

		snprintf(idtext, sizeof(idtext), "%lld", p->id);
		res = query(k, "SELECT state, coalesce(last_error, '') FROM elmo_received_message WHERE id = $1", 1, params);
		if (res && PQntuples(res) == 1)
		{
			if (strcmp(PQgetvalue(res, 0, 0), "applied") == 0 &&
					 !blocks_match(k, p->id, p->pairs, p->npairs, why, sizeof(why)))
				add_failure(f, &nf, maxf, "RFC 3339", "stored instants differ from those sent",
							"case %d: %s", p->case_no, why);
		}
		PQclear(res);
		free(p->pairs);
	}
	k->npending = 0;
	read_log(k);
	nf += checker_health(k, f + nf, maxf - nf);
	return nf;
}
