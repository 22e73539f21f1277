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
	case RS_POSTING_ADJUST:
		return "adjust";
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
		/* A root alone is not an account name to beancount. */
		if (!ok || name[len] != ':')
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

/*
 * The UTC date of an ISO-8601 time as YYYY-MM-DD into out[11].  A time
 * before 1970 is no refund's date, and a beancount journal opens its
 * accounts on 1970-01-01 (bean-check refuses a posting before that), so
 * it is refused and the caller falls back to the next date.
 */
static bool
utc_date(const char *iso, char out[11])
{
	struct isotime t;
	int64_t y;
	unsigned m, d;

	if (iso == NULL || isotime_parse(iso, &t) != RS_OK || t.sec < 0)
		return false;
	civil_from_days(t.sec / 86400, &y, &m, &d);
	if (y > 9999)
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

/* The amounts of one version of a refund, in minor units. */
struct posting_amounts {
	const char	*currency;
	int		 exponent;
	int64_t		 amount;	/* A */
	int64_t		 app;		/* Fa */
	int64_t		 proc;		/* Fp */
	int64_t		 clearing;	/* A - Fa - Fp, > INT64_MIN */
};

/*
 * The amounts of a version from its fields.  RS_OK, or RS_ERR_INPUT /
 * RS_ERR_RANGE with a static reason in *why (see posting_build()).
 */
static enum rs_status
amounts_get(const char *currency, int exact, int64_t minor, int exponent,
    const char *app_fee, const char *proc_fee, struct posting_amounts *a,
    const char **why)
{
	if (currency == NULL || !money_currency_wellformed(currency)) {
		*why = "bad currency code";
		return RS_ERR_INPUT;
	}
	a->currency = currency;
	if (!exact || minor < 0 || exponent < 0 ||
	    exponent > MONEY_MAX_DECIMALS) {
		*why = "amount is not exact in the currency's minor units";
		return RS_ERR_RANGE;
	}
	a->exponent = exponent;
	a->amount = minor;
	/* Fees go through the currency's exponent: it must be the same. */
	if ((app_fee != NULL || proc_fee != NULL) &&
	    money_exponent(currency) != exponent) {
		*why = "record exponent differs from the currency's";
		return RS_ERR_RANGE;
	}
	if (fee_minor(app_fee, currency, &a->app) != RS_OK) {
		*why = "returnedApplicationFee is not exact in the "
		    "currency's minor units";
		return RS_ERR_RANGE;
	}
	if (fee_minor(proc_fee, currency, &a->proc) != RS_OK) {
		*why = "returnedProcessingFee is not exact in the "
		    "currency's minor units";
		return RS_ERR_RANGE;
	}
	if (__builtin_sub_overflow(a->amount, a->app, &a->clearing) ||
	    __builtin_sub_overflow(a->clearing, a->proc, &a->clearing) ||
	    a->clearing == INT64_MIN) {
		*why = "fees and amount overflow";
		return RS_ERR_RANGE;
	}
	return RS_OK;
}

/* The record's own version. */
static enum rs_status
amounts_current(const struct rs_export_record *rec,
    struct posting_amounts *a, const char **why)
{
	return amounts_get(rec->currency, rec->amount_exact, rec->amount_minor,
	    rec->exponent, rec->returned_application_fee,
	    rec->returned_processing_fee, a, why);
}

/* What the version before it posted (rec->has_posted). */
static enum rs_status
amounts_posted(const struct rs_export_record *rec,
    struct posting_amounts *a, const char **why)
{
	return amounts_get(rec->posted_currency, rec->posted_amount_exact,
	    rec->posted_amount_minor, rec->posted_exponent,
	    rec->posted_returned_application_fee,
	    rec->posted_returned_processing_fee, a, why);
}

/* Same text, or both NULL. */
static bool
same_text(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Does the posted version differ from rec's own in what it posts? */
static bool
posted_differs(const struct rs_export_record *rec)
{
	struct posting_amounts now, then;
	const char *why;

	if (amounts_current(rec, &now, &why) == RS_OK &&
	    amounts_posted(rec, &then, &why) == RS_OK)
		return strcmp(now.currency, then.currency) != 0 ||
		    now.exponent != then.exponent ||
		    now.amount != then.amount || now.app != then.app ||
		    now.proc != then.proc;
	/* Either cannot be posted: compare what was sent.  A difference
	 * then makes an adjustment that posting_build() refuses, loudly. */
	return !same_text(rec->currency, rec->posted_currency) ||
	    (rec->amount_exact != 0) != (rec->posted_amount_exact != 0) ||
	    rec->amount_minor != rec->posted_amount_minor ||
	    rec->exponent != rec->posted_exponent ||
	    !same_text(rec->returned_application_fee,
	    rec->posted_returned_application_fee) ||
	    !same_text(rec->returned_processing_fee,
	    rec->posted_returned_processing_fee);
}

enum rs_posting
posting_classify_record(const struct rs_export_record *rec)
{
	enum rs_posting p = posting_classify(rec->status, rec->prev_status);

	if (p == RS_POSTING_NONE && rec->has_posted &&
	    is_succeeded(rec->status) && is_succeeded(rec->prev_status) &&
	    posted_differs(rec))
		return RS_POSTING_ADJUST;
	return p;
}

/* Add sign * (the lines of a) to the four line sums, in line order. */
static bool
lines_add(int64_t sum[4], const struct posting_amounts *a, int sign)
{
	const int64_t v[4] = { a->amount, -a->app, -a->proc, -a->clearing };
	size_t i;

	for (i = 0; i < 4; i++)
		if (__builtin_add_overflow(sum[i], sign * v[i], &sum[i]) ||
		    sum[i] == INT64_MIN)
			return false;
	return true;
}

enum rs_status
posting_build(const struct rs_export_record *rec,
    const struct posting_accounts *acc, struct posting_txn *out,
    const char **why)
{
	struct posting_txn t;
	struct posting_amounts now, then;
	/* refund, application fee, processing fee, clearing */
	int64_t sum[4] = { 0, 0, 0, 0 };
	const char *account[4];
	const char *reason = NULL;
	enum rs_status st = RS_OK;
	size_t i;

	memset(&t, 0, sizeof(t));
	t.kind = rec->posting;
	if (t.kind != RS_POSTING_POST && t.kind != RS_POSTING_REVERSE &&
	    t.kind != RS_POSTING_ADJUST) {
		t.kind = RS_POSTING_NONE;
		goto out;
	}
	/* The record's own version must be postable, also when it is not
	 * what the transaction holds (a reversal). */
	if ((st = amounts_current(rec, &now, &reason)) != RS_OK)
		goto out;
	if (t.kind == RS_POSTING_ADJUST && !rec->has_posted) {
		st = RS_ERR_INPUT;
		reason = "adjustment without the posted version";
		goto out;
	}
	if (rec->has_posted && t.kind != RS_POSTING_POST &&
	    (st = amounts_posted(rec, &then, &reason)) != RS_OK)
		goto out;
	if (t.kind == RS_POSTING_ADJUST &&
	    (strcmp(now.currency, then.currency) != 0 ||
	    now.exponent != then.exponent)) {
		st = RS_ERR_INPUT;
		reason = "the currency changed since the refund was posted";
		goto out;
	}
	if (!utc_date(rec->updated_date, t.date) &&
	    !utc_date(rec->created_date, t.date) &&
	    !utc_date(rec->changed_at, t.date)) {
		st = RS_ERR_INPUT;
		reason = "no date to post on";
		goto out;
	}

	switch (t.kind) {
	case RS_POSTING_POST:
		(void)lines_add(sum, &now, 1);	/* cannot overflow */
		break;
	case RS_POSTING_REVERSE:
		/* What was posted; a log without it: the record's own. */
		if (!rec->has_posted)
			then = now;
		(void)lines_add(sum, &then, -1);
		now = then;
		break;
	default:	/* RS_POSTING_ADJUST */
		if (!lines_add(sum, &now, 1) || !lines_add(sum, &then, -1)) {
			st = RS_ERR_RANGE;
			reason = "the difference to the posted amounts "
			    "overflows";
			goto out;
		}
		break;
	}
	t.currency = now.currency;
	t.exponent = now.exponent;
	account[0] = acc->refund;
	account[1] = acc->application_fee;
	account[2] = acc->processing_fee;
	account[3] = acc->clearing;
	for (i = 0; i < 4; i++) {
		/* The refund line is always there (readback finds the
		 * record's amount on it), and so is the clearing line of a
		 * refund or its reversal; the others only when not 0. */
		if (sum[i] == 0 && i != 0 &&
		    (i != 3 || t.kind == RS_POSTING_ADJUST))
			continue;
		t.lines[t.nlines].account = account[i];
		t.lines[t.nlines++].minor = sum[i];
	}
out:
	if (st != RS_OK) {
		if (why != NULL)
			*why = reason;
		return st;
	}
	*out = t;
	return RS_OK;
}
