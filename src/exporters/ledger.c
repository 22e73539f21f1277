/*
 * ledger.c: the double-entry journal exporters, `ledger` (an hledger and
 * ledger-cli journal) and, through exporter_journal_open(), `beancount`.
 * The two differ only in syntax, so one format serves both.
 *
 * Keys of [exporter NAME] with type = ledger or beancount:
 *	path = FILE		the journal to append to (required)
 *	refund_account = NAME	default Expenses:Refunds
 *	clearing_account = NAME	default Assets:Wix:Clearing
 *	application_fee_account = NAME
 *				default Income:Wix:Fees:Returned:Application
 *	processing_fee_account = NAME
 *				default Income:Wix:Fees:Returned:Processing
 *
 * What is posted, and why, is in posting.h.  A record that posts nothing
 * writes nothing (so after a restart recover() reports the last record
 * that posted, and the engine sends the ones after it again: they post
 * nothing again).  A record that posts writes one transaction, e.g.
 *
 *	2024-05-01 * Wix refund r-1
 *	    ; rs-seq: 17
 *	    ; rs-key: books:r-1:2
 *	    ; rs-posting: post
 *	    ; rs-refund-id: r-1
 *	    ; rs-charge-id: ch-1
 *	    ; rs-revision: 2
 *	    ; rs-instance-id: inst-1
 *	    ; rs-status: SUCCEEDED
 *	    Expenses:Refunds                 12.95 USD
 *	    Assets:Wix:Clearing             -12.95 USD
 *	; rs-seq: 17
 *
 * (beancount: `2024-05-01 * "Wix" "Refund r-1"` and metadata lines such
 * as `  rs-key: "books:r-1:2"`), so every line leads back to the Wix
 * refund and the change-log entry.
 * Text from Wix is percent-encoded outside [A-Za-z0-9._~:@/+=-]
 * (filejournal_put_safe), so it can never break the syntax.  The last
 * line, `; rs-seq: N` at column 0, is the record's commit line
 * (filejournal.h); tools read it as a comment.
 *
 * Out of order: a record older than the file's last seq that the file
 * does not hold (its transaction was removed by hand, and reconcile or
 * `export retry-dead` queued it again) is appended at the end like any
 * other, followed by the mark `; rs-seq: HI` (HI: the file's highest
 * seq), so the file's last commit line still names HI.  Neither tool
 * minds a transaction dated before the one above it.  Which records the
 * file holds is read from the transactions' rs-seq metadata lines, not
 * from the commit lines, which the header and marks repeat.
 *
 * Declarations: a new file starts with a comment and `account`
 * directives (beancount: `1970-01-01 open`) for the four accounts; an
 * account configured later is declared when the exporter opens, and a
 * currency with a `commodity` directive before its first transaction.
 * So `hledger check --strict` and `bean-check` accept the file.  Opening
 * reads the whole file once to learn what is declared.
 *
 * Threads: an instance belongs to one export worker at a time.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/money.h"
#include "exporters/builtin.h"
#include "exporters/filejournal.h"
#include "exporters/posting.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

/* Accounts are padded to this width before their amount. */
#define JOURNAL_ACCOUNT_WIDTH	40
/* Amounts are right-aligned to this width. */
#define JOURNAL_AMOUNT_WIDTH	14
/* The date of beancount's open and commodity directives. */
#define JOURNAL_BEAN_EPOCH	"1970-01-01"

#define COMMIT_PREFIX	"; rs-seq: "

const char *const exporter_ledger_keys[] = { "path", "refund_account",
    "clearing_account", "application_fee_account", "processing_fee_account",
    NULL };

/* The account keys, in the order of struct journal's names[]. */
static const char *const account_keys[] = { "refund_account",
    "clearing_account", "application_fee_account", "processing_fee_account" };
static const char *const account_defaults[] = { POSTING_DEFAULT_REFUND,
    POSTING_DEFAULT_CLEARING, POSTING_DEFAULT_APP_FEE,
    POSTING_DEFAULT_PROC_FEE };
#define NACCOUNTS	4

struct journal {
	enum posting_syntax	 syn;
	char			*name;		/* the exporter's name */
	char			*names[NACCOUNTS]; /* account names, owned */
	struct posting_accounts	 acc;		/* points into names[] */
	struct filejournal_names accounts;	/* declared in the file */
	struct filejournal_names commodities;	/* declared in the file */
};

static bool
journal_commit_line(void *ctx, const char *line, size_t len, int64_t *seq)
{
	char num[24];
	size_t n = sizeof(COMMIT_PREFIX) - 1;

	if (len <= n || len - n >= sizeof(num) ||
	    memcmp(line, COMMIT_PREFIX, n) != 0)
		return false;
	memcpy(num, line + n, len - n);
	num[len - n] = '\0';
	return strnum_i64(num, 0, INT64_MAX, seq) == NULL;
}

/*
 * A transaction's own rs-seq: "    ; rs-seq: N" (ledger) or
 * "  rs-seq: N" (beancount).  Text from Wix cannot forge it: it is
 * percent-encoded and never starts a line.
 */
static bool
journal_record_seq(void *ctx, const char *line, size_t len, int64_t *seq)
{
	static const char ledger[] = "    ; rs-seq: ";
	static const char bean[] = "  rs-seq: ";
	char num[24];
	size_t n;

	if (len > sizeof(ledger) - 1 &&
	    memcmp(line, ledger, sizeof(ledger) - 1) == 0)
		n = sizeof(ledger) - 1;
	else if (len > sizeof(bean) - 1 &&
	    memcmp(line, bean, sizeof(bean) - 1) == 0)
		n = sizeof(bean) - 1;
	else
		return false;
	if (len - n >= sizeof(num))
		return false;
	memcpy(num, line + n, len - n);
	num[len - n] = '\0';
	return strnum_i64(num, 0, INT64_MAX, seq) == NULL;
}

static void
journal_free(void *state)
{
	struct journal *j = state;
	size_t i;

	if (j == NULL)
		return;
	for (i = 0; i < NACCOUNTS; i++)
		free(j->names[i]);
	filejournal_names_cleanup(&j->accounts);
	filejournal_names_cleanup(&j->commodities);
	free(j->name);
	free(j);
}

/* Every account key is checked, so each bad one is reported. */
static int
journal_init(struct journal *j, const struct rs_export_kv *kv, size_t nkv,
    exporter_report_fn *report, void *arg)
{
	const char *v;
	char why[512];
	size_t i;
	int r = RS_EXPORT_OK;

	for (i = 0; i < NACCOUNTS; i++) {
		if ((v = filejournal_kv(kv, nkv, account_keys[i])) == NULL)
			v = account_defaults[i];
		if (!posting_account_valid(v, j->syn)) {
			snprintf(why, sizeof(why), "\"%s\" is not a valid %s "
			    "account name", v, j->syn ==
			    POSTING_SYNTAX_BEANCOUNT ? "beancount" : "ledger");
			report(arg, account_keys[i], why);
			r = RS_EXPORT_PERMANENT;
			continue;
		}
		j->names[i] = xstrdup(v);
	}
	if (r != RS_EXPORT_OK)
		return r;
	j->acc.refund = j->names[0];
	j->acc.clearing = j->names[1];
	j->acc.application_fee = j->names[2];
	j->acc.processing_fee = j->names[3];
	return RS_EXPORT_OK;
}

static int
journal_init_syn(enum posting_syntax syn, void **state, const char *name,
    const struct rs_export_kv *kv, size_t nkv, exporter_report_fn *report,
    void *arg)
{
	struct journal *j = xcalloc(1, sizeof(*j));
	int r;

	j->syn = syn;
	j->name = xstrdup(name);
	filejournal_names_init(&j->accounts);
	filejournal_names_init(&j->commodities);
	if ((r = journal_init(j, kv, nkv, report, arg)) != RS_EXPORT_OK) {
		journal_free(j);
		return r;
	}
	*state = j;
	return RS_EXPORT_OK;
}

static int
ledger_init(void **state, const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	return journal_init_syn(POSTING_SYNTAX_LEDGER, state, name, kv, nkv,
	    report, arg);
}

static int
beancount_init(void **state, const char *name,
    const struct rs_export_kv *kv, size_t nkv, exporter_report_fn *report,
    void *arg)
{
	return journal_init_syn(POSTING_SYNTAX_BEANCOUNT, state, name, kv, nkv,
	    report, arg);
}

/* The first word of s (len bytes): up to a space, tab or ';'. */
static size_t
word_len(const char *s, size_t len)
{
	size_t n;

	for (n = 0; n < len && s[n] != ' ' && s[n] != '\t' && s[n] != ';';
	    n++)
		;
	return n;
}

/* If line is "<directive> NAME...", add NAME to set. */
static bool
scan_directive(const char *line, size_t len, const char *directive,
    struct filejournal_names *set)
{
	size_t d = strlen(directive), n;

	if (len <= d || memcmp(line, directive, d) != 0)
		return false;
	line += d;
	len -= d;
	while (len > 0 && *line == ' ') {
		line++;
		len--;
	}
	if ((n = word_len(line, len)) > 0)
		filejournal_names_add(set, line, n);
	return true;
}

static void
journal_scan(void *state, const char *line, size_t len)
{
	struct journal *j = state;

	if (j->syn == POSTING_SYNTAX_LEDGER) {
		if (!scan_directive(line, len, "account ", &j->accounts))
			scan_directive(line, len, "commodity ",
			    &j->commodities);
		return;
	}
	/* "YYYY-MM-DD open NAME", "YYYY-MM-DD commodity NAME". */
	if (len < 11 || line[4] != '-' || line[7] != '-' || line[10] != ' ')
		return;
	if (!scan_directive(line + 11, len - 11, "open ", &j->accounts))
		scan_directive(line + 11, len - 11, "commodity ",
		    &j->commodities);
}

static void
journal_settle(void *state, bool committed)
{
	struct journal *j = state;

	filejournal_names_settle(&j->accounts, committed);
	filejournal_names_settle(&j->commodities, committed);
}

/* Append the directive declaring an account or a commodity. */
static enum rs_status
put_declaration(const struct journal *j, struct buf *out, bool account,
    const char *name)
{
	enum rs_status st;

	if (j->syn == POSTING_SYNTAX_BEANCOUNT) {
		st = buf_appends(out, account ? JOURNAL_BEAN_EPOCH " open " :
		    JOURNAL_BEAN_EPOCH " commodity ");
	} else
		st = buf_appends(out, account ? "account " : "commodity ");
	if (st == RS_OK)
		st = buf_appends(out, name);
	if (st == RS_OK)
		st = buf_append(out, "\n", 1);
	return st;
}

static enum rs_status
put_commit(struct buf *out, int64_t seq)
{
	enum rs_status st;

	if ((st = buf_appends(out, COMMIT_PREFIX)) == RS_OK &&
	    (st = filejournal_put_i64(out, seq)) == RS_OK)
		st = buf_append(out, "\n", 1);
	return st;
}

/* The mark after an out-of-order transaction: a bare commit line. */
static enum rs_status
journal_mark(void *state, int64_t seq, struct buf *out)
{
	(void)state;
	return put_commit(out, seq);
}

static enum rs_status
journal_start(void *state, bool empty, int64_t last_seq, struct buf *out)
{
	struct journal *j = state;
	size_t i;
	bool any = false;
	enum rs_status st = RS_OK;

	if (empty) {
		st = buf_printf(out, "; refundsync %s journal of exporter ",
		    j->syn == POSTING_SYNTAX_BEANCOUNT ? "beancount" :
		    "ledger");
		if (st == RS_OK)
			st = filejournal_put_safe(out, j->name);
		if (st == RS_OK)
			st = buf_appends(out, ".\n"
			    "; Each transaction is one change-log record and "
			    "ends with its \"" COMMIT_PREFIX "N\" line.\n"
			    "; refundsync appends to this file: do not edit "
			    "it while refundsync runs.\n");
		any = true;
	}
	/* Declare each configured account once (the file may have it). */
	for (i = 0; i < NACCOUNTS && st == RS_OK; i++) {
		if (filejournal_names_has(&j->accounts, j->names[i],
		    strlen(j->names[i])))
			continue;
		filejournal_names_add(&j->accounts, j->names[i],
		    strlen(j->names[i]));
		st = put_declaration(j, out, true, j->names[i]);
		any = true;
	}
	if (any && st == RS_OK)
		st = put_commit(out, last_seq);
	return st;
}

static enum rs_status
put_spaces(struct buf *out, size_t n)
{
	static const char sp[] = "                                        ";
	size_t k;
	enum rs_status st = RS_OK;

	while (n > 0 && st == RS_OK) {
		k = n < sizeof(sp) - 1 ? n : sizeof(sp) - 1;
		st = buf_append(out, sp, k);
		n -= k;
	}
	return st;
}

/* One metadata line: "    ; key: value" or beancount "  key: value". */
static enum rs_status
put_meta(const struct journal *j, struct buf *out, const char *key,
    const char *value, bool quoted)
{
	enum rs_status st;
	bool bean = j->syn == POSTING_SYNTAX_BEANCOUNT;

	st = buf_appends(out, bean ? "  " : "    ; ");
	if (st == RS_OK)
		st = buf_appends(out, key);
	if (st == RS_OK)
		st = buf_append(out, ": ", 2);
	if (st == RS_OK && bean && quoted)
		st = buf_append(out, "\"", 1);
	if (st == RS_OK)
		st = filejournal_put_safe(out, value);
	if (st == RS_OK && bean && quoted)
		st = buf_append(out, "\"", 1);
	if (st == RS_OK)
		st = buf_append(out, "\n", 1);
	return st;
}

static enum rs_status
put_meta_i64(const struct journal *j, struct buf *out, const char *key,
    int64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%lld", (long long)v);
	return put_meta(j, out, key, num, false);
}

static enum rs_status
put_line(const struct journal *j, struct buf *out,
    const struct posting_line *l, const struct posting_txn *t)
{
	char amt[48];
	size_t alen, acclen = strlen(l->account);
	enum rs_status st;

	if ((st = money_format(l->minor, t->exponent, amt, sizeof(amt))) !=
	    RS_OK)
		return st;
	alen = strlen(amt);
	st = buf_appends(out, j->syn == POSTING_SYNTAX_BEANCOUNT ? "  " :
	    "    ");
	if (st == RS_OK)
		st = buf_append(out, l->account, acclen);
	if (st == RS_OK)
		st = put_spaces(out, 2 + (acclen < JOURNAL_ACCOUNT_WIDTH ?
		    JOURNAL_ACCOUNT_WIDTH - acclen : 0) +
		    (alen < JOURNAL_AMOUNT_WIDTH ? JOURNAL_AMOUNT_WIDTH - alen :
		    0));
	if (st == RS_OK)
		st = buf_append(out, amt, alen);
	if (st == RS_OK)
		st = buf_append(out, " ", 1);
	if (st == RS_OK)
		st = buf_appends(out, t->currency);
	if (st == RS_OK)
		st = buf_append(out, "\n", 1);
	return st;
}

static enum rs_status
put_txn(struct journal *j, const struct rs_export_record *r,
    const struct posting_txn *t, struct buf *out)
{
	bool bean = j->syn == POSTING_SYNTAX_BEANCOUNT;
	bool rev = t->kind == RS_POSTING_REVERSE;
	size_t i;
	enum rs_status st = RS_OK;

#define PUT(x)	do { if ((st = (x)) != RS_OK) return st; } while (0)
	PUT(buf_append(out, "\n", 1));
	if (!filejournal_names_has(&j->commodities, t->currency,
	    strlen(t->currency))) {
		filejournal_names_add(&j->commodities, t->currency,
		    strlen(t->currency));
		PUT(put_declaration(j, out, false, t->currency));
	}
	PUT(buf_append(out, t->date, 10));
	PUT(buf_appends(out, bean ? " * \"Wix\" \"Refund " :
	    " * Wix refund "));
	PUT(filejournal_put_safe(out, r->refund_id));
	if (rev)
		PUT(buf_appends(out, " reversed"));
	else if (t->kind == RS_POSTING_ADJUST)
		PUT(buf_appends(out, " adjusted"));
	if (bean)
		PUT(buf_append(out, "\"", 1));
	PUT(buf_append(out, "\n", 1));
	PUT(put_meta_i64(j, out, "rs-seq", r->seq));
	PUT(put_meta(j, out, "rs-key", r->idempotency_key, true));
	PUT(put_meta(j, out, "rs-posting", posting_name(t->kind), true));
	PUT(put_meta(j, out, "rs-refund-id", r->refund_id, true));
	PUT(put_meta(j, out, "rs-charge-id", r->charge_id, true));
	if (r->has_revision)
		PUT(put_meta_i64(j, out, "rs-revision", r->revision));
	if (r->instance_id != NULL)
		PUT(put_meta(j, out, "rs-instance-id", r->instance_id, true));
	PUT(put_meta(j, out, "rs-status", r->status, true));
	for (i = 0; i < t->nlines; i++)
		PUT(put_line(j, out, &t->lines[i], t));
	PUT(put_commit(out, r->seq));
#undef PUT
	return st;
}

static int
journal_format(void *state, const struct rs_export_record *rec,
    struct buf *out, char *err, size_t errlen)
{
	struct journal *j = state;
	struct posting_txn t;
	const char *why = NULL;
	size_t ncomm = j->commodities.n;

	if (posting_build(rec, &j->acc, &t, &why) != RS_OK) {
		snprintf(err, errlen, "refund %s seq %lld: cannot post: %s",
		    rec->refund_id != NULL ? rec->refund_id : "-",
		    (long long)rec->seq, why != NULL ? why : "?");
		return RS_EXPORT_PERMANENT;
	}
	if (t.kind == RS_POSTING_NONE)
		return RS_EXPORT_OK;
	if (put_txn(j, rec, &t, out) != RS_OK) {
		/* Forget a commodity declared in the discarded text. */
		while (j->commodities.n > ncomm)
			free(j->commodities.v[--j->commodities.n]);
		snprintf(err, errlen, "refund %s seq %lld: transaction too "
		    "large", rec->refund_id != NULL ? rec->refund_id : "-",
		    (long long)rec->seq);
		return RS_EXPORT_PERMANENT;
	}
	return RS_EXPORT_OK;
}

static const struct filejournal_format ledger_format_def = {
	.type = "ledger",
	.keys = exporter_ledger_keys,
	.commit_line = journal_commit_line,
	.mark = journal_mark,
	.record_seq = journal_record_seq,
	.init = ledger_init,
	.scan = journal_scan,
	.start = journal_start,
	.format = journal_format,
	.settle = journal_settle,
	.free = journal_free,
};

static const struct filejournal_format beancount_format_def = {
	.type = "beancount",
	.keys = exporter_beancount_keys,
	.commit_line = journal_commit_line,
	.mark = journal_mark,
	.record_seq = journal_record_seq,
	.init = beancount_init,
	.scan = journal_scan,
	.start = journal_start,
	.format = journal_format,
	.settle = journal_settle,
	.free = journal_free,
};

int
exporter_journal_open(bool beancount, void **ctx, const char *name,
    const struct rs_export_kv *kv, size_t nkv, char *err, size_t errlen)
{
	return filejournal_exporter_open(beancount ? &beancount_format_def :
	    &ledger_format_def, ctx, name, kv, nkv, err, errlen);
}

bool
exporter_journal_check(bool beancount, const char *name,
    const struct rs_export_kv *kv, size_t nkv, exporter_report_fn *report,
    void *arg)
{
	return filejournal_exporter_check(beancount ? &beancount_format_def :
	    &ledger_format_def, name, kv, nkv, report, arg);
}

bool
exporter_ledger_check(const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	return exporter_journal_check(false, name, kv, nkv, report, arg);
}

static int
ledger_open(void **ctx, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	return exporter_journal_open(false, ctx, name, kv, nkv, err, errlen);
}

const struct rs_exporter_ops exporter_ledger_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "ledger",
	.open = ledger_open,
	.deliver = filejournal_exporter_deliver,
	.recover = filejournal_exporter_recover,
	.close = filejournal_exporter_close,
};
