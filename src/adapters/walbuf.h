/*
 * walbuf.h: a SQLite VFS that gathers a transaction's WAL writes.
 *
 * SQLite writes each WAL frame with two pwrite() calls (its 24-byte
 * header, then the page) and syncs the WAL once at commit.  With group
 * commit that is dozens of system calls per transaction, and on a
 * virtual machine each one is dear.  This VFS sits on top of another
 * one and, for WAL files only, keeps consecutive writes in memory until
 * SQLite next does anything else with that file; above all, until it
 * syncs it, where the gathered bytes go down in a few large writes (64
 * KiB each) just before the sync.  The file system sees the same bytes
 * at the same offsets, only in fewer calls, and everything is on disk
 * by the time the sync returns, as before.  Every other file (the
 * database itself, its shared-memory index, temporary files) is the
 * wrapped VFS's own file, untouched.
 *
 * Use it only for a connection that runs synchronous=FULL in WAL mode
 * with PRAGMA cache_spill=OFF: then SQLite writes to the WAL only in a
 * commit, and every commit ends with a sync of the WAL before SQLite
 * makes it visible to readers or lets another writer in.  A connection
 * with synchronous=NORMAL commits without a sync, so its frames could
 * sit here while readers already look for them; and one that spills a
 * large transaction into the WAL and then rolls it back never touches
 * the WAL again before releasing its lock, so the spilled frames would
 * go down later, over frames another writer has committed since.
 *
 * Hand-written because SQLite has no option to gather WAL writes.
 */
#ifndef RS_ADAPTERS_WALBUF_H
#define RS_ADAPTERS_WALBUF_H

/*
 * The name of a VFS that gathers WAL writes on top of the VFS that is
 * SQLite's default now, registered on first use (not as the default);
 * pass it to sqlite3_open_v2().  NULL if it cannot be registered: then
 * open with the default VFS, which is correct, only slower.
 * Thread-safe.  The returned string is static.
 */
const char	*walbuf_vfs(void);

#endif
