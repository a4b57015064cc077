/*
 * capacity.h — keeping capacity_in_force at every instant it changes.
 */
#ifndef ELMO_CAPACITY_H
#define ELMO_CAPACITY_H

extern void capacity_found(void);
extern void capacity_run(bool busy);
extern long capacity_timeout_ms(void);

#endif							/* ELMO_CAPACITY_H */
