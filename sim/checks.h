/*
 * zod-like field checks.  Each want_* returns 1 when v passes, else appends a
 * problem "<path>: <text>" to e and returns 0.
 */
#ifndef SIM_CHECKS_H
#define SIM_CHECKS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

void err(json_t *e, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* a JSON value's type in zod's words; "undefined" for NULL */
const char *jtype(json_t *v);
int want_type(json_t *e, json_t *v, const char *path, const char *type);
int want_string(json_t *e, json_t *v, const char *path, size_t minlen);
int want_number(json_t *e, json_t *v, const char *path, int nonneg);
/* vals ends with NULL */
int want_enum(json_t *e, json_t *v, const char *path, const char *const *vals, int optional);
/* RFC 3339 with an offset; its instant in *ms when ms is not NULL */
int want_datetime(json_t *e, json_t *v, const char *path, int optional, int64_t *ms);
/* "<base>.<i>" or "<base>.<i>.<key>" */
void sub(char *out, size_t n, const char *base, size_t i, const char *key);

#endif
