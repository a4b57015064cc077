/*
 * ELMO's daily schedule, on its own thread: it wakes every TICK_MS and looks
 * at what the simulated clock passed since its last look.
 */
#include "schedule.h"

#include "caltime.h"
#include "clock.h"
#include "config.h"
#include "forecast_send.h"
#include "log.h"
#include "negotiation.h"
#include "state.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#define TICK_MS 50

static pthread_t thread;
static volatile int stop;

/* the local time of day tod_ms last reached by now, when it lies after prev; else -1 */
static int64_t passed(int64_t prev, int64_t now, int64_t tod_ms)
{
	int64_t ev = local_midnight(now, cfg.tz_offset_s) + tod_ms;
	if (ev > now)
		ev -= DAY_MS;
	return prev < ev ? ev : -1;
}

static void assign_tomorrow(int64_t at)
{
	int64_t tomorrow = local_midnight(at, cfg.tz_offset_s) + DAY_MS;
	logmsg("schedule 10:00: day-ahead assignment for tomorrow");
	LOCK();
	for (size_t i = 0; i < station_count(); i++) {
		station_t *s = station_at(i);
		double caps[24];
		if (!s->own)
			continue;
		for (int h = 0; h < 24; h++)
			caps[h] = s->kw;
		send_assign(s, tomorrow, caps, 1, NULL);
	}
	UNLOCK();
}

static void reply_waiting(int64_t at)
{
	char day[11];
	const char *e;
	fmt_day(local_midnight(at, cfg.tz_offset_s) + DAY_MS, cfg.tz_offset_s, day);
	logmsg("schedule 16:00: automatic replies to pending adjust requests");
	LOCK();
	for (size_t i = 0; i < station_count(); i++) {
		station_t *s = station_at(i);
		negotiation_t *n = find_neg(s, day);
		if (n && !strcmp(n->status, "EXTRA_REPLY_EDIT") && send_reply(s, n, NULL, NULL, &e))
			logmsg("  %s: %s", s->id, e);
	}
	UNLOCK();
}

static void *run(void *arg)
{
	int64_t set_to, prev = sim_now_ms();
	unsigned gen = clock_generation(&set_to);
	(void)arg;
	while (!stop) {
		struct timespec t = { 0, TICK_MS * 1000000L };
		int64_t now, at;
		unsigned g;
		nanosleep(&t, NULL);
		now = sim_now_ms();
		g = clock_generation(&set_to);
		if (g != gen) {		/* set since the last look: only what ran after the set counts */
			gen = g;
			prev = set_to;
		}
		if (now < prev) {	/* set back and not yet where it was set to */
			prev = now;
			continue;
		}
		if (cfg.schedule && (at = passed(prev, now, 10 * HOUR_MS)) >= 0)
			assign_tomorrow(at);
		if (cfg.schedule && (at = passed(prev, now, 16 * HOUR_MS)) >= 0)
			reply_waiting(at);
		prev = now;
	}
	return NULL;
}

int schedule_start(void)
{
	return pthread_create(&thread, NULL, run, NULL);
}

void schedule_stop(void)
{
	stop = 1;
	pthread_join(thread, NULL);
}
