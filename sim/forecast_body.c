/*
 * Forecast bodies, key for key as ELMO sends them.
 */
#include "forecast_body.h"

#include "caltime.h"
#include "config.h"
#include "json_util.h"

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
		json_object_set_new(bl, "capacity", json_kw(caps[i]));
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
		s[h] = day_start_ms + h * HOUR_MS;
		e[h] = s[h] + HOUR_MS;
	}
	return forecast_body(group, 24, s, e, caps, cfg.tz_offset_s);
}
