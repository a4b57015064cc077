/*
 * worker.c — the background worker's loop: one thread, one WaitEventSet.
 *
 * The set holds the latch (woken at commit by any backend that queued a
 * message), postmaster death, libmicrohttpd's epoll descriptor (inbound) and
 * libcurl's epoll descriptor (outbound).  Every turn of the loop:
 *   listener → its completed requests → inbound (one transaction, answers)
 *   sender → outbound transfers progress, outcomes recorded, more claimed
 *   timers → capacity_in_force at its changes, retried applies,
 *            housekeeping (usage reports, alerts, retention)
 * Everything a turn allocates outside a transaction lives in a memory
 * context that is reset when the turn ends.
 *
 * SIGTERM (pg_terminate_backend, a fast shutdown, DROP DATABASE of our
 * database) finishes what is in hand: the listener stops accepting, the
 * requests already read are stored and answered, transfers in flight are
 * recorded, for a few seconds at most; then the worker exits.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "capacity.h"
#include "compat.h"
#include "connect.h"
#include "db.h"
#include "durability.h"
#include "http_server.h"
#include "inbound.h"
#include "routes.h"
#include "sender.h"
#include "settings.h"
#include "shmem.h"
#include "tokens.h"

#define RETRY_LISTEN_MS 5000		/* a listener that could not start */
#define CHECK_EXTENSION_MS 5000		/* while the extension is not there */
#define HOUSEKEEPING_MAX_MS 10000	/* at least this often: settings may change */
#define RETRIES_PER_TURN 16			/* applies retried before looking at requests */
#define SHUTDOWN_GRACE_MS 3000		/* to finish what is in hand */

PGDLLEXPORT void elmo_worker_main(Datum arg);

static MemoryContext turn_cxt = NULL;
static WaitEventSet *wait_set = NULL;
static int	http_fd = -1;
static int	curl_fd = -1;
static bool extension_ready = false;
static TimestampTz next_housekeeping = 0;
static TimestampTz next_extension_check = 0;
static TimestampTz next_listen_retry = 0;
static uint64 generation_seen = 0;	/* a kick from CREATE EXTENSION moves it */
static uint64 extension_generation_seen = 0;
static char found_as[NAMEDATALEN * 2];	/* the version and schema last found */
static bool as_superuser = false;	/* connected as the bootstrap superuser
									 * (connect.c) */
static char role_problem_logged[256] = "";

static TimestampTz
ms_from_now(int ms)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
}

/* ---------------------------------------------------------------- listener */

static void
build_wait_set(void)
{
	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = elmo_create_wait_event_set(4);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	if (http_fd >= 0)
		AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, http_fd, NULL, NULL);
	if (curl_fd >= 0)
		AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, curl_fd, NULL, NULL);
}

/* The settings the listener's routing and guard may take at a reload. */
static void
configure_listener(void)
{
	ConnLimits	l = {(unsigned int) elmo_max_connections_per_client,
		(unsigned int) elmo_connection_timeout * 1000, (unsigned int) elmo_request_receive_timeout,
	elmo_allowed_clients};

	routes_configure(elmo_path_prefix, (size_t) elmo_max_request_size);
	conns_configure(&l);
}

static void
start_listener(void)
{
	HttpServerSettings s = {elmo_listen_addresses, elmo_port, elmo_tls_cert_file, elmo_tls_key_file,
		(unsigned int) elmo_max_connections, (unsigned int) elmo_connection_timeout,
	(unsigned int) max_safe_fds};
	HttpServerError err = {{0}};
	bool		tls = (elmo_tls_cert_file[0] != '\0');

	if (!http_server_start(&s, &err))
	{
		shmem_set_last_error(err.message);
		ereport(LOG,
				(errmsg("elmo_oscp: %s%s%s", err.message, err.consequence ? "; " : "",
						err.consequence ? err.consequence : ""),
				 err.hint ? errhint("%s", err.hint) : 0));
		next_listen_retry = ms_from_now(RETRY_LISTEN_MS);
		return;
	}
	if (err.message[0] != '\0')
		ereport(WARNING, (errmsg("elmo_oscp: %s", err.message), errhint("%s", err.hint)));
	http_fd = http_server_epoll_fd();
	shmem_set_listening(true, tls, elmo_listen_addresses, elmo_port);
	ereport(LOG, (errmsg("elmo_oscp: listening on %s:%d (%s), path prefix %s",
						 elmo_listen_addresses, elmo_port, tls ? "https" : "http", elmo_path_prefix)));
}

/*
 * What the connection guard did, in the log at once and then at most once a
 * minute: enough for an operator to see an attack or a limit set too low,
 * never a flood.
 */
static void
log_guard(const ConnCounts *c)
{
	static ConnCounts sum;
	static TimestampTz next_log = 0;

	sum.refused_not_allowed += c->refused_not_allowed;
	sum.refused_per_client += c->refused_per_client;
	sum.refused_full += c->refused_full;
	sum.evicted += c->evicted;
	sum.overdue += c->overdue;
	if (sum.refused_not_allowed + sum.refused_per_client + sum.refused_full + sum.evicted + sum.overdue == 0 ||
		GetCurrentTimestamp() < next_log)
		return;
	ereport(LOG,
			(errmsg("elmo_oscp listener: refused %llu connections (%llu not in allowed_clients, %llu over max_connections_per_client, %llu with max_connections reached), evicted %llu, closed %llu past request_receive_timeout or connection_timeout",
					(unsigned long long) (sum.refused_not_allowed + sum.refused_per_client + sum.refused_full),
					(unsigned long long) sum.refused_not_allowed, (unsigned long long) sum.refused_per_client,
					(unsigned long long) sum.refused_full, (unsigned long long) sum.evicted,
					(unsigned long long) sum.overdue)));
	memset(&sum, 0, sizeof(sum));
	next_log = ms_from_now(60000);
}

/* Let libmicrohttpd work; pass on what it logged and counted. */
static void
run_listener(void)
{
	char		msg[256];
	HttpCounts	c = {{0}};

	http_server_run();
	while (http_server_take_log(msg, sizeof(msg)))
		ereport(LOG, (errmsg("elmo_oscp listener: %s", msg)));
	http_server_take_counts(&c);
	for (int i = 0; i < 6; i++)
		if (c.answered[i])
			pg_atomic_fetch_add_u64(&elmo_shared->requests[i], c.answered[i]);
	log_guard(&c.connections);
}

/* Requests completed in this turn: stored, answered, and the answers sent. */
static void
serve_requests(void)
{
	HttpRequest *list;
	int			count;

	if (http_fd < 0)
		return;
	run_listener();
	if (!http_server_has_ready())
		return;
	list = http_server_take_ready(&count);
	inbound_handle(list, count, extension_ready);
	run_listener();
}

/* ---------------------------------------------------------------- the extension */

typedef struct ExtensionFound
{
	bool		found;
	char	   *schema;
	char	   *version;
	ConnectAction action;		/* as the worker is connected (connect.c) */
	char	   *problem;		/* why it refuses */
	bool		elmo_may_call;	/* a registration ELMO may be using */
} ExtensionFound;

/* Found: point search_path at its schema, so the statements find it however the DBA placed it. */
static void
find_extension_work(void *arg)
{
	ExtensionFound *f = (ExtensionFound *) arg;
	char	   *schema = NULL;
	char	   *version = NULL;
	const char *problem;

	f->found = db_find_extension(&schema, &version);
	if (!f->found)
		return;
	SetConfigOption("search_path", psprintf("%s, pg_catalog", quote_identifier(schema)),
					PGC_SUSET, PGC_S_OVERRIDE);
	db_use_extension(version);
	f->schema = db_keep(schema);
	f->version = db_keep(version);
	f->action = connect_action(as_superuser, version, &problem);
	f->problem = db_keep(problem);
	if (f->action == CONNECT_AS_ROLE)
	{
		bool		isnull;

		f->elmo_may_call = db_run(STMT_REGISTRATION_LIVE, NULL, NULL, 1) == 1 &&
			DatumGetBool(db_value(0, 1, &isnull));
	}
}

/*
 * Connected as the role it should not be (connect.c): restart to connect
 * as the right one, unless ELMO may be calling (a restart closes the
 * listener for a second or two, and ELMO never sends a message twice):
 * then only say so, once.
 */
static void
restart_for_role(ExtensionFound *f)
{
	static bool told = false;

	if (f->action == CONNECT_AS_ROLE && f->elmo_may_call)
	{
		if (!told)
			ereport(LOG,
					(errmsg("elmo_oscp: role %s exists now, but ELMO may be calling: the worker goes on as the bootstrap superuser until it restarts",
							ELMO_WORKER_ROLE),
					 errhint("At a quiet moment (not around 10:00 or 16:00 in elmo_oscp.timezone) restart the server, or the worker: SELECT pg_terminate_backend(worker_pid) FROM elmo_status();")));
		told = true;
		return;
	}
	ereport(LOG, (errmsg("elmo_oscp: restarting the worker to connect as %s",
						 f->action == CONNECT_AS_SUPERUSER ?
						 "the bootstrap superuser (0.1.0's SQL grants no role anything)" : elmo_role)));
	shmem_set_as_superuser(f->action == CONNECT_AS_SUPERUSER);
	/* the role found just now: no need to look again before connecting */
	shmem_set_database_ok(f->action != CONNECT_AGAIN);
	ShutdownRequestPending = true;
}

/*
 * Look for the extension when it may have come or gone: not there yet and
 * its time or a kick came; any CREATE/ALTER/DROP EXTENSION committed; or an
 * SQL error said an object is missing.
 */
static void
check_extension(void)
{
	uint64		gen = pg_atomic_read_u64(&elmo_shared->generation);
	uint64		ext_gen = pg_atomic_read_u64(&elmo_shared->extension_generation);
	ExtensionFound f = {false, NULL, NULL, CONNECT_SERVE, NULL, false};
	bool		was_ready = extension_ready;

	if (!db_take_missing_object() && ext_gen == extension_generation_seen &&
		(extension_ready || (GetCurrentTimestamp() < next_extension_check && gen == generation_seen)))
		return;
	generation_seen = gen;
	extension_generation_seen = ext_gen;
	next_extension_check = ms_from_now(CHECK_EXTENSION_MS);
	(void) db_transaction("looking for the extension", find_extension_work, &f);
	if (f.found && f.action != CONNECT_SERVE && f.action != CONNECT_REFUSE)
		restart_for_role(&f);
	extension_ready = f.found && (f.action == CONNECT_SERVE || f.action == CONNECT_AS_ROLE);
	if (f.found && f.problem != NULL && strcmp(f.problem, role_problem_logged) != 0)
		ereport(LOG, (errmsg("elmo_oscp: %s", f.problem)));
	strlcpy(role_problem_logged, f.problem ? f.problem : "", sizeof(role_problem_logged));
	if (extension_ready && !ShutdownRequestPending)
	{
		char		found[NAMEDATALEN * 2];

		snprintf(found, sizeof(found), "%s %s", f.version ? f.version : "?", f.schema);
		if (was_ready && strcmp(found, found_as) == 0)
			return;
		ereport(LOG, (errmsg("elmo_oscp: extension elmo_oscp %s found in schema %s, serving OSCP",
							 f.version ? f.version : "?", f.schema)));
		strlcpy(found_as, found, sizeof(found_as));
		tokens_forget();
		capacity_found();
		next_housekeeping = 0;
	}
	else if (was_ready && !f.found)
		ereport(LOG, (errmsg("elmo_oscp: extension dropped, waiting for CREATE EXTENSION elmo_oscp")));
}

/* ---------------------------------------------------------------- timers */

static void
housekeeping_work(void *arg)
{
	*(TimestampTz *) arg = db_run_timestamp(STMT_HOUSEKEEPING);
}

/* Minute usage reports, heartbeats, adjust expiry, retention: all in SQL. */
static void
run_housekeeping(void)
{
	TimestampTz next = 0;

	(void) db_transaction("housekeeping", housekeeping_work, &next);
	next_housekeeping = ms_from_now(HOUSEKEEPING_MAX_MS);
	if (next > 0 && next < next_housekeeping)
		next_housekeeping = next;
}

/* Off the answering path: never while a request waits for its answer. */
static void
run_timers(void)
{
	if (!extension_ready || ShutdownRequestPending)
		return;
	/* capacity changes are announced within a second even while requests keep coming */
	capacity_run(http_server_has_ready());
	if (http_server_has_ready())
		return;
	if (GetCurrentTimestamp() >= next_housekeeping)
		run_housekeeping();
	if (!inbound_retry_due())
		return;
	for (int i = 0; i < RETRIES_PER_TURN; i++)
	{
		if (!inbound_retry_one() || ShutdownRequestPending)
			break;
		/* let requests that arrived meanwhile go first */
		run_listener();
		if (http_server_has_ready())
			break;
	}
}

static long
turn_timeout(bool may_claim)
{
	long		timeout = sender_timeout_ms(may_claim);

	if (http_server_has_ready())
		return 0;
	if (http_fd >= 0)
		timeout = timeout_min(timeout, http_server_timeout_ms());
	else
		timeout = timeout_min(timeout, ms_until(next_listen_retry));
	if (extension_ready)
	{
		timeout = timeout_min(timeout, ms_until(next_housekeeping));
		timeout = timeout_min(timeout, capacity_timeout_ms());
		timeout = timeout_min(timeout, inbound_retry_timeout_ms());
	}
	else
		timeout = timeout_min(timeout, ms_until(next_extension_check));
	return timeout;
}

static void
wait_for_events(long timeout)
{
	WaitEvent	events[4];

	(void) WaitEventSetWait(wait_set, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* ---------------------------------------------------------------- start and stop */

static void
reload_config(void)
{
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	durability_enforce_session();
	configure_listener();
	next_housekeeping = 0;		/* the sender reads its settings at each claim */
}

/*
 * SIGTERM: stop accepting connections, then store and answer the requests
 * already read and record the transfers in flight, for SHUTDOWN_GRACE_MS at
 * most.  A connection with no request under way is simply closed.  Exit code
 * 1: the postmaster starts the worker again unless it is shutting down.
 */
static void
shutdown_gracefully(void)
{
	TimestampTz deadline = ms_from_now(SHUTDOWN_GRACE_MS);

	if (http_fd >= 0)
		http_server_stop_accepting();
	for (;;)
	{
		serve_requests();
		sender_run(extension_ready, false);
		MemoryContextReset(turn_cxt);
		if (http_server_requests_in_progress() == 0 && sender_in_flight() == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(LOG,
					(errmsg("elmo_oscp: stopping with %d requests unfinished and %d deliveries in flight",
							http_server_requests_in_progress(), sender_in_flight()),
					 errdetail("Unfinished requests are closed without an answer; deliveries in flight are sent again at the next start.")));
			break;
		}
		wait_for_events(timeout_min(turn_timeout(false), ms_until(deadline)));
	}
	http_server_stop();
	sender_shutdown();
	ereport(LOG, (errmsg("elmo_oscp worker stopped")));
	proc_exit(1);
}

/*
 * Connecting to a database or as a role that is not there (or may not log
 * in) is FATAL, and the postmaster would restart us every second, each time
 * with an error.  So until the worker was seen able to connect, connect to
 * no database, look in the shared catalogs every few seconds (connect.c),
 * and restart into the database once it can.  A DROP DATABASE of it clears
 * the flag (see elmo_oscp.c), and so does a failed connection.
 */
static void
wait_until_connectable(void)
{
	char		logged[256] = "";
	WorkerView	w;

	shmem_read_worker(&w);
	if (w.database_ok)
		return;
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	for (;;)
	{
		char		msg[256];
		char		hint[256];
		bool		problem;
		bool		superuser_instead;

		if (ShutdownRequestPending)
			proc_exit(1);
		StartTransactionCommand();
		problem = connect_problem(msg, hint, sizeof(msg), &superuser_instead);
		CommitTransactionCommand();
		shmem_read_worker(&w);
		if (!problem && !w.database_dropping)
		{
			shmem_set_as_superuser(superuser_instead);
			shmem_set_database_ok(true);
			/* exit code 1: the postmaster starts us again, now connecting */
			proc_exit(1);
		}
		/* (while a DROP DATABASE of it is under way, it still shows: wait for its end) */
		if (problem && strcmp(msg, logged) != 0)
		{
			ereport(LOG, (errmsg("elmo_oscp: %s", msg), errhint("%s", hint)));
			strlcpy(logged, msg, sizeof(logged));
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 2000,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * The first start after the server starts connects at once (the database
 * and the role are nearly always there).  When one is not fit, PostgreSQL's
 * FATAL would be the first thing the log says about us: keep it out of the
 * log, and let the next start say it in our own words
 * (wait_until_connectable).
 */
static emit_log_hook_type prev_emit_log_hook = NULL;

static void
quiet_unfit_connection(ErrorData *edata)
{
	if (edata->elevel == FATAL &&
		(edata->sqlerrcode == ERRCODE_UNDEFINED_DATABASE ||
		 edata->sqlerrcode == ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION ||
		 edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ||
		 edata->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE))
		edata->output_to_server = false;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
connect_to_database(void)
{
	WorkerView	w;
	bool		is_superuser;

	wait_until_connectable();
	shmem_read_worker(&w);
	as_superuser = w.as_superuser;
	/* if this connection is FATAL, the next start looks first and waits quietly */
	shmem_set_database_ok(false);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = quiet_unfit_connection;
	BackgroundWorkerInitializeConnection(elmo_database, as_superuser ? NULL : elmo_role, 0);
	emit_log_hook = prev_emit_log_hook;
	shmem_set_database_ok(true);
	SetConfigOption("application_name", ELMO_WORKER_NAME, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(ELMO_WORKER_NAME);
	/* The worker's own SQL must never be cut short by a DBA's default. */
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	durability_enforce_session();
	StartTransactionCommand();
	is_superuser = superuser();
	CommitTransactionCommand();
	if (as_superuser)
		ereport(LOG,
				(errmsg("elmo_oscp: role %s does not exist yet: the worker connects as the bootstrap superuser meanwhile",
						ELMO_WORKER_ROLE),
				 errdetail("CREATE EXTENSION elmo_oscp (or ALTER EXTENSION elmo_oscp UPDATE from 0.1.0) creates it.")));
	else if (is_superuser)
		ereport(WARNING,
				(errmsg("elmo_oscp: elmo_oscp.role \"%s\" is a superuser: the CSMS's triggers run with superuser rights",
						elmo_role),
				 errhint("Set elmo_oscp.role to %s (the default) or another role that is no superuser, and restart the server.",
						 ELMO_WORKER_ROLE)));
}

/* SIGTERM: finish what is in hand, but end a wait for the synchronous standbys. */
static void
worker_sigterm(SIGNAL_ARGS)
{
	SignalHandlerForShutdownRequest(postgres_signal_arg);
	durability_cut_wait();
}

void
elmo_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	/* pg_cancel_backend() cancels what a transaction does, never the loop (db.c) */
	HOLD_CANCEL_INTERRUPTS();
	BackgroundWorkerUnblockSignals();
	shmem_worker_started();
	connect_to_database();
	ereport(LOG, (errmsg("elmo_oscp worker started for database \"%s\" as %s", elmo_database,
						 as_superuser ? "the bootstrap superuser" : quote_identifier(elmo_role))));

	turn_cxt = AllocSetContextCreate(TopMemoryContext, "elmo_oscp turn", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(turn_cxt);
	/* The listener comes up at once: /health works even before CREATE EXTENSION. */
	configure_listener();
	start_listener();
	sender_init();
	curl_fd = sender_epoll_fd();
	build_wait_set();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			shutdown_gracefully();
		if (ConfigReloadPending)
			reload_config();
		if (http_fd < 0 && GetCurrentTimestamp() >= next_listen_retry)
		{
			start_listener();
			if (http_fd >= 0)
				build_wait_set();
		}
		check_extension();
		if (extension_ready)
			tokens_refresh();	/* cheap unless the generation moved */

		/* inbound first: ELMO waits at most 20 s for its answer */
		serve_requests();
		/* every turn: transfers in flight must progress even after DROP EXTENSION */
		sender_run(extension_ready, true);
		run_timers();

		/* table statistics: without them autovacuum never visits our tables */
		pgstat_report_stat(false);
		MemoryContextReset(turn_cxt);
		wait_for_events(turn_timeout(true));
	}
}
