/* mutate.h — the mutation families, each logging what it did */
#ifndef ELMO_FUZZ_MUTATE_H
#define ELMO_FUZZ_MUTATE_H

#include "fuzz.h"

void		mutate_body(Req *q, Rng *r, Buf *log);
void		mutate_header(Req *q, Rng *r, Buf *log);
void		mutate_line(Req *q, Rng *r, Buf *log);
/* framing: `last` allows the ones after which the connection cannot go on */
void		mutate_framing(Req *q, Rng *r, bool last, Buf *log);
void		set_header(Req *q, const char *name, const char *value);

#endif
