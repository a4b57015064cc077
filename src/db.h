/*
 * db.h — how the worker talks to PostgreSQL: one transaction wrapper, one
 * subtransaction wrapper, the statements' saved plans, the extension's
 * catalog entry, and time arithmetic for the wait.
 */
#ifndef ELMO_DB_H
#define ELMO_DB_H

#include "datatype/timestamp.h"
#include "executor/spi.h"

#include "statements.h"

/* The body of a transaction or subtransaction: runs with SPI connected. */
typedef void (*DbWork) (void *arg);

extern bool db_transaction(const char *what, DbWork work, void *arg);
extern ErrorData *db_subtransaction(DbWork work, void *arg, int timeout_ms, bool *timed_out);
extern char *db_keep(const char *s);
extern bool db_take_missing_object(void);

extern void db_use_extension(const char *version);
extern uint64 db_run(StatementId id, Datum *values, const char *nulls, long max_rows);
extern Datum db_value(uint64 row, int column, bool *isnull);
extern char *db_text(uint64 row, int column);
extern TimestampTz db_run_timestamp(StatementId id);

extern bool db_find_extension(char **schema, char **version);
extern Oid	db_find_database(const char *name, bool *allows_connections);

extern long ms_until(TimestampTz t);
extern long timeout_min(long a, long b);

#endif							/* ELMO_DB_H */
