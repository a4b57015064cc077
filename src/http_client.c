/*
 * http_client.c — libcurl multi on the worker's thread, for sender.c.
 *
 * libcurl runs in its socket-action mode: CURLMOPT_SOCKETFUNCTION puts its
 * sockets into a private epoll set (http_client_epoll_fd(), which the worker
 * adds to its WaitEventSet) and CURLMOPT_TIMERFUNCTION records when curl wants
 * to be called back, so the worker never blocks in curl and never needs a
 * thread.  Nothing here opens a transaction: sender.c claims and records,
 * this file only moves Transfers from "claimed" to "finished".  Plain C
 * only (see no_postgres.h): the curl callbacks below run inside libcurl.
 */
#include "http_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS		64
#define IDLE_HANDLES	64		/* easy handles kept for reuse */

static bool curl_ready = false;
static int	epfd = -1;
static CURLM *multi = NULL;
static int64_t curl_deadline_us = -1;	/* monotonic; -1: curl wants no timeout */
static char socket_known;		/* marker assigned to sockets in epfd */

static Transfer *active = NULL;	/* handed to curl */
static int	in_flight = 0;
static CURL *idle_handles[IDLE_HANDLES];
static int	n_idle = 0;
static uint64_t n_sent = 0;		/* answered 2xx, since last taken */
static uint64_t n_failed = 0;	/* anything else */

/* ---------------------------------------------------------------- helpers */

static int64_t
monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
transfer_push(Transfer **head, Transfer *t)
{
	t->prev = NULL;
	t->next = *head;
	if (*head)
		(*head)->prev = t;
	*head = t;
}

void
transfer_remove(Transfer **head, Transfer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		*head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
}

static void
transfer_free(Transfer *t)
{
	if (t->easy)
	{
		if (n_idle < IDLE_HANDLES)
			idle_handles[n_idle++] = t->easy;
		else
			curl_easy_cleanup(t->easy);
	}
	curl_slist_free_all(t->headers);
	free(t->method);
	free(t->url);
	free(t->authorization);
	free(t->request_id);
	free(t->correlation_id);
	free(t->body);
	free(t);
}

void
transfer_free_all(Transfer **head)
{
	while (*head)
	{
		Transfer   *t = *head;

		transfer_remove(head, t);
		transfer_free(t);
	}
}

/* ---------------------------------------------------------------- curl callbacks: plain C only */

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	Transfer   *t = (Transfer *) userdata;
	size_t		n = size * nmemb;
	size_t		room = RESPONSE_CAP - t->response_len;

	if (room > 0)
	{
		size_t		k = n < room ? n : room;

		memcpy(t->response + t->response_len, data, k);
		t->response_len += k;
	}
	return n;					/* the rest is read and dropped */
}

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		(void) epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(multi, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = s;
	if (socketp == NULL)
	{
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(multi, s, &socket_known);
	}
	else if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		(void) epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	curl_deadline_us = timeout_ms < 0 ? -1 : monotonic_us() + (int64_t) timeout_ms * 1000;
	return 0;
}

/* ---------------------------------------------------------------- transfers (no transaction) */

static char *
header_line(const char *name, const char *value)
{
	size_t		len = strlen(name) + 2 + strlen(value) + 1;
	char	   *line = malloc(len);
	char	   *p;

	if (line == NULL)
		return NULL;
	snprintf(line, len, "%s: %s", name, value);
	for (p = line; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	return line;
}

static bool
add_header(Transfer *t, const char *name, const char *value)
{
	char	   *line;
	struct curl_slist *l;

	if (value == NULL)
		return true;
	line = header_line(name, value);
	if (line == NULL)
		return false;
	l = curl_slist_append(t->headers, line);
	free(line);
	if (l == NULL)
		return false;
	t->headers = l;
	return true;
}

/* Configure and hand one claimed message to curl; false if it cannot be. */
static bool
start_transfer(Transfer *t, const HttpClientSettings *s)
{
	CURL	   *e;

	e = n_idle > 0 ? idle_handles[--n_idle] : curl_easy_init();
	if (e == NULL)
		return false;
	curl_easy_reset(e);
	t->easy = e;

	if (!add_header(t, "Content-Type", "application/json") ||
		!add_header(t, "Authorization", t->authorization) ||
		!add_header(t, "X-Request-ID", t->request_id) ||
		!add_header(t, "X-Correlation-ID", t->correlation_id) ||
		!add_header(t, "Expect", ""))	/* no 100-continue round trip */
		return false;

	curl_easy_setopt(e, CURLOPT_URL, t->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (void *) t);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(t->body));
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
	if (strcmp(t->method, "POST") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *) t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (s->ca_file && s->ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "elmo_oscp/" ELMO_OSCP_VERSION);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
		return false;
	transfer_push(&active, t);
	in_flight++;
	return true;
}

static void
drive_curl(void)
{
	struct epoll_event events[MAX_EVENTS];
	int			running;
	int			n;

	n = epoll_wait(epfd, events, MAX_EVENTS, 0);
	for (int i = 0; i < n; i++)
	{
		int			mask = 0;

		if (events[i].events & EPOLLIN)
			mask |= CURL_CSELECT_IN;
		if (events[i].events & EPOLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (events[i].events & (EPOLLERR | EPOLLHUP))
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(multi, events[i].data.fd, mask, &running);
	}
	if (curl_deadline_us >= 0 && monotonic_us() >= curl_deadline_us)
	{
		curl_deadline_us = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/* Move every finished transfer from curl to the done list. */
static void
harvest(Transfer **done)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		CURL	   *e = msg->easy_handle;
		char	   *priv = NULL;
		Transfer   *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
		t = (Transfer *) priv;
		t->result = msg->data.result;
		t->http_status = 0;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &t->http_status);
		/* a transfer that broke before an answer is a network failure */
		if (t->result != CURLE_OK && t->http_status < 200)
			t->http_status = 0;
		if (t->result != CURLE_OK && t->errbuf[0] == '\0')
			snprintf(t->errbuf, sizeof(t->errbuf), "%s", curl_easy_strerror(t->result));
		if (t->http_status < 200 || t->http_status > 299)
		{
			curl_off_t	dns = 0,
						connect = 0,
						tls = 0,
						first = 0,
						total = 0;

			curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &dns);
			curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect);
			curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &tls);
			curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &first);
			curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total);
			/* milliseconds since the start of the attempt, as curl counts them */
			snprintf(t->timing, sizeof(t->timing),
					 "{\"dns_ms\": %.3f, \"connect_ms\": %.3f, \"tls_ms\": %.3f, "
					 "\"first_byte_ms\": %.3f, \"total_ms\": %.3f, \"curl_code\": %d}",
					 dns / 1000.0, connect / 1000.0, tls / 1000.0, first / 1000.0,
					 total / 1000.0, (int) t->result);
			n_failed++;
		}
		else
			n_sent++;
		curl_multi_remove_handle(multi, e);
		transfer_remove(&active, t);
		in_flight--;
		transfer_push(done, t);
	}
}

/* ---------------------------------------------------------------- sender.c's interface */

bool
http_client_init(char *error, size_t size)
{
	if (curl_ready)
		return true;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		snprintf(error, size, "libcurl could not be initialized");
		return false;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	multi = curl_multi_init();
	if (epfd < 0 || multi == NULL)
	{
		snprintf(error, size, "%s", epfd < 0 ? "epoll_create1 failed" : "curl_multi_init failed");
		if (epfd >= 0)
			close(epfd);
		epfd = -1;
		return false;
	}
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_ready = true;
	return true;
}

/* Drops what is in flight: the caller has freed its own lists first. */
void
http_client_shutdown(void)
{
	if (!curl_ready)
		return;
	while (active)
	{
		Transfer   *t = active;

		curl_multi_remove_handle(multi, t->easy);
		transfer_remove(&active, t);
		transfer_free(t);
	}
	in_flight = 0;
	while (n_idle > 0)
		curl_easy_cleanup(idle_handles[--n_idle]);
	curl_multi_cleanup(multi);
	multi = NULL;
	close(epfd);
	epfd = -1;
	curl_global_cleanup();
	curl_ready = false;
}

bool
http_client_ready(void)
{
	return curl_ready;
}

int
http_client_epoll_fd(void)
{
	return curl_ready ? epfd : -1;
}

/* When curl wants to be called back, in ms (at most a minute); -1: never. */
long
http_client_timeout_ms(void)
{
	int64_t		us;

	if (curl_deadline_us < 0)
		return -1;
	us = curl_deadline_us - monotonic_us();
	return us <= 0 ? 0 : (us >= 60000000 ? 60000 : (long) ((us + 999) / 1000));
}

int
http_client_in_flight(void)
{
	return in_flight;
}

/*
 * Hand one claimed (and committed) message to curl.  One that cannot be
 * started goes to *done as a network failure: recorded next turn, retried
 * with backoff.
 */
void
http_client_start(Transfer *t, const HttpClientSettings *settings, Transfer **done)
{
	if (!start_transfer(t, settings))
	{
		snprintf(t->errbuf, sizeof(t->errbuf), "could not start the transfer (out of memory)");
		t->result = CURLE_OUT_OF_MEMORY;
		t->http_status = 0;
		if (t->easy)
		{
			curl_easy_cleanup(t->easy);
			t->easy = NULL;
		}
		transfer_push(done, t);
	}
}

/* Drive curl (ready sockets, its timeout) and move what finished to *done. */
void
http_client_run(Transfer **done)
{
	drive_curl();
	harvest(done);
}

/* Outcomes since the last call: delivered (2xx) and not. */
void
http_client_take_counts(uint64_t *sent, uint64_t *failed)
{
	*sent += n_sent;
	*failed += n_failed;
	n_sent = n_failed = 0;
}
