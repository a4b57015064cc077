/*
 * Control endpoints that make ELMO send now: an assignment, a reply, an
 * emergency.  Each takes the request's JSON object and its query parameters;
 * a 400 quotes the endpoint's documented example.
 */
#ifndef SIM_CONTROL_SENDS_H
#define SIM_CONTROL_SENDS_H

#include <jansson.h>

#include "answer.h"

resp_t assign_now(json_t *b, json_t *q);
resp_t reply_now(json_t *b, json_t *q);
resp_t emergency_now(json_t *b, json_t *q);

#endif
