/*
 * sdnotify.h: the systemd notification protocol (sd_notify(3)), by hand.
 *
 * Under Type=notify, systemd hands the service an AF_UNIX datagram
 * socket in $NOTIFY_SOCKET (a path, or "@name" in the abstract
 * namespace) and reads newline-separated "KEY=VALUE" assignments from
 * it: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=text.  Outside
 * systemd the variable is unset and every call is a cheap no-op, so the
 * daemon calls these unconditionally.  No libsystemd: one socket and one
 * sendto() per message.  Thread-safe; nothing is cached, and the
 * environment is only read, never changed.
 */
#ifndef RS_SDNOTIFY_H
#define RS_SDNOTIFY_H

#include <stdint.h>

#include "util/status.h"

/*
 * Send state, one or more "KEY=VALUE" lines, as one datagram to
 * $NOTIFY_SOCKET.  Returns RS_OK once sent, RS_ERR_NOTFOUND when
 * $NOTIFY_SOCKET is unset or empty (not supervised: nothing to do),
 * RS_ERR_CONFIG when it is not an absolute path or "@name" or is too
 * long for a socket address, RS_ERR_INPUT for an empty state, and
 * RS_ERR_IO when the socket or sendto() fails (errno is kept), which
 * includes a reader whose queue stays full for a second.  Never logs:
 * callers decide whether a failure matters.
 */
enum rs_status	sdnotify_send(const char *state);

/*
 * sdnotify_send() of a printf-formatted state; the text is cut at 4096
 * bytes.
 */
enum rs_status	sdnotify_sendf(const char *fmt, ...)
		    __attribute__((format(printf, 1, 2)));

/* "READY=1" with a STATUS= line: start-up or a reload is complete. */
enum rs_status	sdnotify_ready(const char *status);
/* "RELOADING=1" with MONOTONIC_USEC= (as Type=notify-reload wants). */
enum rs_status	sdnotify_reloading(void);
/* "STOPPING=1" with a STATUS= line: the drain has begun. */
enum rs_status	sdnotify_stopping(const char *status);
/* "WATCHDOG=1": the keep-alive for WatchdogSec=. */
enum rs_status	sdnotify_watchdog(void);

/*
 * The watchdog interval systemd expects keep-alives within, in
 * microseconds, from $WATCHDOG_USEC; 0 when the watchdog is off: the
 * variable is unset or not a positive number, or $WATCHDOG_PID is set
 * and names another process (a child that inherited the environment).
 * Send WATCHDOG=1 at least every half of this.
 */
uint64_t	sdnotify_watchdog_usec(void);

#endif
