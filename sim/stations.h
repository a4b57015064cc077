/*
 * The stations (OSCP groups) ELMO knows, each with its day-ahead
 * negotiations.  Guarded by the state lock.
 */
#ifndef SIM_STATIONS_H
#define SIM_STATIONS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* a day-ahead negotiation of one station for one local day */
typedef struct {
	char day[11];			/* YYYY-MM-DD, local */
	int64_t day_start_ms;		/* local midnight */
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
	json_t *last_measurement;	/* body of the last accepted measurement */
} station_t;

/* "id[=kW],..." (kW defaults to default_kw); -1 and a message on stderr when malformed */
int stations_add(const char *list, int own, double default_kw);
size_t station_count(void);
station_t *station_at(size_t i);
station_t *find_station(const char *id);
/* forget negotiations and measurements */
void stations_reset(void);
json_t *stations_json(void);
json_t *measurements_json(void);

#endif
