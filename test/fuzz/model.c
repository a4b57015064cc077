/*
 * model.c — what the server should make of one request, from the bytes we
 * sent: is it a complete, well-formed HTTP/1.1 request (then it must be
 * answered), which body should be stored, which X-Request-ID, is the
 * Authorization valid.  Deliberately tolerant where HTTP lets a server
 * choose (odd but legal syntax: answer or close).
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PREFIX "/oscp/fp/2.0/"

static const char *const messages[] = {"register", "handshake", "heartbeat", "update_group_capacity_forecast", "health"};
static const char *const not_implemented[] = {
	"handshake_acknowledge", "adjust_group_capacity_forecast", "group_capacity_compliance_error",
	"update_group_measurements", "update_asset_measurements",
};

void
model_free(Model *m)
{
	for (int i = 0; i < 4; i++)
		buf_free(&m->ids[i]);
	buf_free(&m->body);
}

static int
hexdigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void
trim(Buf *b)
{
	size_t		s = 0,
				e = b->len;

	while (s < e && (b->p[s] == ' ' || b->p[s] == '\t'))
		s++;
	while (e > s && (b->p[e - 1] == ' ' || b->p[e - 1] == '\t'))
		e--;
	memmove(b->p, b->p + s, e - s);
	b->len = e - s;
	buf_cstr(b);
}

/* "Token <t>", "<t>", any case of the scheme, spaces around: what a lenient server may take */
static bool
auth_matches(const Buf *v, const char *token)
{
	Buf			b = {0};
	size_t		i = 0,
				tl = strlen(token);
	bool		ok;

	buf_copy(&b, v);
	trim(&b);
	if (b.len >= 6 && strncasecmp((const char *) b.p, "token", 5) == 0 && (b.p[5] == ' ' || b.p[5] == '\t'))
	{
		i = 5;
		while (i < b.len && (b.p[i] == ' ' || b.p[i] == '\t'))
			i++;
	}
	ok = b.len - i == tl && memcmp(b.p + i, token, tl) == 0;
	buf_free(&b);
	return ok;
}

static bool
all_digits(const Buf *b)
{
	if (b->len == 0)
		return false;
	for (size_t i = 0; i < b->len; i++)
		if (!isdigit(b->p[i]))
			return false;
	return true;
}

void
model_build(const Req *r, const char *token, Model *m)
{
	const char *method = req_method(r);
	const char *target = req_target(r);
	char		path[600];
	int			spaces = 0;
	size_t		head_bytes = r->line.len;
	Buf			v = {0};

	memset(m, 0, sizeof(*m));
	m->well_framed = true;
	copy_str(m->method, sizeof(m->method), method);

	/* the request line: METHOD SP /target SP HTTP/1.x */
	for (size_t i = 0; i < r->line.len; i++)
	{
		unsigned char ch = r->line.p[i];

		if (ch == ' ')
			spaces++;
		else if (ch < 0x21 || ch >= 0x7f)
			m->odd_syntax = true;
	}
	if (spaces != 2 || method[0] == '\0' || target[0] == '\0')
		m->odd_syntax = true;
	for (const char *p = method; *p; p++)
		if (!is_tchar((unsigned char) *p))
			m->odd_syntax = true;
	if (strcmp(method, "CONNECT") == 0 || strcmp(method, "TRACE") == 0 || strcmp(method, "OPTIONS") == 0)
		m->odd_syntax = true;	/* their own rules about targets and bodies */
	{
		const char *ver = strrchr((const char *) r->line.p, ' ');

		if (ver == NULL || (strcmp(ver + 1, "HTTP/1.1") != 0 && strcmp(ver + 1, "HTTP/1.0") != 0))
		{
			m->odd_syntax = true;
			m->version_odd = true;
		}
	}
	{
		/* the path as the server sees it: no query, percent-escapes decoded */
		size_t		k = 0;

		for (const char *p = target; *p && *p != '?' && k + 1 < sizeof(path); p++)
		{
			int			hi,
						lo;

			if (*p == '%' && (hi = hexdigit(p[1])) >= 0 && (lo = hexdigit(p[2])) >= 0)
			{
				path[k++] = (char) (hi * 16 + lo);
				p += 2;
			}
			else
				path[k++] = *p;
		}
		path[k] = '\0';
	}
	if (strncmp(path, PREFIX, strlen(PREFIX)) == 0)
	{
		const char *name = path + strlen(PREFIX);

		for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++)
			if (strcmp(name, messages[i]) == 0)
				copy_str(m->message, sizeof(m->message), name);
		for (size_t i = 0; i < sizeof(not_implemented) / sizeof(not_implemented[0]); i++)
			if (strncmp(name, not_implemented[i], strlen(not_implemented[i])) == 0)
				m->not_implemented = true;
		m->health = strcmp(m->message, "health") == 0;
	}
	if (strstr(target, "handshake_acknowledge") || strstr(target, "adjust_group_capacity_forecast") ||
		strstr(target, "group_capacity_compliance_error") || strstr(target, "update_group_measurements") ||
		strstr(target, "update_asset_measurements"))
		m->not_implemented = true;

	/* headers */
	for (int i = 0; i < r->nh; i++)
	{
		const Header *h = &r->h[i];

		head_bytes += h->name.len + h->value.len + 4;
		if (h->name.len == 0 || h->name.p[0] == 0x01)
			m->odd_syntax = true;
		/* libmicrohttpd 0.9.75 ends the headers at a line with no name (": x") */
		if (h->name.len == 0)
			m->headers_may_end = true;
		for (size_t k = 0; k < h->name.len; k++)
			if (!is_tchar(h->name.p[k]))
				m->odd_syntax = true;
		for (size_t k = 0; k < h->value.len; k++)
		{
			if ((h->value.p[k] < 0x20 && h->value.p[k] != '\t') || h->value.p[k] == 0x7f)
				m->odd_syntax = true;
			if (h->value.p[k] == '\r' || h->value.p[k] == '\n')
				m->headers_may_end = true;
		}
		if (buf_ieqs(&h->name, "Transfer-Encoding") || buf_ieqs(&h->name, "Content-Length") ||
			buf_ieqs(&h->name, "Upgrade") || buf_ieqs(&h->name, "Trailer") ||
			buf_ieqs(&h->name, "Content-Encoding"))
			m->odd_syntax = true;	/* framing the mutations added by hand */
		if (buf_ieqs(&h->name, "Expect") && !buf_ieqs(&h->value, "100-continue"))
			m->odd_syntax = true;
		req_expand_value(&v, &h->value, token);
		for (int cut = 0; cut < 2; cut++)
		{
			/*
			 * The HTTP library hands header values over as C strings: a NUL
			 * ends them there, and the listener cannot see past it (HTTP says
			 * to refuse such a value, or read the NUL as a space).
			 */
			if (cut)
			{
				unsigned char *nul = memchr(v.p, '\0', v.len);

				if (nul == NULL)
					break;
				v.len = (size_t) (nul - v.p);
			}
			if (buf_ieqs(&h->name, "Authorization") && auth_matches(&v, token))
				m->auth_ok = true;
			if (buf_ieqs(&h->name, "X-Request-ID") && m->nids < 4)
			{
				buf_copy(&m->ids[m->nids], &v);
				trim(&m->ids[m->nids]);
				m->nids++;
			}
		}
	}
	buf_free(&v);
	if (head_bytes > 8000 || r->nh > 100)
		m->odd_syntax = true;	/* servers limit header size: 431, 413, 400 or a close */
	if (r->lf_only)
		m->odd_syntax = true;

	/* the framing: which body the server reads, what follows it */
	m->body_known = true;
	switch (r->framing)
	{
		case FR_LENGTH:
			if (r->cl_delta > 0)
				m->incomplete = true;	/* the server waits for bytes that never come */
			else if ((long) r->body.len + r->cl_delta < 0)
				m->bad_framing = true;	/* a negative Content-Length */
			else
			{
				buf_set(&m->body, r->body.p, r->body.len + (size_t) r->cl_delta);
				m->junk_follows = r->cl_delta < 0;
			}
			break;
		case FR_CHUNKED:
		case FR_BOTH:
			buf_copy(&m->body, &r->body);
			break;
		case FR_NONE:
			m->junk_follows = r->body.len > 0;
			break;
		case FR_CL_TEXT:
			{
				Buf			t = {0};
				char		list[64];

				buf_copy(&t, &r->cl_text);
				trim(&t);		/* blanks around a field value are not part of it */
				snprintf(list, sizeof(list), "%zu, %zu", r->body.len, r->body.len);
				if (all_digits(&t) && t.len < 19)
				{
					unsigned long long n = strtoull(buf_cstr(&t), NULL, 10);

					if (n > r->body.len)
						m->incomplete = true;
					else
					{
						buf_set(&m->body, r->body.p, (size_t) n);	/* leading zeros are still a number */
						m->junk_follows = n < r->body.len;
					}
				}
				else if (all_digits(&t))
					m->incomplete = true;	/* more than any body here: 413, or a wait */
				else if (buf_eqs(&t, list))
				{
					/* the same length twice: HTTP lets a server take it or refuse it */
					buf_copy(&m->body, &r->body);
					m->odd_syntax = true;
				}
				else
					m->bad_framing = true;
				buf_free(&t);
			}
			break;
		case FR_CL_TWICE:
		case FR_CHUNKED_BAD:
			m->bad_framing = true;
			break;
		case FR_CHUNKED_UNFINISHED:
			m->incomplete = true;
			break;
	}
	/*
	 * A lone LF may end a line (RFC 9112 2.2): "value\n\r\n" can end the
	 * header section there, and the rest be read as a body or as junk; so can
	 * a line with no name, in the server's library.  What the server read is
	 * then not known, nor whether it saw the headers after.
	 */
	if (m->headers_may_end)
		m->body_known = false;
	if (m->incomplete || m->bad_framing)
	{
		m->well_framed = false;
		m->body_known = false;
	}
}

/* the model of every request of a case, and how its connections should go */
void
plan_case(const Case *c, const char *token, Plan *plan)
{
	for (int i = 0; i < c->nconn; i++)
	{
		const Conn *k = &c->conn[i];
		Buf			wire = {0};
		bool		stop_required = k->prefix.len > 0,
					stop_expect = false;

		buf_add(&wire, k->prefix.p, k->prefix.len);
		plan->required[i] = plan->expect[i] = 0;
		plan->half_close[i] = k->prefix.len > 0 || k->trailing.len > 0;
		for (int j = 0; j < k->nreq; j++)
		{
			const Req  *r = &k->req[j];
			Model	   *m = &plan->m[i][j];
			bool		closes;
			int			h;

			req_serialize(r, token, &wire);
			model_build(r, token, m);
			/* HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 when asked to close */
			closes = strstr((const char *) r->line.p, "HTTP/1.0") != NULL;
			for (h = req_header_find(r, "Connection", 0); h >= 0; h = req_header_find(r, "Connection", h + 1))
			{
				if (buf_ieqs(&r->h[h].value, "keep-alive"))
					closes = false;
				if (buf_ieqs(&r->h[h].value, "close"))
				{
					closes = true;
					break;
				}
			}
			if (req_header_find(r, "Host", 0) < 0 && !closes)
				m->odd_syntax = true;	/* HTTP/1.1 without Host: the server library's own 400, or a close */
			if (k->truncate >= 0 && wire.len > (size_t) k->truncate)
			{
				m->well_framed = false;
				m->incomplete = true;
			}
			if (k->prefix.len)
			{
				/* bytes before the request line: what answers what is anyone's guess */
				m->odd_syntax = true;
				m->version_odd |= memmem(k->prefix.p, k->prefix.len, "HTTP/2", 6) != NULL;
			}
			if (!m->well_framed || m->odd_syntax || m->junk_follows)
				plan->half_close[i] = true;
			if (!stop_expect && !m->incomplete)
			{
				plan->expect[i]++;
				stop_expect = m->junk_follows || closes || m->bad_framing;
			}
			else
				stop_expect = true;
			if (stop_required)
				continue;
			if (m->well_framed && !m->odd_syntax)
			{
				plan->required[i]++;
				stop_required = m->junk_follows || closes;
			}
			else
				stop_required = true;
		}
		buf_free(&wire);
	}
}

void
plan_free(const Case *c, Plan *plan)
{
	for (int i = 0; i < c->nconn; i++)
		for (int j = 0; j < c->conn[i].nreq; j++)
			model_free(&plan->m[i][j]);
}
