/*
 * http_client.h — what sender.c (the outbox, SQL) and http_client.c (libcurl)
 * share: one outbound HTTP request and the calls that move it through curl.
 * Plain C: http_client.c uses no PostgreSQL API (see no_postgres.h).
 */
#ifndef ELMO_HTTP_CLIENT_H
#define ELMO_HTTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#define RESPONSE_CAP	2048	/* bytes of ELMO's answer we keep */

/*
 * One claimed outbox row on its way to ELMO.  malloc'd, never palloc'd: curl's
 * callbacks read and fill it.
 */
typedef struct Transfer
{
	struct Transfer *prev,
			   *next;			/* in the active or the finished list */
	CURL	   *easy;
	struct curl_slist *headers;
	int64_t		id;				/* elmo_outbox.id */
	char	   *method;
	char	   *url;
	char	   *authorization;	/* NULL: no Authorization header */
	char	   *request_id;
	char	   *correlation_id;
	char	   *body;
	/* filled by curl (write callback) and at harvest */
	size_t		response_len;
	char		response[RESPONSE_CAP];
	char		errbuf[CURL_ERROR_SIZE];
	CURLcode	result;
	long		http_status;	/* 0: no HTTP answer */
	char		timing[320];	/* JSON, when not 2xx */
} Transfer;

/* Transfer lists (doubly linked, head pointer) */
extern void transfer_push(Transfer **head, Transfer *t);
extern void transfer_remove(Transfer **head, Transfer *t);
extern void transfer_free_all(Transfer **head);

/* Per transfer: the settings may change at a reload. */
typedef struct HttpClientSettings
{
	long		connect_timeout_ms;
	long		request_timeout_ms;
	const char *ca_file;		/* "": the system's CA bundle */
} HttpClientSettings;

/* libcurl multi, its sockets in a private epoll set */
extern bool http_client_init(char *error, size_t size);
extern void http_client_shutdown(void);
extern bool http_client_ready(void);
extern int	http_client_epoll_fd(void);
extern long http_client_timeout_ms(void);
extern int	http_client_in_flight(void);
extern void http_client_start(Transfer *t, const HttpClientSettings *settings, Transfer **done);
extern void http_client_run(Transfer **done);
extern void http_client_take_counts(uint64_t *sent, uint64_t *failed);

#endif							/* ELMO_HTTP_CLIENT_H */
