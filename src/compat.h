/*
 * compat.h — the differences between the PostgreSQL major versions we build
 * against, in one place: no other file tests PG_VERSION_NUM.  (Like every
 * header here, it expects postgres.h to be included first.)
 */
#ifndef ELMO_COMPAT_H
#define ELMO_COMPAT_H

#include "storage/latch.h"
#include "utils/memutils.h"

/* VARDATA_ANY() and friends: postgres.h until PostgreSQL 15, varatt.h after */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * A WaitEventSet that lives as long as the worker.  From PostgreSQL 17 on it
 * belongs to a resource owner (NULL: the session) and its memory comes from
 * TopMemoryContext; before, the caller named the memory context.
 */
#if PG_VERSION_NUM >= 170000
#define elmo_create_wait_event_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define elmo_create_wait_event_set(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * get_database_oid() and get_database_name(): commands/dbcommands.h until
 * PostgreSQL 18; from 19 on catalog/pg_database.h and utils/lsyscache.h.
 */
#if PG_VERSION_NUM >= 190000
#include "catalog/pg_database.h"
#include "utils/lsyscache.h"
#else
#include "commands/dbcommands.h"
#endif

/*
 * A role's privilege on a database: pg_database_aclcheck() until
 * PostgreSQL 15, object_aclcheck() from 16 on.
 */
#include "utils/acl.h"
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_database.h"
#define elmo_database_aclcheck(dboid, roleid, mode) \
	object_aclcheck(DatabaseRelationId, (dboid), (roleid), (mode))
#else
#define elmo_database_aclcheck(dboid, roleid, mode) pg_database_aclcheck((dboid), (roleid), (mode))
#endif

#endif							/* ELMO_COMPAT_H */
