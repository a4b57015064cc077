/*
 * elmo-sim: ELMO's OSCP 2.0 API (what a CSMS sends to ELMO).
 * Checks in ELMO's order; error bodies as the captures in
 * ../shared/spec/real-elmo-wire/ show them.
 */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { M_POST = 1, M_PUT = 2, M_DELETE = 4 };

static const struct route {
	const char *name;
	int methods;
	int business;		/* needs a handshake_acknowledge first */
} routes[] = {
	{ "register", M_POST | M_PUT | M_DELETE, 0 },
	{ "handshake_acknowledge", M_POST, 0 },
	{ "adjust_group_capacity_forecast", M_POST, 1 },
	{ "update_group_measurements", M_POST, 1 },
	{ "group_capacity_compliance_error", M_POST, 1 },
};

static const char *const PHASES[] = { "UNKNOWN", "ONE", "TWO", "THREE", "ALL", NULL };
static const char *const EUNITS[] = { "WH", "KWH", NULL };
static const char *const DIRECTIONS[] = { "NET", "IMPORT", "EXPORT", NULL };
static const char *const ETYPES[] = { "FLEXIBLE", "NONFLEXIBLE", "TOTAL", NULL };
static const char *const MCONF[] = { "CONTINUOUS", "INTERMITTENT", NULL };

/* ---- zod-like validation: messages "<path>: <text>" ---- */

static void err(json_t *e, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void err(json_t *e, const char *path, const char *fmt, ...)
{
	char msg[512], line[800];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (path && *path)
		snprintf(line, sizeof line, "%s: %s", path, msg);
	else
		snprintf(line, sizeof line, "%s", msg);
	json_array_append_new(e, json_string(line));
}

static const char *jtype(json_t *v)
{
	if (!v)
		return "undefined";
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER:
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	default: return "null";
	}
}

static int want_type(json_t *e, json_t *v, const char *path, const char *type)
{
	if (!v) {
		err(e, path, "Required");
		return 0;
	}
	if (strcmp(jtype(v), type) != 0) {
		err(e, path, "Expected %s, received %s", type, jtype(v));
		return 0;
	}
	return 1;
}

static int want_string(json_t *e, json_t *v, const char *path, size_t minlen)
{
	if (!want_type(e, v, path, "string"))
		return 0;
	if (json_string_length(v) < minlen) {
		err(e, path, "String must contain at least %zu character(s)", minlen);
		return 0;
	}
	return 1;
}

static int want_number(json_t *e, json_t *v, const char *path, int nonneg)
{
	if (!want_type(e, v, path, "number"))
		return 0;
	if (nonneg && json_number_value(v) < 0) {
		err(e, path, "Number must be greater than or equal to 0");
		return 0;
	}
	return 1;
}

static int want_enum(json_t *e, json_t *v, const char *path, const char *const *vals, int optional)
{
	char exp[256] = "";
	if (!v && optional)
		return 1;
	if (v && json_is_string(v))
		for (int i = 0; vals[i]; i++)
			if (strcmp(json_string_value(v), vals[i]) == 0)
				return 1;
	if (!v) {
		err(e, path, "Required");
		return 0;
	}
	for (int i = 0; vals[i]; i++) {
		size_t n = strlen(exp);
		snprintf(exp + n, sizeof exp - n, "%s'%s'", i ? " | " : "", vals[i]);
	}
	if (json_is_string(v))
		err(e, path, "Invalid enum value. Expected %s, received '%s'", exp, json_string_value(v));
	else
		err(e, path, "Expected %s, received %s", exp, jtype(v));
	return 0;
}

static int want_datetime(json_t *e, json_t *v, const char *path, int optional, int64_t *ms)
{
	int64_t dummy;
	if (!v && optional)
		return 1;
	if (!want_type(e, v, path, "string"))
		return 0;
	if (parse_time(json_string_value(v), 1, 0, ms ? ms : &dummy) != 0) {
		err(e, path, "Invalid datetime");
		return 0;
	}
	return 1;
}

static void sub(char *out, size_t n, const char *base, size_t i, const char *key)
{
	snprintf(out, n, "%s.%zu%s%s", base, i, key ? "." : "", key ? key : "");
}

/* a forecasted block; phase and unit are not checked by ELMO */
static int want_block(json_t *e, json_t *b, const char *base, size_t i, int64_t *s, int64_t *en, double *cap)
{
	char p[128];
	int ok = 1;
	sub(p, sizeof p, base, i, NULL);
	if (!want_type(e, b, p, "object"))
		return 0;
	sub(p, sizeof p, base, i, "capacity");
	ok &= want_number(e, json_object_get(b, "capacity"), p, 1);
	sub(p, sizeof p, base, i, "start_time");
	ok &= want_datetime(e, json_object_get(b, "start_time"), p, 0, s);
	sub(p, sizeof p, base, i, "end_time");
	ok &= want_datetime(e, json_object_get(b, "end_time"), p, 0, en);
	if (ok && cap)
		*cap = json_number_value(json_object_get(b, "capacity"));
	return ok;
}

static json_t *validate_register(json_t *b)
{
	json_t *e = json_array(), *vu;
	char p[128];
	want_string(e, json_object_get(b, "token"), "token", 1);
	vu = json_object_get(b, "version_url");
	if (want_type(e, vu, "version_url", "array")) {
		for (size_t i = 0; i < json_array_size(vu); i++) {
			json_t *x = json_array_get(vu, i), *v, *u;
			sub(p, sizeof p, "version_url", i, NULL);
			if (!want_type(e, x, p, "object"))
				continue;
			v = json_object_get(x, "version");
			sub(p, sizeof p, "version_url", i, "version");
			if (want_string(e, v, p, 0) && strcmp(json_string_value(v), "2.0") != 0)
				err(e, p, "Version must be 2.0");
			u = json_object_get(x, "base_url");
			sub(p, sizeof p, "version_url", i, "base_url");
			if (want_string(e, u, p, 0) && !base_url_ok(json_string_value(u), cfg.allow_local_urls))
				err(e, p, "base_url must be a valid URL starting with https:// and must not end with /");
		}
		if (json_array_size(vu) != 1)
			err(e, "version_url", "Only one version url is allowed");
	}
	return e;
}

static json_t *validate_measurements(json_t *b)
{
	json_t *e = json_array(), *m;
	char p[128];
	want_string(e, json_object_get(b, "group_id"), "group_id", 0);
	m = json_object_get(b, "measurements");
	if (!want_type(e, m, "measurements", "array"))
		return e;
	if (json_array_size(m) == 0)
		err(e, "measurements", "Should have at least one item");
	for (size_t i = 0; i < json_array_size(m); i++) {
		json_t *x = json_array_get(m, i);
		sub(p, sizeof p, "measurements", i, NULL);
		if (!want_type(e, x, p, "object"))
			continue;
		sub(p, sizeof p, "measurements", i, "value");
		want_number(e, json_object_get(x, "value"), p, 1);
		sub(p, sizeof p, "measurements", i, "phase");
		want_enum(e, json_object_get(x, "phase"), p, PHASES, 0);
		sub(p, sizeof p, "measurements", i, "unit");
		want_enum(e, json_object_get(x, "unit"), p, EUNITS, 0);
		sub(p, sizeof p, "measurements", i, "direction");
		want_enum(e, json_object_get(x, "direction"), p, DIRECTIONS, 0);
		sub(p, sizeof p, "measurements", i, "energy_type");
		want_enum(e, json_object_get(x, "energy_type"), p, ETYPES, 1);
		sub(p, sizeof p, "measurements", i, "measure_time");
		want_datetime(e, json_object_get(x, "measure_time"), p, 0, NULL);
		sub(p, sizeof p, "measurements", i, "initial_measure_time");
		want_datetime(e, json_object_get(x, "initial_measure_time"), p, 1, NULL);
	}
	return e;
}

/* 24 one-hour blocks, each starting where the previous ended, all starting on one local day */
static json_t *validate_adjust(json_t *b, int64_t *starts, double *caps)
{
	json_t *e = json_array(), *fb;
	int64_t s[32], en[32];
	int all_ok = 1;
	size_t n;
	want_string(e, json_object_get(b, "group_id"), "group_id", 0);
	fb = json_object_get(b, "forecasted_blocks");
	if (!want_type(e, fb, "forecasted_blocks", "array"))
		return e;
	n = json_array_size(fb);
	for (size_t i = 0; i < n; i++) {
		double c = 0;
		int64_t a = 0, z = 0;
		if (!want_block(e, json_array_get(fb, i), "forecasted_blocks", i, &a, &z, &c))
			all_ok = 0;
		else if (i < 32) {
			s[i] = a;
			en[i] = z;
			if (i < 24) {
				starts[i] = a;
				caps[i] = c;
			}
		}
	}
	if (n < 24)
		err(e, "forecasted_blocks", "Array must contain at least 24 element(s)");
	if (all_ok) {
		int good = n == 24;
		char d0[11], d[11];
		for (size_t i = 0; good && i < 24; i++) {
			fmt_day(s[i], cfg.tz_offset_s, d);
			if (i == 0)
				memcpy(d0, d, sizeof d0);
			if (en[i] - s[i] != 3600000 || (i > 0 && s[i] != en[i - 1]) || strcmp(d, d0) != 0)
				good = 0;
		}
		if (!good)
			err(e, "forecasted_blocks", "Must be 24 consecutive hourly blocks starting from the same day");
	}
	return e;
}

static json_t *validate_compliance(json_t *b)
{
	json_t *e = json_array(), *fb;
	want_string(e, json_object_get(b, "message"), "message", 1);
	fb = json_object_get(b, "forecasted_blocks");
	if (fb && want_type(e, fb, "forecasted_blocks", "array"))
		for (size_t i = 0; i < json_array_size(fb); i++)
			want_block(e, json_array_get(fb, i), "forecasted_blocks", i, NULL, NULL, NULL);
	return e;
}

static json_t *validate_ack(json_t *b)
{
	json_t *e = json_array(), *rb = json_object_get(b, "required_behaviour"), *mc, *hi;
	if (!rb || !want_type(e, rb, "required_behaviour", "object"))
		return e;
	mc = json_object_get(rb, "measurement_configuration");
	if (want_type(e, mc, "required_behaviour.measurement_configuration", "array"))
		for (size_t i = 0; i < json_array_size(mc); i++) {
			char p[128];
			sub(p, sizeof p, "required_behaviour.measurement_configuration", i, NULL);
			want_enum(e, json_array_get(mc, i), p, MCONF, 0);
		}
	hi = json_object_get(rb, "heartbeat_interval");
	if (hi && want_number(e, hi, "required_behaviour.heartbeat_interval", 0) && json_number_value(hi) < 1)
		err(e, "required_behaviour.heartbeat_interval", "Number must be greater than or equal to 1");
	return e;
}

static resp_t bad_request(json_t *errors)
{
	return R(400, error_body(400, errors));
}

/* ---- the handlers ---- */

static char *join_url(const char *base, const char *name)
{
	size_t n = strlen(base) + strlen(name) + 2;
	char *u = malloc(n);
	snprintf(u, n, "%s/%s", base, name);
	return u;
}

static resp_t do_register(int method, json_t *body)
{
	json_t *e = validate_register(body), *vu0;
	const char *tok, *url;
	char *cb_url, *auth, *cb_body, oldmask[48], newmask[48];
	chain_t chain = { 0, NULL, NULL };
	size_t alen;
	if (json_array_size(e))
		return bad_request(e);
	json_decref(e);
	tok = json_string_value(json_object_get(body, "token"));
	vu0 = json_array_get(json_object_get(body, "version_url"), 0);
	url = json_string_value(json_object_get(vu0, "base_url"));
	LOCK();
	if (method == M_DELETE) {		/* disconnects; ELMO's token stays valid */
		st.connected = 0;
		st.registered = 0;
		UNLOCK();
		logmsg("register DELETE: CSMS disconnected");
		return R(204, NULL);
	}
	free(st.csms_token);
	free(st.csms_base_url);
	st.csms_token = strdup(tok);
	st.csms_base_url = strdup(url);
	if (method == M_PUT) {		/* silent update (capture 50a) */
		st.registered = 1;
		UNLOCK();
		logmsg("register PUT: CSMS base_url=%s", url);
		return R(204, NULL);
	}
	/* POST: rotate ELMO's token at once; the old one (initial or not) is dead */
	mask_token(st.elmo_token, oldmask);
	rand_chars(st.elmo_token, ELMO_TOKEN_LEN, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
	mask_token(st.elmo_token, newmask);
	st.token_rotated = 1;
	st.registered = 1;
	{
		json_t *o = json_object(), *v = json_array(), *x = json_object();
		json_object_set_new(o, "token", json_string(st.elmo_token));
		json_object_set_new(x, "base_url", json_string("/oscp/2.0"));
		json_object_set_new(x, "version", json_string("2.0"));
		json_array_append_new(v, x);
		json_object_set_new(o, "version_url", v);
		cb_body = dump_steal(o);
	}
	UNLOCK();
	cb_url = join_url(url, "register");
	alen = strlen(tok) + 7;
	auth = malloc(alen);
	snprintf(auth, alen, "Token %s", tok);
	chain.chain_handshake = 1;
	chain.hs_url = join_url(url, "handshake");
	chain.hs_auth = auth;
	logmsg("register POST: CSMS base_url=%s; ELMO token %s -> %s", url, oldmask, newmask);
	if (cfg.register_first) {
		/* the race of capture 03: the callback reaches the CSMS before our 204 */
		cb_send_sync("register", cb_url, auth, cb_body, &chain);
		if (cfg.register_twice) {
			chain_t none = { 0, NULL, NULL };
			cb_enqueue("register", cb_url, auth, cb_body, cfg.register_delay_ms, &none);
		}
	} else
		cb_enqueue("register", cb_url, auth, cb_body, cfg.register_delay_ms, &chain);
	free(cb_url);
	free(auth);
	free(cb_body);
	free(chain.hs_url);
	return R(204, NULL);
}

static resp_t do_ack(json_t *body)
{
	json_t *e = validate_ack(body);
	if (json_array_size(e))
		return bad_request(e);
	json_decref(e);
	LOCK();
	st.connected = 1;
	UNLOCK();
	logmsg("handshake_acknowledge: CSMS connected");
	return R(204, NULL);
}

static resp_t do_measurements(json_t *body)
{
	json_t *e = validate_measurements(body);
	const char *g;
	station_t *s;
	char msg[300];
	if (json_array_size(e))
		return bad_request(e);
	json_decref(e);
	g = json_string_value(json_object_get(body, "group_id"));
	LOCK();
	s = find_station(g);
	if (!s) {
		UNLOCK();
		snprintf(msg, sizeof msg, "Charging station with uid %s does not exist", g);
		return R(400, error_str(400, msg));
	}
	json_decref(s->last_measurement);
	s->last_measurement = json_deep_copy(body);
	UNLOCK();
	return R(204, NULL);
}

static resp_t do_adjust(json_t *body, const char *xrid)
{
	int64_t starts[24], now = sim_now_ms(), tomorrow = local_midnight(now, cfg.tz_offset_s) + 86400000LL;
	double caps[24];
	json_t *e = validate_adjust(body, starts, caps);
	const char *g, *status;
	station_t *s;
	negotiation_t *n;
	char day[11], msg[400];
	if (json_array_size(e))
		return bad_request(e);
	json_decref(e);
	g = json_string_value(json_object_get(body, "group_id"));
	fmt_day(tomorrow, cfg.tz_offset_s, day);
	LOCK();
	s = find_station(g);
	n = s ? find_neg(s, day) : NULL;
	if (!n) {
		UNLOCK();
		snprintf(msg, sizeof msg, "ChargingStation[%s] negotiation not found", g);
		return R(404, error_str(404, msg));
	}
	status = neg_status(n, now);
	if (strcmp(status, "NEGOTIATING") != 0) {
		snprintf(msg, sizeof msg, "ChargingStation[%s] negotiation status (%s) is not valid NEGOTIATING", g, status);
		UNLOCK();
		return R(400, error_str(400, msg));
	}
	/* only each block's local (Taipei) hour is used (capture 25c) */
	for (int i = 0; i < 24; i++) {
		int64_t l = starts[i] + (int64_t)cfg.tz_offset_s * 1000;
		int h = (int)(((l % 86400000) + 86400000) % 86400000 / 3600000);
		n->requested[h] = caps[i];
	}
	n->has_request = 1;
	snprintf(n->request_id, sizeof n->request_id, "%s", xrid);
	n->requested_at_ms = now;
	strcpy(n->status, "EXTRA_REPLY_EDIT");
	UNLOCK();
	logmsg("adjust: request for %s on %s recorded", g, day);
	return R(204, NULL);
}

static resp_t do_compliance(json_t *body)
{
	json_t *e = validate_compliance(body);
	if (json_array_size(e))
		return bad_request(e);
	json_decref(e);
	return R(204, NULL);
}

static const char *hdr(json_t *headers, const char *name)
{
	const char *v = json_string_value(json_object_get(headers, name));
	return v && *v ? v : NULL;
}

static int is_json_type(const char *ct)
{
	return ct && (strstr(ct, "application/json") || strstr(ct, "+json"));
}

static resp_t route(const char *method, const char *url, json_t *headers, json_t *body, const char *perr)
{
	const char *name = url + strlen(OSCP_PREFIX), *auth, *xrid;
	const struct route *r = NULL;
	int m = !strcmp(method, "POST") ? M_POST : !strcmp(method, "PUT") ? M_PUT : !strcmp(method, "DELETE") ? M_DELETE : 0;
	char msg[600];
	int ok;
	if (perr)		/* Express's body parser runs before routing */
		return R(400, error_str(400, perr));
	for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
		if (strcmp(routes[i].name, name) == 0 && (routes[i].methods & m))
			r = &routes[i];
	if (!r) {		/* no route: 404 before any header check (captures 06h, 10a, 10b) */
		snprintf(msg, sizeof msg, "Cannot %s %s", method, url);
		return R(404, error_str(404, msg));
	}
	if (!(xrid = hdr(headers, "x-request-id")))
		return R(403, error_str(403, "Missing mandatory header: x-request-id"));
	if (!(auth = hdr(headers, "authorization")))
		return R(401, error_str(401, "Missing mandatory header: authorization"));
	if (strncmp(auth, "Token ", 6) != 0)
		return R(403, error_str(403, "Un-support authorization token prefix"));
	LOCK();
	ok = strcmp(auth + 6, st.elmo_token) == 0;
	if (ok && r->business && !st.connected) {
		UNLOCK();
		return R(403, error_str(403, "CSMS[1] is not connected, should register and handshake first"));
	}
	UNLOCK();
	if (!ok)
		return R(403, error_str(403, "Invalid authorization token"));
	if ((!strcmp(name, "handshake_acknowledge") || !strcmp(name, "group_capacity_compliance_error")) &&
	    !hdr(headers, "x-correlation-id"))
		return R(400, error_str(400, "Missing x-correlation-id header"));
	if (!json_is_object(body)) {
		json_t *e = json_array();
		err(e, NULL, "Expected object, received %s", jtype(body));
		return bad_request(e);
	}
	if (!strcmp(name, "register"))
		return do_register(m, body);
	if (!strcmp(name, "handshake_acknowledge"))
		return do_ack(body);
	if (!strcmp(name, "update_group_measurements"))
		return do_measurements(body);
	if (!strcmp(name, "adjust_group_capacity_forecast"))
		return do_adjust(body, xrid);
	return do_compliance(body);
}

/* the next N requests (optionally only those to one path) get the injected fault */
static int take_fault(const char *url, int *status, int *delay, int *drop, char *message, size_t mlen)
{
	int hit = 0;
	LOCK();
	if (st.f_count) {
		size_t ul = strlen(url), pl = strlen(st.f_path);
		int match = !pl || !strcmp(url, st.f_path) ||
			    (ul > pl && !strcmp(url + ul - pl, st.f_path) && url[ul - pl - 1] == '/');
		if (match) {
			hit = 1;
			*status = st.f_status;
			*delay = st.f_delay_ms;
			*drop = st.f_drop;
			snprintf(message, mlen, "%s", st.f_message);
			if (st.f_count > 0)
				st.f_count--;
		}
	}
	UNLOCK();
	return hit;
}

resp_t oscp_handle(const char *method, const char *url, json_t *headers, const char *raw, size_t rawlen)
{
	json_t *rec = json_object(), *parsed = NULL, *body = NULL;
	json_error_t je;
	char ts[40], perr[200], fmsg[256], amask[48];
	const char *perrp = NULL, *auth;
	int fstatus = 0, fdelay = 0, fdrop = 0, faulted;
	int64_t t0 = mono_now_ms();
	resp_t r;

	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	if (rawlen)
		parsed = json_loadb(raw, rawlen, JSON_DECODE_ANY, &je);
	LOCK();
	json_object_set_new(rec, "id", json_integer(st.next_msg_id++));
	UNLOCK();
	json_object_set_new(rec, "received_at", json_string(ts));
	json_object_set_new(rec, "method", json_string(method));
	json_object_set_new(rec, "path", json_string(url));
	json_object_set(rec, "headers", headers);
	json_object_set_new(rec, "raw_body", json_stringn(raw ? raw : "", rawlen));
	json_object_set(rec, "body", parsed ? parsed : json_null());

	faulted = take_fault(url, &fstatus, &fdelay, &fdrop, fmsg, sizeof fmsg);
	if (faulted && fdelay > 0)
		for (int waited = 0; waited < fdelay && !stopping; waited += 20) {
			struct timespec t = { 0, 20 * 1000000L };
			nanosleep(&t, NULL);
		}
	if (faulted && fdrop) {
		r = R(0, NULL);
		r.drop = 1;
	} else if (faulted && fstatus == 500 && !fmsg[0]) {
		/* NestJS's answer to an unhandled exception */
		r = R(500, strdup("{\"statusCode\":500,\"message\":\"Internal server error\"}"));
	} else if (faulted && fstatus) {
		const char *m = fmsg[0] ? fmsg : fstatus == 403 ? "Invalid authorization token"
			      : fstatus == 401 ? "Unauthorized" : reason_phrase(fstatus);
		r = R(fstatus, error_str(fstatus, m));
	} else {
		/* Express: only a JSON content type is parsed; no body is {} */
		if (is_json_type(hdr(headers, "content-type")) && rawlen) {
			if (!parsed || !(json_is_object(parsed) || json_is_array(parsed))) {
				snprintf(perr, sizeof perr, "Unexpected token in JSON at position %d",
					 parsed ? 0 : je.position);
				perrp = perr;
			} else
				body = json_incref(parsed);
		}
		if (!body)
			body = json_object();
		r = route(method, url, headers, body, perrp);
		json_decref(body);
	}
	json_decref(parsed);
	json_object_set_new(rec, "status", r.drop ? json_null() : json_integer(r.status));
	json_object_set_new(rec, "response_body", r.body ? json_string(r.body) : json_null());
	json_object_set_new(rec, "dropped", json_boolean(r.drop));
	json_object_set_new(rec, "fault", json_boolean(faulted));
	LOCK();
	json_array_append_new(st.messages, rec);
	if (json_array_size(st.messages) > MAX_MESSAGES)
		json_array_remove(st.messages, 0);
	UNLOCK();
	auth = hdr(headers, "authorization");
	mask_token(auth && !strncmp(auth, "Token ", 6) ? auth + 6 : auth, amask);
	logmsg("%s %s -> %s%d%s (%lld ms, auth %s%s)%s%s", method, url, r.drop ? "DROPPED " : "", r.status,
	       faulted ? " [fault]" : "", (long long)(mono_now_ms() - t0), auth && !strncmp(auth, "Token ", 6) ? "Token " : "",
	       amask, r.body && r.status >= 400 ? " " : "", r.body && r.status >= 400 ? r.body : "");
	if (cfg.verbose && rawlen && strcmp(url, OSCP_PREFIX "register") != 0)
		logmsg("  body: %.*s", (int)(rawlen > 1500 ? 1500 : rawlen), raw);
	return r;
}
