/*
 * One callback: headers and options as ELMO (axios) sends, and its record.
 */
#include "callback_job.h"

#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "state.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RESPONSE 65536

void job_free(job_t *j)
{
	if (j->easy)
		curl_easy_cleanup(j->easy);
	curl_slist_free_all(j->hdrs);
	json_decref(j->rec);
	free(j->url);
	free(j->auth);
	free(j->body);
	free(j->handshake_url);
	free(j->resp);
	free(j);
}

job_t *job_new(const char *kind, const char *url, const char *auth, const char *body, int delay_ms,
		const char *handshake_url)
{
	/* filled in when it is sent and answered */
	static const char *const later[] = { "sent_at", "finished_at", "status", "ok", "error", "response_body",
					     "duration_ms" };
	job_t *j = calloc(1, sizeof *j);
	json_t *h = json_object();
	char ts[40];
	snprintf(j->kind, sizeof j->kind, "%s", kind);
	j->url = xstrdup(url);
	j->auth = xstrdup(auth);
	j->body = xstrdup(body);
	j->handshake_url = xstrdup(handshake_url);
	new_request_id(j->xrid);
	j->due = mono_now_ms() + (delay_ms > 0 ? delay_ms : 0);
	json_object_set_new(h, "accept", json_string("application/json, text/plain, */*"));
	json_object_set_new(h, "content-type", json_string("application/json"));
	json_object_set_new(h, "authorization", json_string(auth));
	json_object_set_new(h, "x-request-id", json_string(j->xrid));
	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	LOCK();
	j->gen = st.gen;
	UNLOCK();
	j->id = new_callback_id();
	j->rec = json_object();
	json_object_set_new(j->rec, "id", json_integer(j->id));
	json_object_set_new(j->rec, "kind", json_string(kind));
	json_object_set_new(j->rec, "method", json_string("POST"));
	json_object_set_new(j->rec, "url", json_string(url));
	json_object_set_new(j->rec, "headers", h);
	json_object_set_new(j->rec, "body", json_string(body));
	json_object_set_new(j->rec, "state", json_string("queued"));
	json_object_set_new(j->rec, "queued_at", json_string(ts));
	json_object_set_new(j->rec, "delay_ms", json_integer(delay_ms));
	for (size_t i = 0; i < sizeof later / sizeof *later; i++)
		json_object_set_new(j->rec, later[i], json_null());
	json_object_set_new(j->rec, "elmo_would_crash", json_false());
	record_callback(j->rec);
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
void job_prepare(job_t *j)
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

int job_record_outcome(job_t *j, CURLcode rc, long http, const char **error)
{
	int ok = rc == CURLE_OK && http >= 200 && http < 300;
	int crash = !ok && job_crashes_elmo(j);
	char ts[40];
	*error = rc == CURLE_OK ? NULL : rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : curl_easy_strerror(rc);
	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	LOCK();
	json_object_set_new(j->rec, "finished_at", json_string(ts));
	json_object_set_new(j->rec, "status", rc == CURLE_OK ? json_integer(http) : json_null());
	json_object_set_new(j->rec, "ok", json_boolean(ok));
	json_object_set_new(j->rec, "error", *error ? json_string(*error) : json_null());
	json_object_set_new(j->rec, "response_body", j->resp ? json_string(j->resp) : json_null());
	json_object_set_new(j->rec, "duration_ms", json_integer(mono_now_ms() - j->t_start));
	json_object_set_new(j->rec, "state", json_string(ok ? "delivered" : "failed"));
	json_object_set_new(j->rec, "elmo_would_crash", json_boolean(crash));
	UNLOCK();
	return ok;
}

/* ELMO's process dies when the CSMS fails its register or handshake */
int job_crashes_elmo(const job_t *j)
{
	return !strcmp(j->kind, "register") || !strcmp(j->kind, "handshake");
}
