/*
 * The forecasts ELMO sends on its own.
 */
#include "forecast_send.h"

#include "config.h"
#include "delivery.h"
#include "forecast_body.h"
#include "negotiation.h"
#include "state.h"

#include <math.h>
#include <stdlib.h>

#define FORECAST_ENDPOINT "update_group_capacity_forecast"

/* queue body to the registered CSMS; the callback's id, or -1 when none is registered */
static long to_csms(const char *kind, const char *body, json_t *ids)
{
	char *url, *auth;
	long id;
	if (!csms_target(FORECAST_ENDPOINT, &url, &auth))
		return -1;
	id = cb_enqueue(kind, url, auth, body, 0, NULL);
	if (ids)
		json_array_append_new(ids, json_integer(id));
	free(url);
	free(auth);
	return id;
}

int send_assign(station_t *s, int64_t day_start_ms, const double caps[24], int send, json_t *ids)
{
	char *body;
	long id;
	LOCK();
	open_neg(s, day_start_ms, caps);
	UNLOCK();
	if (!send)
		return 0;
	body = day_forecast_body(s->id, day_start_ms, caps);
	id = to_csms("assign", body, ids);
	free(body);
	return id >= 0;
}

/* ELMO keeps whole kW (captures 27a, 33d) */
int send_reply(station_t *s, negotiation_t *n, const double *override, json_t *ids, const char **err)
{
	double caps[24];
	char *body;
	long id;
	LOCK();
	if (!override && !n->has_request) {
		UNLOCK();
		*err = "no adjust request to answer for this station and day";
		return -1;
	}
	for (int h = 0; h < 24; h++)
		caps[h] = floor((override ? override[h] : n->requested[h]) + 0.5);
	body = day_forecast_body(s->id, n->day_start_ms, caps);
	id = to_csms("reply", body, ids);
	if (id >= 0)
		neg_reply(n, caps);
	UNLOCK();
	free(body);
	if (id < 0)
		*err = "no CSMS is registered";
	return id < 0 ? -1 : 0;
}

long send_emergency(const char *group, int64_t start_ms, int64_t end_ms, double kw, int tz_s, char **body,
		    const char **err)
{
	long id;
	*body = forecast_body(group, 1, &start_ms, &end_ms, &kw, tz_s);
	id = to_csms("emergency", *body, NULL);
	if (id < 0)
		*err = "no CSMS is registered";
	return id;
}
