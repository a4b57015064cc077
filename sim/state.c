/*
 * The simulated ELMO's shared state.
 */
#include "state.h"

#include "json_util.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>

state_t st;

void state_init(const char *initial_token)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&st.mu, &a);
	pthread_mutexattr_destroy(&a);
	st.messages = json_array();
	st.callbacks = json_array();
	st.next_msg_id = 1;
	st.next_cb_id = 1;
	snprintf(st.elmo_token, sizeof st.elmo_token, "%s", initial_token);
}

void state_admin_token(const char *token)
{
	LOCK();
	snprintf(st.elmo_token, sizeof st.elmo_token, "%s", token);
	st.token_rotated = 0;
	st.registered = st.connected = 0;
	UNLOCK();
}

void state_reset(const char *initial_token)
{
	LOCK();
	state_admin_token(initial_token);
	free(st.csms_token);
	free(st.csms_base_url);
	st.csms_token = st.csms_base_url = NULL;
	json_array_clear(st.messages);
	json_array_clear(st.callbacks);
	st.gen++;
	UNLOCK();
}

int csms_target(const char *endpoint, char **url, char **authorization)
{
	int ok;
	LOCK();
	ok = st.registered && st.csms_base_url && st.csms_token;
	if (ok) {
		*url = url_join(st.csms_base_url, endpoint);
		*authorization = token_auth(st.csms_token);
	}
	UNLOCK();
	return ok;
}

static long next_id(long *counter)
{
	long id;
	LOCK();
	id = (*counter)++;
	UNLOCK();
	return id;
}

long new_message_id(void)
{
	return next_id(&st.next_msg_id);
}

long new_callback_id(void)
{
	return next_id(&st.next_cb_id);
}

static void keep(json_t *list, json_t *rec)
{
	json_array_append(list, rec);
	if (json_array_size(list) > MAX_RECORDS)
		json_array_remove(list, 0);
}

void record_message(json_t *rec)
{
	LOCK();
	keep(st.messages, rec);
	UNLOCK();
	json_decref(rec);
}

void record_callback(json_t *rec)
{
	LOCK();
	keep(st.callbacks, rec);
	UNLOCK();
}

json_t *registration_json(void)
{
	json_t *o = json_object();
	LOCK();
	json_object_set_new(o, "registered", json_boolean(st.registered));
	json_object_set_new(o, "connected", json_boolean(st.connected));
	json_object_set_new(o, "csms_base_url", st.csms_base_url ? json_string(st.csms_base_url) : json_null());
	json_object_set_new(o, "csms_token", st.csms_token ? json_string(st.csms_token) : json_null());
	json_object_set_new(o, "elmo_token", json_string(st.elmo_token));
	json_object_set_new(o, "initial_token_in_force", json_boolean(!st.token_rotated));
	UNLOCK();
	return o;
}

char *register_callback_body(void)
{
	char *b;
	LOCK();
	b = dump_steal(json_pack("{s:s,s:[{s:s,s:s}]}", "token", st.elmo_token, "version_url", "base_url",
				 "/oscp/2.0", "version", "2.0"));
	UNLOCK();
	return b;
}
