/*
 * The control API: routing, the records, the state, and reset.
 */
#include "control.h"

#include "api_doc.h"
#include "clock.h"
#include "config.h"
#include "control_sends.h"
#include "control_settings.h"
#include "fault.h"
#include "json_util.h"
#include "log.h"
#include "negotiation.h"
#include "state.h"
#include "stations.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* records filtered by ?path= (exact or last segments), ?kind=, ?since=<id> */
static json_t *filtered(json_t *list, json_t *query, const char *pathkey)
{
	json_t *out = json_array(), *x;
	const char *path = json_string_value(json_object_get(query, "path"));
	const char *kind = json_string_value(json_object_get(query, "kind"));
	const char *since = json_string_value(json_object_get(query, "since"));
	long min = since ? atol(since) : 0;
	size_t i;
	LOCK();
	json_array_foreach(list, i, x) {
		const char *p = json_string_value(json_object_get(x, pathkey));
		const char *k = json_string_value(json_object_get(x, "kind"));
		if ((path && (!p || !path_matches(p, path))) || (kind && (!k || strcmp(kind, k))) ||
		    json_integer_value(json_object_get(x, "id")) <= min)
			continue;
		json_array_append(out, x);
	}
	UNLOCK();
	return out;
}

static resp_t get_messages(json_t *b, json_t *q)
{
	return R_json(filtered(st.messages, q, "path"));
}

static resp_t get_callbacks(json_t *b, json_t *q)
{
	return R_json(filtered(st.callbacks, q, "url"));
}

static resp_t clear(json_t *list)
{
	LOCK();
	json_array_clear(list);
	UNLOCK();
	return R(204, NULL);
}

static resp_t delete_messages(json_t *b, json_t *q)
{
	return clear(st.messages);
}

static resp_t delete_callbacks(json_t *b, json_t *q)
{
	return clear(st.callbacks);
}

static resp_t get_state(json_t *b, json_t *q)
{
	json_t *o = registration_json(), *c = clock_json();
	int64_t now = sim_now_ms();
	json_object_set(o, "now", json_object_get(c, "now"));
	json_object_set(o, "clock_offset_seconds", json_object_get(c, "offset_seconds"));
	json_decref(c);
	json_object_set_new(o, "stations", stations_json());
	json_object_set_new(o, "negotiations", negotiations_json(now));
	json_object_set_new(o, "last_measurements", measurements_json());
	json_object_set_new(o, "fault", fault_json());
	LOCK();
	json_object_set_new(o, "messages", json_integer((json_int_t)json_array_size(st.messages)));
	json_object_set_new(o, "callbacks", json_integer((json_int_t)json_array_size(st.callbacks)));
	UNLOCK();
	return R_json(o);
}

static resp_t get_clock(json_t *b, json_t *q)
{
	return R_json(clock_json());
}

static resp_t get_config(json_t *b, json_t *q)
{
	return R_json(config_json());
}

static resp_t get_help(json_t *b, json_t *q)
{
	return R_json(api_doc_json());
}

static resp_t delete_fault(json_t *b, json_t *q)
{
	fault_clear();
	return R(204, NULL);
}

static resp_t reset(json_t *b, json_t *q)
{
	LOCK();
	state_reset(cfg.initial_token);
	stations_reset();
	fault_clear();
	clock_reset();
	UNLOCK();
	logmsg("/sim/reset: back to the start-up state");
	return R(204, NULL);
}

static const struct endpoint {
	const char *method;
	const char *path;
	resp_t (*handle)(json_t *body, json_t *query);
} endpoints[] = {
	{ "GET", "/sim/help", get_help },
	{ "GET", "/sim/state", get_state },
	{ "GET", "/sim/messages", get_messages },
	{ "DELETE", "/sim/messages", delete_messages },
	{ "GET", "/sim/callbacks", get_callbacks },
	{ "DELETE", "/sim/callbacks", delete_callbacks },
	{ "GET", "/sim/clock", get_clock },
	{ "POST", "/sim/clock", set_clock },
	{ "GET", "/sim/config", get_config },
	{ "POST", "/sim/config", set_config },
	{ "POST", "/sim/fault", arm_fault },
	{ "DELETE", "/sim/fault", delete_fault },
	{ "POST", "/sim/assign", assign_now },
	{ "POST", "/sim/reply", reply_now },
	{ "POST", "/sim/emergency", emergency_now },
	{ "POST", "/sim/admin/reset-token", reset_token },
	{ "POST", "/sim/reset", reset },
};

resp_t control_handle(const char *method, const char *url, json_t *query, const char *raw, size_t rawlen)
{
	json_t *b = NULL;
	json_error_t je;
	resp_t r;
	char m[300];
	for (size_t i = 0; i < sizeof endpoints / sizeof *endpoints; i++) {
		if (strcmp(endpoints[i].method, method) || strcmp(endpoints[i].path, url))
			continue;
		if (!strcmp(method, "POST")) {
			b = rawlen ? json_loadb(raw, rawlen, 0, &je) : json_object();
			if (!json_is_object(b)) {
				json_decref(b);
				return api_refusal(method, url, "the body must be a JSON object");
			}
		}
		r = endpoints[i].handle(b, query);
		json_decref(b);
		return r;
	}
	snprintf(m, sizeof m, "Cannot %s %.200s (GET /sim/help lists the control API)", method, url);
	return R_error(404, m);
}
