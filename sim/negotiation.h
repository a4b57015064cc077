/*
 * Day-ahead negotiations as ELMO keeps them: the 10:00 assignment opens one
 * (NEGOTIATING); a CSMS's adjust request moves it to EXTRA_REPLY_EDIT; ELMO's
 * reply to REPLIED.  Without a request it closes at 14:05 the day before.
 * Callers hold the state lock.
 */
#ifndef SIM_NEGOTIATION_H
#define SIM_NEGOTIATION_H

#include "stations.h"

negotiation_t *find_neg(station_t *s, const char *day);
/* the negotiation of that day opened afresh with this assignment */
negotiation_t *open_neg(station_t *s, int64_t day_start_ms, const double assigned[24]);
const char *neg_status(const negotiation_t *n, int64_t now_ms);
/* an adjust request: capacities by local hour of the day */
void neg_request(negotiation_t *n, const double by_hour[24], const char *request_id, int64_t now_ms);
void neg_reply(negotiation_t *n, const double caps[24]);
/* {"<group_id>": [negotiation, ...], ...} */
json_t *negotiations_json(int64_t now_ms);

#endif
