/*
 * drop_guard.c — DROP EXTENSION elmo_oscp refused while ELMO holds our
 * registration.
 *
 * Dropping the extension drops elmo_registration, and ELMO's token with it:
 * a new one means asking Taiwan Power's administrator for a new initial
 * token.  The CSMS's own triggers on our tables go with it too.  So while
 * the registration is registered (or a registration is under way with a
 * token ELMO gave or an initial token not used yet), the drop is refused,
 * unless elmo_oscp.allow_drop_registered is on.  The check sits in the
 * object access hook, at the drop of that table, so DROP SCHEMA ... CASCADE
 * and DROP OWNED ... CASCADE meet it as DROP EXTENSION does.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "drop_guard.h"
#include "settings.h"

static object_access_hook_type prev_object_access_hook = NULL;

/* Is relid the extension's elmo_registration? */
static bool
is_registration_table(Oid relid)
{
	char	   *name = get_rel_name(relid);
	Oid			ext;

	if (name == NULL || strcmp(name, "elmo_registration") != 0)
		return false;
	ext = get_extension_oid("elmo_oscp", true);
	return OidIsValid(ext) && getExtensionOfObject(RelationRelationId, relid) == ext;
}

/* The registration's state when ELMO holds it (or holds to an initial token), else NULL. */
static char *
held_registration(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	a_state = attnameAttNum(rel, "state", false);
	AttrNumber	a_elmo = attnameAttNum(rel, "elmo_token", false);
	AttrNumber	a_initial = attnameAttNum(rel, "initial_token", false);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tup;
	char	   *held = NULL;

	while ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		bool		no_elmo;
		bool		no_initial;
		char	   *state = TextDatumGetCString(heap_getattr(tup, a_state, desc, &isnull));

		(void) heap_getattr(tup, a_elmo, desc, &no_elmo);
		(void) heap_getattr(tup, a_initial, desc, &no_initial);
		if (strcmp(state, "registered") == 0 ||
			(strcmp(state, "pending") == 0 && (!no_elmo || !no_initial)))
			held = state;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return held;
}

static void
guard_drop(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	char	   *state;

	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access != OAT_DROP || classId != RelationRelationId || subId != 0 ||
		elmo_allow_drop_registered || !is_registration_table(objectId))
		return;
	state = held_registration(objectId);
	if (state == NULL)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot drop extension elmo_oscp while ELMO holds this CSMS's registration (state %s)",
					state),
			 errdetail("Dropping it deletes ELMO's token (a new one means asking Taiwan Power's administrator for a new initial token), and the CSMS's own triggers on the extension's tables go with it."),
			 errhint("Unregister first: SELECT elmo_unregister(); then wait until elmo_registration_status says unregistered. "
					 "To drop it anyway and lose the registration: SET elmo_oscp.allow_drop_registered = on; in the same session.")));
}

/* From _PG_init. */
void
drop_guard_install(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = guard_drop;
}
