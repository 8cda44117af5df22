/* A sqlite VFS shim that turns each transaction's WAL writes into one write.
 *
 * sqlite writes every WAL frame as two writes (its 24-byte header, then the page), so a commit
 * of ten pages costs twenty write(2) calls.  Over this VFS, the writes to a WAL file collect in
 * a buffer and go to the file in one write when the transaction's commit frame is complete, or
 * earlier when anything reads, syncs, sizes or truncates the file, or a write does not follow
 * on.  A commit is therefore in the file (page cache) before sqlite publishes it in the
 * wal-index, and an error writing it fails the commit as before.  As a safety net, any
 * connection's shared-memory barrier (sqlite raises one just before it publishes a commit)
 * writes out every buffer still holding bytes.  Everything else passes through unchanged. */
#pragma once

#include <stdint.h>

/* Registers a VFS named `name` over the VFS `base` (NULL: sqlite's default).  Not the default
 * VFS: open with it by name.  Registering a name twice is a no-op.  Returns 0 or -ENOMEM. */
int walbuf_register(const char *name, const char *base);

/* Process-wide counts since start: WAL writes sqlite made, and writes that reached the file. */
void walbuf_stats(uint64_t *ret_writes, uint64_t *ret_file_writes);
