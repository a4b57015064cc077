/*
 * connections.h — who may connect, how many, and for how long: the listener's
 * guard against slow, idle and numerous clients.  Plain C; the listener calls
 * it from libmicrohttpd's callbacks and sweeps overdue connections each turn.
 */
#ifndef ELMO_CONNECTIONS_H
#define ELMO_CONNECTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* The limits a reload may change. */
typedef struct ConnLimits
{
	unsigned int max_per_client;	/* ... from one address */
	unsigned int idle_ms;		/* a kept-alive connection waiting for its next request */
	unsigned int receive_ms;	/* to receive a whole request */
	const char *allowed_clients;	/* addresses and CIDR ranges; "": any */
} ConnLimits;

/* What the guard did since it was last asked. */
typedef struct ConnCounts
{
	uint64_t	refused_not_allowed;
	uint64_t	refused_per_client;
	uint64_t	refused_full;
	uint64_t	evicted;		/* closed to make room for another address */
	uint64_t	overdue;		/* closed: request or answer past its deadline */
} ConnCounts;

typedef struct Conn Conn;

extern void conns_set_capacity(unsigned int max_total);
extern void conns_configure(const ConnLimits *limits);
extern bool conns_admit(const struct sockaddr *addr, socklen_t len);
extern Conn *conns_opened(int fd, const struct sockaddr *addr, socklen_t len);
extern void conns_closed(Conn *c);

extern void conns_request_line(Conn *c);
extern void conns_busy(Conn *c);
extern void conns_answering(Conn *c);
extern void conns_request_done(Conn *c);

extern void conns_sweep(void);
extern long conns_next_deadline_ms(void);
extern void conns_take_counts(ConnCounts *into);

#endif							/* ELMO_CONNECTIONS_H */
