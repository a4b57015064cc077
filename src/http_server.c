/*
 * http_server.c — libmicrohttpd in external epoll mode, inside the worker.
 *
 * No MHD thread exists: the worker's WaitEventSet watches MHD's epoll
 * descriptor and calls http_server_run(), so every callback below runs on the
 * worker's thread, in plain C (see no_postgres.h).  A request whose headers
 * are in is routed and authenticated at once (routes.c); once its body is in
 * too, it is suspended and queued here.  The worker takes the queue, stores
 * the requests, sets their answers and resumes them; the next
 * http_server_run() sends the answers.
 */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "connections.h"

#define DESCRIPTORS_SPARE 64	/* PostgreSQL's reserve, libcurl's transfers, epoll */

enum
{
	REQ_READING,				/* headers accepted, body being read */
	REQ_QUEUED,					/* complete, suspended, for the worker */
	REQ_ANSWERED,				/* answer set, to be sent */
	REQ_DROPPED					/* to be closed without an answer */
};

static struct MHD_Daemon *mhd = NULL;
static char *tls_key = NULL;
static char *tls_cert = NULL;
static HttpRequest *ready_head = NULL;
static HttpRequest *ready_tail = NULL;
static int	ready_count = 0;
static int	in_progress = 0;	/* requests between their headers and the
								 * end of their answer */
static HttpCounts counts;
static char log_buf[256];
static bool log_pending = false;

#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

/* MHD's error log: kept here, written to the server log by the worker. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	size_t		n;

	vsnprintf(log_buf, sizeof(log_buf), fmt, ap);
	n = strlen(log_buf);
	while (n > 0 && (log_buf[n - 1] == '\n' || log_buf[n - 1] == '\r'))
		log_buf[--n] = '\0';
	log_pending = true;
}

bool
http_server_take_log(char *buf, size_t size)
{
	if (!log_pending)
		return false;
	snprintf(buf, size, "%s", log_buf);
	log_pending = false;
	return true;
}

void
http_server_take_counts(HttpCounts *into)
{
	for (int i = 0; i < 6; i++)
	{
		into->answered[i] += counts.answered[i];
		counts.answered[i] = 0;
	}
	conns_take_counts(&into->connections);
}

/* The guard's record of a libmicrohttpd connection. */
static Conn *
conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return info ? (Conn *) info->socket_context : NULL;
}

/* s as a JSON string at p; returns the end. */
static char *
json_string(char *p, const char *s)
{
	*p++ = '"';
	for (const unsigned char *c = (const unsigned char *) s; *c; c++)
	{
		if (*c == '"' || *c == '\\')
		{
			*p++ = '\\';
			*p++ = *c;
		}
		else if (*c < 0x20)
			p += sprintf(p, "\\u%04x", *c);
		else
			*p++ = *c;
	}
	*p++ = '"';
	return p;
}

/* {"message": "..."[, "field": "..."]}; malloc'd. */
static char *
json_error_body(const char *message, const char *field)
{
	char	   *out = malloc((strlen(message) + (field ? strlen(field) : 0)) * 6 + 40);
	char	   *p = out;

	if (out == NULL)
		return NULL;
	p += sprintf(p, "{\"message\":");
	p = json_string(p, message);
	if (field)
	{
		p += sprintf(p, ",\"field\":");
		p = json_string(p, field);
	}
	strcpy(p, "}");
	return out;
}

/* The answer, copied into the request's own memory. */
void
http_request_set_answer(HttpRequest *req, int status, const char *json)
{
	free(req->answer);
	req->answer = json ? strdup(json) : NULL;
	req->status = status;
	req->state = REQ_ANSWERED;
}

/*
 * No answer at all: once resumed, the connection is closed.  The client sees
 * a failure, where any answer would claim something we cannot vouch for.
 */
void
http_request_drop(HttpRequest *req)
{
	free(req->answer);
	req->answer = NULL;
	req->state = REQ_DROPPED;
}

void
http_request_resume(HttpRequest *req)
{
	MHD_resume_connection(req->conn);
}

static void
set_refusal(HttpRequest *req, const Refusal *refusal)
{
	free(req->answer);
	req->answer = json_error_body(refusal->message, refusal->field);
	req->status = refusal->status;
	req->allow = refusal->allow;
	req->close = refusal->close;
	req->state = REQ_ANSWERED;
}

static enum MHD_Result
queue_answer(HttpRequest *req)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	const char *body = req->answer ? req->answer : "";
	int			class = req->status / 100;

	resp = MHD_create_response_from_buffer(strlen(body), (void *) body,
										   MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	if (req->answer)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (req->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, req->allow);
	if (req->close)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(req->conn, req->status, resp);
	MHD_destroy_response(resp);
	conns_answering(conn_of(req->conn));
	if (class >= 1 && class <= 5)
		counts.answered[class]++;
	return ret;
}

static bool
append_body(HttpRequest *req, const char *data, size_t len)
{
	if (req->too_large)
		return true;			/* keep draining, answer 413 at the end */
	if (req->body_len + len > routes_max_request_size())
	{
		req->too_large = true;
		return true;
	}
	if (req->body_len + len + 1 > req->body_cap)
	{
		size_t		cap = req->body_cap * 2;
		char	   *nb;

		if (cap < req->body_len + len + 1)
			cap = req->body_len + len + 1;
		if (cap < 1024)
			cap = 1024;
		nb = realloc(req->body, cap);
		if (nb == NULL)
			return false;
		req->body = nb;
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
	req->body[req->body_len] = '\0';
	return true;
}

static const char *
header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result
count_content_length(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		(*(int *) cls)++;
	return MHD_YES;
}

/* Headers are in: route, authenticate, check limits before any body. */
static enum MHD_Result
start_request(struct MHD_Connection *conn, const char *url, const char *method, void **con_cls)
{
	HttpRequest *req = calloc(1, sizeof(HttpRequest));
	RouteHeaders h;
	Refusal		refusal;

	if (req == NULL)
		return MHD_NO;
	req->conn = conn;
	req->state = REQ_READING;
	*con_cls = req;
	in_progress++;
	h.authorization = header(conn, MHD_HTTP_HEADER_AUTHORIZATION);
	h.content_length = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
	h.content_lengths = 0;
	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_content_length, &h.content_lengths);
	h.request_id = header(conn, "X-Request-ID");
	h.correlation_id = header(conn, "X-Correlation-ID");
	if (!routes_accept_headers(url, method, &h, &req->info, &refusal))
	{
		set_refusal(req, &refusal);
		return queue_answer(req);
	}
	return MHD_YES;
}

/* The whole request is here: refuse it, or queue it for the worker. */
static enum MHD_Result
finish_request(HttpRequest *req)
{
	Refusal		refusal;

	if (req->too_large)
	{
		routes_refuse_too_large(&refusal);
		set_refusal(req, &refusal);
		return queue_answer(req);
	}
	if (req->body == NULL && !append_body(req, "", 0))
		return MHD_NO;
	if (!routes_accept_body(&req->info, req->body_len,
							header(req->conn, MHD_HTTP_HEADER_CONTENT_TYPE), &refusal))
	{
		set_refusal(req, &refusal);
		return queue_answer(req);
	}
	req->state = REQ_QUEUED;
	conns_busy(conn_of(req->conn));
	MHD_suspend_connection(req->conn);
	req->next = NULL;
	if (ready_tail)
		ready_tail->next = req;
	else
		ready_head = req;
	ready_tail = req;
	ready_count++;
	return MHD_YES;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
		   const char *method, const char *version, const char *upload_data,
		   size_t *upload_data_size, void **con_cls)
{
	HttpRequest *req = *con_cls;

	if (req == NULL)
		return start_request(conn, url, method, con_cls);
	if (*upload_data_size > 0)
	{
		if (!append_body(req, upload_data, *upload_data_size))
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->state == REQ_ANSWERED)
		return queue_answer(req);
	if (req->state == REQ_DROPPED)
		return MHD_NO;
	if (req->state == REQ_QUEUED)
		return MHD_YES;			/* spurious call while suspended */
	return finish_request(req);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	HttpRequest *req = *con_cls;

	conns_request_done(conn_of(conn));
	if (req == NULL)
		return;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		counts.answered[0]++;
	in_progress--;
	free(req->body);
	free(req->answer);
	free(req);
	*con_cls = NULL;
}

/* A new connection: refused at once unless the guard admits it. */
static enum MHD_Result
on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	return conns_admit(addr, addrlen) ? MHD_YES : MHD_NO;
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	if (code == MHD_CONNECTION_NOTIFY_STARTED)
	{
		/*
		 * Each answer is read before the next call: libmicrohttpd 1.0
		 * answers every query in the same per-connection union.
		 */
		const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		int			fd = info ? info->connect_fd : -1;
		const struct sockaddr *sa;
		socklen_t	len;

		info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		sa = info ? info->client_addr : NULL;
		len = (sa && sa->sa_family == AF_INET6) ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		*socket_context = fd >= 0 ? conns_opened(fd, sa, len) : NULL;
	}
	else
	{
		conns_closed((Conn *) *socket_context);
		*socket_context = NULL;
	}
}

/* The request line is in (libmicrohttpd's URI log hook): the request's clock. */
static void *
on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
	conns_request_line(conn_of(conn));
	return NULL;
}

bool
http_server_has_ready(void)
{
	return ready_head != NULL;
}

/* The completed requests, oldest first; the worker answers and resumes each. */
HttpRequest *
http_server_take_ready(int *count)
{
	HttpRequest *list = ready_head;

	*count = ready_count;
	ready_head = ready_tail = NULL;
	ready_count = 0;
	return list;
}

int
http_server_requests_in_progress(void)
{
	return in_progress;
}

static char *
read_file(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
	{
		fclose(f);
		return NULL;
	}
	buf = malloc(n + 1);
	if (buf && fread(buf, 1, n, f) != (size_t) n)
	{
		free(buf);
		buf = NULL;
	}
	if (buf)
		buf[n] = '\0';
	fclose(f);
	return buf;
}

static bool fail(HttpServerError *error, const char *consequence, const char *hint,
				 const char *fmt,...) PRINTF_LIKE(4, 5);

/* Fill *error; false, for the caller to return. */
static bool
fail(HttpServerError *error, const char *consequence, const char *hint, const char *fmt, ...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(error->message, sizeof(error->message), fmt, ap);
	va_end(ap);
	error->consequence = consequence;
	error->hint = hint;
	return false;
}

/* The listening address; false if it is not an IP address. */
static bool
listen_address(const HttpServerSettings *s, struct sockaddr_storage *addr, unsigned int *flags)
{
	const char *listen = s->listen_address;

	memset(addr, 0, sizeof(*addr));
	if (strcmp(listen, "*") == 0 || strcmp(listen, "::") == 0)
	{
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) addr;

		a6->sin6_family = AF_INET6;
		a6->sin6_addr = in6addr_any;
		a6->sin6_port = htons(s->port);
		*flags |= MHD_USE_DUAL_STACK;
		return true;
	}
	if (strchr(listen, ':') != NULL)
	{
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) addr;

		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(s->port);
		*flags |= MHD_USE_IPv6;
		return inet_pton(AF_INET6, listen, &a6->sin6_addr) == 1;
	}
	{
		struct sockaddr_in *a4 = (struct sockaddr_in *) addr;

		a4->sin_family = AF_INET;
		a4->sin_port = htons(s->port);
		if (strcmp(listen, "localhost") == 0)
			listen = "127.0.0.1";
		return inet_pton(AF_INET, listen, &a4->sin_addr) == 1;
	}
}

/*
 * Make the open-files limit cover [needed] descriptors in all, raising the
 * soft limit towards the hard one if it must.  Returns how many it covers.
 */
static rlim_t
descriptors_for(rlim_t needed)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= needed)
		return needed;
	rl.rlim_cur = (rl.rlim_max != RLIM_INFINITY && needed > rl.rlim_max) ? rl.rlim_max : needed;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	return rl.rlim_cur;
}

bool
http_server_start(const HttpServerSettings *s, HttpServerError *error)
{
	struct sockaddr_storage addr;
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	bool		tls = (s->tls_cert_file[0] != '\0');
	unsigned int max_conns = s->max_connections;
	rlim_t		fds;

	if (!listen_address(s, &addr, &flags))
		return fail(error, NULL, "Use one IPv4 or IPv6 address, \"localhost\" or \"*\".",
					"elmo_oscp.listen_addresses \"%s\" is not an IP address", s->listen_address);
	if (tls)
	{
		free(tls_cert);
		free(tls_key);
		tls_cert = read_file(s->tls_cert_file);
		tls_key = read_file(s->tls_key_file[0] ? s->tls_key_file : s->tls_cert_file);
		if (tls_cert == NULL || tls_key == NULL)
			return fail(error, "the listener stays down (it never falls back to plain HTTP)", NULL,
						"cannot read elmo_oscp.tls_cert_file or tls_key_file: %s", strerror(errno));
		flags |= MHD_USE_TLS;
	}

	/*
	 * libmicrohttpd's own limit (2 * max_conns + 16) stays well above the
	 * guard's: at its limit it would stop accepting, and new clients would
	 * wait in the kernel's queue.  Shut connections keep their slot until
	 * libmicrohttpd closes them.
	 */
	fds = descriptors_for((rlim_t) s->other_descriptors + 2 * max_conns + 16 + DESCRIPTORS_SPARE);
	if (fds < (rlim_t) s->other_descriptors + 2 * max_conns + 16 + DESCRIPTORS_SPARE)
	{
		rlim_t		room = fds > (rlim_t) s->other_descriptors + 16 + DESCRIPTORS_SPARE + 16 ?
			fds - s->other_descriptors - 16 - DESCRIPTORS_SPARE : 16;

		max_conns = (unsigned int) (room / 2);
		snprintf(error->message, sizeof(error->message),
				 "the open-files limit (%llu) leaves room for %u connections, not elmo_oscp.max_connections = %u",
				 (unsigned long long) fds, max_conns, s->max_connections);
		error->hint = "Raise the server's open-files limit (LimitNOFILE for systemd, ulimit -n).";
	}
	conns_set_capacity(max_conns);

	log_pending = false;
	mhd = MHD_start_daemon(flags, (uint16_t) s->port, &on_accept, NULL,
						   &on_request, NULL,
						   MHD_OPTION_EXTERNAL_LOGGER, &on_mhd_log, NULL,
						   MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
						   MHD_OPTION_CONNECTION_LIMIT, 2 * max_conns + 16,
						   MHD_OPTION_NOTIFY_CONNECTION, &on_connection, NULL,
						   MHD_OPTION_URI_LOG_CALLBACK, &on_request_line, NULL,
						   MHD_OPTION_CONNECTION_TIMEOUT, s->connection_timeout,
						   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (64 * 1024),
						   MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
						   /* HTTP/1.1 without Host is a 400: also when a header line the
						    * library misreads ended the headers before Host */
						   MHD_OPTION_STRICT_FOR_CLIENT, (int) 1,
						   MHD_OPTION_NOTIFY_COMPLETED, &on_completed, NULL,
						   tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, tls_cert,
						   MHD_OPTION_HTTPS_MEM_KEY, tls_key,
						   MHD_OPTION_END);
	if (mhd == NULL)
		return fail(error, "retrying in 5 s",
					tls ? "Check that no other process listens on elmo_oscp.port (ss -ltnp), "
					"and that elmo_oscp.tls_cert_file and tls_key_file are a PEM certificate and its key."
					: "Check that no other process listens on elmo_oscp.port (ss -ltnp), "
					"or choose another port and restart the server.",
					"cannot listen on %s:%d%s", s->listen_address, s->port, tls ? " (TLS)" : "");
	return true;
}

/*
 * Shutting down: take the connections already waiting to be accepted (their
 * clients sent before we stopped), then refuse new ones at once, so that
 * nobody waits on a socket nobody reads.
 */
void
http_server_stop_accepting(void)
{
	const union MHD_DaemonInfo *info;
	struct pollfd pfd;
	MHD_socket	fd;

	if (mhd == NULL)
		return;
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_LISTEN_FD);
	if (info != NULL)
	{
		pfd.fd = info->listen_fd;
		pfd.events = POLLIN;
		for (int i = 0; i < 100 && poll(&pfd, 1, 0) > 0; i++)
			MHD_run(mhd);
	}
	fd = MHD_quiesce_daemon(mhd);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

void
http_server_stop(void)
{
	if (mhd == NULL)
		return;
	/* libmicrohttpd must not be stopped with a connection suspended */
	while (ready_head)
	{
		HttpRequest *req = ready_head;

		ready_head = req->next;
		MHD_resume_connection(req->conn);
	}
	ready_tail = NULL;
	ready_count = 0;
	MHD_stop_daemon(mhd);
	mhd = NULL;
}

int
http_server_epoll_fd(void)
{
	const union MHD_DaemonInfo *info;

	if (mhd == NULL)
		return -1;
	info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_EPOLL_FD);
	return info ? info->epoll_fd : -1;
}

/* When libmicrohttpd or a connection's deadline wants a run, in ms (at most a minute); -1: never. */
long
http_server_timeout_ms(void)
{
	MHD_UNSIGNED_LONG_LONG ms;
	long		timeout = 60000;
	long		due;

	if (mhd == NULL)
		return -1;
	if (MHD_get_timeout(mhd, &ms) == MHD_YES && ms < (MHD_UNSIGNED_LONG_LONG) timeout)
		timeout = (long) ms;
	due = conns_next_deadline_ms();
	if (due >= 0 && due < timeout)
		timeout = due;
	return timeout;
}

/* Let libmicrohttpd work, then shut what is overdue (it closes them at its next run). */
void
http_server_run(void)
{
	if (mhd == NULL)
		return;
	MHD_run(mhd);
	conns_sweep();
}
