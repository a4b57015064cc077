/*
 * run_as.c — the C functions that run SQL with another role's rights, so
 * that no code of the CSMS runs as a superuser because of us:
 *
 *   _elmo_replay_apply(id)  elmo_replay's application of a message, as
 *                           elmo_oscp.role (the CSMS's triggers run as they
 *                           do when the worker applies it, never as the
 *                           owner of elmo_replay, a SECURITY DEFINER function);
 *   _elmo_usage_rows()      elmo_oscp.usage_source read as its owner, as a
 *                           view reads its tables; refused when a superuser
 *                           owns it.
 *
 * The role is taken as core takes a table owner's for maintenance: a local
 * user-id change (SET ROLE and SET SESSION AUTHORIZATION cannot undo it) in
 * a security-restricted operation (no temporary objects, no cursors or
 * prepared statements that would outlive it), settings changed inside undone
 * at the end.  An error unwinds the transaction or subtransaction, which puts
 * the user id back itself.
 */
#include "postgres.h"

#include <ctype.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "db.h"
#include "settings.h"
#include "statements.h"

PG_FUNCTION_INFO_V1(elmo_replay_apply);
PG_FUNCTION_INFO_V1(elmo_usage_rows);

typedef struct RoleSwitch
{
	Oid			saved_user;
	int			saved_context;
	int			guc_level;
} RoleSwitch;

static void
become(Oid role, RoleSwitch *s)
{
	GetUserIdAndSecContext(&s->saved_user, &s->saved_context);
	SetUserIdAndSecContext(role, s->saved_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	s->guc_level = NewGUCNestLevel();
}

static void
come_back(RoleSwitch *s)
{
	AtEOXact_GUC(false, s->guc_level);
	SetUserIdAndSecContext(s->saved_user, s->saved_context);
}

/* _elmo_replay_apply(message_id): _elmo_apply(message_id) as elmo_oscp.role. */
Datum
elmo_replay_apply(PG_FUNCTION_ARGS)
{
	Datum		args[2] = {PG_GETARG_DATUM(0), BoolGetDatum(false)};	/* claimed, not stored applied */
	Oid			role = get_role_oid(elmo_role, true);
	RoleSwitch	s;

	if (!OidIsValid(role))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" (elmo_oscp.role) does not exist", elmo_role),
				 errdetail("A message is applied with the rights of the role the worker connects as."),
				 errhint("CREATE EXTENSION elmo_oscp creates %s; or set elmo_oscp.role to a role that exists.",
						 ELMO_WORKER_ROLE)));
	SPI_connect();
	become(role, &s);
	(void) db_run(STMT_APPLY, args, NULL, 0);
	come_back(&s);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * The owner of what elmo_oscp.usage_source names: a relation, or a function
 * without arguments ("fn" or "fn()"); InvalidOid when it names neither.
 * Looked up in the catalogs directly: the worker's role may not even use the
 * source's schema (its owner's rights read it), so the name lookups SQL
 * offers, which check that, would fail for it.  Unqualified: in the worker's
 * search_path.
 */
static Oid
usage_source_owner(const char *source)
{
	char	   *name = pstrdup(source);
	char	   *end = name + strlen(name);
	List	   *names;
	List	   *schemas;
	char	   *object;
	Oid			relid = InvalidOid;
	oidvector  *no_args = buildoidvector(NULL, 0);
	ListCell   *lc;

	/* "fn()" names what "fn" does */
	while (end > name && isspace((unsigned char) end[-1]))
		*--end = '\0';
	if (end - name >= 2 && end[-1] == ')')
	{
		char	   *open = end - 2;

		while (open > name && isspace((unsigned char) *open))
			open--;
		if (*open == '(')
			*open = '\0';
	}
	names = textToQualifiedNameList(cstring_to_text(name));
	object = strVal(llast(names));
	if (list_length(names) == 1)
	{
		relid = RelnameGetRelid(object);
		schemas = fetch_search_path(false);
	}
	else if (list_length(names) == 2)
	{
		Oid			nsp = get_namespace_oid(strVal(linitial(names)), true);

		relid = OidIsValid(nsp) ? get_relname_relid(object, nsp) : InvalidOid;
		schemas = OidIsValid(nsp) ? list_make1_oid(nsp) : NIL;
	}
	else
		return InvalidOid;
	if (OidIsValid(relid))
	{
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
		Oid			owner = InvalidOid;

		if (HeapTupleIsValid(tup))
		{
			owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
			ReleaseSysCache(tup);
		}
		return owner;
	}
	foreach(lc, schemas)
	{
		HeapTuple	tup = SearchSysCache3(PROCNAMEARGSNSP, CStringGetDatum(object),
										  PointerGetDatum(no_args), ObjectIdGetDatum(lfirst_oid(lc)));

		if (HeapTupleIsValid(tup))
		{
			Oid			owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;

			ReleaseSysCache(tup);
			return owner;
		}
	}
	return InvalidOid;
}

/*
 * _elmo_usage_rows(): (group_id, kwh, measured_at) of elmo_oscp.usage_source,
 * read as its owner.  The source is the setting's, never an argument: the
 * worker's role (and so any trigger of the CSMS) may call this, and must not
 * get to read some other role's view with that role's rights.
 */
Datum
elmo_usage_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		source;
	Oid			owner;
	uint64		n;
	RoleSwitch	s;

	InitMaterializedSRF(fcinfo, 0);
	if (elmo_usage_source == NULL || elmo_usage_source[0] == '\0')
		return (Datum) 0;
	source = CStringGetTextDatum(elmo_usage_source);

	owner = usage_source_owner(elmo_usage_source);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("elmo_oscp.usage_source \"%s\" names no relation or function", elmo_usage_source),
				 errhint("Name a view, table or set-returning function giving (group_id, kwh[, measured_at]); "
						 "the worker's search_path is the extension's schema, so qualify other schemas.")));
	if (superuser_arg(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("elmo_oscp.usage_source \"%s\" is owned by the superuser \"%s\": it is not read with a superuser's rights",
						elmo_usage_source, GetUserNameFromId(owner, false)),
				 errdetail("A usage source is read with its owner's rights."),
				 errhint("Give it to a role that may read the meters and is no superuser, for example: ALTER VIEW %s OWNER TO elmo_oscp_csms;",
						 elmo_usage_source)));
	SPI_connect();
	become(owner, &s);
	n = db_run(STMT_USAGE_READ, &source, NULL, 0);
	come_back(&s);
	for (uint64 i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3];

		for (int c = 0; c < 3; c++)
			values[c] = db_value(i, c + 1, &nulls[c]);
		/* copied into the tuplestore, which outlives SPI's memory */
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
