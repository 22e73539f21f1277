/*
 * isotime.h: parse and compare ISO-8601 UTC timestamps as Wix sends them.
 *
 * Wix writes "2024-05-01T10:20:30Z", "…30.123Z" or "…27.272823Z".  Text
 * comparison is wrong across different fraction lengths, so updatedDate
 * is compared as (seconds, nanoseconds).
 */
#ifndef RS_ISOTIME_H
#define RS_ISOTIME_H

#include <stdint.h>

#include "util/status.h"

struct isotime {
	int64_t	sec;	/* seconds since the epoch, UTC */
	int32_t	nsec;	/* 0 .. 999999999 */
};

/*
 * Parse "YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)".  Returns RS_OK and
 * fills *out, or RS_ERR_INPUT for anything else.
 */
enum rs_status	isotime_parse(const char *s, struct isotime *out /* OUT */);
/* <0, 0, >0 as a is before, equal to, after b. */
int		isotime_cmp(const struct isotime *a, const struct isotime *b);

#endif
