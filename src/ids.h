/*
 * ids.h — random identifiers from pg_strong_random: our tokens for ELMO and
 * X-Request-IDs in the form ELMO itself uses.
 */
#ifndef ELMO_IDS_H
#define ELMO_IDS_H

#define ELMO_TOKEN_LEN 64
#define ELMO_REQUEST_ID_LEN 32

extern void ids_token(char out[ELMO_TOKEN_LEN + 1]);
extern void ids_request_id(char out[ELMO_REQUEST_ID_LEN + 1]);

#endif							/* ELMO_IDS_H */
