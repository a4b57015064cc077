/*
 * slow_clients — attacks the worker's listener with slow and idle clients from
 * other loopback addresses while "ELMO" (127.0.0.1) sends forecasts, and
 * reports how ELMO was answered.  Used by test/e2e/31_slow_clients.t.
 *
 *   slow_clients PORT TOKEN BODY_FILE RID_PREFIX [options]
 *     --attackers N      attacking connections kept up (1000)
 *     --addresses K      spread over 127.0.0.2 ... 127.0.0.(K+1) (10)
 *     --warmup MS        attack alone for this long first (3000)
 *     --forecasts N      forecasts ELMO sends, one connection each (200)
 *     --interval MS      between two forecasts (50)
 *     --reconnect MS     an attacker whose connection was closed connects
 *                        again after this long (200)
 *     --budget MS        ELMO stops sending after this long; the forecasts
 *                        not sent count as unanswered (60000)
 *
 * Attackers come in four kinds, in turn: headers sent a byte every half
 * second after the request line (slowloris), a body trickled the same way
 * after whole headers (with the token), one request sent and its answer
 * never read, and connections that send nothing.  Each connects again when
 * the server closes it.
 *
 * Output, one line each:
 *   elmo sent N answered_204 N other N p50_ms X p99_ms Y max_ms Z
 *   attack opened N closed_by_server N
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 500
#define ELMO_TIMEOUT_MS 20000	/* ELMO gives up after 20 s */

enum
{
	SLOW_HEADERS, SLOW_BODY, NEVER_READS, IDLE, KINDS
};

typedef struct Attacker
{
	int			fd;
	int			kind;
	int			addr;			/* index of its source address */
	long long	retry_at;		/* ms; when fd < 0 */
	size_t		sent;			/* bytes of its script sent */
} Attacker;

static int	port;
static const char *token;
static char *body;
static const char *rid_prefix;
static int	n_attackers = 1000;
static int	n_addresses = 10;
static int	warmup_ms = 3000;
static int	n_forecasts = 200;
static int	interval_ms = 50;
static int	reconnect_ms = 200;
static int	budget_ms = 60000;
static long long opened,
			closed_by_server;
static char slow_headers[256];
static char slow_body[512];
static const char never_reads[] = "GET /oscp/fp/2.0/no-such-message HTTP/1.1\r\nHost: x\r\n\r\n";

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
die(const char *what)
{
	perror(what);
	exit(2);
}

static char *
read_all(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		die(path);
	buf = malloc(n + 1);
	if (buf == NULL || fread(buf, 1, n, f) != (size_t) n)
		die(path);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static struct sockaddr_in
addr_of(const char *ip, int p)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(p);
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

/* ---------------------------------------------------------------- attackers */

static void
attacker_connect(int ep, Attacker *a)
{
	char		ip[32];
	struct sockaddr_in src,
				dst = addr_of("127.0.0.1", port);
	struct epoll_event ev;

	snprintf(ip, sizeof(ip), "127.0.0.%d", 2 + a->addr);
	src = addr_of(ip, 0);
	a->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (a->fd < 0)
		die("socket");
	if (bind(a->fd, (struct sockaddr *) &src, sizeof(src)) != 0)
		die("bind");
	if (connect(a->fd, (struct sockaddr *) &dst, sizeof(dst)) != 0 && errno != EINPROGRESS)
		die("connect");
	a->sent = 0;
	opened++;
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.ptr = a;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, a->fd, &ev) != 0)
		die("epoll_ctl");
}

static void
attacker_closed(Attacker *a)
{
	close(a->fd);
	a->fd = -1;
	a->retry_at = now_ms() + reconnect_ms;
	closed_by_server++;
}

/* How much of its script an attacker sends at once, before trickling the rest. */
static size_t
burst(const Attacker *a, const char *script)
{
	const char *end;

	if (a->kind == SLOW_HEADERS)
		return strstr(script, "X-Slow") - script;	/* request line and Host */
	if (a->kind == SLOW_BODY)
		return (end = strstr(script, "\r\n\r\n")) ? (size_t) (end + 4 - script) : 1;
	return strlen(script);
}

/* One tick: its first burst, then a byte of its script (its last byte again and again). */
static void
attacker_tick(Attacker *a)
{
	const char *script = NULL;
	size_t		len,
				n = 1;

	if (a->fd < 0)
		return;
	if (a->kind == SLOW_HEADERS)
		script = slow_headers;
	else if (a->kind == SLOW_BODY)
		script = slow_body;
	else if (a->kind == NEVER_READS)
		script = never_reads;
	if (script == NULL)
		return;
	len = strlen(script);
	if (a->sent == 0)
		n = burst(a, script);
	else if (a->kind == NEVER_READS)
		return;
	else if (a->sent >= len)
		a->sent = len - 1;
	if (send(a->fd, script + a->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
		a->sent += n;
}

/* The attack runs until the ELMO child exits. */
static void
attack(pid_t elmo)
{
	Attacker   *as = calloc(n_attackers, sizeof(Attacker));
	int			ep = epoll_create1(0);
	long long	next_tick = 0;
	struct epoll_event evs[256];

	if (as == NULL || ep < 0)
		die("attack");
	for (int i = 0; i < n_attackers; i++)
	{
		as[i].kind = i % KINDS;
		as[i].addr = i % n_addresses;
		as[i].fd = -1;
		as[i].retry_at = 0;
	}
	for (;;)
	{
		long long	now = now_ms();
		int			n;

		if (now >= next_tick)
		{
			for (int i = 0; i < n_attackers; i++)
			{
				if (as[i].fd < 0 && now >= as[i].retry_at)
					attacker_connect(ep, &as[i]);
				attacker_tick(&as[i]);
			}
			next_tick = now + TICK_MS;
			if (waitpid(elmo, NULL, WNOHANG) == elmo)
				break;
		}
		n = epoll_wait(ep, evs, 256, 20);
		for (int i = 0; i < n; i++)
		{
			Attacker   *a = evs[i].data.ptr;
			char		buf[4096];

			if (a->fd < 0)
				continue;
			if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			{
				epoll_ctl(ep, EPOLL_CTL_DEL, a->fd, NULL);
				attacker_closed(a);
			}
			else if (a->kind != NEVER_READS)
			{
				ssize_t		r = recv(a->fd, buf, sizeof(buf), 0);

				if (r == 0 || (r < 0 && errno != EAGAIN))
				{
					epoll_ctl(ep, EPOLL_CTL_DEL, a->fd, NULL);
					attacker_closed(a);
				}
			}
		}
		/* the reconnections due between ticks */
		now = now_ms();
		for (int i = 0; i < n_attackers; i++)
			if (as[i].fd < 0 && now >= as[i].retry_at)
				attacker_connect(ep, &as[i]);
	}
	printf("attack opened %lld closed_by_server %lld\n", opened, closed_by_server);
}

/* ---------------------------------------------------------------- ELMO */

/* Wait for fd to be ready for [events] until [deadline]; false on timeout. */
static bool
wait_fd(int fd, short events, long long deadline)
{
	struct pollfd p = {fd, events, 0};
	long long	left = deadline - now_ms();

	return left > 0 && poll(&p, 1, (int) left) == 1;
}

/* One forecast on a new connection: its HTTP status, or 0 (no answer in time). */
static int
elmo_forecast(int i)
{
	struct sockaddr_in dst = addr_of("127.0.0.1", port);
	long long	deadline = now_ms() + ELMO_TIMEOUT_MS;
	char		req[8192];
	char		resp[4096];
	size_t		got = 0;
	int			len,
				status = 0;
	int			fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (fd < 0)
		die("socket");
	len = snprintf(req, sizeof(req),
				   "POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1\r\nHost: 127.0.0.1\r\n"
				   "Content-Type: application/json\r\nAuthorization: Token %s\r\nX-Request-ID: %s%d\r\n"
				   "Connection: keep-alive\r\nContent-Length: %zu\r\n\r\n%s",
				   token, rid_prefix, i, strlen(body), body);
	if (connect(fd, (struct sockaddr *) &dst, sizeof(dst)) != 0 && errno != EINPROGRESS)
		goto out;
	if (!wait_fd(fd, POLLOUT, deadline) || send(fd, req, len, MSG_NOSIGNAL) != len)
		goto out;
	while (got < sizeof(resp) - 1 && wait_fd(fd, POLLIN, deadline))
	{
		ssize_t		r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);

		if (r <= 0)
			break;
		got += r;
		resp[got] = '\0';
		if (strstr(resp, "\r\n\r\n"))
		{
			if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
				status = -1;
			break;
		}
	}
out:
	close(fd);
	return status;
}

static int
compare_ll(const void *a, const void *b)
{
	long long	x = *(const long long *) a,
				y = *(const long long *) b;

	return x < y ? -1 : x > y;
}

static void
elmo(void)
{
	long long  *ms = calloc(n_forecasts, sizeof(long long));
	long long	end = now_ms() + budget_ms;
	int			ok = 0;

	for (int i = 0; i < n_forecasts; i++)
	{
		long long	t0 = now_ms();
		int			status;

		if (t0 >= end)
		{
			ms[i] = ELMO_TIMEOUT_MS;
			continue;
		}
		status = elmo_forecast(i);

		ms[i] = now_ms() - t0;
		if (status == 204)
			ok++;
		else
			fprintf(stderr, "forecast %d: status %d after %lld ms\n", i, status, ms[i]);
		while (now_ms() < t0 + interval_ms)
			poll(NULL, 0, (int) (t0 + interval_ms - now_ms()));
	}
	qsort(ms, n_forecasts, sizeof(long long), compare_ll);
	printf("elmo sent %d answered_204 %d other %d p50_ms %lld p99_ms %lld max_ms %lld\n",
		   n_forecasts, ok, n_forecasts - ok, ms[n_forecasts / 2],
		   ms[(n_forecasts * 99 + 99) / 100 - 1], ms[n_forecasts - 1]);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	struct rlimit rl;
	pid_t		child;

	if (argc < 5)
	{
		fprintf(stderr, "usage: slow_clients PORT TOKEN BODY_FILE RID_PREFIX [--attackers N] [--addresses K] "
				"[--warmup MS] [--forecasts N] [--interval MS] [--reconnect MS]\n");
		return 2;
	}
	port = atoi(argv[1]);
	token = argv[2];
	body = read_all(argv[3]);
	rid_prefix = argv[4];
	for (int i = 5; i + 1 < argc; i += 2)
	{
		int			v = atoi(argv[i + 1]);

		if (strcmp(argv[i], "--attackers") == 0)
			n_attackers = v;
		else if (strcmp(argv[i], "--addresses") == 0)
			n_addresses = v;
		else if (strcmp(argv[i], "--warmup") == 0)
			warmup_ms = v;
		else if (strcmp(argv[i], "--forecasts") == 0)
			n_forecasts = v;
		else if (strcmp(argv[i], "--interval") == 0)
			interval_ms = v;
		else if (strcmp(argv[i], "--reconnect") == 0)
			reconnect_ms = v;
		else if (strcmp(argv[i], "--budget") == 0)
			budget_ms = v;
	}
	snprintf(slow_headers, sizeof(slow_headers),
			 "POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1\r\nHost: x\r\nX-Slow: ");
	snprintf(slow_body, sizeof(slow_body),
			 "POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1\r\nHost: x\r\n"
			 "Content-Type: application/json\r\nAuthorization: Token %s\r\nX-Request-ID: SLOWBODY\r\n"
			 "Content-Length: 100000\r\n\r\n{\"group_id\":\"", token);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t) n_attackers + 64)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0)
	{
		poll(NULL, 0, warmup_ms);
		elmo();
		_exit(0);
	}
	attack(child);
	return 0;
}
