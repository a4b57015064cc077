/*
 * mutate_http.c — mutations of everything around the body: the request line
 * (method, path, version), the headers (Authorization, X-Request-ID,
 * Content-Type, odd and malformed lines) and the framing (chunked, lying or
 * doubled Content-Length, none at all).
 */
#include "fuzz.h"
#include "mutate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* replaces the first header of that name (or adds it) */
void
set_header(Req *q, const char *name, const char *value)
{
	int			i = req_header_find(q, name, 0);

	if (i < 0)
		req_header_add(q, name, value, strlen(value));
	else
		buf_sets(&q->h[i].value, value);
}

static void
del_headers(Req *q, const char *name)
{
	int			i;

	while ((i = req_header_find(q, name, 0)) >= 0)
		req_header_del(q, i);
}

/* ---------------------------------------------------------------- headers */

static const char *const auth_forms[] = {
	"Token ${TOKEN}", "${TOKEN}", "Bearer ${TOKEN}", "token ${TOKEN}", "TOKEN ${TOKEN}",
	"Token  ${TOKEN}", "Token\t${TOKEN}", "Token ${TOKEN} ", " Token ${TOKEN}", "Token ${TOKEN}x",
	"Token ${TOKEN_CUT}", "Token ${TOKEN_WRONG}", "${TOKEN_WRONG}", "Token", "Token ", "",
	"Basic dXNlcjpwYXNz", "Token ${TOKEN}${TOKEN}", "Token \"${TOKEN}\"", "Token ${TOKEN},Token x",
	"Token x", "Token\x7f${TOKEN}", "Token \xc3\xa9${TOKEN}",
};

static void
request_id_mutation(Req *q, Rng *r, Buf *log)
{
	static const int lens[] = {1, 16, 31, 32, 33, 63, 64, 70, 71, 72, 73, 100, 128, 200, 255, 256, 1000, 8000};
	static const char *const odd[] = {
		"", " ", "AB CD", " ABCDEF", "ABCDEF ", "AB\tCD", "AB\x01" "CD", "AB\x7f" "CD", "\xc3\xa9t\xc3\xa9",
		"\xff\xfe", "AB\"CD", "AB\\CD", "AB'CD", "AB%00CD", "AB,CD", "{\"a\":1}", "null",
		"'); DROP TABLE elmo_received_message; --", "\xe5\x8d\x83", "-", "0", "AB\x1b[31mCD",
		"AB\rCD", "\xf0\x9f\x98\x80", "a\xed\xa0\x80" "b", "x\xc3",
	};
	char		id[33];
	int			k = (int) rng_below(r, 10);

	gen_request_id(r, id);
	if (k < 4)
	{
		int			n = PICK(r, lens);
		Buf			b = {0};

		for (int i = 0; i < n; i++)
			buf_addc(&b, id[i % 32]);
		/* distinct from every other case's: the case's own id leads */
		set_header(q, "X-Request-ID", buf_cstr(&b));
		buf_addf(log, "X-Request-ID of %d characters; ", n);
		buf_free(&b);
	}
	else if (k < 7)
	{
		const char *o = PICK(r, odd);
		Buf			b = {0};

		/* the odd part inside a unique id, so that two cases never share one */
		buf_add(&b, id, 12);
		buf_adds(&b, o);
		if (rng_chance(r, 50) || o[0] == '\0')
			buf_add(&b, id + 12, 8);
		if (rng_chance(r, 15))
			buf_sets(&b, o);	/* or alone */
		set_header(q, "X-Request-ID", buf_cstr(&b));
		buf_addf(log, "X-Request-ID \"%s\"; ", preview(b.p, b.len, 60));
		buf_free(&b);
	}
	else if (k < 8)
	{
		del_headers(q, "X-Request-ID");
		buf_adds(log, "no X-Request-ID; ");
	}
	else if (k < 9)
	{
		char		id2[33];

		gen_request_id(r, id2);
		req_header_add(q, rng_chance(r, 50) ? "X-Request-ID" : "x-request-id",
					   rng_chance(r, 50) ? id2 : id, 32);
		buf_adds(log, "two X-Request-ID headers; ");
	}
	else
	{
		int			i = req_header_find(q, "X-Request-ID", 0);

		if (i >= 0)
			buf_sets(&q->h[i].name, rng_chance(r, 50) ? "x-request-id" : "X-REQUEST-ID");
		buf_adds(log, "X-Request-ID name in another case; ");
	}
}

static void
malformed_line(Req *q, Rng *r, Buf *log)
{
	static const char *const names[] = {
		"X-Request-ID ", " X-Request-ID", "X Request ID", "X-Request-ID\t", "", ":", "X-\xc3\xa9",
		"X-A\x01", "Authorization ", "Content-Length ", "Transfer-Encoding ",
	};
	int			k = (int) rng_below(r, 6);

	if (k == 0)
	{
		const char *n = PICK(r, names);
		char		id[33];

		gen_request_id(r, id);
		req_header_insert(q, (int) rng_below(r, (uint32_t) q->nh + 1), n, id, 32);
		buf_addf(log, "header named \"%s\"; ", preview((const unsigned char *) n, strlen(n), 30));
	}
	else if (k == 1)
	{
		/* obs-fold: a value continued on the next line */
		int			i = (int) rng_below(r, (uint32_t) q->nh);

		if (q->nh)
			buf_adds(&q->h[i].value, "\r\n continued");
		buf_adds(log, "folded header line; ");
	}
	else if (k == 2)
	{
		int			i = (int) rng_below(r, (uint32_t) q->nh);
		static const char *const bytes[] = {"\0", "\r", "\n", "\x01", "\xff"};
		const char *b = PICK(r, bytes);

		if (q->nh)
			buf_insert(&q->h[i].value, rng_below(r, (uint32_t) q->h[i].value.len + 1), b, b[0] ? 1 : 1);
		buf_addf(log, "byte %s inside a header value; ", preview((const unsigned char *) b, 1, 8));
	}
	else if (k == 3)
	{
		/* a line with no colon (a name starting with \x01 is written alone) */
		req_header_insert(q, (int) rng_below(r, (uint32_t) q->nh + 1), "\x01X-No-Colon-Here", "", 0);
		buf_adds(log, "header line without a colon; ");
	}
	else if (k == 4)
	{
		static const int counts[] = {100, 500, 2000, 10000};
		int			n = PICK(r, counts);

		for (int i = 0; i < n; i++)
		{
			char		name[32];

			snprintf(name, sizeof(name), "X-Filler-%d", i);
			req_header_add(q, name, "1", 1);
		}
		buf_addf(log, "%d extra headers; ", n);
	}
	else
	{
		static const int lens[] = {1000, 8000, 16000, 65536, 200000};
		int			n = PICK(r, lens);
		char	   *v = malloc((size_t) n);

		memset(v, 'v', (size_t) n);
		req_header_add(q, "X-Large", v, (size_t) n);
		free(v);
		buf_addf(log, "a %d-byte header; ", n);
	}
}

void
mutate_header(Req *q, Rng *r, Buf *log)
{
	switch (rng_below(r, 10))
	{
		case 0:
		case 1:
			{
				const char *a = PICK(r, auth_forms);

				if (rng_chance(r, 10))
				{
					del_headers(q, "Authorization");
					buf_adds(log, "no Authorization; ");
				}
				else if (rng_chance(r, 15))
				{
					req_header_insert(q, rng_chance(r, 50) ? 0 : q->nh, "Authorization", a, strlen(a));
					buf_addf(log, "a second Authorization \"%s\"; ", a);
				}
				else
				{
					set_header(q, "Authorization", a);
					buf_addf(log, "Authorization \"%s\"; ", preview((const unsigned char *) a, strlen(a), 60));
				}
			}
			break;
		case 2:
		case 3:
		case 4:
			request_id_mutation(q, r, log);
			break;
		case 5:
			{
				static const char *const ct[] = {
					"application/json; charset=utf-8", "APPLICATION/JSON", "application/json;charset=latin1",
					"text/plain", "application/jsonx", "application/json-patch+json", "", "application/json ",
					" application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
					"application/json, text/plain", "*/*", "application/json; charset=utf-16",
				};
				const char *c = PICK(r, ct);

				if (rng_chance(r, 15))
				{
					del_headers(q, "Content-Type");
					buf_adds(log, "no Content-Type; ");
				}
				else
				{
					set_header(q, "Content-Type", c);
					buf_addf(log, "Content-Type \"%s\"; ", c);
				}
			}
			break;
		case 6:
			{
				static const char *const corr[] = {"ABC", "", "AB CD", "AB\x01" "CD", "\xff", "x"};
				const char *c = PICK(r, corr);
				Buf			b = {0};

				buf_adds(&b, c);
				if (rng_chance(r, 30))
					for (int i = 0; i < 5000; i++)
						buf_addc(&b, 'C');
				req_header_add(q, "X-Correlation-ID", b.p, b.len);
				buf_addf(log, "X-Correlation-ID \"%s\"; ", preview(b.p, b.len, 30));
				buf_free(&b);
			}
			break;
		case 7:
			{
				static const char *const extra[][2] = {
					{"Expect", "100-continue"}, {"Connection", "close"}, {"Connection", "keep-alive"},
					{"Connection", "Upgrade"}, {"Upgrade", "h2c"}, {"Content-Encoding", "gzip"},
					{"Accept-Encoding", "*"}, {"Host", ""}, {"Host", "a\xff"}, {"Expect", "999-nonsense"},
					{"Trailer", "X-Request-ID"}, {"X-HTTP-Method-Override", "DELETE"},
					{"Transfer-Encoding", "identity"},
				};
				int			k = (int) rng_below(r, sizeof(extra) / sizeof(extra[0]));

				if (rng_chance(r, 20))
				{
					del_headers(q, "Host");
					buf_adds(log, "no Host; ");
				}
				else
				{
					req_header_add(q, extra[k][0], extra[k][1], strlen(extra[k][1]));
					buf_addf(log, "%s: %s; ", extra[k][0], extra[k][1]);
				}
			}
			break;
		default:
			malformed_line(q, r, log);
	}
}

/* ---------------------------------------------------------------- request line */

void
mutate_line(Req *q, Rng *r, Buf *log)
{
	static const char *const methods[] = {
		"GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "post", "Post",
		"POSTX", "P\xc3\x96ST", "PO ST", "", "PROPFIND", "BREW",
	};
	static const char *const messages[] = {
		"register", "handshake", "heartbeat", "update_group_capacity_forecast", "health",
		"handshake_acknowledge", "adjust_group_capacity_forecast", "group_capacity_compliance_error",
		"update_group_measurements", "update_asset_measurements", "nonexistent", "",
	};
	static const char *const paths[] = {
		"/oscp/fp/2.0/@M@/", "//oscp/fp/2.0/@M@", "/oscp/fp/2.0//@M@", "/oscp/fp/2.0/@M@?x=1",
		"/oscp/fp/2.0/@M@#frag", "/oscp/fp/2.0/%72egister", "/oscp/fp/2.0/../2.0/@M@",
		"/oscp/fp/2.0/./@M@", "http://127.0.0.1/oscp/fp/2.0/@M@", "*", "/", "",
		"/OSCP/FP/2.0/@M@", "/oscp/fp/2.0/@M@%00", "/oscp/fp/2.0/@M@\xff", "/oscp/fp/2.0/@M@;x",
		"/oscp/fp/2.0/@M@.json", "/oscp/fp/2.0", "/oscp/fp/2.0/", "/oscp/fp/2.1/@M@",
		"/oscp/fp/2.0/@M@ HTTP/1.1 x", "oscp/fp/2.0/@M@", "/oscp/fp/2.0/@M@\t",
	};
	static const char *const versions[] = {
		"HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "", "http/1.1", "HTTP/1.1x", "HTTP/11",
		"HTTP/1.1 ", "HTTP/3", "HTTP/1.01",
	};
	char		method[64],
				target[8192],
				version[32];

	copy_str(method, sizeof(method), req_method(q));
	copy_str(target, sizeof(target), req_target(q));
	snprintf(version, sizeof(version), "HTTP/1.1");
	switch (rng_below(r, 5))
	{
		case 0:
			copy_str(method, sizeof(method), PICK(r, methods));
			buf_addf(log, "method \"%s\"; ", preview((const unsigned char *) method, strlen(method), 20));
			break;
		case 1:
		case 2:
			snprintf(target, sizeof(target), "/oscp/fp/2.0/%s", PICK(r, messages));
			buf_addf(log, "path %s; ", target);
			break;
		case 3:
			{
				const char *p = PICK(r, paths);
				const char *at = strstr(p, "@M@");
				const char *msg = req_message(q);

				if (at)
					snprintf(target, sizeof(target), "%.*s%s%s", (int) (at - p), p, msg, at + 3);
				else
					copy_str(target, sizeof(target), p);
				if (rng_chance(r, 5))
				{
					size_t		n = strlen(target);

					while (n < 8000)
						target[n++] = 'p';
					target[n] = '\0';
				}
				buf_addf(log, "path \"%s\"; ", preview((const unsigned char *) target, strlen(target), 60));
			}
			break;
		default:
			copy_str(version, sizeof(version), PICK(r, versions));
			buf_addf(log, "version \"%s\"; ", version);
	}
	buf_sets(&q->line, method);
	buf_addc(&q->line, ' ');
	buf_adds(&q->line, target);
	if (version[0] || rng_chance(r, 50))
	{
		buf_addc(&q->line, ' ');
		buf_adds(&q->line, version);
	}
}

/* ---------------------------------------------------------------- framing */

void
mutate_framing(Req *q, Rng *r, bool last, Buf *log)
{
	static const int chunks[] = {1, 7, 64, 100, 1000, 4096, 100000};
	int			k = (int) rng_below(r, last ? 10 : 3);

	switch (k)
	{
		case 0:
		case 1:
			q->framing = FR_CHUNKED;
			q->chunk = PICK(r, chunks);
			buf_addf(log, "chunked by %d; ", q->chunk);
			break;
		case 2:
			q->framing = FR_BOTH;
			q->chunk = PICK(r, chunks);
			buf_addf(log, "chunked by %d and Content-Length; ", q->chunk);
			break;
		case 3:
		case 4:
			{
				static const long deltas[] = {-1, -2, -10, -100, 1, 2, 100, 100000};
				long		dlt = PICK(r, deltas);

				if ((long) q->body.len + dlt < 0)
					dlt = 1;
				q->framing = FR_LENGTH;
				q->cl_delta = dlt;
				buf_addf(log, "Content-Length %+ld off; ", dlt);
			}
			break;
		case 5:
			q->framing = FR_NONE;
			buf_adds(log, "no Content-Length; ");
			break;
		case 6:
			q->framing = FR_CL_TWICE;
			buf_adds(log, "two Content-Length headers that disagree; ");
			break;
		case 7:
			{
				static const char *const forms[] = {"+@", " @", "@, @", "0x@", "-1", "18446744073709551617",
				"00000@", "@ ", "@.0", "@abc", "", "99999999999999999999999999", "-0", "@\x01"};
				const char *f = PICK(r, forms);
				char		n[32];

				snprintf(n, sizeof(n), "%zu", q->body.len);
				q->cl_text.len = 0;
				for (const char *p = f; *p; p++)
					if (*p == '@')
						buf_adds(&q->cl_text, n);
					else
						buf_addc(&q->cl_text, *p);
				q->framing = FR_CL_TEXT;
				buf_addf(log, "Content-Length \"%s\"; ", preview(q->cl_text.p, q->cl_text.len, 30));
			}
			break;
		case 8:
			q->framing = FR_CHUNKED_BAD;
			q->chunk = PICK(r, chunks);
			buf_adds(log, "broken chunk size; ");
			break;
		default:
			q->framing = FR_CHUNKED_UNFINISHED;
			q->chunk = PICK(r, chunks);
			buf_adds(log, "no last chunk; ");
	}
}
