/*
 * Control endpoints that make ELMO send now what it sends on its schedule
 * or in an emergency.
 */
#include "control_sends.h"

#include "api_doc.h"
#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "forecast_send.h"
#include "json_util.h"
#include "log.h"
#include "negotiation.h"
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* capacities for 24 hours from "capacities":[24] or "capacity":N; *given 0 when neither */
static int get_caps(json_t *b, double dflt, double caps[24], int *given)
{
	json_t *a = json_object_get(b, "capacities"), *c = json_object_get(b, "capacity");
	*given = a || c;
	if (a) {
		if (!json_is_array(a) || json_array_size(a) != 24)
			return -1;
		for (int h = 0; h < 24; h++) {
			json_t *v = json_array_get(a, h);
			if (!json_is_number(v) || json_number_value(v) < 0)
				return -1;
			caps[h] = json_number_value(v);
		}
		return 0;
	}
	if (c && (!json_is_number(c) || json_number_value(c) < 0))
		return -1;
	for (int h = 0; h < 24; h++)
		caps[h] = c ? json_number_value(c) : dflt;
	return 0;
}

/* "day", default tomorrow */
static int get_day(json_t *b, int64_t *day_start)
{
	json_t *d = json_object_get(b, "day");
	if (!d) {
		*day_start = local_midnight(sim_now_ms(), cfg.tz_offset_s) + DAY_MS;
		return 0;
	}
	return json_is_string(d) ? parse_day(json_string_value(d), cfg.tz_offset_s, day_start) : -1;
}

#define CAPS_PROBLEM "capacity must be a number >= 0, capacities an array of 24 of them"

resp_t assign_now(json_t *b, json_t *q)
{
	const char *g = json_string_value(json_object_get(b, "group_id"));
	json_t *send_j = json_object_get(b, "send"), *ids, *groups;
	int send = send_j ? json_is_true(send_j) : 1, sent = 0, given;
	int64_t day;
	double caps[24];
	char dstr[11];
	if (get_day(b, &day))
		return api_refusal("POST", "/sim/assign", "day must be YYYY-MM-DD");
	if (get_caps(b, 0, caps, &given))
		return api_refusal("POST", "/sim/assign", CAPS_PROBLEM);
	LOCK();
	if (g && !find_station(g)) {
		UNLOCK();
		return R_error(404, "unknown group_id: not one of --stations or --other-stations");
	}
	ids = json_array();
	groups = json_array();
	for (size_t i = 0; i < station_count(); i++) {
		station_t *s = station_at(i);
		if (g ? strcmp(s->id, g) != 0 : !s->own)
			continue;
		get_caps(b, s->kw, caps, &given);
		sent |= send_assign(s, day, caps, send, ids);
		json_array_append_new(groups, json_string(s->id));
	}
	UNLOCK();
	fmt_day(day, cfg.tz_offset_s, dstr);
	logmsg("/sim/assign: day %s, %zu station(s), %s", dstr, json_array_size(groups), sent ? "sent" : "not sent");
	return R_json(json_pack("{s:s,s:o,s:b,s:o}", "day", dstr, "group_ids", groups, "sent", sent, "callback_ids", ids));
}

resp_t reply_now(json_t *b, json_t *q)
{
	const char *g = json_string_value(json_object_get(b, "group_id")), *e = NULL;
	json_t *ids;
	station_t *s;
	negotiation_t *n;
	int64_t day;
	double caps[24];
	char dstr[11];
	int given;
	if (!g)
		return api_refusal("POST", "/sim/reply", "group_id is required");
	if (get_day(b, &day))
		return api_refusal("POST", "/sim/reply", "day must be YYYY-MM-DD");
	if (get_caps(b, 0, caps, &given))
		return api_refusal("POST", "/sim/reply", CAPS_PROBLEM);
	fmt_day(day, cfg.tz_offset_s, dstr);
	LOCK();
	s = find_station(g);
	n = find_neg(s, dstr);
	if (!n) {
		UNLOCK();
		return R_error(404, "no negotiation for that group and day: POST /sim/assign opens one");
	}
	ids = json_array();
	if (send_reply(s, n, given ? caps : NULL, ids, &e)) {
		UNLOCK();
		json_decref(ids);
		return R_error(409, e);
	}
	UNLOCK();
	return R_json(json_pack("{s:s,s:o}", "day", dstr, "callback_ids", ids));
}

/* an optional instant; 0 when absent (*ms untouched), 1 when given, -1 when malformed */
static int get_time(json_t *b, const char *key, int64_t *ms)
{
	json_t *v = json_object_get(b, key);
	if (!v)
		return 0;
	return json_is_string(v) && !parse_time(json_string_value(v), 0, cfg.tz_offset_s, ms) ? 1 : -1;
}

resp_t emergency_now(json_t *b, json_t *q)
{
	const char *g = json_string_value(json_object_get(b, "group_id")), *e;
	json_t *tzj = json_object_get(b, "tz");
	int force = json_is_true(json_object_get(b, "force")), tz = cfg.tz_offset_s;
	int64_t now = sim_now_ms(), s, end;
	long long cap;
	char *body;
	long id;
	if (!g)
		return api_refusal("POST", "/sim/emergency", "group_id is required");
	if (!find_station(g))
		return R_error(404, "unknown group_id: not one of --stations or --other-stations");
	if (!json_whole(json_object_get(b, "capacity"), &cap) || cap <= 0)
		return api_refusal("POST", "/sim/emergency", "capacity must be a whole number of kW > 0");
	if (tzj && (!json_is_string(tzj) || parse_tz(json_string_value(tzj), &tz)))
		return api_refusal("POST", "/sim/emergency", "tz must look like +08:00");
	/* default: the next whole minute at least 15 minutes ahead */
	s = ((now + 15 * 60000LL + 59999) / 60000) * 60000;
	if (get_time(b, "start", &s) < 0)
		return api_refusal("POST", "/sim/emergency", "start: Invalid datetime");
	end = local_midnight(s, cfg.tz_offset_s) + DAY_MS;
	if (get_time(b, "end", &end) < 0)
		return api_refusal("POST", "/sim/emergency", "end: Invalid datetime");
	if (!force && s < now + 15 * 60000LL)
		return api_refusal("POST", "/sim/emergency", "an emergency must start at least 15 minutes ahead "
				   "(or give force: true)");
	if (end <= s || (!force && end > local_midnight(s, cfg.tz_offset_s) + DAY_MS))
		return api_refusal("POST", "/sim/emergency", "an emergency must end after its start and by "
				   "midnight of its day");
	id = send_emergency(g, s, end, (double)cap, tz, &body, &e);
	if (id < 0) {
		free(body);
		return R_error(409, e);
	}
	{
		json_t *o = json_pack("{s:i,s:s}", "callback_id", (json_int_t)id, "body", body);
		free(body);
		return R_json(o);
	}
}
