/*
 * durability.h — is the worker's last commit as durable as the cluster
 * promises?  Flushed here, and confirmed by the synchronous standbys where
 * synchronous replication is in force.  A 204 is sent only then.
 */
#ifndef ELMO_DURABILITY_H
#define ELMO_DURABILITY_H

/* the session: at connect and after every reload */
extern void durability_enforce_session(void);

/* just before CommitTransactionCommand (db.c) */
extern void durability_before_commit(void);

#endif							/* ELMO_DURABILITY_H */
