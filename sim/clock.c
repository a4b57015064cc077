/*
 * The simulated clock.  A mutex, not atomics: the offset, the generation and
 * the time the clock was set to must be read together.
 */
#include "clock.h"

#include <pthread.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t offset, set_to;
static int64_t start_at = -1;	/* --clock, or -1: the real clock */
static unsigned generation;

static int64_t now_of(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t real_now_ms(void)
{
	return now_of(CLOCK_REALTIME);
}

int64_t mono_now_ms(void)
{
	return now_of(CLOCK_MONOTONIC);
}

int64_t clock_offset_ms(void)
{
	int64_t o;
	pthread_mutex_lock(&mu);
	o = offset;
	pthread_mutex_unlock(&mu);
	return o;
}

int64_t sim_now_ms(void)
{
	return real_now_ms() + clock_offset_ms();
}

void clock_set_offset(int64_t offset_ms)
{
	pthread_mutex_lock(&mu);
	offset = offset_ms;
	set_to = real_now_ms() + offset_ms;
	generation++;
	pthread_mutex_unlock(&mu);
}

void clock_start_at(int64_t sim_ms)
{
	pthread_mutex_lock(&mu);
	start_at = sim_ms;
	pthread_mutex_unlock(&mu);
	clock_set_offset(sim_ms - real_now_ms());
}

void clock_reset(void)
{
	int64_t at;
	pthread_mutex_lock(&mu);
	at = start_at;
	pthread_mutex_unlock(&mu);
	clock_set_offset(at < 0 ? 0 : at - real_now_ms());
}

unsigned clock_generation(int64_t *set_to_ms)
{
	unsigned g;
	pthread_mutex_lock(&mu);
	g = generation;
	*set_to_ms = set_to;
	pthread_mutex_unlock(&mu);
	return g;
}
