/*
 * The stations ELMO knows.
 */
#include "stations.h"

#include "state.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static station_t *stations;
static size_t nstations;

static station_t *new_station(void)
{
	station_t *a = realloc(stations, (nstations + 1) * sizeof *a);
	if (!a)
		abort();
	stations = a;
	memset(&stations[nstations], 0, sizeof *stations);
	return &stations[nstations++];
}

int stations_add(const char *list, int own, double default_kw)
{
	char *copy = strdup(list), *save = NULL, *tok;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *end;
		station_t *s;
		while (isspace((unsigned char)*tok))
			tok++;
		if (!*tok)
			continue;
		s = new_station();
		s->own = own;
		s->kw = default_kw;
		if (eq) {
			*eq = '\0';
			s->kw = strtod(eq + 1, &end);
			if (*end || s->kw < 0) {
				fprintf(stderr, "elmo-sim: bad station capacity in '%s'\n", eq + 1);
				free(copy);
				return -1;
			}
		}
		s->id = strdup(tok);
	}
	free(copy);
	return 0;
}

size_t station_count(void)
{
	return nstations;
}

station_t *station_at(size_t i)
{
	return i < nstations ? &stations[i] : NULL;
}

station_t *find_station(const char *id)
{
	for (size_t i = 0; id && i < nstations; i++)
		if (strcmp(stations[i].id, id) == 0)
			return &stations[i];
	return NULL;
}

void stations_reset(void)
{
	LOCK();
	for (size_t i = 0; i < nstations; i++) {
		free(stations[i].negs);
		stations[i].negs = NULL;
		stations[i].nnegs = 0;
		json_decref(stations[i].last_measurement);
		stations[i].last_measurement = NULL;
	}
	UNLOCK();
}

json_t *stations_json(void)
{
	json_t *a = json_array();
	LOCK();
	for (size_t i = 0; i < nstations; i++)
		json_array_append_new(a, json_pack("{s:s,s:b,s:f}", "group_id", stations[i].id, "own",
						   stations[i].own, "assign_kw", stations[i].kw));
	UNLOCK();
	return a;
}

json_t *measurements_json(void)
{
	json_t *o = json_object();
	LOCK();
	for (size_t i = 0; i < nstations; i++)
		if (stations[i].last_measurement)
			json_object_set(o, stations[i].id, stations[i].last_measurement);
	UNLOCK();
	return o;
}
