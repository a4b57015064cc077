/*
 * inbound.h — from a completed HTTP request to a committed row and an answer.
 */
#ifndef ELMO_INBOUND_H
#define ELMO_INBOUND_H

#include "http_server.h"

extern void inbound_handle(HttpRequest *list, int count, bool extension_ready);
extern bool inbound_retry_due(void);
extern bool inbound_retry_one(void);
extern long inbound_retry_timeout_ms(void);

#endif							/* ELMO_INBOUND_H */
