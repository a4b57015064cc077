/*
 * elmo-sim: the simulated ELMO's state, negotiations and forecast bodies.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

state_t st;

void state_init(void)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&st.mu, &a);
	pthread_mutexattr_destroy(&a);
	st.messages = json_array();
	st.callbacks = json_array();
	st.next_msg_id = 1;
	st.next_cb_id = 1;
	snprintf(st.elmo_token, sizeof st.elmo_token, "%s", cfg.initial_token);
}

/* back to the state at start-up; the configuration (flags, /sim/config) is kept */
void state_reset(void)
{
	LOCK();
	snprintf(st.elmo_token, sizeof st.elmo_token, "%s", cfg.initial_token);
	st.token_rotated = 0;
	st.registered = st.connected = 0;
	free(st.csms_token);
	free(st.csms_base_url);
	st.csms_token = st.csms_base_url = NULL;
	__atomic_store_n(&st.clock_offset_ms, 0, __ATOMIC_SEQ_CST);
	for (size_t i = 0; i < st.nstations; i++) {
		free(st.stations[i].negs);
		st.stations[i].negs = NULL;
		st.stations[i].nnegs = 0;
		json_decref(st.stations[i].last_measurement);
		st.stations[i].last_measurement = NULL;
	}
	json_array_clear(st.messages);
	json_array_clear(st.callbacks);
	st.f_status = st.f_delay_ms = st.f_drop = st.f_count = 0;
	st.f_path[0] = st.f_message[0] = '\0';
	st.gen++;
	UNLOCK();
	sched_clock_changed();
}

station_t *find_station(const char *id)
{
	if (!id)
		return NULL;
	for (size_t i = 0; i < st.nstations; i++)
		if (strcmp(st.stations[i].id, id) == 0)
			return &st.stations[i];
	return NULL;
}

negotiation_t *find_neg(station_t *s, const char *day)
{
	for (size_t i = 0; s && i < s->nnegs; i++)
		if (strcmp(s->negs[i].day, day) == 0)
			return &s->negs[i];
	return NULL;
}

/* the negotiation of that day, created (or started afresh) as NEGOTIATING */
negotiation_t *upsert_neg(station_t *s, int64_t day_start_ms)
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
	return n;
}

/* requests are taken until 14:05 local of the day before; after that a
 * negotiation without a request is closed (it keeps the 10:00 plan) */
const char *neg_status(const negotiation_t *n, int64_t now_ms)
{
	int64_t deadline = n->day_start_ms - 86400000LL + (14 * 60 + 5) * 60000LL;
	if (strcmp(n->status, "NEGOTIATING") == 0 && now_ms >= deadline)
		return "CLOSED";
	return n->status;
}

static json_t *caps_json(const double *c)
{
	json_t *a = json_array();
	for (int h = 0; h < 24; h++)
		json_array_append_new(a, c[h] == (double)(long long)c[h] ? json_integer((long long)c[h])
									  : json_real(c[h]));
	return a;
}

json_t *neg_json(const negotiation_t *n, int64_t now_ms)
{
	json_t *o = json_object();
	json_object_set_new(o, "day", json_string(n->day));
	json_object_set_new(o, "status", json_string(neg_status(n, now_ms)));
	json_object_set_new(o, "assigned", caps_json(n->assigned));
	json_object_set_new(o, "requested", n->has_request ? caps_json(n->requested) : json_null());
	json_object_set_new(o, "request_id", n->has_request ? json_string(n->request_id) : json_null());
	json_object_set_new(o, "reply", n->replied ? caps_json(n->reply) : json_null());
	return o;
}

json_t *state_json(void)
{
	json_t *o = json_object(), *negs = json_object(), *stations = json_array(), *meas = json_object();
	int64_t now = sim_now_ms();
	char ts[40];
	LOCK();
	fmt_time(now, cfg.tz_offset_s, ts);
	json_object_set_new(o, "registered", json_boolean(st.registered));
	json_object_set_new(o, "connected", json_boolean(st.connected));
	json_object_set_new(o, "csms_base_url", st.csms_base_url ? json_string(st.csms_base_url) : json_null());
	json_object_set_new(o, "csms_token", st.csms_token ? json_string(st.csms_token) : json_null());
	json_object_set_new(o, "elmo_token", json_string(st.elmo_token));
	json_object_set_new(o, "initial_token_in_force", json_boolean(!st.token_rotated));
	json_object_set_new(o, "now", json_string(ts));
	json_object_set_new(o, "clock_offset_seconds", json_real(st.clock_offset_ms / 1000.0));
	for (size_t i = 0; i < st.nstations; i++) {
		station_t *s = &st.stations[i];
		json_t *arr = json_array(), *so = json_object();
		json_object_set_new(so, "group_id", json_string(s->id));
		json_object_set_new(so, "own", json_boolean(s->own));
		json_object_set_new(so, "assign_kw", json_real(s->kw));
		json_array_append_new(stations, so);
		for (size_t k = 0; k < s->nnegs; k++)
			json_array_append_new(arr, neg_json(&s->negs[k], now));
		json_object_set_new(negs, s->id, arr);
		if (s->last_measurement)
			json_object_set(meas, s->id, s->last_measurement);
	}
	json_object_set_new(o, "stations", stations);
	json_object_set_new(o, "negotiations", negs);
	json_object_set_new(o, "last_measurements", meas);
	if (st.f_count) {
		json_t *f = json_object();
		json_object_set_new(f, "status", st.f_status ? json_integer(st.f_status) : json_null());
		json_object_set_new(f, "delay_ms", json_integer(st.f_delay_ms));
		json_object_set_new(f, "drop", json_boolean(st.f_drop));
		json_object_set_new(f, "count", json_integer(st.f_count));
		json_object_set_new(f, "path", st.f_path[0] ? json_string(st.f_path) : json_null());
		json_object_set_new(o, "fault", f);
	} else
		json_object_set_new(o, "fault", json_null());
	json_object_set_new(o, "messages", json_integer((json_int_t)json_array_size(st.messages)));
	json_object_set_new(o, "callbacks", json_integer((json_int_t)json_array_size(st.callbacks)));
	UNLOCK();
	return o;
}

/* update_group_capacity_forecast as ELMO formats it (capture 24a, 30, 42) */
char *forecast_body(const char *group, int nblocks, const int64_t *starts, const int64_t *ends,
		    const double *caps, int tz_s)
{
	json_t *o = json_object(), *blocks = json_array();
	char a[40], b[40];
	json_object_set_new(o, "group_id", json_string(group));
	json_object_set_new(o, "type", json_string("CONSUMPTION"));
	for (int i = 0; i < nblocks; i++) {
		json_t *bl = json_object();
		fmt_time(starts[i], tz_s, a);
		fmt_time(ends[i], tz_s, b);
		json_object_set_new(bl, "capacity", caps[i] == (double)(long long)caps[i]
							? json_integer((long long)caps[i]) : json_real(caps[i]));
		json_object_set_new(bl, "phase", json_string("ALL"));
		json_object_set_new(bl, "unit", json_string("KW"));
		json_object_set_new(bl, "start_time", json_string(a));
		json_object_set_new(bl, "end_time", json_string(b));
		json_array_append_new(blocks, bl);
	}
	json_object_set_new(o, "forecasted_blocks", blocks);
	return dump_steal(o);
}

char *day_forecast_body(const char *group, int64_t day_start_ms, const double caps[24])
{
	int64_t s[24], e[24];
	for (int h = 0; h < 24; h++) {
		s[h] = day_start_ms + h * 3600000LL;
		e[h] = s[h] + 3600000LL;
	}
	return forecast_body(group, 24, s, e, caps, cfg.tz_offset_s);
}

static int in_class(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '/' || c == '-';
}

/* http(s)://127.0.0.1:PORT[/path] or localhost, path not ending in '/' */
static int local_url_ok(const char *u)
{
	static const char *pre[] = { "http://127.0.0.1:", "http://localhost:", "https://127.0.0.1:",
				     "https://localhost:" };
	for (size_t i = 0; i < sizeof pre / sizeof *pre; i++) {
		size_t n = strlen(pre[i]), d = 0;
		const char *p;
		if (strncmp(u, pre[i], n) != 0)
			continue;
		p = u + n;
		while (p[d] >= '0' && p[d] <= '9')
			d++;
		if (d < 1 || d > 5)
			return 0;
		p += d;
		if (!*p)
			return 1;
		if (*p != '/' || p[strlen(p) - 1] == '/')
			return 0;
		for (; *p; p++)
			if (!in_class(*p) && *p != '_' && *p != '~')
				return 0;
		return 1;
	}
	return 0;
}

/* ELMO's rule: ^https://[a-zA-Z0-9./-]*[^/]$ */
int base_url_ok(const char *u, int allow_local)
{
	size_t n;
	if (allow_local && local_url_ok(u))
		return 1;
	if (strncmp(u, "https://", 8) != 0)
		return 0;
	u += 8;
	n = strlen(u);
	if (n < 1 || u[n - 1] == '/')
		return 0;
	for (size_t i = 0; i + 1 < n; i++)
		if (!in_class(u[i]))
			return 0;
	return 1;
}
