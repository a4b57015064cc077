/*
 * One callback: its libcurl transfer and its record for GET /sim/callbacks.
 */
#ifndef SIM_CALLBACK_JOB_H
#define SIM_CALLBACK_JOB_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdint.h>

#include "ids.h"

typedef struct job {
	long id;
	unsigned gen;
	int64_t due;		/* monotonic ms */
	char kind[32];
	char *url, *auth, *body;
	char xrid[REQUEST_ID_LEN + 1];
	char *handshake_url;	/* ELMO's handshake follows a successful register there */
	json_t *rec;
	CURL *easy;
	struct curl_slist *hdrs;
	char *resp;
	size_t rlen;
	int64_t t_start;
	struct job *next;
	struct job *anext;	/* in the worker's list of transfers under way */
} job_t;

job_t *job_new(const char *kind, const char *url, const char *auth, const char *body, int delay_ms,
		const char *handshake_url);
void job_free(job_t *j);
/* its transfer set up as ELMO sends; recorded as sending */
void job_prepare(job_t *j);
/* its answer recorded; 1 when 2xx, else 0 and *error (NULL for an HTTP status) */
int job_record_outcome(job_t *j, CURLcode rc, long http, const char **error);
int job_crashes_elmo(const job_t *j);

#endif
