/*
 * tokens.c — keeps the listener's copy of ELMO's tokens current.
 *
 * Any commit that touches the registration bumps the shared generation (its
 * SQL calls _elmo_wake); when it has moved, the worker reads the tokens again
 * (_elmo_listener_tokens) and hands them to routes.c as plain strings.  The
 * copies made on the way are wiped once handed down.
 */
#include "postgres.h"

#include "db.h"
#include "routes.h"
#include "shmem.h"
#include "tokens.h"

static uint64 tokens_generation = 0;	/* 0: never read */

typedef struct TokenRead
{
	char	   *current;
	char	   *previous;
} TokenRead;

static void
read_tokens(void *arg)
{
	TokenRead  *t = (TokenRead *) arg;

	if (db_run(STMT_LISTENER_TOKENS, NULL, NULL, 1) == 1)
	{
		t->current = db_keep(db_text(0, 1));
		t->previous = db_keep(db_text(0, 2));
	}
}

static void
wipe(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
}

/* When the generation moved since the last read: read and hand down. */
void
tokens_refresh(void)
{
	uint64		gen = pg_atomic_read_u64(&elmo_shared->generation);
	TokenRead	t = {NULL, NULL};

	if (gen == tokens_generation)
		return;
	if (db_transaction("loading tokens", read_tokens, &t))
	{
		routes_set_tokens(t.current, t.previous);
		tokens_generation = gen;
	}
	wipe(t.current);
	wipe(t.previous);
}

/* The extension is gone: read them afresh once it is back. */
void
tokens_forget(void)
{
	tokens_generation = 0;
}
