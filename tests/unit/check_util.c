/*
 * check_util.c: the util layer: strnum, buf, isotime, metrics, status.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/isotime.h"
#include "util/metrics.h"
#include "util/status.h"
#include "util/strnum.h"
#include "util/termsafe.h"

START_TEST(test_strnum_good)
{
	int64_t v = -1;

	ck_assert_ptr_null(strnum_i64("0", 0, 10, &v));
	ck_assert_int_eq(v, 0);
	ck_assert_ptr_null(strnum_i64("9223372036854775807", INT64_MIN,
	    INT64_MAX, &v));
	ck_assert(v == INT64_MAX);
	ck_assert_ptr_null(strnum_i64("-9223372036854775808", INT64_MIN,
	    INT64_MAX, &v));
	ck_assert(v == INT64_MIN);
	ck_assert_ptr_null(strnum_i64("-12", -100, 100, &v));
	ck_assert_int_eq(v, -12);
}
END_TEST

START_TEST(test_strnum_bad)
{
	int64_t v = 42;

	ck_assert_str_eq(strnum_i64("", 0, 10, &v), "invalid");
	ck_assert_str_eq(strnum_i64(" 1", 0, 10, &v), "invalid");
	ck_assert_str_eq(strnum_i64("1 ", 0, 10, &v), "invalid");
	ck_assert_str_eq(strnum_i64("+1", 0, 10, &v), "invalid");
	ck_assert_str_eq(strnum_i64("01", 0, 10, &v), "invalid");
	ck_assert_str_eq(strnum_i64("1e3", 0, 10000, &v), "invalid");
	ck_assert_str_eq(strnum_i64("-", -10, 10, &v), "invalid");
	ck_assert_str_eq(strnum_i64("11", 0, 10, &v), "too large");
	ck_assert_str_eq(strnum_i64("-11", -10, 10, &v), "too small");
	ck_assert_str_eq(strnum_i64("9223372036854775808", INT64_MIN,
	    INT64_MAX, &v), "too large");
	ck_assert_str_eq(strnum_i64("-9223372036854775809", INT64_MIN,
	    INT64_MAX, &v), "too small");
	ck_assert_ptr_nonnull(strnum_i64(NULL, 0, 1, &v));
	ck_assert_int_eq(v, 42);	/* untouched on failure */
}
END_TEST

START_TEST(test_buf_ceiling)
{
	struct buf b;
	char *p;
	size_t len;

	buf_init(&b, 8);
	ck_assert_int_eq(buf_appends(&b, "abcd"), RS_OK);
	ck_assert_int_eq(buf_appends(&b, "efgh"), RS_OK);
	ck_assert_int_eq(buf_appends(&b, "i"), RS_ERR_TOOBIG);
	ck_assert_uint_eq(b.len, 8);
	ck_assert_str_eq(b.data, "abcdefgh");
	ck_assert_int_eq(buf_printf(&b, "%d", 1), RS_ERR_TOOBIG);
	buf_reset(&b);
	ck_assert_int_eq(buf_printf(&b, "%s-%d", "x", 12), RS_OK);
	ck_assert_str_eq(b.data, "x-12");
	p = buf_detach(&b, &len);
	ck_assert_str_eq(p, "x-12");
	ck_assert_uint_eq(len, 4);
	ck_assert_ptr_null(b.data);
	free(p);
	buf_cleanup(&b);
}
END_TEST

START_TEST(test_buf_printf_long)
{
	struct buf b;
	char big[1000];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_init(&b, 4096);
	ck_assert_int_eq(buf_printf(&b, "[%s]", big), RS_OK);
	ck_assert_uint_eq(b.len, 1001);
	ck_assert_int_eq(b.data[0], '[');
	ck_assert_int_eq(b.data[1000], ']');
	buf_cleanup(&b);
	buf_init(&b, 500);
	ck_assert_int_eq(buf_printf(&b, "%s", big), RS_ERR_TOOBIG);
	ck_assert_uint_eq(b.len, 0);
	buf_cleanup(&b);
}
END_TEST

START_TEST(test_isotime)
{
	struct isotime a, b;

	ck_assert_int_eq(isotime_parse("1970-01-01T00:00:00Z", &a), RS_OK);
	ck_assert(a.sec == 0 && a.nsec == 0);
	ck_assert_int_eq(isotime_parse("2021-12-29T14:35:54Z", &a), RS_OK);
	ck_assert(a.sec == 1640788554);
	ck_assert_int_eq(isotime_parse("2024-02-29T23:59:59.5Z", &a), RS_OK);
	ck_assert_int_eq(a.nsec, 500000000);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27.272823Z", &a),
	    RS_OK);
	ck_assert_int_eq(a.nsec, 272823000);
	/* Different fraction lengths compare by value, not by text. */
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27.2Z", &a), RS_OK);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27.19Z", &b), RS_OK);
	ck_assert_int_gt(isotime_cmp(&a, &b), 0);
	ck_assert_int_eq(isotime_parse("2025-08-09T17:26:27+02:00", &a),
	    RS_OK);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27Z", &b), RS_OK);
	ck_assert_int_eq(isotime_cmp(&a, &b), 0);
	ck_assert_int_eq(isotime_parse("2023-02-29T00:00:00Z", &a),
	    RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse("2025-08-09 15:26:27Z", &a),
	    RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27", &a),
	    RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27.Z", &a),
	    RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27.1234567891Z",
	    &a), RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse("2025-08-09T15:26:27Zjunk", &a),
	    RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse("2025-13-09T15:26:27Z", &a),
	    RS_ERR_INPUT);
	ck_assert_int_eq(isotime_parse(NULL, &a), RS_ERR_INPUT);
}
END_TEST

START_TEST(test_metrics_render)
{
	static const int64_t bounds[] = { 1000, 5000 };
	struct buf b;

	metrics_reset();
	metrics_define("t_requests_total", METRIC_COUNTER, "Requests.");
	metrics_define("t_ready", METRIC_GAUGE, "Ready.");
	metrics_define_histogram("t_seconds", "Latency.", bounds, 2, 1000000);
	metrics_add("t_requests_total", "code=\"200\"", 2);
	metrics_add("t_requests_total", "code=\"200\"", 1);
	metrics_add("t_requests_total", "code=\"503\"", 1);
	metrics_set("t_ready", "", 1);
	metrics_observe("t_seconds", "", 500);
	metrics_observe("t_seconds", "", 2500);
	metrics_observe("t_seconds", "", 9000);
	ck_assert_int_eq(metrics_get("t_requests_total", "code=\"200\""), 3);
	buf_init(&b, 1 << 20);
	metrics_render(&b);
	ck_assert_ptr_nonnull(strstr(b.data,
	    "# TYPE t_requests_total counter\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
	    "t_requests_total{code=\"200\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
	    "t_requests_total{code=\"503\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "t_ready 1\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
	    "t_seconds_bucket{le=\"0.001000\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
	    "t_seconds_bucket{le=\"0.005000\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
	    "t_seconds_bucket{le=\"+Inf\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "t_seconds_sum 0.012000\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "t_seconds_count 3\n"));
	buf_cleanup(&b);
	metrics_reset();
}
END_TEST

/*
 * Instance ids label series, and AppInstalled brings new ones as long as
 * the daemon runs: past the most a family keeps, a new series is dropped
 * (the daemon used to exit on the 1025th instance's backfill), and the
 * ones kept still count.
 */
START_TEST(test_metrics_series_cap)
{
	char label[64];
	struct buf b;
	int i;

	metrics_reset();
	metrics_define("t_running", METRIC_GAUGE, "Running.");
	metrics_define("t_pages_total", METRIC_COUNTER, "Pages.");
	metrics_define_histogram("t_size", "Size.", (const int64_t[]){ 1 }, 1,
	    1);
	for (i = 0; i < 1100; i++) {
		snprintf(label, sizeof(label), "instance=\"i-%d\"", i);
		metrics_set("t_running", label, 1);
		metrics_add("t_pages_total", label, 2);
		metrics_observe("t_size", label, 1);
	}
	metrics_add("t_pages_total", "instance=\"i-7\"", 1);
	ck_assert_int_eq(metrics_get("t_pages_total", "instance=\"i-7\""), 3);
	ck_assert_int_eq(metrics_get("t_pages_total",
	    "instance=\"i-1099\""), 0);
	buf_init(&b, 1 << 24);
	metrics_render(&b);
	ck_assert_ptr_nonnull(strstr(b.data,
	    "t_running{instance=\"i-1023\"} 1\n"));
	ck_assert_ptr_null(strstr(b.data, "instance=\"i-1024\""));
	buf_cleanup(&b);
	metrics_reset();
}
END_TEST

START_TEST(test_status_names)
{
	for (int s = RS_OK; s <= RS_ERR_INTERNAL; s++) {
		ck_assert_ptr_nonnull(rs_strstatus((enum rs_status)s));
		ck_assert_str_ne(rs_strstatus((enum rs_status)s),
		    "unknown status");
	}
}
END_TEST

START_TEST(test_term_safe)
{
	char buf[8], *mem = NULL;
	size_t len = 0;
	FILE *f;

	ck_assert_str_eq(term_safe("a\033[1m\x7f\tb", buf, sizeof(buf)),
	    "a?[1m??");
	ck_assert_str_eq(term_safe(NULL, buf, sizeof(buf)), "");
	ck_assert_str_eq(term_safe("abc", buf, 1), "");
	/* Bytes of UTF-8 are not control bytes. */
	ck_assert_str_eq(term_safe("\xc3\xbc", buf, sizeof(buf)), "\xc3\xbc");
	f = open_memstream(&mem, &len);
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(term_fputs("x\ny\r\033z", f), 6);
	ck_assert_uint_eq(term_fputs(NULL, f), 0);
	fclose(f);
	ck_assert_str_eq(mem, "x?y??z");
	free(mem);
}
END_TEST

static Suite *
util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_strnum_good);
	tcase_add_test(tc, test_strnum_bad);
	tcase_add_test(tc, test_buf_ceiling);
	tcase_add_test(tc, test_buf_printf_long);
	tcase_add_test(tc, test_isotime);
	tcase_add_test(tc, test_metrics_render);
	tcase_add_test(tc, test_metrics_series_cap);
	tcase_add_test(tc, test_status_names);
	tcase_add_test(tc, test_term_safe);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(util_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
