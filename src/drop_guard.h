/*
 * drop_guard.h — DROP EXTENSION refused while ELMO holds our registration.
 */
#ifndef ELMO_DROP_GUARD_H
#define ELMO_DROP_GUARD_H

extern void drop_guard_install(void);

#endif							/* ELMO_DROP_GUARD_H */
