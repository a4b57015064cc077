/*
 * casefile.c — a case as a text file, one item per line, every byte
 * printable (bytes outside printable ASCII as \xNN, runs as \{N}c):
 *
 *   # comment
 *   name seed 42 case 1234
 *   mutations 24a-...json; X-Request-ID of 100 characters
 *   connection all | sequential | slow PIECES DELAY_MS
 *   truncate N          prefix BYTES          trailing BYTES
 *   request
 *   line POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1
 *   header NAME: VALUE  (${TOKEN} is the test's token; ':' in a name as \x3A)
 *   framing length DELTA | chunked N | both N | none | cl-twice | cl-text BYTES
 *           | chunked-bad N | chunked-unfinished N
 *   lf-only
 *   body BYTES
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
put(FILE *f, const char *what, const Buf *b)
{
	Buf			e = {0};

	escape_bytes(&e, b->p, b->len);
	fprintf(f, "%s %s\n", what, e.len ? (char *) e.p : "");
	buf_free(&e);
}

bool
case_save(const Case *c, const char *path, const char *comment)
{
	FILE	   *f = fopen(path, "w");

	if (f == NULL)
		return false;
	fprintf(f, "# elmo-fuzz case: replay with test/fuzz/elmo-fuzz --replay FILE (make fuzz replays test/fuzz/regress/)\n");
	if (comment)
	{
		const char *p = comment;

		while (*p)
		{
			const char *nl = strchr(p, '\n');
			int			n = nl ? (int) (nl - p) : (int) strlen(p);

			fprintf(f, "# %.*s\n", n, p);
			p += n + (nl ? 1 : 0);
		}
	}
	fprintf(f, "name %s\n", c->name);
	put(f, "mutations", &c->mutations);
	for (int i = 0; i < c->nconn; i++)
	{
		const Conn *k = &c->conn[i];

		if (k->mode == SEND_SLOW)
			fprintf(f, "connection slow %d %d\n", k->pieces, k->delay_ms);
		else
			fprintf(f, "connection %s\n", k->mode == SEND_SEQUENTIAL ? "sequential" : "all");
		if (k->truncate >= 0)
			fprintf(f, "truncate %ld\n", k->truncate);
		if (k->prefix.len)
			put(f, "prefix", &k->prefix);
		for (int j = 0; j < k->nreq; j++)
		{
			const Req  *r = &k->req[j];

			fprintf(f, "request\n");
			put(f, "line", &r->line);
			for (int h = 0; h < r->nh; h++)
			{
				Buf			e = {0};

				for (size_t b = 0; b < r->h[h].name.len; b++)
				{
					if (r->h[h].name.p[b] == ':')
						buf_adds(&e, "\\x3A");
					else
						escape_bytes(&e, r->h[h].name.p + b, 1);
				}
				buf_adds(&e, ": ");
				escape_bytes(&e, r->h[h].value.p, r->h[h].value.len);
				fprintf(f, "header %s\n", (char *) e.p);
				buf_free(&e);
			}
			switch (r->framing)
			{
				case FR_LENGTH:
					fprintf(f, "framing length %ld\n", r->cl_delta);
					break;
				case FR_CHUNKED:
					fprintf(f, "framing chunked %d\n", r->chunk);
					break;
				case FR_BOTH:
					fprintf(f, "framing both %d\n", r->chunk);
					break;
				case FR_NONE:
					fprintf(f, "framing none\n");
					break;
				case FR_CL_TWICE:
					fprintf(f, "framing cl-twice\n");
					break;
				case FR_CL_TEXT:
					put(f, "framing cl-text", &r->cl_text);
					break;
				case FR_CHUNKED_BAD:
					fprintf(f, "framing chunked-bad %d\n", r->chunk);
					break;
				case FR_CHUNKED_UNFINISHED:
					fprintf(f, "framing chunked-unfinished %d\n", r->chunk);
					break;
			}
			if (r->lf_only)
				fprintf(f, "lf-only\n");
			put(f, "body", &r->body);
		}
		if (k->trailing.len)
			put(f, "trailing", &k->trailing);
	}
	return fclose(f) == 0;
}

static bool
word(const char *line, const char *w, const char **rest)
{
	size_t		n = strlen(w);

	if (strncmp(line, w, n) != 0 || (line[n] != ' ' && line[n] != '\0'))
		return false;
	*rest = line[n] ? line + n + 1 : line + n;
	return true;
}

bool
case_load(const char *path, Case *c, char *err, size_t errlen)
{
	FILE	   *f = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		n;
	int			lineno = 0;
	Conn	   *k = NULL;
	Req		   *r = NULL;
	const char *rest;

	memset(c, 0, sizeof(*c));
	if (f == NULL)
	{
		snprintf(err, errlen, "cannot open %s", path);
		return false;
	}
	copy_str(c->name, sizeof(c->name), strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
	while ((n = getline(&line, &cap, f)) >= 0)
	{
		bool		ok = true;

		lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		if (word(line, "name", &rest))
			;					/* the file name names a regression case */
		else if (word(line, "mutations", &rest))
			ok = unescape_bytes(&c->mutations, rest, strlen(rest));
		else if (word(line, "connection", &rest))
		{
			if (c->nconn == MAX_CONN)
				ok = false;
			else
			{
				k = &c->conn[c->nconn++];
				k->truncate = -1;
				r = NULL;
				if (strncmp(rest, "slow", 4) == 0)
				{
					k->mode = SEND_SLOW;
					ok = sscanf(rest + 4, "%d %d", &k->pieces, &k->delay_ms) == 2;
				}
				else
					k->mode = strcmp(rest, "sequential") == 0 ? SEND_SEQUENTIAL : SEND_ALL;
			}
		}
		else if (k == NULL)
			ok = false;
		else if (word(line, "truncate", &rest))
			k->truncate = atol(rest);
		else if (word(line, "prefix", &rest))
			ok = unescape_bytes(&k->prefix, rest, strlen(rest));
		else if (word(line, "trailing", &rest))
			ok = unescape_bytes(&k->trailing, rest, strlen(rest));
		else if (word(line, "request", &rest))
		{
			if (k->nreq == MAX_REQ)
				ok = false;
			else
			{
				r = &k->req[k->nreq++];
				r->framing = FR_LENGTH;
			}
		}
		else if (r == NULL)
			ok = false;
		else if (word(line, "line", &rest))
			ok = unescape_bytes(&r->line, rest, strlen(rest));
		else if (word(line, "header", &rest))
		{
			const char *colon = strstr(rest, ": ");
			Header	   *h;

			if (colon == NULL)
				ok = false;
			else
			{
				h = req_header_add(r, "", "", 0);
				ok = unescape_bytes(&h->name, rest, (size_t) (colon - rest)) &&
					unescape_bytes(&h->value, colon + 2, strlen(colon + 2));
			}
		}
		else if (word(line, "framing", &rest))
		{
			const char *arg;

			if (word(rest, "length", &arg))
				r->framing = FR_LENGTH, r->cl_delta = atol(arg);
			else if (word(rest, "chunked", &arg))
				r->framing = FR_CHUNKED, r->chunk = atoi(arg);
			else if (word(rest, "both", &arg))
				r->framing = FR_BOTH, r->chunk = atoi(arg);
			else if (word(rest, "none", &arg))
				r->framing = FR_NONE;
			else if (word(rest, "cl-twice", &arg))
				r->framing = FR_CL_TWICE;
			else if (word(rest, "cl-text", &arg))
			{
				r->framing = FR_CL_TEXT;
				ok = unescape_bytes(&r->cl_text, arg, strlen(arg));
			}
			else if (word(rest, "chunked-bad", &arg))
				r->framing = FR_CHUNKED_BAD, r->chunk = atoi(arg);
			else if (word(rest, "chunked-unfinished", &arg))
				r->framing = FR_CHUNKED_UNFINISHED, r->chunk = atoi(arg);
			else
				ok = false;
		}
		else if (word(line, "lf-only", &rest))
			r->lf_only = true;
		else if (word(line, "body", &rest))
			ok = unescape_bytes(&r->body, rest, strlen(rest));
		else
			ok = false;
		if (!ok)
		{
			snprintf(err, errlen, "%s:%d: cannot read \"%.60s\"", path, lineno, line);
			free(line);
			fclose(f);
			case_free(c);
			return false;
		}
	}
	free(line);
	fclose(f);
	if (c->nconn == 0 || c->conn[0].nreq == 0)
	{
		snprintf(err, errlen, "%s: no connection or no request", path);
		return false;
	}
	return true;
}
