/* libFuzzer target: bytes from a client, through the line framer, into the host.sock
 * dispatcher.
 *
 * The input is pushed into a LineFramer in chunks whose sizes derive from the input itself,
 * every complete line is dispatched with host_verb_table against a Daemon set up once (temp
 * state dir, in-memory store with a few agents), and the run aborts when:
 *   - the framer returns other lines than a plain split on '\n' of the input would, or misses
 *     an oversize line, or returns a line after one;
 *   - a response is not one line of JSON ending in exactly one '\n', not an object, lacks
 *     "version":1 or a boolean "ok", or disagrees with dispatch_line()'s return value;
 *   - proto_parse_line() of a line differs from jansson's json_loadb(), or proto_dump_line()
 *     of what it parsed from jansson's json_dumps(JSON_COMPACT). */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actions.h"
#include "daemon.h"
#include "dispatch.h"
#include "errors.h"
#include "frame.h"
#include "host_verbs.h"
#include "log.h"
#include "proto.h"
#include "store.h"

/* Smaller than HIVE_LINE_MAX so that oversize lines are within the fuzzer's reach. */
#define FUZZ_LINE_MAX  1024
#define FUZZ_CHUNK_MAX (4 * FUZZ_LINE_MAX)

static HiveConfig cfg;
static Daemon daemon_state;
static char state_dir[] = "/tmp/hive-fuzz-XXXXXX";

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-dispatch: check failed at %s:%d: %s\n", __FILE__,    \
                                __LINE__, #cond);                                                  \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)(type == FTW_DP ? rmdir(path) : unlink(path));
        return 0;
}

static void cleanup_state_dir(void)
{
        daemon_state.actions = actions_free(daemon_state.actions);
        daemon_state.store = store_close(daemon_state.store);
        nftw(state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup_once(void)
{
        static bool done = false;
        if (done)
                return;
        done = true;

        log_set_max_level(LOG_CRIT); /* handlers log each change; keep libFuzzer's output */
        CHECK(mkdtemp(state_dir));
        cfg.state_dir = state_dir;
        cfg.nixos_container = "nixos-container";
        cfg.templates_dir = state_dir;
        cfg.domain = "hive.local";
        cfg.home_url = "https://hive.local/";
        daemon_state = (Daemon){
                .cfg = &cfg,
                .backend = "process",
                .backend_reason = "fuzzing",
                .admin_gid = (gid_t)-1,
                .lock_fd = -1,
                .signal_fd = -1,
        };
        CHECK(store_open(":memory:", &daemon_state.store) == 0);
        CHECK(actions_new(&daemon_state, &daemon_state.actions) == 0);
        const AgentRecord agents[] = {
                {.name = "a", .status = "running", .status_text = "busy", .status_set_at = 1},
                {.name = "b-1", .status = "stopped", .deployed_sha = "0123456789abcdef0123"},
                {.name = "c", .status = "failed", .parent = "a", .active_model = "m"},
                {.name = "zzzzzzzzz", .status = "running", .paused = true},
        };
        for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++)
                CHECK(store_agent_insert(daemon_state.store, &agents[i]) == 0);
        atexit(cleanup_state_dir);
}

/* Checks one response from dispatch_line(). */
static void check_response(int r, const char *out, size_t out_len, const VerbSpec *verb)
{
        CHECK(r == 0 || r == 1);
        CHECK(out);
        CHECK(out_len >= 2);
        CHECK(strlen(out) == out_len);
        CHECK(out[out_len - 1] == '\n');
        CHECK(!memchr(out, '\n', out_len - 1));
        CHECK(strncmp(out, "{\"version\":1,\"ok\":", 18) == 0);

        json_error_t err;
        json_t *j = json_loadb(out, out_len - 1, JSON_REJECT_DUPLICATES, &err);
        CHECK(j);
        CHECK(json_is_object(j));
        json_t *version = json_object_get(j, "version");
        CHECK(json_is_integer(version) && json_integer_value(version) == HIVE_PROTOCOL_VERSION);
        json_t *ok = json_object_get(j, "ok");
        CHECK(json_is_boolean(ok));
        CHECK(json_is_true(ok) == (r == 1));
        const char *e = NULL, *code = NULL;
        CHECK(proto_response_check(j, &e, &code) == r);
        if (r == 1) {
                CHECK(verb);
                CHECK(!json_object_get(j, "error"));
        } else {
                CHECK(!verb);
                CHECK(json_is_string(json_object_get(j, "error")));
                CHECK(code && hive_errno_from_name(code) > 0);
        }
        json_decref(j);
}

/* proto_parse_line, which reads every request, gives what jansson gives (the same tree, keys
 * in the same order, or a refusal), and proto_dump_line, which writes every response, writes
 * what jansson's compact dump writes. */
static void check_json(const char *line, size_t len)
{
        json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *fast = proto_parse_line(line, len, NULL);
        CHECK(!j == !fast);
        if (!j)
                return;
        char *want = json_dumps(j, JSON_COMPACT);
        char *parsed = json_dumps(fast, JSON_COMPACT);
        size_t got_len = 0;
        char *got = proto_dump_line(j, &got_len);
        if (want) {
                CHECK(parsed && strcmp(parsed, want) == 0 && json_equal(fast, j));
                CHECK(got && got_len == strlen(want) + 1);
                CHECK(memcmp(got, want, got_len - 1) == 0 && got[got_len - 1] == '\n');
        }
        free(got);
        free(parsed);
        free(want);
        json_decref(fast);
        json_decref(j);
}

static void dispatch_one(const char *line, size_t len)
{
        check_json(line, len);
        char *out = NULL;
        size_t out_len = 0;
        const VerbSpec *verb = NULL;
        int r = dispatch_line(&host_verb_table, &daemon_state, NULL, line, len, &out, &out_len,
                              &verb);
        CHECK(r != -ENOMEM || !out);
        if (r == -ENOMEM)
                return; /* only under allocation failure */
        check_response(r, out, out_len, verb);
        free(out);
}

/* The reference split: the index of the first line longer than the limit (a trailing partial
 * line counts), or SIZE_MAX. */
static size_t first_oversize_line(const uint8_t *data, size_t size)
{
        size_t line = 0, start = 0;
        for (size_t i = 0; i <= size; i++) {
                if (i == size || data[i] == '\n') {
                        if (i - start > FUZZ_LINE_MAX)
                                return line;
                        line++;
                        start = i + 1;
                }
        }
        return SIZE_MAX;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        setup_once();

        /* Chunk sizes from a generator seeded by the input, so that one input always splits
         * the same way and different inputs split differently. */
        uint64_t seed = 0xcbf29ce484222325u;
        for (size_t i = 0; i < size; i++)
                seed = (seed ^ data[i]) * 0x100000001b3u;
        seed |= 1;

        size_t oversize = first_oversize_line(data, size);
        LineFramer f;
        framer_init(&f, FUZZ_LINE_MAX);
        size_t off = 0, next_line = 0, line_start = 0;
        bool failed = false;
        while (off < size && !failed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                size_t chunk = (seed >> 8) % 8 == 0 ? 1 + (seed >> 16) % FUZZ_CHUNK_MAX
                                                    : 1 + (seed >> 16) % 64;
                if (chunk > size - off)
                        chunk = size - off;
                int r = framer_push(&f, data + off, chunk);
                if (r < 0) {
                        CHECK(r == -EMSGSIZE);
                        CHECK(oversize != SIZE_MAX);
                        failed = true;
                        break;
                }
                off += chunk;

                char *line;
                size_t len;
                while ((r = framer_pop(&f, &line, &len)) > 0) {
                        /* The framer returns exactly the next line of the input. */
                        CHECK(next_line < oversize);
                        CHECK(len <= FUZZ_LINE_MAX);
                        CHECK(line_start + len < size && data[line_start + len] == '\n');
                        CHECK(memcmp(line, data + line_start, len) == 0);
                        CHECK(line[len] == '\0');
                        dispatch_one(line, len);
                        next_line++;
                        line_start += len + 1;
                }
                CHECK(r == 0);
        }
        if (failed) {
                char *line;
                size_t len;
                CHECK(framer_pop(&f, &line, &len) == -EMSGSIZE);
                CHECK(framer_push(&f, "x\n", 2) == -EMSGSIZE);
                CHECK(next_line <= oversize);
        } else {
                /* Everything was accepted: no line was oversize, and what is left is the
                 * unterminated tail. */
                CHECK(oversize == SIZE_MAX);
                CHECK(framer_pending(&f) == size - line_start);
        }
        /* At most a partial line and one chunk are ever buffered together. */
        CHECK(f.cap <= 2 * (FUZZ_LINE_MAX + FUZZ_CHUNK_MAX));
        framer_done(&f);
        return 0;
}
