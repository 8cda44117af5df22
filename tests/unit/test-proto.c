/* Unit tests of the host protocol v1 codecs (sh4re/proto.c) against the recorded fixtures in
 * tests/fixtures/host-sock: decode, re-encode, and compare byte for byte. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cleanup.h"
#include "proto.h"
#include "testutil.h"

typedef enum {
        LIST_ROWS,      /* "agent_statuses": AgentStatusRow */
        LIST_APPROVALS, /* "approvals": Approval */
        LIST_NAMES,     /* "agents": strings */
        OBJ_URLS,       /* "urls": HiveUrls */
} FixtureKind;

static char *read_fixture(const char *name, size_t *ret_len)
{
        char *path = tu_fixture_path(name);
        char *content = tu_read_file(path, ret_len);
        if (!content)
                fail_msg("cannot read %s", path);
        free(path);
        return content;
}

static json_t *reencode_element(FixtureKind kind, const json_t *el)
{
        json_t *out = NULL;
        switch (kind) {
        case LIST_ROWS: {
                AgentStatusRow r;
                assert_int_equal(proto_agent_status_row_decode(el, &r), 0);
                out = proto_agent_status_row_encode(&r);
                agent_status_row_done(&r);
                break;
        }
        case LIST_APPROVALS: {
                Approval a;
                assert_int_equal(proto_approval_decode(el, &a), 0);
                out = proto_approval_encode(&a);
                approval_done(&a);
                break;
        }
        case LIST_NAMES:
                assert_true(json_is_string(el));
                out = json_string(json_string_value(el));
                break;
        case OBJ_URLS: {
                HiveUrls u;
                assert_int_equal(proto_urls_decode(el, &u), 0);
                out = proto_urls_encode(&u);
                hive_urls_done(&u);
                break;
        }
        }
        assert_non_null(out);
        return out;
}

/* Parses fixture name, rebuilds it from decoded wire types, and compares the bytes. */
static void check_fixture(const char *name, const char *key, FixtureKind kind)
{
        size_t want_len = 0;
        char *want = read_fixture(name, &want_len);
        assert_true(want_len > 0);
        assert_int_equal(want[want_len - 1], '\n');

        json_error_t err;
        json_t *in = json_loadb(want, want_len, 0, &err);
        if (!in)
                fail_msg("%s: %s", name, err.text);
        assert_int_equal(proto_response_check(in, NULL, NULL), 1);
        json_t *value = json_object_get(in, key);
        assert_non_null(value);

        json_t *resp = proto_response_new();
        assert_non_null(resp);
        json_t *out;
        if (kind == OBJ_URLS) {
                out = reencode_element(kind, value);
        } else {
                assert_true(json_is_array(value));
                assert_true(json_array_size(value) > 0);
                out = json_array();
                assert_non_null(out);
                size_t i;
                json_t *el;
                json_array_foreach(value, i, el)
                        assert_int_equal(json_array_append_new(out, reencode_element(kind, el)), 0);
        }
        assert_int_equal(json_object_set_new(resp, key, out), 0);

        size_t got_len = 0;
        char *got = proto_dump_line(resp, &got_len);
        assert_non_null(got);
        assert_int_equal(got_len, strlen(got));
        assert_string_equal(got, want);
        assert_int_equal(got_len, want_len);

        free(got);
        json_decref(resp);
        json_decref(in);
        free(want);
}

static void test_fixture_agent_status_grouped(void **state)
{
        check_fixture("agent_status_grouped.json", "agent_statuses", LIST_ROWS);
}

static void test_fixture_agent_status_precedence(void **state)
{
        check_fixture("agent_status_precedence.json", "agent_statuses", LIST_ROWS);
}

static void test_fixture_list(void **state)
{
        check_fixture("list.json", "agents", LIST_NAMES);
}

static void test_fixture_urls(void **state)
{
        check_fixture("urls.json", "urls", OBJ_URLS);
}

static void test_fixture_pending(void **state)
{
        check_fixture("pending.json", "approvals", LIST_APPROVALS);
}

static void test_fixture_error(void **state)
{
        size_t want_len = 0;
        char *want = read_fixture("error.json", &want_len);
        json_t *in = json_loadb(want, want_len, 0, NULL);
        assert_non_null(in);
        const char *msg = NULL, *code = "unset";
        assert_int_equal(proto_response_check(in, &msg, &code), 0);
        assert_string_equal(msg, "agent \"ghost\" is not managed by this hive");
        assert_null(code);

        json_t *resp = proto_error_new(msg, NULL);
        assert_non_null(resp);
        size_t got_len = 0;
        char *got = proto_dump_line(resp, &got_len);
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(got_len, want_len);
        free(got);
        json_decref(resp);
        json_decref(in);
        free(want);
}

/* ---- decoders ---- */

static const char full_row[] =
        "{\"name\":\"busy\",\"running\":true,\"failed\":false,\"needs_update\":true,"
        "\"needs_login\":false,\"deployed_sha\":\"1bfaf24abcde\",\"pending_reminders\":3,"
        "\"paused\":true,\"parent\":\"boss\",\"active_model\":\"m\",\"status_text\":\"t\","
        "\"status_set_at\":\"2026-09-07T12:34:56Z\",\"url\":\"https://h/agent/busy/\"}";

static const char minimal_row[] =
        "{\"name\":\"off\",\"running\":false,\"failed\":false,\"needs_update\":false,"
        "\"needs_login\":false,\"pending_reminders\":0,\"paused\":false}";

static const char full_approval[] =
        "{\"id\":7,\"agent\":\"a\",\"kind\":\"spawn\",\"commit_ref\":\"12\","
        "\"fetched_sha\":\"abc\",\"requested_at\":\"2026-09-12T09:15:00Z\","
        "\"status\":\"approved\",\"resolved_at\":\"2026-09-12T09:16:00Z\",\"note\":\"n\","
        "\"description\":\"d\"}";

static json_t *parse(const char *s)
{
        json_error_t err;
        json_t *j = json_loads(s, 0, &err);
        if (!j)
                fail_msg("bad test JSON: %s", err.text);
        return j;
}

static char *dump(const json_t *j)
{
        char *s = json_dumps(j, JSON_COMPACT);
        assert_non_null(s);
        return s;
}

/* A decoder call on j must fail with -EBADMSG and leave the output untouched. */
typedef int (*DecodeFn)(const json_t *j, void *ret);

static int decode_row(const json_t *j, void *ret)
{
        return proto_agent_status_row_decode(j, ret);
}

static int decode_approval(const json_t *j, void *ret)
{
        return proto_approval_decode(j, ret);
}

static int decode_urls(const json_t *j, void *ret)
{
        return proto_urls_decode(j, ret);
}

static void expect_refused(DecodeFn fn, const json_t *j, size_t size)
{
        unsigned char out[256], saved[256];
        assert_true(size <= sizeof(out));
        memset(out, 0xa5, sizeof(out));
        memcpy(saved, out, sizeof(out));
        assert_int_equal(fn(j, out), -EBADMSG);
        assert_memory_equal(out, saved, sizeof(out));
}

/* Replacing key's value by v (or deleting key when v is NULL) makes the decoder refuse. */
static void expect_refused_with(DecodeFn fn, const char *base, size_t size, const char *key,
                                json_t *v)
{
        json_t *j = parse(base);
        if (v)
                assert_int_equal(json_object_set_new(j, key, v), 0);
        else
                assert_int_equal(json_object_del(j, key), 0);
        expect_refused(fn, j, size);
        json_decref(j);
}

static void test_row_roundtrip_full(void **state)
{
        json_t *j = parse(full_row);
        AgentStatusRow r;
        assert_int_equal(proto_agent_status_row_decode(j, &r), 0);
        assert_string_equal(r.name, "busy");
        assert_true(r.running);
        assert_false(r.failed);
        assert_true(r.needs_update);
        assert_int_equal(r.pending_reminders, 3);
        assert_true(r.paused);
        assert_string_equal(r.parent, "boss");
        assert_string_equal(r.status_set_at, "2026-09-07T12:34:56Z");
        json_t *e = proto_agent_status_row_encode(&r);
        char *s = dump(e);
        assert_string_equal(s, full_row);
        free(s);
        json_decref(e);
        agent_status_row_done(&r);
        assert_null(r.name);
        assert_null(r.url);
        json_decref(j);
}

static void test_row_missing_mandatory(void **state)
{
        const char *mandatory[] = {"name",        "running",           "failed", "needs_update",
                                   "needs_login", "pending_reminders", "paused"};
        for (size_t i = 0; i < sizeof(mandatory) / sizeof(mandatory[0]); i++)
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), mandatory[i],
                                    NULL);
}

static void test_row_wrong_types(void **state)
{
        const char *strings[] = {"name",        "deployed_sha",  "parent", "active_model",
                                 "status_text", "status_set_at", "url"};
        for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), strings[i],
                                    json_integer(1));
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), strings[i],
                                    json_true());
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), strings[i],
                                    json_array());
        }
        const char *bools[] = {"running", "failed", "needs_update", "needs_login", "paused"};
        for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), bools[i],
                                    json_integer(1));
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), bools[i],
                                    json_string("true"));
                expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), bools[i],
                                    json_null());
        }
        expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), "pending_reminders",
                            json_real(1.5));
        expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), "pending_reminders",
                            json_string("3"));
        expect_refused_with(decode_row, full_row, sizeof(AgentStatusRow), "pending_reminders",
                            json_false());
}

static void test_decoders_refuse_non_objects(void **state)
{
        const char *inputs[] = {"[]", "[{\"name\":\"x\"}]"};
        for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
                json_t *j = parse(inputs[i]);
                expect_refused(decode_row, j, sizeof(AgentStatusRow));
                expect_refused(decode_approval, j, sizeof(Approval));
                expect_refused(decode_urls, j, sizeof(HiveUrls));
                json_decref(j);
        }
        json_t *s = json_string("x");
        expect_refused(decode_urls, s, sizeof(HiveUrls));
        json_decref(s);
        expect_refused(decode_urls, NULL, sizeof(HiveUrls));
}

static void test_row_unknown_keys_ignored(void **state)
{
        json_t *j = parse(minimal_row);
        assert_int_equal(json_object_set_new(j, "future_field", json_pack("{s:i}", "x", 1)), 0);
        assert_int_equal(json_object_set_new(j, "another", json_null()), 0);
        AgentStatusRow r;
        assert_int_equal(proto_agent_status_row_decode(j, &r), 0);
        json_t *e = proto_agent_status_row_encode(&r);
        char *s = dump(e);
        assert_string_equal(s, minimal_row);
        free(s);
        json_decref(e);
        agent_status_row_done(&r);
        json_decref(j);
}

static void test_row_optional_omitted(void **state)
{
        json_t *j = parse(minimal_row);
        AgentStatusRow r;
        memset(&r, 0xa5, sizeof(r));
        assert_int_equal(proto_agent_status_row_decode(j, &r), 0);
        assert_string_equal(r.name, "off");
        assert_null(r.deployed_sha);
        assert_null(r.parent);
        assert_null(r.active_model);
        assert_null(r.status_text);
        assert_null(r.status_set_at);
        assert_null(r.url);
        json_t *e = proto_agent_status_row_encode(&r);
        assert_int_equal(json_object_size(e), 7);
        assert_null(json_object_get(e, "deployed_sha"));
        assert_null(json_object_get(e, "url"));
        char *s = dump(e);
        assert_string_equal(s, minimal_row);
        free(s);
        json_decref(e);
        agent_status_row_done(&r);
        json_decref(j);
}

static void test_row_optional_null_is_unset(void **state)
{
        /* serde reads null as None for an Option; so do we, and we never write it. */
        json_t *j = parse(full_row);
        json_object_set_new(j, "parent", json_null());
        json_object_set_new(j, "url", json_null());
        AgentStatusRow r;
        assert_int_equal(proto_agent_status_row_decode(j, &r), 0);
        assert_null(r.parent);
        assert_null(r.url);
        json_t *e = proto_agent_status_row_encode(&r);
        assert_null(json_object_get(e, "parent"));
        assert_null(json_object_get(e, "url"));
        json_decref(e);
        agent_status_row_done(&r);
        json_decref(j);
}

static void test_row_encode_zero(void **state)
{
        /* A mandatory string left NULL is encoded as "", never null or omitted. */
        AgentStatusRow r = {0};
        json_t *e = proto_agent_status_row_encode(&r);
        char *s = dump(e);
        assert_string_equal(s, "{\"name\":\"\",\"running\":false,\"failed\":false,"
                               "\"needs_update\":false,\"needs_login\":false,"
                               "\"pending_reminders\":0,\"paused\":false}");
        free(s);
        json_decref(e);
}

static void test_approval_roundtrip(void **state)
{
        json_t *j = parse(full_approval);
        Approval a;
        assert_int_equal(proto_approval_decode(j, &a), 0);
        assert_int_equal(a.id, 7);
        assert_string_equal(a.note, "n");
        json_t *e = proto_approval_encode(&a);
        char *s = dump(e);
        assert_string_equal(s, full_approval);
        free(s);
        json_decref(e);
        approval_done(&a);
        json_decref(j);
}

static void test_approval_refused(void **state)
{
        const char *mandatory[] = {"id", "agent", "kind", "commit_ref", "requested_at", "status"};
        for (size_t i = 0; i < sizeof(mandatory) / sizeof(mandatory[0]); i++)
                expect_refused_with(decode_approval, full_approval, sizeof(Approval), mandatory[i],
                                    NULL);
        expect_refused_with(decode_approval, full_approval, sizeof(Approval), "id",
                            json_string("7"));
        expect_refused_with(decode_approval, full_approval, sizeof(Approval), "id", json_real(7.0));
        expect_refused_with(decode_approval, full_approval, sizeof(Approval), "agent",
                            json_integer(1));
        /* A wrong type after several strings were already copied must not leak them. */
        expect_refused_with(decode_approval, full_approval, sizeof(Approval), "description",
                            json_false());
}

static void test_approval_optional_omitted(void **state)
{
        const char *in = "{\"id\":8,\"agent\":\"b\",\"kind\":\"spawn\",\"commit_ref\":\"\","
                         "\"requested_at\":\"2026-09-12T09:20:00Z\",\"status\":\"pending\","
                         "\"unknown\":[1,2]}";
        json_t *j = parse(in);
        Approval a;
        assert_int_equal(proto_approval_decode(j, &a), 0);
        assert_null(a.fetched_sha);
        assert_null(a.resolved_at);
        assert_null(a.note);
        assert_null(a.description);
        json_t *e = proto_approval_encode(&a);
        char *s = dump(e);
        assert_string_equal(s, "{\"id\":8,\"agent\":\"b\",\"kind\":\"spawn\",\"commit_ref\":\"\","
                               "\"requested_at\":\"2026-09-12T09:20:00Z\","
                               "\"status\":\"pending\"}");
        free(s);
        json_decref(e);
        approval_done(&a);
        json_decref(j);
}

static void test_urls_optional(void **state)
{
        json_t *j = parse("{}");
        HiveUrls u;
        memset(&u, 0xa5, sizeof(u));
        assert_int_equal(proto_urls_decode(j, &u), 0);
        assert_null(u.domain);
        assert_null(u.home);
        assert_null(u.forge);
        assert_null(u.matrix);
        json_t *e = proto_urls_encode(&u);
        char *s = dump(e);
        assert_string_equal(s, "{}");
        free(s);
        json_decref(e);
        hive_urls_done(&u);
        json_decref(j);

        j = parse("{\"home\":\"https://h/\",\"extra\":1}");
        assert_int_equal(proto_urls_decode(j, &u), 0);
        e = proto_urls_encode(&u);
        s = dump(e);
        assert_string_equal(s, "{\"home\":\"https://h/\"}");
        free(s);
        json_decref(e);
        hive_urls_done(&u);
        json_decref(j);

        expect_refused_with(decode_urls, "{\"domain\":\"d\",\"home\":\"h\"}", sizeof(HiveUrls),
                            "home", json_integer(5));
}

/* ---- envelope ---- */

static void expect_line(json_t *j, const char *want)
{
        assert_non_null(j);
        size_t len = 0;
        char *got = proto_dump_line(j, &len);
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
        free(got);
        json_decref(j);
}

static void test_response_new(void **state)
{
        expect_line(proto_response_new(), "{\"version\":1,\"ok\":true}\n");
}

static void test_error_new(void **state)
{
        expect_line(proto_error_new("no such agent", "ENOENT"),
                    "{\"version\":1,\"ok\":false,\"error\":\"no such agent\","
                    "\"error_code\":\"ENOENT\"}\n");
        expect_line(proto_error_new("x", NULL), "{\"version\":1,\"ok\":false,\"error\":\"x\"}\n");
        expect_line(proto_error_new(NULL, NULL),
                    "{\"version\":1,\"ok\":false,\"error\":\"request refused\"}\n");
}

static void test_dump_line_no_len(void **state)
{
        json_t *j = proto_response_new();
        char *s = proto_dump_line(j, NULL);
        assert_string_equal(s, "{\"version\":1,\"ok\":true}\n");
        free(s);
        json_decref(j);
}

/* The line is what jansson's own compact dump says, byte for byte, plus the newline. */
static void expect_as_jansson(json_t *j)
{
        assert_non_null(j);
        char *want = json_dumps(j, JSON_COMPACT);
        assert_non_null(want);
        size_t len = 0;
        char *got = proto_dump_line(j, &len);
        assert_non_null(got);
        assert_int_equal(len, strlen(want) + 1);
        assert_memory_equal(got, want, len - 1);
        assert_int_equal(got[len - 1], '\n');
        assert_int_equal(got[len], '\0');
        free(got);
        free(want);
        json_decref(j);
}

static void test_dump_line_as_jansson(void **state)
{
        char every[128];
        for (int c = 1; c < 128; c++)
                every[c - 1] = (char)c;
        every[127] = '\0';
        char big[5000];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        big[100] = '"';
        big[4000] = '\n';

        expect_as_jansson(json_pack("{s:s}", "every", every));
        expect_as_jansson(json_pack("{s:s}", every, "the key"));
        expect_as_jansson(json_pack("{s:s, s:s}", "utf8",
                                    "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x90\x9d", "big", big));
        expect_as_jansson(json_pack("[s#, s, s]", "a\0b", (int)3, "", "/"));
        expect_as_jansson(json_pack("{s:I, s:I, s:I, s:I}", "zero", (json_int_t)0, "neg",
                                    (json_int_t)-1, "min", (json_int_t)INT64_MIN, "max",
                                    (json_int_t)INT64_MAX));
        expect_as_jansson(json_pack("[f, f, f, f, f]", 0.1, 1e300, -0.0, 3.0, -2.5e-7));
        expect_as_jansson(json_pack("{s:b, s:b, s:n}", "t", 1, "f", 0, "n"));
        expect_as_jansson(
                json_pack("{s:{}, s:[], s:[[], {}, [{s:[i]}]]}", "o", "a", "nest", "k", 1));
        expect_as_jansson(json_array());
        expect_as_jansson(json_object());

        /* Only containers, as json_dumps without JSON_ENCODE_ANY; nothing deeper than jansson
         * parses. */
        json_t *str = json_string("s");
        assert_null(proto_dump_line(str, NULL));
        json_decref(str);
        json_t *deep = json_array(), *inner = deep;
        for (int i = 0; i < PROTO_DUMP_DEPTH_MAX; i++) {
                json_t *a = json_array();
                json_array_append_new(inner, a);
                inner = a;
        }
        char *line = proto_dump_line(deep, NULL);
        assert_non_null(line);
        free(line);
        json_array_append_new(inner, json_array());
        assert_null(proto_dump_line(deep, NULL));
        json_decref(deep);
}

/* proto_parse_line gives what json_loadb(JSON_REJECT_DUPLICATES) gives: the same tree with
 * its keys in the same order, or the same refusal. */
static void expect_parse_as_jansson(const char *line, size_t len)
{
        json_error_t want_err, got_err;
        json_t *want = json_loadb(line, len, JSON_REJECT_DUPLICATES, &want_err);
        json_t *got = proto_parse_line(line, len, &got_err);
        if (!want) {
                assert_null(got);
                assert_string_equal(got_err.text, want_err.text);
                assert_int_equal(got_err.column, want_err.column);
                return;
        }
        assert_non_null(got);
        char *w = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(g, w);
        assert_true(json_equal(got, want));
        free(w);
        free(g);
        json_decref(want);
        json_decref(got);
}

static void test_parse_line_as_jansson(void **state)
{
        static const char *const lines[] = {
                "{\"cmd\":\"send\",\"version\":1,\"to\":\"r001\",\"body\":\"seq=1 from=s001 xxx\"}",
                " \t{ \"cmd\" : \"recv\" , \"wait_seconds\" : 30, \"max\": 1, \"ack\": [12, 13] "
                "}\r\n ",
                "{\"b\":\"caf\xc3\xa9 \xe2\x9c\x93 "
                "\xf0\x9f\x90\x9d\",\"k\\n\\\"y\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"}",
                "{\"u\":\"\\u00e9\\ud83d\\udc1d\",\"nul\":\"a\\u0000b\"}",
                "{\"a\":[],\"o\":{},\"n\":[true,false,null,[{\"x\":[-0,0,-12,999999999999999999]}]]"
                "}",
                "{\"big\":1234567890123456789,\"neg\":-9223372036854775808,\"over\":"
                "9223372036854775808}",
                "{\"r\":1.5,\"e\":1e3,\"E\":-2E-2,\"z\":0.0}",
                "[1,\"two\",{\"three\":3}]",
                "{}",
                "[]",
                /* refused, each by jansson and with its words */
                "",
                "   ",
                "\"just a string\"",
                "42",
                "{\"a\":1,\"a\":2}",
                "{\"a\":1,}",
                "[1,]",
                "{\"a\" 1}",
                "{\"a\":01}",
                "{\"a\":-}",
                "{\"a\":1.}",
                "{\"a\":tru}",
                "{\"a\":nul}",
                "{\"a\":\"\\x\"}",
                "{\"a\":\"\\u12\"}",
                "{\"a\":\"\\ud800\"}",
                "{\"a\":\"tab\there\"}",
                "{\"a\":\"\xc0\xaf\"}",
                "{\"a\":\"\xed\xa0\x80\"}",
                "{\"a\":\"\xf4\x90\x80\x80\"}",
                "{\"a\":\"\xe2\x9c\"}",
                "{\"a\":\"unterminated}",
                "{\"a\":1} trailing",
                "{\"a\":1}{\"b\":2}",
                "{\"a\":1",
                "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]"
                "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                "{\"\xff\":1}",
        };
        for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
                expect_parse_as_jansson(lines[i], strlen(lines[i]));
        /* A NUL byte inside or after the value; a long line with escapes (the scratch buffer
         * on the heap) and a long key. */
        expect_parse_as_jansson("{\"a\":\"x\0y\"}", 11);
        expect_parse_as_jansson("{\"a\":1}\0", 8);
        char big[3000];
        int n = snprintf(big, sizeof(big), "{\"body\":\"");
        for (int i = 0; i < 600; i++)
                n += snprintf(big + n, sizeof(big) - (size_t)n, "a\\\"");
        snprintf(big + n, sizeof(big) - (size_t)n, "\",\"%0200d\":1}", 7);
        expect_parse_as_jansson(big, strlen(big));
}

static void test_request_id_valid(void **state)
{
        assert_true(proto_request_id_valid("abcdefgh"));
        assert_true(proto_request_id_valid("AZaz09_-"));
        assert_true(proto_request_id_valid("0123456789abcdef0123456789abcdef"));
        char s[80];
        memset(s, 'x', sizeof(s));
        s[64] = '\0';
        assert_true(proto_request_id_valid(s));
        s[64] = 'x';
        s[65] = '\0';
        assert_false(proto_request_id_valid(s));         /* 65 */
        assert_false(proto_request_id_valid("abcdefg")); /* 7 */
        assert_false(proto_request_id_valid(""));
        assert_false(proto_request_id_valid(NULL));
        assert_false(proto_request_id_valid("abcd efgh"));
        assert_false(proto_request_id_valid("abcd.efgh"));
        assert_false(proto_request_id_valid("abcd/efgh"));
        assert_false(proto_request_id_valid("abcd\xc3\xa9"
                                            "fgh"));
        assert_false(proto_request_id_valid("abcdefgh\n"));
}

static void test_verb_takes_request_id(void **state)
{
        const char *yes[] = {"send",
                             "wake",
                             "ask",
                             "remind",
                             "request_spawn",
                             "request_apply_commit",
                             "request_update_meta_inputs"};
        const char *no[] = {"recv",    "ack",    "release", "answer", "cancel_loose_end",
                            "restart", "update", "kill",    "start",  "set_status",
                            "Send",    "",       "send "};
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                assert_true(proto_verb_takes_request_id(yes[i]));
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                assert_false(proto_verb_takes_request_id(no[i]));
        assert_false(proto_verb_takes_request_id(NULL));
}

static int check(const char *s, const char **ret_error, const char **ret_code)
{
        json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
        assert_non_null(j);
        int r = proto_response_check(j, ret_error, ret_code);
        json_decref(j);
        return r;
}

static void test_response_check(void **state)
{
        assert_int_equal(check("{\"version\":1,\"ok\":true,\"agents\":[]}", NULL, NULL), 1);
        /* A response without a version is taken as ours. */
        assert_int_equal(check("{\"ok\":true}", NULL, NULL), 1);

        json_t *j =
                parse("{\"version\":1,\"ok\":false,\"error\":\"nope\",\"error_code\":\"EPERM\"}");
        const char *err = NULL, *code = NULL;
        assert_int_equal(proto_response_check(j, &err, &code), 0);
        assert_string_equal(err, "nope");
        assert_string_equal(code, "EPERM");
        json_decref(j);

        j = parse("{\"version\":1,\"ok\":false}");
        err = NULL;
        code = "unset";
        assert_int_equal(proto_response_check(j, &err, &code), 0);
        assert_non_null(err);
        assert_true(strlen(err) > 0);
        assert_null(code);
        json_decref(j);

        const char *sentinel = "untouched";
        err = code = sentinel;
        assert_int_equal(check("{\"version\":99,\"ok\":true}", &err, &code), -EPROTONOSUPPORT);
        assert_int_equal(check("{\"version\":\"1\",\"ok\":true}", &err, &code), -EPROTONOSUPPORT);
        assert_int_equal(check("{\"version\":0,\"ok\":false,\"error\":\"x\"}", &err, &code),
                         -EPROTONOSUPPORT);
        assert_int_equal(check("{\"version\":1}", &err, &code), -EBADMSG);
        assert_int_equal(check("{\"version\":1,\"ok\":1}", &err, &code), -EBADMSG);
        assert_int_equal(check("{\"version\":1,\"ok\":\"true\"}", &err, &code), -EBADMSG);
        assert_int_equal(check("[{\"version\":1,\"ok\":true}]", &err, &code), -EBADMSG);
        assert_int_equal(check("\"ok\"", &err, &code), -EBADMSG);
        assert_int_equal(check("null", &err, &code), -EBADMSG);
        assert_ptr_equal(err, sentinel);
        assert_ptr_equal(code, sentinel);
        assert_int_equal(proto_response_check(NULL, &err, &code), -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fixture_agent_status_grouped),
                cmocka_unit_test(test_fixture_agent_status_precedence),
                cmocka_unit_test(test_fixture_list),
                cmocka_unit_test(test_fixture_urls),
                cmocka_unit_test(test_fixture_pending),
                cmocka_unit_test(test_fixture_error),
                cmocka_unit_test(test_row_roundtrip_full),
                cmocka_unit_test(test_row_missing_mandatory),
                cmocka_unit_test(test_row_wrong_types),
                cmocka_unit_test(test_decoders_refuse_non_objects),
                cmocka_unit_test(test_row_unknown_keys_ignored),
                cmocka_unit_test(test_row_optional_omitted),
                cmocka_unit_test(test_row_optional_null_is_unset),
                cmocka_unit_test(test_row_encode_zero),
                cmocka_unit_test(test_approval_roundtrip),
                cmocka_unit_test(test_approval_refused),
                cmocka_unit_test(test_approval_optional_omitted),
                cmocka_unit_test(test_urls_optional),
                cmocka_unit_test(test_response_new),
                cmocka_unit_test(test_error_new),
                cmocka_unit_test(test_dump_line_no_len),
                cmocka_unit_test(test_dump_line_as_jansson),
                cmocka_unit_test(test_parse_line_as_jansson),
                cmocka_unit_test(test_response_check),
                cmocka_unit_test(test_request_id_valid),
                cmocka_unit_test(test_verb_takes_request_id),
        };
        return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
