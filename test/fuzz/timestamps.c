/*
 * timestamps.c — RFC 3339 date-times: a strict reader (the oracle's notion of
 * a valid timestamp, and the instant it names), a writer, and a stock of
 * strings that are not RFC 3339 or are unusual but valid.
 */
#include "fuzz.h"
#include "timestamps.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC) */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t		era = (y >= 0 ? y : y - 399) / 400;
	int64_t		yoe = y - era * 400;
	int64_t		doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t		doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int *y, int *m, int *d)
{
	z += 719468;
	int64_t		era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t		doe = z - era * 146097;
	int64_t		yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t		doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t		mp = (5 * doy + 2) / 153;

	*d = (int) (doy - (153 * mp + 2) / 5 + 1);
	*m = (int) (mp < 10 ? mp + 3 : mp - 9);
	*y = (int) (yoe + era * 400 + (*m <= 2));
}

static int
days_in_month(int y, int m)
{
	static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool		leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : dm[m - 1];
}

static bool
digits(const char *s, int n, int *out)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/*
 * RFC 3339 section 5.6 date-time, with its note's latitudes: "T"/"t" or a
 * space between date and time, "Z"/"z".  Seconds may be 60 (a leap second;
 * read as the next minute's first instant, as PostgreSQL does).  On success
 * *us holds microseconds since the Unix epoch (fractions rounded to the
 * microsecond).
 */
bool
rfc3339_parse(const unsigned char *p, size_t n, int64_t *us)
{
	char		s[64];
	int			Y, M, D, h, mi, sec, oh = 0, om = 0, sign = 0;
	size_t		i;
	double		frac = 0;

	if (n < 20 || n >= sizeof(s))
		return false;
	memcpy(s, p, n);
	s[n] = '\0';
	if (strlen(s) != n)
		return false;			/* a NUL inside */
	if (!digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) || s[7] != '-' ||
		!digits(s + 8, 2, &D) || !(s[10] == 'T' || s[10] == 't' || s[10] == ' ') ||
		!digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
		!digits(s + 17, 2, &sec))
		return false;
	if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || mi > 59 || sec > 60)
		return false;
	i = 19;
	if (s[i] == '.')
	{
		size_t		start = ++i;

		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return false;
		{
			char		f[40];

			snprintf(f, sizeof(f), "0.%.*s", (int) (i - start > 30 ? 30 : i - start), s + start);
			frac = strtod(f, NULL);
		}
	}
	if (i < n && (s[i] == 'Z' || s[i] == 'z') && i + 1 == n)
		sign = 0;
	else if (i < n && (s[i] == '+' || s[i] == '-') && i + 6 == n &&
			 digits(s + i + 1, 2, &oh) && s[i + 3] == ':' && digits(s + i + 4, 2, &om) &&
			 oh <= 23 && om <= 59)
		sign = s[i] == '-' ? -1 : 1;
	else
		return false;
	{
		int64_t		t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec;

		t -= sign * (oh * 3600 + om * 60);
		*us = t * 1000000 + (int64_t) rint(frac * 1000000.0);
	}
	return true;
}

/* an RFC 3339 string for an instant, in a given offset (minutes), with `fd` fraction digits */
void
rfc3339_format(char *out, size_t size, int64_t us, int off_min, int fd, char sep, bool z)
{
	int64_t		secs = (us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000));
	int64_t		sub = us - secs * 1000000;
	int64_t		local = secs + off_min * 60;
	int64_t		days = (local >= 0 ? local / 86400 : -((-local + 86399) / 86400));
	int64_t		sod = local - days * 86400;
	int			y, m, d;
	char		frac[16] = "";

	civil_from_days(days, &y, &m, &d);
	if (fd > 0)
	{
		char		all[8];

		snprintf(all, sizeof(all), "%06lld", (long long) sub);
		snprintf(frac, sizeof(frac), ".%.*s%.*s", fd > 6 ? 6 : fd, all, fd > 6 ? fd - 6 : 0, "000");
	}
	if (z && off_min == 0)
		snprintf(out, size, "%04d-%02d-%02d%c%02d:%02d:%02d%sZ", y, m, d, sep,
				 (int) (sod / 3600), (int) (sod / 60 % 60), (int) (sod % 60), frac);
	else
		snprintf(out, size, "%04d-%02d-%02d%c%02d:%02d:%02d%s%c%02d:%02d", y, m, d, sep,
				 (int) (sod / 3600), (int) (sod / 60 % 60), (int) (sod % 60), frac,
				 off_min < 0 ? '-' : '+', abs(off_min) / 60, abs(off_min) % 60);
}

/* Strings that are not RFC 3339 date-times; @D@ is replaced by the block's date. */
static const char *const not_rfc3339[] = {
	"@D@T00:00:00 EST+08:00", "@D@T00:00:00.000+08:0<", "@D@T24:00:00.000+08:00",
	"0001-11-26T00:00:00.000+08:00 BC", "@D@T00:00:00+08:00 BC", "@D@T00:00:00.000 +08:00",
	"@D@T00:00:00.000+0800", "@D@T00:00:00.000+08", "@D@T00:00:00", "@D@T00:00:00.000",
	"@D@T00:00", "@D@", "@D@T00:00:00.000+24:00", "@D@T00:00:00.000+08:60",
	"2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-31T00:00:00Z", "2027-02-29T00:00:00Z",
	"@D@T00:60:00Z", "@D@T00:00:61Z", "@D@T00:00:00.Z", "@D@T00:00:00,000Z", "20261126T000000Z",
	"@D@T00:00:00.000+08:00:00", "26-11-26T00:00:00Z", "+@D@T00:00:00Z", "1@D@T00:00:00Z",
	" @D@T00:00:00Z", "@D@T00:00:00Z ", "@D@T00:00:00ZZ", "@D@T00:00:00Z+08:00",
	"@D@T00:00:00.000+08:00[Asia/Taipei]", "@D@T00:00:00 Asia/Taipei", "@D@T00:00:00 CST",
	"@D@T00:00:00 UTC", "@D@T00:00:00 GMT+8", "@D@T00:00:00+08:00 EST", "@D@T00:00:00 PST8PDT",
	"epoch", "now", "today", "tomorrow", "yesterday", "infinity", "-infinity", "allballs",
	"J2461006", "Thu Nov 26 00:00:00 2026 +0800", "@D@ 00:00:00+08", "2026-W48-4T00:00:00Z",
	"2026-330T00:00:00Z", "@D@T0:0:0Z", "2026-1-26T00:00:00Z", "@D@T00:00:00.000+8:00",
	"@D@T00:00:00.+08:00", "@D@TT00:00:00Z", "@D@T00:00:00.000\xe2\x88\x92" "08:00",
	"\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x96-11-26T00:00:00Z", "@D@T00:00:00.000+08:00\n",
	"@D@\tT00:00:00Z", "@D@T00:00:00-", "@D@T00:00:00+", "", "T", "Z", "@D@T00:00:00 z",
	"@D@T00:00:00.000 Z", "@D@T00:00:00 +0800", "@D@T00:00:00.000+08:00.000", "10000-01-01T00:00:00Z",
	"-0001-01-01T00:00:00Z", "@D@T00:00:00.000+08:00 AD", "@D@T12:00:00 PM+08:00",
	"@D@T00:00:00.0000000000000000000000000000000001+08:00x", "@D@ T00:00:00Z",
	"2026-11-26T00:00:00.000+08:00 2026-11-27T00:00:00.000+08:00", "@D@T00:00:00+14:60",
	"@D@T25:00:00Z", "@D@T-1:00:00Z", "2026-00-10T00:00:00Z", "2026-11-00T00:00:00Z",
	"@D@T00:00:00.000 BC+08:00", "@D@T00:00:00.000 J+08:00", "@D@T00:00:00.000 EST+08:00",
	"@D@T00:00:00.000 AD+08:00", "@D@T00:00:00.000 z+08:00",
};

/* Valid, unusual forms (the instant is checked by the oracle). */
static const char *const odd_but_valid[] = {
	"@D@T00:00:00Z", "@D@t00:00:00z", "@D@ 00:00:00+08:00", "@D@T00:00:00-00:00",
	"@D@T00:00:00.1+08:00", "@D@T00:00:00.123456789+08:00", "@D@T23:59:60Z",
	"@D@T00:00:00+14:00", "@D@T00:00:00-12:00", "@D@T00:00:00+05:45", "@D@T00:00:00+23:59",
	"@D@T00:00:00.999999+08:00", "@D@T00:00:00.9999995+08:00", "1970-01-01T00:00:00Z",
	"9999-12-31T23:59:59.999999Z", "0000-01-01T00:00:00Z", "2000-02-29T12:00:00+08:00",
	"2100-02-28T00:00:00Z", "1900-03-01T00:00:00Z", "0001-01-01T00:00:00+00:00",
	"@D@T00:00:00.000000000000000000000000000001Z",
};

static void
put_date(char *out, size_t size, const char *tmpl, const char *date)
{
	const char *at = strstr(tmpl, "@D@");

	if (at == NULL)
		snprintf(out, size, "%s", tmpl);
	else
		snprintf(out, size, "%.*s%s%s", (int) (at - tmpl), tmpl, date, at + 3);
}

/* a mutated timestamp for a block dated `date` (YYYY-MM-DD), written to out */
void
timestamp_mutation(Rng *r, const char *orig, const char *date, char *out, size_t size)
{
	int			k = (int) rng_below(r, 10);

	if (k < 5)
		put_date(out, size, PICK(r, not_rfc3339), date);
	else if (k < 7)
		put_date(out, size, PICK(r, odd_but_valid), date);
	else
	{
		/* a small edit of the original: a digit changed, a character dropped or added */
		size_t		n;
		static const char pool[] = "0123456789-:.+TZtz ";

		snprintf(out, size, "%s", orig);
		n = strlen(out);		/* an earlier mutation may have made it longer than out */
		if (n == 0)
			return;
		{
			size_t		at = rng_below(r, (uint32_t) n);

			switch (rng_below(r, 3))
			{
				case 0:
					out[at] = pool[rng_below(r, sizeof(pool) - 1)];
					break;
				case 1:
					memmove(out + at, out + at + 1, n - at);
					break;
				default:
					if (n + 2 < size)
					{
						memmove(out + at + 1, out + at, n - at + 1);
						out[at] = pool[rng_below(r, sizeof(pool) - 1)];
					}
			}
		}
	}
}
