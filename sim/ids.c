/*
 * Random ids and tokens.
 */
#include "ids.h"

#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

void rand_chars(char *out, size_t n, const char *alphabet)
{
	size_t k = strlen(alphabet), i = 0;
	unsigned char buf[256];
	while (i < n) {
		ssize_t got = getrandom(buf, sizeof buf, 0);
		if (got <= 0)
			continue;
		for (ssize_t j = 0; j < got && i < n; j++) {
			if (buf[j] >= 256 - 256 % k)	/* reject to stay unbiased */
				continue;
			out[i++] = alphabet[buf[j] % k];
		}
	}
	out[n] = '\0';
}

void new_request_id(char out[REQUEST_ID_LEN + 1])
{
	rand_chars(out, REQUEST_ID_LEN, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

void new_elmo_token(char out[ELMO_TOKEN_LEN + 1])
{
	rand_chars(out, ELMO_TOKEN_LEN, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
}
