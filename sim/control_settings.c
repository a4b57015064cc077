/*
 * Control endpoints that change the simulator: clock, settings, the fault
 * rule, and ELMO's token as its administrator would.
 */
#include "control_settings.h"

#include "api_doc.h"
#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "fault.h"
#include "json_util.h"
#include "log.h"
#include "state.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

json_t *clock_json(void)
{
	int64_t off = clock_offset_ms(), real = real_now_ms();
	char now[40], real_s[40], tz[8];
	fmt_time(real + off, cfg.tz_offset_s, now);
	fmt_time(real, cfg.tz_offset_s, real_s);
	fmt_tz(cfg.tz_offset_s, tz);
	return json_pack("{s:s,s:f,s:s,s:s}", "now", now, "offset_seconds", off / 1000.0, "tz_offset", tz, "real_now",
			 real_s);
}

resp_t set_clock(json_t *b, json_t *q)
{
	json_t *now = json_object_get(b, "now"), *off = json_object_get(b, "offset_seconds");
	json_t *adv = json_object_get(b, "advance_seconds");
	int64_t t;
	if (now) {
		if (!json_is_string(now) || parse_time(json_string_value(now), 0, cfg.tz_offset_s, &t))
			return api_refusal("POST", "/sim/clock", "now: Invalid datetime (YYYY-MM-DDTHH:MM[:SS][+HH:MM])");
		clock_set_offset(t - real_now_ms());
	} else if (json_is_number(off))
		clock_set_offset((int64_t)llround(json_number_value(off) * 1000));
	else if (json_is_number(adv))
		clock_set_offset(clock_offset_ms() + (int64_t)llround(json_number_value(adv) * 1000));
	else
		return api_refusal("POST", "/sim/clock", "give now, offset_seconds or advance_seconds");
	{
		json_t *c = clock_json();
		logmsg("clock set: now %s", json_string_value(json_object_get(c, "now")));
		return R_json(c);
	}
}

static const struct setting {
	const char *key;
	int *value;
	int is_bool;
} settings[] = {
	{ "register_callback_first", &cfg.register_first, 1 },
	{ "register_callback_twice", &cfg.register_twice, 1 },
	{ "register_delay_ms", &cfg.register_delay_ms, 0 },
	{ "handshake_delay_ms", &cfg.handshake_delay_ms, 0 },
	{ "callback_timeout_ms", &cfg.callback_timeout_ms, 0 },
	{ "schedule", &cfg.schedule, 1 },
	{ "allow_local_urls", &cfg.allow_local_urls, 1 },
	{ "exit_on_callback_failure", &cfg.exit_on_callback_failure, 1 },
};

json_t *config_json(void)
{
	json_t *o = json_object();
	LOCK();
	for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
		json_object_set_new(o, settings[i].key, settings[i].is_bool ? json_boolean(*settings[i].value)
									   : json_integer(*settings[i].value));
	json_object_set_new(o, "initial_token", json_string(cfg.initial_token));
	UNLOCK();
	return o;
}

static const struct setting *find_setting(const char *key)
{
	for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
		if (!strcmp(settings[i].key, key))
			return &settings[i];
	return NULL;
}

/* all or nothing: every key is checked before any is set */
resp_t set_config(json_t *b, json_t *q)
{
	const char *key;
	json_t *x;
	char m[200];
	long long v;
	json_object_foreach(b, key, x) {
		const struct setting *s = find_setting(key);
		if (!s)
			snprintf(m, sizeof m, "unknown setting %.100s", key);
		else if (s->is_bool ? !json_is_boolean(x) : !json_whole(x, &v) || v < 0 || v > 1000000000)
			snprintf(m, sizeof m, "%s must be %s", key, s->is_bool ? "true or false" : "a whole number >= 0");
		else
			continue;
		return api_refusal("POST", "/sim/config", m);
	}
	LOCK();
	json_object_foreach(b, key, x) {
		const struct setting *s = find_setting(key);
		json_whole(x, &v);
		*s->value = s->is_bool ? json_is_true(x) : (int)v;
	}
	UNLOCK();
	return R_json(config_json());
}

/* an optional whole number: 0 when absent, 1 when given, -1 when not whole */
static int get_int(json_t *b, const char *key, int *out)
{
	long long v;
	json_t *x = json_object_get(b, key);
	if (!x)
		return 0;
	if (!json_whole(x, &v) || v < -1000000000 || v > 1000000000)
		return -1;
	*out = (int)v;
	return 1;
}

resp_t arm_fault(json_t *b, json_t *q)
{
	fault_t f = { .count = 1 };
	json_t *path = json_object_get(b, "path"), *msg = json_object_get(b, "message"), *drop = json_object_get(b, "drop");
	if (get_int(b, "status", &f.status) < 0 || get_int(b, "delay_ms", &f.delay_ms) < 0 ||
	    get_int(b, "count", &f.count) < 0)
		return api_refusal("POST", "/sim/fault", "status, delay_ms and count must be whole numbers");
	if (f.status && (f.status < 100 || f.status > 599))
		return api_refusal("POST", "/sim/fault", "status must be an HTTP status code (100 to 599)");
	if (f.delay_ms < 0)
		return api_refusal("POST", "/sim/fault", "delay_ms must be >= 0");
	if (f.count == 0 || f.count < -1)
		return api_refusal("POST", "/sim/fault", "count must be >= 1, or -1 for until DELETE /sim/fault");
	if ((drop && !json_is_boolean(drop)) || (path && !json_is_string(path)) || (msg && !json_is_string(msg)))
		return api_refusal("POST", "/sim/fault", "drop must be true or false; path and message strings");
	f.drop = json_is_true(drop);
	if (!f.status && !f.delay_ms && !f.drop)
		return api_refusal("POST", "/sim/fault", "give status, delay_ms or drop");
	snprintf(f.path, sizeof f.path, "%s", path ? json_string_value(path) : "");
	snprintf(f.message, sizeof f.message, "%s", msg ? json_string_value(msg) : "");
	fault_arm(&f);
	logmsg("fault armed: status=%d delay_ms=%d drop=%d count=%d path=%s", f.status, f.delay_ms, f.drop, f.count,
	       f.path[0] ? f.path : "*");
	return R_json(fault_json());
}

resp_t reset_token(json_t *b, json_t *q)
{
	json_t *t = json_object_get(b, "token");
	char m[48];
	if (!json_is_string(t) || !json_string_length(t) || json_string_length(t) >= sizeof st.elmo_token)
		return api_refusal("POST", "/sim/admin/reset-token", "token is required: the new initial token");
	state_admin_token(json_string_value(t));
	mask_token(json_string_value(t), m);
	logmsg("administrator reset: ELMO token is now %s; CSMS disconnected", m);
	return R(204, NULL);
}
