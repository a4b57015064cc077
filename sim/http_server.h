/*
 * The simulator's HTTP server (libmicrohttpd, a thread per connection):
 * collects each request's body and headers and hands it to ELMO's OSCP API,
 * the testbed's trigger API or the control API by path.
 */
#ifndef SIM_HTTP_SERVER_H
#define SIM_HTTP_SERVER_H

/* listen on cfg.listen:cfg.port; the port bound in *port; 0, or -1 and a message on stderr */
int http_start(int *port);
void http_stop(void);

#endif
