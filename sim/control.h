/*
 * The simulator's control API for tests and development (/sim/..., no
 * authentication): records, state, clock, settings, faults, and making ELMO
 * send now what it sends on its schedule.  Documented in api_doc.c.
 */
#ifndef SIM_CONTROL_H
#define SIM_CONTROL_H

#include <jansson.h>
#include <stddef.h>

#include "answer.h"

#define CONTROL_PREFIX "/sim/"

/* query: the query parameters, names to values */
resp_t control_handle(const char *method, const char *url, json_t *query, const char *raw, size_t rawlen);

#endif
