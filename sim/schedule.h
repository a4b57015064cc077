/*
 * ELMO's day on the simulated clock: at 10:00 the day-ahead assignment of
 * every station of this CSMS for tomorrow; at 16:00 the automatic reply to
 * each adjust request still waiting.  An event fires when the running clock
 * passes it, not when the clock is set past it.
 */
#ifndef SIM_SCHEDULE_H
#define SIM_SCHEDULE_H

int schedule_start(void);
void schedule_stop(void);

#endif
