/*
 * exec.c: the "exec" exporter, which hands records to a long-running
 * command, one JSON line at a time, and reads one acknowledgement line
 * back per record.
 *
 * The command runs as `/bin/sh -c "$command"` in its own process group,
 * with the signal mask cleared and every signal at its default action,
 * the daemon's environment plus REFUNDSYNC_EXPORTER=<NAME>, stdin and
 * stdout on pipes and stderr shared with the daemon (so it reaches the
 * journal).  For each record refundsync writes exporter_record_json() and
 * a newline, then waits up to `timeout` seconds for one line:
 *
 *	ok [KEY]	done (if KEY is given it must be the record's
 *			idempotency key)
 *	retry [REASON]	transient: sent again later, with backoff
 *	fail [REASON]	permanent: the record goes to dead letters
 *
 * Anything else, output the command wrote before it was sent the record
 * (a second answer to the one before), a missing answer, or the command
 * dying, is a transient failure: the command is stopped (the protocol is
 * out of step) and a new one is started on the next delivery, which
 * re-sends the record with the same idempotency key.  A command found
 * dead between deliveries is restarted at once.
 *
 * Key decision: lock-step, one record in flight.  It keeps "which record
 * was acknowledged" beyond doubt and needs no second thread; the cost is
 * one round trip per record through a pipe.
 *
 * Closing sends EOF on the command's stdin and waits 2 s for it to exit,
 * then SIGTERM to its process group, 2 s more, then SIGKILL.
 *
 * Threads: an instance is used by one thread at a time (ABI contract).
 * SIGPIPE from a write to a dead command is blocked for that thread and
 * consumed, so nothing depends on the daemon ignoring it.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exporters/builtin.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strnum.h"
#include "util/xmalloc.h"

#define EXEC_SHELL		"/bin/sh"
#define EXEC_DEF_TIMEOUT_S	30
#define EXEC_MAX_TIMEOUT_S	3600
#define EXEC_MAX_LINE		4096	/* bytes of an acknowledgement */
#define EXEC_GRACE_MS		2000	/* per stage of stopping */
#define EXEC_ENV_NAME		"REFUNDSYNC_EXPORTER"

extern char **environ;

const char *const exporter_exec_keys[] = {
	"command", "timeout", NULL
};

struct exec_exporter {
	char		*name;		/* the section's NAME */
	char		*command;
	int64_t		 timeout_ms;	/* per acknowledgement */
	pid_t		 pid;		/* 0: not running */
	int		 to_fd;		/* its stdin, ours to write */
	int		 from_fd;	/* its stdout, ours to read */
	char		 rbuf[EXEC_MAX_LINE + 2]; /* a whole line, \r\n too */
	size_t		 rlen;		/* bytes read, not used yet */
	uint64_t	 starts;	/* commands started */
};

/* ---- the child ---------------------------------------------------- */

/* How a reaped child ended, for a reason. */
static void
describe_status(int status, char *out, size_t outlen)
{
	if (WIFEXITED(status))
		snprintf(out, outlen, "exited with status %d",
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, outlen, "killed by signal %d",
		    WTERMSIG(status));
	else
		snprintf(out, outlen, "ended (wait status %d)", status);
}

/* waitpid(pid, WNOHANG) that retries EINTR: 1 reaped, 0 running, -1 gone
 * (someone else reaped it, or SIGCHLD is ignored). */
static int
try_reap(pid_t pid, int *status)
{
	pid_t r;

	do
		r = waitpid(pid, status, WNOHANG);
	while (r == -1 && errno == EINTR);
	if (r == pid)
		return 1;
	return r == 0 ? 0 : -1;
}

/* Wait up to ms for pid to exit.  As try_reap(). */
static int
reap_within(pid_t pid, int64_t ms, int *status)
{
	int64_t end = clock_mono_ms() + ms;
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int r;

	for (;;) {
		if ((r = try_reap(pid, status)) != 0)
			return r;
		if (clock_mono_ms() >= end)
			return 0;
		nanosleep(&ts, NULL);
	}
}

static void
close_fds(struct exec_exporter *x)
{
	if (x->to_fd != -1)
		close(x->to_fd);
	if (x->from_fd != -1)
		close(x->from_fd);
	x->to_fd = x->from_fd = -1;
	x->rlen = 0;
}

/*
 * Stop the command: EOF on its stdin, then (if it is still there after
 * grace_ms) SIGTERM to its group, then SIGKILL.  If why is not NULL it
 * receives how the command ended.  Always leaves x with no child.
 */
static void
child_stop(struct exec_exporter *x, int64_t grace_ms, char *why,
    size_t whylen)
{
	int status = 0, r;

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (x->pid <= 0) {
		close_fds(x);
		return;
	}
	if (x->to_fd != -1) {
		close(x->to_fd);
		x->to_fd = -1;
	}
	if ((r = reap_within(x->pid, grace_ms, &status)) == 0) {
		/* The leader is not reaped, so the group id is still its. */
		kill(-x->pid, SIGTERM);
		if ((r = reap_within(x->pid, grace_ms, &status)) == 0) {
			kill(-x->pid, SIGKILL);
			do
				r = waitpid(x->pid, &status, 0);
			while (r == -1 && errno == EINTR);
			r = r == x->pid ? 1 : -1;
		}
	}
	if (why != NULL) {
		if (r == 1)
			describe_status(status, why, whylen);
		else
			snprintf(why, whylen, "ended (not waitable)");
	}
	x->pid = 0;
	close_fds(x);
}

/* A copy of fd at 3 or above, close-on-exec, so that a dup2 onto 0 or
 * 1 in the child always clears close-on-exec.  fd is closed. */
static int
fd_above_stdio(int fd)
{
	int nfd;

	if (fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return nfd;
}

/* The environment for the child.  Caller frees the array and the one
 * string at index *added. */
static char **
child_env(const struct exec_exporter *x, size_t *added)
{
	static const char pfx[] = EXEC_ENV_NAME "=";
	char **env;
	size_t n = 0, i, o = 0;

	while (environ != NULL && environ[n] != NULL)
		n++;
	env = xcalloc(n + 2, sizeof(*env));
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], pfx, sizeof(pfx) - 1) != 0)
			env[o++] = environ[i];
	*added = o;
	env[o] = xasprintf("%s%s", pfx, x->name);
	return env;
}

/* Start the command.  RS_EXPORT_OK, or RETRY with a reason in err. */
static int
child_start(struct exec_exporter *x, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	char sh[] = "sh", dashc[] = "-c";
	char *argv[4];
	char **env = NULL;
	int in[2] = { -1, -1 }, out[2] = { -1, -1 };
	bool fa_ok = false, attr_ok = false;
	size_t added = 0;
	pid_t pid;
	int rc, result = RS_EXPORT_RETRY;

	if (pipe2(in, O_CLOEXEC) == -1 || pipe2(out, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto out;
	}
	if ((in[0] = fd_above_stdio(in[0])) == -1 ||
	    (out[1] = fd_above_stdio(out[1])) == -1) {
		snprintf(err, errlen, "fcntl: %s", strerror(errno));
		goto out;
	}
	if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
		snprintf(err, errlen, "posix_spawn: %s", strerror(rc));
		goto out;
	}
	fa_ok = true;
	if ((rc = posix_spawnattr_init(&attr)) != 0) {
		snprintf(err, errlen, "posix_spawn: %s", strerror(rc));
		goto out;
	}
	attr_ok = true;
	sigemptyset(&none);
	sigfillset(&all);
	/*
	 * Every other descriptor is closed in the child: not all of ours
	 * are close-on-exec (libcurl's sockets are not), and the command
	 * must not hold the http exporter's connections open, nor anything
	 * else of the daemon's.
	 */
	if ((rc = posix_spawn_file_actions_adddup2(&fa, in[0], 0)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1)) != 0 ||
#ifdef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
	    (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
#endif
	    (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP)) != 0 ||
	    (rc = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
	    (rc = posix_spawnattr_setsigdefault(&attr, &all)) != 0 ||
	    (rc = posix_spawnattr_setpgroup(&attr, 0)) != 0) {
		snprintf(err, errlen, "posix_spawn: %s", strerror(rc));
		goto out;
	}
	argv[0] = sh;
	argv[1] = dashc;
	argv[2] = x->command;
	argv[3] = NULL;
	env = child_env(x, &added);
	if ((rc = posix_spawn(&pid, EXEC_SHELL, &fa, &attr, argv, env)) !=
	    0) {
		snprintf(err, errlen, "%s: %s", EXEC_SHELL, strerror(rc));
		goto out;
	}
	x->pid = pid;
	x->to_fd = in[1];
	x->from_fd = out[0];
	in[1] = out[0] = -1;
	x->rlen = 0;
	x->starts++;
	if (fcntl(x->to_fd, F_SETFL, O_NONBLOCK) == -1 ||
	    fcntl(x->from_fd, F_SETFL, O_NONBLOCK) == -1) {
		snprintf(err, errlen, "fcntl: %s", strerror(errno));
		child_stop(x, 0, NULL, 0);
		goto out;
	}
	if (x->starts > 1)
		log_warnx("exporter %s: exec: command restarted (start %llu, "
		    "pid %ld)", x->name, (unsigned long long)x->starts,
		    (long)pid);
	else
		log_debug("exporter %s: exec: command started (pid %ld)",
		    x->name, (long)pid);
	result = RS_EXPORT_OK;
out:
	if (env != NULL) {
		free(env[added]);
		free(env);
	}
	if (attr_ok)
		posix_spawnattr_destroy(&attr);
	if (fa_ok)
		posix_spawn_file_actions_destroy(&fa);
	if (in[0] != -1)
		close(in[0]);
	if (in[1] != -1)
		close(in[1]);
	if (out[0] != -1)
		close(out[0]);
	if (out[1] != -1)
		close(out[1]);
	return result;
}

/* ---- talking to it ------------------------------------------------ */

/* write(2) with SIGPIPE blocked for this thread and a pending one, if
 * the write raised it, consumed. */
static ssize_t
write_nosigpipe(int fd, const void *p, size_t n)
{
	sigset_t pipeset, old, pending;
	struct timespec zero = { 0, 0 };
	bool was_pending;
	ssize_t r;
	int saved;

	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeset, &old);
	sigemptyset(&pending);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE) == 1;
	r = write(fd, p, n);
	saved = errno;
	if (r == -1 && saved == EPIPE && !was_pending)
		while (sigtimedwait(&pipeset, NULL, &zero) == -1 &&
		    errno == EINTR)
			;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return r;
}

enum io_result {
	IO_OK,
	IO_DEAD,		/* EOF or EPIPE: the command went away */
	IO_TIMEOUT,
	IO_ERROR		/* errno is set */
};

/* Wait for events on fd until end (monotonic ms). */
static enum io_result
wait_fd(int fd, short events, int64_t end)
{
	struct pollfd pfd;
	int64_t left;
	int r;

	for (;;) {
		if ((left = end - clock_mono_ms()) <= 0)
			return IO_TIMEOUT;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		r = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return IO_ERROR;
		if (r > 0)
			return IO_OK;
	}
}

static enum io_result
write_all(struct exec_exporter *x, const char *p, size_t n, int64_t end)
{
	enum io_result io;
	ssize_t w;

	while (n > 0) {
		w = write_nosigpipe(x->to_fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && errno == EPIPE)
			return IO_DEAD;
		if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK)
			return IO_ERROR;
		if ((io = wait_fd(x->to_fd, POLLOUT, end)) != IO_OK)
			return io;
	}
	return IO_OK;
}

/*
 * Read one line (without its "\n", and a "\r" before it) into line
 * (EXEC_MAX_LINE + 1 bytes).  IO_ERROR with errno EMSGSIZE for a line
 * that is too long.
 */
static enum io_result
read_line(struct exec_exporter *x, char *line, int64_t end)
{
	enum io_result io;
	char *nl;
	size_t len;
	ssize_t r;

	for (;;) {
		if ((nl = memchr(x->rbuf, '\n', x->rlen)) != NULL) {
			len = (size_t)(nl - x->rbuf);
			if (len > 0 && x->rbuf[len - 1] == '\r')
				len--;
			if (len > EXEC_MAX_LINE) {
				errno = EMSGSIZE;
				return IO_ERROR;
			}
			memcpy(line, x->rbuf, len);
			line[len] = '\0';
			x->rlen -= (size_t)(nl + 1 - x->rbuf);
			memmove(x->rbuf, nl + 1, x->rlen);
			return IO_OK;
		}
		/* Full, and no end of line: more than EXEC_MAX_LINE bytes. */
		if (x->rlen >= sizeof(x->rbuf)) {
			errno = EMSGSIZE;
			return IO_ERROR;
		}
		r = read(x->from_fd, x->rbuf + x->rlen,
		    sizeof(x->rbuf) - x->rlen);
		if (r > 0) {
			x->rlen += (size_t)r;
			continue;
		}
		if (r == 0)
			return IO_DEAD;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return IO_ERROR;
		if ((io = wait_fd(x->from_fd, POLLIN, end)) != IO_OK)
			return io;
	}
}

/* A copy of s safe for a reason: printable ASCII only. */
static void
printable(const char *s, char *out, size_t outlen)
{
	size_t o = 0;

	for (; *s != '\0' && o + 1 < outlen; s++)
		out[o++] = (char)(*s >= 0x20 && *s < 0x7f ? *s : '?');
	out[o] = '\0';
}

/*
 * The command is out of step or gone: stop it and say why in err.
 * what says what went wrong; the command's end is appended.
 */
static int
give_up(struct exec_exporter *x, const struct rs_export_record *rec,
    const char *what, int64_t grace_ms, char *err, size_t errlen)
{
	char how[64];

	child_stop(x, grace_ms, how, sizeof(how));
	snprintf(err, errlen, "exec: record %lld: %s; command %s",
	    (long long)rec->seq, what, how);
	log_warnx("exporter %s: %s", x->name, err);
	return RS_EXPORT_RETRY;
}

/*
 * Did the command write anything that is not the answer to a record it
 * was sent (a second line for the previous one, say)?  Read what is
 * there without waiting; true if x->rbuf holds bytes.
 */
static bool
unsolicited(struct exec_exporter *x)
{
	ssize_t r;

	if (x->rlen == 0) {
		do
			r = read(x->from_fd, x->rbuf, EXEC_MAX_LINE);
		while (r == -1 && errno == EINTR);
		if (r > 0)
			x->rlen = (size_t)r;
	}
	return x->rlen > 0;
}

/* Send one record and read its answer.  An RS_EXPORT_* result. */
static int
send_one(struct exec_exporter *x, const struct rs_export_record *rec,
    char *err, size_t errlen)
{
	char line[EXEC_MAX_LINE + 1], shown[256], what[512];
	char *json = NULL, *word, *rest;
	size_t len = 0;
	int64_t end;
	enum io_result io;
	int result = RS_EXPORT_RETRY;

	/*
	 * Lock-step: output that came before the record was written would
	 * be read as its answer (an extra "ok" would acknowledge a record
	 * the command has not even read), so the command is out of step.
	 */
	if (unsolicited(x)) {
		x->rbuf[x->rlen] = '\0';
		len = strcspn(x->rbuf, "\n");
		memcpy(line, x->rbuf, len);
		line[len] = '\0';
		printable(line, shown, 64);
		snprintf(what, sizeof(what), "the command wrote \"%.63s\" "
		    "before it was sent the record (more than one answer to "
		    "a record?)", shown);
		return give_up(x, rec, what, 0, err, errlen);
	}
	if ((json = exporter_record_json(rec, &len)) == NULL) {
		snprintf(err, errlen, "exec: record %lld: too large to send",
		    (long long)rec->seq);
		return RS_EXPORT_PERMANENT;
	}
	json = xrealloc(json, len + 2);
	json[len++] = '\n';
	json[len] = '\0';
	end = clock_mono_ms() + x->timeout_ms;
	if ((io = write_all(x, json, len, end)) == IO_OK)
		io = read_line(x, line, end);
	switch (io) {
	case IO_OK:
		break;
	case IO_DEAD:
		/* It closed its end: give it a moment to finish exiting. */
		result = give_up(x, rec, "no acknowledgement", EXEC_GRACE_MS,
		    err, errlen);
		goto out;
	case IO_TIMEOUT:
		snprintf(what, sizeof(what), "no acknowledgement within "
		    "%lld s", (long long)(x->timeout_ms / 1000));
		result = give_up(x, rec, what, 0, err, errlen);
		goto out;
	case IO_ERROR:
		snprintf(what, sizeof(what), "%s", errno == EMSGSIZE ?
		    "acknowledgement line too long" : strerror(errno));
		result = give_up(x, rec, what, 0, err, errlen);
		goto out;
	}

	word = line;
	if ((rest = strchr(line, ' ')) != NULL) {
		*rest++ = '\0';
		while (*rest == ' ')
			rest++;
	} else
		rest = line + strlen(line);
	printable(rest, shown, sizeof(shown));
	if (strcmp(word, "ok") == 0) {
		if (rest[0] != '\0' && strcmp(rest,
		    rec->idempotency_key != NULL ? rec->idempotency_key :
		    "") != 0) {
			snprintf(what, sizeof(what), "acknowledged \"%s\", "
			    "expected \"%s\"", shown,
			    rec->idempotency_key != NULL ?
			    rec->idempotency_key : "");
			result = give_up(x, rec, what, 0, err, errlen);
			goto out;
		}
		result = RS_EXPORT_OK;
	} else if (strcmp(word, "retry") == 0) {
		snprintf(err, errlen, "exec: record %lld: retry: %s",
		    (long long)rec->seq, shown[0] != '\0' ? shown :
		    "(no reason)");
		result = RS_EXPORT_RETRY;
	} else if (strcmp(word, "fail") == 0) {
		snprintf(err, errlen, "exec: record %lld: fail: %s",
		    (long long)rec->seq, shown[0] != '\0' ? shown :
		    "(no reason)");
		result = RS_EXPORT_PERMANENT;
	} else {
		/* At most 63 characters: the precision says so to gcc too,
		 * which cannot see printable()'s bound at -O1. */
		printable(word, line, 64);
		snprintf(what, sizeof(what), "bad acknowledgement \"%.63s\" "
		    "(want ok, retry or fail)", line);
		result = give_up(x, rec, what, 0, err, errlen);
	}
out:
	free(json);
	return result;
}

/* ---- the ops ------------------------------------------------------ */

static void
exec_free(struct exec_exporter *x)
{
	if (x == NULL)
		return;
	child_stop(x, EXEC_GRACE_MS, NULL, 0);
	free(x->command);
	free(x->name);
	free(x);
}

/*
 * Parse the keys into x, as open() and the check share: every bad value
 * is reported.  Nothing is started.
 */
static bool
exec_parse(struct exec_exporter *x, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	const char *command = NULL, *why;
	char reason[128];
	bool ok = true;
	size_t i;
	int64_t t;

	x->timeout_ms = EXEC_DEF_TIMEOUT_S * 1000;
	/* Keys this type does not know (type, the engine's) are not ours
	 * to refuse: the config layer has checked the section. */
	for (i = 0; i < nkv; i++) {
		if (strcmp(kv[i].key, "command") == 0)
			command = kv[i].value;
		else if (strcmp(kv[i].key, "timeout") == 0) {
			if ((why = strnum_i64(kv[i].value, 1,
			    EXEC_MAX_TIMEOUT_S, &t)) != NULL) {
				snprintf(reason, sizeof(reason), "%s (whole "
				    "seconds from 1 to %d)", why,
				    EXEC_MAX_TIMEOUT_S);
				report(arg, "timeout", reason);
				ok = false;
			} else
				x->timeout_ms = t * 1000;
		}
	}
	if (command == NULL || command[0] == '\0') {
		report(arg, "command", "required");
		ok = false;
	} else
		x->command = xstrdup(command);
	return ok;
}

/* Where open() keeps the first bad key that exec_parse() reports. */
struct exec_first_err {
	char	*err;
	size_t	 errlen;
	bool	 set;
};

static void
exec_first_err(void *arg, const char *key, const char *reason)
{
	struct exec_first_err *fe = arg;

	if (fe->set)
		return;
	fe->set = true;
	snprintf(fe->err, fe->errlen, "%s: %s", key, reason);
}

bool
exporter_exec_check(const char *name, const struct rs_export_kv *kv,
    size_t nkv, exporter_report_fn *report, void *arg)
{
	struct exec_exporter *x;
	bool ok;

	(void)name;
	x = xcalloc(1, sizeof(*x));
	x->to_fd = x->from_fd = -1;
	ok = exec_parse(x, kv, nkv, report, arg);
	exec_free(x);
	return ok;
}

static int
exec_open(void **ctxp, const char *name, const struct rs_export_kv *kv,
    size_t nkv, char *err, size_t errlen)
{
	struct exec_exporter *x;
	struct exec_first_err fe = { err, errlen, false };

	*ctxp = NULL;
	x = xcalloc(1, sizeof(*x));
	x->name = xstrdup(name);
	x->to_fd = x->from_fd = -1;
	if (!exec_parse(x, kv, nkv, exec_first_err, &fe)) {
		exec_free(x);
		return RS_EXPORT_PERMANENT;
	}
	/* Started on the first delivery, so a command that cannot start
	 * is retried rather than refusing the whole exporter. */
	*ctxp = x;
	return RS_EXPORT_OK;
}

static int
exec_deliver(void *ctx, const struct rs_export_record *recs, size_t n,
    size_t *done, char *err, size_t errlen)
{
	struct exec_exporter *x = ctx;
	char how[64];
	int status = 0, r;
	size_t i;

	*done = 0;
	/* Died while idle: restart at once, nothing was in flight. */
	if (x->pid > 0 && (r = try_reap(x->pid, &status)) != 0) {
		if (r == 1)
			describe_status(status, how, sizeof(how));
		else
			snprintf(how, sizeof(how), "ended");
		log_warnx("exporter %s: exec: command %s while idle", x->name,
		    how);
		x->pid = 0;
		close_fds(x);
	}
	if (x->pid <= 0 && (r = child_start(x, err, errlen)) != RS_EXPORT_OK)
		return r;
	for (i = 0; i < n; i++) {
		if ((r = send_one(x, &recs[i], err, errlen)) != RS_EXPORT_OK)
			return r;
		*done = i + 1;
	}
	return RS_EXPORT_OK;
}

static void
exec_close(void *ctx)
{
	exec_free(ctx);
}

const struct rs_exporter_ops exporter_exec_ops = {
	.abi_version = RS_EXPORTER_ABI_VERSION,
	.name = "exec",
	.open = exec_open,
	.deliver = exec_deliver,
	.recover = NULL,
	.close = exec_close
};
