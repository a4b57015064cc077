/*
 * connect.c — whether, and as whom, the worker can connect.
 *
 * The worker connects to elmo_oscp.database as elmo_oscp.role, so that the
 * CSMS's triggers run with that role's rights and never a superuser's.
 * Connecting to a database or as a role that is not there, or as one that
 * may not log in or connect, is FATAL, and the postmaster would start the
 * worker again every second, each time with that error.  So once a
 * connection failed (its FATAL kept out of the log: worker.c), the worker
 * looks in the shared catalogs, connected to no database, and waits quietly
 * until it can connect (connect_problem).
 *
 * One exception keeps ELMO served: elmo_oscp_worker, the default role, is
 * created by the extension's SQL.  Until it exists (before CREATE EXTENSION,
 * and between a new library and ALTER EXTENSION UPDATE from 0.1.0) the
 * worker connects as the bootstrap superuser, as 0.1.0 did; then no CSMS
 * code runs (no extension), or 0.1.0's does as it did: 0.1.0's SQL grants
 * no role anything, so under it the worker always serves as the superuser.
 * Once connected, connect_action() says whether the worker serves as it is.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/syscache.h"

#include "compat.h"
#include "connect.h"
#include "db.h"
#include "settings.h"

/*
 * Inside a transaction, connected to no database: false when the worker can
 * connect (*as_superuser: as the bootstrap superuser, for the reason
 * above); else true, with what is wrong and what to do in msg and hint.
 */
bool
connect_problem(char *msg, char *hint, size_t len, bool *as_superuser)
{
	bool		allows_connections = false;
	Oid			dboid = db_find_database(elmo_database, &allows_connections);
	Oid			roleid = get_role_oid(elmo_role, true);
	HeapTuple	tup;
	bool		can_login;

	*as_superuser = false;
	if (!OidIsValid(dboid))
	{
		snprintf(msg, len, "database \"%s\" does not exist yet; waiting for it", elmo_database);
		snprintf(hint, len, "Create it, or set elmo_oscp.database and restart the server.");
		return true;
	}
	if (!allows_connections)
	{
		snprintf(msg, len, "database \"%s\" does not allow connections; waiting until it does", elmo_database);
		snprintf(hint, len, "ALTER DATABASE %s ALLOW_CONNECTIONS true;", elmo_database);
		return true;
	}
	if (!OidIsValid(roleid))
	{
		if (strcmp(elmo_role, ELMO_WORKER_ROLE) == 0)
		{
			*as_superuser = true;
			return false;
		}
		snprintf(msg, len, "role \"%s\" (elmo_oscp.role) does not exist; waiting for it", elmo_role);
		snprintf(hint, len, "CREATE ROLE %s LOGIN; GRANT %s TO %s; or set elmo_oscp.role and restart the server.",
				 elmo_role, ELMO_WORKER_ROLE, elmo_role);
		return true;
	}
	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(roleid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for role %u", roleid);
	can_login = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	if (!can_login)
	{
		snprintf(msg, len, "role \"%s\" (elmo_oscp.role) cannot log in; waiting until it can", elmo_role);
		snprintf(hint, len, "The worker logs in as it: ALTER ROLE %s LOGIN;", elmo_role);
		return true;
	}
	if (!superuser_arg(roleid) && elmo_database_aclcheck(dboid, roleid, ACL_CONNECT) != ACLCHECK_OK)
	{
		snprintf(msg, len, "role \"%s\" (elmo_oscp.role) may not connect to database \"%s\"; waiting until it may",
				 elmo_role, elmo_database);
		snprintf(hint, len, "GRANT CONNECT ON DATABASE %s TO %s;", elmo_database, elmo_role);
		return true;
	}
	return false;
}

/*
 * Inside a transaction, connected, the extension found at version: what the
 * worker does as it is connected.  *problem (for the log) when it refuses.
 */
ConnectAction
connect_action(bool as_superuser, const char *version, const char **problem)
{
	Oid			worker_role = get_role_oid(ELMO_WORKER_ROLE, true);
	bool		sql_0_1_0 = (version != NULL && strcmp(version, "0.1.0") == 0);

	*problem = NULL;
	if (sql_0_1_0)
		return as_superuser ? CONNECT_SERVE : CONNECT_AS_SUPERUSER;
	if (as_superuser)
	{
		if (OidIsValid(worker_role))
			return CONNECT_AS_ROLE;
		*problem = "role " ELMO_WORKER_ROLE " is missing although the extension's SQL created it; "
			"not serving ELMO as a superuser in its place";
		return CONNECT_REFUSE;
	}
	if (get_role_oid(elmo_role, true) != GetUserId())
		return CONNECT_AGAIN;
	if (superuser() || (OidIsValid(worker_role) && has_privs_of_role(GetUserId(), worker_role)))
		return CONNECT_SERVE;
	*problem = psprintf("role \"%s\" (elmo_oscp.role) lacks the worker's privileges: "
						"not serving ELMO until GRANT %s TO %s", elmo_role, ELMO_WORKER_ROLE, elmo_role);
	return CONNECT_REFUSE;
}
