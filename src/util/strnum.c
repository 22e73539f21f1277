/*
 * strnum.c: strict base-10 parsing into int64_t.
 *
 * Hand-written because strtoll accepts spaces, '+' and trailing junk, and
 * we want one rule for every number in config and on the wire.
 */
#include <stdbool.h>
#include <stddef.h>

#include "util/strnum.h"

const char *
strnum_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	bool neg = false;
	uint64_t acc = 0, lim;
	const char *p = s;

	if (s == NULL || *s == '\0')
		return "invalid";
	if (*p == '-') {
		neg = true;
		p++;
	}
	if (*p < '0' || *p > '9')
		return "invalid";
	if (*p == '0' && p[1] != '\0')
		return "invalid";
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; *p != '\0'; p++) {
		unsigned d;

		if (*p < '0' || *p > '9')
			return "invalid";
		d = (unsigned)(*p - '0');
		if (acc > (lim - d) / 10)
			return neg ? "too small" : "too large";
		acc = acc * 10 + d;
	}
	if (neg) {
		int64_t v = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN :
		    -(int64_t)acc;
		if (v < min)
			return "too small";
		if (v > max)
			return "too large";
		*out = v;
	} else {
		if ((int64_t)acc < min)
			return "too small";
		if ((int64_t)acc > max)
			return "too large";
		*out = (int64_t)acc;
	}
	return NULL;
}
