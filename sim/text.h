/*
 * Small string helpers.  Results are malloc'd; the process aborts when memory
 * runs out (a test tool has nothing better to do).
 */
#ifndef SIM_TEXT_H
#define SIM_TEXT_H

char *xstrdup(const char *s);		/* NULL stays NULL */
char *url_join(const char *base, const char *name);	/* base "/" name */
char *token_auth(const char *token);	/* "Token " token */
/* path is empty, equal to url, or url's last segments ("register" matches "/oscp/2.0/register") */
int path_matches(const char *url, const char *path);

#endif
