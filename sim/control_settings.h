/*
 * Control endpoints that change the simulator: the clock, settings, the fault
 * rule, ELMO's token.  Each takes the request's JSON object and its query
 * parameters; a 400 quotes the endpoint's documented example.
 */
#ifndef SIM_CONTROL_SETTINGS_H
#define SIM_CONTROL_SETTINGS_H

#include <jansson.h>

#include "answer.h"

json_t *clock_json(void);
json_t *config_json(void);
resp_t set_clock(json_t *b, json_t *q);
resp_t set_config(json_t *b, json_t *q);
resp_t arm_fault(json_t *b, json_t *q);
resp_t reset_token(json_t *b, json_t *q);

#endif
