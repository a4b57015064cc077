/*
 * Random ids and tokens in ELMO's forms, from getrandom().
 */
#ifndef SIM_IDS_H
#define SIM_IDS_H

#include <stddef.h>

#define REQUEST_ID_LEN 32
#define ELMO_TOKEN_LEN 256

/* n characters of alphabet, unbiased, NUL-terminated */
void rand_chars(char *out, size_t n, const char *alphabet);
/* X-Request-ID: 32 of [0-9A-Z] */
void new_request_id(char out[REQUEST_ID_LEN + 1]);
/* ELMO's token: 256 of [0-9A-Za-z] */
void new_elmo_token(char out[ELMO_TOKEN_LEN + 1]);

#endif
