/*
 * routes.h — which path, which method, who is calling: decided from the
 * request line and the headers, before any body is read.  Plain C: it runs
 * inside libmicrohttpd's callbacks.  The worker hands the settings and ELMO's
 * tokens down to it.
 */
#ifndef ELMO_ROUTES_H
#define ELMO_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

/*
 * X-Request-ID and X-Correlation-ID are kept exactly as sent, or refused:
 * at most this many characters, printable ASCII (ELMO's have 32).
 */
#define ROUTE_ID_MAX 128

/* What routing learnt from a request's headers. */
typedef struct RequestInfo
{
	const char *message;		/* OSCP message name, or "health" (static text) */
	char		method[8];
	bool		used_current_token; /* authenticated with our current token */
	bool		previous_token_live;	/* ... while the previous one was still
										 * accepted: applying it retires that one */
	char		request_id[ROUTE_ID_MAX + 1];	/* "" when absent */
	char		correlation_id[ROUTE_ID_MAX + 1];
	bool		request_id_unusable;	/* register/handshake: sent, but too
										 * long or not printable ASCII */
} RequestInfo;

/* The headers routing reads (NULL when absent). */
typedef struct RouteHeaders
{
	const char *authorization;
	const char *content_length;
	int			content_lengths;	/* Content-Length headers sent */
	const char *request_id;
	const char *correlation_id;
} RouteHeaders;

/* A request answered by the listener itself: the worker never sees it. */
typedef struct Refusal
{
	int			status;
	const char *allow;			/* Allow header of a 405 */
	const char *field;			/* the header or field at fault, or NULL */
	bool		close;			/* the request's end is unknown: close the connection */
	char		message[160];
} Refusal;

extern void routes_configure(const char *path_prefix, size_t max_request_size);
extern size_t routes_max_request_size(void);
extern void routes_set_tokens(const char *current, const char *previous);

extern bool routes_accept_headers(const char *url, const char *method,
								  const RouteHeaders *headers,
								  RequestInfo *info, Refusal *refusal);
extern bool routes_accept_body(const RequestInfo *info, size_t body_len,
							   const char *content_type, Refusal *refusal);
extern void routes_refuse_too_large(Refusal *refusal);

#endif							/* ELMO_ROUTES_H */
