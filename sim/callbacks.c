/*
 * elmo-sim: what ELMO sends to the CSMS. One worker thread runs a libcurl
 * multi handle (callbacks run concurrently, each with its own delay) and
 * ELMO's daily schedule on the simulated clock (10:00 assignment, 16:00 reply).
 */
#include "sim.h"

#include <curl/curl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HANDSHAKE_BODY "{\"required_behaviour\":{\"measurement_configuration\":[\"CONTINUOUS\"]}}"
#define MAX_RESPONSE 65536

typedef struct job {
	long id;
	unsigned gen;
	int64_t due;		/* monotonic ms */
	char kind[32];
	char *url, *auth, *body;
	char xrid[REQUEST_ID_LEN + 1];
	chain_t chain;
	json_t *rec;
	CURL *easy;
	struct curl_slist *hdrs;
	char *resp;
	size_t rlen;
	int64_t t_start;
	struct job *next;
	struct job *anext;	/* in the worker's list of transfers under way */
} job_t;

static job_t *pending;		/* guarded by st.mu */
static job_t *active;		/* worker thread only */
static CURLM *multi;
static pthread_t worker;
static volatile int worker_stop;
static volatile int clock_changed = 1;

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void free_job(job_t *j)
{
	if (j->easy)
		curl_easy_cleanup(j->easy);
	curl_slist_free_all(j->hdrs);
	json_decref(j->rec);
	free(j->url);
	free(j->auth);
	free(j->body);
	free(j->chain.hs_url);
	free(j->chain.hs_auth);
	free(j->resp);
	free(j);
}

static job_t *new_job(const char *kind, const char *url, const char *auth, const char *body, int delay_ms,
		      const chain_t *chain)
{
	job_t *j = calloc(1, sizeof *j);
	json_t *h = json_object();
	char ts[40];
	snprintf(j->kind, sizeof j->kind, "%s", kind);
	j->url = xstrdup(url);
	j->auth = xstrdup(auth);
	j->body = xstrdup(body);
	if (chain && chain->chain_handshake) {
		j->chain.chain_handshake = 1;
		j->chain.hs_url = xstrdup(chain->hs_url);
		j->chain.hs_auth = xstrdup(chain->hs_auth);
	}
	new_request_id(j->xrid);
	j->due = mono_now_ms() + (delay_ms > 0 ? delay_ms : 0);
	json_object_set_new(h, "accept", json_string("application/json, text/plain, */*"));
	json_object_set_new(h, "content-type", json_string("application/json"));
	json_object_set_new(h, "authorization", json_string(auth));
	json_object_set_new(h, "x-request-id", json_string(j->xrid));
	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	j->rec = json_object();
	LOCK();
	j->gen = st.gen;
	j->id = st.next_cb_id++;
	json_object_set_new(j->rec, "id", json_integer(j->id));
	json_object_set_new(j->rec, "kind", json_string(kind));
	json_object_set_new(j->rec, "method", json_string("POST"));
	json_object_set_new(j->rec, "url", json_string(url));
	json_object_set_new(j->rec, "headers", h);
	json_object_set_new(j->rec, "body", json_string(body));
	json_object_set_new(j->rec, "state", json_string("queued"));
	json_object_set_new(j->rec, "queued_at", json_string(ts));
	json_object_set_new(j->rec, "delay_ms", json_integer(delay_ms));
	json_object_set_new(j->rec, "sent_at", json_null());
	json_object_set_new(j->rec, "finished_at", json_null());
	json_object_set_new(j->rec, "status", json_null());
	json_object_set_new(j->rec, "ok", json_null());
	json_object_set_new(j->rec, "error", json_null());
	json_object_set_new(j->rec, "response_body", json_null());
	json_object_set_new(j->rec, "duration_ms", json_null());
	json_object_set_new(j->rec, "elmo_would_crash", json_false());
	json_array_append(st.callbacks, j->rec);
	UNLOCK();
	return j;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
	job_t *j = ud;
	size_t len = sz * n, keep = len;
	if (j->rlen + keep > MAX_RESPONSE)
		keep = MAX_RESPONSE - j->rlen;
	if (keep) {
		char *r = realloc(j->resp, j->rlen + keep + 1);
		if (!r)
			return 0;
		j->resp = r;
		memcpy(j->resp + j->rlen, p, keep);
		j->rlen += keep;
		j->resp[j->rlen] = '\0';
	}
	return len;
}

/* headers as ELMO (axios) sends them, in its order (capture 03) */
static void setup_easy(job_t *j)
{
	char line[2048];
	j->easy = curl_easy_init();
	j->hdrs = curl_slist_append(j->hdrs, "Accept: application/json, text/plain, */*");
	j->hdrs = curl_slist_append(j->hdrs, "Content-Type: application/json");
	snprintf(line, sizeof line, "Authorization: %s", j->auth);
	j->hdrs = curl_slist_append(j->hdrs, line);
	snprintf(line, sizeof line, "X-Request-ID: %s", j->xrid);
	j->hdrs = curl_slist_append(j->hdrs, line);
	j->hdrs = curl_slist_append(j->hdrs, "User-Agent: elmo-sim/1.0");
	j->hdrs = curl_slist_append(j->hdrs, "Accept-Encoding: gzip, compress, deflate, br");
	j->hdrs = curl_slist_append(j->hdrs, "Connection: keep-alive");
	j->hdrs = curl_slist_append(j->hdrs, "Expect:");
	curl_easy_setopt(j->easy, CURLOPT_URL, j->url);
	curl_easy_setopt(j->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(j->easy, CURLOPT_POSTFIELDS, j->body);
	curl_easy_setopt(j->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
	curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, j->hdrs);
	curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, (long)cfg.callback_timeout_ms);
	curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg.callback_timeout_ms);
	curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(j->easy, CURLOPT_PROXY, "");
	curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(j->easy, CURLOPT_PRIVATE, j);
	if (cfg.ca_file)
		curl_easy_setopt(j->easy, CURLOPT_CAINFO, cfg.ca_file);
	if (cfg.insecure) {
		curl_easy_setopt(j->easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(j->easy, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	j->t_start = mono_now_ms();
	{
		char ts[40];
		fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
		LOCK();
		json_object_set_new(j->rec, "sent_at", json_string(ts));
		json_object_set_new(j->rec, "state", json_string("sending"));
		UNLOCK();
	}
}

static void finish_job(job_t *j, CURLcode rc, long http)
{
	int ok = rc == CURLE_OK && http >= 200 && http < 300;
	int crash = !ok && (!strcmp(j->kind, "register") || !strcmp(j->kind, "handshake"));
	int chain = 0;
	long long dur = mono_now_ms() - j->t_start;
	char ts[40], amask[48];
	const char *errs = rc == CURLE_OK ? NULL : rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : curl_easy_strerror(rc);
	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	LOCK();
	json_object_set_new(j->rec, "finished_at", json_string(ts));
	json_object_set_new(j->rec, "status", rc == CURLE_OK ? json_integer(http) : json_null());
	json_object_set_new(j->rec, "ok", json_boolean(ok));
	json_object_set_new(j->rec, "error", errs ? json_string(errs) : json_null());
	json_object_set_new(j->rec, "response_body", j->resp ? json_string(j->resp) : json_null());
	json_object_set_new(j->rec, "duration_ms", json_integer(dur));
	json_object_set_new(j->rec, "state", json_string(ok ? "delivered" : "failed"));
	json_object_set_new(j->rec, "elmo_would_crash", json_boolean(crash));
	chain = ok && j->chain.chain_handshake && j->gen == st.gen;
	UNLOCK();
	mask_token(j->auth && !strncmp(j->auth, "Token ", 6) ? j->auth + 6 : j->auth, amask);
	logmsg("callback #%ld %s POST %s -> %ld%s%s (%lld ms, auth %s)", j->id, j->kind, j->url,
	       rc == CURLE_OK ? http : 0L, errs ? " " : "", errs ? errs : "", dur, amask);
	if (chain)
		cb_enqueue("handshake", j->chain.hs_url, j->chain.hs_auth, HANDSHAKE_BODY, cfg.handshake_delay_ms, NULL);
	if (crash) {
		logmsg("WARNING: the real ELMO process crashes here (its %s callback was not answered 2xx;"
		       " its new token is already stored: the CSMS is locked out)", j->kind);
		if (!strcmp(j->kind, "register") && j->chain.chain_handshake)
			logmsg("  (no handshake will follow)");
		if (cfg.exit_on_callback_failure) {
			exit_status = 3;
			kill(getpid(), SIGTERM);
		}
	}
	free_job(j);
}

long cb_enqueue(const char *kind, const char *url, const char *authorization, const char *body, int delay_ms,
		const chain_t *chain)
{
	job_t *j = new_job(kind, url, authorization, body, delay_ms, chain), **pp;
	long id = j->id;
	LOCK();
	for (pp = &pending; *pp; pp = &(*pp)->next)
		;
	*pp = j;
	UNLOCK();
	cb_wakeup();
	return id;
}

/* sent from the calling thread, answered (or timed out) before it returns */
long cb_send_sync(const char *kind, const char *url, const char *authorization, const char *body, const chain_t *chain)
{
	job_t *j = new_job(kind, url, authorization, body, 0, chain);
	long id = j->id, http = 0;
	CURLcode rc;
	setup_easy(j);
	rc = curl_easy_perform(j->easy);
	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &http);
	finish_job(j, rc, http);
	return id;
}

void cb_wakeup(void)
{
	if (multi)
		curl_multi_wakeup(multi);
}

void sched_clock_changed(void)
{
	clock_changed = 1;
	cb_wakeup();
}

static char *csms_url(const char *name)
{
	size_t n;
	char *u;
	if (!st.registered || !st.csms_base_url || !st.csms_token)
		return NULL;
	n = strlen(st.csms_base_url) + strlen(name) + 2;
	u = malloc(n);
	snprintf(u, n, "%s/%s", st.csms_base_url, name);
	return u;
}

static char *csms_auth(void)
{
	size_t n = strlen(st.csms_token) + 7;
	char *a = malloc(n);
	snprintf(a, n, "Token %s", st.csms_token);
	return a;
}

/* the day-ahead assignment: creates (or restarts) the negotiation; sends it when a CSMS is registered */
int send_assign(station_t *s, int64_t day_start_ms, const double *caps, int send, json_t *ids)
{
	negotiation_t *n;
	char *url, *auth = NULL, *body = NULL;
	LOCK();
	n = upsert_neg(s, day_start_ms);
	memcpy(n->assigned, caps, sizeof n->assigned);
	url = send ? csms_url("update_group_capacity_forecast") : NULL;
	if (url) {
		auth = csms_auth();
		body = day_forecast_body(s->id, day_start_ms, caps);
	}
	UNLOCK();
	if (url) {
		long id = cb_enqueue("assign", url, auth, body, 0, NULL);
		if (ids)
			json_array_append_new(ids, json_integer(id));
	}
	free(url);
	free(auth);
	free(body);
	return url != NULL;
}

/* ELMO's answer to an adjust request: the requested capacities rounded to whole kW (27a, 33d) */
int send_reply(station_t *s, negotiation_t *n, const double *override, json_t *ids, const char **errp)
{
	double caps[24];
	char *url, *auth, *body;
	long id;
	LOCK();
	if (!override && !n->has_request) {
		UNLOCK();
		*errp = "no adjust request to answer for this station and day";
		return -1;
	}
	if (!(url = csms_url("update_group_capacity_forecast"))) {
		UNLOCK();
		*errp = "no CSMS is registered";
		return -1;
	}
	for (int h = 0; h < 24; h++)
		caps[h] = floor((override ? override[h] : n->requested[h]) + 0.5);
	memcpy(n->reply, caps, sizeof caps);
	n->replied = 1;
	strcpy(n->status, "REPLIED");
	auth = csms_auth();
	body = day_forecast_body(s->id, n->day_start_ms, caps);
	UNLOCK();
	id = cb_enqueue("reply", url, auth, body, 0, NULL);
	if (ids)
		json_array_append_new(ids, json_integer(id));
	free(url);
	free(auth);
	free(body);
	return 0;
}

static int64_t last_occurrence(int64_t now, int64_t tod_ms)
{
	int64_t ev = local_midnight(now, cfg.tz_offset_s) + tod_ms;
	return ev > now ? ev - 86400000LL : ev;
}

/* events fire when the running simulated clock passes them, not when it is set past them */
static void sched_tick(void)
{
	static int64_t prev = -1;
	int64_t now = sim_now_ms(), ev;
	if (__atomic_exchange_n(&clock_changed, 0, __ATOMIC_SEQ_CST) || prev < 0 || now < prev) {
		prev = now;
		return;
	}
	if (cfg.schedule) {
		ev = last_occurrence(now, 10 * 3600000LL);
		if (prev < ev && ev <= now) {
			int64_t tomorrow = local_midnight(ev, cfg.tz_offset_s) + 86400000LL;
			logmsg("schedule 10:00: day-ahead assignment for tomorrow");
			LOCK();
			for (size_t i = 0; i < st.nstations; i++) {
				double caps[24];
				if (!st.stations[i].own)
					continue;
				for (int h = 0; h < 24; h++)
					caps[h] = st.stations[i].kw;
				send_assign(&st.stations[i], tomorrow, caps, 1, NULL);
			}
			UNLOCK();
		}
		ev = last_occurrence(now, 16 * 3600000LL);
		if (prev < ev && ev <= now) {
			char day[11];
			const char *e;
			fmt_day(local_midnight(ev, cfg.tz_offset_s) + 86400000LL, cfg.tz_offset_s, day);
			logmsg("schedule 16:00: automatic replies to pending adjust requests");
			LOCK();
			for (size_t i = 0; i < st.nstations; i++) {
				negotiation_t *n = find_neg(&st.stations[i], day);
				if (n && !strcmp(n->status, "EXTRA_REPLY_EDIT") && send_reply(&st.stations[i], n, NULL, NULL, &e))
					logmsg("  %s: %s", st.stations[i].id, e);
			}
			UNLOCK();
		}
	}
	prev = now;
}

static void *worker_main(void *arg)
{
	(void)arg;
	while (!worker_stop) {
		int64_t now = mono_now_ms(), next = now + 200;
		job_t *start = NULL, **pp, *j;
		CURLMsg *m;
		int running, left;
		LOCK();
		for (pp = &pending; (j = *pp);) {
			if (j->gen != st.gen) {
				*pp = j->next;
				free_job(j);
			} else if (j->due <= now) {
				*pp = j->next;
				j->next = start;
				start = j;
			} else {
				if (j->due < next)
					next = j->due;
				pp = &j->next;
			}
		}
		UNLOCK();
		while ((j = start)) {
			start = j->next;
			setup_easy(j);
			j->anext = active;
			active = j;
			curl_multi_add_handle(multi, j->easy);
		}
		curl_multi_perform(multi, &running);
		while ((m = curl_multi_info_read(multi, &left))) {
			long http = 0;
			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
			curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &http);
			curl_multi_remove_handle(multi, m->easy_handle);
			for (pp = &active; *pp; pp = &(*pp)->anext)
				if (*pp == j) {
					*pp = j->anext;
					break;
				}
			finish_job(j, m->data.result, http);
		}
		sched_tick();
		now = mono_now_ms();
		curl_multi_poll(multi, NULL, 0, next > now ? (int)(next - now) : 0, NULL);
	}
	return NULL;
}

int cb_start(void)
{
	multi = curl_multi_init();
	if (!multi)
		return -1;
	return pthread_create(&worker, NULL, worker_main, NULL);
}

void cb_stop(void)
{
	job_t *j;
	worker_stop = 1;
	cb_wakeup();
	pthread_join(worker, NULL);
	while ((j = active)) {
		active = j->anext;
		curl_multi_remove_handle(multi, j->easy);
		free_job(j);
	}
	while ((j = pending)) {
		pending = j->next;
		free_job(j);
	}
	curl_multi_cleanup(multi);
	multi = NULL;
}
