/*
 * Day-ahead negotiations.
 */
#include "negotiation.h"

#include "caltime.h"
#include "config.h"
#include "json_util.h"
#include "state.h"

#include <stdlib.h>
#include <string.h>

negotiation_t *find_neg(station_t *s, const char *day)
{
	for (size_t i = 0; s && i < s->nnegs; i++)
		if (strcmp(s->negs[i].day, day) == 0)
			return &s->negs[i];
	return NULL;
}

negotiation_t *open_neg(station_t *s, int64_t day_start_ms, const double assigned[24])
{
	char day[11];
	negotiation_t *n;
	fmt_day(day_start_ms, cfg.tz_offset_s, day);
	n = find_neg(s, day);
	if (!n) {
		negotiation_t *nn = realloc(s->negs, (s->nnegs + 1) * sizeof *nn);
		if (!nn)
			abort();
		s->negs = nn;
		n = &s->negs[s->nnegs++];
	}
	memset(n, 0, sizeof *n);
	memcpy(n->day, day, sizeof n->day);
	n->day_start_ms = day_start_ms;
	strcpy(n->status, "NEGOTIATING");
	memcpy(n->assigned, assigned, sizeof n->assigned);
	return n;
}

/* requests are taken until 14:05 local of the day before (ELMO's grace after
 * its 14:00 rule); a negotiation without one then keeps the 10:00 plan */
const char *neg_status(const negotiation_t *n, int64_t now_ms)
{
	int64_t deadline = n->day_start_ms - DAY_MS + (14 * 60 + 5) * 60000LL;
	if (strcmp(n->status, "NEGOTIATING") == 0 && now_ms >= deadline)
		return "CLOSED";
	return n->status;
}

void neg_request(negotiation_t *n, const double by_hour[24], const char *request_id, int64_t now_ms)
{
	memcpy(n->requested, by_hour, sizeof n->requested);
	n->has_request = 1;
	snprintf(n->request_id, sizeof n->request_id, "%s", request_id);
	n->requested_at_ms = now_ms;
	strcpy(n->status, "EXTRA_REPLY_EDIT");
}

void neg_reply(negotiation_t *n, const double caps[24])
{
	memcpy(n->reply, caps, sizeof n->reply);
	n->replied = 1;
	strcpy(n->status, "REPLIED");
}

static json_t *neg_json(const negotiation_t *n, int64_t now_ms)
{
	json_t *o = json_object();
	json_object_set_new(o, "day", json_string(n->day));
	json_object_set_new(o, "status", json_string(neg_status(n, now_ms)));
	json_object_set_new(o, "assigned", json_kw24(n->assigned));
	json_object_set_new(o, "requested", n->has_request ? json_kw24(n->requested) : json_null());
	json_object_set_new(o, "request_id", n->has_request ? json_string(n->request_id) : json_null());
	json_object_set_new(o, "reply", n->replied ? json_kw24(n->reply) : json_null());
	return o;
}

json_t *negotiations_json(int64_t now_ms)
{
	json_t *o = json_object();
	LOCK();
	for (size_t i = 0; i < station_count(); i++) {
		station_t *s = station_at(i);
		json_t *a = json_array();
		for (size_t k = 0; k < s->nnegs; k++)
			json_array_append_new(a, neg_json(&s->negs[k], now_ms));
		json_object_set_new(o, s->id, a);
	}
	UNLOCK();
	return o;
}
