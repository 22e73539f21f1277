/*
 * check_money.c: ISO 4217 exponents, exact decimal parsing, formatting.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "domain/money.h"

/* Expect money_to_minor(text, cur) to give RS_OK and minor. */
static void
expect_minor(const char *text, const char *cur, int64_t want)
{
	int64_t got = -42;
	enum rs_status st = money_to_minor(text, cur, &got);

	ck_assert_msg(st == RS_OK, "%s %s: status %d", text, cur, (int)st);
	ck_assert_msg(got == want, "%s %s: got %jd, want %jd", text, cur,
	    (intmax_t)got, (intmax_t)want);
}

/* Expect status st, and *minor left alone. */
static void
expect_fail(const char *text, const char *cur, enum rs_status want)
{
	int64_t got = -42;
	enum rs_status st = money_to_minor(text, cur, &got);

	ck_assert_msg(st == want, "%s %s: status %d, want %d",
	    text != NULL ? text : "(null)", cur != NULL ? cur : "(null)",
	    (int)st, (int)want);
	ck_assert_int_eq(got, -42);
}

static void
expect_format(int64_t minor, int exp, const char *want)
{
	char out[64];

	memset(out, 'x', sizeof(out));
	ck_assert_int_eq(money_format(minor, exp, out, sizeof(out)), RS_OK);
	ck_assert_str_eq(out, want);
}

/* An independent copy of the table: catches typos and a broken sort. */
static const struct {
	const char	*code;
	int		 exp;
} iso[] = {
	{ "AED", 2 }, { "AFN", 2 }, { "ALL", 2 }, { "AMD", 2 }, { "AOA", 2 },
	{ "ARS", 2 }, { "AUD", 2 }, { "AWG", 2 }, { "AZN", 2 }, { "BAM", 2 },
	{ "BBD", 2 }, { "BDT", 2 }, { "BHD", 3 }, { "BIF", 0 }, { "BMD", 2 },
	{ "BND", 2 }, { "BOB", 2 }, { "BOV", 2 }, { "BRL", 2 }, { "BSD", 2 },
	{ "BTN", 2 }, { "BWP", 2 }, { "BYN", 2 }, { "BZD", 2 }, { "CAD", 2 },
	{ "CDF", 2 }, { "CHE", 2 }, { "CHF", 2 }, { "CHW", 2 }, { "CLF", 4 },
	{ "CLP", 0 }, { "CNY", 2 }, { "COP", 2 }, { "COU", 2 }, { "CRC", 2 },
	{ "CUP", 2 }, { "CVE", 2 }, { "CZK", 2 }, { "DJF", 0 }, { "DKK", 2 },
	{ "DOP", 2 }, { "DZD", 2 }, { "EGP", 2 }, { "ERN", 2 }, { "ETB", 2 },
	{ "EUR", 2 }, { "FJD", 2 }, { "FKP", 2 }, { "GBP", 2 }, { "GEL", 2 },
	{ "GHS", 2 }, { "GIP", 2 }, { "GMD", 2 }, { "GNF", 0 }, { "GTQ", 2 },
	{ "GYD", 2 }, { "HKD", 2 }, { "HNL", 2 }, { "HTG", 2 }, { "HUF", 2 },
	{ "IDR", 2 }, { "ILS", 2 }, { "INR", 2 }, { "IQD", 3 }, { "IRR", 2 },
	{ "ISK", 0 }, { "JMD", 2 }, { "JOD", 3 }, { "JPY", 0 }, { "KES", 2 },
	{ "KGS", 2 }, { "KHR", 2 }, { "KMF", 0 }, { "KPW", 2 }, { "KRW", 0 },
	{ "KWD", 3 }, { "KYD", 2 }, { "KZT", 2 }, { "LAK", 2 }, { "LBP", 2 },
	{ "LKR", 2 }, { "LRD", 2 }, { "LSL", 2 }, { "LYD", 3 }, { "MAD", 2 },
	{ "MDL", 2 }, { "MGA", 2 }, { "MKD", 2 }, { "MMK", 2 }, { "MNT", 2 },
	{ "MOP", 2 }, { "MRU", 2 }, { "MUR", 2 }, { "MVR", 2 }, { "MWK", 2 },
	{ "MXN", 2 }, { "MXV", 2 }, { "MYR", 2 }, { "MZN", 2 }, { "NAD", 2 },
	{ "NGN", 2 }, { "NIO", 2 }, { "NOK", 2 }, { "NPR", 2 }, { "NZD", 2 },
	{ "OMR", 3 }, { "PAB", 2 }, { "PEN", 2 }, { "PGK", 2 }, { "PHP", 2 },
	{ "PKR", 2 }, { "PLN", 2 }, { "PYG", 0 }, { "QAR", 2 }, { "RON", 2 },
	{ "RSD", 2 }, { "RUB", 2 }, { "RWF", 0 }, { "SAR", 2 }, { "SBD", 2 },
	{ "SCR", 2 }, { "SDG", 2 }, { "SEK", 2 }, { "SGD", 2 }, { "SHP", 2 },
	{ "SLE", 2 }, { "SOS", 2 }, { "SRD", 2 }, { "SSP", 2 }, { "STN", 2 },
	{ "SVC", 2 }, { "SYP", 2 }, { "SZL", 2 }, { "THB", 2 }, { "TJS", 2 },
	{ "TMT", 2 }, { "TND", 3 }, { "TOP", 2 }, { "TRY", 2 }, { "TTD", 2 },
	{ "TWD", 2 }, { "TZS", 2 }, { "UAH", 2 }, { "UGX", 0 }, { "USD", 2 },
	{ "USN", 2 }, { "UYI", 0 }, { "UYU", 2 }, { "UYW", 4 }, { "UZS", 2 },
	{ "VED", 2 }, { "VES", 2 }, { "VND", 0 }, { "VUV", 0 }, { "WST", 2 },
	{ "XAD", 2 }, { "XAF", 0 }, { "XCD", 2 }, { "XCG", 2 }, { "XOF", 0 },
	{ "XPF", 0 }, { "YER", 2 }, { "ZAR", 2 }, { "ZMW", 2 }, { "ZWG", 2 },
	/* Withdrawn, still accepted. */
	{ "ANG", 2 }, { "BGN", 2 }, { "BYR", 0 }, { "CUC", 2 }, { "EEK", 2 },
	{ "HRK", 2 }, { "LTL", 2 }, { "LVL", 2 }, { "MRO", 2 }, { "SLL", 2 },
	{ "STD", 2 }, { "VEF", 2 }, { "ZMK", 2 }, { "ZWL", 2 },
};

START_TEST(test_exponent_table)
{
	size_t i;

	for (i = 0; i < sizeof(iso) / sizeof(iso[0]); i++)
		ck_assert_msg(money_exponent(iso[i].code) == iso[i].exp,
		    "%s: got %d, want %d", iso[i].code,
		    money_exponent(iso[i].code), iso[i].exp);
	ck_assert_uint_eq(sizeof(iso) / sizeof(iso[0]), 179);
}
END_TEST

START_TEST(test_exponent_classes)
{
	ck_assert_int_eq(money_exponent("JPY"), 0);
	ck_assert_int_eq(money_exponent("KRW"), 0);
	ck_assert_int_eq(money_exponent("USD"), 2);
	ck_assert_int_eq(money_exponent("EUR"), 2);
	ck_assert_int_eq(money_exponent("KWD"), 3);
	ck_assert_int_eq(money_exponent("TND"), 3);
	ck_assert_int_eq(money_exponent("CLF"), 4);
	ck_assert_int_eq(money_exponent("UYW"), 4);
	/* First and last entries of the sorted table. */
	ck_assert_int_eq(money_exponent("AED"), 2);
	ck_assert_int_eq(money_exponent("ZWL"), 2);
}
END_TEST

START_TEST(test_exponent_unknown)
{
	ck_assert_int_eq(money_exponent("XYZ"), -1);
	ck_assert_int_eq(money_exponent("AAA"), -1);
	ck_assert_int_eq(money_exponent("ZZZ"), -1);
	/* No minor unit in ISO 4217: deliberately unknown. */
	ck_assert_int_eq(money_exponent("XAU"), -1);
	ck_assert_int_eq(money_exponent("XDR"), -1);
	ck_assert_int_eq(money_exponent("XXX"), -1);
	ck_assert_int_eq(money_exponent("usd"), -1);
	ck_assert_int_eq(money_exponent("Usd"), -1);
	ck_assert_int_eq(money_exponent("US"), -1);
	ck_assert_int_eq(money_exponent("USDD"), -1);
	ck_assert_int_eq(money_exponent(""), -1);
	ck_assert_int_eq(money_exponent(NULL), -1);
}
END_TEST

START_TEST(test_currency_wellformed)
{
	ck_assert(money_currency_wellformed("USD"));
	ck_assert(money_currency_wellformed("XYZ"));
	ck_assert(!money_currency_wellformed("usd"));
	ck_assert(!money_currency_wellformed("US"));
	ck_assert(!money_currency_wellformed("USDX"));
	ck_assert(!money_currency_wellformed("US1"));
	ck_assert(!money_currency_wellformed(" USD"));
	ck_assert(!money_currency_wellformed(""));
	ck_assert(!money_currency_wellformed(NULL));
}
END_TEST

START_TEST(test_exponent_zero)
{
	expect_minor("0", "JPY", 0);
	expect_minor("1000", "JPY", 1000);
	expect_minor("12.00", "JPY", 12);
	expect_minor("12.0", "KRW", 12);
	expect_minor("7", "VND", 7);
	expect_fail("12.50", "JPY", RS_ERR_RANGE);
	expect_fail("0.5", "JPY", RS_ERR_RANGE);
	expect_fail("12.000000000000000001", "JPY", RS_ERR_RANGE);
}
END_TEST

START_TEST(test_exponent_two)
{
	expect_minor("12.95", "USD", 1295);
	expect_minor("12.9", "USD", 1290);
	expect_minor("12", "USD", 1200);
	expect_minor("0.01", "USD", 1);
	expect_minor("0", "USD", 0);
	expect_minor("1.2300", "USD", 123);
	expect_minor("25.00", "EUR", 2500);
	expect_minor("12.950000000000000000", "USD", 1295);
	expect_fail("12.345", "USD", RS_ERR_RANGE);
	expect_fail("0.001", "USD", RS_ERR_RANGE);
}
END_TEST

START_TEST(test_exponent_three_four)
{
	expect_minor("1.234", "KWD", 1234);
	expect_minor("1.5", "KWD", 1500);
	expect_minor("12.3450", "BHD", 12345);
	expect_minor("0.001", "OMR", 1);
	expect_fail("1.2345", "KWD", RS_ERR_RANGE);
	expect_minor("12.3456", "CLF", 123456);
	expect_minor("0.0001", "CLF", 1);
	expect_minor("3", "UYW", 30000);
	expect_fail("0.00001", "CLF", RS_ERR_RANGE);
}
END_TEST

START_TEST(test_unknown_currency)
{
	expect_fail("12.95", "XYZ", RS_ERR_RANGE);
	expect_fail("12.95", "XAU", RS_ERR_RANGE);
	expect_fail("12.95", "usd", RS_ERR_RANGE);
	expect_fail("12.95", NULL, RS_ERR_RANGE);
	/* A bad text is bad input whatever the currency. */
	expect_fail("1e5", "XYZ", RS_ERR_INPUT);
}
END_TEST

static const char *bad_decimals[] = {
	"", "-1", "+1", "1e5", "1E5", ".5", "5.", "01", "00", "00.5",
	"1,00", "1.000,00", " 1", "1 ", "1. 5", "0x10", "1..2", "1.2.3",
	"NaN", "inf", "-0", "１", "1\n", "1.-5", "12.3456789012345678901",
	"1.0000000000000000000",
};

START_TEST(test_bad_formats)
{
	size_t i;

	for (i = 0; i < sizeof(bad_decimals) / sizeof(bad_decimals[0]);
	    i++) {
		ck_assert_msg(!money_decimal_wellformed(bad_decimals[i]),
		    "accepted \"%s\"", bad_decimals[i]);
		expect_fail(bad_decimals[i], "USD", RS_ERR_INPUT);
	}
	ck_assert(!money_decimal_wellformed(NULL));
	expect_fail(NULL, "USD", RS_ERR_INPUT);
}
END_TEST

START_TEST(test_decimals_limit)
{
	/* 18 decimals are fine, 19 are not. */
	ck_assert(money_decimal_wellformed("0.123456789012345678"));
	ck_assert(!money_decimal_wellformed("0.1234567890123456789"));
	expect_minor("0.120000000000000000", "USD", 12);
	expect_fail("0.1200000000000000000", "USD", RS_ERR_INPUT);
}
END_TEST

START_TEST(test_text_length)
{
	char s[80];

	/* 64 bytes: well-formed (if too large for int64). */
	memset(s, '9', 64);
	s[64] = '\0';
	ck_assert(money_decimal_wellformed(s));
	expect_fail(s, "JPY", RS_ERR_RANGE);
	/* 65 bytes: refused as text. */
	memset(s, '9', 65);
	s[65] = '\0';
	ck_assert(!money_decimal_wellformed(s));
	expect_fail(s, "JPY", RS_ERR_INPUT);
	/* 64 bytes with a decimal part. */
	memset(s, '0', 64);
	s[0] = '1';
	s[46] = '.';
	s[64] = '\0';
	ck_assert(money_decimal_wellformed(s));
}
END_TEST

START_TEST(test_overflow)
{
	expect_minor("9223372036854775807", "JPY", INT64_MAX);
	expect_fail("9223372036854775808", "JPY", RS_ERR_RANGE);
	expect_minor("92233720368547758.07", "USD", INT64_MAX);
	expect_fail("92233720368547758.08", "USD", RS_ERR_RANGE);
	expect_minor("9223372036854775.807", "KWD", INT64_MAX);
	expect_fail("9223372036854775.808", "KWD", RS_ERR_RANGE);
	expect_minor("922337203685477.5807", "CLF", INT64_MAX);
	expect_fail("922337203685477.5808", "CLF", RS_ERR_RANGE);
	/* Overflow found by the padding, not the integer part. */
	expect_minor("92233720368547758", "USD", 9223372036854775800);
	expect_fail("92233720368547759", "USD", RS_ERR_RANGE);
	expect_fail("99999999999999999999", "JPY", RS_ERR_RANGE);
	expect_fail("18446744073709551616", "JPY", RS_ERR_RANGE);
	expect_fail("18446744073709551615", "JPY", RS_ERR_RANGE);
}
END_TEST

START_TEST(test_format)
{
	expect_format(1295, 2, "12.95");
	expect_format(-5, 2, "-0.05");
	expect_format(7, 0, "7");
	expect_format(0, 0, "0");
	expect_format(0, 2, "0.00");
	expect_format(-1, 0, "-1");
	expect_format(-1295, 2, "-12.95");
	expect_format(100, 2, "1.00");
	expect_format(12345, 3, "12.345");
	expect_format(5, 3, "0.005");
	expect_format(-1000, 3, "-1.000");
	expect_format(1, 4, "0.0001");
	expect_format(1, 18, "0.000000000000000001");
	expect_format(INT64_MAX, 0, "9223372036854775807");
	expect_format(INT64_MAX, 2, "92233720368547758.07");
	expect_format(INT64_MIN, 0, "-9223372036854775808");
	expect_format(INT64_MIN, 2, "-92233720368547758.08");
	expect_format(INT64_MIN, 18, "-9.223372036854775808");
}
END_TEST

START_TEST(test_format_limits)
{
	char out[8];

	memset(out, 'x', sizeof(out));
	ck_assert_int_eq(money_format(1295, 2, out, 5), RS_ERR_TOOBIG);
	ck_assert_int_eq(money_format(1295, 2, out, 6), RS_OK);
	ck_assert_str_eq(out, "12.95");
	ck_assert_int_eq(money_format(-5, 2, out, 5), RS_ERR_TOOBIG);
	ck_assert_int_eq(money_format(-5, 2, out, 6), RS_OK);
	ck_assert_str_eq(out, "-0.05");
	ck_assert_int_eq(money_format(1, 0, out, 0), RS_ERR_TOOBIG);
	ck_assert_int_eq(money_format(1, 0, out, 1), RS_ERR_TOOBIG);
	ck_assert_int_eq(money_format(1, -1, out, sizeof(out)),
	    RS_ERR_INPUT);
	ck_assert_int_eq(money_format(1, 19, out, sizeof(out)),
	    RS_ERR_INPUT);
}
END_TEST

START_TEST(test_round_trip)
{
	static const struct {
		const char	*text;
		const char	*cur;
		const char	*canon;
	} rt[] = {
		{ "12.95", "USD", "12.95" },
		{ "0.05", "USD", "0.05" },
		{ "12.9", "USD", "12.90" },
		{ "1.2300", "USD", "1.23" },
		{ "1000", "JPY", "1000" },
		{ "12.00", "JPY", "12" },
		{ "0", "KRW", "0" },
		{ "1.234", "KWD", "1.234" },
		{ "7", "BHD", "7.000" },
		{ "12.3456", "CLF", "12.3456" },
		{ "92233720368547758.07", "USD", "92233720368547758.07" },
	};
	char out[32];
	int64_t minor;
	size_t i;

	for (i = 0; i < sizeof(rt) / sizeof(rt[0]); i++) {
		ck_assert_int_eq(money_to_minor(rt[i].text, rt[i].cur,
		    &minor), RS_OK);
		ck_assert_int_eq(money_format(minor, money_exponent(rt[i].cur),
		    out, sizeof(out)), RS_OK);
		ck_assert_str_eq(out, rt[i].canon);
		/* The canonical text parses back to the same amount. */
		expect_minor(out, rt[i].cur, minor);
	}
}
END_TEST

static Suite *
money_suite(void)
{
	Suite *s = suite_create("money");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_exponent_table);
	tcase_add_test(tc, test_exponent_classes);
	tcase_add_test(tc, test_exponent_unknown);
	tcase_add_test(tc, test_currency_wellformed);
	tcase_add_test(tc, test_exponent_zero);
	tcase_add_test(tc, test_exponent_two);
	tcase_add_test(tc, test_exponent_three_four);
	tcase_add_test(tc, test_unknown_currency);
	tcase_add_test(tc, test_bad_formats);
	tcase_add_test(tc, test_decimals_limit);
	tcase_add_test(tc, test_text_length);
	tcase_add_test(tc, test_overflow);
	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_format_limits);
	tcase_add_test(tc, test_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(money_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
