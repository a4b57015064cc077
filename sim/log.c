/*
 * Log lines.  Callbacks and requests are logged from several threads: one
 * lock keeps lines whole.
 */
#include "log.h"

#include "caltime.h"
#include "clock.h"
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void mask_auth(const char *authorization, char out[56])
{
	int prefixed = authorization && !strncmp(authorization, "Token ", 6);
	char m[48];
	mask_token(prefixed ? authorization + 6 : authorization, m);
	snprintf(out, 56, "%s%s", prefixed ? "Token " : "", m);
}
