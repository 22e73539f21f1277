/*
 * money.c: exact decimal text to integer minor units, and back.
 *
 * Wix sends amounts as decimal strings in main units.  We parse them
 * digit by digit into an int64_t with an explicit overflow check, and
 * refuse rather than round: a value with non-zero digits beyond the
 * currency's exponent, or one too large for int64_t, is "not
 * representable".  No floating point anywhere.  Pure functions, safe
 * from any thread.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "domain/money.h"

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

bool
money_decimal_wellformed(const char *text)
{
	const char *p = text;
	size_t n;

	if (text == NULL || strnlen(text, MONEY_MAX_TEXT + 1) > MONEY_MAX_TEXT)
		return false;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9') {
		while (is_digit(*p))
			p++;
	} else
		return false;
	if (*p == '.') {
		p++;
		for (n = 0; is_digit(*p); n++)
			p++;
		if (n == 0 || n > MONEY_MAX_DECIMALS)
			return false;
	}
	return *p == '\0';
}

/* *acc = *acc * 10 + d, unless that exceeds INT64_MAX. */
static bool
acc_digit(uint64_t *acc, unsigned d)
{
	if (*acc > ((uint64_t)INT64_MAX - d) / 10)
		return false;
	*acc = *acc * 10 + d;
	return true;
}

enum rs_status
money_to_minor(const char *text, const char *currency, int64_t *minor)
{
	uint64_t acc = 0;
	const char *p;
	int exp, i;

	if (!money_decimal_wellformed(text))
		return RS_ERR_INPUT;
	if ((exp = money_exponent(currency)) < 0)
		return RS_ERR_RANGE;
	for (p = text; *p != '.' && *p != '\0'; p++)
		if (!acc_digit(&acc, (unsigned)(*p - '0')))
			return RS_ERR_RANGE;
	if (*p == '.')
		p++;
	/* The first exp decimals, padded with zeros. */
	for (i = 0; i < exp; i++) {
		unsigned d = 0;

		if (*p != '\0')
			d = (unsigned)(*p++ - '0');
		if (!acc_digit(&acc, d))
			return RS_ERR_RANGE;
	}
	/* Anything past the exponent must be a trailing zero. */
	for (; *p != '\0'; p++)
		if (*p != '0')
			return RS_ERR_RANGE;
	*minor = (int64_t)acc;
	return RS_OK;
}

enum rs_status
money_format(int64_t minor, int exponent, char *out, size_t outlen)
{
	char rev[48];	/* 19 digits, zero padding to 19, '.', '-' */
	uint64_t mag;
	size_t n = 0, i;
	int ndig = 0;

	if (exponent < 0 || exponent > MONEY_MAX_DECIMALS || out == NULL)
		return RS_ERR_INPUT;
	/* The magnitude of INT64_MIN does not fit in int64_t. */
	mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
	do {
		if (exponent > 0 && ndig == exponent)
			rev[n++] = '.';
		rev[n++] = (char)('0' + mag % 10);
		mag /= 10;
		ndig++;
	} while (mag != 0 || ndig <= exponent);
	if (minor < 0)
		rev[n++] = '-';
	if (n + 1 > outlen)
		return RS_ERR_TOOBIG;
	for (i = 0; i < n; i++)
		out[i] = rev[n - 1 - i];
	out[n] = '\0';
	return RS_OK;
}
