/*
 * request.c — one HTTP request as the fuzzer holds it (request line,
 * headers in order, body, framing) and its bytes on the wire.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
req_free(Req *r)
{
	buf_free(&r->line);
	for (int i = 0; i < r->nh; i++)
	{
		buf_free(&r->h[i].name);
		buf_free(&r->h[i].value);
	}
	free(r->h);
	buf_free(&r->body);
	buf_free(&r->cl_text);
	memset(r, 0, sizeof(*r));
}

void
case_free(Case *c)
{
	for (int i = 0; i < c->nconn; i++)
	{
		for (int j = 0; j < c->conn[i].nreq; j++)
			req_free(&c->conn[i].req[j]);
		buf_free(&c->conn[i].prefix);
		buf_free(&c->conn[i].trailing);
	}
	buf_free(&c->mutations);
	memset(c, 0, sizeof(*c));
}

Header *
req_header_insert(Req *r, int at, const char *name, const void *value, size_t vlen)
{
	if (r->nh == r->hcap)
	{
		r->hcap = r->hcap ? r->hcap * 2 : 16;
		r->h = realloc(r->h, sizeof(Header) * (size_t) r->hcap);
	}
	if (at < 0 || at > r->nh)
		at = r->nh;
	memmove(&r->h[at + 1], &r->h[at], sizeof(Header) * (size_t) (r->nh - at));
	memset(&r->h[at], 0, sizeof(Header));
	buf_sets(&r->h[at].name, name);
	buf_set(&r->h[at].value, value, vlen);
	r->nh++;
	return &r->h[at];
}

Header *
req_header_add(Req *r, const char *name, const void *value, size_t vlen)
{
	return req_header_insert(r, r->nh, name, value, vlen);
}

int
req_header_find(const Req *r, const char *name, int from)
{
	for (int i = from; i < r->nh; i++)
		if (buf_ieqs(&r->h[i].name, name))
			return i;
	return -1;
}

void
req_header_del(Req *r, int i)
{
	buf_free(&r->h[i].name);
	buf_free(&r->h[i].value);
	memmove(&r->h[i], &r->h[i + 1], sizeof(Header) * (size_t) (r->nh - i - 1));
	r->nh--;
}

void
req_copy(Req *dst, const Req *src)
{
	memset(dst, 0, sizeof(*dst));
	buf_copy(&dst->line, &src->line);
	for (int i = 0; i < src->nh; i++)
	{
		Header	   *h = req_header_add(dst, "", src->h[i].value.p, src->h[i].value.len);

		buf_copy(&h->name, &src->h[i].name);
	}
	buf_copy(&dst->body, &src->body);
	dst->framing = src->framing;
	dst->cl_delta = src->cl_delta;
	dst->chunk = src->chunk;
	buf_copy(&dst->cl_text, &src->cl_text);
	dst->lf_only = src->lf_only;
}

/* word n (0-based) of the request line, split on single spaces */
static const char *
line_word(const Req *r, int n)
{
	static char out[3][512];
	static int	slot;
	char	   *o = out[slot = (slot + 1) % 3];
	size_t		i = 0,
				start;

	for (int w = 0; w < n; w++)
	{
		while (i < r->line.len && r->line.p[i] != ' ')
			i++;
		if (i < r->line.len)
			i++;
	}
	start = i;
	while (i < r->line.len && r->line.p[i] != ' ')
		i++;
	snprintf(o, sizeof(out[0]), "%.*s", (int) (i - start), (const char *) r->line.p + start);
	return o;
}

const char *
req_method(const Req *r)
{
	return line_word(r, 0);
}

const char *
req_target(const Req *r)
{
	return line_word(r, 1);
}

const char *
req_message(const Req *r)
{
	const char *t = req_target(r);
	const char *slash = strrchr(t, '/');

	return slash ? slash + 1 : "";
}

/* header value with ${TOKEN} and its variants expanded */
static void
expand(Buf *out, const Buf *v, const char *token)
{
	static const struct
	{
		const char *name;
		int			how;
	}			vars[] = {
		{"${TOKEN}", 0}, {"${TOKEN_CUT}", 1}, {"${TOKEN_WRONG}", 2},
	};
	size_t		tl = strlen(token);

	for (size_t i = 0; i < v->len;)
	{
		bool		done = false;

		for (size_t k = 0; k < sizeof(vars) / sizeof(vars[0]) && !done; k++)
		{
			size_t		n = strlen(vars[k].name);

			if (i + n <= v->len && memcmp(v->p + i, vars[k].name, n) == 0)
			{
				if (vars[k].how == 0)
					buf_add(out, token, tl);
				else if (vars[k].how == 1)
					buf_add(out, token, tl ? tl - 1 : 0);
				else
				{
					/* same length, last character changed */
					buf_add(out, token, tl ? tl - 1 : 0);
					buf_addc(out, tl && token[tl - 1] == 'A' ? 'B' : 'A');
				}
				i += n;
				done = true;
			}
		}
		if (!done)
			buf_addc(out, v->p[i++]);
	}
}

void
req_expand_value(Buf *out, const Buf *v, const char *token)
{
	out->len = 0;
	expand(out, v, token);
}

void
req_serialize(const Req *r, const char *token, Buf *out)
{
	const char *eol = r->lf_only ? "\n" : "\r\n";

	buf_add(out, r->line.p, r->line.len);
	buf_adds(out, eol);
	for (int i = 0; i < r->nh; i++)
	{
		if (r->h[i].name.len && r->h[i].name.p[0] == 0x01)
		{
			/* a malformed line: the name alone, no colon */
			buf_add(out, r->h[i].name.p + 1, r->h[i].name.len - 1);
			buf_adds(out, eol);
			continue;
		}
		buf_add(out, r->h[i].name.p, r->h[i].name.len);
		buf_adds(out, ": ");
		expand(out, &r->h[i].value, token);
		buf_adds(out, eol);
	}
	switch (r->framing)
	{
		case FR_LENGTH:
			buf_addf(out, "Content-Length: %ld%s", (long) r->body.len + r->cl_delta, eol);
			break;
		case FR_BOTH:
			buf_addf(out, "Content-Length: %zu%s", r->body.len, eol);
			/* fall through */
		case FR_CHUNKED:
		case FR_CHUNKED_BAD:
		case FR_CHUNKED_UNFINISHED:
			buf_addf(out, "Transfer-Encoding: chunked%s", eol);
			break;
		case FR_NONE:
			break;
		case FR_CL_TWICE:
			buf_addf(out, "Content-Length: %zu%sContent-Length: %zu%s", r->body.len, eol, r->body.len + 1, eol);
			break;
		case FR_CL_TEXT:
			buf_adds(out, "Content-Length: ");
			buf_add(out, r->cl_text.p, r->cl_text.len);
			buf_adds(out, eol);
			break;
	}
	buf_adds(out, eol);
	if (r->framing == FR_CHUNKED || r->framing == FR_BOTH || r->framing == FR_CHUNKED_BAD ||
		r->framing == FR_CHUNKED_UNFINISHED)
	{
		size_t		step = r->chunk > 0 ? (size_t) r->chunk : 1024;
		size_t		bad_at = r->body.len / 2;

		for (size_t i = 0; i < r->body.len; i += step)
		{
			size_t		n = r->body.len - i < step ? r->body.len - i : step;

			if (r->framing == FR_CHUNKED_BAD && i <= bad_at && bad_at < i + step)
				buf_addf(out, "%zxzz\r\n", n);	/* not a hexadecimal size */
			else
				buf_addf(out, "%zx\r\n", n);
			buf_add(out, r->body.p + i, n);
			buf_adds(out, "\r\n");
		}
		if (r->framing == FR_CHUNKED_BAD && r->body.len == 0)
			buf_adds(out, "-1\r\n");
		if (r->framing != FR_CHUNKED_UNFINISHED)
			buf_adds(out, "0\r\n\r\n");
	}
	else
		buf_add(out, r->body.p, r->body.len);
}
