/*
 * filejournal.h: what every file exporter (jsonl, csv, ledger,
 * beancount) shares: an append-only file of records, durable before a
 * record is reported done, that recovers after a crash without
 * duplicating or losing a record.
 *
 * The file format decides what a record looks like; the journal only
 * needs each record to END with a "commit line": one complete line that
 * names the record's change-log seq (a jsonl line, a csv row, the
 * `; rs-seq: N` line after a ledger or beancount transaction).  A
 * format must make sure that no data it writes can produce a newline
 * inside a record's last line or a false commit line.
 *
 * A format must also accept as a commit line only a line it wrote whole
 * (csv: a row of the right shape whose idempotency key matches it): a
 * line cut short by a crash, or a line of someone else's file, that
 * passes for one moves the file's last seq, and the engine would skip
 * records.  A file that claims a seq beyond the change log's newest is
 * refused by the engine (export.h), not here: the journal knows no store.
 *
 * Recovery (on open): the committed part of the file ends with its last
 * complete commit line; anything after it is the remains of a write that
 * a crash cut short and is truncated away (and logged).  The seq of that
 * line (or of the commit line before it, when that one is higher: see
 * below) is the file's last seq: the engine fast-forwards past it
 * (recover op), so `export replay --from SEQ` into a file exporter writes
 * only the records past the file's last seq; to write a file again from
 * scratch, move it away first.  A non-empty file with no commit line in
 * its last FILEJOURNAL_MAX_TAIL bytes is refused, never truncated: it was
 * not written by this exporter, or was changed by hand.
 *
 * Records at or below the last seq (a redelivery, or a dead letter queued
 * again by `export retry-dead` or reconcile, which come alone and out of
 * seq order): deliver() skips the ones the file holds, so a record is
 * never written twice.  To know which it holds, the exporter reads the
 * whole file once, when the first such record comes, and then keeps the
 * set of its seqs up to date (8 bytes per record; normal appends never
 * build it).  A record the file does not hold (removed by hand, say) is
 * appended if the format has a mark (ledger, beancount), followed by a
 * mark line naming the file's highest seq, so the last commit line still
 * names it and recovery fast-forwards as before.  If a crash keeps the
 * record but not its mark, the commit line before the record's names the
 * highest seq, hence the rule above; the record is whole and stays.  (A
 * record for which the format writes nothing, a ledger record that posts
 * nothing, is simply done.)  A format without a mark (jsonl, csv: files
 * in seq order) fails such a record with RS_EXPORT_PERMANENT and a
 * reason that says to move the file away and replay; the records after
 * it in the batch are not done.
 *
 * Durability: deliver() writes a batch, fsync()s the file and only then
 * reports the records done (a large batch is fsync()ed every
 * FILEJOURNAL_SYNC_EVERY bytes on the way).  If a write or an fsync
 * fails, the file is truncated back to the last committed byte and the
 * rest of the batch is retried.
 * A new file's directory is fsync()ed too.  The file is locked with
 * flock() while open, so two writers never interleave.
 *
 * Threads: one journal or exporter instance is used by one thread at a
 * time (the exporter ABI's rule).
 */
#ifndef RS_FILEJOURNAL_H
#define RS_FILEJOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exporters/builtin.h"
#include "refundsync/exporter.h"
#include "util/buf.h"
#include "util/status.h"

/*
 * How far back from the end recovery looks for a commit line, and so the
 * most it ever cuts.  A writer fsync()s at least every
 * FILEJOURNAL_SYNC_EVERY bytes and a record is at most
 * FILEJOURNAL_MAX_RECORD bytes, so a crash never leaves more than their
 * sum uncommitted; a longer tail means the file was changed by something
 * else, and is refused rather than cut.
 */
#define FILEJOURNAL_SYNC_EVERY	(4u * 1024 * 1024)
#define FILEJOURNAL_MAX_RECORD	(8u * 1024 * 1024)
#define FILEJOURNAL_MAX_TAIL	(16u * 1024 * 1024)

struct filejournal;

/*
 * Is line (len bytes, no '\n') a commit line?  If so set *seq (>= 0)
 * and return true.  ctx is the format's state (the arg given to
 * filejournal_open()).  A format should accept only a line it wrote
 * whole: a line cut short by a crash, or one of a file it did not write,
 * that passes for a commit line moves the file's last seq.
 */
typedef bool (*filejournal_commit_fn)(void *ctx, const char *line,
    size_t len, int64_t *seq /* OUT */);

/* Called with each committed line (len bytes, no '\n'); borrowed. */
typedef void (*filejournal_line_fn)(void *arg, const char *line,
    size_t len);

/* filejournal_open() flags. */
#define FILEJOURNAL_HEADER_FIXED	0x1	/* every file begins with
						   header exactly */
#define FILEJOURNAL_LINE_RECORDS	0x2	/* every line is a commit
						   line */

/*
 * Open (creating it, mode 0640, if needed) the file at path for
 * appending, lock it and recover its tail as above; commit(arg, ...)
 * tells commit lines.  header (hlen bytes, may be NULL) is how every
 * file the caller writes begins: a file that holds no commit line,
 * starts like header (or is a prefix of it) and holds no newline past it
 * is what a crash left of the first write, and is emptied.  With
 * FILEJOURNAL_HEADER_FIXED in flags, a non-empty file that does not
 * begin with header is refused (before anything is cut) like one
 * without a commit line.  With FILEJOURNAL_LINE_RECORDS (every line the
 * caller writes is a commit line), a whole line after the last commit
 * line that holds no NUL byte is no remains of a crash (a crash leaves
 * a partial last line, or NULs where data never reached the disk): it
 * was written by someone else (rows of another exporter after our
 * header, say), and the file is refused rather than cut.  Returns RS_OK
 * and
 * *out (caller owns; filejournal_close()), else a message in err:
 * RS_ERR_BUSY if another writer holds the lock; RS_ERR_INPUT if the file
 * is not a regular file or not one of ours; RS_ERR_IO on a system error.
 */
enum rs_status	filejournal_open(const char *path,
		    filejournal_commit_fn commit, void *arg,
		    const char *header, size_t hlen, unsigned flags,
		    struct filejournal **out, char *err, size_t errlen);
void		filejournal_close(struct filejournal *fj);

/* The seq of the last commit line (0 if none or seq 0). */
int64_t		filejournal_last_seq(const struct filejournal *fj);

/* Bytes committed (the file's size after recovery and commits). */
uint64_t	filejournal_size(const struct filejournal *fj);

/* Call fn with every committed line, in order.  RS_ERR_IO on a read
 * error. */
enum rs_status	filejournal_foreach_line(struct filejournal *fj,
		    filejournal_line_fn fn, void *arg);

/*
 * Append len bytes after what was written so far (not yet durable).
 * On failure (RS_ERR_IO, message in err) call filejournal_rollback().
 */
enum rs_status	filejournal_write(struct filejournal *fj, const void *data,
		    size_t len, char *err, size_t errlen);

/*
 * fsync() what was written: it is committed, and last_seq (>= the
 * current one) becomes the file's last seq.  On failure the written
 * bytes are rolled back and RS_ERR_IO returned with a message in err.
 */
enum rs_status	filejournal_commit(struct filejournal *fj, int64_t last_seq,
		    char *err, size_t errlen);

/* Drop everything written since the last commit (truncate + fsync). */
void		filejournal_rollback(struct filejournal *fj);

/* ---- a file exporter over a journal --------------------------------- */

/*
 * A file format.  The generic exporter below does the ABI work (keys,
 * locking, recovery, batching, fsync, skipping records the file already
 * holds); the format only turns records into text.
 */
struct filejournal_format {
	const char	*type;		/* "jsonl", "csv", ... */
	/* Keys allowed in the section besides "type"; must hold "path".
	 * NULL-terminated. */
	const char *const *keys;
	filejournal_commit_fn commit_line;
	/*
	 * Optional: append to out a commit line for seq that is no record
	 * (ledger, beancount: "; rs-seq: N\n"), which also parses as no
	 * record for record_seq.  A format with a mark takes records older
	 * than its file's last seq (see recovery above); one without keeps
	 * its file in seq order and refuses them.
	 */
	enum rs_status (*mark)(void *state, int64_t seq, struct buf *out);
	/*
	 * Optional: is line the line of a record that names the record's
	 * seq (ledger: a transaction's "    ; rs-seq: N" metadata)?  Which
	 * seqs a file holds is read from these lines; NULL: from its commit
	 * lines, for a format whose every commit line ends a record (a
	 * format with a header commit line or a mark needs it).
	 */
	filejournal_commit_fn record_seq;
	/* How a file begins when start is NULL (jsonl: the first record's
	 * "{\"seq\":"), so that a torn first write is recognised; else
	 * NULL, and start()'s text for an empty file is used. */
	const char *begins;
	/* Every file of this format begins exactly with start()'s text for
	 * an empty file (csv: its header row): one that does not is not
	 * ours and is refused (FILEJOURNAL_HEADER_FIXED). */
	bool	header_fixed;
	/* Every line is a record's commit line (csv): a whole line after
	 * the last one is refused, not cut (FILEJOURNAL_LINE_RECORDS). */
	bool	line_records;
	/*
	 * Make the format's state from the section's keys (all of them
	 * known, "path" included), touching nothing outside the process:
	 * it is the whole of the format's check too.  RS_EXPORT_OK and
	 * *state, or RS_EXPORT_PERMANENT after calling report once per
	 * bad key (builtin.h, CHECKING).
	 */
	int	(*init)(void **state, const char *name,
		    const struct rs_export_kv *kv, size_t nkv,
		    exporter_report_fn *report, void *arg);
	/* Optional: see every committed line of the file at open. */
	void	(*scan)(void *state, const char *line, size_t len);
	/*
	 * Optional: text to append at open, e.g. the header of an empty
	 * file or declarations a new config needs.  It must end with a
	 * commit line of last_seq if it appends anything.
	 */
	enum rs_status (*start)(void *state, bool empty, int64_t last_seq,
		    struct buf *out);
	/*
	 * Append rec (possibly nothing) to out.  RS_EXPORT_OK, or
	 * RS_EXPORT_PERMANENT with a message in err for a record this
	 * format can never write (what it appended is discarded).
	 */
	int	(*format)(void *state, const struct rs_export_record *rec,
		    struct buf *out, char *err, size_t errlen);
	/* Optional: the text formatted since the last call was committed
	 * (true) or thrown away (false). */
	void	(*settle)(void *state, bool committed);
	void	(*free)(void *state);
};

/*
 * The exporter ABI functions of a file format: a built-in's open()
 * calls filejournal_exporter_open() with its format; the other three
 * go into the ops table as they are.  open() fails with
 * RS_EXPORT_PERMANENT on an unknown key, a missing path or a bad value,
 * and with RS_EXPORT_RETRY if the file is locked by another writer or
 * cannot be opened now.
 */
int		filejournal_exporter_open(const struct filejournal_format *fmt,
		    void **ctx, const char *name,
		    const struct rs_export_kv *kv, size_t nkv, char *err,
		    size_t errlen);
int		filejournal_exporter_deliver(void *ctx,
		    const struct rs_export_record *recs, size_t n,
		    size_t *done, char *err, size_t errlen);
int		filejournal_exporter_recover(void *ctx, int64_t *last_seq,
		    char *err, size_t errlen);
void		filejournal_exporter_close(void *ctx);

/*
 * The check of a file format (builtin.h, CHECKING): its init() and
 * free(), and nothing else; the file is not opened.
 */
bool		filejournal_exporter_check(
		    const struct filejournal_format *fmt, const char *name,
		    const struct rs_export_kv *kv, size_t nkv,
		    exporter_report_fn *report, void *arg);

/* The value of key in kv, or NULL.  Borrowed. */
const char	*filejournal_kv(const struct rs_export_kv *kv, size_t nkv,
		    const char *key);

/* Parse yes/no, true/false, on/off, 1/0 into *out.  false if none. */
bool		filejournal_parse_bool(const char *s, bool *out /* OUT */);

/* ---- a set of declared names ------------------------------------------ */

/*
 * The names (accounts, commodities) a format has declared in its file,
 * so each is declared once.  Names added since the last settle are
 * pending: filejournal_names_settle(false) forgets them when the text
 * that declared them was thrown away.  Small sets: lookups are linear.
 */
struct filejournal_names {
	char	**v;		/* owned strings */
	size_t	  n;		/* names held */
	size_t	  committed;	/* the first committed names are settled */
	size_t	  cap;
};

/* Caller-owned storage; release with filejournal_names_cleanup(). */
void		filejournal_names_init(struct filejournal_names *s);
void		filejournal_names_cleanup(struct filejournal_names *s);
/* Is the len-byte name in the set? */
bool		filejournal_names_has(const struct filejournal_names *s,
		    const char *name, size_t len);
/* Add the len-byte name (copied) as pending, unless it is there. */
void		filejournal_names_add(struct filejournal_names *s,
		    const char *name, size_t len);
/* Keep (true) or forget (false) the pending names. */
void		filejournal_names_settle(struct filejournal_names *s,
		    bool committed);

/* ---- text helpers for formats ---------------------------------------- */
/*
 * These append to a struct buf and return what buf_append() returns
 * (RS_ERR_TOOBIG past its ceiling).
 */

/* v in decimal. */
enum rs_status	filejournal_put_i64(struct buf *b, int64_t v);

/* s as a JSON string ("null" for NULL); control characters, '"' and
 * '\\' escaped, so the result never holds a newline. */
enum rs_status	filejournal_put_json(struct buf *b, const char *s);

/*
 * s as one CSV field (RFC 4180): quoted when it holds ',', '"' or a
 * space at either end, with '"' doubled; nothing for NULL.  Control
 * characters are written as a space, so a record is exactly one line.
 */
enum rs_status	filejournal_put_csv(struct buf *b, const char *s);

/*
 * s with every byte outside [A-Za-z0-9._~:@/+=-] written as %XX
 * (percent-encoding), so it is safe in a ledger tag, a beancount string
 * and a transaction description; "-" for NULL.
 */
enum rs_status	filejournal_put_safe(struct buf *b, const char *s);

/* minor units with exponent decimals (money_format()). */
enum rs_status	filejournal_put_money(struct buf *b, int64_t minor,
		    int exponent);

#endif
