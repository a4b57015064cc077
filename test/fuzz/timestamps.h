/* timestamps.h — RFC 3339 reading and writing for the fuzzer and its oracles */
#ifndef ELMO_FUZZ_TIMESTAMPS_H
#define ELMO_FUZZ_TIMESTAMPS_H

#include "fuzz.h"

bool		rfc3339_parse(const unsigned char *p, size_t n, int64_t *us);
void		rfc3339_format(char *out, size_t size, int64_t us, int off_min, int fd, char sep, bool z);
void		timestamp_mutation(Rng *r, const char *orig, const char *date, char *out, size_t size);

#endif
