/* Wire types of the host protocol, described by field tables so that one encoder and one
 * decoder serve every type and the key order lives in exactly one place. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "proto.h"

typedef enum {
        WF_STR,     /* string, always present */
        WF_OPT_STR, /* string, omitted when NULL */
        WF_BOOL,
        WF_I64,
} WireFieldType;

typedef struct WireField {
        const char *key;
        WireFieldType type;
        size_t offset;
} WireField;

#define F(s, k, t, m)                                                                              \
        {                                                                                          \
                k, t, offsetof(s, m)                                                               \
        }

static const WireField agent_status_row_fields[] = {
        F(AgentStatusRow, "name", WF_STR, name),
        F(AgentStatusRow, "running", WF_BOOL, running),
        F(AgentStatusRow, "failed", WF_BOOL, failed),
        F(AgentStatusRow, "needs_update", WF_BOOL, needs_update),
        F(AgentStatusRow, "needs_login", WF_BOOL, needs_login),
        F(AgentStatusRow, "deployed_sha", WF_OPT_STR, deployed_sha),
        F(AgentStatusRow, "pending_reminders", WF_I64, pending_reminders),
        F(AgentStatusRow, "paused", WF_BOOL, paused),
        F(AgentStatusRow, "parent", WF_OPT_STR, parent),
        F(AgentStatusRow, "active_model", WF_OPT_STR, active_model),
        F(AgentStatusRow, "status_text", WF_OPT_STR, status_text),
        F(AgentStatusRow, "status_set_at", WF_OPT_STR, status_set_at),
        F(AgentStatusRow, "url", WF_OPT_STR, url),
        {NULL, 0, 0},
};

static const WireField urls_fields[] = {
        F(HiveUrls, "domain", WF_OPT_STR, domain),
        F(HiveUrls, "home", WF_OPT_STR, home),
        F(HiveUrls, "forge", WF_OPT_STR, forge),
        F(HiveUrls, "matrix", WF_OPT_STR, matrix),
        {NULL, 0, 0},
};

static const WireField approval_fields[] = {
        F(Approval, "id", WF_I64, id),
        F(Approval, "agent", WF_STR, agent),
        F(Approval, "kind", WF_STR, kind),
        F(Approval, "commit_ref", WF_STR, commit_ref),
        F(Approval, "fetched_sha", WF_OPT_STR, fetched_sha),
        F(Approval, "requested_at", WF_STR, requested_at),
        F(Approval, "status", WF_STR, status),
        F(Approval, "resolved_at", WF_OPT_STR, resolved_at),
        F(Approval, "note", WF_OPT_STR, note),
        F(Approval, "description", WF_OPT_STR, description),
        {NULL, 0, 0},
};

#define AT(base, off, type)  ((type *)((char *)(base) + (off)))
#define CAT(base, off, type) ((const type *)((const char *)(base) + (off)))

static void wire_done(const WireField *fields, void *obj)
{
        for (const WireField *f = fields; f->key; f++)
                if (f->type == WF_STR || f->type == WF_OPT_STR) {
                        char **p = AT(obj, f->offset, char *);
                        free(*p);
                        *p = NULL;
                }
}

static json_t *wire_encode(const WireField *fields, const void *obj)
{
        json_t *j = json_object();
        if (!j)
                return NULL;
        for (const WireField *f = fields; f->key; f++) {
                json_t *v = NULL;
                switch (f->type) {
                case WF_STR: {
                        const char *s = *CAT(obj, f->offset, char *);
                        v = json_string(s ? s : "");
                        break;
                }
                case WF_OPT_STR: {
                        const char *s = *CAT(obj, f->offset, char *);
                        if (!s)
                                continue;
                        v = json_string(s);
                        break;
                }
                case WF_BOOL:
                        v = json_boolean(*CAT(obj, f->offset, bool));
                        break;
                case WF_I64:
                        v = json_integer(*CAT(obj, f->offset, int64_t));
                        break;
                }
                if (!v || json_object_set_new(j, f->key, v) < 0) {
                        json_decref(j);
                        return NULL;
                }
        }
        return j;
}

/* Decodes into tmp (zeroed, same type as the target), then copies on success. */
static int wire_decode(const WireField *fields, const json_t *j, void *tmp, void *ret, size_t size)
{
        if (!json_is_object(j))
                return -EBADMSG;
        for (const WireField *f = fields; f->key; f++) {
                json_t *v = json_object_get(j, f->key);
                if (!v || (json_is_null(v) && f->type == WF_OPT_STR)) {
                        if (f->type == WF_OPT_STR)
                                continue;
                        goto fail;
                }
                switch (f->type) {
                case WF_STR:
                case WF_OPT_STR: {
                        if (!json_is_string(v))
                                goto fail;
                        char *s = strdup(json_string_value(v));
                        if (!s) {
                                wire_done(fields, tmp);
                                return -ENOMEM;
                        }
                        *AT(tmp, f->offset, char *) = s;
                        break;
                }
                case WF_BOOL:
                        if (!json_is_boolean(v))
                                goto fail;
                        *AT(tmp, f->offset, bool) = json_is_true(v);
                        break;
                case WF_I64:
                        if (!json_is_integer(v))
                                goto fail;
                        *AT(tmp, f->offset, int64_t) = json_integer_value(v);
                        break;
                }
        }
        memcpy(ret, tmp, size);
        return 0;
fail:
        wire_done(fields, tmp);
        return -EBADMSG;
}

void agent_status_row_done(AgentStatusRow *r)
{
        wire_done(agent_status_row_fields, r);
}

void hive_urls_done(HiveUrls *u)
{
        wire_done(urls_fields, u);
}

void approval_done(Approval *a)
{
        wire_done(approval_fields, a);
}

json_t *proto_agent_status_row_encode(const AgentStatusRow *r)
{
        return wire_encode(agent_status_row_fields, r);
}

json_t *proto_urls_encode(const HiveUrls *u)
{
        return wire_encode(urls_fields, u);
}

json_t *proto_approval_encode(const Approval *a)
{
        return wire_encode(approval_fields, a);
}

int proto_agent_status_row_decode(const json_t *j, AgentStatusRow *ret)
{
        AgentStatusRow tmp = {0};
        return wire_decode(agent_status_row_fields, j, &tmp, ret, sizeof(tmp));
}

int proto_urls_decode(const json_t *j, HiveUrls *ret)
{
        HiveUrls tmp = {0};
        return wire_decode(urls_fields, j, &tmp, ret, sizeof(tmp));
}

int proto_approval_decode(const json_t *j, Approval *ret)
{
        Approval tmp = {0};
        return wire_decode(approval_fields, j, &tmp, ret, sizeof(tmp));
}

bool proto_request_id_valid(const char *s)
{
        size_t n = s ? strlen(s) : 0;
        if (n < PROTO_REQUEST_ID_MIN || n > PROTO_REQUEST_ID_MAX)
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

bool proto_verb_takes_request_id(const char *cmd)
{
        static const char *const verbs[] = {
                "send",
                "wake",
                "ask",
                "remind",
                "request_spawn",
                "request_apply_commit",
                "request_update_meta_inputs",
        };
        for (size_t i = 0; cmd && i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i], cmd) == 0)
                        return true;
        return false;
}

json_t *proto_response_new(void)
{
        /* Built by hand, as the other objects of the hot path: json_pack parses its format and
         * checks every key on every call. */
        json_t *j = json_object();
        if (json_object_set_new_nocheck(j, "version", json_integer(HIVE_PROTOCOL_VERSION)) < 0 ||
            json_object_set_new_nocheck(j, "ok", json_true()) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

json_t *proto_error_new(const char *error, const char *error_code)
{
        json_t *j = json_pack("{s:i, s:b, s:s}", "version", HIVE_PROTOCOL_VERSION, "ok", 0, "error",
                              error ? error : "request refused");
        if (j && error_code && json_object_set_new(j, "error_code", json_string(error_code)) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

/* proto_parse_line's fast path.  jansson's lexer reads a line one character at a time
 * through a stream and decodes each as UTF-8, which made parsing most of the cost of a `send`
 * request with its message body.  This parser takes only what it can parse exactly as jansson
 * does: objects, arrays, strings with the short escapes and valid UTF-8, integers of up to 18
 * digits, true, false and null, at most FAST_DEPTH_MAX deep, nothing after the value but
 * whitespace.  On anything else (\u escapes, fractions and exponents, a duplicate key, any
 * error) it gives up, and jansson parses the line: jansson is the one that refuses a line
 * and says why. */
#define FAST_DEPTH_MAX 32

typedef struct {
        const unsigned char *p, *end;
        char *scratch; /* unescaped strings, as long as the line */
} Fast;

static void fast_ws(Fast *f)
{
        while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
                f->p++;
}

/* The length of the valid UTF-8 sequence at p (first byte >= 0x80), or 0. */
static size_t fast_utf8(const unsigned char *p, const unsigned char *end)
{
        unsigned char c = p[0];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
        if (c >= 0xc2 && c <= 0xdf)
                n = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                if (c == 0xe0)
                        lo = 0xa0; /* no overlong forms */
                else if (c == 0xed)
                        hi = 0x9f; /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                if (c == 0xf0)
                        lo = 0x90;
                else if (c == 0xf4)
                        hi = 0x8f; /* nothing past U+10FFFF */
        } else
                return 0;
        if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
        return n;
}

/* JSON's short escapes, as pairs: the letter after the backslash, then the byte it stands
 * for.  short_escape(c, 0) gives the byte of letter c, short_escape(c, 1) the letter of byte c;
 * -1 if there is none. */
static int short_escape(unsigned char c, int from)
{
        static const char pairs[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
        for (size_t i = 0; i + 1 < sizeof(pairs); i += 2)
                if ((unsigned char)pairs[i + from] == c)
                        return (unsigned char)pairs[i + 1 - from];
        return -1;
}

/* A string, f->p just past its opening quote.  Points *ret into the line, or into the
 * scratch buffer when it had escapes. */
static bool fast_string(Fast *f, const char **ret, size_t *ret_len)
{
        const unsigned char *start = f->p;
        char *out = NULL;
        size_t n = 0;
        while (f->p < f->end) {
                unsigned char c = *f->p;
                if (c == '"') {
                        *ret = out ? out : (const char *)start;
                        *ret_len = out ? n : (size_t)(f->p - start);
                        f->p++;
                        return true;
                }
                if (c < 0x20)
                        return false;
                if (c >= 0x80) {
                        size_t k = fast_utf8(f->p, f->end);
                        if (k == 0)
                                return false;
                        if (out) {
                                memcpy(out + n, f->p, k);
                                n += k;
                        }
                        f->p += k;
                        continue;
                }
                if (c != '\\') {
                        if (out)
                                out[n++] = (char)c;
                        f->p++;
                        continue;
                }
                if (!out) { /* the first escape: what came before goes to the scratch */
                        out = f->scratch;
                        n = (size_t)(f->p - start);
                        memcpy(out, start, n);
                }
                if (f->end - f->p < 2)
                        return false;
                int e = short_escape(f->p[1], 0);
                if (e < 0)
                        return false; /* \u and anything else: jansson's */
                out[n++] = (char)e;
                f->p += 2;
        }
        return false;
}

static json_t *fast_value(Fast *f, int depth);

static bool fast_take(Fast *f, unsigned char c)
{
        if (f->p >= f->end || *f->p != c)
                return false;
        f->p++;
        return true;
}

/* After a member or an element: 1 if a comma says another follows, 0 if close ended the
 * container, -1 for anything else. */
static int fast_after(Fast *f, unsigned char close)
{
        fast_ws(f);
        if (fast_take(f, ',')) {
                fast_ws(f);
                return 1;
        }
        return fast_take(f, close) ? 0 : -1;
}

static json_t *fast_object(Fast *f, int depth)
{
        json_t *o = json_object();
        if (!o)
                return NULL;
        fast_ws(f);
        if (fast_take(f, '}'))
                return o;
        for (;;) {
                const char *key;
                size_t key_len;
                if (!fast_take(f, '"') || !fast_string(f, &key, &key_len) ||
                    json_object_getn(o, key, key_len))
                        break; /* a duplicate: jansson refuses it */
                /* The key may sit in the scratch buffer, which the value may reuse. */
                char kbuf[128];
                if (key_len >= sizeof(kbuf))
                        break;
                memcpy(kbuf, key, key_len);
                fast_ws(f);
                if (!fast_take(f, ':'))
                        break;
                fast_ws(f);
                json_t *v = fast_value(f, depth + 1);
                if (!v || json_object_setn_new_nocheck(o, kbuf, key_len, v) < 0)
                        break;
                int more = fast_after(f, '}');
                if (more == 0)
                        return o;
                if (more < 0)
                        break;
        }
        json_decref(o);
        return NULL;
}

static json_t *fast_array(Fast *f, int depth)
{
        json_t *a = json_array();
        if (!a)
                return NULL;
        fast_ws(f);
        if (fast_take(f, ']'))
                return a;
        for (;;) {
                json_t *v = fast_value(f, depth + 1);
                if (!v || json_array_append_new(a, v) < 0)
                        break;
                int more = fast_after(f, ']');
                if (more == 0)
                        return a;
                if (more < 0)
                        break;
        }
        json_decref(a);
        return NULL;
}

static json_t *fast_number(Fast *f)
{
        bool neg = f->p < f->end && *f->p == '-';
        const unsigned char *q = f->p + neg;
        const unsigned char *digits = q;
        json_int_t v = 0;
        size_t n = 0;
        while (q < f->end && *q >= '0' && *q <= '9') {
                if (++n > 18)
                        return NULL; /* may not fit: jansson's */
                v = v * 10 + (*q++ - '0');
        }
        if (n == 0 || (n > 1 && *digits == '0'))
                return NULL;
        if (q < f->end && (*q == '.' || *q == 'e' || *q == 'E'))
                return NULL; /* a real: jansson's digits */
        f->p = q;
        return json_integer(neg ? -v : v);
}

static bool fast_word(Fast *f, const char *w, size_t n)
{
        if ((size_t)(f->end - f->p) < n || memcmp(f->p, w, n) != 0)
                return false;
        f->p += n;
        return true;
}

static json_t *fast_value(Fast *f, int depth)
{
        if (depth > FAST_DEPTH_MAX || f->p >= f->end)
                return NULL;
        switch (*f->p) {
        case '{':
                f->p++;
                return fast_object(f, depth);
        case '[':
                f->p++;
                return fast_array(f, depth);
        case '"': {
                const char *v;
                size_t n;
                f->p++;
                return fast_string(f, &v, &n) ? json_stringn_nocheck(v, n) : NULL;
        }
        case 't':
                return fast_word(f, "true", 4) ? json_true() : NULL;
        case 'f':
                return fast_word(f, "false", 5) ? json_false() : NULL;
        case 'n':
                return fast_word(f, "null", 4) ? json_null() : NULL;
        default:
                return fast_number(f);
        }
}

json_t *proto_parse_line(const char *line, size_t len, json_error_t *err)
{
        char small[512];
        Fast f = {(const unsigned char *)line, (const unsigned char *)line + len, small};
        if (len > sizeof(small))
                f.scratch = malloc(len);
        json_t *j = NULL;
        if (f.scratch) {
                fast_ws(&f);
                if (f.p < f.end && (*f.p == '{' || *f.p == '['))
                        j = fast_value(&f, 0);
                fast_ws(&f);
                if (j && f.p != f.end) {
                        json_decref(j);
                        j = NULL;
                }
        }
        if (f.scratch != small)
                free(f.scratch);
        return j ? j : json_loadb(line, len, JSON_REJECT_DUPLICATES, err);
}

/* proto_dump_line's own encoder.  It writes what json_dumps(j, JSON_COMPACT) writes, byte for
 * byte, but escapes a string in one pass over its bytes, where jansson decodes every character
 * of it as UTF-8 again (a message body made that most of the cost of an answer).  A json_t
 * string is valid UTF-8 already. */
typedef struct {
        char *buf;
        size_t len, cap;
} LineBuf;

static int line_put(LineBuf *b, const char *data, size_t size)
{
        if (b->len + size + 2 > b->cap) { /* room for the newline and the NUL */
                size_t cap = b->cap;
                while (b->len + size + 2 > cap)
                        cap *= 2;
                char *p = realloc(b->buf, cap);
                if (!p)
                        return -ENOMEM;
                b->buf = p;
                b->cap = cap;
        }
        memcpy(b->buf + b->len, data, size);
        b->len += size;
        return 0;
}

static int line_put_string(LineBuf *b, const char *s, size_t n)
{
        static const char hex[] = "0123456789ABCDEF";
        int r = line_put(b, "\"", 1);
        size_t start = 0;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c >= 0x20 && c != '"' && c != '\\')
                        continue;
                char esc[6] = {'\\'};
                size_t len = 2;
                int e = short_escape(c, 1);
                if (e >= 0)
                        esc[1] = (char)e;
                else {
                        memcpy(esc + 1, "u00", 3);
                        esc[4] = hex[c >> 4];
                        esc[5] = hex[c & 0xf];
                        len = 6;
                }
                r = line_put(b, s + start, i - start);
                if (r >= 0)
                        r = line_put(b, esc, len);
                start = i + 1;
        }
        if (r >= 0)
                r = line_put(b, s + start, n - start);
        return r < 0 ? r : line_put(b, "\"", 1);
}

static int line_put_value(LineBuf *b, const json_t *v, int depth)
{
        if (depth > PROTO_DUMP_DEPTH_MAX)
                return -ELOOP;
        char num[32];
        int r = 0;
        switch (json_typeof(v)) {
        case JSON_OBJECT: {
                const char *key;
                json_t *val;
                bool first = true;
                r = line_put(b, "{", 1);
                json_object_foreach((json_t *)v, key, val)
                {
                        if (r >= 0 && !first)
                                r = line_put(b, ",", 1);
                        if (r >= 0)
                                r = line_put_string(b, key, strlen(key));
                        if (r >= 0)
                                r = line_put(b, ":", 1);
                        if (r >= 0)
                                r = line_put_value(b, val, depth + 1);
                        first = false;
                }
                return r < 0 ? r : line_put(b, "}", 1);
        }
        case JSON_ARRAY:
                r = line_put(b, "[", 1);
                for (size_t i = 0; r >= 0 && i < json_array_size(v); i++) {
                        if (i > 0)
                                r = line_put(b, ",", 1);
                        if (r >= 0)
                                r = line_put_value(b, json_array_get(v, i), depth + 1);
                }
                return r < 0 ? r : line_put(b, "]", 1);
        case JSON_STRING:
                return line_put_string(b, json_string_value(v), json_string_length(v));
        case JSON_INTEGER: {
                int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return line_put(b, num, (size_t)n);
        }
        case JSON_REAL: {
                /* rare: jansson's own digits */
                char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                r = d ? line_put(b, d, strlen(d)) : -ENOMEM;
                free(d);
                return r;
        }
        case JSON_TRUE:
                return line_put(b, "true", 4);
        case JSON_FALSE:
                return line_put(b, "false", 5);
        case JSON_NULL:
                return line_put(b, "null", 4);
        }
        return -EINVAL;
}

char *proto_dump_line(const json_t *j, size_t *ret_len)
{
        if (!json_is_object(j) && !json_is_array(j))
                return NULL; /* as json_dumps without JSON_ENCODE_ANY */
        LineBuf b = {.cap = 1024};
        b.buf = malloc(b.cap);
        if (!b.buf)
                return NULL;
        if (line_put_value(&b, j, 0) < 0) {
                free(b.buf);
                return NULL;
        }
        b.buf[b.len++] = '\n';
        b.buf[b.len] = '\0';
        if (ret_len)
                *ret_len = b.len;
        return b.buf;
}

int proto_response_check(const json_t *j, const char **ret_error, const char **ret_code)
{
        if (!json_is_object(j))
                return -EBADMSG;
        json_t *version = json_object_get(j, "version");
        if (version &&
            (!json_is_integer(version) || json_integer_value(version) != HIVE_PROTOCOL_VERSION))
                return -EPROTONOSUPPORT;
        json_t *ok = json_object_get(j, "ok");
        if (!json_is_boolean(ok))
                return -EBADMSG;
        if (json_is_true(ok))
                return 1;
        json_t *error = json_object_get(j, "error");
        json_t *code = json_object_get(j, "error_code");
        if (ret_error)
                *ret_error = json_is_string(error) ? json_string_value(error)
                                                   : "the daemon refused without a reason";
        if (ret_code)
                *ret_code = json_is_string(code) ? json_string_value(code) : NULL;
        return 0;
}
