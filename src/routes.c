/*
 * routes.c — which path, which method, who is calling.
 *
 * Runs inside libmicrohttpd's callbacks, so nothing here may use a
 * PostgreSQL API (palloc, ereport, SPI); the token cache is plain C memory,
 * refreshed by routes_reload_tokens() from the worker loop.  Checks, in
 * order: path (404, 501), method (405), token (401), size (413), content
 * type (415), X-Request-ID (400).  The body is validated later, in SQL.
 */
#include "elmo_oscp.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <strings.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"

/* The tokens ELMO may present: ours, and the previous one until retired. */
static char *token_current = NULL;
static char *token_previous = NULL;
static uint64 tokens_generation = 0;

typedef struct Route
{
	const char *message;
	const char *allow;			/* methods, as in an Allow header */
	bool		needs_request_id;	/* register/handshake never refused for a header */
} Route;

static const Route routes[] = {
	{"health", "GET", false},
	{"register", "POST, PUT, DELETE", false},
	{"handshake", "POST", false},
	{"heartbeat", "POST", true},
	{"update_group_capacity_forecast", "POST", true},
};

/* OSCP 2.0 messages a Flexibility Provider does not take from ELMO: 501. */
static const char *const not_implemented[] = {
	"handshake_acknowledge",
	"adjust_group_capacity_forecast",
	"group_capacity_compliance_error",
	"update_group_measurements",
	"update_asset_measurements",
};

/* Constant-time comparison: the time taken does not depend on where they differ. */
static bool
token_equals(const char *given, size_t given_len, const char *expected)
{
	size_t		n;
	volatile unsigned char diff = 0;

	if (expected == NULL)
		return false;
	n = strlen(expected);
	diff |= (unsigned char) (given_len != n);
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char) (expected[i] ^ (i < given_len ? given[i] : 0));
	return diff == 0;
}

static bool
method_allowed(const char *allow, const char *method)
{
	size_t		n = strlen(method);
	const char *p = allow;

	while ((p = strstr(p, method)) != NULL)
	{
		if ((p == allow || p[-1] == ' ') && (p[n] == '\0' || p[n] == ','))
			return true;
		p += n;
	}
	return false;
}

static void
copy_header(HttpRequest *req, const char *name, char *dst, size_t size)
{
	const char *v = http_header(req, name);

	dst[0] = '\0';
	if (v)
	{
		/* trim, keep printable ASCII only: the value ends up in JSON and logs */
		size_t		j = 0;

		while (*v == ' ' || *v == '\t')
			v++;
		for (; *v && j + 1 < size; v++)
			if (*v > ' ' && *v < 0x7f)
				dst[j++] = *v;
		dst[j] = '\0';
	}
}

bool
route_request(HttpRequest *req, const char *url, const char *method)
{
	size_t		plen = strlen(elmo_path_prefix);
	const char *name;
	const Route *route = NULL;
	const char *auth;
	const char *len;
	size_t		given_len;

	strlcpy(req->method, method, sizeof(req->method));

	if (strncmp(url, elmo_path_prefix, plen) != 0 || url[plen] != '/')
	{
		http_set_error(req, MHD_HTTP_NOT_FOUND, "no such path; OSCP messages are served under elmo_oscp.path_prefix");
		return false;
	}
	name = url + plen + 1;
	for (size_t i = 0; i < lengthof(routes); i++)
		if (strcmp(name, routes[i].message) == 0)
			route = &routes[i];
	if (route == NULL)
	{
		for (size_t i = 0; i < lengthof(not_implemented); i++)
			if (strcmp(name, not_implemented[i]) == 0)
			{
				http_set_error(req, MHD_HTTP_NOT_IMPLEMENTED,
							   "this OSCP message is not implemented by this Flexibility Provider");
				return false;
			}
		http_set_error(req, MHD_HTTP_NOT_FOUND, "no such OSCP message");
		return false;
	}
	req->message = route->message;

	if (!method_allowed(route->allow, method))
	{
		http_set_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
		req->allow = route->allow;
		return false;
	}
	if (strcmp(route->message, "health") == 0)
		return true;			/* no token: load balancers and monitoring call it */

	/* "Token <token>" (OSCP) or the bare token (the testbed's form is undocumented) */
	auth = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
	if (auth != NULL && strncmp(auth, "Token ", 6) == 0)
		auth += 6;
	given_len = auth ? strlen(auth) : 0;
	if (auth == NULL || given_len == 0)
	{
		http_set_error(req, MHD_HTTP_UNAUTHORIZED, "missing Authorization header: expected \"Token <token>\"");
		return false;
	}
	{
		bool		cur = token_equals(auth, given_len, token_current);
		bool		prev = token_equals(auth, given_len, token_previous);

		if (!cur && !prev)
		{
			http_set_error(req, MHD_HTTP_UNAUTHORIZED, "invalid token");
			return false;
		}
		req->used_current_token = cur;
	}

	len = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (len != NULL && strtoull(len, NULL, 10) > (unsigned long long) elmo_max_request_size)
	{
		char		msg[128];

		snprintf(msg, sizeof(msg), "request body larger than elmo_oscp.max_request_size (%d bytes)",
				 elmo_max_request_size);
		http_set_error(req, 413, msg);
		return false;
	}

	copy_header(req, "X-Request-ID", req->request_id, sizeof(req->request_id));
	copy_header(req, "X-Correlation-ID", req->correlation_id, sizeof(req->correlation_id));
	if (route->needs_request_id && req->request_id[0] == '\0')
	{
		http_set_error(req, MHD_HTTP_BAD_REQUEST, "missing X-Request-ID header");
		return false;
	}
	return true;
}

/* Still accepting the previous token?  (Applying a message retires it.) */
bool
routes_previous_token_live(void)
{
	return token_previous != NULL;
}

/* Once the body is in: its content type. */
bool
route_check_body(HttpRequest *req)
{
	const char *ct;

	if (strcmp(req->message, "health") == 0 || req->body_len == 0)
		return true;
	ct = http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
		(ct[16] != '\0' && ct[16] != ';' && ct[16] != ' '))
	{
		http_set_error(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
		return false;
	}
	return true;
}

/*
 * Refresh the token cache when the shared generation moved (a commit that
 * touched the registration or the outbox bumps it).  Worker loop only.
 */
void
routes_reload_tokens(void)
{
	uint64		gen = pg_atomic_read_u64(&elmo_shared->generation);
	char	   *volatile cur = NULL;
	char	   *volatile prev = NULL;

	if (gen == tokens_generation)
		return;

	PG_TRY();
	{
		elmo_xact_begin(NULL);
		if (SPI_execute("SELECT our_token, previous_token FROM elmo_registration", true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char	   *c = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			char	   *p = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

			cur = c ? strdup(c) : NULL;
			prev = p ? strdup(p) : NULL;
		}
		elmo_xact_commit();
		tokens_generation = gen;
	}
	PG_CATCH();
	{
		elmo_abort_after_error("loading tokens");
		return;
	}
	PG_END_TRY();

	free(token_current);
	free(token_previous);
	token_current = cur;
	token_previous = prev;
}
