/*
 * clock.h: the two clocks, and the test seam for wall time.
 *
 * Timeouts, deadlines and backoff use the monotonic clock, so a jump of
 * the wall clock never stretches or cuts them.  Wall time is only for
 * stored timestamps and for JWT exp/nbf, which are wall-clock claims.
 */
#ifndef RS_CLOCK_H
#define RS_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t	clock_mono_ms(void);
/* Seconds since the epoch (CLOCK_REALTIME), or the fake time if set. */
int64_t	clock_wall_s(void);
/* Test seam: make clock_wall_s() return t; 0 restores the real clock. */
void	clock_set_fake_wall(int64_t t);
/* Format now (UTC) as "YYYY-MM-DDTHH:MM:SS.mmmZ" into out[32]. */
void	clock_wall_iso(char out[32]);

#endif
