/*
 * readback.h: read back what a file exporter (jsonl, csv, ledger,
 * beancount) has actually written, for reconcile (SPEC §5: "what each
 * exporter has posted ... what the file actually contains").
 *
 * A file is read from its start up to its last complete line (a line
 * still being written by a running daemon is not seen), without taking
 * the exporter's lock: the exporter only ever appends, so the part read
 * is stable.  Each record the file holds is handed to a callback as one
 * struct readback_entry, in file order.  Records are found by what the
 * formats write and nothing else:
 *
 *  - jsonl: one JSON object per line with "seq", "idempotency_key",
 *    "refund_id", "revision", "status", "posting", "currency", "amount",
 *    "amount_minor", "exponent", "created_date", "updated_date" (see
 *    jsonl.c);
 *  - csv: the header row names the columns; each later row is a record
 *    (RFC 4180 quoting, as filejournal_put_csv() writes it).  The
 *    exporter writes a row per line; a row whose quoted field holds a
 *    line break (a hand edit) is read as RFC 4180 says, over as many
 *    lines as it takes, and is damaged.  A line that is a whole row of
 *    its own (closed quotes, the header's number of fields) always
 *    starts a new record, so a quote left open ends its row there, as
 *    damaged, instead of swallowing the rows after it;
 *  - ledger: a transaction is a date line, its "    ; rs-...: value"
 *    metadata lines (rs-seq, rs-key, rs-posting, rs-refund-id,
 *    rs-revision, rs-status, ...) and its posting lines; the amount of
 *    the record is the signed amount on the line of the refund account
 *    (the exporter's refund_account key, default Expenses:Refunds), as
 *    "12.95 USD";
 *  - beancount: the same, with "  rs-...: value" metadata (quoted
 *    strings) and two-space-indented posting lines.
 *
 * A jsonl line that is not a JSON object, or whose members have the
 * wrong types, and a csv row with unbalanced quotes or the wrong number
 * of fields, are handed out with damaged set, and what could be read of
 * them (the seq of a jsonl line that starts like the exporter's).
 * A ledger or beancount record whose posting lines do not balance, or
 * that lacks its rs-seq, rs-refund-id or rs-posting, or whose refund
 * account line is missing, is still handed out, with damaged set and a
 * reason: someone edited the file, and reconcile reports it.  A
 * transaction still open at the end of the file (nothing after it, not
 * even its "; rs-seq: N" line) is a write in progress and is not handed
 * out, as the journal's own recovery would cut it.  Lines that
 * belong to no record (comments, account and commodity declarations,
 * the header, blank lines, the "; rs-seq: N" commit lines) are skipped.
 *
 * Memory is bounded by one record: the file is streamed.
 */
#ifndef RS_READBACK_H
#define RS_READBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "refundsync/exporter.h"
#include "util/status.h"

/* One record found in a file.  Every pointer is borrowed for the
 * callback only; absent text fields are NULL. */
struct readback_entry {
	int64_t		 line;		/* 1-based line where it starts */
	int64_t		 seq;		/* its change-log seq; 0 if none */
	const char	*key;		/* the idempotency key, or NULL */
	const char	*refund_id;	/* NULL only when damaged */
	bool		 has_revision;
	int64_t		 revision;
	const char	*status;	/* the version's status, or NULL */
	enum rs_posting	 posting;	/* NONE for a record that posts
					   nothing (csv/jsonl PENDING ...) */
	const char	*currency;	/* "USD", or NULL if unknown */
	const char	*amount;	/* jsonl/csv: the amount as decimal
					   text, as written; NULL if absent
					   (and always for ledger and
					   beancount) */
	bool		 has_amount;	/* amount_minor/exponent valid */
	int64_t		 amount_minor;	/* jsonl/csv: the refund's amount;
					   ledger/beancount: the signed
					   amount on the refund account
					   (negative for a reversal, the
					   change for an adjustment) */
	int		 exponent;	/* digits after the point */
	const char	*date;		/* jsonl/csv: created_date as
					   written; ledger/beancount: the
					   transaction's YYYY-MM-DD */
	bool		 damaged;	/* see above */
	const char	*why;		/* what is wrong, when damaged */
};

/* Called for each record in file order; a non-RS_OK return stops the
 * read and is returned.  arg first. */
typedef enum rs_status (*readback_fn)(void *arg,
		    const struct readback_entry *e);

/* Can readback_file() read files of this exporter type? */
bool		readback_supports(const char *type);

/*
 * Read the file of a file exporter of type ("jsonl", "csv", "ledger",
 * "beancount") configured with kv[0..nkv) (the section's keys: "path"
 * and, for ledger and beancount, "refund_account" if set), calling fn
 * for each record.  A file that does not exist yet holds no records
 * (RS_OK, fn never called).  Returns RS_OK; RS_ERR_INPUT for a type it
 * cannot read or a kv without "path"; RS_ERR_IO if the file cannot be
 * read; or what fn returned.  Unless RS_OK, *why (caller frees) says
 * what and which file, except when fn stopped the read (*why NULL).
 */
enum rs_status	readback_file(const char *type, const struct rs_export_kv *kv,
		    size_t nkv, readback_fn fn, void *arg,
		    char **why /* OUT */);

#endif
