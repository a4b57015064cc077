/*
 * durability.h — is the worker's last commit as durable as the cluster
 * promises?  Flushed here, and confirmed by the synchronous standbys where
 * synchronous replication is in force.  A 204 is sent only then.
 */
#ifndef ELMO_DURABILITY_H
#define ELMO_DURABILITY_H

typedef enum CommitDurability
{
	COMMIT_DURABLE,				/* flushed, and confirmed where it must be */
	COMMIT_UNCONFIRMED,			/* the wait for the standbys was cut short */
	COMMIT_SERVER_STOPPING		/* a die is pending or the postmaster is gone */
} CommitDurability;

/* the session: at connect and after every reload */
extern void durability_enforce_session(void);

/* around CommitTransactionCommand (db.c) */
extern void durability_before_commit(void);
extern void durability_after_commit(void);

/* from the SIGTERM handler: end a wait for the standbys now */
extern void durability_cut_wait(void);

extern CommitDurability durability_of_last_commit(void);
extern const char *durability_reason(CommitDurability d);

#endif							/* ELMO_DURABILITY_H */
