/*
 * connect.h — whether, and as whom, the worker can connect (connect.c).
 */
#ifndef ELMO_CONNECT_H
#define ELMO_CONNECT_H

extern bool connect_problem(char *msg, char *hint, size_t len, bool *as_superuser);
/* What the worker does once connected and the extension found. */
typedef enum ConnectAction
{
	CONNECT_SERVE,				/* serve as it is connected */
	CONNECT_REFUSE,				/* serve nothing: the role cannot */
	CONNECT_AS_ROLE,			/* restart, to connect as elmo_oscp.role */
	CONNECT_AS_SUPERUSER,		/* restart, to connect as the superuser
								 * (0.1.0's SQL) */
	CONNECT_AGAIN				/* restart, looking first: the role we are
								 * connected as is gone (or renamed) */
} ConnectAction;

extern ConnectAction connect_action(bool as_superuser, const char *version, const char **problem);

#endif							/* ELMO_CONNECT_H */
