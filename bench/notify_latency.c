/*
 * bench/notify_latency.c — from a forecast POST to its NOTIFY, when idle.
 *
 *   notify_latency URL TOKEN TEMPLATE COUNT WARMUP TAG [DUMP]
 *
 * Connects with libpq (PGHOST, PGPORT, PGUSER, PGDATABASE from the
 * environment), LISTENs on elmo_capacity_forecast, then POSTs COUNT + WARMUP
 * forecasts to URL one after the other over one keep-alive connection
 * (libcurl multi).  Each body is TEMPLATE (a file) with "@GROUP@" replaced by
 * a group id of its own, which is how its NOTIFY (payload {"group_id": ...})
 * is recognised.  One curl_multi_wait() watches the HTTP socket and the
 * libpq socket (as an extra fd) together, so whichever comes first is seen
 * at once.
 *
 * Latency of a request = when its NOTIFY was read − when its request had been
 * sent (the request's start + curl's pretransfer time).  The 204 is timed the
 * same way.  The first WARMUP requests are not counted.
 *
 * DUMP, when given, gets one line per counted request: its number, when it
 * was sent (ms since the first), NOTIFY and 204 latency (us) — to see
 * whether slow ones come in a rhythm (timers) or at random (disk).
 *
 * Prints one line: RESULT n=... notify_p50_us=... notify_p99_us=...
 * notify_max_us=... http_p50_us=... http_p99_us=... notify_before_204=...
 * Exit 1 when a request is not answered 204 or its NOTIFY does not come
 * within 5 s; the whole run is bounded by 60 s.
 *
 * Built by bench/run.sh: cc -O2 notify_latency.c -lpq -lcurl
 */
#include <curl/curl.h>
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PER_REQUEST_US	5000000LL
#define WHOLE_RUN_US	60000000LL

static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int
cmp_ll(const void *a, const void *b)
{
	long long	x = *(const long long *) a, y = *(const long long *) b;

	return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted array */
static long long
pct(const long long *v, int n, double p)
{
	int			k = (int) (p / 100.0 * n + 0.999999) - 1;

	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return v[k];
}

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

static char *
read_file(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		len;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc(len + 1);
	if (!buf || fread(buf, 1, len, f) != (size_t) len)
	{
		fclose(f);
		return NULL;
	}
	fclose(f);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	buf[len] = '\0';
	return buf;
}

int
main(int argc, char **argv)
{
	const char *url, *token, *tag;
	char	   *tmpl, *mark;
	int			count, warmup, total;
	PGconn	   *pg;
	PGresult   *res;
	CURL	   *easy;
	CURLM	   *multi;
	long long  *notify_us, *http_us;
	int			n_ok = 0, before_204 = 0;
	long long	run_deadline, t_first = 0;
	char		auth[512];
	FILE	   *dump = NULL;

	if (argc != 7 && argc != 8)
	{
		fprintf(stderr, "usage: %s URL TOKEN TEMPLATE COUNT WARMUP TAG [DUMP]\n", argv[0]);
		return 2;
	}
	url = argv[1];
	token = argv[2];
	count = atoi(argv[4]);
	warmup = atoi(argv[5]);
	tag = argv[6];
	total = count + warmup;
	tmpl = read_file(argv[3]);
	if (!tmpl || !(mark = strstr(tmpl, "@GROUP@")) || count < 1 || warmup < 0)
	{
		fprintf(stderr, "notify_latency: bad template %s or count\n", argv[3]);
		return 2;
	}
	*mark = '\0';				/* tmpl = prefix, mark + 7 = suffix */
	if (argc == 8 && !(dump = fopen(argv[7], "w")))
	{
		perror(argv[7]);
		return 2;
	}

	pg = PQconnectdb("");
	if (PQstatus(pg) != CONNECTION_OK)
	{
		fprintf(stderr, "notify_latency: %s", PQerrorMessage(pg));
		return 2;
	}
	res = PQexec(pg, "LISTEN elmo_capacity_forecast");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "notify_latency: LISTEN: %s", PQerrorMessage(pg));
		return 2;
	}
	PQclear(res);
	if (PQsetnonblocking(pg, 1) != 0)
		return 2;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	multi = curl_multi_init();
	easy = curl_easy_init();
	snprintf(auth, sizeof(auth), "Authorization: Token %s", token);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);

	notify_us = calloc(total, sizeof(long long));
	http_us = calloc(total, sizeof(long long));
	run_deadline = now_us() + WHOLE_RUN_US;

	for (int i = 0; i < total; i++)
	{
		char		group[64], quoted[80], rid_hdr[128];
		char	   *body;
		size_t		blen;
		struct curl_slist *hdrs = NULL;
		long long	t_start, t_resp = 0, t_notify = 0, deadline;
		curl_off_t	pretransfer = 0;
		long		status = 0;
		CURLcode	result = CURLE_OK;
		int			done_http = 0;

		snprintf(group, sizeof(group), "%s-%d", tag, i);
		snprintf(quoted, sizeof(quoted), "\"%s\"", group);
		snprintf(rid_hdr, sizeof(rid_hdr), "X-Request-ID: %s-%d", tag, i);
		blen = strlen(tmpl) + strlen(group) + strlen(mark + 7);
		body = malloc(blen + 1);
		snprintf(body, blen + 1, "%s%s%s", tmpl, group, mark + 7);

		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		hdrs = curl_slist_append(hdrs, auth);
		hdrs = curl_slist_append(hdrs, rid_hdr);
		hdrs = curl_slist_append(hdrs, "Expect:");
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) blen);

		t_start = now_us();
		deadline = t_start + PER_REQUEST_US;
		curl_multi_add_handle(multi, easy);

		while (!done_http || !t_notify)
		{
			struct curl_waitfd wfd = {PQsocket(pg), CURL_WAIT_POLLIN, 0};
			int			running, numfds, left;
			CURLMsg    *msg;
			PGnotify   *nt;

			if (now_us() > deadline || now_us() > run_deadline)
			{
				fprintf(stderr, "notify_latency: request %d: %s within 5 s\n", i,
						!done_http ? "no HTTP answer" : "no NOTIFY");
				return 1;
			}
			curl_multi_perform(multi, &running);
			while ((msg = curl_multi_info_read(multi, &left)))
			{
				if (msg->msg == CURLMSG_DONE)
				{
					t_resp = now_us();
					result = msg->data.result;
					done_http = 1;
				}
			}
			if (PQconsumeInput(pg) == 0)
			{
				fprintf(stderr, "notify_latency: %s", PQerrorMessage(pg));
				return 1;
			}
			while ((nt = PQnotifies(pg)))
			{
				if (!t_notify && strstr(nt->extra, quoted))
				{
					t_notify = now_us();
					if (!done_http && i >= warmup)
						before_204++;
				}
				PQfreemem(nt);
			}
			if (done_http && t_notify)
				break;
			curl_multi_wait(multi, &wfd, 1, 20, &numfds);
		}

		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
		curl_multi_remove_handle(multi, easy);
		curl_slist_free_all(hdrs);
		free(body);
		if (result != CURLE_OK || status != 204)
		{
			fprintf(stderr, "notify_latency: request %d: %s, HTTP %ld\n", i,
					curl_easy_strerror(result), status);
			return 1;
		}
		if (i >= warmup)
		{
			long long	t_sent = t_start + pretransfer;

			notify_us[n_ok] = t_notify - t_sent;
			http_us[n_ok] = t_resp - t_sent;
			if (n_ok == 0)
				t_first = t_sent;
			if (dump)
				fprintf(dump, "%d %.1f %lld %lld\n", n_ok, (t_sent - t_first) / 1000.0,
						notify_us[n_ok], http_us[n_ok]);
			n_ok++;
		}
		/* idle between requests: nothing else is in flight */
		{
			struct timespec gap = {0, 2000000};

			nanosleep(&gap, NULL);
		}
	}

	qsort(notify_us, n_ok, sizeof(long long), cmp_ll);
	qsort(http_us, n_ok, sizeof(long long), cmp_ll);
	printf("RESULT n=%d notify_p50_us=%lld notify_p99_us=%lld notify_max_us=%lld "
		   "http_p50_us=%lld http_p99_us=%lld notify_before_204=%d\n",
		   n_ok, pct(notify_us, n_ok, 50), pct(notify_us, n_ok, 99), notify_us[n_ok - 1],
		   pct(http_us, n_ok, 50), pct(http_us, n_ok, 99), before_204);

	if (dump)
		fclose(dump);
	curl_easy_cleanup(easy);
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	PQfinish(pg);
	return 0;
}
