/*
 * fuzz_money.c: libFuzzer target for the decimal/money parser.
 *
 * Input: one selector byte (the currency) and the amount text.
 * Invariants: nothing that fails money_decimal_wellformed() is accepted;
 * an accepted amount has no non-zero digit past the currency's exponent;
 * money_format() of the minor units is the amount normalised to exactly
 * exponent decimals, and re-parses to the same minor units; a well-formed
 * amount of a known currency is refused only for excess digits or int64
 * overflow.  Also money_format() of an arbitrary int64 round-trips.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "domain/money.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const currencies[] = {
	"USD", "JPY", "KWD", "CLF", "EUR", "BHD", "ZZZ", "usd", "US", ""
};
#define NCURRENCIES	(sizeof(currencies) / sizeof(currencies[0]))

#define CHECK(c) do { if (!(c)) abort(); } while (0)

/* Is the decimal digit string d (n digits, no leading zeros unless "0")
 * greater than INT64_MAX? */
static int
over_int64(const char *d, size_t n)
{
	static const char max[] = "9223372036854775807";

	while (n > 1 && *d == '0') {
		d++;
		n--;
	}
	if (n != sizeof(max) - 1)
		return n > sizeof(max) - 1;
	return memcmp(d, max, n) > 0;
}

static void
check_amount(const char *text, const char *cur)
{
	char want[2 * MONEY_MAX_TEXT + 8], got[64], digits[2 * MONEY_MAX_TEXT];
	const char *dot;
	size_t ilen, flen, i, nd;
	int64_t minor = -1, again = -1;
	enum rs_status st;
	int e, excess = 0;

	st = money_to_minor(text, cur, &minor);
	if (!money_decimal_wellformed(text)) {
		CHECK(st == RS_ERR_INPUT);
		return;
	}
	CHECK(st == RS_OK || st == RS_ERR_RANGE);
	e = money_exponent(cur);
	if (e < 0) {
		CHECK(st == RS_ERR_RANGE);
		return;
	}
	CHECK(e <= 4);

	/* The expected normalised text: integer part, '.', exactly e
	 * decimals (padded with zeros; past e they must be zeros). */
	dot = strchr(text, '.');
	ilen = dot != NULL ? (size_t)(dot - text) : strlen(text);
	flen = dot != NULL ? strlen(dot + 1) : 0;
	memcpy(want, text, ilen);
	memcpy(digits, text, ilen);
	nd = ilen;
	i = ilen;
	if (e > 0)
		want[i++] = '.';
	for (size_t k = 0; k < flen || k < (size_t)e; k++) {
		char c = k < flen ? dot[1 + k] : '0';

		if (k < (size_t)e) {
			want[i++] = c;
			digits[nd++] = c;
		} else if (c != '0')
			excess = 1;
	}
	want[i] = '\0';

	if (excess || over_int64(digits, nd)) {
		CHECK(st == RS_ERR_RANGE);
		return;
	}
	CHECK(st == RS_OK);
	CHECK(minor >= 0);
	CHECK(money_format(minor, e, got, sizeof(got)) == RS_OK);
	CHECK(strcmp(got, want) == 0);
	CHECK(money_to_minor(got, cur, &again) == RS_OK);
	CHECK(again == minor);
}

static void
check_format(int64_t v, int e)
{
	char out[64];
	int64_t back = -1;
	const char *p = out;

	CHECK(money_format(v, e, out, sizeof(out)) == RS_OK);
	/* Too small a buffer is refused, never overrun. */
	CHECK(money_format(v, e, out, 2) == RS_ERR_TOOBIG || v == 0 ||
	    (v > 0 && v < 10 && e == 0));
	CHECK(money_format(v, e, out, sizeof(out)) == RS_OK);
	CHECK(money_format(v, -1, out, sizeof(out)) == RS_ERR_INPUT);
	CHECK(money_format(v, e, out, sizeof(out)) == RS_OK);
	if (v < 0) {
		CHECK(*p == '-');
		p++;
	}
	if (v == INT64_MIN)
		return;
	CHECK(money_decimal_wellformed(p));
	CHECK(money_to_minor(p, e == 0 ? "JPY" : e == 2 ? "USD" :
	    e == 3 ? "KWD" : "CLF", &back) == RS_OK);
	CHECK(back == (v < 0 ? -v : v));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	uint64_t u = 0;

	if (size < 1)
		return 0;
	text = malloc(size);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	check_amount(text, currencies[data[0] % NCURRENCIES]);
	free(text);

	if (size >= 9) {
		static const int exps[] = { 0, 2, 3, 4 };

		for (int k = 0; k < 8; k++)
			u = u << 8 | data[1 + k];
		check_format((int64_t)u, exps[data[0] % 4]);
	}
	return 0;
}
