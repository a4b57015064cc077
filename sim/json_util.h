/*
 * jansson helpers: compact dumps and numbers as ELMO writes them.
 */
#ifndef SIM_JSON_UTIL_H
#define SIM_JSON_UTIL_H

#include <jansson.h>

char *dump(json_t *j);			/* compact; steals nothing */
char *dump_steal(json_t *j);		/* compact; decrefs j */
/* a JSON number holding a whole value */
int json_whole(json_t *v, long long *out);
/* a number as ELMO writes a capacity: 120, or 120.5 */
json_t *json_kw(double v);
/* 24 hourly capacities */
json_t *json_kw24(const double c[24]);

#endif
