/* The WAL write-coalescing VFS shim (see walbuf.h). */
#define LOG_SUBSYSTEM "walbuf"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "walbuf.h"

#define WAL_HEADER       32 /* the WAL file's own header */
#define WAL_FRAME_HEADER 24 /* before each page; bytes 4..7: pages after a commit, else 0 */
/* A larger transaction is written in pieces of this size: sqlite's unix VFS writes at most
 * 128 KiB per call (it masks larger lengths) and reports a short write as a full disk. */
#define WALBUF_MAX (64u * 1024u)

typedef struct WalBufFile WalBufFile;
struct WalBufFile {
        sqlite3_file base; /* must be first: sqlite hands us this */
        sqlite3_file *real;
        bool wal;
        bool commit_page_next; /* the last write was a commit frame's header */
        unsigned char *buf;
        size_t len, cap;
        sqlite3_int64 start; /* file offset of buf[0] */
        int error;           /* a write-out that failed where it could not be reported */
        WalBufFile *next_held, *prev_held; /* in `held` while len > 0 */
};

/* Every buffer that holds bytes, for the barrier's safety net.  The lock also guards each
 * file's buffer: the net may write out another thread's buffer. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static WalBufFile *held;
static int nheld;                              /* atomic reads outside the lock */
static uint64_t stat_writes, stat_file_writes; /* under lock */

static sqlite3_vfs *base_of(sqlite3_vfs *vfs)
{
        return vfs->pAppData;
}

static const sqlite3_io_methods *real_of(WalBufFile *f)
{
        return f->real->pMethods;
}

/* Writes the buffer out.  Called with the lock held. */
static int write_out(WalBufFile *f)
{
        if (f->len == 0)
                return SQLITE_OK;
        int rc = real_of(f)->xWrite(f->real, f->buf, (int)f->len, f->start);
        stat_file_writes++;
        f->len = 0;
        if (f->prev_held)
                f->prev_held->next_held = f->next_held;
        else
                held = f->next_held;
        if (f->next_held)
                f->next_held->prev_held = f->prev_held;
        f->next_held = f->prev_held = NULL;
        __atomic_store_n(&nheld, nheld - 1, __ATOMIC_RELEASE);
        return rc;
}

/* Appends to the buffer, which is empty or ends at off.  Returns false when it cannot grow. */
static bool append(WalBufFile *f, const void *data, size_t amt, sqlite3_int64 off)
{
        if (f->len + amt > f->cap) {
                size_t cap = f->cap ? f->cap : 16u * 1024u;
                while (cap < f->len + amt)
                        cap *= 2;
                unsigned char *b = realloc(f->buf, cap);
                if (!b)
                        return false;
                f->buf = b;
                f->cap = cap;
        }
        if (f->len == 0) {
                f->start = off;
                f->next_held = held;
                f->prev_held = NULL;
                if (held)
                        held->prev_held = f;
                held = f;
                __atomic_store_n(&nheld, nheld + 1, __ATOMIC_RELEASE);
        }
        memcpy(f->buf + f->len, data, amt);
        f->len += amt;
        return true;
}

static bool is_commit_header(const void *data, int amt, sqlite3_int64 off)
{
        const unsigned char *p = data;
        return amt == WAL_FRAME_HEADER && off >= WAL_HEADER && (p[4] | p[5] | p[6] | p[7]) != 0;
}

static int wal_write(WalBufFile *f, const void *data, int amt, sqlite3_int64 off)
{
        pthread_mutex_lock(&lock);
        stat_writes++;
        int rc = f->error;
        if (rc == SQLITE_OK && f->len > 0 &&
            (off != f->start + (sqlite3_int64)f->len || f->len + (size_t)amt > WALBUF_MAX))
                rc = write_out(f);
        if (rc == SQLITE_OK && ((size_t)amt > WALBUF_MAX || !append(f, data, (size_t)amt, off))) {
                rc = write_out(f); /* keep the order of the writes */
                if (rc == SQLITE_OK) {
                        rc = real_of(f)->xWrite(f->real, data, amt, off);
                        stat_file_writes++;
                }
        }
        /* The commit frame's page completes the transaction: out with it now, so that the
         * commit is in the file before sqlite publishes it, and an error fails the commit. */
        bool header = is_commit_header(data, amt, off);
        if (rc == SQLITE_OK && f->commit_page_next && !header)
                rc = write_out(f);
        f->commit_page_next = header;
        pthread_mutex_unlock(&lock);
        return rc;
}

/* Writes the buffer out before an operation that must see the file as sqlite wrote it. */
static int settle(WalBufFile *f)
{
        if (!f->wal)
                return SQLITE_OK;
        pthread_mutex_lock(&lock);
        int rc = f->error;
        if (rc == SQLITE_OK)
                rc = write_out(f);
        pthread_mutex_unlock(&lock);
        return rc;
}

/* ---- io methods: the WAL's buffered, everything else passed through ---- */

static int wb_close(sqlite3_file *file)
{
        WalBufFile *f = (WalBufFile *)file;
        int rc = settle(f);
        free(f->buf);
        f->buf = NULL;
        int rc2 = real_of(f)->xClose(f->real);
        return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *file, void *data, int amt, sqlite3_int64 off)
{
        WalBufFile *f = (WalBufFile *)file;
        int rc = settle(f);
        return rc != SQLITE_OK ? rc : real_of(f)->xRead(f->real, data, amt, off);
}

static int wb_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
        WalBufFile *f = (WalBufFile *)file;
        if (f->wal)
                return wal_write(f, data, amt, off);
        return real_of(f)->xWrite(f->real, data, amt, off);
}

static int wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
        WalBufFile *f = (WalBufFile *)file;
        int rc = settle(f);
        return rc != SQLITE_OK ? rc : real_of(f)->xTruncate(f->real, size);
}

static int wb_sync(sqlite3_file *file, int flags)
{
        WalBufFile *f = (WalBufFile *)file;
        int rc = settle(f);
        return rc != SQLITE_OK ? rc : real_of(f)->xSync(f->real, flags);
}

static int wb_file_size(sqlite3_file *file, sqlite3_int64 *ret)
{
        WalBufFile *f = (WalBufFile *)file;
        int rc = settle(f);
        return rc != SQLITE_OK ? rc : real_of(f)->xFileSize(f->real, ret);
}

static int wb_lock(sqlite3_file *file, int level)
{
        WalBufFile *f = (WalBufFile *)file;
        return real_of(f)->xLock(f->real, level);
}

static int wb_unlock(sqlite3_file *file, int level)
{
        WalBufFile *f = (WalBufFile *)file;
        return real_of(f)->xUnlock(f->real, level);
}

static int wb_check_reserved_lock(sqlite3_file *file, int *ret)
{
        WalBufFile *f = (WalBufFile *)file;
        return real_of(f)->xCheckReservedLock(f->real, ret);
}

static int wb_file_control(sqlite3_file *file, int op, void *arg)
{
        WalBufFile *f = (WalBufFile *)file;
        int rc = settle(f);
        return rc != SQLITE_OK ? rc : real_of(f)->xFileControl(f->real, op, arg);
}

static int wb_sector_size(sqlite3_file *file)
{
        WalBufFile *f = (WalBufFile *)file;
        return real_of(f)->xSectorSize(f->real);
}

static int wb_device_characteristics(sqlite3_file *file)
{
        WalBufFile *f = (WalBufFile *)file;
        return real_of(f)->xDeviceCharacteristics(f->real);
}

static int wb_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **ret)
{
        WalBufFile *f = (WalBufFile *)file;
        if (real_of(f)->iVersion < 2)
                return SQLITE_IOERR_SHMMAP;
        return real_of(f)->xShmMap(f->real, region, size, extend, ret);
}

static int wb_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
        WalBufFile *f = (WalBufFile *)file;
        if (real_of(f)->iVersion < 2)
                return SQLITE_IOERR_SHMLOCK;
        return real_of(f)->xShmLock(f->real, offset, n, flags);
}

/* sqlite raises a barrier just before it publishes a commit in the wal-index.  Normally every
 * buffer is empty by then; should one not be (a write pattern this shim does not know), it
 * goes out here, whoever's it is.  An error cannot be returned from here: it is kept and fails
 * that file's next operation. */
static void wb_shm_barrier(sqlite3_file *file)
{
        WalBufFile *f = (WalBufFile *)file;
        if (__atomic_load_n(&nheld, __ATOMIC_ACQUIRE) > 0) {
                pthread_mutex_lock(&lock);
                while (held) {
                        WalBufFile *h = held;
                        int rc = write_out(h);
                        if (rc != SQLITE_OK && h->error == SQLITE_OK) {
                                h->error = rc;
                                log_error("cannot write WAL frames out (sqlite error %d): "
                                          "later writes to this database will fail",
                                          rc);
                        }
                }
                pthread_mutex_unlock(&lock);
        }
        if (real_of(f)->iVersion >= 2)
                real_of(f)->xShmBarrier(f->real);
}

static int wb_shm_unmap(sqlite3_file *file, int delete_flag)
{
        WalBufFile *f = (WalBufFile *)file;
        if (real_of(f)->iVersion < 2)
                return SQLITE_OK;
        return real_of(f)->xShmUnmap(f->real, delete_flag);
}

static int wb_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **ret)
{
        WalBufFile *f = (WalBufFile *)file;
        *ret = NULL;
        int rc = settle(f);
        if (rc != SQLITE_OK || real_of(f)->iVersion < 3)
                return rc;
        return real_of(f)->xFetch(f->real, off, amt, ret);
}

static int wb_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
        WalBufFile *f = (WalBufFile *)file;
        if (real_of(f)->iVersion < 3)
                return SQLITE_OK;
        return real_of(f)->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods io_methods = {
        .iVersion = 3,
        .xClose = wb_close,
        .xRead = wb_read,
        .xWrite = wb_write,
        .xTruncate = wb_truncate,
        .xSync = wb_sync,
        .xFileSize = wb_file_size,
        .xLock = wb_lock,
        .xUnlock = wb_unlock,
        .xCheckReservedLock = wb_check_reserved_lock,
        .xFileControl = wb_file_control,
        .xSectorSize = wb_sector_size,
        .xDeviceCharacteristics = wb_device_characteristics,
        .xShmMap = wb_shm_map,
        .xShmLock = wb_shm_lock,
        .xShmBarrier = wb_shm_barrier,
        .xShmUnmap = wb_shm_unmap,
        .xFetch = wb_fetch,
        .xUnfetch = wb_unfetch,
};

/* ---- the VFS: opens wrap the base's files, the rest is the base's ---- */

static int wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                   int *ret_flags)
{
        WalBufFile *f = (WalBufFile *)file;
        memset(f, 0, sizeof(*f));
        f->real = (sqlite3_file *)(f + 1);
        f->wal = (flags & SQLITE_OPEN_WAL) != 0;
        int rc = base_of(vfs)->xOpen(base_of(vfs), name, f->real, flags, ret_flags);
        /* sqlite calls xClose only when pMethods is set: leave it unset on failure. */
        if (f->real->pMethods)
                f->base.pMethods = &io_methods;
        return rc;
}

static int wb_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
        return base_of(vfs)->xDelete(base_of(vfs), name, sync_dir);
}

static int wb_access(sqlite3_vfs *vfs, const char *name, int flags, int *ret)
{
        return base_of(vfs)->xAccess(base_of(vfs), name, flags, ret);
}

static int wb_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
        return base_of(vfs)->xFullPathname(base_of(vfs), name, n, out);
}

static void *wb_dl_open(sqlite3_vfs *vfs, const char *name)
{
        return base_of(vfs)->xDlOpen(base_of(vfs), name);
}

static void wb_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
        base_of(vfs)->xDlError(base_of(vfs), n, msg);
}

static void (*wb_dl_sym(sqlite3_vfs *vfs, void *handle, const char *sym))(void)
{
        return base_of(vfs)->xDlSym(base_of(vfs), handle, sym);
}

static void wb_dl_close(sqlite3_vfs *vfs, void *handle)
{
        base_of(vfs)->xDlClose(base_of(vfs), handle);
}

static int wb_randomness(sqlite3_vfs *vfs, int n, char *out)
{
        return base_of(vfs)->xRandomness(base_of(vfs), n, out);
}

static int wb_sleep(sqlite3_vfs *vfs, int us)
{
        return base_of(vfs)->xSleep(base_of(vfs), us);
}

static int wb_current_time(sqlite3_vfs *vfs, double *ret)
{
        return base_of(vfs)->xCurrentTime(base_of(vfs), ret);
}

static int wb_get_last_error(sqlite3_vfs *vfs, int n, char *msg)
{
        return base_of(vfs)->xGetLastError ? base_of(vfs)->xGetLastError(base_of(vfs), n, msg) : 0;
}

static int wb_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *ret)
{
        sqlite3_vfs *b = base_of(vfs);
        if (b->iVersion >= 2 && b->xCurrentTimeInt64)
                return b->xCurrentTimeInt64(b, ret);
        double t = 0;
        int rc = b->xCurrentTime(b, &t);
        *ret = (sqlite3_int64)(t * 86400000.0);
        return rc;
}

int walbuf_register(const char *name, const char *base_name)
{
        static pthread_mutex_t reg = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&reg);
        int r = 0;
        sqlite3_vfs *base = sqlite3_vfs_find(base_name);
        if (sqlite3_vfs_find(name))
                goto out;
        if (!base) {
                r = -ENOENT;
                goto out;
        }
        sqlite3_vfs *vfs = calloc(1, sizeof(*vfs));
        char *copy = strdup(name);
        if (!vfs || !copy) {
                free(vfs);
                free(copy);
                r = -ENOMEM;
                goto out;
        }
        *vfs = (sqlite3_vfs){
                .iVersion = 2,
                .szOsFile = (int)sizeof(WalBufFile) + base->szOsFile,
                .mxPathname = base->mxPathname,
                .zName = copy,
                .pAppData = base,
                .xOpen = wb_open,
                .xDelete = wb_delete,
                .xAccess = wb_access,
                .xFullPathname = wb_full_pathname,
                .xDlOpen = wb_dl_open,
                .xDlError = wb_dl_error,
                .xDlSym = wb_dl_sym,
                .xDlClose = wb_dl_close,
                .xRandomness = wb_randomness,
                .xSleep = wb_sleep,
                .xCurrentTime = wb_current_time,
                .xGetLastError = wb_get_last_error,
                .xCurrentTimeInt64 = wb_current_time_int64,
        };
        if (sqlite3_vfs_register(vfs, 0) != SQLITE_OK) {
                free(copy);
                free(vfs);
                r = -ENOMEM;
        }
        /* Registered VFSes live as long as the process. */
out:
        pthread_mutex_unlock(&reg);
        return r;
}

void walbuf_stats(uint64_t *ret_writes, uint64_t *ret_file_writes)
{
        pthread_mutex_lock(&lock);
        *ret_writes = stat_writes;
        *ret_file_writes = stat_file_writes;
        pthread_mutex_unlock(&lock);
}
