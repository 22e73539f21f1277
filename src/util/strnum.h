/*
 * strnum.h: the one bounded number parser (OpenBSD strtonum).
 *
 * Every number refundsync reads from text goes through here.  No atoi.
 */
#ifndef RS_STRNUM_H
#define RS_STRNUM_H

#include <stdint.h>

/*
 * Parse s as a base-10 integer in [min, max].  The whole string must be
 * the number: an optional '-', then digits; no spaces, no '+', no
 * leading zeros beyond a lone "0".  Returns NULL and sets *out on
 * success, else a static reason ("invalid", "too small", "too large")
 * and leaves *out alone.
 */
const char *strnum_i64(const char *s, int64_t min, int64_t max,
	    int64_t *out /* OUT */);

#endif
