/*
 * The testbed's trigger API.  A triggered forecast also moves the station's
 * negotiation as the real one would have.
 */
#include "trigger.h"

#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "delivery.h"
#include "forecast_body.h"
#include "json_util.h"
#include "log.h"
#include "negotiation.h"
#include "state.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static resp_t invalid(const char *problem)
{
	return R(400, error_body(400, json_pack("[s]", problem)));
}

/* tomorrow's 24 blocks of cap; an assignment opens the negotiation, a reply closes it */
static char *negotiation_forecast(const char *g, const char *purpose, double cap)
{
	int64_t tomorrow = local_midnight(sim_now_ms(), cfg.tz_offset_s) + DAY_MS;
	double caps[24];
	station_t *s;
	char d[11];
	negotiation_t *n;
	for (int i = 0; i < 24; i++)
		caps[i] = cap;
	fmt_day(tomorrow, cfg.tz_offset_s, d);
	LOCK();
	if ((s = find_station(g))) {
		if (!strcmp(purpose, "negotiation_assign_capacity"))
			open_neg(s, tomorrow, caps);
		else if ((n = find_neg(s, d)))
			neg_reply(n, caps);
	}
	UNLOCK();
	return day_forecast_body(g, tomorrow, caps);
}

/* the forecast's body, or NULL and the answer */
static char *forecast(json_t *b, const char **purpose, resp_t *refusal)
{
	json_t *c = json_object_get(b, "capacity");
	int64_t now = sim_now_ms(), end = local_midnight(now, cfg.tz_offset_s) + DAY_MS;
	const char *p = json_string_value(json_object_get(b, "purpose"));
	const char *g = json_string_value(json_object_get(b, "group_id"));
	double cap;
	*purpose = p;
	if (!g || !json_is_number(c) || json_number_value(c) < 0) {
		*refusal = R_error(400, "group_id (string) and capacity (number >= 0) are required");
		return NULL;
	}
	cap = json_number_value(c);
	if (p && (!strcmp(p, "negotiation_assign_capacity") ||
		  !strcmp(p, "negotiation_reply_request_additional_capacity")))
		return negotiation_forecast(g, p, cap);
	if (p && !strcmp(p, "emergency_assign_capacity"))	/* from now to midnight */
		return forecast_body(g, 1, &now, &end, &cap, cfg.tz_offset_s);
	*refusal = invalid("purpose: Invalid enum value. Expected 'negotiation_assign_capacity' | "
			   "'negotiation_reply_request_additional_capacity' | 'emergency_assign_capacity'");
	return NULL;
}

resp_t trigger_handle(const char *method, const char *url, const char *raw, size_t rawlen)
{
	static const char *const kinds[] = { NULL, "trigger_register", "trigger_handshake", "trigger_forecast" };
	const char *name = url + strlen(TRIGGER_PREFIX), *cb, *auth, *purpose = NULL;
	json_t *b;
	json_error_t je;
	char *body = NULL, m[300];
	long id;
	resp_t r;
	int what = !strcmp(name, "register") ? 1 : !strcmp(name, "handshake") ? 2
		 : !strcmp(name, "update_group_capacity_forecast") ? 3 : 0;
	if (strcmp(method, "POST") || !what) {
		snprintf(m, sizeof m, "Cannot %s %s", method, url);
		return R_error(404, m);
	}
	b = json_loadb(raw ? raw : "", rawlen, 0, &je);
	if (!json_is_object(b)) {
		json_decref(b);
		return R_error(400, "the body must be a JSON object");
	}
	cb = json_string_value(json_object_get(b, "callback_url"));
	auth = json_string_value(json_object_get(json_object_get(b, "header"), "authorization"));
	if (!cb || (strncmp(cb, "http://", 7) && strncmp(cb, "https://", 8)))
		r = invalid("callback_url: Invalid url");
	else if (!auth)
		r = invalid("header.authorization: Required");
	else if (what == 1)
		body = register_callback_body();
	else if (what == 2)
		body = strdup("{\"measurement_configuration\":[\"CONTINUOUS\"]}");
	else
		body = forecast(b, &purpose, &r);
	if (!body) {
		json_decref(b);
		return r;
	}
	id = cb_enqueue(kinds[what], cb, auth, body, 0, NULL);
	logmsg("trigger %s%s%s -> callback #%ld to %s", name, purpose ? " " : "", purpose ? purpose : "", id, cb);
	free(body);
	json_decref(b);
	return R_json(json_pack("{s:s,s:i}", "message", "callback queued", "callback_id", (json_int_t)id));
}
