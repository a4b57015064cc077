/*
 * The forecasts ELMO sends a registered CSMS on its own: the day-ahead
 * assignment (10:00), the reply to an adjust request (by 16:00), and an
 * emergency.  Callers may hold the state lock.
 */
#ifndef SIM_FORECAST_SEND_H
#define SIM_FORECAST_SEND_H

#include <jansson.h>
#include <stdint.h>

#include "stations.h"

/*
 * Opens (or restarts) the negotiation of that day with these capacities; sends
 * them when asked to and a CSMS is registered.  1 when sent; the callback's id
 * is appended to ids (when not NULL).
 */
int send_assign(station_t *s, int64_t day_start_ms, const double caps[24], int send, json_t *ids);
/*
 * ELMO's answer to an adjust request: the requested capacities (or override)
 * rounded to whole kW.  -1 and *err when there is nothing to answer or nobody
 * to send to.
 */
int send_reply(station_t *s, negotiation_t *n, const double *override, json_t *ids, const char **err);
/* one block from start to end; its callback id, or -1 and *err; *body (malloc'd) is what was sent */
long send_emergency(const char *group, int64_t start_ms, int64_t end_ms, double kw, int tz_s, char **body,
		    const char **err);

#endif
