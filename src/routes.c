/*
 * routes.c — path, method and authentication, from the headers alone.
 *
 * Checks, in order: framing (400), path (404, 501), method (405), token
 * (401), declared size (413), X-Request-ID and X-Correlation-ID (400); once
 * the body is in, its content type (415).  The body itself is validated
 * later, in SQL.  Plain C only: this runs inside libmicrohttpd's callbacks
 * (see no_postgres.h).
 */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define lengthof(a) (sizeof(a) / sizeof((a)[0]))

static char *path_prefix = NULL;
static size_t max_request_size = 1024 * 1024;

/* The tokens ELMO may present: ours, and the previous one until retired. */
static char *token_current = NULL;
static char *token_previous = NULL;

typedef struct Route
{
	const char *message;
	const char *allow;			/* methods, as in an Allow header */
	bool		needs_request_id;	/* register/handshake are never refused
									 * for a header: ELMO crashes on that */
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

static char *
replace_string(char *old, const char *value)
{
	if (old != NULL)
	{
		explicit_bzero(old, strlen(old));
		free(old);
	}
	return value != NULL ? strdup(value) : NULL;
}

void
routes_configure(const char *prefix, size_t max_size)
{
	path_prefix = replace_string(path_prefix, prefix);
	max_request_size = max_size;
}

size_t
routes_max_request_size(void)
{
	return max_request_size;
}

/* The worker's copy of the tokens, handed down after each change; wiped when replaced. */
void
routes_set_tokens(const char *current, const char *previous)
{
	token_current = replace_string(token_current, current);
	token_previous = replace_string(token_previous, previous);
}

static bool
refuse(Refusal *refusal, int status, const char *message)
{
	refusal->status = status;
	refusal->allow = NULL;
	refusal->field = NULL;
	refusal->close = false;
	snprintf(refusal->message, sizeof(refusal->message), "%s", message);
	return false;
}

void
routes_refuse_too_large(Refusal *refusal)
{
	char		msg[sizeof(refusal->message)];

	snprintf(msg, sizeof(msg), "request body larger than elmo_oscp.max_request_size (%zu bytes)",
			 max_request_size);
	refuse(refusal, 413, msg);
}

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

/*
 * An ID header's value, exactly (HTTP does not count the blanks around it,
 * and libmicrohttpd leaves those after it): true when absent or usable, then
 * copied; false when too long or holding anything but printable ASCII (it
 * ends up in JSON, NOTIFY payloads, logs).
 */
static bool
copy_id(const char *v, char dst[ROUTE_ID_MAX + 1])
{
	size_t		n;

	dst[0] = '\0';
	if (v == NULL)
		return true;
	while (*v == ' ' || *v == '\t')
		v++;
	n = strlen(v);
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n > ROUTE_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] > 0x7e)
			return false;
	memcpy(dst, v, n);
	dst[n] = '\0';
	return true;
}

/* A bad ID header: 400 naming it, except for register/handshake (see routes_accept_headers). */
static bool
refuse_id(Refusal *refusal, const char *header)
{
	char		msg[sizeof(refusal->message)];

	snprintf(msg, sizeof(msg), "%s: must be at most %d printable ASCII characters", header, ROUTE_ID_MAX);
	refuse(refusal, 400, msg);
	refusal->field = header;
	return false;
}

static const Route *
find_route(const char *url, Refusal *refusal)
{
	size_t		plen = path_prefix ? strlen(path_prefix) : 0;
	const char *name;

	if (plen == 0 || strncmp(url, path_prefix, plen) != 0 || url[plen] != '/')
	{
		refuse(refusal, 404, "no such path; OSCP messages are served under elmo_oscp.path_prefix");
		return NULL;
	}
	name = url + plen + 1;
	for (size_t i = 0; i < lengthof(routes); i++)
		if (strcmp(name, routes[i].message) == 0)
			return &routes[i];
	for (size_t i = 0; i < lengthof(not_implemented); i++)
		if (strcmp(name, not_implemented[i]) == 0)
		{
			refuse(refusal, 501, "this OSCP message is not implemented by this Flexibility Provider");
			return NULL;
		}
	refuse(refusal, 404, "no such OSCP message");
	return NULL;
}

/* "Token <token>" (OSCP) or the bare token (the testbed's form is undocumented). */
static bool
authenticate(const char *auth, RequestInfo *info, Refusal *refusal)
{
	size_t		given_len;
	bool		cur,
				prev;

	if (auth != NULL && strncmp(auth, "Token ", 6) == 0)
		auth += 6;
	given_len = auth ? strlen(auth) : 0;
	if (given_len == 0)
		return refuse(refusal, 401, "missing Authorization header: expected \"Token <token>\"");
	cur = token_equals(auth, given_len, token_current);
	prev = token_equals(auth, given_len, token_previous);
	if (!cur && !prev)
		return refuse(refusal, 401, "invalid token");
	info->used_current_token = cur;
	info->previous_token_live = (token_previous != NULL);
	return true;
}

/* Returns true when the request may go on to its body; else *refusal says why. */
bool
routes_accept_headers(const char *url, const char *method, const RouteHeaders *headers,
					  RequestInfo *info, Refusal *refusal)
{
	const Route *route;

	memset(info, 0, sizeof(*info));
	snprintf(info->method, sizeof(info->method), "%s", method);
	if (headers->content_lengths > 1)
	{
		/* which one frames the body?  Answer, and read nothing more from this connection */
		refuse(refusal, 400, "Content-Length: sent more than once");
		refusal->field = "Content-Length";
		refusal->close = true;
		return false;
	}
	route = find_route(url, refusal);
	if (route == NULL)
		return false;
	info->message = route->message;

	if (!method_allowed(route->allow, method))
	{
		refuse(refusal, 405, "method not allowed");
		refusal->allow = route->allow;
		return false;
	}
	if (strcmp(route->message, "health") == 0)
		return true;			/* no token: load balancers and monitoring call it */

	if (!authenticate(headers->authorization, info, refusal))
		return false;
	if (headers->content_length != NULL &&
		strtoull(headers->content_length, NULL, 10) > (unsigned long long) max_request_size)
	{
		routes_refuse_too_large(refusal);
		return false;
	}
	/*
	 * register/handshake are never refused for a header: an unusable
	 * X-Request-ID is replaced by a generated one, as a missing one is, and
	 * an unusable X-Correlation-ID is dropped.
	 */
	if (!copy_id(headers->request_id, info->request_id))
	{
		if (route->needs_request_id)
			return refuse_id(refusal, "X-Request-ID");
		info->request_id_unusable = true;
	}
	if (!copy_id(headers->correlation_id, info->correlation_id) && route->needs_request_id)
		return refuse_id(refusal, "X-Correlation-ID");
	if (route->needs_request_id && info->request_id[0] == '\0')
	{
		refuse(refusal, 400, "X-Request-ID: is required");
		refusal->field = "X-Request-ID";
		return false;
	}
	return true;
}

/* Once the body is in: its content type. */
bool
routes_accept_body(const RequestInfo *info, size_t body_len, const char *content_type,
				   Refusal *refusal)
{
	const char *ct = content_type;

	if (strcmp(info->message, "health") == 0 || body_len == 0)
		return true;
	if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
		(ct[16] != '\0' && ct[16] != ';' && ct[16] != ' '))
		return refuse(refusal, 415, "Content-Type must be application/json");
	return true;
}
