/*
 * One line per event on stderr, stamped with the simulated clock in ELMO's
 * zone.  Tokens are never logged whole.
 */
#ifndef SIM_LOG_H
#define SIM_LOG_H

void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* its first 4 characters and its length, or "-" */
void mask_token(const char *tok, char out[48]);
/* an Authorization header's token masked, "Token " prefix kept */
void mask_auth(const char *authorization, char out[56]);

#endif
