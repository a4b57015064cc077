/*
 * http_server.h — the OSCP listener: libmicrohttpd in external epoll mode,
 * plain C.  Requests whose headers and body are in wait, suspended, in the
 * listener's own queue until the worker takes them, answers them and resumes
 * them.
 */
#ifndef ELMO_HTTP_SERVER_H
#define ELMO_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "connections.h"
#include "routes.h"

/*
 * One HTTP request, malloc'd (it is created and freed inside libmicrohttpd's
 * callbacks).  The worker reads info and body; the rest is the listener's.
 */
typedef struct HttpRequest
{
	RequestInfo info;			/* from the headers (routes.c) */
	char	   *body;			/* NUL-terminated */
	size_t		body_len;
	struct HttpRequest *next;	/* in the queue of completed requests */

	struct MHD_Connection *conn;
	int			state;
	size_t		body_cap;
	bool		too_large;
	int			status;			/* the answer */
	char	   *answer;			/* JSON text; NULL: an empty body */
	const char *allow;
	bool		close;			/* answer with Connection: close */
} HttpRequest;

/* Fixed while the listener runs (the settings need a restart). */
typedef struct HttpServerSettings
{
	const char *listen_address; /* an IPv4 or IPv6 address, "localhost" or "*" */
	int			port;
	const char *tls_cert_file;	/* "": plain HTTP */
	const char *tls_key_file;	/* "": the key is in the certificate file */
	unsigned int max_connections;	/* the guard's (connections.c) */
	unsigned int connection_timeout;	/* seconds without any traffic */
	unsigned int other_descriptors; /* what PostgreSQL may have open */
} HttpServerSettings;

/*
 * Why the listener did not start: for the log and for elmo_status().  When
 * it started but message is set, it runs with less than asked (a warning).
 */
typedef struct HttpServerError
{
	char		message[256];	/* short: for elmo_status() */
	const char *consequence;	/* for the log line */
	const char *hint;
} HttpServerError;

/* Answers queued, by status class 1xx..5xx; [0]: connections that broke off. */
typedef struct HttpCounts
{
	uint64_t	answered[6];
	ConnCounts	connections;	/* refused, evicted, overdue */
} HttpCounts;

extern bool http_server_start(const HttpServerSettings *settings, HttpServerError *error);
extern void http_server_stop(void);
extern void http_server_stop_accepting(void);
extern int	http_server_epoll_fd(void);
extern long http_server_timeout_ms(void);
extern void http_server_run(void);

extern bool http_server_has_ready(void);
extern HttpRequest *http_server_take_ready(int *count);
extern int	http_server_requests_in_progress(void);
extern void http_request_set_answer(HttpRequest *req, int status, const char *json);
extern void http_request_drop(HttpRequest *req);
extern void http_request_resume(HttpRequest *req);

extern bool http_server_take_log(char *buf, size_t size);
extern void http_server_take_counts(HttpCounts *into);

#endif							/* ELMO_HTTP_SERVER_H */
