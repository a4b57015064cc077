/*
 * elmo-sim: a standalone simulator of Taiwan Power's ELMO server speaking
 * OSCP 2.0 to a CSMS, for development and tests without the real testbed.
 *
 *   ELMO's OSCP API           /oscp/2.0/...               (what a CSMS calls)
 *   the testbed's triggers    /trigger-callback/2.0/...   (make ELMO call the CSMS)
 *   the simulator's controls  /sim/...                    (tests: messages, faults, clock)
 *
 * Run with --help for the flags. Modules: oscp.c (the OSCP API), callbacks.c
 * (ELMO -> CSMS and the daily schedule), api.c (triggers and /sim), state.c,
 * util.c.
 */
#include "sim.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BODY (4 * 1024 * 1024)
#define DEFAULT_STATIONS "B6734_AE0100_00848825118=390,B6734_AE0100_00848821001=100"
#define DEFAULT_OTHER_STATIONS "Q1907_CC4701_18364851681"

config_t cfg = {
	.port = 8090,
	.listen = "127.0.0.1",
	.tz_offset_s = 8 * 3600,
	.register_delay_ms = 20,
	.handshake_delay_ms = 5000,
	.schedule = 1,
	.callback_timeout_ms = 20000,
	.assign_kw = 100,
};
volatile int stopping;
volatile int exit_status;

static void usage(FILE *f)
{
	fprintf(f,
"usage: elmo-sim [options]\n"
"A local simulator of Taiwan Power's ELMO server (OSCP 2.0 Capacity Provider).\n\n"
"  --port N                  port to listen on (default 8090; 0 = any free port)\n"
"  --listen ADDR             address to listen on (default 127.0.0.1)\n"
"  --port-file PATH          write the port listened on to PATH once ready\n"
"  --initial-token T         ELMO's initial token (default ELMO-TESTBED-TOKEN)\n"
"  --stations LIST           this CSMS's stations: id[=kW],... (kW of the 10:00\n"
"                            assignment; default " DEFAULT_STATIONS ")\n"
"  --other-stations LIST     stations ELMO knows that belong to no CSMS: measurements\n"
"                            accepted, no assignments (default " DEFAULT_OTHER_STATIONS ")\n"
"  --assign-kw N             kW of a station listed without =kW (default 100)\n"
"  --tz-offset +HH:MM        ELMO's time zone, fixed offset (default +08:00, Asia/Taipei)\n"
"  --allow-local-urls        also accept http(s)://127.0.0.1:PORT and localhost:PORT\n"
"                            base_urls in register (the real rule refuses them)\n"
"  --register-delay-ms N     ELMO's register callback N ms after its 204 (default 20)\n"
"  --handshake-delay-ms N    its handshake N ms after the register callback (default 5000)\n"
"  --register-callback-first send the register callback BEFORE answering the CSMS's\n"
"                            register (the race of capture 03)\n"
"  --register-callback-twice with --register-callback-first: send it again after the 204\n"
"  --no-schedule             no 10:00 assignment / 16:00 automatic reply\n"
"  --callback-timeout-ms N   give up on a callback after N ms (default 20000, like ELMO)\n"
"  --exit-on-callback-failure exit (status 3) when the CSMS fails ELMO's register or\n"
"                            handshake, as the real ELMO process crashes\n"
"  --ca-file PATH            CA certificates for https callbacks\n"
"  --insecure                do not verify TLS certificates of callbacks\n"
"  --verbose                 log /sim requests and message bodies too\n"
"  --help                    this text\n\n"
"Control API for tests (no auth): GET/DELETE /sim/messages, GET/DELETE /sim/callbacks,\n"
"GET /sim/state, GET/POST /sim/clock, GET/POST /sim/config, POST/DELETE /sim/fault,\n"
"POST /sim/reset, /sim/assign, /sim/reply, /sim/emergency, /sim/admin/reset-token.\n");
}

static int add_stations(const char *list, int own)
{
	char *copy = strdup(list), *save = NULL, *tok;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *end;
		station_t *s;
		while (isspace((unsigned char)*tok))
			tok++;
		if (!*tok)
			continue;
		st.stations = realloc(st.stations, (st.nstations + 1) * sizeof *st.stations);
		s = &st.stations[st.nstations++];
		memset(s, 0, sizeof *s);
		s->own = own;
		s->kw = cfg.assign_kw;
		if (eq) {
			*eq = '\0';
			s->kw = strtod(eq + 1, &end);
			if (*end || s->kw < 0) {
				fprintf(stderr, "elmo-sim: bad station capacity in '%s'\n", eq + 1);
				free(copy);
				return -1;
			}
		}
		s->id = strdup(tok);
	}
	free(copy);
	return 0;
}

static int to_int(const char *s, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < 0 || v > 1000000000)
		return -1;
	*out = (int)v;
	return 0;
}

struct conn {
	char *buf;
	size_t len;
	int too_big;
};

static enum MHD_Result add_kv(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	json_t *o = cls, *old;
	char name[256];
	size_t i;
	(void)kind;
	for (i = 0; key[i] && i < sizeof name - 1; i++)
		name[i] = (char)tolower((unsigned char)key[i]);
	name[i] = '\0';
	if ((old = json_object_get(o, name)) && json_is_string(old) && value) {
		size_t n = json_string_length(old) + strlen(value) + 3;
		char *j = malloc(n);
		snprintf(j, n, "%s, %s", json_string_value(old), value);
		json_object_set_new(o, name, json_string(j));
		free(j);
	} else
		json_object_set_new(o, name, value ? json_string(value) : json_string(""));
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **ptr)
{
	struct conn *k = *ptr;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	resp_t r;
	int quiet = 0;
	(void)cls;
	(void)version;
	if (!k) {
		*ptr = calloc(1, sizeof *k);
		return *ptr ? MHD_YES : MHD_NO;
	}
	if (*upload_size) {
		if (k->len + *upload_size > MAX_BODY)
			k->too_big = 1;
		else {
			char *nb = realloc(k->buf, k->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			k->buf = nb;
			memcpy(k->buf + k->len, upload, *upload_size);
			k->len += *upload_size;
			k->buf[k->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (k->too_big)
		r = R(413, error_str(413, "request entity too large"));
	else if (!strncmp(url, OSCP_PREFIX, strlen(OSCP_PREFIX))) {
		json_t *h = json_object();
		MHD_get_connection_values(c, MHD_HEADER_KIND, add_kv, h);
		r = oscp_handle(method, url, h, k->buf, k->len);
		json_decref(h);
		quiet = 1;	/* oscp_handle logs its own line */
	} else if (!strncmp(url, TRIGGER_PREFIX, strlen(TRIGGER_PREFIX)))
		r = trigger_handle(method, url, k->buf, k->len);
	else if (!strncmp(url, "/sim/", 5)) {
		json_t *q = json_object();
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_kv, q);
		r = sim_handle(method, url, q, k->buf, k->len);
		json_decref(q);
		quiet = !cfg.verbose;
	} else {
		char m[600];
		snprintf(m, sizeof m, "Cannot %s %.500s", method, url);
		r = R(404, error_str(404, m));
	}
	if (!quiet)
		logmsg("%s %s -> %d%s%s", method, url, r.status, r.status >= 400 && r.body ? " " : "",
		       r.status >= 400 && r.body ? r.body : "");
	if (r.drop) {
		free(r.body);
		return MHD_NO;	/* close the connection without an answer */
	}
	if (r.body) {
		resp = MHD_create_response_from_buffer(strlen(r.body), r.body, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	} else
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(c, (unsigned)r.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ptr, enum MHD_RequestTerminationCode tc)
{
	struct conn *k = *ptr;
	(void)cls;
	(void)c;
	(void)tc;
	if (k) {
		free(k->buf);
		free(k);
		*ptr = NULL;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, 0, 'p' },
		{ "listen", required_argument, 0, 'l' },
		{ "port-file", required_argument, 0, 'P' },
		{ "initial-token", required_argument, 0, 't' },
		{ "stations", required_argument, 0, 's' },
		{ "other-stations", required_argument, 0, 'o' },
		{ "assign-kw", required_argument, 0, 'k' },
		{ "tz-offset", required_argument, 0, 'z' },
		{ "allow-local-urls", no_argument, 0, 'L' },
		{ "register-delay-ms", required_argument, 0, 'r' },
		{ "handshake-delay-ms", required_argument, 0, 'H' },
		{ "register-callback-first", no_argument, 0, 'F' },
		{ "register-callback-twice", no_argument, 0, 'T' },
		{ "no-schedule", no_argument, 0, 'N' },
		{ "callback-timeout-ms", required_argument, 0, 'c' },
		{ "exit-on-callback-failure", no_argument, 0, 'X' },
		{ "ca-file", required_argument, 0, 'C' },
		{ "insecure", no_argument, 0, 'I' },
		{ "verbose", no_argument, 0, 'v' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *stations = DEFAULT_STATIONS, *others = DEFAULT_OTHER_STATIONS;
	struct sockaddr_storage ss;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	sigset_t sigs;
	int o, sig, port;
	char m[48];

	cfg.initial_token = "ELMO-TESTBED-TOKEN";
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;
		switch (o) {
		case 'p': bad = to_int(optarg, &cfg.port) || cfg.port > 65535; break;
		case 'l': bad = strlen(optarg) >= sizeof cfg.listen;
			  snprintf(cfg.listen, sizeof cfg.listen, "%s", optarg); break;
		case 'P': cfg.port_file = optarg; break;
		case 't': cfg.initial_token = optarg; bad = !*optarg || strlen(optarg) >= ELMO_TOKEN_LEN + 1000; break;
		case 's': stations = optarg; break;
		case 'o': others = optarg; break;
		case 'k': cfg.assign_kw = strtod(optarg, NULL); break;
		case 'z': bad = parse_tz(optarg, &cfg.tz_offset_s); break;
		case 'L': cfg.allow_local_urls = 1; break;
		case 'r': bad = to_int(optarg, &cfg.register_delay_ms); break;
		case 'H': bad = to_int(optarg, &cfg.handshake_delay_ms); break;
		case 'F': cfg.register_first = 1; break;
		case 'T': cfg.register_twice = 1; break;
		case 'N': cfg.schedule = 0; break;
		case 'c': bad = to_int(optarg, &cfg.callback_timeout_ms) || cfg.callback_timeout_ms < 1; break;
		case 'X': cfg.exit_on_callback_failure = 1; break;
		case 'C': cfg.ca_file = optarg; break;
		case 'I': cfg.insecure = 1; break;
		case 'v': cfg.verbose = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (bad) {
			fprintf(stderr, "elmo-sim: bad value for %s: %s\n", argv[optind - 1 - (optarg == argv[optind - 1])], optarg);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	state_init();
	if (add_stations(stations, 1) || add_stations(others, 0))
		return 2;

	memset(&ss, 0, sizeof ss);
	if (inet_pton(AF_INET, cfg.listen, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)cfg.port);
	} else if (inet_pton(AF_INET6, cfg.listen, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)cfg.port);
		flags |= MHD_USE_IPv6;
	} else {
		fprintf(stderr, "elmo-sim: --listen needs a numeric IPv4 or IPv6 address: %s\n", cfg.listen);
		return 2;
	}

	/* SIGINT/SIGTERM are taken by sigwait() below; every thread inherits the mask */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || cb_start() != 0) {
		fprintf(stderr, "elmo-sim: cannot start libcurl\n");
		return 1;
	}
	d = MHD_start_daemon(flags, (uint16_t)cfg.port, NULL, NULL, on_request, NULL,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
			     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "elmo-sim: cannot listen on %s:%d\n", cfg.listen, cfg.port);
		cb_stop();
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : cfg.port;
	mask_token(cfg.initial_token, m);
	logmsg("listening on http://%s%s%s:%d  (OSCP at %s, initial token %s, %zu station(s), schedule %s, "
	       "local urls %s)", ss.ss_family == AF_INET6 ? "[" : "", cfg.listen, ss.ss_family == AF_INET6 ? "]" : "",
	       port, OSCP_PREFIX, m, st.nstations, cfg.schedule ? "on" : "off", cfg.allow_local_urls ? "allowed" : "refused");
	if (cfg.port_file) {
		FILE *f = fopen(cfg.port_file, "w");
		if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
			fprintf(stderr, "elmo-sim: cannot write %s\n", cfg.port_file);
			MHD_stop_daemon(d);
			cb_stop();
			return 1;
		}
	}

	sigwait(&sigs, &sig);
	logmsg("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	stopping = 1;
	MHD_stop_daemon(d);
	cb_stop();
	curl_global_cleanup();
	return exit_status;
}
