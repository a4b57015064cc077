/*
 * The simulator's settings and their defaults (those of ELMO's testbed).
 */
#include "config.h"

#include <signal.h>
#include <unistd.h>

config_t cfg = {
	.port = 8090,
	.listen = "127.0.0.1",
	.initial_token = "ELMO-TESTBED-TOKEN",
	.tz_offset_s = 8 * 3600,
	.register_delay_ms = 20,
	.handshake_delay_ms = 5000,
	.schedule = 1,
	.callback_timeout_ms = 20000,
	.assign_kw = 100,
};
volatile int stopping;
volatile int exit_status;

/* main() waits for SIGTERM in sigwait(): the same path as an operator's kill */
void request_exit(int status)
{
	exit_status = status;
	kill(getpid(), SIGTERM);
}
