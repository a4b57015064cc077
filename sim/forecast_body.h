/*
 * update_group_capacity_forecast bodies as ELMO writes them: type
 * CONSUMPTION, blocks with capacity, phase ALL, unit KW, local timestamps.
 */
#ifndef SIM_FORECAST_BODY_H
#define SIM_FORECAST_BODY_H

#include <stdint.h>

char *forecast_body(const char *group, int nblocks, const int64_t *starts, const int64_t *ends,
		    const double *caps, int tz_s);
/* 24 hourly blocks of one local day */
char *day_forecast_body(const char *group, int64_t day_start_ms, const double caps[24]);

#endif
