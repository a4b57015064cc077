/*
 * connections.c — the listener's guard against clients that would starve ELMO.
 *
 * At accept: an address outside allowed_clients is refused; so is one that
 * holds max_per_client connections already.  When capacity are open, the
 * newcomer takes the place of the oldest connection of the address holding
 * the most (if that is more than the newcomer's own), else it is refused.
 * Refused connections are closed at once, so nobody waits in the kernel's
 * accept queue (the listener keeps libmicrohttpd's own limit above ours).
 *
 * Deadlines, checked by a sweep every turn: a request must arrive whole
 * (request line, headers, body) within receive_ms of the connection opening
 * or, on a kept-alive connection, of its request line; a kept-alive
 * connection gets idle_ms to start its next request; an answer must be taken
 * within receive_ms.  A connection whose request waits for the worker has no
 * deadline.  Overdue and evicted connections are shut down (shutdown(2)):
 * libmicrohttpd sees the end of the stream and closes them itself.
 *
 * A client that hangs up before its request is whole can never complete
 * it, but libmicrohttpd (0.9.75) keeps such a connection until its timeout
 * when the hang-up comes in the middle of the headers.  So the sweep also
 * looks, ten times a second, for the end of the stream on connections
 * waiting for or receiving a request, and shuts those.
 *
 * Plain C (see no_postgres.h); single-threaded like the worker.
 */
#include "connections.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "addresses.h"

#define HANGUP_CHECK_MS 100

typedef enum ConnPhase
{
	CONN_WAITING,				/* for a request (new or kept alive) */
	CONN_RECEIVING,				/* request line in, the rest arriving */
	CONN_BUSY,					/* complete, with the worker */
	CONN_ANSWERING				/* answer queued, being sent */
} ConnPhase;

/* Connections open from one address. */
typedef struct PerAddress
{
	ClientAddress addr;
	unsigned int count;
} PerAddress;

struct Conn
{
	int			fd;
	PerAddress *per;			/* NULL once shut down */
	ConnPhase	phase;
	bool		fresh;			/* no request completed on it yet */
	long long	since;			/* ms: start of the current phase's clock */
	Conn	   *prev;
	Conn	   *next;
};

static unsigned int capacity = 256;	/* connections kept at once */
static ConnLimits limits = {64, 10000, 10000, ""};
static AddressRange *allowed = NULL;
static int	n_allowed = 0;
static void *by_address = NULL; /* tsearch tree of PerAddress */
static Conn *head = NULL;
static Conn *tail = NULL;
static unsigned int open_count = 0; /* counted: not shut down */
static unsigned int shut_count = 0; /* shut down, not yet closed */
static long long next_hangup_check = 0;
static ConnCounts counts;

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
compare_address(const void *a, const void *b)
{
	return memcmp(((const PerAddress *) a)->addr.b, ((const PerAddress *) b)->addr.b, 16);
}

static PerAddress *
find_address(const ClientAddress *a)
{
	PerAddress	key;
	void	   *found;

	key.addr = *a;
	found = tfind(&key, &by_address, compare_address);
	return found ? *(PerAddress **) found : NULL;
}

/* Set when the listener starts (the setting needs a restart). */
void
conns_set_capacity(unsigned int max_total)
{
	capacity = max_total;
}

/* The settings change at a reload; a list that does not parse was refused by the setting's check. */
void
conns_configure(const ConnLimits *l)
{
	AddressRange *ranges;
	int			n;
	char		err[200];

	limits = *l;
	limits.allowed_clients = NULL;
	if (address_list_parse(l->allowed_clients ? l->allowed_clients : "", &ranges, &n, err, sizeof(err)))
	{
		free(allowed);
		allowed = ranges;
		n_allowed = n;
	}
}

static void
release_address(Conn *c)
{
	if (c->per == NULL)
		return;
	if (--c->per->count == 0)
	{
		PerAddress *per = c->per;

		tdelete(per, &by_address, compare_address);
		free(per);
	}
	c->per = NULL;
	open_count--;
}

/* Make libmicrohttpd close it: it reads the end of the stream at its next run. */
static void
shut(Conn *c)
{
	shutdown(c->fd, SHUT_RDWR);
	release_address(c);
	shut_count++;
}

/* Room for a newcomer whose address holds [have]: shut the oldest connection of the biggest holder. */
static bool
evict_for(unsigned int have)
{
	Conn	   *victim = NULL;

	for (Conn *c = head; c; c = c->next)
	{
		if (c->per == NULL || c->phase == CONN_BUSY)
			continue;
		if (victim == NULL || c->per->count > victim->per->count ||
			(c->per->count == victim->per->count && c->since < victim->since))
			victim = c;
	}
	if (victim == NULL || victim->per->count <= have)
		return false;
	shut(victim);
	counts.evicted++;
	return true;
}

/* libmicrohttpd's accept policy: false closes the new connection at once. */
bool
conns_admit(const struct sockaddr *sa, socklen_t len)
{
	ClientAddress a;
	PerAddress *per;
	unsigned int have;

	if (!address_of(sa, len, &a))
		return n_allowed == 0;
	if (n_allowed > 0 && !address_list_match(allowed, n_allowed, &a))
	{
		counts.refused_not_allowed++;
		return false;
	}
	per = find_address(&a);
	have = per ? per->count : 0;
	if (have >= limits.max_per_client)
	{
		counts.refused_per_client++;
		return false;
	}
	/* connections shut but not closed yet still hold libmicrohttpd's slots */
	if (open_count >= capacity && (shut_count >= capacity || !evict_for(have)))
	{
		counts.refused_full++;
		return false;
	}
	return true;
}

static void
unlink_conn(Conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		tail = c->prev;
}

/* A new connection; NULL when out of memory (it then goes unguarded). */
Conn *
conns_opened(int fd, const struct sockaddr *sa, socklen_t len)
{
	Conn	   *c = calloc(1, sizeof(Conn));
	PerAddress *per;
	ClientAddress a;

	if (c == NULL)
		return NULL;
	memset(&a, 0, sizeof(a));
	(void) address_of(sa, len, &a);
	per = find_address(&a);
	if (per == NULL)
	{
		/* the key is set before the tree places it */
		per = calloc(1, sizeof(PerAddress));
		if (per != NULL)
			per->addr = a;
		if (per == NULL || tsearch(per, &by_address, compare_address) == NULL)
		{
			free(per);
			free(c);
			return NULL;
		}
	}
	per->count++;
	open_count++;
	c->fd = fd;
	c->per = per;
	c->phase = CONN_WAITING;
	c->fresh = true;
	c->since = now_ms();
	c->prev = tail;
	*(tail ? &tail->next : &head) = c;
	tail = c;
	return c;
}

void
conns_closed(Conn *c)
{
	if (c == NULL)
		return;
	if (c->per)
		release_address(c);
	else
		shut_count--;
	unlink_conn(c);
	free(c);
}

static void
enter(Conn *c, ConnPhase phase, bool restart_clock)
{
	if (c == NULL)
		return;
	c->phase = phase;
	if (restart_clock)
		c->since = now_ms();
}

/* The request line is in: on a kept-alive connection, the request's clock starts. */
void
conns_request_line(Conn *c)
{
	enter(c, CONN_RECEIVING, c && !c->fresh);
}

void
conns_busy(Conn *c)
{
	enter(c, CONN_BUSY, false);
}

void
conns_answering(Conn *c)
{
	enter(c, CONN_ANSWERING, true);
}

void
conns_request_done(Conn *c)
{
	if (c)
		c->fresh = false;
	enter(c, CONN_WAITING, true);
}

/* When c is due, in ms on the monotonic clock; -1: never (with the worker, or shut). */
static long long
deadline(const Conn *c)
{
	if (c->per == NULL || c->phase == CONN_BUSY)
		return -1;
	if (c->phase == CONN_WAITING && !c->fresh)
		return c->since + limits.idle_ms;
	if (c->phase == CONN_WAITING && limits.idle_ms < limits.receive_ms)
		return c->since + limits.idle_ms;
	return c->since + limits.receive_ms;
}

/* The client hung up before its request was whole (the kernel holds nothing more from it). */
static bool
hung_up(const Conn *c)
{
	char		byte;

	if (c->per == NULL || (c->phase != CONN_WAITING && c->phase != CONN_RECEIVING))
		return false;
	return recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

void
conns_sweep(void)
{
	long long	now = now_ms();
	bool		check_hangups = now >= next_hangup_check;

	if (check_hangups)
		next_hangup_check = now + HANGUP_CHECK_MS;
	for (Conn *c = head; c; c = c->next)
	{
		long long	d = deadline(c);

		if (d >= 0 && d <= now)
		{
			shut(c);
			counts.overdue++;
		}
		else if (check_hangups && hung_up(c))
			shut(c);
	}
}

/* Until the next deadline or look for hang-ups, in ms; -1: none. */
long
conns_next_deadline_ms(void)
{
	long long	now = now_ms();
	long long	next = -1;

	for (Conn *c = head; c; c = c->next)
	{
		long long	d = deadline(c);

		if (d >= 0 && c->phase != CONN_ANSWERING && next_hangup_check < d)
			d = next_hangup_check;
		if (d >= 0 && (next < 0 || d < next))
			next = d;
	}
	if (next < 0)
		return -1;
	return next <= now ? 0 : (long) (next - now);
}

void
conns_take_counts(ConnCounts *into)
{
	into->refused_not_allowed += counts.refused_not_allowed;
	into->refused_per_client += counts.refused_per_client;
	into->refused_full += counts.refused_full;
	into->evicted += counts.evicted;
	into->overdue += counts.overdue;
	memset(&counts, 0, sizeof(counts));
}
