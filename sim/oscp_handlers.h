/*
 * What ELMO does with each OSCP message a CSMS sends, once the request passed
 * routing, headers and token.  Each validates the body in ELMO's words first.
 */
#ifndef SIM_OSCP_HANDLERS_H
#define SIM_OSCP_HANDLERS_H

#include <jansson.h>

#include "answer.h"

enum { M_POST = 1, M_PUT = 2, M_DELETE = 4 };

resp_t do_register(int method, json_t *body);
resp_t do_ack(json_t *body);
resp_t do_measurements(json_t *body);
resp_t do_adjust(json_t *body, const char *request_id);
resp_t do_compliance(json_t *body);

#endif
