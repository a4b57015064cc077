/*
 * settings.c — every elmo_oscp.* setting: its storage, default, limits and
 * checks: a table of text settings, a table of integer ones, and the one
 * boolean.  Defined once, by _PG_init, while shared_preload_libraries is
 * loaded.
 */
#include "postgres.h"

#include <limits.h>

#include "pgtime.h"
#include "utils/guc.h"

#include "addresses.h"
#include "settings.h"

char	   *elmo_database = NULL;
char	   *elmo_listen_addresses = NULL;
int			elmo_port = 8780;
char	   *elmo_path_prefix = NULL;
int			elmo_max_request_size = 1024 * 1024;
char	   *elmo_tls_cert_file = NULL;
char	   *elmo_tls_key_file = NULL;
int			elmo_max_connections = 256;
int			elmo_connection_timeout = 10;
int			elmo_max_connections_per_client = 64;
int			elmo_request_receive_timeout = 10000;
char	   *elmo_allowed_clients = NULL;
int			elmo_apply_timeout = 2000;
int			elmo_batch_max = 256;
char	   *elmo_ca_file = NULL;
int			elmo_connect_timeout = 5000;
int			elmo_request_timeout = 15000;
int			elmo_max_in_flight = 32;
char	   *elmo_role = NULL;
char	   *elmo_usage_source = NULL;
bool		elmo_allow_drop_registered = false;

/* read in SQL only */
static char *elmo_public_url = NULL;
static char *elmo_timezone = NULL;
static int	elmo_max_attempts = 50;
static int	elmo_max_retry_age = 86400;
static char *elmo_adjust_deadline = NULL;
static bool elmo_enforce_deadlines = true;
static int	elmo_report_interval = 60;
static int	elmo_retention = 7 * 86400;
static char *elmo_trigger_callback_url = NULL;
static char *elmo_day_ahead_deadline = NULL;
static int	elmo_unreachable_alert_after = 300;

static bool
check_path_prefix(char **newval, void **extra, GucSource source)
{
	size_t		len = strlen(*newval);

	if (len == 0 || (*newval)[0] != '/' || (*newval)[len - 1] == '/')
	{
		GUC_check_errdetail("elmo_oscp.path_prefix must start with \"/\" and must not end with \"/\".");
		return false;
	}
	return true;
}

static bool
check_role(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0')
	{
		GUC_check_errdetail("elmo_oscp.role must name a role, for example \"%s\".", ELMO_WORKER_ROLE);
		return false;
	}
	return true;
}

static bool
check_timezone(char **newval, void **extra, GucSource source)
{
	/* The zone is used in SQL (AT TIME ZONE): refuse what PostgreSQL does not know. */
	if ((*newval)[0] == '\0' || pg_tzset(*newval) == NULL)
	{
		GUC_check_errdetail("elmo_oscp.timezone must name a time zone, for example \"Asia/Taipei\".");
		return false;
	}
	return true;
}

static bool
check_deadline(char **newval, void **extra, GucSource source)
{
	int			h,
				m;
	char		tail;

	if (sscanf(*newval, "%d:%d%c", &h, &m, &tail) != 2 || h < 0 || h > 23 || m < 0 || m > 59)
	{
		GUC_check_errdetail("It must be a local time of day as HH:MM, for example \"14:00\".");
		return false;
	}
	return true;
}

static bool
check_allowed_clients(char **newval, void **extra, GucSource source)
{
	char		err[200];

	if (!address_list_parse(*newval, NULL, NULL, err, sizeof(err)))
	{
		GUC_check_errdetail("elmo_oscp.allowed_clients: %s.", err);
		GUC_check_errhint("List IP addresses and CIDR ranges separated by commas, for example \"203.0.113.7, 10.1.0.0/16\"; empty admits any client.");
		return false;
	}
	return true;
}

typedef struct TextSetting
{
	const char *name;
	const char *description;
	const char *detail;
	char	  **value;
	const char *boot;
	GucContext	context;
	GucStringCheckHook check;
} TextSetting;

typedef struct IntSetting
{
	const char *name;
	const char *description;
	int		   *value;
	int			boot;
	int			min;
	int			max;
	GucContext	context;
	int			unit;
} IntSetting;

static const TextSetting text_settings[] = {
	{"database", "Database the elmo_oscp worker connects to.", "The extension must be created in this database.", &elmo_database, "postgres", PGC_POSTMASTER},
	{"role", "Role the elmo_oscp worker connects as; the CSMS's triggers run with its rights.", "CREATE EXTENSION elmo_oscp creates " ELMO_WORKER_ROLE "; another role needs its privileges (GRANT " ELMO_WORKER_ROLE " TO ...).", &elmo_role, ELMO_WORKER_ROLE, PGC_POSTMASTER, check_role},
	{"listen_addresses", "Address the OSCP listener binds to.", "One IPv4 or IPv6 address, or \"*\" for all.", &elmo_listen_addresses, "127.0.0.1", PGC_POSTMASTER},
	{"path_prefix", "URL path under which ELMO's callbacks are served.", NULL, &elmo_path_prefix, "/oscp/fp/2.0", PGC_SIGHUP, check_path_prefix},
	{"public_url", "This CSMS's OSCP base URL as ELMO reaches it.", "Sent to ELMO in register; for example https://csms.example.com/oscp/fp/2.0.", &elmo_public_url, "", PGC_SIGHUP},
	{"timezone", "Time zone of ELMO's day (10:00, 14:00, 16:00, today and tomorrow).", NULL, &elmo_timezone, "Asia/Taipei", PGC_SIGHUP, check_timezone},
	{"allowed_clients", "Addresses and CIDR ranges that may connect to the OSCP listener; empty: any.", "Others are refused when they connect, before they send anything.", &elmo_allowed_clients, "", PGC_SIGHUP, check_allowed_clients},
	{"tls_cert_file", "PEM certificate (chain) for HTTPS; empty serves plain HTTP.", NULL, &elmo_tls_cert_file, "", PGC_POSTMASTER},
	{"tls_key_file", "PEM private key for HTTPS.", NULL, &elmo_tls_key_file, "", PGC_POSTMASTER},
	{"ca_file", "CA bundle used to verify ELMO's certificate; empty uses the system's.", NULL, &elmo_ca_file, "", PGC_SIGHUP},
	{"adjust_deadline", "Local time after which elmo_adjust_capacity refuses requests for tomorrow.", NULL, &elmo_adjust_deadline, "14:00", PGC_SIGHUP, check_deadline},
	{"usage_source", "Relation or function giving (group_id, kwh) for automatic usage reports.", "Empty: no automatic reports.", &elmo_usage_source, "", PGC_SIGHUP},
	{"trigger_callback_url", "Testbed trigger-callback base URL; empty derives it from the ELMO URL.", NULL, &elmo_trigger_callback_url, "", PGC_SIGHUP},
	{"day_ahead_deadline", "Local time by which tomorrow's day-ahead assignment must have come, or an alert is raised.", "ELMO sends it at 10:00.", &elmo_day_ahead_deadline, "10:05", PGC_SIGHUP, check_deadline},
};

static const IntSetting int_settings[] = {
	{"port", "TCP port of the OSCP listener.", &elmo_port, 8780, 1, 65535, PGC_POSTMASTER, 0},
	{"max_request_size", "Largest request body the listener accepts.", &elmo_max_request_size, 1024 * 1024, 1024, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_BYTE},
	{"max_connections", "Most concurrent HTTP connections the listener keeps.", &elmo_max_connections, 256, 1, 10000, PGC_POSTMASTER, 0},
	{"max_connections_per_client", "Most concurrent HTTP connections from one client address.", &elmo_max_connections_per_client, 64, 1, 10000, PGC_SIGHUP, 0},
	{"connection_timeout", "Idle HTTP connections are closed after this long.", &elmo_connection_timeout, 10, 1, 3600, PGC_POSTMASTER, GUC_UNIT_S},
	{"request_receive_timeout", "Time a client has to send a whole request, and to take its answer.", &elmo_request_receive_timeout, 10000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"apply_timeout", "Time budget for applying one batch of received messages before answering.", &elmo_apply_timeout, 2000, 1, 15000, PGC_SIGHUP, GUC_UNIT_MS},
	{"batch_max", "Most requests committed together (group commit).", &elmo_batch_max, 256, 1, 10000, PGC_SIGHUP, 0},
	{"connect_timeout", "Connect timeout for requests to ELMO.", &elmo_connect_timeout, 5000, 1, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"request_timeout", "Total timeout of one request to ELMO.", &elmo_request_timeout, 15000, 1, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"max_in_flight", "Most requests to ELMO in flight at once.", &elmo_max_in_flight, 32, 1, 1024, PGC_SIGHUP, 0},
	{"max_attempts", "Attempts before a message to ELMO that keeps failing is given up.", &elmo_max_attempts, 50, 1, 100000, PGC_SIGHUP, 0},
	{"max_retry_age", "Age after which a message to ELMO that keeps failing is given up.", &elmo_max_retry_age, 86400, 1, INT_MAX, PGC_SIGHUP, GUC_UNIT_S},
	{"report_interval", "Interval of the automatic usage reports (aligned to it).", &elmo_report_interval, 60, 1, 86400, PGC_SIGHUP, GUC_UNIT_S},
	{"retention", "How long delivered and applied messages are kept.", &elmo_retention, 7 * 86400, 60, INT_MAX, PGC_SIGHUP, GUC_UNIT_S},
	{"unreachable_alert_after", "An alert is raised when ELMO has been unreachable for longer than this.", &elmo_unreachable_alert_after, 300, 1, INT_MAX, PGC_SIGHUP, GUC_UNIT_S},
};

/* Only in _PG_init, from shared_preload_libraries (the names are copied). */
void
settings_define(void)
{
	char		name[64];

	for (size_t i = 0; i < lengthof(text_settings); i++)
	{
		const TextSetting *s = &text_settings[i];

		snprintf(name, sizeof(name), "elmo_oscp.%s", s->name);
		DefineCustomStringVariable(name, s->description, s->detail, s->value, s->boot,
								   s->context, 0, s->check, NULL, NULL);
	}
	for (size_t i = 0; i < lengthof(int_settings); i++)
	{
		const IntSetting *s = &int_settings[i];

		snprintf(name, sizeof(name), "elmo_oscp.%s", s->name);
		DefineCustomIntVariable(name, s->description, NULL, s->value, s->boot,
								s->min, s->max, s->context, s->unit, NULL, NULL, NULL);
	}
	DefineCustomBoolVariable("elmo_oscp.allow_drop_registered",
							 "Let DROP EXTENSION elmo_oscp drop a registration ELMO still holds.",
							 "ELMO's token goes with it; a new one must come from Taiwan Power's administrator.",
							 &elmo_allow_drop_registered, false, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("elmo_oscp.enforce_deadlines",
							 "Enforce ELMO's negotiation time rules in elmo_adjust_capacity.",
							 "Switch off only in tests.",
							 &elmo_enforce_deadlines, true, PGC_SUSET, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("elmo_oscp");
}
