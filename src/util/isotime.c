/*
 * isotime.c: a strict ISO-8601 timestamp parser.
 *
 * Hand-written: strptime does not handle fractions or offsets, and no
 * library in our stack parses RFC 3339.  Days are counted with the civil
 * calendar algorithm, so no time zone or locale is involved.
 */
#include <stdbool.h>
#include <stddef.h>

#include "util/isotime.h"

static bool
digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int
days_in_month(int y, int m)
{
	static const int dim[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };

	if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return 29;
	return dim[m - 1];
}

enum rs_status
isotime_parse(const char *s, struct isotime *out)
{
	int y, mo, d, h, mi, se, oh = 0, om = 0, sign = 0;
	int32_t nsec = 0;
	const char *p;

	if (s == NULL)
		return RS_ERR_INPUT;
	if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || s[10] != 'T' ||
	    !digits(s + 11, 2, &h) || s[13] != ':' ||
	    !digits(s + 14, 2, &mi) || s[16] != ':' ||
	    !digits(s + 17, 2, &se))
		return RS_ERR_INPUT;
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
	    h > 23 || mi > 59 || se > 60)
		return RS_ERR_INPUT;
	p = s + 19;
	if (*p == '.') {
		int n = 0;

		p++;
		while (*p >= '0' && *p <= '9') {
			if (n == 9)
				return RS_ERR_INPUT;
			nsec = nsec * 10 + (*p - '0');
			n++;
			p++;
		}
		if (n == 0)
			return RS_ERR_INPUT;
		for (; n < 9; n++)
			nsec *= 10;
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '+' ? 1 : -1;
		if (!digits(p + 1, 2, &oh) || p[3] != ':' ||
		    !digits(p + 4, 2, &om) || oh > 23 || om > 59)
			return RS_ERR_INPUT;
		p += 6;
	} else {
		return RS_ERR_INPUT;
	}
	if (*p != '\0')
		return RS_ERR_INPUT;
	out->sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 +
	    se - sign * (oh * 3600 + om * 60);
	out->nsec = nsec;
	return RS_OK;
}

int
isotime_cmp(const struct isotime *a, const struct isotime *b)
{
	if (a->sec != b->sec)
		return a->sec < b->sec ? -1 : 1;
	if (a->nsec != b->nsec)
		return a->nsec < b->nsec ? -1 : 1;
	return 0;
}
