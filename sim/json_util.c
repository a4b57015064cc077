/*
 * jansson helpers.
 */
#include "json_util.h"

char *dump(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
}

char *dump_steal(json_t *j)
{
	char *s = dump(j);
	json_decref(j);
	return s;
}

int json_whole(json_t *v, long long *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 1;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (d == (double)(long long)d) {
			*out = (long long)d;
			return 1;
		}
	}
	return 0;
}

json_t *json_kw(double v)
{
	return v == (double)(long long)v ? json_integer((long long)v) : json_real(v);
}

json_t *json_kw24(const double c[24])
{
	json_t *a = json_array();
	for (int h = 0; h < 24; h++)
		json_array_append_new(a, json_kw(c[h]));
	return a;
}
