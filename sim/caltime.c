/*
 * Calendar time at a fixed UTC offset (proleptic Gregorian, no leap seconds).
 */
#include "caltime.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

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

void fmt_tz(int tz_s, char out[8])
{
	int a = tz_s < 0 ? -tz_s : tz_s;
	snprintf(out, 8, "%c%02d:%02d", tz_s < 0 ? '-' : '+', a / 3600 % 100, a / 60 % 60);
}

void fmt_time(int64_t ms, int tz_s, char out[40])
{
	int64_t l = ms + (int64_t)tz_s * 1000;
	int64_t days = floordiv(l, DAY_MS);
	int64_t rem = l - days * DAY_MS;
	int y, mo, d;
	char tz[8];
	ymd_from_days(days, &y, &mo, &d);
	fmt_tz(tz_s, tz);
	snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%s", y, mo, d, (int)(rem / HOUR_MS),
		 (int)(rem / 60000 % 60), (int)(rem / 1000 % 60), (int)(rem % 1000), tz);
}

void fmt_day(int64_t ms, int tz_s, char out[11])
{
	int y, mo, d;
	char tmp[48];
	ymd_from_days(floordiv(ms + (int64_t)tz_s * 1000, DAY_MS), &y, &mo, &d);
	snprintf(tmp, sizeof tmp, "%04d-%02d-%02d", y, mo, d);
	memcpy(out, tmp, 10);
	out[10] = '\0';
}

int64_t local_midnight(int64_t ms, int tz_s)
{
	int64_t l = ms + (int64_t)tz_s * 1000;
	return floordiv(l, DAY_MS) * DAY_MS - (int64_t)tz_s * 1000;
}

int local_hour(int64_t ms, int tz_s)
{
	return (int)((ms - local_midnight(ms, tz_s)) / HOUR_MS);
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
	*midnight_ms = days_from_ymd(y, mo, d) * DAY_MS - (int64_t)tz_s * 1000;
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

/* "13:30" or "13:30:15" */
int parse_time_of_day(const char *s, int64_t *ms_after_midnight)
{
	int h, m, sec = 0;
	size_t n = strlen(s);
	if ((n != 5 && n != 8) || !digits(s, 2, &h) || s[2] != ':' || !digits(s + 3, 2, &m) ||
	    (n == 8 && (s[5] != ':' || !digits(s + 6, 2, &sec))) || h > 23 || m > 59 || sec > 59)
		return -1;
	*ms_after_midnight = ((int64_t)h * 3600 + m * 60 + sec) * 1000;
	return 0;
}
