/*
 * settings.h — the elmo_oscp.* settings the C code reads.  The others are
 * read by the SQL functions (current_setting) and only defined here.
 */
#ifndef ELMO_SETTINGS_H
#define ELMO_SETTINGS_H

extern char *elmo_database;
extern char *elmo_listen_addresses;
extern int	elmo_port;
extern char *elmo_path_prefix;
extern int	elmo_max_request_size;
extern char *elmo_tls_cert_file;
extern char *elmo_tls_key_file;
extern int	elmo_max_connections;
extern int	elmo_connection_timeout;
extern int	elmo_max_connections_per_client;
extern int	elmo_request_receive_timeout;
extern char *elmo_allowed_clients;
extern int	elmo_apply_timeout;
extern int	elmo_batch_max;
extern char *elmo_ca_file;
extern int	elmo_connect_timeout;
extern int	elmo_request_timeout;
extern int	elmo_max_in_flight;
extern char *elmo_role;
extern char *elmo_usage_source;
extern bool elmo_allow_drop_registered;

/* The role CREATE EXTENSION creates for the worker (elmo_oscp.role's default). */
#define ELMO_WORKER_ROLE "elmo_oscp_worker"

extern void settings_define(void);

#endif							/* ELMO_SETTINGS_H */
