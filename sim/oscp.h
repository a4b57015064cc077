/*
 * ELMO's OSCP 2.0 API (/oscp/2.0/...), what a CSMS calls: routing, headers
 * and token checked in ELMO's order, the injected fault applied, every
 * request recorded for GET /sim/messages.
 */
#ifndef SIM_OSCP_H
#define SIM_OSCP_H

#include <jansson.h>
#include <stddef.h>

#include "answer.h"

#define OSCP_PREFIX "/oscp/2.0/"

/* headers: lower-case names to values */
resp_t oscp_handle(const char *method, const char *url, json_t *headers, const char *raw, size_t rawlen);

#endif
