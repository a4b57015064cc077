/*
 * The HTTP server.  ELMO's API needs every header ELMO looks at, and a
 * request's whole body, before it answers.
 */
#include "http_server.h"

#include "answer.h"
#include "config.h"
#include "control.h"
#include "log.h"
#include "oscp.h"
#include "trigger.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BODY (4 * 1024 * 1024)

static struct MHD_Daemon *daemon_;

struct conn {
	char *buf;
	size_t len;
	int too_big;
};

static enum MHD_Result add_kv(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	json_t *o = cls, *old;
	char name[256];
	size_t i;
	for (i = 0; key[i] && i < sizeof name - 1; i++)
		name[i] = (char)tolower((unsigned char)key[i]);
	name[i] = '\0';
	if ((old = json_object_get(o, name)) && json_is_string(old) && value) {
		size_t n = json_string_length(old) + strlen(value) + 3;
		char *j = malloc(n);
		snprintf(j, n, "%s, %s", json_string_value(old), value);
		json_object_set_new(o, name, json_string(j));
		free(j);
	} else
		json_object_set_new(o, name, value ? json_string(value) : json_string(""));
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **ptr)
{
	struct conn *k = *ptr;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	resp_t r;
	int quiet = 0;
	if (!k) {
		*ptr = calloc(1, sizeof *k);
		return *ptr ? MHD_YES : MHD_NO;
	}
	if (*upload_size) {
		if (k->len + *upload_size > MAX_BODY)
			k->too_big = 1;
		else {
			char *nb = realloc(k->buf, k->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			k->buf = nb;
			memcpy(k->buf + k->len, upload, *upload_size);
			k->len += *upload_size;
			k->buf[k->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (k->too_big)
		r = R_error(413, "request entity too large");
	else if (!strncmp(url, OSCP_PREFIX, strlen(OSCP_PREFIX))) {
		json_t *h = json_object();
		MHD_get_connection_values(c, MHD_HEADER_KIND, add_kv, h);
		r = oscp_handle(method, url, h, k->buf, k->len);
		json_decref(h);
		quiet = 1;	/* oscp_handle logs its own line */
	} else if (!strncmp(url, TRIGGER_PREFIX, strlen(TRIGGER_PREFIX)))
		r = trigger_handle(method, url, k->buf, k->len);
	else if (!strncmp(url, CONTROL_PREFIX, strlen(CONTROL_PREFIX))) {
		json_t *q = json_object();
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_kv, q);
		r = control_handle(method, url, q, k->buf, k->len);
		json_decref(q);
		quiet = !cfg.verbose;
	} else {
		char m[600];
		snprintf(m, sizeof m, "Cannot %s %.500s", method, url);
		r = R_error(404, m);
	}
	if (!quiet)
		logmsg("%s %s -> %d%s%s", method, url, r.status, r.status >= 400 && r.body ? " " : "",
		       r.status >= 400 && r.body ? r.body : "");
	if (r.drop) {
		free(r.body);
		return MHD_NO;	/* close the connection without an answer */
	}
	if (r.body) {
		resp = MHD_create_response_from_buffer(strlen(r.body), r.body, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	} else
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(c, (unsigned)r.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ptr, enum MHD_RequestTerminationCode tc)
{
	struct conn *k = *ptr;
	if (k) {
		free(k->buf);
		free(k);
		*ptr = NULL;
	}
}

/* a numeric IPv4 or IPv6 address and port; 0 for IPv4, 1 for IPv6, -1 when neither */
static int sockaddr_of(const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		ss->ss_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
		return 1;
	}
	return -1;
}

int http_start(int *port)
{
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *info;
	int v6 = sockaddr_of(cfg.listen, cfg.port, &ss);
	if (v6 < 0) {
		fprintf(stderr, "elmo-sim: --listen needs a numeric IPv4 or IPv6 address: %s\n", cfg.listen);
		return -1;
	}
	if (v6)
		flags |= MHD_USE_IPv6;
	daemon_ = MHD_start_daemon(flags, (uint16_t)cfg.port, NULL, NULL, on_request, NULL,
				   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
				   MHD_OPTION_END);
	if (!daemon_) {
		fprintf(stderr, "elmo-sim: cannot listen on %s:%d\n", cfg.listen, cfg.port);
		return -1;
	}
	info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
	*port = info ? info->port : cfg.port;
	return 0;
}

void http_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
}
