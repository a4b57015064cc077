/*
 * The control API's documentation.  The examples tell a story on one
 * simulated day (2026-12-01, the clock set to 13:30 in ELMO's zone), in which
 * a CSMS registered and asked for more for the next day; test/e2e replays them
 * against a real simulator, so they stay true.
 */
#include "api_doc.h"

#include "json_util.h"

#include <string.h>

#define G "B6734_AE0100_00848825118"

static const api_doc_t docs[] = {
	{ "GET", "/sim/help", NULL,
	  "This documentation, as JSON.",
	  NULL, 200, "[{\"method\":\"GET\",\"path\":\"/sim/help\",\"query\":null,\"summary\":\"This documentation, as JSON.\","
	  "\"request\":null,\"status\":200,\"answer\":\"...\"}]" },
	{ "GET", "/sim/state", NULL,
	  "Everything the simulator knows: the registration (tokens in the clear: it is a test tool), "
	  "the clock, the stations and their negotiations, the last measurement of each, the fault armed, "
	  "and how many messages and callbacks are recorded.",
	  NULL, 200,
	  "{\"registered\":true,\"connected\":true,\"csms_base_url\":\"http://127.0.0.1:8780/oscp/fp/2.0\","
	  "\"csms_token\":\"RbgFcIwiEBGx...\",\"elmo_token\":\"54rPvYjJJ8XL...\",\"initial_token_in_force\":false,"
	  "\"now\":\"2026-12-01T13:30:08.101+08:00\",\"clock_offset_seconds\":-34964.776,"
	  "\"stations\":[{\"group_id\":\"" G "\",\"own\":true,\"assign_kw\":390.0},"
	  "{\"group_id\":\"B6734_AE0100_00848821001\",\"own\":true,\"assign_kw\":100.0},"
	  "{\"group_id\":\"Q1907_CC4701_18364851681\",\"own\":false,\"assign_kw\":100.0}],"
	  "\"negotiations\":{\"" G "\":[{\"day\":\"2026-12-02\",\"status\":\"EXTRA_REPLY_EDIT\","
	  "\"assigned\":[120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120,120],"
	  "\"requested\":[150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150,150],"
	  "\"request_id\":\"N5DMOHYOUMFBI9Q9J8KIQOV5AA0RMOIP\",\"reply\":null}],"
	  "\"B6734_AE0100_00848821001\":[],\"Q1907_CC4701_18364851681\":[]},"
	  "\"last_measurements\":{},\"fault\":null,\"messages\":3,\"callbacks\":3}" },
	{ "GET", "/sim/messages", "path=P (exact, or its last segments), since=ID (ids above it)",
	  "What the CSMS sent to ELMO's OSCP API, oldest first, with ELMO's answer: status null and "
	  "dropped true when a fault closed the connection; fault true when the fault rule applied.",
	  NULL, 200,
	  "[{\"id\":3,\"received_at\":\"2026-12-01T13:30:11.504+08:00\",\"method\":\"POST\","
	  "\"path\":\"/oscp/2.0/adjust_group_capacity_forecast\",\"headers\":{\"host\":\"127.0.0.1:8090\","
	  "\"user-agent\":\"elmo_oscp/0.1.0\",\"accept\":\"*/*\",\"content-type\":\"application/json\","
	  "\"authorization\":\"Token 54rPvYjJJ8XL...\",\"x-request-id\":\"N5DMOHYOUMFBI9Q9J8KIQOV5AA0RMOIP\","
	  "\"content-length\":\"3226\"},\"raw_body\":\"{\\\"group_id\\\":\\\"" G "\\\",...}\","
	  "\"body\":{\"group_id\":\"" G "\",\"type\":\"CONSUMPTION\",\"forecasted_blocks\":[{\"capacity\":150,"
	  "\"phase\":\"ALL\",\"unit\":\"KW\",\"start_time\":\"2026-12-02T00:00:00.000+08:00\","
	  "\"end_time\":\"2026-12-02T01:00:00.000+08:00\"}]},"
	  "\"status\":204,\"response_body\":null,\"dropped\":false,\"fault\":false}]" },
	{ "DELETE", "/sim/messages", NULL, "Forget the recorded messages.", NULL, 204, NULL },
	{ "GET", "/sim/callbacks", "kind=K (register, handshake, assign, reply, emergency, trigger_...), path=P, since=ID",
	  "What ELMO sent to the CSMS, oldest first: headers, body, state (queued, sending, delivered, "
	  "failed), the CSMS's answer and timing.  elmo_would_crash is true when the CSMS failed a register "
	  "or handshake: the real ELMO process dies there.",
	  NULL, 200,
	  "[{\"id\":1,\"kind\":\"register\",\"method\":\"POST\",\"url\":\"http://127.0.0.1:8780/oscp/fp/2.0/register\","
	  "\"headers\":{\"accept\":\"application/json, text/plain, */*\",\"content-type\":\"application/json\","
	  "\"authorization\":\"Token RbgFcIwiEBGx...\",\"x-request-id\":\"CJHEEKM8VO33AJIRBSXBWM7C3HPCUSUV\"},"
	  "\"body\":\"{\\\"token\\\":\\\"54rPvYjJJ8XL...\\\",\\\"version_url\\\":[{\\\"base_url\\\":\\\"/oscp/2.0\\\","
	  "\\\"version\\\":\\\"2.0\\\"}]}\",\"state\":\"delivered\",\"queued_at\":\"2026-12-01T13:30:00.045+08:00\","
	  "\"delay_ms\":20,\"sent_at\":\"2026-12-01T13:30:00.065+08:00\",\"finished_at\":\"2026-12-01T13:30:00.072+08:00\","
	  "\"status\":204,\"ok\":true,\"error\":null,\"response_body\":null,\"duration_ms\":7,\"elmo_would_crash\":false}]" },
	{ "DELETE", "/sim/callbacks", NULL, "Forget the recorded callbacks.", NULL, 204, NULL },
	{ "GET", "/sim/clock", NULL,
	  "The simulated clock in ELMO's zone, its offset from the real clock, and the real clock.",
	  NULL, 200,
	  "{\"now\":\"2026-12-01T13:30:00.012+08:00\",\"offset_seconds\":-34964.776,\"tz_offset\":\"+08:00\","
	  "\"real_now\":\"2026-12-01T23:12:44.788+08:00\"}" },
	{ "POST", "/sim/clock", NULL,
	  "Set the simulated clock; it runs on from there.  One of: now (RFC 3339; without an offset, "
	  "ELMO's zone), offset_seconds (from the real clock), advance_seconds (from where it is).  "
	  "The 10:00 and 16:00 events fire when the running clock passes them, not when it is set past "
	  "them: set it a few seconds before.  POST /sim/reset puts it back where --clock started it, or on "
	  "the real clock.",
	  "{\"now\":\"2026-12-01T13:30:00+08:00\"}", 200,
	  "{\"now\":\"2026-12-01T13:30:00.000+08:00\",\"offset_seconds\":-34964.776,\"tz_offset\":\"+08:00\","
	  "\"real_now\":\"2026-12-01T23:12:44.776+08:00\"}" },
	{ "GET", "/sim/config", NULL, "The settings POST /sim/config changes (the flags of the same names).",
	  NULL, 200,
	  "{\"register_callback_first\":false,\"register_callback_twice\":false,\"register_delay_ms\":20,"
	  "\"handshake_delay_ms\":5000,\"callback_timeout_ms\":20000,\"schedule\":true,\"allow_local_urls\":true,"
	  "\"exit_on_callback_failure\":false,\"initial_token\":\"ELMO-TESTBED-TOKEN\"}" },
	{ "POST", "/sim/config", NULL,
	  "Change settings at run time; any of register_callback_first, register_callback_twice, schedule, "
	  "allow_local_urls, exit_on_callback_failure (booleans), register_delay_ms, handshake_delay_ms, "
	  "callback_timeout_ms (whole numbers >= 0).  Answers all settings.",
	  "{\"handshake_delay_ms\":200,\"schedule\":false}", 200,
	  "{\"register_callback_first\":false,\"register_callback_twice\":false,\"register_delay_ms\":20,"
	  "\"handshake_delay_ms\":200,\"callback_timeout_ms\":20000,\"schedule\":false,\"allow_local_urls\":true,"
	  "\"exit_on_callback_failure\":false,\"initial_token\":\"ELMO-TESTBED-TOKEN\"}" },
	{ "POST", "/sim/fault", NULL,
	  "Arm the fault rule (one at a time; a new one replaces it): the next count requests to ELMO's "
	  "OSCP API (those to path only, when given) are delayed by delay_ms, then answered status (with "
	  "message, or ELMO's usual one), or dropped (the connection closed, no answer).  count defaults "
	  "to 1: a fault without a count applies ONCE; -1 applies until DELETE /sim/fault.  Give at least "
	  "one of status, delay_ms, drop.",
	  "{\"status\":500,\"count\":2,\"path\":\"update_group_measurements\"}", 200,
	  "{\"status\":500,\"delay_ms\":0,\"drop\":false,\"count\":2,\"path\":\"update_group_measurements\","
	  "\"message\":null}" },
	{ "DELETE", "/sim/fault", NULL, "Disarm the fault rule.", NULL, 204, NULL },
	{ "POST", "/sim/assign", NULL,
	  "ELMO's day-ahead assignment now (what the schedule sends at 10:00): opens the day's "
	  "negotiation and sends the forecast to the registered CSMS.  group_id (default: every station of "
	  "this CSMS), day (YYYY-MM-DD, default tomorrow), capacity (kW every hour) or capacities (24 "
	  "values) (default: the station's --stations kW), send (default true; false only opens the "
	  "negotiation).",
	  "{\"group_id\":\"" G "\",\"day\":\"2026-12-02\",\"capacity\":120}", 200,
	  "{\"day\":\"2026-12-02\",\"group_ids\":[\"" G "\"],\"sent\":true,\"callback_ids\":[3]}" },
	{ "POST", "/sim/reply", NULL,
	  "ELMO's reply to the station's adjust request for day (default tomorrow) now (what the schedule "
	  "sends at 16:00): what was asked, rounded to whole kW, or capacity / capacities instead.  409 "
	  "when there is no request to answer (and no capacity given) or no CSMS registered.",
	  "{\"group_id\":\"" G "\",\"day\":\"2026-12-02\"}", 200,
	  "{\"day\":\"2026-12-02\",\"callback_ids\":[5]}" },
	{ "POST", "/sim/emergency", NULL,
	  "An emergency forecast now: one block of capacity kW (whole, > 0) from start to end (RFC 3339; "
	  "default: the next whole minute at least 15 minutes ahead, to the end of that local day), as "
	  "ELMO sends it.  ELMO's own rules (start at least 15 minutes ahead, end by midnight) are kept "
	  "unless force is true; tz (+HH:MM) writes the timestamps in another offset.",
	  "{\"group_id\":\"" G "\",\"capacity\":40,\"start\":\"2026-12-01T16:15:00+08:00\","
	  "\"end\":\"2026-12-02T00:00:00+08:00\"}", 200,
	  "{\"callback_id\":4,\"body\":\"{\\\"group_id\\\":\\\"" G "\\\",\\\"type\\\":\\\"CONSUMPTION\\\","
	  "\\\"forecasted_blocks\\\":[{\\\"capacity\\\":40,\\\"phase\\\":\\\"ALL\\\",\\\"unit\\\":\\\"KW\\\","
	  "\\\"start_time\\\":\\\"2026-12-01T16:15:00.000+08:00\\\",\\\"end_time\\\":\\\"2026-12-02T00:00:00.000+08:00\\\"}]}\"}" },
	{ "POST", "/sim/admin/reset-token", NULL,
	  "What ELMO's administrator does for a locked-out CSMS: ELMO's token becomes token (a new initial "
	  "token) and the CSMS is disconnected until it registers with it.",
	  "{\"token\":\"NEW-INITIAL-TOKEN\"}", 204, NULL },
	{ "POST", "/sim/reset", NULL,
	  "Back to the start-up state: registration, negotiations, measurements, records, fault, and the "
	  "clock (at the --clock it started with, or the real clock); callbacks still queued are dropped.  "
	  "Settings are kept.",
	  NULL, 204, NULL },
};

const api_doc_t *api_doc_find(const char *method, const char *path)
{
	for (size_t i = 0; i < sizeof docs / sizeof *docs; i++)
		if (!strcmp(docs[i].method, method) && !strcmp(docs[i].path, path))
			return &docs[i];
	return NULL;
}

/* summary wrapped at width columns, indented */
static void wrap(FILE *f, const char *text, int indent, int width)
{
	const char *p = text;
	while (*p) {
		const char *end = p, *sp = NULL;
		while (*end && end - p < width - indent) {
			if (*end == ' ')
				sp = end;
			end++;
		}
		if (*end && sp)
			end = sp;
		fprintf(f, "%*s%.*s\n", indent, "", (int)(end - p), p);
		p = end;
		while (*p == ' ')
			p++;
	}
}

void api_doc_print(FILE *f)
{
	fprintf(f, "elmo-sim's control API (no authentication: bind it to loopback).  Bodies are JSON objects.\n"
		   "Examples from one simulated day, 2026-12-01, with the clock at 13:30 (+08:00).\n");
	for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
		const api_doc_t *d = &docs[i];
		fprintf(f, "\n%s %s%s%s\n", d->method, d->path, d->query ? "?" : "", d->query ? d->query : "");
		wrap(f, d->summary, 4, 100);
		if (d->request)
			fprintf(f, "    request: %s\n", d->request);
		fprintf(f, "    answer:  %d%s%s\n", d->status, d->answer ? " " : "", d->answer ? d->answer : "");
	}
}

static json_t *json_or_null(const char *s)
{
	json_t *j = s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
	return j ? j : json_null();
}

json_t *api_doc_json(void)
{
	json_t *a = json_array();
	for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
		const api_doc_t *d = &docs[i];
		json_array_append_new(a, json_pack("{s:s,s:s,s:o,s:s,s:o,s:i,s:o}", "method", d->method, "path", d->path,
						   "query", d->query ? json_string(d->query) : json_null(), "summary",
						   d->summary, "request", json_or_null(d->request), "status", d->status,
						   "answer", json_or_null(d->answer)));
	}
	return a;
}

resp_t api_refusal(const char *method, const char *path, const char *problem)
{
	const api_doc_t *d = api_doc_find(method, path);
	json_t *o = error_object(400, json_string(problem));
	if (d) {
		json_object_set_new(o, "expected", json_or_null(d->request));
		json_object_set_new(o, "usage", json_string(d->summary));
	}
	return R(400, dump_steal(o));
}
