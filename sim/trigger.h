/*
 * The testbed's trigger API (/trigger-callback/2.0/...): a CSMS asks ELMO to
 * call it now, at a callback_url of its choosing, with the given
 * authorization: register, handshake, or a forecast for one of three purposes.
 */
#ifndef SIM_TRIGGER_H
#define SIM_TRIGGER_H

#include <stddef.h>

#include "answer.h"

#define TRIGGER_PREFIX "/trigger-callback/2.0/"

resp_t trigger_handle(const char *method, const char *url, const char *raw, size_t rawlen);

#endif
