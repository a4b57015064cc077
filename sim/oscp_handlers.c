/*
 * ELMO's handling of each OSCP message, answers as the captures show.
 */
#include "oscp_handlers.h"

#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "delivery.h"
#include "ids.h"
#include "json_util.h"
#include "log.h"
#include "negotiation.h"
#include "oscp_validate.h"
#include "state.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 400 with the problems found, or NULL (and the array freed) when there are none */
static int refused(json_t *problems, resp_t *r)
{
	if (json_array_size(problems)) {
		*r = R(400, error_body(400, problems));
		return 1;
	}
	json_decref(problems);
	return 0;
}

/* ELMO calls back with its new token; its handshake follows */
static void call_back(const char *tok, const char *url, const char *cb_body)
{
	char *cb_url = url_join(url, "register"), *hs_url = url_join(url, "handshake"), *auth = token_auth(tok);
	if (cfg.register_first) {
		/* the race of capture 03: the callback reaches the CSMS before our 204 */
		cb_send_sync("register", cb_url, auth, cb_body, hs_url);
		if (cfg.register_twice)
			cb_enqueue("register", cb_url, auth, cb_body, cfg.register_delay_ms, NULL);
	} else
		cb_enqueue("register", cb_url, auth, cb_body, cfg.register_delay_ms, hs_url);
	free(cb_url);
	free(hs_url);
	free(auth);
}

resp_t do_register(int method, json_t *body)
{
	const char *tok, *url;
	char *cb_body, oldmask[48], newmask[48];
	resp_t r;
	if (refused(validate_register(body), &r))
		return r;
	tok = json_string_value(json_object_get(body, "token"));
	url = json_string_value(json_object_get(json_array_get(json_object_get(body, "version_url"), 0), "base_url"));
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
	st.registered = 1;
	if (method == M_PUT) {		/* a silent update (capture 50a) */
		UNLOCK();
		logmsg("register PUT: CSMS base_url=%s", url);
		return R(204, NULL);
	}
	/* POST: ELMO's token is replaced at once; the old one (initial or not) is dead */
	mask_token(st.elmo_token, oldmask);
	new_elmo_token(st.elmo_token);
	mask_token(st.elmo_token, newmask);
	st.token_rotated = 1;
	cb_body = register_callback_body();
	UNLOCK();
	logmsg("register POST: CSMS base_url=%s; ELMO token %s -> %s", url, oldmask, newmask);
	call_back(tok, url, cb_body);
	free(cb_body);
	return R(204, NULL);
}

resp_t do_ack(json_t *body)
{
	resp_t r;
	if (refused(validate_ack(body), &r))
		return r;
	LOCK();
	st.connected = 1;
	UNLOCK();
	logmsg("handshake_acknowledge: CSMS connected");
	return R(204, NULL);
}

resp_t do_measurements(json_t *body)
{
	const char *g;
	station_t *s;
	char msg[300];
	resp_t r;
	if (refused(validate_measurements(body), &r))
		return r;
	g = json_string_value(json_object_get(body, "group_id"));
	LOCK();
	s = find_station(g);
	if (!s) {
		UNLOCK();
		snprintf(msg, sizeof msg, "Charging station with uid %s does not exist", g);
		return R_error(400, msg);
	}
	json_decref(s->last_measurement);
	s->last_measurement = json_deep_copy(body);
	UNLOCK();
	return R(204, NULL);
}

/* only tomorrow's negotiation, while NEGOTIATING; only each block's local hour is used (capture 25c) */
resp_t do_adjust(json_t *body, const char *request_id)
{
	int64_t starts[24], now = sim_now_ms(), tomorrow = local_midnight(now, cfg.tz_offset_s) + DAY_MS;
	double caps[24], by_hour[24] = { 0 };
	const char *g, *status;
	negotiation_t *n;
	char day[11], msg[400];
	resp_t r;
	if (refused(validate_adjust(body, starts, caps), &r))
		return r;
	g = json_string_value(json_object_get(body, "group_id"));
	fmt_day(tomorrow, cfg.tz_offset_s, day);
	LOCK();
	n = find_neg(find_station(g), day);
	if (!n) {
		UNLOCK();
		snprintf(msg, sizeof msg, "ChargingStation[%s] negotiation not found", g);
		return R_error(404, msg);
	}
	status = neg_status(n, now);
	if (strcmp(status, "NEGOTIATING") != 0) {
		snprintf(msg, sizeof msg, "ChargingStation[%s] negotiation status (%s) is not valid NEGOTIATING", g, status);
		UNLOCK();
		return R_error(400, msg);
	}
	memcpy(by_hour, n->requested, sizeof by_hour);
	for (int i = 0; i < 24; i++)
		by_hour[local_hour(starts[i], cfg.tz_offset_s)] = caps[i];
	neg_request(n, by_hour, request_id, now);
	UNLOCK();
	logmsg("adjust: request for %s on %s recorded", g, day);
	return R(204, NULL);
}

resp_t do_compliance(json_t *body)
{
	resp_t r;
	if (refused(validate_compliance(body), &r))
		return r;
	return R(204, NULL);
}
