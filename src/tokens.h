/*
 * tokens.h — the tokens ELMO may present to us, read from the registration
 * and handed down to the listener's routing.
 */
#ifndef ELMO_TOKENS_H
#define ELMO_TOKENS_H

extern void tokens_refresh(void);
extern void tokens_forget(void);

#endif							/* ELMO_TOKENS_H */
