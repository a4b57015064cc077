/*
 * elmo-sim: a standalone simulator of Taiwan Power's ELMO server speaking
 * OSCP 2.0 to a CSMS, for development and tests without the real testbed.
 *
 *   ELMO's OSCP API           /oscp/2.0/...               (what a CSMS calls)
 *   the testbed's triggers    /trigger-callback/2.0/...   (make ELMO call the CSMS)
 *   the simulator's controls  /sim/...                    (tests: records, faults, clock)
 *
 * The modules are layers, listed bottom to top in sim/Makefile (LAYERS): each
 * calls and includes only those below it, and the build checks that it does.
 */
#include "api_doc.h"
#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "delivery.h"
#include "http_server.h"
#include "log.h"
#include "oscp.h"
#include "schedule.h"
#include "state.h"
#include "stations.h"

#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_STATIONS "B6734_AE0100_00848825118=390,B6734_AE0100_00848821001=100"
#define DEFAULT_OTHER_STATIONS "Q1907_CC4701_18364851681"

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
"  --clock TIME              start the simulated clock at TIME and let it run on from\n"
"                            there: 2026-12-01T09:59:30+08:00, or HH:MM[:SS] for that\n"
"                            local time today (ELMO's zone); default: the real clock\n"
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
"  --help                    this text\n"
"  --help-api                the control API (/sim/...): every endpoint, with an\n"
"                            example request and its answer\n\n"
"ELMO's day runs on the simulated clock: at 10:00 it assigns tomorrow's capacity to\n"
"each station of --stations, takes adjust requests until 14:05, and at 16:00 replies\n"
"to those still waiting.  Move the clock with --clock or POST /sim/clock.\n");
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

/* --clock: a date-time, or a local time of day today */
static int clock_arg(const char *s, int64_t *at)
{
	int64_t tod;
	if (!parse_time_of_day(s, &tod)) {
		*at = local_midnight(real_now_ms(), cfg.tz_offset_s) + tod;
		return 0;
	}
	return parse_time(s, 0, cfg.tz_offset_s, at);
}

static const struct option opts[] = {
	{ "port", required_argument, 0, 'p' },
	{ "listen", required_argument, 0, 'l' },
	{ "port-file", required_argument, 0, 'P' },
	{ "initial-token", required_argument, 0, 't' },
	{ "stations", required_argument, 0, 's' },
	{ "other-stations", required_argument, 0, 'o' },
	{ "assign-kw", required_argument, 0, 'k' },
	{ "tz-offset", required_argument, 0, 'z' },
	{ "clock", required_argument, 0, 'K' },
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
	{ "help-api", no_argument, 0, 'A' },
	{ 0, 0, 0, 0 },
};

/* the flags into cfg; -1 on a bad one (said on stderr), 1 when only help was asked */
static int parse_args(int argc, char **argv, const char **stations, const char **others, const char **clock)
{
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;
		switch (o) {
		case 'p': bad = to_int(optarg, &cfg.port) || cfg.port > 65535; break;
		case 'l': bad = strlen(optarg) >= sizeof cfg.listen;
			  snprintf(cfg.listen, sizeof cfg.listen, "%s", optarg); break;
		case 'P': cfg.port_file = optarg; break;
		case 't': cfg.initial_token = optarg; bad = !*optarg || strlen(optarg) >= ELMO_TOKEN_LEN + 1000; break;
		case 's': *stations = optarg; break;
		case 'o': *others = optarg; break;
		case 'k': cfg.assign_kw = strtod(optarg, NULL); break;
		case 'z': bad = parse_tz(optarg, &cfg.tz_offset_s); break;
		case 'K': *clock = optarg; break;
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
		case 'h': usage(stdout); return 1;
		case 'A': api_doc_print(stdout); return 1;
		default: usage(stderr); return -1;
		}
		if (bad) {
			fprintf(stderr, "elmo-sim: bad value for %s: %s\n", argv[optind - 1 - (optarg == argv[optind - 1])], optarg);
			return -1;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static int write_port_file(int port)
{
	FILE *f;
	if (!cfg.port_file)
		return 0;
	f = fopen(cfg.port_file, "w");
	if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
		fprintf(stderr, "elmo-sim: cannot write %s\n", cfg.port_file);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *stations = DEFAULT_STATIONS, *others = DEFAULT_OTHER_STATIONS, *clock = NULL;
	sigset_t sigs;
	int sig, port, rc;
	int64_t start_at;
	char m[48], now[40];

	if ((rc = parse_args(argc, argv, &stations, &others, &clock)) != 0)
		return rc > 0 ? 0 : 2;
	if (clock && clock_arg(clock, &start_at)) {
		fprintf(stderr, "elmo-sim: bad value for --clock: %s (2026-12-01T09:59:30+08:00 or 09:59:30)\n", clock);
		return 2;
	}
	if (clock)
		clock_start_at(start_at);
	state_init(cfg.initial_token);
	if (stations_add(stations, 1, cfg.assign_kw) || stations_add(others, 0, cfg.assign_kw))
		return 2;

	/* SIGINT/SIGTERM are taken by sigwait() below; every thread inherits the mask */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || delivery_start() != 0) {
		fprintf(stderr, "elmo-sim: cannot start libcurl\n");
		return 1;
	}
	if (schedule_start() != 0) {
		delivery_stop();
		return 1;
	}
	if (http_start(&port) != 0) {
		schedule_stop();
		delivery_stop();
		return 1;
	}
	mask_token(cfg.initial_token, m);
	fmt_time(sim_now_ms(), cfg.tz_offset_s, now);
	logmsg("listening on http://%s%s%s:%d  (OSCP at %s, initial token %s, %zu station(s), schedule %s, "
	       "local urls %s, clock %s%s)", strchr(cfg.listen, ':') ? "[" : "", cfg.listen,
	       strchr(cfg.listen, ':') ? "]" : "", port, OSCP_PREFIX, m, station_count(), cfg.schedule ? "on" : "off",
	       cfg.allow_local_urls ? "allowed" : "refused", now, clock ? " (--clock)" : "");
	if (write_port_file(port) == 0) {
		sigwait(&sigs, &sig);
		logmsg("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	} else
		exit_status = 1;
	stopping = 1;
	http_stop();
	schedule_stop();
	delivery_stop();
	curl_global_cleanup();
	return exit_status;
}
