/*
 * The control API's documentation, one entry per endpoint, with an example
 * request and the answer it gets.  Printed by --help-api, served by
 * GET /sim/help, and quoted in the control API's 400 answers.
 */
#ifndef SIM_API_DOC_H
#define SIM_API_DOC_H

#include <jansson.h>
#include <stdio.h>

#include "answer.h"

typedef struct {
	const char *method;
	const char *path;
	const char *query;		/* optional query parameters, or NULL */
	const char *summary;
	const char *request;		/* an example body (JSON), or NULL for none */
	int status;			/* what that example is answered */
	const char *answer;		/* an example answer (JSON), or NULL for none */
} api_doc_t;

const api_doc_t *api_doc_find(const char *method, const char *path);
void api_doc_print(FILE *f);
json_t *api_doc_json(void);
/* 400: what is wrong, and an example of the body the endpoint expects */
resp_t api_refusal(const char *method, const char *path, const char *problem);

#endif
