/*
 * The simulated ELMO's shared state: one recursive lock over everything the
 * threads share (this state, the stations, the fault rule, cfg's run-time
 * settings); the registration (ELMO's token, the CSMS's token and URL); and
 * the records of messages received and callbacks sent, for the control API.
 */
#ifndef SIM_STATE_H
#define SIM_STATE_H

#include <jansson.h>
#include <pthread.h>

#include "ids.h"

#define MAX_RECORDS 20000

typedef struct {
	pthread_mutex_t mu;
	char elmo_token[ELMO_TOKEN_LEN + 1024];
	int token_rotated;		/* 0 while the initial or administrator's token is in force */
	int registered;
	int connected;
	char *csms_token;
	char *csms_base_url;
	json_t *messages;		/* what the CSMS sent, oldest first */
	json_t *callbacks;		/* what ELMO sent */
	long next_msg_id;
	long next_cb_id;
	unsigned gen;			/* bumped by a reset: callbacks queued before it are dropped */
} state_t;

extern state_t st;

#define LOCK() pthread_mutex_lock(&st.mu)
#define UNLOCK() pthread_mutex_unlock(&st.mu)

void state_init(const char *initial_token);
/* registration and records back to start-up */
void state_reset(const char *initial_token);
/* an administrator's new initial token: the CSMS is disconnected */
void state_admin_token(const char *token);
/* the URL of the registered CSMS's endpoint and its Authorization; 0 when none */
int csms_target(const char *endpoint, char **url, char **authorization);
long new_message_id(void);
long new_callback_id(void);
/* keep a record of a received message; steals rec */
void record_message(json_t *rec);
/* keep a record of a callback; the caller keeps its reference to update it */
void record_callback(json_t *rec);
json_t *registration_json(void);
/* ELMO's register message to the CSMS: its current token, its base (always relative) */
char *register_callback_body(void);

#endif
