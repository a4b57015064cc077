/*
 * log_filter.c — keeps tokens out of the server log.
 *
 * elmo_register(elmo_url, initial_token) takes the initial token from Taiwan
 * Power's administrator as an argument, so the text of a statement calling
 * it holds that token.  With the default log_min_error_statement, any error
 * in such a statement (a wrong URL, a missing grant, a typo, an error later
 * in the same statement) would write the statement to the server log.  So
 * for a statement whose text calls elmo_register, what the server logs
 * leaves the text out: no STATEMENT line; no quote of it in a syntax error
 * ("at or near ..."), in log_statement's or log_min_duration_statement's
 * lines, nor in their parameter values.  The client still gets its error
 * (a syntax error without the quote).
 */
#include "postgres.h"

#include "tcop/tcopprot.h"

#include "log_filter.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

static bool
identifier_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		c == '_' || c == '$' || (unsigned char) c >= 0x80;
}

/* Does sql name elmo_register (the word, any case; not elmo_registration)? */
bool
log_filter_calls_register(const char *sql)
{
	static const char word[] = "elmo_register";
	size_t		n = sizeof(word) - 1;

	for (const char *p = sql; *p; p++)
		if (pg_strncasecmp(p, word, n) == 0 && (p == sql || !identifier_char(p[-1])) &&
			!identifier_char(p[n]))
			return true;
	return false;
}

/* message with the part from cut on replaced by what */
static char *
replace_from(const char *message, const char *cut, const char *what)
{
	return psprintf("%.*s%s", (int) (cut - message), message, what);
}

static void
filter_log(ErrorData *edata)
{
	const char *sql = debug_query_string;

	if (edata->output_to_server && sql != NULL && sql[0] != '\0' && log_filter_calls_register(sql))
	{
		char	   *at;

		edata->hide_stmt = true;
		if (edata->message != NULL && (at = strstr(edata->message, sql)) != NULL)
			edata->message = replace_from(edata->message, at, "(a statement calling elmo_register: not shown)");
		else if (edata->sqlerrcode == ERRCODE_SYNTAX_ERROR && edata->message != NULL &&
				 (at = strstr(edata->message, " at or near ")) != NULL)
			edata->message = replace_from(edata->message, at, " (in a statement calling elmo_register: not quoted)");
		if (edata->detail != NULL && strncmp(edata->detail, "parameters: ", 12) == 0)
			edata->detail = pstrdup("parameters: not shown (the statement calls elmo_register)");
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* From _PG_init: every backend of the server has the library preloaded. */
void
log_filter_install(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = filter_log;
}
