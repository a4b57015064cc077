/*
 * http_server.c — libmicrohttpd in external epoll mode, inside the worker.
 *
 * No MHD thread exists: the worker's WaitEventSet watches MHD's epoll
 * descriptor and calls MHD_run(), so every callback below runs on the
 * worker's thread.  The callbacks use malloc and plain C only; a finished
 * request is suspended and parked in the inbound batch, and handled with
 * PostgreSQL APIs after MHD_run() has returned.
 */
#include "elmo_oscp.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "utils/timestamp.h"

static struct MHD_Daemon *mhd = NULL;
static char *tls_key = NULL;
static char *tls_cert = NULL;
static char mhd_log_buf[256];
static bool mhd_log_pending = false;

/* MHD's error log: remembered here, written to the server log after MHD_run. */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	vsnprintf(mhd_log_buf, sizeof(mhd_log_buf), fmt, ap);
	mhd_log_pending = true;
}

static void
flush_mhd_log(void)
{
	if (mhd_log_pending)
	{
		size_t		n = strlen(mhd_log_buf);

		while (n > 0 && (mhd_log_buf[n - 1] == '\n' || mhd_log_buf[n - 1] == '\r'))
			mhd_log_buf[--n] = '\0';
		mhd_log_pending = false;
		ereport(LOG, (errmsg("elmo_oscp listener: %s", mhd_log_buf)));
	}
}

/* Plain-C JSON string escaping into a malloc'd error body. */
static char *
json_error_body(const char *message)
{
	size_t		n = strlen(message);
	char	   *out = malloc(n * 6 + 32);
	char	   *p = out;

	if (out == NULL)
		return NULL;
	p += sprintf(p, "{\"message\":\"");
	for (const unsigned char *s = (const unsigned char *) message; *s; s++)
	{
		if (*s == '"' || *s == '\\')
		{
			*p++ = '\\';
			*p++ = *s;
		}
		else if (*s < 0x20)
			p += sprintf(p, "\\u%04x", *s);
		else
			*p++ = *s;
	}
	strcpy(p, "\"}");
	return out;
}

void
http_set_answer(HttpRequest *req, int status, const char *json)
{
	free(req->answer);
	req->answer = json ? strdup(json) : NULL;
	req->status = status;
	req->state = REQ_ANSWERED;
}

void
http_set_error(HttpRequest *req, int status, const char *message)
{
	free(req->answer);
	req->answer = json_error_body(message);
	req->status = status;
	req->state = REQ_ANSWERED;
}

const char *
http_header(HttpRequest *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
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
	ret = MHD_queue_response(req->conn, req->status, resp);
	MHD_destroy_response(resp);
	if (class >= 1 && class <= 5)
		pg_atomic_fetch_add_u64(&elmo_shared->requests[class], 1);
	return ret;
}

static bool
append_body(HttpRequest *req, const char *data, size_t len)
{
	if (req->too_large)
		return true;			/* keep draining, answer 413 at the end */
	if (req->body_len + len > (size_t) elmo_max_request_size)
	{
		req->too_large = true;
		return true;
	}
	if (req->body_len + len + 1 > req->body_cap)
	{
		size_t		cap = Max(req->body_cap * 2, req->body_len + len + 1);
		char	   *nb;

		cap = Max(cap, 1024);
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

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
		   const char *method, const char *version, const char *upload_data,
		   size_t *upload_data_size, void **con_cls)
{
	HttpRequest *req = *con_cls;

	if (req == NULL)
	{
		/* headers are in: route, authenticate, check limits before any body */
		req = calloc(1, sizeof(HttpRequest));
		if (req == NULL)
			return MHD_NO;
		req->conn = conn;
		*con_cls = req;
		if (!route_request(req, url, method))
			return queue_answer(req);
		return MHD_YES;
	}

	if (*upload_data_size > 0)
	{
		if (!append_body(req, upload_data, *upload_data_size))
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}

	if (req->state == REQ_ANSWERED)
		return queue_answer(req);
	if (req->state == REQ_PARKED)
		return MHD_YES;			/* spurious call while suspended */

	/* the whole request is here */
	if (req->too_large)
	{
		char		msg[128];

		snprintf(msg, sizeof(msg), "request body larger than elmo_oscp.max_request_size (%d bytes)",
				 elmo_max_request_size);
		http_set_error(req, 413, msg);
		return queue_answer(req);
	}
	if (req->body == NULL && !append_body(req, "", 0))
		return MHD_NO;
	if (!route_check_body(req))
		return queue_answer(req);

	req->state = REQ_PARKED;
	MHD_suspend_connection(conn);
	inbound_park(req);
	return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	HttpRequest *req = *con_cls;

	if (req == NULL)
		return;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		pg_atomic_fetch_add_u64(&elmo_shared->requests[0], 1);
	free(req->body);
	free(req->answer);
	free(req);
	*con_cls = NULL;
}

void
http_resume(HttpRequest *req)
{
	MHD_resume_connection(req->conn);
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

bool
http_server_start(void)
{
	struct sockaddr_storage addr;
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	const char *listen = elmo_listen_addresses;
	bool		tls = (elmo_tls_cert_file[0] != '\0');
	char		msg[ELMO_ERRLEN];

	memset(&addr, 0, sizeof(addr));
	if (strcmp(listen, "*") == 0 || strcmp(listen, "::") == 0)
	{
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) &addr;

		a6->sin6_family = AF_INET6;
		a6->sin6_addr = in6addr_any;
		a6->sin6_port = htons(elmo_port);
		flags |= MHD_USE_DUAL_STACK;
	}
	else if (strchr(listen, ':') != NULL)
	{
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) &addr;

		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(elmo_port);
		if (inet_pton(AF_INET6, listen, &a6->sin6_addr) != 1)
			goto bad_address;
		flags |= MHD_USE_IPv6;
	}
	else
	{
		struct sockaddr_in *a4 = (struct sockaddr_in *) &addr;

		a4->sin_family = AF_INET;
		a4->sin_port = htons(elmo_port);
		if (strcmp(listen, "localhost") == 0)
			listen = "127.0.0.1";
		if (inet_pton(AF_INET, listen, &a4->sin_addr) != 1)
			goto bad_address;
	}

	if (tls)
	{
		free(tls_cert);
		free(tls_key);
		tls_cert = read_file(elmo_tls_cert_file);
		tls_key = read_file(elmo_tls_key_file[0] ? elmo_tls_key_file : elmo_tls_cert_file);
		if (tls_cert == NULL || tls_key == NULL)
		{
			snprintf(msg, sizeof(msg), "cannot read elmo_oscp.tls_cert_file or tls_key_file: %m");
			elmo_set_last_error(msg);
			ereport(LOG, (errmsg("elmo_oscp: %s; the listener stays down (it never falls back to plain HTTP)", msg)));
			return false;
		}
		flags |= MHD_USE_TLS;
	}

	mhd_log_pending = false;
	mhd = MHD_start_daemon(flags, (uint16_t) elmo_port, NULL, NULL,
						   &on_request, NULL,
						   MHD_OPTION_EXTERNAL_LOGGER, &on_mhd_log, NULL,
						   MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
						   MHD_OPTION_CONNECTION_LIMIT, (unsigned int) elmo_max_connections,
						   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) elmo_connection_timeout,
						   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (64 * 1024),
						   MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
						   MHD_OPTION_NOTIFY_COMPLETED, &on_completed, NULL,
						   tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, tls_cert,
						   MHD_OPTION_HTTPS_MEM_KEY, tls_key,
						   MHD_OPTION_END);
	flush_mhd_log();
	if (mhd == NULL)
	{
		snprintf(msg, sizeof(msg), "cannot listen on %s:%d%s", elmo_listen_addresses, elmo_port,
				 tls ? " (TLS)" : "");
		elmo_set_last_error(msg);
		ereport(LOG, (errmsg("elmo_oscp: %s; retrying in 5 s", msg),
					  errhint("Check that elmo_oscp.port is free and the certificate and key match.")));
		return false;
	}

	SpinLockAcquire(&elmo_shared->mutex);
	elmo_shared->listening = true;
	elmo_shared->tls = tls;
	elmo_shared->bound_port = elmo_port;
	strlcpy(elmo_shared->bound_address, elmo_listen_addresses, sizeof(elmo_shared->bound_address));
	SpinLockRelease(&elmo_shared->mutex);
	ereport(LOG, (errmsg("elmo_oscp: listening on %s:%d (%s), path prefix %s",
						 elmo_listen_addresses, elmo_port, tls ? "https" : "http",
						 elmo_path_prefix)));
	return true;

bad_address:
	snprintf(msg, sizeof(msg), "elmo_oscp.listen_addresses \"%s\" is not an IP address", listen);
	elmo_set_last_error(msg);
	ereport(LOG, (errmsg("elmo_oscp: %s", msg),
				  errhint("Use one IPv4 or IPv6 address, \"localhost\" or \"*\".")));
	return false;
}

void
http_server_stop(void)
{
	if (mhd)
	{
		MHD_stop_daemon(mhd);
		mhd = NULL;
	}
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

long
http_server_timeout_ms(void)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (mhd == NULL || MHD_get_timeout(mhd, &ms) != MHD_YES)
		return -1;
	return (long) Min(ms, (MHD_UNSIGNED_LONG_LONG) 60000);
}

void
http_server_run(void)
{
	if (mhd == NULL)
		return;
	MHD_run(mhd);
	flush_mhd_log();
}
