/*
 * The simulator's settings: command-line flags, some changed at run time by
 * POST /sim/config (under the state lock).  And the process's run state.
 */
#ifndef SIM_CONFIG_H
#define SIM_CONFIG_H

typedef struct {
	int port;
	char listen[64];
	char *initial_token;
	int tz_offset_s;
	int allow_local_urls;
	int register_delay_ms;
	int handshake_delay_ms;
	int schedule;
	int callback_timeout_ms;
	int verbose;
	int register_first;		/* send the register callback before the 204 */
	int register_twice;		/* ... and again after it */
	int exit_on_callback_failure;
	double assign_kw;
	char *port_file;
	char *ca_file;
	int insecure;
} config_t;

extern config_t cfg;

/* set once shutdown began: long waits (an injected delay) end early */
extern volatile int stopping;
/* the process's exit status */
extern volatile int exit_status;

/* stop the process with this status, as a signal would */
void request_exit(int status);

#endif
