/*
 * ELMO's OSCP API: the request's way through ELMO (Express, then NestJS), in
 * ELMO's order, so that each mistake gets the answer the real server gives.
 */
#include "oscp.h"

#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "fault.h"
#include "checks.h"
#include "json_util.h"
#include "log.h"
#include "oscp_handlers.h"
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct route {
	const char *name;
	int methods;
	int business;		/* needs a handshake_acknowledge first */
	int correlated;		/* needs X-Correlation-ID */
} routes[] = {
	{ "register", M_POST | M_PUT | M_DELETE, 0, 0 },
	{ "handshake_acknowledge", M_POST, 0, 1 },
	{ "adjust_group_capacity_forecast", M_POST, 1, 0 },
	{ "update_group_measurements", M_POST, 1, 0 },
	{ "group_capacity_compliance_error", M_POST, 1, 1 },
};

static const char *hdr(json_t *headers, const char *name)
{
	const char *v = json_string_value(json_object_get(headers, name));
	return v && *v ? v : NULL;
}

static int method_bit(const char *method)
{
	return !strcmp(method, "POST") ? M_POST : !strcmp(method, "PUT") ? M_PUT : !strcmp(method, "DELETE") ? M_DELETE : 0;
}

static const struct route *find_route(const char *name, int m)
{
	for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
		if (strcmp(routes[i].name, name) == 0 && (routes[i].methods & m))
			return &routes[i];
	return NULL;
}

/* the token's checks, in ELMO's order and words; 0 when it passes */
static int refuse_auth(json_t *headers, const struct route *r, resp_t *out)
{
	const char *auth = hdr(headers, "authorization");
	int ok, connected;
	if (!hdr(headers, "x-request-id"))
		return *out = R_error(403, "Missing mandatory header: x-request-id"), 1;
	if (!auth)
		return *out = R_error(401, "Missing mandatory header: authorization"), 1;
	if (strncmp(auth, "Token ", 6) != 0)
		return *out = R_error(403, "Un-support authorization token prefix"), 1;
	LOCK();
	ok = strcmp(auth + 6, st.elmo_token) == 0;
	connected = st.connected;
	UNLOCK();
	if (ok && r->business && !connected)
		return *out = R_error(403, "CSMS[1] is not connected, should register and handshake first"), 1;
	if (!ok)
		return *out = R_error(403, "Invalid authorization token"), 1;
	return 0;
}

static resp_t route(const char *method, const char *url, json_t *headers, json_t *body, const char *parse_error)
{
	const char *name = url + strlen(OSCP_PREFIX);
	const struct route *r;
	int m = method_bit(method);
	char msg[600];
	resp_t refusal;
	if (parse_error)	/* Express's body parser runs before routing */
		return R_error(400, parse_error);
	if (!(r = find_route(name, m))) {	/* 404 before any header check (captures 06h, 10a, 10b) */
		snprintf(msg, sizeof msg, "Cannot %s %s", method, url);
		return R_error(404, msg);
	}
	if (refuse_auth(headers, r, &refusal))
		return refusal;
	if (r->correlated && !hdr(headers, "x-correlation-id"))
		return R_error(400, "Missing x-correlation-id header");
	if (!json_is_object(body)) {
		snprintf(msg, sizeof msg, "Expected object, received %s", jtype(body));
		return R(400, error_body(400, json_pack("[s]", msg)));
	}
	if (!strcmp(name, "register"))
		return do_register(m, body);
	if (!strcmp(name, "handshake_acknowledge"))
		return do_ack(body);
	if (!strcmp(name, "update_group_measurements"))
		return do_measurements(body);
	if (!strcmp(name, "adjust_group_capacity_forecast"))
		return do_adjust(body, hdr(headers, "x-request-id"));
	return do_compliance(body);
}

/* the injected fault's answer, after its delay; 0 when the request goes on */
static int faulted(const fault_t *f, resp_t *out)
{
	for (int waited = 0; waited < f->delay_ms && !stopping; waited += 20) {
		struct timespec t = { 0, 20 * 1000000L };
		nanosleep(&t, NULL);
	}
	if (f->drop) {
		*out = R(0, NULL);
		out->drop = 1;
	} else if (f->status == 500 && !f->message[0])	/* NestJS's answer to an unhandled exception */
		*out = R(500, strdup("{\"statusCode\":500,\"message\":\"Internal server error\"}"));
	else if (f->status)
		*out = R_error(f->status, f->message[0] ? f->message : f->status == 403 ? "Invalid authorization token"
					  : f->status == 401 ? "Unauthorized" : reason_phrase(f->status));
	return f->drop || f->status;
}

/* Express parses only a JSON content type; no body is {} */
static resp_t parse_and_route(const char *method, const char *url, json_t *headers, json_t *parsed,
			      const json_error_t *je, size_t rawlen)
{
	const char *ct = hdr(headers, "content-type");
	json_t *body = NULL;
	char perr[200];
	resp_t r;
	if (ct && (strstr(ct, "application/json") || strstr(ct, "+json")) && rawlen) {
		if (!parsed || !(json_is_object(parsed) || json_is_array(parsed))) {
			snprintf(perr, sizeof perr, "Unexpected token in JSON at position %d", parsed ? 0 : je->position);
			return route(method, url, headers, NULL, perr);
		}
		body = json_incref(parsed);
	}
	if (!body)
		body = json_object();
	r = route(method, url, headers, body, NULL);
	json_decref(body);
	return r;
}

static json_t *new_record(const char *method, const char *url, json_t *headers, const char *raw, size_t rawlen,
			  json_t *parsed)
{
	json_t *rec = json_object();
	char ts[40];
	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	json_object_set_new(rec, "id", json_integer(new_message_id()));
	json_object_set_new(rec, "received_at", json_string(ts));
	json_object_set_new(rec, "method", json_string(method));
	json_object_set_new(rec, "path", json_string(url));
	json_object_set(rec, "headers", headers);
	json_object_set_new(rec, "raw_body", json_stringn(raw ? raw : "", rawlen));
	json_object_set(rec, "body", parsed ? parsed : json_null());
	return rec;
}

resp_t oscp_handle(const char *method, const char *url, json_t *headers, const char *raw, size_t rawlen)
{
	json_t *parsed = NULL, *rec;
	json_error_t je;
	char amask[56];
	int64_t t0 = mono_now_ms();
	fault_t f;
	int hit;
	resp_t r;

	if (rawlen)
		parsed = json_loadb(raw, rawlen, JSON_DECODE_ANY, &je);
	rec = new_record(method, url, headers, raw, rawlen, parsed);
	hit = fault_take(url, &f);
	if (!hit || !faulted(&f, &r))
		r = parse_and_route(method, url, headers, parsed, &je, rawlen);
	json_decref(parsed);
	json_object_set_new(rec, "status", r.drop ? json_null() : json_integer(r.status));
	json_object_set_new(rec, "response_body", r.body ? json_string(r.body) : json_null());
	json_object_set_new(rec, "dropped", json_boolean(r.drop));
	json_object_set_new(rec, "fault", json_boolean(hit));
	record_message(rec);
	mask_auth(hdr(headers, "authorization"), amask);
	logmsg("%s %s -> %s%d%s (%lld ms, auth %s)%s%s", method, url, r.drop ? "DROPPED " : "", r.status,
	       hit ? " [fault]" : "", (long long)(mono_now_ms() - t0), amask, r.body && r.status >= 400 ? " " : "",
	       r.body && r.status >= 400 ? r.body : "");
	if (cfg.verbose && rawlen && strcmp(url, OSCP_PREFIX "register") != 0)
		logmsg("  body: %.*s", (int)(rawlen > 1500 ? 1500 : rawlen), raw);
	return r;
}
