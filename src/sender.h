/*
 * sender.h — delivering the outbox to ELMO, over libcurl (http_client.c).
 */
#ifndef ELMO_SENDER_H
#define ELMO_SENDER_H

extern void sender_init(void);
extern void sender_shutdown(void);
extern int	sender_epoll_fd(void);
extern long sender_timeout_ms(bool may_claim);
extern void sender_run(bool extension_ready, bool may_claim);
extern int	sender_in_flight(void);

#endif							/* ELMO_SENDER_H */
