/*
 * The one injected fault rule: the next `count` requests to ELMO's OSCP API
 * (all, or those to one path) are answered with a status, delayed, or dropped.
 * count -1: until cleared.
 */
#ifndef SIM_FAULT_H
#define SIM_FAULT_H

#include <jansson.h>

typedef struct {
	int status;			/* 0: answer normally (after the delay) */
	int delay_ms;
	int drop;			/* close the connection without an answer */
	int count;
	char path[128];			/* "" for every path */
	char message[256];		/* "" for the usual message of the status */
} fault_t;

void fault_arm(const fault_t *f);
void fault_clear(void);
/* 1 and the rule when a request to url gets the fault (one use is counted) */
int fault_take(const char *url, fault_t *out);
/* the rule armed, or null */
json_t *fault_json(void);

#endif
