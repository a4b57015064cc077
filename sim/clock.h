/*
 * The simulated clock: the real clock plus an offset the tests move.  It keeps
 * running after it is set.  Every set bumps a generation, so the schedule can
 * tell a jump of the clock from the clock running past an event.
 */
#ifndef SIM_CLOCK_H
#define SIM_CLOCK_H

#include <stdint.h>

int64_t real_now_ms(void);
int64_t mono_now_ms(void);
int64_t sim_now_ms(void);
int64_t clock_offset_ms(void);
void clock_set_offset(int64_t offset_ms);
/* start at this simulated time (--clock) */
void clock_start_at(int64_t sim_ms);
/* back to where clock_start_at() started it, or to the real clock */
void clock_reset(void);
/* the generation and the simulated time the clock was last set to */
unsigned clock_generation(int64_t *set_to_ms);

#endif
