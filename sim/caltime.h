/*
 * Calendar time at a fixed UTC offset, in epoch milliseconds: ELMO's
 * timestamp form, local days and RFC 3339 parsing.  Pure functions.
 */
#ifndef SIM_CALTIME_H
#define SIM_CALTIME_H

#include <stdint.h>

#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL

/* 2026-12-01T13:30:00.000+08:00 */
void fmt_time(int64_t ms, int tz_s, char out[40]);
/* 2026-12-01 */
void fmt_day(int64_t ms, int tz_s, char out[11]);
/* +08:00 */
void fmt_tz(int tz_s, char out[8]);
int64_t local_midnight(int64_t ms, int tz_s);
int local_hour(int64_t ms, int tz_s);

/* 0 on success, -1 when s is not of the form */
int parse_time(const char *s, int require_offset, int default_tz_s, int64_t *ms);
int parse_day(const char *s, int tz_s, int64_t *midnight_ms);
int parse_tz(const char *s, int *tz_s);
int parse_time_of_day(const char *s, int64_t *ms_after_midnight);

#endif
