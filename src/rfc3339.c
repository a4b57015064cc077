/*
 * rfc3339.c — _elmo_is_rfc3339(text): whether a text is an RFC 3339
 * date-time with an offset or Z, as every timestamp from ELMO must be.
 *
 * PostgreSQL's timestamptz input is lenient by design: it reads
 * "2026-11-26T00:00:00 EST+08:00", "+08:0<", hour 24 or a trailing "BC" and
 * gives an instant, sometimes with another offset than the text shows.  So
 * the form is checked here, strictly and fast (every block of every forecast
 * has two timestamps), and the instant is still read by PostgreSQL's own
 * input function; what the form cannot say (February 30, year 0) it refuses.
 *
 *   YYYY-MM-DD (T|t|space) hh:mm:ss [.fraction] (Z|z|+hh:mm|-hh:mm)
 *   month 01-12, day 01-31, hour 00-23, minute 00-59, second 00-60 (a leap
 *   second), offset hour 00-23, offset minute 00-59.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "compat.h"

PG_FUNCTION_INFO_V1(elmo_is_rfc3339);

/* n digits at s, their value (in *v) within [min, max] */
static bool
number(const char *s, int n, int min, int max, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		*v = *v * 10 + (s[i] - '0');
	}
	return *v >= min && *v <= max;
}

static bool
is_rfc3339(const char *s, int len)
{
	int			v;
	int			i;

	/* the fixed part, 19 characters: date, separator, time to the second */
	if (len < 20 ||
		!number(s, 4, 0, 9999, &v) || s[4] != '-' ||
		!number(s + 5, 2, 1, 12, &v) || s[7] != '-' ||
		!number(s + 8, 2, 1, 31, &v) ||
		(s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
		!number(s + 11, 2, 0, 23, &v) || s[13] != ':' ||
		!number(s + 14, 2, 0, 59, &v) || s[16] != ':' ||
		!number(s + 17, 2, 0, 60, &v))
		return false;
	i = 19;
	if (s[i] == '.')
	{
		int			start = ++i;

		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return false;
	}
	if (i == len - 1)
		return s[i] == 'Z' || s[i] == 'z';
	return i == len - 6 && (s[i] == '+' || s[i] == '-') &&
		number(s + i + 1, 2, 0, 23, &v) && s[i + 3] == ':' && number(s + i + 4, 2, 0, 59, &v);
}

Datum
elmo_is_rfc3339(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(is_rfc3339(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}
