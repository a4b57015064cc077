/*
 * ids.c — random identifiers.  Both raise (in a transaction) when the
 * operating system has no strong randomness to give.
 */
#include "postgres.h"

#include "ids.h"

static void
random_bytes(uint8 *buf, size_t len)
{
	if (!pg_strong_random(buf, len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for an elmo_oscp token or request id")));
}

/* 48 random bytes as base64url without padding: 64 characters. */
void
ids_token(char out[ELMO_TOKEN_LEN + 1])
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint8		raw[48];
	int			o = 0;

	random_bytes(raw, sizeof(raw));
	for (int i = 0; i < 48; i += 3)
	{
		uint32		v = ((uint32) raw[i] << 16) | ((uint32) raw[i + 1] << 8) | raw[i + 2];

		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = alphabet[(v >> 6) & 63];
		out[o++] = alphabet[v & 63];
	}
	out[o] = '\0';
	explicit_bzero(raw, sizeof(raw));
}

/* 32 characters of [0-9A-Z], uniformly (rejection sampling). */
void
ids_request_id(char out[ELMO_REQUEST_ID_LEN + 1])
{
	static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
	int			o = 0;

	while (o < ELMO_REQUEST_ID_LEN)
	{
		uint8		raw[48];

		random_bytes(raw, sizeof(raw));
		for (int i = 0; i < 48 && o < ELMO_REQUEST_ID_LEN; i++)
			if (raw[i] < 252)	/* 252 = 7 * 36 */
				out[o++] = alphabet[raw[i] % 36];
	}
	out[ELMO_REQUEST_ID_LEN] = '\0';
}
