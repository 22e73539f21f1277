/*
 * check_sdnotify.c: the sd_notify protocol, against a datagram socket
 * bound in a temporary directory (and one in the abstract namespace)
 * that stands in for systemd's $NOTIFY_SOCKET; then the real daemon
 * ($RS_BINARY) under that stand-in: READY, the watchdog keep-alives,
 * RELOADING and READY around SIGHUP, STOPPING on SIGTERM.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../testutil.h"
#include "util/sdnotify.h"

/* The stand-in for systemd: a bound datagram socket and its address. */
struct listener {
	int	 fd;
	char	 dir[64];	/* temporary directory; "" if abstract */
	char	 path[128];	/* the value for $NOTIFY_SOCKET */
};

static void
listener_bind_path(struct listener *l)
{
	struct sockaddr_un sa;
	struct timeval tv = { 5, 0 };

	memset(l, 0, sizeof(*l));
	snprintf(l->dir, sizeof(l->dir), "/tmp/rs-sdnotify-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(l->dir));
	snprintf(l->path, sizeof(l->path), "%s/notify", l->dir);
	l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(l->fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(l->path), sizeof(sa.sun_path));
	memcpy(sa.sun_path, l->path, strlen(l->path) + 1);
	ck_assert_int_eq(bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* A broken sender fails the test instead of hanging it. */
	ck_assert_int_eq(setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
	    sizeof(tv)), 0);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", l->path, 1), 0);
}

static void
listener_bind_abstract(struct listener *l)
{
	struct sockaddr_un sa;
	struct timeval tv = { 5, 0 };
	size_t n;

	memset(l, 0, sizeof(*l));
	snprintf(l->path, sizeof(l->path), "@refundsync-check-%ld-%ld",
	    (long)getpid(), (long)random());
	l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(l->fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	n = strlen(l->path);
	memcpy(sa.sun_path + 1, l->path + 1, n - 1);
	ck_assert_int_eq(bind(l->fd, (struct sockaddr *)&sa,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
	ck_assert_int_eq(setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
	    sizeof(tv)), 0);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", l->path, 1), 0);
}

/* The next datagram, as a string.  Caller frees. */
static char *
listener_read(struct listener *l)
{
	char buf[8192];
	ssize_t n;

	n = recv(l->fd, buf, sizeof(buf) - 1, 0);
	ck_assert_msg(n >= 0, "recv: %s", strerror(errno));
	buf[n] = '\0';
	return strdup(buf);
}

/* True when nothing more is waiting on the socket. */
static int
listener_empty(struct listener *l)
{
	char c;

	return recv(l->fd, &c, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN;
}

static void
listener_close(struct listener *l)
{
	(void)close(l->fd);
	if (l->dir[0] != '\0') {
		(void)unlink(l->path);
		(void)rmdir(l->dir);
	}
}

START_TEST(test_messages_path)
{
	struct listener l;
	char *m;

	listener_bind_path(&l);
	ck_assert_int_eq(sdnotify_ready("serving webhooks at /webhooks"),
	    RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "READY=1\nSTATUS=serving webhooks at /webhooks");
	free(m);

	ck_assert_int_eq(sdnotify_watchdog(), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "WATCHDOG=1");
	free(m);

	ck_assert_int_eq(sdnotify_stopping("draining"), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "STOPPING=1\nSTATUS=draining");
	free(m);

	ck_assert_int_eq(sdnotify_ready(NULL), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "READY=1");
	free(m);

	ck_assert_int_eq(sdnotify_stopping(NULL), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "STOPPING=1");
	free(m);

	ck_assert_int_eq(sdnotify_sendf("STATUS=%d of %s", 3, "four"),
	    RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "STATUS=3 of four");
	free(m);
	ck_assert(listener_empty(&l));
	listener_close(&l);
}
END_TEST

START_TEST(test_reloading)
{
	struct listener l;
	const char *pfx = "RELOADING=1\nMONOTONIC_USEC=";
	struct timespec ts;
	unsigned long long now, sent;
	char *m, *end;

	listener_bind_path(&l);
	ck_assert_int_eq(sdnotify_reloading(), RS_OK);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL;
	m = listener_read(&l);
	ck_assert_int_eq(strncmp(m, pfx, strlen(pfx)), 0);
	errno = 0;
	sent = strtoull(m + strlen(pfx), &end, 10);
	ck_assert_int_eq(errno, 0);
	ck_assert_str_eq(end, "");
	/* Taken on CLOCK_MONOTONIC just before our own reading. */
	ck_assert(sent > 0);
	ck_assert(sent <= now);
	ck_assert(now - sent < 5000000ULL);
	free(m);

	ck_assert_int_eq(sdnotify_ready("reloaded"), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "READY=1\nSTATUS=reloaded");
	free(m);
	listener_close(&l);
}
END_TEST

START_TEST(test_status_one_line)
{
	struct listener l;
	char *m;

	/* A newline in the text must not smuggle in another assignment. */
	listener_bind_path(&l);
	ck_assert_int_eq(sdnotify_ready("a\nREADY=0\rb"), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "READY=1\nSTATUS=a READY=0 b");
	free(m);
	listener_close(&l);
}
END_TEST

START_TEST(test_abstract)
{
	struct listener l;
	char *m;

	listener_bind_abstract(&l);
	ck_assert_int_eq(l.path[0], '@');
	ck_assert_int_eq(sdnotify_ready("abstract"), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "READY=1\nSTATUS=abstract");
	free(m);
	ck_assert_int_eq(sdnotify_watchdog(), RS_OK);
	m = listener_read(&l);
	ck_assert_str_eq(m, "WATCHDOG=1");
	free(m);
	ck_assert(listener_empty(&l));
	listener_close(&l);
}
END_TEST

START_TEST(test_not_supervised)
{
	ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
	ck_assert_int_eq(sdnotify_ready("x"), RS_ERR_NOTFOUND);
	ck_assert_int_eq(sdnotify_watchdog(), RS_ERR_NOTFOUND);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
	ck_assert_int_eq(sdnotify_stopping(NULL), RS_ERR_NOTFOUND);
}
END_TEST

START_TEST(test_bad_socket)
{
	char longpath[200];
	struct listener l;

	/* Neither a path nor "@name". */
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", "run/notify", 1), 0);
	ck_assert_int_eq(sdnotify_watchdog(), RS_ERR_CONFIG);
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", "@", 1), 0);
	ck_assert_int_eq(sdnotify_watchdog(), RS_ERR_CONFIG);
	/* Longer than sun_path. */
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", longpath, 1), 0);
	ck_assert_int_eq(sdnotify_watchdog(), RS_ERR_CONFIG);
	longpath[0] = '@';
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", longpath, 1), 0);
	ck_assert_int_eq(sdnotify_watchdog(), RS_ERR_CONFIG);
	/* Nobody listening there. */
	listener_bind_path(&l);
	listener_close(&l);
	ck_assert_int_eq(sdnotify_watchdog(), RS_ERR_IO);
	ck_assert_int_eq(errno, ENOENT);
	/* An empty state is refused before anything is sent. */
	listener_bind_path(&l);
	ck_assert_int_eq(sdnotify_send(""), RS_ERR_INPUT);
	ck_assert_int_eq(sdnotify_send(NULL), RS_ERR_INPUT);
	ck_assert(listener_empty(&l));
	listener_close(&l);
}
END_TEST

START_TEST(test_reader_stuck)
{
	struct listener l;
	struct timespec t0, t1;
	enum rs_status st = RS_OK;
	long ms;
	int i;

	/* Nobody reads: once the queue is full a send gives up after about
	 * a second instead of blocking the caller for good. */
	listener_bind_path(&l);
	for (i = 0; i < 100000 && st == RS_OK; i++) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		st = sdnotify_watchdog();
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_int_eq(st, RS_ERR_IO);
	ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
	ms = (long)(t1.tv_sec - t0.tv_sec) * 1000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
	ck_assert_int_ge(ms, 500);
	ck_assert_int_le(ms, 5000);
	listener_close(&l);
}
END_TEST

START_TEST(test_watchdog_usec)
{
	char pid[32];

	ck_assert_int_eq(unsetenv("WATCHDOG_USEC"), 0);
	ck_assert_int_eq(unsetenv("WATCHDOG_PID"), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);

	ck_assert_int_eq(setenv("WATCHDOG_USEC", "30000000", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 30000000);

	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	ck_assert_int_eq(setenv("WATCHDOG_PID", pid, 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 30000000);

	/* Meant for another process: ours inherited it. */
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	ck_assert_int_eq(setenv("WATCHDOG_PID", pid, 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);
	ck_assert_int_eq(setenv("WATCHDOG_PID", "x1", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);
	ck_assert_int_eq(unsetenv("WATCHDOG_PID"), 0);

	ck_assert_int_eq(setenv("WATCHDOG_USEC", "0", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);
	ck_assert_int_eq(setenv("WATCHDOG_USEC", "-5", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);
	ck_assert_int_eq(setenv("WATCHDOG_USEC", "12s", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);
	ck_assert_int_eq(setenv("WATCHDOG_USEC", "", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 0);
	ck_assert_int_eq(setenv("WATCHDOG_USEC", "1", 1), 0);
	ck_assert_uint_eq(sdnotify_watchdog_usec(), 1);
}
END_TEST

/*
 * The next datagram that is not a watchdog keep-alive; *nwatchdog counts
 * the keep-alives read on the way.  Caller frees.
 */
static char *
listener_read_event(struct listener *l, int *nwatchdog)
{
	char *m;

	for (;;) {
		m = listener_read(l);
		if (strcmp(m, "WATCHDOG=1") != 0)
			return m;
		(*nwatchdog)++;
		free(m);
	}
}

START_TEST(test_daemon_lifecycle)
{
	struct listener l;
	struct tu_daemon *d;
	const char *pfx = "RELOADING=1\nMONOTONIC_USEC=";
	char env_notify[160], *m;
	const char *env[3];
	int nwd = 0, i;

	listener_bind_path(&l);
	/* In case the tests themselves run under a watchdog. */
	ck_assert_int_eq(unsetenv("WATCHDOG_PID"), 0);
	snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", l.path);
	env[0] = env_notify;
	/* 400 ms: keep-alives every 200 ms or less. */
	env[1] = "WATCHDOG_USEC=400000";
	env[2] = NULL;
	d = tu_daemon_start(NULL, env);
	ck_assert_ptr_nonnull(d);

	m = listener_read_event(&l, &nwd);
	ck_assert_str_eq(m, "READY=1\nSTATUS=serving");
	free(m);
	/* Nothing but keep-alives while it runs: at least five in ~1 s. */
	for (i = 0; i < 5; i++) {
		m = listener_read(&l);
		ck_assert_str_eq(m, "WATCHDOG=1");
		free(m);
	}

	ck_assert(tu_daemon_signal(d, SIGHUP));
	m = listener_read_event(&l, &nwd);
	ck_assert_int_eq(strncmp(m, pfx, strlen(pfx)), 0);
	free(m);
	m = listener_read_event(&l, &nwd);
	ck_assert_str_eq(m, "READY=1\nSTATUS=serving");
	free(m);

	ck_assert(tu_daemon_signal(d, SIGTERM));
	m = listener_read_event(&l, &nwd);
	ck_assert_str_eq(m, "STOPPING=1\nSTATUS=draining requests in flight");
	free(m);
	ck_assert_int_eq(tu_daemon_stop(d, 30000), 0);
	tu_daemon_free(d);
	listener_close(&l);
}
END_TEST

START_TEST(test_daemon_no_watchdog)
{
	struct listener l;
	struct tu_daemon *d;
	char env_notify[160], *m;
	const char *env[2];

	/* Without WATCHDOG_USEC the daemon sends no keep-alives. */
	listener_bind_path(&l);
	ck_assert_int_eq(unsetenv("WATCHDOG_USEC"), 0);
	ck_assert_int_eq(unsetenv("WATCHDOG_PID"), 0);
	snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", l.path);
	env[0] = env_notify;
	env[1] = NULL;
	d = tu_daemon_start(NULL, env);
	ck_assert_ptr_nonnull(d);
	m = listener_read(&l);
	ck_assert_str_eq(m, "READY=1\nSTATUS=serving");
	free(m);
	sleep(2);
	ck_assert(listener_empty(&l));
	ck_assert_int_eq(tu_daemon_stop(d, 30000), 0);
	m = listener_read(&l);
	ck_assert_str_eq(m, "STOPPING=1\nSTATUS=draining requests in flight");
	free(m);
	ck_assert(listener_empty(&l));
	tu_daemon_free(d);
	listener_close(&l);
}
END_TEST

static Suite *
sdnotify_suite(void)
{
	Suite *s = suite_create("sdnotify");
	TCase *tc = tcase_create("sdnotify");

	tcase_add_test(tc, test_messages_path);
	tcase_add_test(tc, test_reloading);
	tcase_add_test(tc, test_status_one_line);
	tcase_add_test(tc, test_abstract);
	tcase_add_test(tc, test_not_supervised);
	tcase_add_test(tc, test_bad_socket);
	tcase_add_test(tc, test_reader_stuck);
	tcase_add_test(tc, test_watchdog_usec);
	suite_add_tcase(s, tc);
	tc = tcase_create("daemon");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_daemon_lifecycle);
	tcase_add_test(tc, test_daemon_no_watchdog);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(sdnotify_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
