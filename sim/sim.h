/*
 * elmo-sim: a local simulator of Taiwan Power's ELMO server speaking OSCP 2.0.
 * Shared declarations of the simulator's modules.
 */
#ifndef ELMO_SIM_H
#define ELMO_SIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define OSCP_PREFIX "/oscp/2.0/"
#define TRIGGER_PREFIX "/trigger-callback/2.0/"
#define ELMO_TOKEN_LEN 256
#define REQUEST_ID_LEN 32
#define MAX_MESSAGES 20000

/* A day-ahead negotiation of one station for one local day. */
typedef struct {
	char day[11];			/* YYYY-MM-DD, local */
	int64_t day_start_ms;		/* local midnight, epoch ms */
	char status[24];		/* NEGOTIATING, EXTRA_REPLY_EDIT, REPLIED */
	double assigned[24];
	int has_request;
	double requested[24];
	char request_id[80];
	int64_t requested_at_ms;
	int replied;
	double reply[24];
} negotiation_t;

typedef struct {
	char *id;
	double kw;			/* capacity of the 10:00 assignment */
	int own;			/* 1: a station of this CSMS; 0: known to ELMO only */
	negotiation_t *negs;
	size_t nnegs;
	json_t *last_measurement;	/* last accepted measurement message body */
} station_t;

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

typedef struct {
	pthread_mutex_t mu;		/* recursive; guards everything below and cfg */
	char elmo_token[ELMO_TOKEN_LEN + 1024];
	int token_rotated;		/* 0 while the initial/admin-issued token is in force */
	int registered;
	int connected;
	char *csms_token;
	char *csms_base_url;
	int64_t clock_offset_ms;
	station_t *stations;
	size_t nstations;
	json_t *messages;
	json_t *callbacks;
	long next_msg_id;
	long next_cb_id;
	/* one fault rule at a time */
	int f_status, f_delay_ms, f_drop, f_count;
	char f_path[128];
	char f_message[256];
	unsigned gen;			/* bumped by reset: queued callbacks of older gens are dropped */
} state_t;

extern config_t cfg;
extern state_t st;
extern volatile int stopping;
extern volatile int exit_status;

#define LOCK() pthread_mutex_lock(&st.mu)
#define UNLOCK() pthread_mutex_unlock(&st.mu)

/* An answer to an HTTP request. body is malloc'd (or NULL for none). */
typedef struct {
	int status;
	char *body;
	int drop;			/* close the connection without answering */
} resp_t;

/* util.c */
int64_t real_now_ms(void);
int64_t mono_now_ms(void);
int64_t sim_now_ms(void);
void fmt_time(int64_t ms, int tz_s, char out[40]);
void fmt_day(int64_t ms, int tz_s, char out[11]);
int64_t local_midnight(int64_t ms, int tz_s);
int parse_time(const char *s, int require_offset, int default_tz_s, int64_t *ms);
int parse_day(const char *s, int tz_s, int64_t *midnight_ms);
int parse_tz(const char *s, int *tz_s);
void rand_chars(char *out, size_t n, const char *alphabet);
void new_request_id(char out[REQUEST_ID_LEN + 1]);
void mask_token(const char *tok, char out[48]);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *dump(json_t *j);				/* compact; steals nothing */
char *dump_steal(json_t *j);			/* compact; decrefs j */
char *error_body(int status, json_t *message);	/* steals message */
char *error_str(int status, const char *message);
const char *reason_phrase(int status);
resp_t R(int status, char *body);
int json_whole(json_t *v, long long *out);

/* state.c */
void state_init(void);
void state_reset(void);
station_t *find_station(const char *id);
negotiation_t *find_neg(station_t *s, const char *day);
negotiation_t *upsert_neg(station_t *s, int64_t day_start_ms);
const char *neg_status(const negotiation_t *n, int64_t now_ms);
json_t *state_json(void);
json_t *neg_json(const negotiation_t *n, int64_t now_ms);
char *forecast_body(const char *group, int nblocks, const int64_t *starts, const int64_t *ends, const double *caps, int tz_s);
char *day_forecast_body(const char *group, int64_t day_start_ms, const double caps[24]);
int base_url_ok(const char *u, int allow_local);

/* oscp.c */
resp_t oscp_handle(const char *method, const char *url, json_t *headers, const char *raw, size_t rawlen);

/* callbacks.c */
typedef struct {
	int chain_handshake;		/* on 2xx, queue ELMO's handshake */
	char *hs_url;
	char *hs_auth;
} chain_t;
long cb_enqueue(const char *kind, const char *url, const char *authorization, const char *body, int delay_ms, const chain_t *chain);
long cb_send_sync(const char *kind, const char *url, const char *authorization, const char *body, const chain_t *chain);
int cb_start(void);
void cb_stop(void);
void cb_wakeup(void);
void sched_clock_changed(void);
int send_assign(station_t *s, int64_t day_start_ms, const double *caps, int send, json_t *ids);
int send_reply(station_t *s, negotiation_t *n, const double *override, json_t *ids, const char **err);

/* api.c */
resp_t sim_handle(const char *method, const char *url, json_t *query, const char *raw, size_t rawlen);
resp_t trigger_handle(const char *method, const char *url, const char *raw, size_t rawlen);

#endif
