/*
 * shmem.h — what the worker shares with every backend: its latch, its state
 * for elmo_status(), its counters, and the generation counters that wake it.
 */
#ifndef ELMO_SHMEM_H
#define ELMO_SHMEM_H

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define ELMO_WORKER_NAME "elmo_oscp worker"
#define ELMO_ERRLEN 256

typedef struct ElmoShared
{
	slock_t		mutex;			/* protects the non-atomic fields below */
	pid_t		worker_pid;		/* 0 when no worker runs */
	Latch	   *worker_latch;
	TimestampTz worker_started_at;
	bool		listening;
	bool		tls;
	bool		database_ok;	/* the worker was seen able to connect
								 * (elmo_oscp.database, elmo_oscp.role) */
	bool		database_dropping;	/* a DROP DATABASE of it is under way */
	bool		as_superuser;	/* ... able to connect as the bootstrap
								 * superuser: the default role does not
								 * exist yet */
	int			bound_port;
	char		bound_address[64];
	char		last_error[ELMO_ERRLEN];
	TimestampTz last_error_at;

	pg_atomic_uint64 generation;	/* bumped at each commit that changed
									 * registration or outbox */
	pg_atomic_uint64 extension_generation;	/* ... that created, updated or
											 * dropped an extension */
	pg_atomic_uint64 requests[6];	/* answered, by status class 1xx..5xx;
									 * [0] = connections dropped */
	pg_atomic_uint64 received;		/* messages stored */
	pg_atomic_uint64 sent;			/* outbound deliveries (2xx) */
	pg_atomic_uint64 send_failures; /* outbound attempts that were not 2xx */
	pg_atomic_uint64 apply_failures;
	ConditionVariable outbox_cv;	/* broadcast after outcomes are recorded */
	ConditionVariable worker_cv;	/* broadcast when the worker exits */

	/* ELMO's reachability, as deliveries show it (under mutex) */
	int			failed_deliveries;	/* in a row: no connection, timeout, 5xx */
	bool		elmo_unreachable;
	TimestampTz first_failure_at;	/* of the failures in a row */
	TimestampTz last_reached_at;	/* ELMO's last HTTP answer below 500 */

	/* capacity_in_force: when its next change is due (a TimestampTz; 0:
	 * now, UINT64_MAX: none known), and a full refresh wanted */
	pg_atomic_uint64 capacity_due;
	pg_atomic_uint32 capacity_recheck;
} ElmoShared;

/* Failed deliveries in a row after which ELMO counts as unreachable. */
#define ELMO_UNREACHABLE_AFTER 3

/* ELMO's reachability as elmo_status() shows it. */
typedef struct ReachView
{
	bool		reachable;
	int			failed_deliveries;
	TimestampTz first_failure_at;	/* 0: none */
	TimestampTz last_reached_at;	/* 0: never */
} ReachView;

/* NULL unless the library came through shared_preload_libraries */
extern ElmoShared *elmo_shared;

/* The worker as elmo_status() shows it. */
typedef struct WorkerView
{
	pid_t		pid;
	TimestampTz started_at;
	bool		listening;
	bool		tls;
	char		address[64];
	int			port;
	char		last_error[ELMO_ERRLEN];
	TimestampTz last_error_at;
	bool		database_ok;
	bool		database_dropping;
	bool		as_superuser;
} WorkerView;

extern Size shmem_size(void);
extern void shmem_attach(void);

extern void shmem_set_last_error(const char *msg);
extern void shmem_wake_worker(void);
extern void shmem_wake_worker_at_commit(bool extension_changed);
extern void shmem_read_worker(WorkerView *view);
extern void shmem_set_database_dropping(bool dropping, bool dropped);
extern bool shmem_wait_worker_gone(int timeout_ms);
extern void shmem_read_reach(ReachView *view);
extern void shmem_capacity_due_at_commit(TimestampTz at);
extern void shmem_capacity_recheck_at_commit(void);

/* the worker's own */
extern void shmem_worker_started(void);
extern void shmem_set_listening(bool listening, bool tls, const char *address, int port);
extern void shmem_set_database_ok(bool ok);
extern int	shmem_note_delivery(bool reached, ReachView *after);
extern bool shmem_capacity_take_due(TimestampTz now, bool *recheck);
extern void shmem_capacity_due(TimestampTz at);
extern bool shmem_capacity_next(TimestampTz *at);
extern void shmem_set_as_superuser(bool as_superuser);

#endif							/* ELMO_SHMEM_H */
