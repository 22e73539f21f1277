/*
 * bare-mhd.c: the benchmark's baseline (a): a libmicrohttpd server with
 * the same threading model as refundsync's public listener (THREADS
 * daemons of one epoll polling thread each, each with its own listening
 * socket on the port, SO_REUSEPORT) that reads each POST body and
 * answers 200.  No verification, no storage: the ceiling any MHD-based
 * server has.  POOL=1 in the environment gives MHD's own thread pool on
 * one shared socket instead (refundsync's model before de1c1c3).
 *
 * usage: bare-mhd PORT THREADS     (runs until SIGTERM/SIGINT)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <microhttpd.h>

static char ok[] = "{\"outcome\":\"applied\"}";

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (*con_cls == NULL) {
		*con_cls = (void *)1;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	r = MHD_create_response_from_buffer(sizeof(ok) - 1, ok,
	    MHD_RESPMEM_PERSISTENT);
	ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

int
main(int argc, char *argv[])
{
	struct MHD_Daemon *d[64];
	sigset_t set;
	int sig;
	unsigned threads, n, i;
	const char *pool = getenv("POOL");

	if (argc != 3) {
		fprintf(stderr, "usage: bare-mhd PORT THREADS\n");
		return 2;
	}
	threads = (unsigned)strtoul(argv[2], NULL, 10);
	if (threads < 1 || threads > 64) {
		fprintf(stderr, "bare-mhd: THREADS is 1 to 64\n");
		return 2;
	}
	n = pool != NULL && strcmp(pool, "1") == 0 ? 1 : threads;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (i = 0; i < n; i++) {
		static struct sockaddr_in sin;
		const union MHD_DaemonInfo *di;
		socklen_t len = sizeof(sin);

		if (i == 0) {
			sin.sin_family = AF_INET;
			sin.sin_port = htons((uint16_t)strtoul(argv[1], NULL,
			    10));
			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		}
		d[i] = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
		    MHD_USE_EPOLL | MHD_USE_ITC, 0, NULL, NULL, on_access, NULL,
		    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
		    MHD_OPTION_THREAD_POOL_SIZE, n == 1 && threads > 1 ?
		    threads : 0u,
		    MHD_OPTION_LISTENING_ADDRESS_REUSE, n > 1 ? 1u : 0u,
		    MHD_OPTION_CONNECTION_LIMIT, 512u,
		    MHD_OPTION_CONNECTION_TIMEOUT, 10u,
		    MHD_OPTION_END);
		if (d[i] == NULL) {
			fprintf(stderr, "bare-mhd: cannot start\n");
			return 1;
		}
		/* The others bind the port the first one got. */
		di = MHD_get_daemon_info(d[i], MHD_DAEMON_INFO_LISTEN_FD);
		if (i == 0 && di != NULL && getsockname(di->listen_fd,
		    (struct sockaddr *)&sin, &len) == 0)
			fprintf(stderr, "bare-mhd: listener on 127.0.0.1:%u\n",
			    ntohs(sin.sin_port));
	}
	sigwait(&set, &sig);
	for (i = 0; i < n; i++)
		MHD_stop_daemon(d[i]);
	return 0;
}
