/*
 * statements.c — every SQL statement the C code runs.
 *
 * Each is one call of an internal _elmo_* function, with parameters: the C
 * side never reads or writes a table itself and never builds SQL from data.
 *
 * A new library may run against the SQL of the previous release: between
 * installing the new package and ALTER EXTENSION elmo_oscp UPDATE, the worker
 * must go on answering ELMO.  So a statement that calls a function 0.1.0 did
 * not have keeps, next to it, the statement 0.1.0 offered instead; the worker
 * picks one by pg_extension.extversion.  The functions that 0.1.0 declares
 * keep their names, arguments and result columns.
 */
#include "postgres.h"

#include "catalog/pg_type.h"

#include "statements.h"

const Statement statements[STMT_COUNT] = {
	/* inbound */
	/* 0.1.0 stores every message as received, and _elmo_apply claims it */
	[STMT_RECEIVE] = {"_elmo_receive", 7, {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, BOOLOID},
		"SELECT status, error, message_id FROM _elmo_receive($1, $2, $3, $4, $5, $6, $7)",
	"SELECT status, error, message_id FROM _elmo_receive($1, $2, $3, $4, $5, $6), (SELECT $7) p"},
	[STMT_APPLY] = {"_elmo_apply", 2, {INT8OID, BOOLOID}, "SELECT _elmo_apply($1, $2)",
	"SELECT _elmo_apply($1) FROM (SELECT $2) p"},
	[STMT_APPLY_LATER] = {"_elmo_apply_later", 1, {INT8OID}, "SELECT _elmo_apply_later($1)",
	"SELECT NULL FROM (SELECT $1) p"},
	[STMT_APPLY_FAILED] = {"_elmo_apply_failed", 3, {INT8OID, TEXTOID, TEXTOID},
	"SELECT _elmo_apply_failed($1, $2, $3)"},
	[STMT_APPLIES_DUE] = {"_elmo_applies_due", 1, {INT4OID}, "SELECT _elmo_applies_due($1)"},
	[STMT_NEXT_APPLY_AT] = {"_elmo_next_apply_at", 0, {0}, "SELECT _elmo_next_apply_at()"},
	[STMT_LISTENER_TOKENS] = {"_elmo_listener_tokens", 0, {0},
		"SELECT current_token, previous_token FROM _elmo_listener_tokens()",
	"SELECT our_token, previous_token FROM elmo_registration"},
	/* outbound */
	[STMT_RECOVER] = {"_elmo_recover", 0, {0}, "SELECT _elmo_recover()"},
	[STMT_CLAIM] = {"_elmo_claim", 1, {INT4OID},
	"SELECT id, method, url, \"authorization\", request_id, correlation_id, body FROM _elmo_claim($1)"},
	[STMT_NEXT_ATTEMPT_AT] = {"_elmo_next_attempt_at", 0, {0}, "SELECT _elmo_next_attempt_at()"},
	[STMT_RECORD] = {"_elmo_record", 5, {INT8OID, INT4OID, TEXTOID, TEXTOID, JSONBOID},
	"SELECT _elmo_record($1, $2, $3, $4, $5)"},
	[STMT_REQUEUE] = {"_elmo_requeue", 1, {INT8OID}, "SELECT _elmo_requeue($1)",
		"UPDATE elmo_outbox SET state = 'queued', next_attempt_at = now() + interval '1 min' "
	"WHERE id = $1 AND state = 'sending'"},
	[STMT_OUTBOX_OUTCOME] = {"_elmo_outbox_outcome", 1, {INT8OID},
		"SELECT state, last_status, last_error, queued_xmin FROM _elmo_outbox_outcome($1)",
	"SELECT state, last_status, last_error, xmin FROM elmo_outbox WHERE id = $1"},
	/* timers */
	[STMT_HOUSEKEEPING] = {"_elmo_housekeeping", 0, {0}, "SELECT _elmo_housekeeping()"},
	/* 0.1.0 has no capacity_in_force: nothing to keep */
	[STMT_CAPACITY_UPKEEP] = {"_elmo_capacity_upkeep", 1, {TEXTOID}, "SELECT _elmo_capacity_upkeep($1)",
	"SELECT NULL::timestamptz FROM (SELECT $1) p"},
	/* the worker's role, and other roles' rights (run_as.c) */
	[STMT_REGISTRATION_LIVE] = {"_elmo_registration_live", 0, {0}, "SELECT _elmo_registration_live()",
	"SELECT EXISTS (SELECT FROM elmo_registration WHERE state <> 'unregistered')"},
	[STMT_USAGE_READ] = {"_elmo_usage_read", 1, {TEXTOID},
	"SELECT group_id, kwh, measured_at FROM _elmo_usage_read($1)"},
};

const char *
statement_sql(StatementId id, bool extension_0_1_0)
{
	const Statement *s = &statements[id];

	return (extension_0_1_0 && s->sql_0_1_0 != NULL) ? s->sql_0_1_0 : s->sql;
}
