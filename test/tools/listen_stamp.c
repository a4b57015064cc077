/*
 * test/tools/listen_stamp.c — LISTEN on some channels and print every
 * notification with the instant it was read, for tests that must show a
 * notification came in time.
 *
 *   listen_stamp SECONDS CHANNEL...
 *
 * Connects with libpq (PGHOST, PGPORT, PGUSER, PGDATABASE from the
 * environment), prints "ready" once listening, then one line per
 * notification: "<ms since the epoch>\t<channel>\t<payload>", flushed at
 * once; exits after SECONDS.  Built by the tests that use it:
 * cc listen_stamp.c -lpq.
 */
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	long long	end;

	if (argc < 3)
	{
		fprintf(stderr, "usage: listen_stamp SECONDS CHANNEL...\n");
		return 2;
	}
	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "listen_stamp: %s", PQerrorMessage(conn));
		return 1;
	}
	for (int i = 2; i < argc; i++)
	{
		char	   *id = PQescapeIdentifier(conn, argv[i], strlen(argv[i]));
		char		sql[256];
		PGresult   *r;

		snprintf(sql, sizeof(sql), "LISTEN %s", id);
		PQfreemem(id);
		r = PQexec(conn, sql);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "listen_stamp: %s", PQerrorMessage(conn));
			return 1;
		}
		PQclear(r);
	}
	printf("ready\n");
	fflush(stdout);
	end = now_ms() + atoll(argv[1]) * 1000;
	while (now_ms() < end)
	{
		int			sock = PQsocket(conn);
		fd_set		in;
		struct timeval tv = {0, 100000};
		PGnotify   *n;

		FD_ZERO(&in);
		FD_SET(sock, &in);
		if (select(sock + 1, &in, NULL, NULL, &tv) < 0)
			break;
		if (!PQconsumeInput(conn))
		{
			fprintf(stderr, "listen_stamp: %s", PQerrorMessage(conn));
			return 1;
		}
		while ((n = PQnotifies(conn)) != NULL)
		{
			printf("%lld\t%s\t%s\n", now_ms(), n->relname, n->extra);
			fflush(stdout);
			PQfreemem(n);
		}
	}
	PQfinish(conn);
	return 0;
}
