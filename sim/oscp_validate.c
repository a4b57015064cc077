/*
 * ELMO's checks of what a CSMS sends, in its order and its words (ELMO
 * validates with zod: each problem is "<path>: <text>").
 */
#include "oscp_validate.h"

#include "caltime.h"
#include "checks.h"
#include "config.h"

#include <stdio.h>
#include <string.h>

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
static int base_url_ok(const char *u, int allow_local)
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

static const char *const PHASES[] = { "UNKNOWN", "ONE", "TWO", "THREE", "ALL", NULL };
static const char *const EUNITS[] = { "WH", "KWH", NULL };
static const char *const DIRECTIONS[] = { "NET", "IMPORT", "EXPORT", NULL };
static const char *const ETYPES[] = { "FLEXIBLE", "NONFLEXIBLE", "TOTAL", NULL };
static const char *const MCONF[] = { "CONTINUOUS", "INTERMITTENT", NULL };

/* element i of the array a when it is an object, else NULL (the problem noted) */
static json_t *object_at(json_t *e, json_t *a, const char *base, size_t i)
{
	char p[128];
	json_t *x = json_array_get(a, i);
	sub(p, sizeof p, base, i, NULL);
	return want_type(e, x, p, "object") ? x : NULL;
}

/* forecasted block i; phase and unit are not checked by ELMO */
static int want_block(json_t *e, json_t *blocks, const char *base, size_t i, int64_t *s, int64_t *en, double *cap)
{
	json_t *b = object_at(e, blocks, base, i);
	char p[128];
	int ok = 1;
	if (!b)
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

static void want_version_url(json_t *e, json_t *x, size_t i)
{
	json_t *v = json_object_get(x, "version"), *u = json_object_get(x, "base_url");
	char p[128];
	sub(p, sizeof p, "version_url", i, "version");
	if (want_string(e, v, p, 0) && strcmp(json_string_value(v), "2.0") != 0)
		err(e, p, "Version must be 2.0");
	sub(p, sizeof p, "version_url", i, "base_url");
	if (want_string(e, u, p, 0) && !base_url_ok(json_string_value(u), cfg.allow_local_urls))
		err(e, p, "base_url must be a valid URL starting with https:// and must not end with /");
}

json_t *validate_register(json_t *b)
{
	json_t *e = json_array(), *vu = json_object_get(b, "version_url"), *x;
	want_string(e, json_object_get(b, "token"), "token", 1);
	if (!want_type(e, vu, "version_url", "array"))
		return e;
	for (size_t i = 0; i < json_array_size(vu); i++)
		if ((x = object_at(e, vu, "version_url", i)))
			want_version_url(e, x, i);
	if (json_array_size(vu) != 1)
		err(e, "version_url", "Only one version url is allowed");
	return e;
}

json_t *validate_measurements(json_t *b)
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
		json_t *x = object_at(e, m, "measurements", i);
		if (!x)
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
json_t *validate_adjust(json_t *b, int64_t starts[24], double caps[24])
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
		if (!want_block(e, fb, "forecasted_blocks", i, &a, &z, &c))
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

json_t *validate_compliance(json_t *b)
{
	json_t *e = json_array(), *fb;
	want_string(e, json_object_get(b, "message"), "message", 1);
	fb = json_object_get(b, "forecasted_blocks");
	if (fb && want_type(e, fb, "forecasted_blocks", "array"))
		for (size_t i = 0; i < json_array_size(fb); i++)
			want_block(e, fb, "forecasted_blocks", i, NULL, NULL, NULL);
	return e;
}

json_t *validate_ack(json_t *b)
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
