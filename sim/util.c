/*
 * elmo-sim: time, random ids, logging and JSON helpers.
 */
#include "sim.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t real_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sim_now_ms(void)
{
	return real_now_ms() + __atomic_load_n(&st.clock_offset_ms, __ATOMIC_SEQ_CST);
}

static int64_t floordiv(int64_t a, int64_t b)
{
	int64_t q = a / b;
	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* days since 1970-01-01 of a proleptic Gregorian date */
static int64_t days_from_ymd(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;
	y -= m <= 2;
	era = floordiv(y, 400);
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void ymd_from_days(int64_t z, int *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;
	z += 719468;
	era = floordiv(z, 146097);
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = (int)(yoe + era * 400 + (*m <= 2));
}

void fmt_time(int64_t ms, int tz_s, char out[40])
{
	int64_t l = ms + (int64_t)tz_s * 1000;
	int64_t days = floordiv(l, 86400000);
	int64_t rem = l - days * 86400000;
	int y, mo, d, a = tz_s < 0 ? -tz_s : tz_s;
	ymd_from_days(days, &y, &mo, &d);
	snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02d:%02d", y, mo, d,
		 (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60),
		 (int)(rem % 1000), tz_s < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}

void fmt_day(int64_t ms, int tz_s, char out[11])
{
	int y, mo, d;
	char tmp[48];
	ymd_from_days(floordiv(ms + (int64_t)tz_s * 1000, 86400000), &y, &mo, &d);
	snprintf(tmp, sizeof tmp, "%04d-%02d-%02d", y, mo, d);
	memcpy(out, tmp, 10);
	out[10] = '\0';
}

int64_t local_midnight(int64_t ms, int tz_s)
{
	int64_t l = ms + (int64_t)tz_s * 1000;
	return floordiv(l, 86400000) * 86400000 - (int64_t)tz_s * 1000;
}

static int digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return 0;
		*v = *v * 10 + (s[i] - '0');
	}
	return 1;
}

/*
 * RFC 3339 date-time as zod's datetime({offset:true}) takes it:
 * YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|+HHMM|+HH). Seconds are required
 * unless require_offset is 0 (then a missing offset means default_tz_s).
 */
int parse_time(const char *s, int require_offset, int default_tz_s, int64_t *ms)
{
	int y, mo, d, h, mi, se = 0, frac = 0, tz = default_tz_s, n;
	const char *p;
	if (!s || strlen(s) < 16)
		return -1;
	if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
	    !digits(s + 8, 2, &d) || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
	    !digits(s + 14, 2, &mi))
		return -1;
	p = s + 16;
	if (*p == ':') {
		if (!digits(p + 1, 2, &se))
			return -1;
		p += 3;
		if (*p == '.') {
			p++;
			for (n = 0; isdigit((unsigned char)p[n]); n++)
				if (n < 3)
					frac = frac * 10 + (p[n] - '0');
			if (n == 0)
				return -1;
			for (int k = n; k < 3; k++)
				frac *= 10;
			p += n;
		}
	} else if (require_offset)
		return -1;
	if (*p == 'Z') {
		tz = 0;
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om = 0, sign = *p == '-' ? -1 : 1;
		if (!digits(p + 1, 2, &oh))
			return -1;
		p += 3;
		if (*p == ':')
			p++;
		if (isdigit((unsigned char)*p)) {
			if (!digits(p, 2, &om))
				return -1;
			p += 2;
		}
		if (oh > 23 || om > 59)
			return -1;
		tz = sign * (oh * 3600 + om * 60);
	} else if (require_offset)
		return -1;
	if (*p)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59)
		return -1;
	*ms = ((days_from_ymd(y, mo, d) * 86400 + h * 3600 + mi * 60 + se) - tz) * 1000 + frac;
	return 0;
}

int parse_day(const char *s, int tz_s, int64_t *midnight_ms)
{
	int y, mo, d;
	if (!s || strlen(s) != 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > 31)
		return -1;
	*midnight_ms = days_from_ymd(y, mo, d) * 86400000 - (int64_t)tz_s * 1000;
	return 0;
}

/* "+08:00", "+0800", "8", "-05:30", "+8" */
int parse_tz(const char *s, int *tz_s)
{
	int sign = 1, h = 0, m = 0, n;
	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	for (n = 0; isdigit((unsigned char)s[n]); n++)
		;
	if (n == 4 && !s[4]) {
		digits(s, 2, &h);
		digits(s + 2, 2, &m);
	} else if (n >= 1 && n <= 2) {
		digits(s, n, &h);
		if (s[n] == ':') {
			if (!digits(s + n + 1, 2, &m) || s[n + 3])
				return -1;
		} else if (s[n])
			return -1;
	} else
		return -1;
	if (h > 14 || m > 59)
		return -1;
	*tz_s = sign * (h * 3600 + m * 60);
	return 0;
}

void rand_chars(char *out, size_t n, const char *alphabet)
{
	size_t k = strlen(alphabet), i = 0;
	unsigned char buf[256];
	while (i < n) {
		ssize_t got = getrandom(buf, sizeof buf, 0);
		if (got <= 0)
			continue;
		for (ssize_t j = 0; j < got && i < n; j++) {
			if (buf[j] >= 256 - 256 % k)	/* reject to stay unbiased */
				continue;
			out[i++] = alphabet[buf[j] % k];
		}
	}
	out[n] = '\0';
}

void new_request_id(char out[REQUEST_ID_LEN + 1])
{
	rand_chars(out, REQUEST_ID_LEN, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

/* never log a whole token: its first 4 characters and its length */
void mask_token(const char *tok, char out[48])
{
	size_t n;
	if (!tok) {
		snprintf(out, 48, "-");
		return;
	}
	n = strlen(tok);
	if (n <= 8)
		snprintf(out, 48, "***(%zu)", n);
	else
		snprintf(out, 48, "%.4s***(%zu)", tok, n);
}

void logmsg(const char *fmt, ...)
{
	static pthread_mutex_t logmu = PTHREAD_MUTEX_INITIALIZER;
	char ts[40], line[2048];
	va_list ap;
	fmt_time(sim_now_ms(), cfg.tz_offset_s, ts);
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&logmu);
	fprintf(stderr, "elmo-sim %s %s\n", ts, line);
	pthread_mutex_unlock(&logmu);
}

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

const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status >= 500 ? "Internal Server Error" : "Error";
	}
}

/* ELMO's (NestJS) error body: {"message":...,"error":"<reason>","statusCode":N} */
char *error_body(int status, json_t *message)
{
	json_t *o = json_object();
	json_object_set_new(o, "message", message);
	json_object_set_new(o, "error", json_string(reason_phrase(status)));
	json_object_set_new(o, "statusCode", json_integer(status));
	return dump_steal(o);
}

char *error_str(int status, const char *message)
{
	return error_body(status, json_string(message));
}

resp_t R(int status, char *body)
{
	resp_t r = { status, body, 0 };
	return r;
}

/* a JSON number holding a whole value */
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
