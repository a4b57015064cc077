/*
 * Small string helpers.
 */
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *join(const char *a, const char *sep, const char *b)
{
	size_t n = strlen(a) + strlen(sep) + strlen(b) + 1;
	char *s = malloc(n);
	if (!s)
		abort();
	snprintf(s, n, "%s%s%s", a, sep, b);
	return s;
}

char *xstrdup(const char *s)
{
	return s ? join(s, "", "") : NULL;
}

char *url_join(const char *base, const char *name)
{
	return join(base, "/", name);
}

char *token_auth(const char *token)
{
	return join("Token ", "", token);
}

int path_matches(const char *url, const char *path)
{
	size_t ul = strlen(url), pl = strlen(path);
	return !pl || !strcmp(url, path) || (ul > pl && !strcmp(url + ul - pl, path) && url[ul - pl - 1] == '/');
}
