/*
 * statements.h — every SQL statement the C code runs, in one table
 * (statements.c): the worker's side of src/CONTRACT.md.
 */
#ifndef ELMO_STATEMENTS_H
#define ELMO_STATEMENTS_H

#define STATEMENT_MAX_ARGS 7

typedef enum StatementId
{
	/* inbound */
	STMT_RECEIVE,
	STMT_APPLY,
	STMT_APPLY_LATER,
	STMT_APPLY_FAILED,
	STMT_APPLIES_DUE,
	STMT_NEXT_APPLY_AT,
	STMT_LISTENER_TOKENS,
	/* outbound */
	STMT_RECOVER,
	STMT_CLAIM,
	STMT_NEXT_ATTEMPT_AT,
	STMT_RECORD,
	STMT_REQUEUE,
	STMT_OUTBOX_OUTCOME,
	/* timers */
	STMT_HOUSEKEEPING,
	STMT_CAPACITY_UPKEEP,
	/* the worker's role, and other roles' rights */
	STMT_REGISTRATION_LIVE,
	STMT_USAGE_READ,
	STMT_COUNT
} StatementId;

typedef struct Statement
{
	const char *name;			/* for errors */
	int			nargs;
	Oid			argtypes[STATEMENT_MAX_ARGS];
	const char *sql;
	const char *sql_0_1_0;		/* what a 0.1.0 install script offers
								 * instead; NULL: the same */
} Statement;

extern const Statement statements[STMT_COUNT];

extern const char *statement_sql(StatementId id, bool extension_0_1_0);

#endif							/* ELMO_STATEMENTS_H */
