/*
 * posting.c: from a change-log record to a balanced transaction.
 *
 * The key decision is that every amount stays an int64_t of minor units
 * from the decimal text Wix sent (money_to_minor) to the text a file
 * exporter writes (money_format): sums are checked for overflow and a
 * value that is not exact in the currency's minor units is refused, never
 * rounded.  Pure functions, safe from any thread.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "domain/money.h"
#include "exporters/posting.h"
#include "util/isotime.h"

/* Longest account name we accept. */
#define POSTING_MAX_ACCOUNT	200

static bool
is_succeeded(const char *status)
{
	return status != NULL && strcmp(status, POSTING_STATUS_SUCCEEDED) == 0;
}

enum rs_posting
posting_classify(const char *status, const char *prev_status)
{
	bool now = is_succeeded(status), before = is_succeeded(prev_status);

	if (status == NULL)
		return RS_POSTING_NONE;
	if (now && !before)
		return RS_POSTING_POST;
	if (!now && before)
		return RS_POSTING_REVERSE;
	return RS_POSTING_NONE;
}

const char *
posting_name(enum rs_posting p)
{
	switch (p) {
	case RS_POSTING_POST:
		return "post";
	case RS_POSTING_REVERSE:
		return "reverse";
	case RS_POSTING_NONE:
		break;
	}
	return "none";
}

void
posting_accounts_default(struct posting_accounts *a)
{
	a->refund = POSTING_DEFAULT_REFUND;
	a->clearing = POSTING_DEFAULT_CLEARING;
	a->application_fee = POSTING_DEFAULT_APP_FEE;
	a->processing_fee = POSTING_DEFAULT_PROC_FEE;
}

static bool
is_alnum(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9');
}

static bool
is_upper_or_digit(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool
posting_account_valid(const char *name, enum posting_syntax syn)
{
	static const char *const roots[] = { "Assets", "Liabilities",
	    "Equity", "Income", "Expenses" };
	const char *p, *comp;
	size_t i, len;
	bool bean = syn == POSTING_SYNTAX_BEANCOUNT, ok;

	if (name == NULL || *name == '\0' ||
	    strnlen(name, POSTING_MAX_ACCOUNT + 1) > POSTING_MAX_ACCOUNT)
		return false;
	if (bean) {
		len = strcspn(name, ":");
		ok = false;
		for (i = 0; i < sizeof(roots) / sizeof(roots[0]); i++)
			if (strlen(roots[i]) == len &&
			    strncmp(name, roots[i], len) == 0)
				ok = true;
		if (!ok)
			return false;
	}
	for (comp = p = name;; p++) {
		if (*p == ':' || *p == '\0') {
			if (p == comp)
				return false;	/* empty component */
			if (!is_alnum(*comp) ||
			    (bean && !is_upper_or_digit(*comp)))
				return false;
			if (*p == '\0')
				return true;
			comp = p + 1;
		} else if (!is_alnum(*p) && *p != '-' && (bean || *p != '_'))
			return false;
	}
}

/* The civil date of a day count since 1970-01-01 (H. Hinnant). */
static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era, yy;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	yy = (int64_t)yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = yy + (*m <= 2);
}

/* The UTC date of an ISO-8601 time as YYYY-MM-DD into out[11]. */
static bool
utc_date(const char *iso, char out[11])
{
	struct isotime t;
	int64_t days, y;
	unsigned m, d;

	if (iso == NULL || isotime_parse(iso, &t) != RS_OK)
		return false;
	days = t.sec >= 0 ? t.sec / 86400 : -((-t.sec + 86399) / 86400);
	civil_from_days(days, &y, &m, &d);
	if (y < 1 || y > 9999)
		return false;
	out[0] = (char)('0' + y / 1000);
	out[1] = (char)('0' + y / 100 % 10);
	out[2] = (char)('0' + y / 10 % 10);
	out[3] = (char)('0' + y % 10);
	out[4] = '-';
	out[5] = (char)('0' + m / 10);
	out[6] = (char)('0' + m % 10);
	out[7] = '-';
	out[8] = (char)('0' + d / 10);
	out[9] = (char)('0' + d % 10);
	out[10] = '\0';
	return true;
}

/* A fee in minor units: absent is 0. */
static enum rs_status
fee_minor(const char *text, const char *currency, int64_t *minor)
{
	if (text == NULL) {
		*minor = 0;
		return RS_OK;
	}
	return money_to_minor(text, currency, minor) == RS_OK ? RS_OK :
	    RS_ERR_RANGE;
}

enum rs_status
posting_build(const struct rs_export_record *rec,
    const struct posting_accounts *acc, struct posting_txn *out,
    const char **why)
{
	struct posting_txn t;
	int64_t amount, app = 0, proc = 0, clearing;
	const char *reason = NULL;
	enum rs_status st = RS_OK;
	size_t i;

	memset(&t, 0, sizeof(t));
	t.kind = rec->posting;
	if (t.kind != RS_POSTING_POST && t.kind != RS_POSTING_REVERSE) {
		t.kind = RS_POSTING_NONE;
		goto out;
	}
	if (rec->currency == NULL ||
	    !money_currency_wellformed(rec->currency)) {
		st = RS_ERR_INPUT;
		reason = "bad currency code";
		goto out;
	}
	t.currency = rec->currency;
	if (!rec->amount_exact || rec->amount_minor < 0 ||
	    rec->exponent < 0 || rec->exponent > MONEY_MAX_DECIMALS) {
		st = RS_ERR_RANGE;
		reason = "amount is not exact in the currency's minor units";
		goto out;
	}
	t.exponent = rec->exponent;
	amount = rec->amount_minor;
	/* Fees go through the currency's exponent: it must be the same. */
	if ((rec->returned_application_fee != NULL ||
	    rec->returned_processing_fee != NULL) &&
	    money_exponent(rec->currency) != rec->exponent) {
		st = RS_ERR_RANGE;
		reason = "record exponent differs from the currency's";
		goto out;
	}
	if (fee_minor(rec->returned_application_fee, rec->currency,
	    &app) != RS_OK) {
		st = RS_ERR_RANGE;
		reason = "returnedApplicationFee is not exact in the "
		    "currency's minor units";
		goto out;
	}
	if (fee_minor(rec->returned_processing_fee, rec->currency,
	    &proc) != RS_OK) {
		st = RS_ERR_RANGE;
		reason = "returnedProcessingFee is not exact in the "
		    "currency's minor units";
		goto out;
	}
	if (__builtin_sub_overflow(amount, app, &clearing) ||
	    __builtin_sub_overflow(clearing, proc, &clearing) ||
	    clearing == INT64_MIN) {
		st = RS_ERR_RANGE;
		reason = "fees and amount overflow";
		goto out;
	}
	if (!utc_date(rec->updated_date, t.date) &&
	    !utc_date(rec->created_date, t.date) &&
	    !utc_date(rec->changed_at, t.date)) {
		st = RS_ERR_INPUT;
		reason = "no date to post on";
		goto out;
	}

	t.lines[t.nlines].account = acc->refund;
	t.lines[t.nlines++].minor = amount;
	if (app != 0) {
		t.lines[t.nlines].account = acc->application_fee;
		t.lines[t.nlines++].minor = -app;
	}
	if (proc != 0) {
		t.lines[t.nlines].account = acc->processing_fee;
		t.lines[t.nlines++].minor = -proc;
	}
	t.lines[t.nlines].account = acc->clearing;
	/* clearing > INT64_MIN, so its negation fits. */
	t.lines[t.nlines++].minor = -clearing;
	if (t.kind == RS_POSTING_REVERSE)
		for (i = 0; i < t.nlines; i++)
			t.lines[i].minor = -t.lines[i].minor;
out:
	if (st != RS_OK) {
		if (why != NULL)
			*why = reason;
		return st;
	}
	*out = t;
	return RS_OK;
}
