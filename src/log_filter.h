/*
 * log_filter.h — tokens kept out of the server log.
 */
#ifndef ELMO_LOG_FILTER_H
#define ELMO_LOG_FILTER_H

extern bool log_filter_calls_register(const char *sql);
extern void log_filter_install(void);

#endif							/* ELMO_LOG_FILTER_H */
