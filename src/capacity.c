/*
 * capacity.c — keeps capacity_in_force: the worker wakes at the instant a
 * group's capacity in force changes next (a block boundary: midnight, an
 * emergency's start or end, an hour where the plan's value changes), and one
 * transaction refreshes the groups whose change has come
 * (_elmo_capacity_upkeep), NOTIFYing each change.  The instant is kept in
 * shared memory: each refresh lowers it at its commit, wherever it ran (a
 * forecast received, the upkeep itself), and a change of the contract
 * capacities asks for a full refresh.  A full refresh also runs whenever the
 * extension is found (start, CREATE or ALTER EXTENSION): what changed while
 * the worker was away is caught up.
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "capacity.h"
#include "db.h"
#include "settings.h"
#include "shmem.h"

#define RETRY_MS 5000			/* after a failed upkeep */
#define BUSY_EVERY_MS 250		/* at most this often while requests wait */

static bool full_wanted = true;
static TimestampTz retry_at = 0;	/* after a failed upkeep: not before */
static TimestampTz last_run = 0;

typedef struct Upkeep
{
	const char *scope;			/* "due", "known" or "all" (see _elmo_capacity_upkeep) */
	bool		failed;
} Upkeep;

/* The upkeep's one statement; its result (the next change) goes to shared memory in SQL. */
static void
upkeep_statement(void *arg)
{
	Upkeep	   *u = (Upkeep *) arg;
	Datum		scope = CStringGetTextDatum(u->scope);

	(void) db_run(STMT_CAPACITY_UPKEEP, &scope, NULL, 1);
}

/*
 * CSMS triggers on capacity_in_force run here: within the apply budget, so
 * that a slow one cannot stall the loop (ELMO's requests wait for it).  Each
 * group's error is the SQL's to handle; this catches running out of time.
 */
static void
upkeep_work(void *arg)
{
	Upkeep	   *u = (Upkeep *) arg;
	bool		timed_out;
	ErrorData  *e = db_subtransaction(upkeep_statement, u, elmo_apply_timeout, &timed_out);

	if (e == NULL)
		return;
	u->failed = true;
	ereport(WARNING,
			(errmsg("elmo_oscp: capacity_in_force was not updated: %s",
					timed_out ? "it took longer than elmo_oscp.apply_timeout" : e->message),
			 errhint("Triggers on capacity_in_force must be fast; it is tried again in 5 s.")));
	FreeErrorData(e);
}

/* The extension was found (again): refresh every group at the next turn. */
void
capacity_found(void)
{
	full_wanted = true;
}

/*
 * Refresh what is due; the upkeep itself says when the next change is.
 * busy: requests are waiting for their answer; then at most every
 * BUSY_EVERY_MS, so that a flood of forecasts neither starves the upkeep nor
 * pays a transaction of it per batch.
 */
void
capacity_run(bool busy)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		recheck;
	bool		due;
	Upkeep		u;

	if (now < retry_at || (busy && now < TimestampTzPlusMilliseconds(last_run, BUSY_EVERY_MS)))
		return;
	due = shmem_capacity_take_due(now, &recheck);
	if (!due && !recheck && !full_wanted)
		return;
	last_run = now;
	u.scope = full_wanted ? "all" : recheck ? "known" : "due";
	u.failed = false;
	if (db_transaction(strcmp(u.scope, "due") == 0 ? "changing capacity_in_force" : "refreshing capacity_in_force",
					   upkeep_work, &u) && !u.failed)
	{
		full_wanted = false;
		retry_at = 0;
	}
	else
	{
		/* everything again, a little later: what was due is still due */
		retry_at = TimestampTzPlusMilliseconds(now, RETRY_MS);
		full_wanted = true;
	}
}

/* How long the worker may sleep before an upkeep is due; -1: none known. */
long
capacity_timeout_ms(void)
{
	TimestampTz at;

	if (full_wanted)
		return ms_until(retry_at);
	if (!shmem_capacity_next(&at))
		return -1;
	return ms_until(at);
}
