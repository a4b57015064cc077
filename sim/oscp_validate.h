/*
 * ELMO's validation of the OSCP messages a CSMS sends.  Each validate_*
 * returns an array of problems ("<path>: <text>"), empty when the body passes.
 */
#ifndef SIM_OSCP_VALIDATE_H
#define SIM_OSCP_VALIDATE_H

#include <jansson.h>
#include <stdint.h>

json_t *validate_register(json_t *body);
json_t *validate_ack(json_t *body);
json_t *validate_measurements(json_t *body);
/* also the 24 blocks' starts and capacities when it passes */
json_t *validate_adjust(json_t *body, int64_t starts[24], double caps[24]);
json_t *validate_compliance(json_t *body);

#endif
