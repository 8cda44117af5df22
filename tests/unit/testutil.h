/* Helpers shared by the unit tests: temp dirs, recursive removal, fixture files. */
#pragma once

#include <stddef.h>
#include <sqlite3.h>
#include <stdint.h>

#include "store.h"

/* Creates a fresh directory under $TMPDIR (or /tmp).  Returns it malloc'ed; aborts on failure. */
char *tu_mkdtemp(void);

/* Removes path and everything below it (symlinks are not followed).  Returns 0 or a negative
 * errno. */
int tu_rm_rf(const char *path);

/* Reads a whole file.  Returns it malloc'ed and NUL-terminated (length in *ret_len when
 * non-NULL), or NULL with errno set. */
char *tu_read_file(const char *path, size_t *ret_len);

/* The path of fixture file name in tests/fixtures/host-sock ($FIXTURES, or the source tree's
 * copy when run by hand).  Returns it malloc'ed; aborts on failure. */
char *tu_fixture_path(const char *name);

/* Sleeps ms milliseconds, through signals. */
void tu_sleep_ms(long ms);

/* Writes a file (mode 0644).  Returns 0 or a negative errno. */
int tu_write_file(const char *path, const char *content);

/* A fresh temp dir with a database opened through store_open(): the cmocka state of the
 * store-level tests (setup/teardown functions for cmocka_unit_test_setup_teardown). */
typedef struct StoreFixture {
        char *dir;
        char *db;
        Store *store;
} StoreFixture;
int tu_store_setup(void **state);
int tu_store_teardown(void **state);

/* A one-value integer query on the store's own connection (sees uncommitted writes), with
 * arg bound to ?1 when the statement has a parameter.  NULL reads as -1. */
int64_t tu_sql_int(Store *s, const char *sql, int64_t arg);
/* The same on any connection (another one to the file sees committed data only). */
int64_t tu_db_int(sqlite3 *db, const char *sql, int64_t arg);
/* The same for a text column; returns it malloc'ed, or NULL for SQL NULL. */
char *tu_sql_text(Store *s, const char *sql, int64_t arg);
/* sqlite's VM steps run by the store's prepared statements since the last call, and resets
 * them: what a query costs, which a scan of a table's whole history multiplies. */
long tu_vm_steps(Store *s);
