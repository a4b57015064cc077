/*
 * elmo_oscp.h — what the pieces of elmo_oscp share.
 *
 * One background worker owns both directions of OSCP traffic on one thread:
 * libmicrohttpd (inbound, http_server.c/routes.c/inbound.c) and libcurl multi
 * (outbound, sender.c/http_client.c) are both driven from the worker's
 * WaitEventSet (worker.c).  Neither library ever sees a longjmp: every call
 * into PostgreSQL made on their behalf is wrapped in PG_TRY by the caller.
 */
#ifndef ELMO_OSCP_H
#define ELMO_OSCP_H

#include "postgres.h"

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "lib/stringinfo.h"
#include "datatype/timestamp.h"

#ifndef ELMO_OSCP_VERSION
#error "ELMO_OSCP_VERSION must come from the Makefile"
#endif

#define ELMO_WORKER_NAME "elmo_oscp worker"

/* ---- GUCs (elmo_oscp.c) ---- */
extern char *elmo_database;
extern char *elmo_listen_addresses;
extern int	elmo_port;
extern char *elmo_path_prefix;
extern char *elmo_public_url;
extern char *elmo_timezone;
extern int	elmo_max_request_size;
extern char *elmo_tls_cert_file;
extern char *elmo_tls_key_file;
extern int	elmo_max_connections;
extern int	elmo_connection_timeout;
extern int	elmo_apply_timeout;
extern int	elmo_batch_max;
extern char *elmo_ca_file;
extern int	elmo_connect_timeout;
extern int	elmo_request_timeout;
extern int	elmo_max_in_flight;

/* ---- shared memory (elmo_oscp.c) ---- */
#define ELMO_ERRLEN 256

typedef struct ElmoShared
{
	slock_t		mutex;			/* protects the non-atomic fields below */
	pid_t		worker_pid;		/* 0 when no worker runs */
	Latch	   *worker_latch;
	TimestampTz worker_started_at;
	bool		listening;
	bool		tls;
	bool		extension_ready;	/* the worker found the extension */
	bool		database_ok;	/* elmo_oscp.database was seen to exist */
	int			bound_port;
	char		bound_address[64];
	char		last_error[ELMO_ERRLEN];
	TimestampTz last_error_at;

	pg_atomic_uint64 generation;	/* bumped at each commit that changed
									 * registration or outbox */
	pg_atomic_uint64 requests[6];	/* answered, by status class 1xx..5xx;
									 * [0] = connections dropped */
	pg_atomic_uint64 received;		/* messages stored */
	pg_atomic_uint64 sent;			/* outbound deliveries (2xx) */
	pg_atomic_uint64 send_failures; /* outbound attempts that were not 2xx */
	pg_atomic_uint64 apply_failures;
	ConditionVariable outbox_cv;	/* broadcast after outcomes are recorded */
} ElmoShared;

extern ElmoShared *elmo_shared;

extern void elmo_set_last_error(const char *msg);
extern void elmo_wake_worker(void);
extern bool elmo_loaded_by_preload(void);

/* ---- worker.c ---- */
extern PGDLLEXPORT void elmo_worker_main(Datum arg);
extern volatile sig_atomic_t elmo_got_sighup;
extern void elmo_abort_after_error(const char *where);
extern void elmo_xact_begin(const char *activity);
extern void elmo_xact_commit(void);
extern TimestampTz elmo_spi_timestamp(const char *sql);

/* ---- http_server.c: libmicrohttpd without internal threads ---- */
/*
 * One HTTP request.  Allocated with malloc, never palloc: it is created and
 * freed inside libmicrohttpd's callbacks, where no PostgreSQL API may run.
 */
typedef enum HttpState
{
	REQ_READING,				/* headers routed, body being read */
	REQ_PARKED,					/* complete, suspended, waiting in the batch */
	REQ_ANSWERED				/* status/answer set, to be queued */
} HttpState;

typedef struct HttpRequest
{
	struct MHD_Connection *conn;
	HttpState	state;
	char		method[8];
	const char *message;		/* OSCP message name (static), or "health" */
	bool		used_current_token; /* authenticated with our current token */
	char		request_id[72]; /* X-Request-ID, "" when absent */
	char		correlation_id[72];
	char	   *body;			/* NUL-terminated */
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	/* the answer */
	int			status;
	char	   *answer;			/* JSON text, NULL for an empty body */
	const char *allow;			/* Allow header for 405 */
	struct HttpRequest *next;	/* in the inbound batch */
} HttpRequest;

extern bool http_server_start(void);
extern void http_server_stop(void);
extern int	http_server_epoll_fd(void);
extern long http_server_timeout_ms(void);
extern void http_server_run(void);
extern void http_resume(HttpRequest *req);
extern const char *http_header(HttpRequest *req, const char *name);

/* Set the answer (malloc'd copy; safe in and out of MHD callbacks). */
extern void http_set_answer(HttpRequest *req, int status, const char *json);
extern void http_set_error(HttpRequest *req, int status, const char *message);

/* ---- routes.c: path, method, authentication; no PostgreSQL API inside ---- */
/* Returns true when the request may go on to the body; else it is answered. */
extern bool route_request(HttpRequest *req, const char *url, const char *method);
extern bool route_check_body(HttpRequest *req);
extern void routes_reload_tokens(void);
extern bool routes_previous_token_live(void);

/* ---- inbound.c: receipt, apply, group commit, answers ---- */
extern void inbound_park(HttpRequest *req);
extern bool inbound_pending(void);
extern void inbound_flush(void);
extern void inbound_retry_applies(void);
extern long inbound_retry_timeout_ms(void);

/* ---- sender.c: outbox delivery, over libcurl multi (http_client.c) ---- */
extern void sender_init(void);
extern void sender_shutdown(void);
extern int	sender_epoll_fd(void);
extern long sender_timeout_ms(void);
extern void sender_run(void);

/* ---- sql_functions.c ---- */
extern void elmo_make_request_id(char *out);

#endif							/* ELMO_OSCP_H */
