/*
 * no_postgres.h — put in front of every transport file by the compiler
 * (the Makefile passes "-include src/no_postgres.h" for them).
 *
 * http_server.c, routes.c and http_client.c run inside libmicrohttpd's and
 * libcurl's callbacks.  A PostgreSQL error raised there would longjmp through
 * the libraries' frames, and memory from a memory context could vanish under
 * them at the end of a transaction.  So these files use no PostgreSQL API at
 * all, and the compiler enforces it: once these names are poisoned, using one
 * of them, or including any PostgreSQL header (they all use them), is a
 * compile error.  Settings reach these files as plain C values, counters
 * leave them as plain C numbers, and the worker does the rest.
 */
#ifdef PG_VERSION_NUM
#error "a transport file (no PostgreSQL API) was compiled after a PostgreSQL header"
#endif

#pragma GCC poison PG_VERSION_NUM Datum MemoryContext CurrentMemoryContext TopMemoryContext
#pragma GCC poison palloc palloc0 pfree pstrdup psprintf repalloc
#pragma GCC poison ereport elog errstart errmsg PG_TRY PG_CATCH PG_RE_THROW
#pragma GCC poison SPI_connect SPI_execute SPI_execute_plan SetLatch
