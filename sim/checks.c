/*
 * Field checks that answer as zod does (ELMO validates with zod): a problem
 * is "<path>: <text>" in zod's words, appended to an array.
 */
#include "checks.h"

#include "caltime.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void err(json_t *e, const char *path, const char *fmt, ...)
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

const char *jtype(json_t *v)
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

int want_type(json_t *e, json_t *v, const char *path, const char *type)
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

int want_string(json_t *e, json_t *v, const char *path, size_t minlen)
{
	if (!want_type(e, v, path, "string"))
		return 0;
	if (json_string_length(v) < minlen) {
		err(e, path, "String must contain at least %zu character(s)", minlen);
		return 0;
	}
	return 1;
}

int want_number(json_t *e, json_t *v, const char *path, int nonneg)
{
	if (!want_type(e, v, path, "number"))
		return 0;
	if (nonneg && json_number_value(v) < 0) {
		err(e, path, "Number must be greater than or equal to 0");
		return 0;
	}
	return 1;
}

int want_enum(json_t *e, json_t *v, const char *path, const char *const *vals, int optional)
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

int want_datetime(json_t *e, json_t *v, const char *path, int optional, int64_t *ms)
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

void sub(char *out, size_t n, const char *base, size_t i, const char *key)
{
	snprintf(out, n, "%s.%zu%s%s", base, i, key ? "." : "", key ? key : "");
}
