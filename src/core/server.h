/*
 * server.h: `refundsync serve`: the daemon's lifecycle.
 *
 * Start-up (keys, store, migrations, listeners) fails fast with a log
 * line and exit status 1 or 2 before anything is served, with one
 * exception: a database that exists but cannot be written (a read-only
 * file, -wal, -shm, directory or mount) is served without a writer
 * (webhooks and /readyz 503) until the main loop, which tries every
 * second, can open it for writing.  Once running,
 * the main thread only waits for signals: SIGHUP reloads the config and
 * keys (swapped in only if valid), SIGTERM and SIGINT drain and stop.
 */
#ifndef RS_SERVER_H
#define RS_SERVER_H

#include "adapters/config.h"

/*
 * Run the daemon with cfg until a stop signal; returns the process exit
 * status (0 after a clean drain).  Takes ownership of cfg.
 */
int	server_run(struct config *cfg);

/*
 * Load one [wix] public_key_file value as the start and a reload do: a
 * file, or "credential:NAME", holding a PEM or base64-PEM RSA public key
 * (jwtverify.h), added to *keys (created if NULL).  RS_OK, or
 * RS_ERR_CONFIG and *why (caller frees; never the file's content).
 */
struct jwtv_keys;
enum rs_status	server_load_key(struct jwtv_keys **keys, const char *ref,
		    char **why /* OUT */);

#endif
