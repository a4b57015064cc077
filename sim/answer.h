/*
 * An answer to an HTTP request, and error bodies in the form ELMO's NestJS
 * server writes them: {"message":...,"error":"<reason>","statusCode":N}.
 */
#ifndef SIM_ANSWER_H
#define SIM_ANSWER_H

#include <jansson.h>

typedef struct {
	int status;
	char *body;			/* malloc'd, or NULL for none */
	int drop;			/* close the connection without answering */
} resp_t;

resp_t R(int status, char *body);
resp_t R_json(json_t *j);		/* 200 with j; steals j */
resp_t R_error(int status, const char *message);
const char *reason_phrase(int status);
json_t *error_object(int status, json_t *message);	/* steals message */
char *error_body(int status, json_t *message);		/* steals message */
char *error_str(int status, const char *message);

#endif
