/*
 * ELMO's callbacks to the CSMS.  One thread owns the libcurl multi handle and
 * every transfer under way; other threads only queue jobs (under the state
 * lock) and wake it.
 */
#include "delivery.h"

#include "callback_job.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "state.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDSHAKE_BODY "{\"required_behaviour\":{\"measurement_configuration\":[\"CONTINUOUS\"]}}"

static job_t *pending;		/* guarded by st.mu */
static job_t *active;		/* worker thread only */
static CURLM *multi;
static pthread_t worker;
static volatile int worker_stop;

static void finish_job(job_t *j, CURLcode rc, long http)
{
	const char *err;
	int ok = job_record_outcome(j, rc, http, &err), chain;
	char amask[56];
	LOCK();
	chain = ok && j->handshake_url && j->gen == st.gen;
	UNLOCK();
	mask_auth(j->auth, amask);
	logmsg("callback #%ld %s POST %s -> %ld%s%s (%lld ms, auth %s)", j->id, j->kind, j->url,
	       rc == CURLE_OK ? http : 0L, err ? " " : "", err ? err : "", (long long)(mono_now_ms() - j->t_start), amask);
	if (chain)
		cb_enqueue("handshake", j->handshake_url, j->auth, HANDSHAKE_BODY, cfg.handshake_delay_ms, NULL);
	if (!ok && job_crashes_elmo(j)) {
		logmsg("WARNING: the real ELMO process crashes here (its %s callback was not answered 2xx;"
		       " its new token is already stored: the CSMS is locked out)", j->kind);
		if (j->handshake_url)
			logmsg("  (no handshake will follow)");
		if (cfg.exit_on_callback_failure)
			request_exit(3);
	}
	job_free(j);
}

static void cb_wakeup(void)
{
	if (multi)
		curl_multi_wakeup(multi);
}

long cb_enqueue(const char *kind, const char *url, const char *authorization, const char *body, int delay_ms,
		const char *handshake_url)
{
	job_t *j = job_new(kind, url, authorization, body, delay_ms, handshake_url), **pp;
	long id = j->id;
	LOCK();
	for (pp = &pending; *pp; pp = &(*pp)->next)
		;
	*pp = j;
	UNLOCK();
	cb_wakeup();
	return id;
}

long cb_send_sync(const char *kind, const char *url, const char *authorization, const char *body,
		  const char *handshake_url)
{
	job_t *j = job_new(kind, url, authorization, body, 0, handshake_url);
	long id = j->id, http = 0;
	CURLcode rc;
	job_prepare(j);
	rc = curl_easy_perform(j->easy);
	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &http);
	finish_job(j, rc, http);
	return id;
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
				job_free(j);
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
			job_prepare(j);
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
		now = mono_now_ms();
		curl_multi_poll(multi, NULL, 0, next > now ? (int)(next - now) : 0, NULL);
	}
	return NULL;
}

int delivery_start(void)
{
	multi = curl_multi_init();
	if (!multi)
		return -1;
	return pthread_create(&worker, NULL, worker_main, NULL);
}

void delivery_stop(void)
{
	job_t *j;
	worker_stop = 1;
	cb_wakeup();
	pthread_join(worker, NULL);
	while ((j = active)) {
		active = j->anext;
		curl_multi_remove_handle(multi, j->easy);
		job_free(j);
	}
	while ((j = pending)) {
		pending = j->next;
		job_free(j);
	}
	curl_multi_cleanup(multi);
	multi = NULL;
}
