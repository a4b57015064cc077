/*
 * durability.c — a 204 only after the commit is as durable as the cluster
 * promises.
 *
 * The worker never commits with synchronous_commit below on: COMMIT then
 * returns with the commit flushed locally and, where synchronous replication
 * is in force, confirmed by the synchronous standbys.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/guc.h"

#include "durability.h"

static int	overridden_level = -1;	/* last weaker setting logged */

/* ---------------------------------------------------------------- the setting */

static void
set_local_level(const char *value)
{
	(void) set_config_option("synchronous_commit", value, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * synchronous_commit below remote_write (off, local), from postgresql.conf,
 * ALTER DATABASE or ALTER ROLE, would let COMMIT return before the flush or
 * without the standbys: the worker uses on instead.  A stronger setting is
 * kept; after a reload, the setting is read again from where it comes.
 */
void
durability_enforce_session(void)
{
	SetConfigOption("synchronous_commit", NULL, PGC_SUSET, PGC_S_SESSION);
	if (synchronous_commit >= SYNCHRONOUS_COMMIT_REMOTE_WRITE)
	{
		overridden_level = -1;
		return;
	}
	if (overridden_level != synchronous_commit)
		ereport(LOG,
				(errmsg("elmo_oscp: synchronous_commit = %s does not apply to the worker, which commits with on",
						GetConfigOption("synchronous_commit", false, false)),
				 errdetail("A 204 tells ELMO that its message is stored for good: the worker answers after its commit is flushed, and confirmed by the synchronous standbys where they are set.")));
	overridden_level = synchronous_commit;
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
}

/* ---------------------------------------------------------------- the commit */

/*
 * Just before COMMIT.  A CSMS trigger's SET LOCAL synchronous_commit = off
 * does not weaken the worker's commit.
 */
void
durability_before_commit(void)
{
	if (synchronous_commit < SYNCHRONOUS_COMMIT_REMOTE_WRITE)
		set_local_level("on");
}
