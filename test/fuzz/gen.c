/*
 * gen.c — one case from (seed, index): which captured requests, how many
 * connections and requests, which mutations.  Nothing but the random
 * generator decides, so a seed and an index always give the same case.
 */
#include "fuzz.h"
#include "mutate.h"

#include <stdio.h>
#include <string.h>

void
gen_request_id(Rng *r, char out[33])
{
	static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

	for (int i = 0; i < 32; i++)
		out[i] = alphabet[rng_below(r, 36)];
	out[32] = '\0';
}

/* a captured request, or now and then a health check, with a fresh X-Request-ID */
static void
base_request(Gen *g, Rng *r, Req *q, Buf *log)
{
	char		id[33];

	if (rng_chance(r, 3))
	{
		memset(q, 0, sizeof(*q));
		buf_sets(&q->line, "GET /oscp/fp/2.0/health HTTP/1.1");
		req_header_add(q, "Host", "127.0.0.1", 9);
		q->framing = FR_NONE;
		buf_adds(log, "health; ");
		return;
	}
	{
		Seed	   *s = &g->seeds[rng_below(r, (uint32_t) g->nseeds)];

		req_copy(q, &s->req);
		buf_addf(log, "%s; ", s->file);
	}
	gen_request_id(r, id);
	set_header(q, "X-Request-ID", id);
}

/* the mutations of one request; `last` allows framing that ends the connection */
static void
mutate_request(Rng *r, Req *q, bool last, Buf *log)
{
	int			n;

	if (rng_chance(r, 10))
	{
		buf_adds(log, "unchanged; ");
		return;
	}
	n = 1 + (rng_chance(r, 60) ? 0 : (int) rng_below(r, 3));
	for (int i = 0; i < n; i++)
	{
		int			k = (int) rng_below(r, 100);

		if (k < 50)
			mutate_body(q, r, log);
		else if (k < 75)
			mutate_header(q, r, log);
		else if (k < 85)
			mutate_line(q, r, log);
		else
			mutate_framing(q, r, last, log);
	}
}

void
gen_case(Gen *g, uint64_t index, Case *c)
{
	Rng			r;
	int			layout;

	memset(c, 0, sizeof(*c));
	rng_seed(&r, g->seed, index + 1);
	snprintf(c->name, sizeof(c->name), "seed %llu case %llu",
			 (unsigned long long) g->seed, (unsigned long long) index);
	layout = (int) rng_below(&r, 100);
	if (layout < 78)
	{
		/* one request on one connection, sometimes written oddly */
		Conn	   *k = &c->conn[0];
		int			w = (int) rng_below(&r, 100);

		c->nconn = 1;
		k->nreq = 1;
		k->truncate = -1;
		base_request(g, &r, &k->req[0], &c->mutations);
		mutate_request(&r, &k->req[0], true, &c->mutations);
		if (w < 4)
		{
			k->mode = SEND_SLOW;
			k->pieces = 2 + (int) rng_below(&r, 12);
			k->delay_ms = 1 + (int) rng_below(&r, 8);
			buf_addf(&c->mutations, "written in %d pieces %d ms apart; ", k->pieces, k->delay_ms);
		}
		else if (w < 8)
		{
			Buf			wire = {0};

			req_serialize(&k->req[0], "${TOKEN}", &wire);
			k->truncate = (long) rng_below(&r, (uint32_t) wire.len);
			buf_addf(&c->mutations, "cut after %ld of about %zu bytes; ", k->truncate, wire.len);
			buf_free(&wire);
		}
		else if (w < 10)
		{
			static const char *const pre[] = {"\r\n", "\r\n\r\n", "\n", " ", "GET", "\x16\x03\x01\x00\xa5",
			"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"};
			const char *p = PICK(&r, pre);

			buf_adds(&k->prefix, p);
			buf_addf(&c->mutations, "\"%s\" before the request; ", preview(k->prefix.p, k->prefix.len, 30));
		}
		else if (w < 12)
		{
			static const char *const post[] = {"x", "\r\n", "GET / HTTP/1.1\r\n", "\0\0\0", "POST"};
			const char *p = PICK(&r, post);

			buf_add(&k->trailing, p, p[0] ? strlen(p) : 3);
			buf_addf(&c->mutations, "\"%s\" after the request; ", preview(k->trailing.p, k->trailing.len, 30));
		}
	}
	else if (layout < 86)
	{
		/* several requests on one connection: all at once (pipelined) or one by one */
		Conn	   *k = &c->conn[0];

		c->nconn = 1;
		k->nreq = 2 + (int) rng_below(&r, 3);
		k->truncate = -1;
		k->mode = rng_chance(&r, 50) ? SEND_ALL : SEND_SEQUENTIAL;
		buf_addf(&c->mutations, "%d requests %s: ", k->nreq, k->mode == SEND_ALL ? "pipelined" : "kept alive");
		for (int i = 0; i < k->nreq; i++)
		{
			base_request(g, &r, &k->req[i], &c->mutations);
			if (rng_chance(&r, 60))
				mutate_request(&r, &k->req[i], i == k->nreq - 1, &c->mutations);
		}
	}
	else if (layout < 96)
	{
		/* several connections at once: their requests may share one commit */
		c->nconn = 2 + (int) rng_below(&r, 3);
		buf_addf(&c->mutations, "%d connections at once: ", c->nconn);
		for (int i = 0; i < c->nconn; i++)
		{
			c->conn[i].nreq = 1;
			c->conn[i].truncate = -1;
			base_request(g, &r, &c->conn[i].req[0], &c->mutations);
			if (rng_chance(&r, 60))
				mutate_request(&r, &c->conn[i].req[0], true, &c->mutations);
		}
	}
	else
	{
		/* the same X-Request-ID twice: the second answered 204 and not stored again, or refused */
		Conn	   *k = &c->conn[0];

		c->nconn = 1;
		k->nreq = 2;
		k->truncate = -1;
		k->mode = SEND_SEQUENTIAL;
		buf_adds(&c->mutations, "same X-Request-ID twice: ");
		base_request(g, &r, &k->req[0], &c->mutations);
		req_copy(&k->req[1], &k->req[0]);
		if (rng_chance(&r, 50))
			mutate_body(&k->req[1], &r, &c->mutations);
	}
	/* the log ends without its separator */
	if (c->mutations.len >= 2)
		c->mutations.len -= 2;
	buf_cstr(&c->mutations);
}

/* a forecast as ELMO sends it (the first captured day-ahead), with its own id */
void
gen_valid_forecast(Gen *g, Case *c, const char *request_id)
{
	Seed	   *s = NULL;

	memset(c, 0, sizeof(*c));
	for (int i = 0; i < g->nseeds && s == NULL; i++)
		if (strstr(g->seeds[i].file, "day-ahead") != NULL)
			s = &g->seeds[i];
	if (s == NULL)
		s = &g->seeds[0];
	snprintf(c->name, sizeof(c->name), "final valid forecast (%s)", s->file);
	c->nconn = 1;
	c->conn[0].nreq = 1;
	c->conn[0].truncate = -1;
	req_copy(&c->conn[0].req[0], &s->req);
	set_header(&c->conn[0].req[0], "X-Request-ID", request_id);
	buf_sets(&c->mutations, "unchanged");
}
