/*
 * money.h: exact decimal amounts and ISO 4217 minor units.
 *
 * Wix sends amounts as decimal strings in main units ("12.95").  We keep
 * that text untouched and compute the exact integer number of minor
 * units from the currency's ISO 4217 exponent (USD 2, JPY 0, KWD 3, ...).
 * There is never a double: a decimal that does not fit the currency's
 * exponent exactly is "not representable", never rounded.
 */
#ifndef RS_MONEY_H
#define RS_MONEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

/* Most decimals we accept on the wire (Wix documents up to 8). */
#define MONEY_MAX_DECIMALS	18
/* Longest amount text accepted. */
#define MONEY_MAX_TEXT		64

/*
 * ISO 4217 exponent (number of minor-unit digits) of a three-letter
 * upper-case code, from the full current ISO 4217 list (plus common
 * historic codes).  Returns 0..4, or -1 if the code is unknown.
 */
int		money_exponent(const char *currency);

/* True if s is three ASCII upper-case letters. */
bool		money_currency_wellformed(const char *s);

/*
 * True if text is a well-formed non-negative decimal: "0" or digits
 * without a leading zero, then optionally '.' and 1..MONEY_MAX_DECIMALS
 * digits; at most MONEY_MAX_TEXT bytes.  No sign, exponent, spaces or
 * grouping.
 */
bool		money_decimal_wellformed(const char *text);

/*
 * Convert text to minor units of currency exactly.
 * RS_OK: *minor set.
 * RS_ERR_INPUT: text is not a well-formed decimal (see above).
 * RS_ERR_RANGE: well-formed, but the currency is unknown, the text has
 *   non-zero digits beyond the exponent (12.345 USD), or the value does
 *   not fit in int64_t.  *minor untouched.
 * Trailing zeros past the exponent are fine ("12.50" JPY is not; "12.00"
 * JPY is 12).
 */
enum rs_status	money_to_minor(const char *text, const char *currency,
		    int64_t *minor /* OUT */);

/*
 * Format minor units with exponent decimals ("1295", 2 -> "12.95";
 * -5, 2 -> "-0.05"; 7, 0 -> "7").  Writes at most outlen bytes with the
 * NUL; returns RS_ERR_TOOBIG if it does not fit, RS_ERR_INPUT if
 * exponent is outside 0..MONEY_MAX_DECIMALS.
 */
enum rs_status	money_format(int64_t minor, int exponent, char *out,
		    size_t outlen);

#endif
