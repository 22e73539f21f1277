/*
 * clock.c: monotonic and wall clocks.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"

static _Atomic int64_t fake_wall;

int64_t
clock_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
clock_wall_s(void)
{
	int64_t f = atomic_load(&fake_wall);

	if (f != 0)
		return f;
	return (int64_t)time(NULL);
}

void
clock_set_fake_wall(int64_t t)
{
	atomic_store(&fake_wall, t);
}

void
clock_wall_iso(char out[32])
{
	struct timespec ts;
	struct tm tm;
	char tmp[96];
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	/* Formatted wide, then cut: years past 9999 do not happen here. */
	snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
	n = strnlen(tmp, 31);
	memcpy(out, tmp, n);
	out[n] = '\0';
}
