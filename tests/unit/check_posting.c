/*
 * check_posting.c: the accounting semantics of the exporters: which
 * status changes post or reverse, the balanced transaction in exact
 * minor units (USD, JPY, KWD), fees, dates, account names and the
 * refusals.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "domain/money.h"
#include "exporters/posting.h"

/* A SUCCEEDED USD record of 12.95 that posts. */
static struct rs_export_record
base_record(void)
{
	struct rs_export_record r;

	memset(&r, 0, sizeof(r));
	r.seq = 7;
	r.idempotency_key = "books:r-1:2";
	r.refund_id = "r-1";
	r.charge_id = "ch-1";
	r.has_revision = 1;
	r.revision = 2;
	r.status = "SUCCEEDED";
	r.prev_status = "PENDING";
	r.currency = "USD";
	r.amount = "12.95";
	r.amount_exact = 1;
	r.amount_minor = 1295;
	r.exponent = 2;
	r.updated_date = "2024-05-01T10:20:30.123Z";
	r.created_date = "2024-04-30T09:00:00Z";
	r.changed_at = "2024-05-02T00:00:00Z";
	r.source = "webhook";
	r.body = "{}";
	r.posting = RS_POSTING_POST;
	return r;
}

static struct posting_accounts
accounts(void)
{
	struct posting_accounts a;

	posting_accounts_default(&a);
	return a;
}

/* The lines of t sum to zero. */
static void
expect_balanced(const struct posting_txn *t)
{
	int64_t sum = 0;
	size_t i;

	for (i = 0; i < t->nlines; i++)
		sum += t->lines[i].minor;
	ck_assert_int_eq(sum, 0);
}

static void
expect_line(const struct posting_txn *t, size_t i, const char *account,
    int64_t minor)
{
	ck_assert_uint_lt(i, t->nlines);
	ck_assert_str_eq(t->lines[i].account, account);
	ck_assert_int_eq(t->lines[i].minor, minor);
}

START_TEST(test_classify)
{
	/* Reaching SUCCEEDED posts, from anything or from nothing. */
	ck_assert_int_eq(posting_classify("SUCCEEDED", NULL), RS_POSTING_POST);
	ck_assert_int_eq(posting_classify("SUCCEEDED", "PENDING"),
	    RS_POSTING_POST);
	ck_assert_int_eq(posting_classify("SUCCEEDED", "FAILED"),
	    RS_POSTING_POST);
	ck_assert_int_eq(posting_classify("SUCCEEDED", "REVERSED"),
	    RS_POSTING_POST);
	/* Leaving it reverses, whatever the new status. */
	ck_assert_int_eq(posting_classify("REVERSED", "SUCCEEDED"),
	    RS_POSTING_REVERSE);
	ck_assert_int_eq(posting_classify("FAILED", "SUCCEEDED"),
	    RS_POSTING_REVERSE);
	ck_assert_int_eq(posting_classify("PENDING", "SUCCEEDED"),
	    RS_POSTING_REVERSE);
	ck_assert_int_eq(posting_classify("SOMETHING_NEW", "SUCCEEDED"),
	    RS_POSTING_REVERSE);
	/* Staying, or never being there, posts nothing. */
	ck_assert_int_eq(posting_classify("SUCCEEDED", "SUCCEEDED"),
	    RS_POSTING_NONE);
	ck_assert_int_eq(posting_classify("PENDING", NULL), RS_POSTING_NONE);
	ck_assert_int_eq(posting_classify("REVERSED", NULL), RS_POSTING_NONE);
	ck_assert_int_eq(posting_classify("FAILED", "PENDING"),
	    RS_POSTING_NONE);
	ck_assert_int_eq(posting_classify("REVERSED", "FAILED"),
	    RS_POSTING_NONE);
	ck_assert_int_eq(posting_classify(NULL, "SUCCEEDED"), RS_POSTING_NONE);
	/* Exact match only. */
	ck_assert_int_eq(posting_classify("succeeded", NULL), RS_POSTING_NONE);
	ck_assert_int_eq(posting_classify("SUCCEEDED ", NULL),
	    RS_POSTING_NONE);
}
END_TEST

START_TEST(test_names)
{
	ck_assert_str_eq(posting_name(RS_POSTING_NONE), "none");
	ck_assert_str_eq(posting_name(RS_POSTING_POST), "post");
	ck_assert_str_eq(posting_name(RS_POSTING_REVERSE), "reverse");
	ck_assert_str_eq(posting_name((enum rs_posting)9), "none");
}
END_TEST

START_TEST(test_state_sequence)
{
	/* PENDING -> SUCCEEDED -> REVERSED -> SUCCEEDED nets one posting. */
	static const char *const seq[] = { "PENDING", "SUCCEEDED",
	    "REVERSED", "SUCCEEDED" };
	static const enum rs_posting want[] = { RS_POSTING_NONE,
	    RS_POSTING_POST, RS_POSTING_REVERSE, RS_POSTING_POST };
	const char *prev = NULL;
	int net = 0;
	size_t i;

	for (i = 0; i < 4; i++) {
		enum rs_posting p = posting_classify(seq[i], prev);

		ck_assert_int_eq(p, want[i]);
		net += p == RS_POSTING_POST ? 1 : p == RS_POSTING_REVERSE ?
		    -1 : 0;
		prev = seq[i];
	}
	ck_assert_int_eq(net, 1);
}
END_TEST

START_TEST(test_post_usd)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;

	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_int_eq(t.kind, RS_POSTING_POST);
	ck_assert_str_eq(t.currency, "USD");
	ck_assert_int_eq(t.exponent, 2);
	ck_assert_str_eq(t.date, "2024-05-01");
	ck_assert_uint_eq(t.nlines, 2);
	expect_line(&t, 0, "Expenses:Refunds", 1295);
	expect_line(&t, 1, "Assets:Wix:Clearing", -1295);
	expect_balanced(&t);
}
END_TEST

START_TEST(test_reverse_flips_signs)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;

	r.status = "REVERSED";
	r.prev_status = "SUCCEEDED";
	r.posting = RS_POSTING_REVERSE;
	r.returned_processing_fee = "0.40";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_int_eq(t.kind, RS_POSTING_REVERSE);
	ck_assert_uint_eq(t.nlines, 3);
	expect_line(&t, 0, "Expenses:Refunds", -1295);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Processing", 40);
	expect_line(&t, 2, "Assets:Wix:Clearing", 1255);
	expect_balanced(&t);
}
END_TEST

START_TEST(test_none_posts_nothing)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;

	r.status = "PENDING";
	r.prev_status = NULL;
	r.posting = RS_POSTING_NONE;
	/* Even a record that could never post is fine when it posts
	 * nothing. */
	r.amount_exact = 0;
	r.currency = "??";
	memset(&t, 0x5a, sizeof(t));
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_int_eq(t.kind, RS_POSTING_NONE);
	ck_assert_uint_eq(t.nlines, 0);
}
END_TEST

START_TEST(test_fees)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;

	r.returned_application_fee = "0.10";
	r.returned_processing_fee = "0.4";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_uint_eq(t.nlines, 4);
	expect_line(&t, 0, "Expenses:Refunds", 1295);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Application", -10);
	expect_line(&t, 2, "Income:Wix:Fees:Returned:Processing", -40);
	expect_line(&t, 3, "Assets:Wix:Clearing", -1245);
	expect_balanced(&t);

	/* A zero fee is left out. */
	r.returned_application_fee = "0.00";
	r.returned_processing_fee = "0";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_uint_eq(t.nlines, 2);
	expect_line(&t, 1, "Assets:Wix:Clearing", -1295);

	/* Fees larger than the refund: clearing receives money. */
	r.returned_application_fee = "20";
	r.returned_processing_fee = NULL;
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_uint_eq(t.nlines, 3);
	expect_line(&t, 2, "Assets:Wix:Clearing", 705);
	expect_balanced(&t);
}
END_TEST

START_TEST(test_minor_units)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;
	char text[48];

	/* JPY has no minor units. */
	r.currency = "JPY";
	r.amount = "1500";
	r.amount_minor = 1500;
	r.exponent = 0;
	r.returned_processing_fee = "45";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_int_eq(t.exponent, 0);
	expect_line(&t, 0, "Expenses:Refunds", 1500);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Processing", -45);
	expect_line(&t, 2, "Assets:Wix:Clearing", -1455);
	ck_assert_int_eq(money_format(t.lines[2].minor, t.exponent, text,
	    sizeof(text)), RS_OK);
	ck_assert_str_eq(text, "-1455");

	/* A JPY fee with decimals is not exact: refused, not rounded. */
	r.returned_processing_fee = "45.5";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_ERR_RANGE);

	/* KWD has three. */
	r.currency = "KWD";
	r.amount = "1.234";
	r.amount_minor = 1234;
	r.exponent = 3;
	r.returned_processing_fee = "0.005";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_int_eq(t.exponent, 3);
	expect_line(&t, 0, "Expenses:Refunds", 1234);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Processing", -5);
	expect_line(&t, 2, "Assets:Wix:Clearing", -1229);
	ck_assert_int_eq(money_format(t.lines[2].minor, t.exponent, text,
	    sizeof(text)), RS_OK);
	ck_assert_str_eq(text, "-1.229");
}
END_TEST

START_TEST(test_refusals)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;
	const char *why = NULL;

	r.amount_exact = 0;
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_RANGE);
	ck_assert_ptr_nonnull(why);
	ck_assert_ptr_nonnull(strstr(why, "not exact"));

	r = base_record();
	r.currency = "usd";
	why = NULL;
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, "bad currency code");

	r = base_record();
	r.returned_application_fee = "0.001";
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_RANGE);
	ck_assert_ptr_nonnull(strstr(why, "returnedApplicationFee"));

	r = base_record();
	r.returned_processing_fee = "-1";
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_RANGE);
	ck_assert_ptr_nonnull(strstr(why, "returnedProcessingFee"));

	/* The record's exponent must be the currency's. */
	r = base_record();
	r.exponent = 3;
	r.returned_processing_fee = "0.40";
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_RANGE);

	/* Overflow of amount minus fees. */
	r = base_record();
	r.amount_minor = 0;
	r.returned_application_fee = "92233720368547758.07";
	r.returned_processing_fee = "0.01";
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_RANGE);
	ck_assert_str_eq(why, "fees and amount overflow");

	/* No date at all. */
	r = base_record();
	r.updated_date = "yesterday";
	r.created_date = NULL;
	r.changed_at = "";
	ck_assert_int_eq(posting_build(&r, &a, &t, &why), RS_ERR_INPUT);
	ck_assert_str_eq(why, "no date to post on");
}
END_TEST

START_TEST(test_dates)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a = accounts();
	struct posting_txn t;

	/*
	 * The UTC date of updatedDate: 23:30 at -02:00 is the next day.
	 * Before 1970 (a placeholder such as Go's zero time) is no date,
	 * so createdDate's (2024-04-30) is used: beancount's accounts open
	 * on 1970-01-01, bean-check would refuse the transaction and with
	 * it the whole file.
	 */
	static const struct {
		const char	*updated;
		const char	*date;
	} cases[] = {
		{ "2024-02-28T23:30:00-02:00", "2024-02-29" },
		{ "2023-12-31T23:59:59.999999Z", "2023-12-31" },
		{ "1970-01-01T00:00:00Z", "1970-01-01" },
		{ "1969-12-31T23:59:59Z", "2024-04-30" },
		{ "0001-01-01T00:00:00Z", "2024-04-30" },
		{ "1970-01-01T00:30:00+01:00", "2024-04-30" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r.updated_date = cases[i].updated;
		ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
		ck_assert_msg(strcmp(t.date, cases[i].date) == 0,
		    "%s: posted on %s, not %s", cases[i].updated, t.date,
		    cases[i].date);
	}
	/* Fall back to createdDate, then to when it was stored. */
	r.updated_date = NULL;
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_str_eq(t.date, "2024-04-30");
	r.created_date = "not a date";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_str_eq(t.date, "2024-05-02");
}
END_TEST

START_TEST(test_configured_accounts)
{
	struct rs_export_record r = base_record();
	struct posting_accounts a;
	struct posting_txn t;

	a.refund = "Income:Sales:Returns";
	a.clearing = "Assets:Bank:Stripe";
	a.application_fee = "Income:AppFee";
	a.processing_fee = "Expenses:Fees";
	r.returned_application_fee = "1";
	r.returned_processing_fee = "2";
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	expect_line(&t, 0, "Income:Sales:Returns", 1295);
	expect_line(&t, 1, "Income:AppFee", -100);
	expect_line(&t, 2, "Expenses:Fees", -200);
	expect_line(&t, 3, "Assets:Bank:Stripe", -995);
}
END_TEST

START_TEST(test_account_names)
{
	const enum posting_syntax L = POSTING_SYNTAX_LEDGER;
	const enum posting_syntax B = POSTING_SYNTAX_BEANCOUNT;
	char longname[260];

	ck_assert(posting_account_valid("Expenses:Refunds", L));
	ck_assert(posting_account_valid("Expenses:Refunds", B));
	ck_assert(posting_account_valid("Assets:Wix:Clearing-2024", B));
	ck_assert(posting_account_valid("Assets:2024", B));
	ck_assert(posting_account_valid("expenses:refunds_x", L));
	ck_assert(!posting_account_valid("expenses:refunds", B));
	ck_assert(!posting_account_valid("Costs:Refunds", B));
	/* bean-check: "Invalid token: 'Expenses'"; hledger takes it. */
	ck_assert(!posting_account_valid("Expenses", B));
	ck_assert(!posting_account_valid("Assets:", B));
	ck_assert(posting_account_valid("Expenses", L));
	ck_assert(posting_account_valid("Costs:Refunds", L));
	ck_assert(!posting_account_valid("Expenses:refund_x", B));
	ck_assert(!posting_account_valid("Expenses:Refund_X", B));
	ck_assert(!posting_account_valid("", L));
	ck_assert(!posting_account_valid(NULL, L));
	ck_assert(!posting_account_valid("Expenses::Refunds", L));
	ck_assert(!posting_account_valid("Expenses:", L));
	ck_assert(!posting_account_valid(":Expenses", L));
	ck_assert(!posting_account_valid("Expenses:Re funds", L));
	ck_assert(!posting_account_valid("Expenses:Refunds  1", L));
	ck_assert(!posting_account_valid("Expenses:Refunds;x", L));
	ck_assert(!posting_account_valid("Expenses:Refunds\n", L));
	ck_assert(!posting_account_valid("Expenses:-x", L));
	ck_assert(!posting_account_valid("Expenses:Réfunds", L));
	memset(longname, 'A', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	memcpy(longname, "Assets:", 7);
	ck_assert(!posting_account_valid(longname, L));
	longname[200] = '\0';
	ck_assert(posting_account_valid(longname, B));
}
END_TEST

/* rec as a later revision of a SUCCEEDED refund that posted
 * (amount, app fee) before. */
static struct rs_export_record
revised(const char *status, int64_t minor, const char *amount,
    const char *app_fee, int64_t posted_minor, const char *posted_app_fee)
{
	struct rs_export_record r = base_record();

	r.status = status;
	r.prev_status = "SUCCEEDED";
	r.amount = amount;
	r.amount_minor = minor;
	r.returned_application_fee = app_fee;
	r.has_posted = 1;
	r.posted_currency = "USD";
	r.posted_amount_exact = 1;
	r.posted_amount_minor = posted_minor;
	r.posted_exponent = 2;
	r.posted_returned_application_fee = posted_app_fee;
	r.posting = posting_classify_record(&r);
	return r;
}

/* A new SUCCEEDED revision posts the difference to what was posted; the
 * same amounts (in minor units, whatever the text) post nothing. */
START_TEST(test_adjust)
{
	struct posting_accounts a = accounts();
	struct rs_export_record r;
	struct posting_txn t;

	ck_assert_str_eq(posting_name(RS_POSTING_ADJUST), "adjust");
	r = revised("SUCCEEDED", 900, "9.00", NULL, 700, NULL);
	ck_assert_int_eq(r.posting, RS_POSTING_ADJUST);
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_int_eq(t.kind, RS_POSTING_ADJUST);
	ck_assert_uint_eq(t.nlines, 2);
	expect_line(&t, 0, "Expenses:Refunds", 200);
	expect_line(&t, 1, "Assets:Wix:Clearing", -200);

	/* A fee reported later: the refund line stays, at 0. */
	r = revised("SUCCEEDED", 900, "9.00", "0.30", 900, NULL);
	ck_assert_int_eq(r.posting, RS_POSTING_ADJUST);
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_uint_eq(t.nlines, 3);
	expect_line(&t, 0, "Expenses:Refunds", 0);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Application", -30);
	expect_line(&t, 2, "Assets:Wix:Clearing", 30);
	expect_balanced(&t);

	/* Amount and fee moving together so clearing does not. */
	r = revised("SUCCEEDED", 1000, "10.00", "1.00", 900, NULL);
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_uint_eq(t.nlines, 2);
	expect_line(&t, 0, "Expenses:Refunds", 100);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Application", -100);

	/* Same amounts, other text: nothing. */
	r = revised("SUCCEEDED", 900, "9.0", "0.3", 900, "0.30");
	ck_assert_int_eq(r.posting, RS_POSTING_NONE);
	/* Without the posted version: nothing either (as before). */
	r = revised("SUCCEEDED", 900, "9.00", NULL, 700, NULL);
	r.has_posted = 0;
	ck_assert_int_eq(posting_classify_record(&r), RS_POSTING_NONE);

	/* Another currency cannot be one transaction: refused. */
	r = revised("SUCCEEDED", 900, "9.00", NULL, 700, NULL);
	r.posted_currency = "EUR";
	ck_assert_int_eq(r.posting = posting_classify_record(&r),
	    RS_POSTING_ADJUST);
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_ERR_INPUT);
}
END_TEST

/* A reversal takes away what was posted, not the record's amounts. */
START_TEST(test_reverse_what_was_posted)
{
	struct posting_accounts a = accounts();
	struct rs_export_record r;
	struct posting_txn t;

	r = revised("REVERSED", 900, "9.00", "0.50", 700, "0.30");
	ck_assert_int_eq(r.posting, RS_POSTING_REVERSE);
	ck_assert_int_eq(posting_build(&r, &a, &t, NULL), RS_OK);
	ck_assert_uint_eq(t.nlines, 3);
	expect_line(&t, 0, "Expenses:Refunds", -700);
	expect_line(&t, 1, "Income:Wix:Fees:Returned:Application", 30);
	expect_line(&t, 2, "Assets:Wix:Clearing", 670);
	expect_balanced(&t);
}
END_TEST

static Suite *
posting_suite(void)
{
	Suite *s = suite_create("posting");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_classify);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_state_sequence);
	tcase_add_test(tc, test_post_usd);
	tcase_add_test(tc, test_reverse_flips_signs);
	tcase_add_test(tc, test_none_posts_nothing);
	tcase_add_test(tc, test_fees);
	tcase_add_test(tc, test_minor_units);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_dates);
	tcase_add_test(tc, test_configured_accounts);
	tcase_add_test(tc, test_account_names);
	tcase_add_test(tc, test_adjust);
	tcase_add_test(tc, test_reverse_what_was_posted);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(posting_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
