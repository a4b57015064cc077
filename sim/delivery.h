/*
 * ELMO's calls to the CSMS ("callbacks"): queued with a delay, sent
 * concurrently by one thread running a libcurl multi handle, each recorded
 * (headers, body, answer, timing) for GET /sim/callbacks.  A register or
 * handshake the CSMS does not answer 2xx is flagged: it crashes the real ELMO.
 */
#ifndef SIM_DELIVERY_H
#define SIM_DELIVERY_H

/*
 * The callback's id.  With a handshake_url, a 2xx answer queues ELMO's
 * handshake there, handshake_delay_ms later, with the same authorization.
 */
long cb_enqueue(const char *kind, const char *url, const char *authorization, const char *body, int delay_ms,
		const char *handshake_url);
/* sent from the calling thread, answered (or timed out) before it returns */
long cb_send_sync(const char *kind, const char *url, const char *authorization, const char *body,
		  const char *handshake_url);
int delivery_start(void);
void delivery_stop(void);

#endif
