/*
 * filejournal.c: durable append-only record files with tail recovery,
 * and the generic file exporter built on them.
 *
 * The key decision: a record is committed when its commit line is in the
 * file and fsync()ed, and recovery trusts nothing after the last
 * complete commit line.  We write with pwrite() at our own offset rather
 * than O_APPEND, so a rollback that could not truncate is overwritten by
 * the next write and cut off before the next fsync: the committed prefix
 * is never followed by stale bytes for long.  Used by one exporter
 * thread at a time; nothing here is shared.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "domain/money.h"
#include "exporters/filejournal.h"
#include "util/log.h"
#include "util/xmalloc.h"

/* First window read back from the end when looking for a commit line. */
#define FJ_FIRST_WINDOW		(64u * 1024)
/* Chunk size for reading the whole file (filejournal_foreach_line). */
#define FJ_READ_CHUNK		(1024u * 1024)
/* Longest line foreach_line hands out; longer ones are skipped. */
#define FJ_MAX_LINE		(16u * 1024 * 1024)
/* A batch is written out once this much text is pending. */
#define FJ_FLUSH		(1024u * 1024)

struct filejournal {
	int			 fd;
	char			*path;
	filejournal_commit_fn	 commit;
	void			*arg;		/* commit's ctx */
	uint64_t		 committed;	/* bytes durable */
	uint64_t		 written;	/* bytes written */
	bool			 dirty;		/* bytes past written may
						   remain (a failed rollback) */
	int64_t			 last_seq;
};

/* ---- the journal ------------------------------------------------------ */

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Read exactly len bytes at off.  false (errno set) on error or EOF. */
static bool
pread_full(int fd, void *p, size_t len, uint64_t off)
{
	char *c = p;
	ssize_t n;

	while (len > 0) {
		n = pread(fd, c, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return false;
		}
		c += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return true;
}

/* fsync the directory holding path, so a new file's name is durable. */
static bool
sync_dir(const char *path)
{
	char *copy = xstrdup(path);
	int dfd;
	bool ok = false;

	dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		ok = fsync(dfd) == 0;
		close(dfd);
	}
	free(copy);
	return ok;
}

/*
 * Look for the last complete commit line in data[0..len), which is the
 * file from byte off on.  A line counts only if it starts inside the
 * window (or the window starts at 0).  Sets *start to the offset in data
 * of its first byte and *end to the offset just past its '\n'.
 */
static bool
scan_window(const struct filejournal *fj, const char *data, size_t len,
    bool at_start, size_t *start, size_t *end, int64_t *seq)
{
	size_t line_end = len, s;

	/*
	 * A plain backward scan, byte by byte: memrchr() per line would be
	 * quadratic under ASan, whose interceptor checks the whole range.
	 */
	while (line_end > 0 && data[line_end - 1] != '\n')
		line_end--;
	if (line_end == 0)
		return false;
	line_end--;		/* at the '\n' ending the last whole line */
	for (;;) {
		for (s = line_end; s > 0 && data[s - 1] != '\n'; s--)
			;
		if (s == 0 && !at_start)
			return false;	/* the line may start before data */
		if (fj->commit(fj->arg, data + s, line_end - s, seq)) {
			*start = s;
			*end = line_end + 1;
			return true;
		}
		if (s == 0)
			return false;
		line_end = s - 1;
	}
}

/* Cut fj's file to keep bytes (fsync()ed). */
static enum rs_status
cut_to(struct filejournal *fj, uint64_t keep, uint64_t size, int64_t seq,
    char *err, size_t errlen)
{
	log_warnx("%s: cutting %llu bytes of a record a crash left "
	    "incomplete (last seq %lld)", fj->path,
	    (unsigned long long)(size - keep), (long long)seq);
	if (ftruncate(fj->fd, (off_t)keep) != 0 || fsync(fj->fd) != 0) {
		seterr(err, errlen, "%s: truncate: %s", fj->path,
		    strerror(errno));
		return RS_ERR_IO;
	}
	return RS_OK;
}

/*
 * Does the tail p[0..len) hold a whole line without a NUL byte, which no
 * crash leaves behind?
 */
static bool
whole_line(const char *p, size_t len)
{
	size_t i;
	bool nul = false;

	for (i = 0; i < len; i++) {
		if (p[i] == '\n' && !nul)
			return true;
		nul = p[i] == '\n' ? false : nul || p[i] == '\0';
	}
	return false;
}

/*
 * Does fj's committed part begin with header (hlen bytes)?  RS_ERR_INPUT
 * if not, RS_ERR_IO on a read error; a message in err.
 */
static enum rs_status
check_header(struct filejournal *fj, const char *header, size_t hlen,
    char *err, size_t errlen)
{
	char *head;
	bool same;

	if (fj->committed < hlen) {
		same = false;
	} else {
		head = xmalloc(hlen);
		if (!pread_full(fj->fd, head, hlen, 0)) {
			seterr(err, errlen, "%s: read: %s", fj->path,
			    strerror(errno));
			free(head);
			return RS_ERR_IO;
		}
		same = memcmp(head, header, hlen) == 0;
		free(head);
	}
	if (!same) {
		seterr(err, errlen, "%s: does not begin with this exporter's "
		    "header: not a file this exporter wrote (move it away or "
		    "choose another path)", fj->path);
		return RS_ERR_INPUT;
	}
	return RS_OK;
}

/*
 * Find the committed end of fj's file of size bytes; truncate the rest.
 * A file with no commit line that starts like header (see
 * filejournal_open()) is a torn first write: it is emptied.
 *
 * The file's last seq is that of its last commit line, or of the commit
 * line before it when that one is higher: a record older than the file's
 * last seq is followed by a mark naming the highest seq (see
 * filejournal.h), and a crash may have kept the record without its mark.
 * The record is whole (its commit line is), so it stays.
 */
static enum rs_status
recover_tail(struct filejournal *fj, uint64_t size, const char *header,
    size_t hlen, unsigned flags, char *err, size_t errlen)
{
	uint64_t win = FJ_FIRST_WINDOW, off, line_at = 0;
	size_t start = 0, end = 0, pstart, pend;
	int64_t seq = 0, pseq = 0;
	char *data = NULL;
	bool found = false;
	enum rs_status st = RS_OK;

	fj->committed = fj->written = 0;
	fj->last_seq = 0;
	if (size == 0)
		return RS_OK;
	for (;;) {
		if (win > size)
			win = size;
		off = size - win;
		data = xrealloc(data, (size_t)win);
		if (!pread_full(fj->fd, data, (size_t)win, off)) {
			seterr(err, errlen, "%s: read: %s", fj->path,
			    strerror(errno));
			st = RS_ERR_IO;
			goto out;
		}
		if (!found && scan_window(fj, data, (size_t)win, off == 0,
		    &start, &end, &seq)) {
			found = true;
			line_at = off + start;
			fj->committed = fj->written = off + end;
		}
		/* Then the commit line before it, in what the window holds
		 * before the last one. */
		if (found && scan_window(fj, data, (size_t)(line_at - off),
		    off == 0, &pstart, &pend, &pseq)) {
			if (pseq > seq)
				seq = pseq;
			break;
		}
		if (off == 0 || win >= FILEJOURNAL_MAX_TAIL)
			break;
		win *= 4;
		if (win > FILEJOURNAL_MAX_TAIL)
			win = FILEJOURNAL_MAX_TAIL;
	}
	if (!found) {
		/* The whole file was read: a torn first write? */
		if (off == 0 && hlen > 0 && memcmp(data, header,
		    size < hlen ? (size_t)size : hlen) == 0 &&
		    (size <= hlen || memchr(data + hlen, '\n',
		    (size_t)size - hlen) == NULL)) {
			st = cut_to(fj, 0, size, 0, err, errlen);
			goto out;
		}
		seterr(err, errlen, "%s: no record end found in its last %llu "
		    "bytes: not a file this exporter wrote (move it away or "
		    "choose another path)", fj->path, (unsigned long long)win);
		st = RS_ERR_INPUT;
		goto out;
	}
	/* Checked before anything is cut: a file that is not ours is left
	 * as it is. */
	if ((flags & FILEJOURNAL_HEADER_FIXED) && hlen > 0 &&
	    (st = check_header(fj, header, hlen, err, errlen)) != RS_OK)
		goto out;
	if ((flags & FILEJOURNAL_LINE_RECORDS) &&
	    whole_line(data + (fj->committed - off),
	    (size_t)(size - fj->committed))) {
		seterr(err, errlen, "%s: a line after its last record (seq "
		    "%lld) is not a record this exporter wrote: not a file "
		    "this exporter wrote, or changed by hand (move it away "
		    "or choose another path)", fj->path, (long long)seq);
		st = RS_ERR_INPUT;
		goto out;
	}
	fj->last_seq = seq;
	if (fj->committed < size)
		st = cut_to(fj, fj->committed, size, seq, err, errlen);
out:
	free(data);
	return st;
}

enum rs_status
filejournal_open(const char *path, filejournal_commit_fn commit, void *arg,
    const char *header, size_t hlen, unsigned flags,
    struct filejournal **out, char *err, size_t errlen)
{
	struct filejournal *fj = NULL;
	struct stat sb;
	bool created = false;
	int fd, saved;
	enum rs_status st;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		created = fd >= 0;
		if (fd < 0 && errno == EEXIST)
			fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (fd < 0) {
		saved = errno;
		seterr(err, errlen, "%s: open: %s", path, strerror(saved));
		return saved == EISDIR ? RS_ERR_INPUT : RS_ERR_IO;
	}
	fj = xcalloc(1, sizeof(*fj));
	fj->fd = fd;
	fj->path = xstrdup(path);
	fj->commit = commit;
	fj->arg = arg;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		saved = errno;
		seterr(err, errlen, "%s: %s", path, saved == EWOULDBLOCK ?
		    "locked by another writer" : strerror(saved));
		st = saved == EWOULDBLOCK ? RS_ERR_BUSY : RS_ERR_IO;
		goto fail;
	}
	if (fstat(fd, &sb) != 0) {
		seterr(err, errlen, "%s: stat: %s", path, strerror(errno));
		st = RS_ERR_IO;
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		seterr(err, errlen, "%s: not a regular file", path);
		st = RS_ERR_INPUT;
		goto fail;
	}
	if (created && !sync_dir(path)) {
		seterr(err, errlen, "%s: sync directory: %s", path,
		    strerror(errno));
		st = RS_ERR_IO;
		goto fail;
	}
	if ((st = recover_tail(fj, (uint64_t)sb.st_size, header, hlen, flags,
	    err, errlen)) != RS_OK)
		goto fail;
	*out = fj;
	return RS_OK;
fail:
	filejournal_close(fj);
	return st;
}

void
filejournal_close(struct filejournal *fj)
{
	if (fj == NULL)
		return;
	if (fj->written != fj->committed || fj->dirty)
		filejournal_rollback(fj);
	if (fj->fd >= 0)
		close(fj->fd);	/* drops the lock */
	free(fj->path);
	free(fj);
}

int64_t
filejournal_last_seq(const struct filejournal *fj)
{
	return fj->last_seq;
}

uint64_t
filejournal_size(const struct filejournal *fj)
{
	return fj->committed;
}

enum rs_status
filejournal_foreach_line(struct filejournal *fj, filejournal_line_fn fn,
    void *arg)
{
	struct buf line;
	char *chunk = xmalloc(FJ_READ_CHUNK);
	uint64_t off = 0;
	size_t n, i, s;
	bool skip = false;
	enum rs_status st = RS_OK;

	buf_init(&line, FJ_MAX_LINE);
	while (off < fj->committed) {
		n = fj->committed - off < FJ_READ_CHUNK ?
		    (size_t)(fj->committed - off) : FJ_READ_CHUNK;
		if (!pread_full(fj->fd, chunk, n, off)) {
			log_warn("%s: read", fj->path);
			st = RS_ERR_IO;
			goto out;
		}
		off += n;
		for (s = i = 0; i < n; i++) {
			if (chunk[i] != '\n')
				continue;
			if (line.len == 0 && !skip)
				fn(arg, chunk + s, i - s);
			else if (!skip &&
			    buf_append(&line, chunk + s, i - s) == RS_OK)
				fn(arg, line.data, line.len);
			buf_reset(&line);
			skip = false;
			s = i + 1;
		}
		if (s < n && !skip &&
		    buf_append(&line, chunk + s, n - s) != RS_OK)
			skip = true;	/* longer than FJ_MAX_LINE */
	}
	/* The committed part ends with '\n', so line is empty here. */
out:
	buf_cleanup(&line);
	free(chunk);
	return st;
}

enum rs_status
filejournal_write(struct filejournal *fj, const void *data, size_t len,
    char *err, size_t errlen)
{
	const char *p = data;
	ssize_t n;

	while (len > 0) {
		n = pwrite(fj->fd, p, len, (off_t)fj->written);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			seterr(err, errlen, "%s: write: %s", fj->path,
			    strerror(errno));
			return RS_ERR_IO;
		}
		p += n;
		len -= (size_t)n;
		fj->written += (uint64_t)n;
	}
	return RS_OK;
}

enum rs_status
filejournal_commit(struct filejournal *fj, int64_t last_seq, char *err,
    size_t errlen)
{
	if (fj->written != fj->committed || fj->dirty) {
		/* Cut what a failed rollback may have left past our end. */
		if (fj->dirty && ftruncate(fj->fd, (off_t)fj->written) != 0) {
			seterr(err, errlen, "%s: truncate: %s", fj->path,
			    strerror(errno));
			filejournal_rollback(fj);
			return RS_ERR_IO;
		}
		if (fdatasync(fj->fd) != 0) {
			seterr(err, errlen, "%s: fsync: %s", fj->path,
			    strerror(errno));
			filejournal_rollback(fj);
			return RS_ERR_IO;
		}
		fj->dirty = false;
		fj->committed = fj->written;
	}
	if (last_seq > fj->last_seq)
		fj->last_seq = last_seq;
	return RS_OK;
}

void
filejournal_rollback(struct filejournal *fj)
{
	fj->written = fj->committed;
	if (ftruncate(fj->fd, (off_t)fj->committed) != 0 ||
	    fsync(fj->fd) != 0) {
		log_warn("%s: rollback to %llu bytes", fj->path,
		    (unsigned long long)fj->committed);
		fj->dirty = true;
	} else
		fj->dirty = false;
}

/* ---- a set of declared names ------------------------------------------ */

void
filejournal_names_init(struct filejournal_names *s)
{
	memset(s, 0, sizeof(*s));
}

void
filejournal_names_cleanup(struct filejournal_names *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

bool
filejournal_names_has(const struct filejournal_names *s, const char *name,
    size_t len)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strncmp(s->v[i], name, len) == 0 && s->v[i][len] == '\0')
			return true;
	return false;
}

void
filejournal_names_add(struct filejournal_names *s, const char *name,
    size_t len)
{
	if (filejournal_names_has(s, name, len))
		return;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->v = xreallocarray(s->v, s->cap, sizeof(*s->v));
	}
	s->v[s->n++] = xstrndup(name, len);
}

void
filejournal_names_settle(struct filejournal_names *s, bool committed)
{
	if (!committed)
		while (s->n > s->committed)
			free(s->v[--s->n]);
	s->committed = s->n;
}

/* ---- text helpers ----------------------------------------------------- */

enum rs_status
filejournal_put_i64(struct buf *b, int64_t v)
{
	char rev[24];
	char out[24];
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0, i = 0;

	do {
		rev[n++] = (char)('0' + mag % 10);
		mag /= 10;
	} while (mag != 0);
	if (v < 0)
		out[i++] = '-';
	while (n > 0)
		out[i++] = rev[--n];
	return buf_append(b, out, i);
}

enum rs_status
filejournal_put_json(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *run;
	char esc[6];
	unsigned char c;
	enum rs_status st;

	if (s == NULL)
		return buf_append(b, "null", 4);
	if ((st = buf_append(b, "\"", 1)) != RS_OK)
		return st;
	for (;;) {
		for (run = s; (c = (unsigned char)*s) >= 0x20 && c != '"' &&
		    c != '\\' && c != 0x7f; s++)
			;
		if (s > run && (st = buf_append(b, run, (size_t)(s - run))) !=
		    RS_OK)
			return st;
		if (c == '\0')
			break;
		esc[0] = '\\';
		switch (c) {
		case '"':
		case '\\':
			esc[1] = (char)c;
			st = buf_append(b, esc, 2);
			break;
		case '\n':
			st = buf_append(b, "\\n", 2);
			break;
		case '\r':
			st = buf_append(b, "\\r", 2);
			break;
		case '\t':
			st = buf_append(b, "\\t", 2);
			break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			st = buf_append(b, esc, 6);
			break;
		}
		if (st != RS_OK)
			return st;
		s++;
	}
	return buf_append(b, "\"", 1);
}

enum rs_status
filejournal_put_csv(struct buf *b, const char *s)
{
	const char *p;
	size_t len;
	bool quote;
	unsigned char c;
	enum rs_status st = RS_OK;

	if (s == NULL || *s == '\0')
		return RS_OK;
	len = strlen(s);
	quote = s[0] == ' ' || s[len - 1] == ' ' ||
	    strpbrk(s, ",\"") != NULL;
	if (!quote && strcspn(s, "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"
	    "\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19"
	    "\x1a\x1b\x1c\x1d\x1e\x1f\x7f") == len)
		return buf_append(b, s, len);
	if (quote && (st = buf_append(b, "\"", 1)) != RS_OK)
		return st;
	for (p = s; *p != '\0' && st == RS_OK; p++) {
		c = (unsigned char)*p;
		if (c == '"')
			st = buf_append(b, "\"\"", 2);
		else if (c < 0x20 || c == 0x7f)
			st = buf_append(b, " ", 1);
		else
			st = buf_append(b, p, 1);
	}
	if (quote && st == RS_OK)
		st = buf_append(b, "\"", 1);
	return st;
}

static bool
safe_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '~' ||
	    c == ':' || c == '@' || c == '/' || c == '+' || c == '=' ||
	    c == '-';
}

enum rs_status
filejournal_put_safe(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *run;
	char esc[3];
	enum rs_status st;

	if (s == NULL)
		return buf_append(b, "-", 1);
	for (;;) {
		for (run = s; *s != '\0' && safe_byte((unsigned char)*s); s++)
			;
		if (s > run && (st = buf_append(b, run, (size_t)(s - run))) !=
		    RS_OK)
			return st;
		if (*s == '\0')
			return RS_OK;
		esc[0] = '%';
		esc[1] = hex[(unsigned char)*s >> 4];
		esc[2] = hex[(unsigned char)*s & 15];
		if ((st = buf_append(b, esc, 3)) != RS_OK)
			return st;
		s++;
	}
}

enum rs_status
filejournal_put_money(struct buf *b, int64_t minor, int exponent)
{
	char text[48];
	enum rs_status st;

	if ((st = money_format(minor, exponent, text, sizeof(text))) != RS_OK)
		return st;
	return buf_appends(b, text);
}

/* ---- the generic file exporter ------------------------------------------ */

/*
 * The seqs a file holds, for records at or below its last seq (a dead
 * letter queued again): held[0..nheld) sorted, built from the whole file
 * the first time such a record comes (built), then kept up to date: the
 * seqs written since the last commit wait in pend[0..npend) until the
 * commit (or are dropped with the text).  8 bytes per record of the
 * file, and nothing at all until the first such record.
 */
struct fjexp_held {
	bool		 built;
	int64_t		*held;
	size_t		 nheld;
	size_t		 cap;
	int64_t		*pend;
	size_t		 npend;
	size_t		 pcap;
};

struct fjexp {
	const struct filejournal_format *fmt;
	void			*state;
	char			*name;
	char			*path;
	struct rs_export_kv	*kv;		/* the section's keys, for */
	size_t			 nkv;		/* a new file's state; */
	char			**kvtext;	/* their text, owned */
	struct filejournal	*fj;		/* NULL: open it again */
	struct buf		 out;
	struct fjexp_held	 h;
};

const char *
filejournal_kv(const struct rs_export_kv *kv, size_t nkv, const char *key)
{
	size_t i;

	for (i = 0; i < nkv; i++)
		if (kv[i].key != NULL && strcmp(kv[i].key, key) == 0)
			return kv[i].value != NULL ? kv[i].value : "";
	return NULL;
}

bool
filejournal_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; s != NULL && i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static int
result_of(enum rs_status st)
{
	return st == RS_ERR_INPUT || st == RS_ERR_CONFIG ?
	    RS_EXPORT_PERMANENT : RS_EXPORT_RETRY;
}

/* ---- the seqs a file holds -------------------------------------------- */

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* The index of the first element of v[0..n) that is >= seq. */
static size_t
lower_bound(const int64_t *v, size_t n, int64_t seq)
{
	size_t lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (v[mid] < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void
held_push(int64_t **v, size_t *n, size_t *cap, int64_t seq)
{
	if (*n == *cap) {
		*cap = *cap != 0 ? *cap * 2 : 64;
		*v = xreallocarray(*v, *cap, sizeof(**v));
	}
	(*v)[(*n)++] = seq;
}

static void
held_free(struct fjexp_held *h)
{
	free(h->held);
	free(h->pend);
	memset(h, 0, sizeof(*h));
}

/* Does the file (or the text written since the last commit) hold seq? */
static bool
held_has(const struct fjexp_held *h, int64_t seq)
{
	size_t i;

	i = lower_bound(h->held, h->nheld, seq);
	if (i < h->nheld && h->held[i] == seq)
		return true;
	for (i = 0; i < h->npend; i++)
		if (h->pend[i] == seq)
			return true;
	return false;
}

/* seq was formatted into the text under way (only kept once built). */
static void
held_pending(struct fjexp_held *h, int64_t seq)
{
	if (h->built)
		held_push(&h->pend, &h->npend, &h->pcap, seq);
}

/* The text under way was committed (its seqs join the set) or not. */
static void
held_settle(struct fjexp_held *h, bool committed)
{
	size_t k, i;
	int64_t seq;

	for (k = 0; committed && k < h->npend; k++) {
		seq = h->pend[k];
		if (h->nheld == 0 || seq > h->held[h->nheld - 1]) {
			held_push(&h->held, &h->nheld, &h->cap, seq);
			continue;
		}
		i = lower_bound(h->held, h->nheld, seq);
		if (h->held[i] == seq)
			continue;
		held_push(&h->held, &h->nheld, &h->cap, seq);	/* room */
		memmove(h->held + i + 1, h->held + i,
		    (h->nheld - 1 - i) * sizeof(*h->held));
		h->held[i] = seq;
	}
	h->npend = 0;
}

static void
held_line(void *arg, const char *line, size_t len)
{
	struct fjexp *x = arg;
	filejournal_commit_fn fn = x->fmt->record_seq != NULL ?
	    x->fmt->record_seq : x->fmt->commit_line;
	int64_t seq;

	if (fn(x->state, line, len, &seq))
		held_push(&x->h.held, &x->h.nheld, &x->h.cap, seq);
}

/*
 * Build the set from the committed file; recs[0..n) are the records
 * formatted since the last commit (appended, at or above the file's last
 * seq).  RS_ERR_IO on a read error (the set stays unbuilt).
 */
static enum rs_status
held_build(struct fjexp *x, const struct rs_export_record *recs, size_t n)
{
	struct fjexp_held *h = &x->h;
	size_t i, k;
	bool sorted = true;

	if (filejournal_foreach_line(x->fj, held_line, x) != RS_OK) {
		held_free(h);
		return RS_ERR_IO;
	}
	for (i = 1; i < h->nheld && sorted; i++)
		sorted = h->held[i - 1] < h->held[i];
	if (!sorted) {
		qsort(h->held, h->nheld, sizeof(*h->held), cmp_i64);
		for (k = i = 0; i < h->nheld; i++)
			if (k == 0 || h->held[k - 1] != h->held[i])
				h->held[k++] = h->held[i];
		h->nheld = k;
	}
	h->built = true;
	for (i = 0; i < n; i++)
		held_pending(h, recs[i].seq);
	return RS_OK;
}

static void
settle(struct fjexp *x, bool committed)
{
	if (x->fmt->settle != NULL)
		x->fmt->settle(x->state, committed);
	held_settle(&x->h, committed);
}

static void
scan_line(void *arg, const char *line, size_t len)
{
	struct fjexp *x = arg;

	x->fmt->scan(x->state, line, len);
}

/* Open the journal, let the format see it and append its start text. */
static int
attach(struct fjexp *x, char *err, size_t errlen)
{
	struct buf header;
	enum rs_status st;

	/* What an empty file starts with, to recognise a torn one. */
	buf_init(&header, FILEJOURNAL_MAX_RECORD);
	if (x->fmt->start != NULL &&
	    x->fmt->start(x->state, true, 0, &header) != RS_OK) {
		settle(x, false);
		buf_cleanup(&header);
		seterr(err, errlen, "%s: header too large", x->path);
		return RS_EXPORT_PERMANENT;
	}
	settle(x, false);
	if (x->fmt->begins != NULL)
		(void)buf_appends(&header, x->fmt->begins);
	st = filejournal_open(x->path, x->fmt->commit_line, x->state,
	    header.data, header.len,
	    (x->fmt->header_fixed ? FILEJOURNAL_HEADER_FIXED : 0) |
	    (x->fmt->line_records ? FILEJOURNAL_LINE_RECORDS : 0), &x->fj,
	    err, errlen);
	buf_cleanup(&header);
	if (st != RS_OK)
		return result_of(st);
	if (x->fmt->scan != NULL &&
	    (st = filejournal_foreach_line(x->fj, scan_line, x)) != RS_OK) {
		seterr(err, errlen, "%s: read: %s", x->path,
		    rs_strstatus(st));
		return RS_EXPORT_RETRY;
	}
	if (x->fmt->start == NULL)
		return RS_EXPORT_OK;
	buf_reset(&x->out);
	if ((st = x->fmt->start(x->state, filejournal_size(x->fj) == 0,
	    filejournal_last_seq(x->fj), &x->out)) != RS_OK) {
		seterr(err, errlen, "%s: header: %s", x->path,
		    rs_strstatus(st));
		settle(x, false);
		return RS_EXPORT_PERMANENT;
	}
	if (x->out.len > 0 &&
	    (filejournal_write(x->fj, x->out.data, x->out.len, err,
	    errlen) != RS_OK ||
	    filejournal_commit(x->fj, filejournal_last_seq(x->fj), err,
	    errlen) != RS_OK)) {
		filejournal_rollback(x->fj);
		settle(x, false);
		return RS_EXPORT_RETRY;
	}
	settle(x, true);
	return RS_EXPORT_OK;
}

/* Where open() keeps the first bad key that init() reports. */
struct first_err {
	const char	*name;		/* the section's NAME */
	char		*err;
	size_t		 errlen;
	bool		 set;
};

static void
first_err_report(void *arg, const char *key, const char *reason)
{
	struct first_err *fe = arg;

	if (fe->set)
		return;
	fe->set = true;
	seterr(fe->err, fe->errlen, "[exporter %s] %s: %s", fe->name, key,
	    reason);
}

int
filejournal_exporter_open(const struct filejournal_format *fmt, void **ctx,
    const char *name, const struct rs_export_kv *kv, size_t nkv, char *err,
    size_t errlen)
{
	struct fjexp *x = NULL;
	struct first_err fe = { 0 };
	const char *path;
	size_t i, k;
	bool known;
	int r;

	*ctx = NULL;
	for (i = 0; i < nkv; i++) {
		if (kv[i].key == NULL || strcmp(kv[i].key, "type") == 0)
			continue;
		for (known = false, k = 0; fmt->keys[k] != NULL; k++)
			if (strcmp(kv[i].key, fmt->keys[k]) == 0)
				known = true;
		if (!known) {
			seterr(err, errlen, "[exporter %s] %s: unknown key for "
			    "type %s", name, kv[i].key, fmt->type);
			return RS_EXPORT_PERMANENT;
		}
	}
	path = filejournal_kv(kv, nkv, "path");
	if (path == NULL || *path == '\0') {
		seterr(err, errlen, "[exporter %s] path: required for type %s",
		    name, fmt->type);
		return RS_EXPORT_PERMANENT;
	}
	x = xcalloc(1, sizeof(*x));
	x->fmt = fmt;
	x->name = xstrdup(name);
	x->path = xstrdup(path);
	x->kv = xcalloc(nkv + 1, sizeof(*x->kv));
	x->kvtext = xcalloc(2 * nkv + 1, sizeof(*x->kvtext));
	for (i = 0; i < nkv; i++) {
		if (kv[i].key != NULL)
			x->kv[i].key = x->kvtext[2 * i] = xstrdup(kv[i].key);
		if (kv[i].value != NULL)
			x->kv[i].value = x->kvtext[2 * i + 1] =
			    xstrdup(kv[i].value);
	}
	x->nkv = nkv;
	/* Pending text is flushed at FJ_FLUSH, so this caps one record. */
	buf_init(&x->out, FJ_FLUSH + FILEJOURNAL_MAX_RECORD);
	fe.name = name;
	fe.err = err;
	fe.errlen = errlen;
	if ((r = fmt->init(&x->state, name, kv, nkv, first_err_report,
	    &fe)) != RS_EXPORT_OK) {
		if (!fe.set)
			seterr(err, errlen, "[exporter %s]: cannot set up type "
			    "%s", name, fmt->type);
		goto fail;
	}
	if ((r = attach(x, err, errlen)) != RS_EXPORT_OK)
		goto fail;
	*ctx = x;
	return RS_EXPORT_OK;
fail:
	filejournal_exporter_close(x);
	return r;
}

/*
 * Has the path stopped naming the file x has open?  An operator moves a
 * file away to have `export replay` write it anew, and the daemon keeps
 * running meanwhile.
 */
static bool
moved_away(const struct fjexp *x)
{
	struct stat held, named;

	if (fstat(x->fj->fd, &held) != 0)
		return false;	/* deliver() meets the trouble */
	if (stat(x->path, &named) != 0)
		return errno == ENOENT;
	return named.st_dev != held.st_dev || named.st_ino != held.st_ino;
}

/*
 * Has the file x has open been taken from under it?  Removed (its last
 * name unlinked: its directory deleted, or a rotation that compressed
 * or deleted it), so that whatever is written to it is lost; or cut
 * below what was committed (logrotate's copytruncate), so that the next
 * write at our offset would leave a run of NUL bytes at its start.  A
 * file moved away but still linked is not lost: records written to it
 * are still there (SIGHUP, a replay or a restart opens the path again).
 * Writes why (for a log line) and returns true if so.
 */
static bool
file_lost(const struct fjexp *x, char *why, size_t whylen)
{
	struct stat held;

	if (fstat(x->fj->fd, &held) != 0)
		return false;	/* the write meets the trouble */
	if (held.st_nlink == 0) {
		snprintf(why, whylen, "was removed while open");
		return true;
	}
	if ((uint64_t)held.st_size < x->fj->committed) {
		snprintf(why, whylen, "was cut from %llu to %llu bytes by "
		    "someone else (logrotate copytruncate?)",
		    (unsigned long long)x->fj->committed,
		    (unsigned long long)held.st_size);
		return true;
	}
	return false;
}

/* Drop the file and the format's state, and open the path anew. */
static int
reattach(struct fjexp *x, char *err, size_t errlen)
{
	struct first_err fe = { 0 };
	int r;

	filejournal_close(x->fj);
	x->fj = NULL;
	held_free(&x->h);
	buf_reset(&x->out);
	if (x->state != NULL && x->fmt->free != NULL)
		x->fmt->free(x->state);
	x->state = NULL;
	fe.name = x->name;
	fe.err = err;
	fe.errlen = errlen;
	/* The keys were good at open(): this makes the same state. */
	if ((r = x->fmt->init(&x->state, x->name, x->kv, x->nkv,
	    first_err_report, &fe)) != RS_EXPORT_OK)
		return r;
	if ((r = attach(x, err, errlen)) != RS_EXPORT_OK) {
		filejournal_close(x->fj);
		x->fj = NULL;
	}
	return r;
}

/* Write out what the batch has formatted so far. */
static enum rs_status
flush(struct fjexp *x, char *err, size_t errlen)
{
	enum rs_status st = RS_OK;

	if (x->out.len > 0)
		st = filejournal_write(x->fj, x->out.data, x->out.len, err,
		    errlen);
	buf_reset(&x->out);
	return st;
}

/*
 * Record rec is at or below hi, the file's highest seq, and the file does
 * not hold it (a dead letter queued again, say after someone removed it
 * from the file).  A format with a mark appends it and then a mark of hi,
 * so the file's last commit line still names hi; one without fails it.
 * The text goes to x->out; *wrote says whether there was any.
 */
static int
deliver_old(struct fjexp *x, const struct rs_export_record *rec, int64_t hi,
    bool *wrote, char *err, size_t errlen)
{
	size_t at = x->out.len;
	int r;

	*wrote = false;
	if (x->fmt->mark == NULL) {
		snprintf(err, errlen, "cannot write seq %lld out of order: %s "
		    "is in seq order and already holds records up to seq "
		    "%lld; move it away and run `refundsync export replay "
		    "--exporter %s --from %lld`", (long long)rec->seq, x->path,
		    (long long)hi, x->name, (long long)rec->seq);
		return RS_EXPORT_PERMANENT;
	}
	r = x->fmt->format(x->state, rec, &x->out, err, errlen);
	if (r == RS_EXPORT_OK && x->out.len - at > FILEJOURNAL_MAX_RECORD) {
		snprintf(err, errlen, "seq %lld: record over %u bytes",
		    (long long)rec->seq, FILEJOURNAL_MAX_RECORD);
		r = RS_EXPORT_PERMANENT;
	}
	/* A record that writes nothing (posts nothing) needs no mark. */
	if (r == RS_EXPORT_OK && x->out.len > at &&
	    x->fmt->mark(x->state, hi, &x->out) != RS_OK) {
		snprintf(err, errlen, "seq %lld: no room for the line after "
		    "it", (long long)rec->seq);
		r = RS_EXPORT_PERMANENT;
	}
	if (r != RS_EXPORT_OK) {
		x->out.len = at;
		if (x->out.data != NULL)
			x->out.data[at] = '\0';
		return r;
	}
	*wrote = x->out.len > at;
	return RS_EXPORT_OK;
}

int
filejournal_exporter_deliver(void *ctx, const struct rs_export_record *recs,
    size_t n, size_t *done, char *err, size_t errlen)
{
	struct fjexp *x = ctx;
	int64_t hi;
	uint64_t synced;
	size_t i, mark, upto = 0, from = 0;
	char why[160];
	bool wrote;
	int r = RS_EXPORT_OK;

	*done = 0;
	/* A file taken from under us is written to no more: records would
	 * be lost with it, or follow a hole.  The path is opened anew (a
	 * new file, or the cut one, recovered as at a start). */
	if (x->fj != NULL && file_lost(x, why, sizeof(why))) {
		log_warnx("export %s: %s %s: starting it anew at that path",
		    x->name, x->path, why);
		/* Nothing is pending, and a rollback's truncate to our
		 * size would put the cut bytes back as NULs. */
		x->fj->written = x->fj->committed;
		x->fj->dirty = false;
		filejournal_close(x->fj);
		x->fj = NULL;
	}
	/* No file (recover() could not open a new one, or it was lost): no
	 * record is at fault, so whatever the reason, it is retried like a
	 * write. */
	if (x->fj == NULL && reattach(x, err, errlen) != RS_EXPORT_OK)
		return RS_EXPORT_RETRY;
	hi = filejournal_last_seq(x->fj);
	synced = filejournal_size(x->fj);
	buf_reset(&x->out);
	for (i = 0; i < n; i++) {
		if (recs[i].seq <= hi) {
			/* Learn what the file holds, once. */
			if (!x->h.built && held_build(x, recs + from,
			    i - from) != RS_OK) {
				snprintf(err, errlen, "%s: read: %s", x->path,
				    rs_strstatus(RS_ERR_IO));
				goto fail;
			}
			/* Already in the file: a redelivery or a replay. */
			if (held_has(&x->h, recs[i].seq))
				continue;
			r = deliver_old(x, &recs[i], hi, &wrote, err, errlen);
			if (r != RS_EXPORT_OK)
				break;
			if (wrote)
				held_pending(&x->h, recs[i].seq);
		} else {
			mark = x->out.len;
			r = x->fmt->format(x->state, &recs[i], &x->out, err,
			    errlen);
			if (r == RS_EXPORT_OK && x->out.len - mark >
			    FILEJOURNAL_MAX_RECORD) {
				snprintf(err, errlen, "seq %lld: record over "
				    "%u bytes", (long long)recs[i].seq,
				    FILEJOURNAL_MAX_RECORD);
				r = RS_EXPORT_PERMANENT;
			}
			if (r != RS_EXPORT_OK) {
				x->out.len = mark;
				if (x->out.data != NULL)
					x->out.data[mark] = '\0';
				break;
			}
			held_pending(&x->h, recs[i].seq);
			hi = recs[i].seq;
		}
		if (x->out.len < FJ_FLUSH)
			continue;
		if (flush(x, err, errlen) != RS_OK)
			goto fail;
		/* Bound what a crash can leave uncommitted. */
		if (x->fj->written - synced >= FILEJOURNAL_SYNC_EVERY) {
			if (filejournal_commit(x->fj, hi, err, errlen) != RS_OK)
				goto fail;
			settle(x, true);
			synced = filejournal_size(x->fj);
			upto = from = i + 1;
		}
	}
	if (flush(x, err, errlen) != RS_OK ||
	    filejournal_commit(x->fj, hi, err, errlen) != RS_OK)
		goto fail;
	settle(x, true);
	*done = i;
	return r;
fail:
	filejournal_rollback(x->fj);
	settle(x, false);
	buf_reset(&x->out);
	*done = upto;
	return RS_EXPORT_RETRY;
}

int
filejournal_exporter_recover(void *ctx, int64_t *last_seq, char *err,
    size_t errlen)
{
	struct fjexp *x = ctx;
	int r;

	/* A new epoch (a replay, say): the file may have been moved away
	 * since, and what it held is then no longer what the path holds. */
	if (x->fj == NULL || moved_away(x)) {
		if (x->fj != NULL)
			log_info("export %s: %s is no longer the file it was "
			    "writing (moved away?): starting it anew", x->name,
			    x->path);
		if ((r = reattach(x, err, errlen)) != RS_EXPORT_OK)
			return r;
	}
	*last_seq = filejournal_last_seq(x->fj);
	return RS_EXPORT_OK;
}

bool
filejournal_exporter_check(const struct filejournal_format *fmt,
    const char *name, const struct rs_export_kv *kv, size_t nkv,
    exporter_report_fn *report, void *arg)
{
	void *state = NULL;

	if (fmt->init(&state, name, kv, nkv, report, arg) != RS_EXPORT_OK)
		return false;
	if (state != NULL && fmt->free != NULL)
		fmt->free(state);
	return true;
}

void
filejournal_exporter_close(void *ctx)
{
	struct fjexp *x = ctx;
	size_t i;

	if (x == NULL)
		return;
	filejournal_close(x->fj);
	if (x->state != NULL && x->fmt->free != NULL)
		x->fmt->free(x->state);
	buf_cleanup(&x->out);
	held_free(&x->h);
	for (i = 0; x->kvtext != NULL && i < 2 * x->nkv; i++)
		free(x->kvtext[i]);
	free(x->kvtext);
	free(x->kv);
	free(x->name);
	free(x->path);
	free(x);
}
