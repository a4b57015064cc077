/*
 * elmo-sim: the testbed's trigger API (/trigger-callback/2.0/...) and the
 * simulator's own control API for tests (/sim/..., no authentication).
 */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static resp_t fail(int status, const char *msg)
{
	return R(status, error_str(status, msg));
}

static resp_t ok_json(json_t *j)
{
	return R(200, dump_steal(j));
}

static json_t *clock_json(void)
{
	json_t *o = json_object();
	char a[40], b[40], tz[16];
	int64_t off = __atomic_load_n(&st.clock_offset_ms, __ATOMIC_SEQ_CST), real = real_now_ms();
	int t = cfg.tz_offset_s < 0 ? -cfg.tz_offset_s : cfg.tz_offset_s;
	fmt_time(real + off, cfg.tz_offset_s, a);
	fmt_time(real, cfg.tz_offset_s, b);
	snprintf(tz, sizeof tz, "%c%02d:%02d", cfg.tz_offset_s < 0 ? '-' : '+', t / 3600, t / 60 % 60);
	json_object_set_new(o, "now", json_string(a));
	json_object_set_new(o, "offset_seconds", json_real(off / 1000.0));
	json_object_set_new(o, "tz_offset", json_string(tz));
	json_object_set_new(o, "real_now", json_string(b));
	return o;
}

static json_t *config_json(void)
{
	json_t *o = json_object();
	json_object_set_new(o, "register_callback_first", json_boolean(cfg.register_first));
	json_object_set_new(o, "register_callback_twice", json_boolean(cfg.register_twice));
	json_object_set_new(o, "register_delay_ms", json_integer(cfg.register_delay_ms));
	json_object_set_new(o, "handshake_delay_ms", json_integer(cfg.handshake_delay_ms));
	json_object_set_new(o, "callback_timeout_ms", json_integer(cfg.callback_timeout_ms));
	json_object_set_new(o, "schedule", json_boolean(cfg.schedule));
	json_object_set_new(o, "allow_local_urls", json_boolean(cfg.allow_local_urls));
	json_object_set_new(o, "exit_on_callback_failure", json_boolean(cfg.exit_on_callback_failure));
	json_object_set_new(o, "initial_token", json_string(cfg.initial_token));
	return o;
}

/* filter a list of records: ?path=... (exact or last segment), ?kind=..., ?since=<id> */
static json_t *filtered(json_t *list, json_t *query, const char *pathkey)
{
	json_t *out = json_array(), *x;
	const char *path = json_string_value(json_object_get(query, "path"));
	const char *kind = json_string_value(json_object_get(query, "kind"));
	const char *since = json_string_value(json_object_get(query, "since"));
	long min = since ? atol(since) : 0;
	size_t i;
	json_array_foreach(list, i, x) {
		const char *p = json_string_value(json_object_get(x, pathkey));
		if (path && p) {
			size_t pl = strlen(p), ql = strlen(path);
			if (strcmp(p, path) && !(pl > ql && !strcmp(p + pl - ql, path) && p[pl - ql - 1] == '/'))
				continue;
		}
		if (kind && strcmp(kind, json_string_value(json_object_get(x, "kind")) ?: ""))
			continue;
		if (json_integer_value(json_object_get(x, "id")) <= min)
			continue;
		json_array_append(out, x);
	}
	return out;
}

static int get_int(json_t *b, const char *key, int *out)
{
	long long v;
	json_t *x = json_object_get(b, key);
	if (!x)
		return 0;
	if (!json_whole(x, &v))
		return -1;
	*out = (int)v;
	return 1;
}

static resp_t do_fault(json_t *b)
{
	int status = 0, delay = 0, count = 1, drop = json_is_true(json_object_get(b, "drop"));
	const char *path = json_string_value(json_object_get(b, "path"));
	const char *msg = json_string_value(json_object_get(b, "message"));
	if (get_int(b, "status", &status) < 0 || get_int(b, "delay_ms", &delay) < 0 || get_int(b, "count", &count) < 0)
		return fail(400, "status, delay_ms and count must be whole numbers");
	if (status && (status < 100 || status > 599))
		return fail(400, "status must be an HTTP status code");
	if (!status && !delay && !drop)
		return fail(400, "give status, delay_ms or drop");
	LOCK();
	st.f_status = status;
	st.f_delay_ms = delay;
	st.f_drop = drop;
	st.f_count = count == 0 ? 0 : count < 0 ? -1 : count;
	snprintf(st.f_path, sizeof st.f_path, "%s", path ? path : "");
	snprintf(st.f_message, sizeof st.f_message, "%s", msg ? msg : "");
	UNLOCK();
	logmsg("fault armed: status=%d delay_ms=%d drop=%d count=%d path=%s", status, delay, drop, count,
	       path ? path : "*");
	return ok_json(json_pack("{s:o,s:i,s:b,s:i,s:o}", "status", status ? json_integer(status) : json_null(),
				 "delay_ms", delay, "drop", drop, "count", st.f_count,
				 "path", path ? json_string(path) : json_null()));
}

static resp_t do_clock(json_t *b)
{
	json_t *now = json_object_get(b, "now");
	int64_t t, off;
	if (json_is_string(now)) {
		if (parse_time(json_string_value(now), 0, cfg.tz_offset_s, &t))
			return fail(400, "now: Invalid datetime");
		off = t - real_now_ms();
	} else if (json_is_number(json_object_get(b, "offset_seconds")))
		off = (int64_t)llround(json_number_value(json_object_get(b, "offset_seconds")) * 1000);
	else if (json_is_number(json_object_get(b, "advance_seconds")))
		off = __atomic_load_n(&st.clock_offset_ms, __ATOMIC_SEQ_CST) +
		      (int64_t)llround(json_number_value(json_object_get(b, "advance_seconds")) * 1000);
	else
		return fail(400, "give now, offset_seconds or advance_seconds");
	__atomic_store_n(&st.clock_offset_ms, off, __ATOMIC_SEQ_CST);
	sched_clock_changed();
	{
		json_t *c = clock_json();
		logmsg("clock set: now %s", json_string_value(json_object_get(c, "now")));
		return ok_json(c);
	}
}

static resp_t do_config(json_t *b)
{
	static const struct { const char *k; int *v; int is_bool; } keys[] = {
		{ "register_callback_first", &cfg.register_first, 1 },
		{ "register_callback_twice", &cfg.register_twice, 1 },
		{ "register_delay_ms", &cfg.register_delay_ms, 0 },
		{ "handshake_delay_ms", &cfg.handshake_delay_ms, 0 },
		{ "callback_timeout_ms", &cfg.callback_timeout_ms, 0 },
		{ "schedule", &cfg.schedule, 1 },
		{ "allow_local_urls", &cfg.allow_local_urls, 1 },
		{ "exit_on_callback_failure", &cfg.exit_on_callback_failure, 1 },
	};
	LOCK();
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
		json_t *x = json_object_get(b, keys[i].k);
		long long v;
		if (!x)
			continue;
		if (keys[i].is_bool ? !json_is_boolean(x) : !json_whole(x, &v) || v < 0) {
			UNLOCK();
			return fail(400, keys[i].is_bool ? "expected a boolean" : "expected a whole number >= 0");
		}
		*keys[i].v = keys[i].is_bool ? json_is_true(x) : (int)v;
	}
	UNLOCK();
	return ok_json(config_json());
}

/* capacities for 24 hours from "capacities":[24] or "capacity":N, else dflt */
static int get_caps(json_t *b, double dflt, double caps[24], int *given)
{
	json_t *a = json_object_get(b, "capacities"), *c = json_object_get(b, "capacity");
	*given = 1;
	if (a) {
		if (!json_is_array(a) || json_array_size(a) != 24)
			return -1;
		for (int h = 0; h < 24; h++) {
			if (!json_is_number(json_array_get(a, h)) || json_number_value(json_array_get(a, h)) < 0)
				return -1;
			caps[h] = json_number_value(json_array_get(a, h));
		}
		return 0;
	}
	if (c && (!json_is_number(c) || json_number_value(c) < 0))
		return -1;
	*given = c != NULL;
	for (int h = 0; h < 24; h++)
		caps[h] = c ? json_number_value(c) : dflt;
	return 0;
}

static int get_day(json_t *b, int64_t *day_start)
{
	const char *d = json_string_value(json_object_get(b, "day"));
	if (!d) {
		*day_start = local_midnight(sim_now_ms(), cfg.tz_offset_s) + 86400000LL;
		return 0;
	}
	return parse_day(d, cfg.tz_offset_s, day_start);
}

static resp_t do_assign(json_t *b)
{
	const char *g = json_string_value(json_object_get(b, "group_id"));
	json_t *send_j = json_object_get(b, "send"), *ids = json_array(), *groups = json_array();
	int send = send_j ? json_is_true(send_j) : 1, sent = 0, given;
	int64_t day;
	double caps[24];
	char dstr[11];
	if (get_day(b, &day))
		return json_decref(ids), json_decref(groups), fail(400, "day must be YYYY-MM-DD");
	LOCK();
	if (g && !find_station(g)) {
		UNLOCK();
		json_decref(ids);
		json_decref(groups);
		return fail(404, "unknown group_id");
	}
	for (size_t i = 0; i < st.nstations; i++) {
		station_t *s = &st.stations[i];
		if (g ? strcmp(s->id, g) != 0 : !s->own)
			continue;
		if (get_caps(b, s->kw, caps, &given)) {
			UNLOCK();
			json_decref(ids);
			json_decref(groups);
			return fail(400, "capacity must be a number >= 0, capacities an array of 24 of them");
		}
		sent |= send_assign(s, day, caps, send, ids);
		json_array_append_new(groups, json_string(s->id));
	}
	UNLOCK();
	fmt_day(day, cfg.tz_offset_s, dstr);
	logmsg("/sim/assign: day %s, %zu station(s), %s", dstr, json_array_size(groups), sent ? "sent" : "not sent");
	return ok_json(json_pack("{s:s,s:o,s:b,s:o}", "day", dstr, "group_ids", groups, "sent", sent,
				 "callback_ids", ids));
}

static resp_t do_reply(json_t *b)
{
	const char *g = json_string_value(json_object_get(b, "group_id")), *e = NULL;
	json_t *ids = json_array();
	station_t *s;
	negotiation_t *n;
	int64_t day;
	double caps[24];
	char dstr[11];
	int given;
	if (!g)
		return json_decref(ids), fail(400, "group_id is required");
	if (get_day(b, &day) || get_caps(b, 0, caps, &given))
		return json_decref(ids), fail(400, "bad day or capacity");
	fmt_day(day, cfg.tz_offset_s, dstr);
	LOCK();
	s = find_station(g);
	n = s ? find_neg(s, dstr) : NULL;
	if (!n) {
		UNLOCK();
		json_decref(ids);
		return fail(404, "no negotiation for that group and day");
	}
	if (send_reply(s, n, given ? caps : NULL, ids, &e)) {
		UNLOCK();
		json_decref(ids);
		return fail(409, e);
	}
	UNLOCK();
	return ok_json(json_pack("{s:s,s:o}", "day", dstr, "callback_ids", ids));
}

static resp_t do_emergency(json_t *b)
{
	const char *g = json_string_value(json_object_get(b, "group_id"));
	const char *sa = json_string_value(json_object_get(b, "start")), *ea = json_string_value(json_object_get(b, "end"));
	const char *tzs = json_string_value(json_object_get(b, "tz"));
	int force = json_is_true(json_object_get(b, "force")), tz = cfg.tz_offset_s;
	int64_t now = sim_now_ms(), s, e;
	long long cap;
	double capd;
	char *url = NULL, *auth = NULL, *body;
	long id;
	if (!g || !find_station(g))
		return fail(g ? 404 : 400, g ? "unknown group_id" : "group_id is required");
	if (!json_whole(json_object_get(b, "capacity"), &cap) || cap <= 0)
		return fail(400, "capacity must be a whole number of kW > 0");
	if (tzs && parse_tz(tzs, &tz))
		return fail(400, "tz must look like +08:00");
	if (sa ? parse_time(sa, 0, cfg.tz_offset_s, &s) : 0)
		return fail(400, "start: Invalid datetime");
	if (!sa)	/* default: the next whole minute at least 15 minutes ahead */
		s = ((now + 15 * 60000LL + 59999) / 60000) * 60000;
	if (ea ? parse_time(ea, 0, cfg.tz_offset_s, &e) : 0)
		return fail(400, "end: Invalid datetime");
	if (!ea)
		e = local_midnight(s, cfg.tz_offset_s) + 86400000LL;
	if (!force && s < now + 15 * 60000LL)
		return fail(400, "an emergency must start at least 15 minutes ahead");
	if (e <= s || (!force && e > local_midnight(s, cfg.tz_offset_s) + 86400000LL))
		return fail(400, "an emergency must end after its start and by midnight of its day");
	LOCK();
	if (st.registered && st.csms_base_url) {
		size_t n = strlen(st.csms_base_url) + 40, an = strlen(st.csms_token) + 7;
		url = malloc(n);
		snprintf(url, n, "%s/update_group_capacity_forecast", st.csms_base_url);
		auth = malloc(an);
		snprintf(auth, an, "Token %s", st.csms_token);
	}
	UNLOCK();
	if (!url)
		return fail(409, "no CSMS is registered");
	capd = (double)cap;
	body = forecast_body(g, 1, &s, &e, &capd, tz);
	id = cb_enqueue("emergency", url, auth, body, 0, NULL);
	free(url);
	free(auth);
	{
		json_t *o = json_pack("{s:i,s:s}", "callback_id", (json_int_t)id, "body", body);
		free(body);
		return ok_json(o);
	}
}

static resp_t do_reset_token(json_t *b)
{
	const char *t = json_string_value(json_object_get(b, "token"));
	char m[48];
	if (!t || !*t || strlen(t) >= sizeof st.elmo_token)
		return fail(400, "token is required");
	LOCK();
	snprintf(st.elmo_token, sizeof st.elmo_token, "%s", t);
	st.token_rotated = 0;
	st.registered = st.connected = 0;
	UNLOCK();
	mask_token(t, m);
	logmsg("administrator reset: ELMO token is now %s; CSMS disconnected", m);
	return R(204, NULL);
}

resp_t sim_handle(const char *method, const char *url, json_t *query, const char *raw, size_t rawlen)
{
	const char *p = url + 5;	/* after "/sim/" */
	int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"), del = !strcmp(method, "DELETE");
	json_t *b = NULL;
	resp_t r;
	if (post) {
		json_error_t je;
		b = rawlen ? json_loadb(raw, rawlen, 0, &je) : json_object();
		if (!json_is_object(b)) {
			json_decref(b);
			return fail(400, "the body must be a JSON object");
		}
	}
	if (get && !strcmp(p, "messages")) {
		LOCK();
		r = ok_json(filtered(st.messages, query, "path"));
		UNLOCK();
	} else if (get && !strcmp(p, "callbacks")) {
		LOCK();
		r = ok_json(filtered(st.callbacks, query, "url"));
		UNLOCK();
	} else if (del && (!strcmp(p, "messages") || !strcmp(p, "callbacks"))) {
		LOCK();
		json_array_clear(p[0] == 'm' ? st.messages : st.callbacks);
		UNLOCK();
		r = R(204, NULL);
	} else if (get && !strcmp(p, "state"))
		r = ok_json(state_json());
	else if (get && !strcmp(p, "clock"))
		r = ok_json(clock_json());
	else if (post && !strcmp(p, "clock"))
		r = do_clock(b);
	else if (get && !strcmp(p, "config"))
		r = ok_json(config_json());
	else if (post && !strcmp(p, "config"))
		r = do_config(b);
	else if (post && !strcmp(p, "fault"))
		r = do_fault(b);
	else if (del && !strcmp(p, "fault")) {
		LOCK();
		st.f_count = 0;
		UNLOCK();
		r = R(204, NULL);
	} else if (post && !strcmp(p, "reset")) {
		state_reset();
		logmsg("/sim/reset: back to the start-up state");
		r = R(204, NULL);
	} else if (post && !strcmp(p, "assign"))
		r = do_assign(b);
	else if (post && !strcmp(p, "reply"))
		r = do_reply(b);
	else if (post && !strcmp(p, "emergency"))
		r = do_emergency(b);
	else if (post && !strcmp(p, "admin/reset-token"))
		r = do_reset_token(b);
	else {
		char m[300];
		snprintf(m, sizeof m, "Cannot %s %s", method, url);
		r = fail(404, m);
	}
	json_decref(b);
	return r;
}

/* ---- the testbed's trigger API ---- */

resp_t trigger_handle(const char *method, const char *url, const char *raw, size_t rawlen)
{
	const char *name = url + strlen(TRIGGER_PREFIX), *cb, *auth, *purpose = NULL, *g = NULL;
	json_t *b, *h;
	json_error_t je;
	char *body = NULL, m[300];
	long id;
	int what = !strcmp(name, "register") ? 1 : !strcmp(name, "handshake") ? 2
		 : !strcmp(name, "update_group_capacity_forecast") ? 3 : 0;
	if (strcmp(method, "POST") || !what) {
		snprintf(m, sizeof m, "Cannot %s %s", method, url);
		return fail(404, m);
	}
	b = json_loadb(raw ? raw : "", rawlen, 0, &je);
	if (!json_is_object(b)) {
		json_decref(b);
		return fail(400, "the body must be a JSON object");
	}
	h = json_object_get(b, "header");
	cb = json_string_value(json_object_get(b, "callback_url"));
	auth = json_string_value(json_object_get(h, "authorization"));
	if (!cb || (strncmp(cb, "http://", 7) && strncmp(cb, "https://", 8))) {
		json_decref(b);
		return R(400, error_body(400, json_pack("[s]", "callback_url: Invalid url")));
	}
	if (!auth) {
		json_decref(b);
		return R(400, error_body(400, json_pack("[s]", "header.authorization: Required")));
	}
	if (what == 1) {
		LOCK();
		body = dump_steal(json_pack("{s:s,s:[{s:s,s:s}]}", "token", st.elmo_token, "version_url",
					    "base_url", "/oscp/2.0", "version", "2.0"));
		UNLOCK();
	} else if (what == 2)
		body = strdup("{\"measurement_configuration\":[\"CONTINUOUS\"]}");
	else {
		json_t *c = json_object_get(b, "capacity");
		int64_t now = sim_now_ms(), today = local_midnight(now, cfg.tz_offset_s), s, e;
		double caps[24], cap;
		purpose = json_string_value(json_object_get(b, "purpose"));
		g = json_string_value(json_object_get(b, "group_id"));
		if (!g || !json_is_number(c) || json_number_value(c) < 0) {
			json_decref(b);
			return fail(400, "group_id (string) and capacity (number >= 0) are required");
		}
		cap = json_number_value(c);
		if (purpose && (!strcmp(purpose, "negotiation_assign_capacity") ||
				!strcmp(purpose, "negotiation_reply_request_additional_capacity"))) {
			station_t *st_ = NULL;
			for (int i = 0; i < 24; i++)
				caps[i] = cap;
			body = day_forecast_body(g, today + 86400000LL, caps);
			LOCK();
			if ((st_ = find_station(g))) {
				if (!strcmp(purpose, "negotiation_assign_capacity")) {
					negotiation_t *n = upsert_neg(st_, today + 86400000LL);
					memcpy(n->assigned, caps, sizeof caps);
				} else {
					char d[11];
					negotiation_t *n;
					fmt_day(today + 86400000LL, cfg.tz_offset_s, d);
					if ((n = find_neg(st_, d))) {
						memcpy(n->reply, caps, sizeof caps);
						n->replied = 1;
						strcpy(n->status, "REPLIED");
					}
				}
			}
			UNLOCK();
		} else if (purpose && !strcmp(purpose, "emergency_assign_capacity")) {
			s = now;
			e = today + 86400000LL;
			body = forecast_body(g, 1, &s, &e, &cap, cfg.tz_offset_s);
		} else {
			json_decref(b);
			return R(400, error_body(400, json_pack("[s]", "purpose: Invalid enum value. Expected "
				"'negotiation_assign_capacity' | 'negotiation_reply_request_additional_capacity' | "
				"'emergency_assign_capacity'")));
		}
	}
	id = cb_enqueue(what == 1 ? "trigger_register" : what == 2 ? "trigger_handshake" : "trigger_forecast",
			cb, auth, body, 0, NULL);
	logmsg("trigger %s%s%s%s -> callback #%ld to %s", name, purpose ? " " : "", purpose ? purpose : "",
	       g ? "" : "", id, cb);
	free(body);
	json_decref(b);
	return ok_json(json_pack("{s:s,s:i}", "message", "callback queued", "callback_id", (json_int_t)id));
}
