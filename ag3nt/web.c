/* The agent page's HTTP server.  One route table (path, method, handler): GETs answer from the
 * first call of the access handler; POSTs are mutations whose generic checks (same origin,
 * content type, body size, form syntax) run once here before a handler sees a parsed form, so
 * handlers contain only their logic.  Every answer that is not a page, an asset or the stream
 * is JSON: {"ok":true,...} or {"ok":false,"error":"a sentence"}.
 *
 * libmicrohttpd runs one thread per connection because a live stream blocks its thread in
 * evbus_wait(); the number of connections and of streams is bounded.  We bind the listening
 * socket ourselves (SO_REUSEADDR, SOCK_CLOEXEC) instead of letting libmicrohttpd do it, so a
 * failed bind reaches the caller as its errno (EADDRINUSE vs EACCES) rather than a NULL. */
#define LOG_SUBSYSTEM "web"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "errors.h"
#include "fr0nt.h"
#include "log.h"
#include "timeutil.h"
#include "web.h"

#define STREAM_BLOCK   (16 * 1024) /* bytes libmicrohttpd asks the stream reader for */
#define STREAM_WAIT_MS 500         /* how often a waiting stream looks at web_stop() */
#define PAGE_MARKER    "@BODY_CLASS@"

struct Web {
        Harness *h;
        EvBus *bus;
        struct MHD_Daemon *mhd;
        uint16_t port;
        atomic_bool stopping;
        atomic_uint streams;
};

/* What the access handler knows about one request between its calls. */
typedef struct {
        const struct Route *route;
        unsigned status;   /* != 0: refused before the body was read; answered at its end */
        char *error;       /* the sentence for status */
        const char *allow; /* the Allow header of a 405 */
        char *body;
        size_t len, cap;
} Request;

/* What a POST handler answers: a status and the JSON object (ok is added). */
typedef struct {
        unsigned status;
        json_t *json;
        char *error;
} Reply;

typedef enum MHD_Result (*GetFn)(Web *w, struct MHD_Connection *c, const char *url);
typedef void (*PostFn)(Web *w, const WebForm *f, Reply *r);

typedef struct Route {
        const char *path;
        bool prefix; /* path is a prefix ("/static/") */
        GetFn get;
        PostFn post;
} Route;

/* ---- forms ---- */

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Whether s[0..n) is UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
        size_t i = 0;
        while (i < n) {
                unsigned char c = s[i];
                size_t k;
                uint32_t cp;
                if (c < 0x80) {
                        i++;
                        continue;
                } else if (c >= 0xc2 && c <= 0xdf) {
                        k = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        k = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        k = 3;
                        cp = c & 0x07;
                } else
                        return false;
                if (n - i <= k)
                        return false;
                for (size_t j = 1; j <= k; j++) {
                        if ((s[i + j] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + j] & 0x3f);
                }
                if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += k + 1;
        }
        return true;
}

/* Decodes s[0..n) into a new string. */
static int form_decode(const char *s, size_t n, char **ret, char **ret_error)
{
        _cleanup_free_ char *out = malloc(n + 1);
        if (!out)
                return -ENOMEM;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c == '+')
                        c = ' ';
                else if (c == '%') {
                        int hi = n - i >= 3 ? hexval(s[i + 1]) : -1;
                        int lo = n - i >= 3 ? hexval(s[i + 2]) : -1;
                        if (hi < 0 || lo < 0)
                                return hive_refuse(ret_error, -EINVAL,
                                                   "the form has a malformed %%-escape");
                        c = (char)(hi * 16 + lo);
                        i += 2;
                }
                if (c == '\0')
                        return hive_refuse(ret_error, -EINVAL, "the form contains a NUL byte");
                out[o++] = c;
        }
        out[o] = '\0';
        if (!utf8_valid((const unsigned char *)out, o))
                return hive_refuse(ret_error, -EINVAL, "the form is not valid UTF-8");
        *ret = TAKE_PTR(out);
        return 0;
}

void web_form_done(WebForm *f)
{
        if (!f)
                return;
        for (size_t i = 0; i < f->n; i++) {
                free(f->fields[i].name);
                free(f->fields[i].value);
        }
        free(f->fields);
        f->fields = NULL;
        f->n = 0;
}

const char *web_form_get(const WebForm *f, const char *name)
{
        for (size_t i = 0; i < f->n; i++)
                if (strcmp(f->fields[i].name, name) == 0)
                        return f->fields[i].value;
        return NULL;
}

int web_form_parse(const char *body, size_t len, WebForm *ret, char **ret_error)
{
        WebForm f = {0};
        int r = 0;
        size_t i = 0;
        while (i < len) {
                const char *piece = body + i;
                const char *amp = memchr(piece, '&', len - i);
                size_t plen = amp ? (size_t)(amp - piece) : len - i;
                i += plen + 1;
                if (plen == 0)
                        continue;
                const char *eq = memchr(piece, '=', plen);
                size_t nlen = eq ? (size_t)(eq - piece) : plen;
                if (nlen == 0) {
                        r = hive_refuse(ret_error, -EINVAL, "a form field has no name");
                        goto fail;
                }
                if (f.n == WEB_FORM_FIELDS) {
                        r = hive_refuse(ret_error, -EINVAL, "the form has more than %d fields",
                                        WEB_FORM_FIELDS);
                        goto fail;
                }
                if (f.n == 0) {
                        f.fields = calloc(WEB_FORM_FIELDS, sizeof(WebField));
                        if (!f.fields)
                                return -ENOMEM;
                }
                WebField *fld = &f.fields[f.n];
                r = form_decode(piece, nlen, &fld->name, ret_error);
                if (r < 0)
                        goto fail;
                if (eq)
                        r = form_decode(eq + 1, plen - nlen - 1, &fld->value, ret_error);
                else
                        r = (fld->value = strdup("")) ? 0 : -ENOMEM;
                if (r < 0) {
                        free(fld->name);
                        goto fail;
                }
                f.n++;
                if (f.n > 1 && web_form_get(&(WebForm){f.fields, f.n - 1}, fld->name)) {
                        r = hive_refuse(ret_error, -EINVAL,
                                        "the form field \"%.60s\" is given twice", fld->name);
                        goto fail;
                }
        }
        *ret = f;
        return 0;
fail:
        web_form_done(&f);
        return r;
}

/* ---- answers ---- */

/* The page runs only its own scripts and styles and talks only to this server; it may be
 * framed (an embedding page hides the chrome with ?hide=). */
#define PAGE_CSP                                                                                   \
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "          \
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"

static void add_common_headers(struct MHD_Response *resp, const char *type)
{
        MHD_add_response_header(resp, "Content-Type", type);
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, "Referrer-Policy", "same-origin");
        if (strncmp(type, "text/html", 9) == 0)
                MHD_add_response_header(resp, "Content-Security-Policy", PAGE_CSP);
}

/* Queues body (malloc'ed; taken, also on failure) with status and content type. */
static enum MHD_Result answer_buffer(struct MHD_Connection *c, unsigned status, char *body,
                                     size_t len, const char *type, const char *allow)
{
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return MHD_NO;
        }
        add_common_headers(resp, type);
        if (allow)
                MHD_add_response_header(resp, "Allow", allow);
        enum MHD_Result ret = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        log_debug("  -> %u", status);
        return ret;
}

/* Queues j (taken) as JSON with "ok" set from the status. */
static enum MHD_Result answer_json(struct MHD_Connection *c, unsigned status, json_t *j,
                                   const char *allow)
{
        if (!j || json_object_set_new(j, "ok", json_boolean(status < 400)) < 0) {
                json_decref(j);
                return MHD_NO;
        }
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!s)
                return MHD_NO;
        return answer_buffer(c, status, s, strlen(s), "application/json", allow);
}

static enum MHD_Result answer_error(struct MHD_Connection *c, unsigned status, const char *error,
                                    const char *allow)
{
        json_t *e = json_string(error);
        if (!e)
                e = json_string("the request was refused");
        json_t *j = json_object();
        if (!j || json_object_set_new(j, "error", e) < 0) {
                json_decref(j);
                return MHD_NO;
        }
        if (status >= 500)
                log_warning("answering %u: %s", status, error);
        else
                log_debug("refusing with %u: %s", status, error);
        return answer_json(c, status, j, allow);
}

/* The HTTP status for a negative errno from the harness. */
static unsigned status_of(int r)
{
        switch (-r) {
        case EINVAL:
        case EDOM:
        case ERANGE:
                return MHD_HTTP_BAD_REQUEST;
        case EPERM:
        case EACCES:
                return MHD_HTTP_FORBIDDEN;
        case ESRCH:
        case EBUSY:
        case EALREADY:
        case EEXIST:
                return MHD_HTTP_CONFLICT;
        case E2BIG:
        case EMSGSIZE:
                return MHD_HTTP_CONTENT_TOO_LARGE;
        case ENOENT:
        case ECONNREFUSED:
        case ECONNRESET:
        case ECONNABORTED:
        case ENOTCONN:
        case EPIPE:
        case ETIMEDOUT:
        case EAGAIN:
        case ESHUTDOWN:
        case ENOEXEC:
                return MHD_HTTP_SERVICE_UNAVAILABLE;
        default:
                return MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
}

static void reply_fail(Reply *r, int err, char *error /* taken */, const char *fallback)
{
        r->status = status_of(err);
        free(r->error);
        if (error)
                r->error = error;
        else if (asprintf(&r->error, "%s (%s)", fallback, strerror(-err)) < 0)
                r->error = NULL;
}

static void reply_refuse(Reply *r, unsigned status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void reply_refuse(Reply *r, unsigned status, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        r->status = status;
        free(r->error);
        if (vasprintf(&r->error, fmt, ap) < 0)
                r->error = NULL;
        va_end(ap);
}

/* ---- GET ---- */

static enum MHD_Result answer_asset(struct MHD_Connection *c, const Fr0ntAsset *a)
{
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (!resp)
                return MHD_NO;
        add_common_headers(resp, a->content_type);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        log_debug("  -> 200 (%zu bytes)", a->len);
        return ret;
}

/* The body classes for ?hide=: a comma list of parts; unknown names are ignored. */
static void hide_classes(const char *hide, char *out, size_t size)
{
        static const char *const parts[] = {"header", "input"};
        bool on[ELEMENTSOF(parts)] = {false};
        for (const char *p = hide; p && *p;) {
                size_t n = strcspn(p, ",");
                const char *s = p;
                size_t m = n;
                while (m && isspace((unsigned char)*s))
                        s++, m--;
                while (m && isspace((unsigned char)s[m - 1]))
                        m--;
                for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                        if (m == strlen(parts[i]) && strncmp(s, parts[i], m) == 0)
                                on[i] = true;
                p += n + (p[n] == ',');
        }
        out[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                if (on[i])
                        snprintf(out + strlen(out), size - strlen(out), "%shide-%s",
                                 out[0] ? " " : "", parts[i]);
}

static enum MHD_Result get_page(Web *w, struct MHD_Connection *c, const char *url)
{
        const Fr0ntAsset *a = fr0nt_asset("/agent.html");
        if (!a)
                return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                    "the page is missing from this build", NULL);
        char cls[64];
        hide_classes(MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "hide"), cls,
                     sizeof(cls));
        const char *src = (const char *)a->data;
        const char *mark = strstr(src, PAGE_MARKER);
        if (!mark)
                return answer_asset(c, a);
        size_t before = (size_t)(mark - src), cl = strlen(cls);
        size_t after = a->len - before - strlen(PAGE_MARKER);
        char *page = malloc(before + cl + after + 1);
        if (!page)
                return MHD_NO;
        memcpy(page, src, before);
        memcpy(page + before, cls, cl);
        memcpy(page + before + cl, mark + strlen(PAGE_MARKER), after);
        page[before + cl + after] = '\0';
        return answer_buffer(c, MHD_HTTP_OK, page, before + cl + after, a->content_type, NULL);
}

static enum MHD_Result get_static(Web *w, struct MHD_Connection *c, const char *url)
{
        const Fr0ntAsset *a = strncmp(url, "/static/", 8) == 0 ? fr0nt_asset(url) : NULL;
        if (!a)
                return answer_error(c, MHD_HTTP_NOT_FOUND, "no such file", NULL);
        return answer_asset(c, a);
}

static enum MHD_Result get_state(Web *w, struct MHD_Connection *c, const char *url)
{
        json_t *j = harness_state(w->h);
        if (!j)
                return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                    "out of memory taking the state", NULL);
        return answer_json(c, MHD_HTTP_OK, j, NULL);
}

/* Parses a decimal seq (no sign, no spaces, fits 63 bits). */
static int parse_seq(const char *s, uint64_t *ret)
{
        if (!s || !*s || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s))
                return -EINVAL;
        *ret = strtoull(s, NULL, 10);
        return 0;
}

/* ?after=N (and for the stream Last-Event-ID; the larger wins).  Answers 400 and returns
 * false when one is malformed. */
static bool after_of(struct MHD_Connection *c, bool last_event_id, uint64_t *ret,
                     enum MHD_Result *ret_answer)
{
        uint64_t after = 0;
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
        if (q && parse_seq(q, &after) < 0) {
                *ret_answer = answer_error(c, MHD_HTTP_BAD_REQUEST,
                                           "after must be an event's seq (a whole number)", NULL);
                return false;
        }
        const char *h = last_event_id
                                ? MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID")
                                : NULL;
        uint64_t id = 0;
        if (h && *h && parse_seq(h, &id) < 0) {
                *ret_answer = answer_error(c, MHD_HTTP_BAD_REQUEST,
                                           "Last-Event-ID must be an event's seq", NULL);
                return false;
        }
        *ret = after > id ? after : id;
        return true;
}

static enum MHD_Result get_history(Web *w, struct MHD_Connection *c, const char *url)
{
        uint64_t after = 0;
        enum MHD_Result a = MHD_NO;
        if (!after_of(c, false, &after, &a))
                return a;
        uint64_t seq = evbus_seq(w->bus);
        json_t *events = evbus_history(w->bus, after, WEB_HISTORY_MAX);
        if (!events)
                return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                    "out of memory reading the history", NULL);
        /* An event published between the two reads is in the array: seq covers it. */
        size_t n = json_array_size(events);
        if (n) {
                json_int_t last =
                        json_integer_value(json_object_get(json_array_get(events, n - 1), "seq"));
                if (last > 0 && (uint64_t)last > seq)
                        seq = (uint64_t)last;
        }
        json_t *j = json_pack("{s:I, s:o}", "seq", (json_int_t)seq, "events", events);
        return answer_json(c, MHD_HTTP_OK, j, NULL);
}

/* ---- the live stream ---- */

typedef struct {
        Web *w;
        int fd;         /* the connection's socket (libmicrohttpd's), to notice a hang-up */
        uint64_t after; /* the newest seq written */
        json_t *batch;  /* events read, not yet formatted */
        size_t next;    /* batch's next index */
        char *buf;      /* formatted, not yet handed out */
        size_t len, off;
        uint64_t last_usec; /* when something was last handed out */
} Stream;

static void stream_free(void *cls)
{
        Stream *s = cls;
        json_decref(s->batch);
        free(s->buf);
        atomic_fetch_sub(&s->w->streams, 1);
        free(s);
}

/* Formats one event as an SSE frame: id, event (the kind, reduced to safe characters), data
 * (the whole event as one line of JSON; JSON strings escape every newline). */
static int stream_format(Stream *s, json_t *ev)
{
        json_int_t seq = json_integer_value(json_object_get(ev, "seq"));
        char kind[64];
        const char *k = json_string_value(json_object_get(ev, "kind"));
        snprintf(kind, sizeof(kind), "%s", k && *k ? k : "message");
        for (char *p = kind; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
                        *p = '_';
        _cleanup_free_ char *data = json_dumps(ev, JSON_COMPACT);
        if (!data)
                return -ENOMEM;
        free(s->buf);
        s->buf = NULL;
        s->off = 0;
        int n = asprintf(&s->buf, "id: %lld\nevent: %s\ndata: %s\n\n", (long long)seq, kind, data);
        if (n < 0) {
                s->buf = NULL;
                s->len = 0;
                return -ENOMEM;
        }
        s->len = (size_t)n;
        if (seq > 0 && (uint64_t)seq > s->after)
                s->after = (uint64_t)seq;
        return 0;
}

static int stream_text(Stream *s, const char *text)
{
        free(s->buf);
        s->off = 0;
        s->buf = strdup(text);
        s->len = s->buf ? strlen(s->buf) : 0;
        return s->buf ? 0 : -ENOMEM;
}

/* Whether the client hung up.  Nothing is written while a stream waits, so without this a
 * closed page would hold its thread and its stream slot until the next keepalive. */
static bool stream_peer_gone(const Stream *s)
{
        if (s->fd < 0)
                return false;
        struct pollfd p = {.fd = s->fd, .events = POLLRDHUP};
        return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* libmicrohttpd's reader: hands out what is formatted; otherwise formats the next kept event;
 * otherwise blocks (in slices, so web_stop() is seen) until an event arrives or a keepalive is
 * due.  Ends the stream when the bus closes or the server stops. */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
        Stream *s = cls;
        EvBus *bus = s->w->bus;
        for (;;) {
                if (s->off < s->len) {
                        size_t n = s->len - s->off < max ? s->len - s->off : max;
                        memcpy(out, s->buf + s->off, n);
                        s->off += n;
                        s->last_usec = timeutil_mono_usec();
                        return (ssize_t)n;
                }
                if (atomic_load(&s->w->stopping))
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (s->batch && s->next < json_array_size(s->batch)) {
                        if (stream_format(s, json_array_get(s->batch, s->next++)) < 0)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        continue;
                }
                json_decref(s->batch);
                s->batch = NULL;
                if (evbus_closed(bus))
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (evbus_seq(bus) > s->after) {
                        s->batch = evbus_history(bus, s->after, EVBUS_KEEP);
                        s->next = 0;
                        if (!s->batch)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        if (json_array_size(s->batch))
                                continue;
                }
                uint64_t now = timeutil_mono_usec();
                uint64_t due = s->last_usec + (uint64_t)WEB_KEEPALIVE_MS * 1000;
                if (stream_peer_gone(s))
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                if (now >= due) {
                        if (stream_text(s, ": keepalive\n\n") < 0)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        continue;
                }
                uint64_t left_ms = (due - now) / 1000 + 1;
                evbus_wait(bus, s->after, left_ms < STREAM_WAIT_MS ? (int)left_ms : STREAM_WAIT_MS);
        }
}

static enum MHD_Result get_stream(Web *w, struct MHD_Connection *c, const char *url)
{
        uint64_t after = 0;
        enum MHD_Result a = MHD_NO;
        if (!after_of(c, true, &after, &a))
                return a;
        if (atomic_fetch_add(&w->streams, 1) >= WEB_STREAMS_MAX) {
                atomic_fetch_sub(&w->streams, 1);
                return answer_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                    "too many live streams are open; close a page and retry", NULL);
        }
        Stream *s = calloc(1, sizeof(*s));
        if (!s) {
                atomic_fetch_sub(&w->streams, 1);
                return MHD_NO;
        }
        s->w = w;
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        s->fd = ci ? ci->connect_fd : -1;
        /* A seq from before a restart that lost the history names nothing we have. */
        uint64_t newest = evbus_seq(w->bus);
        s->after = after > newest ? newest : after;
        s->last_usec = timeutil_mono_usec();
        /* A first comment: the client sees the stream open before the first event. */
        if (stream_text(s, ": hello\n\n") < 0) {
                stream_free(s);
                return MHD_NO;
        }
        struct MHD_Response *resp = MHD_create_response_from_callback(
                MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, s, stream_free);
        if (!resp) {
                stream_free(s);
                return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        log_debug("  -> 200 stream after %llu", (unsigned long long)s->after);
        return ret;
}

/* ---- POST ---- */

static void post_send(Web *w, const WebForm *f, Reply *r)
{
        const char *body = web_form_get(f, "body");
        if (!body || !body[strspn(body, " \t\r\n")])
                return reply_refuse(r, MHD_HTTP_BAD_REQUEST,
                                    "the message is empty: write something in the field body");
        int64_t id = 0;
        char *error = NULL;
        int k = harness_send_operator(w->h, body, &id, &error);
        if (k < 0)
                return reply_fail(r, k, error, "the message could not be delivered");
        json_object_set_new(r->json, "id", json_integer(id));
}

static void post_cancel(Web *w, const WebForm *f, Reply *r)
{
        int k = harness_cancel_turn(w->h);
        if (k == -ESRCH)
                return reply_refuse(r, MHD_HTTP_CONFLICT,
                                    "no turn is running, so there is nothing to cancel");
        if (k < 0)
                return reply_fail(r, k, NULL, "the turn could not be cancelled");
}

static void post_compact(Web *w, const WebForm *f, Reply *r)
{
        int k = harness_request_compact(w->h);
        if (k < 0)
                return reply_fail(r, k, NULL, "compaction could not be requested");
}

static void post_new_session(Web *w, const WebForm *f, Reply *r)
{
        int k = harness_request_new_session(w->h);
        if (k < 0)
                return reply_fail(r, k, NULL, "a new session could not be requested");
}

static void post_model(Web *w, const WebForm *f, Reply *r)
{
        const char *model = web_form_get(f, "model");
        if (!model || !*model)
                return reply_refuse(r, MHD_HTTP_BAD_REQUEST,
                                    "no model given: put its name in the field model");
        char *error = NULL;
        int k = harness_set_model(w->h, model, &error);
        if (k < 0)
                return reply_fail(r, k, error, "the model could not be changed");
        json_object_set_new(r->json, "model", json_string(model));
}

static Login *login_of(Web *w, Reply *r)
{
        Login *l = harness_login(w->h);
        if (!l)
                reply_refuse(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                             "the login flow is not available in this harness");
        return l;
}

static void add_login_state(Login *l, Reply *r)
{
        json_t *st = login_state(l);
        if (st)
                json_object_set_new(r->json, "login", st);
}

static void post_login_start(Web *w, const WebForm *f, Reply *r)
{
        Login *l = login_of(w, r);
        if (!l)
                return;
        char *error = NULL;
        int k = login_start(l, &error);
        if (k == -EBUSY) {
                free(error);
                return reply_refuse(r, MHD_HTTP_CONFLICT,
                                    "a login is already running; finish or cancel it first");
        }
        if (k < 0)
                return reply_fail(r, k, error, "the login could not be started");
        add_login_state(l, r);
}

static void post_login_code(Web *w, const WebForm *f, Reply *r)
{
        Login *l = login_of(w, r);
        if (!l)
                return;
        const char *code = web_form_get(f, "code");
        if (!code || !*code)
                return reply_refuse(r, MHD_HTTP_BAD_REQUEST,
                                    "no code given: paste it into the field code");
        char *error = NULL;
        int k = login_code(l, code, &error);
        if (k == -ESRCH) {
                free(error);
                return reply_refuse(r, MHD_HTTP_CONFLICT, "no login is running; start one first");
        }
        if (k < 0)
                return reply_fail(r, k, error, "the code could not be passed on");
        add_login_state(l, r);
}

static void post_login_cancel(Web *w, const WebForm *f, Reply *r)
{
        Login *l = login_of(w, r);
        if (!l)
                return;
        int k = login_cancel(l);
        if (k == -ESRCH)
                return reply_refuse(r, MHD_HTTP_CONFLICT, "no login is running");
        if (k < 0)
                return reply_fail(r, k, NULL, "the login could not be cancelled");
        add_login_state(l, r);
}

static const Route routes[] = {
        {"/", false, get_page, NULL},
        {"/static/", true, get_static, NULL},
        {"/api/state", false, get_state, NULL},
        {"/events/history", false, get_history, NULL},
        {"/events/stream", false, get_stream, NULL},
        {"/send", false, NULL, post_send},
        {"/api/cancel", false, NULL, post_cancel},
        {"/api/compact", false, NULL, post_compact},
        {"/api/new-session", false, NULL, post_new_session},
        {"/api/model", false, NULL, post_model},
        {"/api/login/start", false, NULL, post_login_start},
        {"/api/login/code", false, NULL, post_login_code},
        {"/api/login/cancel", false, NULL, post_login_cancel},
};

static const Route *route_of(const char *url)
{
        for (size_t i = 0; i < ELEMENTSOF(routes); i++)
                if (routes[i].prefix ? strncmp(url, routes[i].path, strlen(routes[i].path)) == 0
                                     : strcmp(url, routes[i].path) == 0)
                        return &routes[i];
        return NULL;
}

/* "host:port" of an authority, lowercased, with default_port when it names none.  False
 * when it does not parse. */
static bool authority_norm(const char *a, size_t n, const char *default_port, char *out,
                           size_t size)
{
        if (n == 0 || n >= size - 8)
                return false;
        const char *end = a + n, *colon = NULL;
        if (a[0] == '[') {
                const char *rb = memchr(a, ']', n);
                if (!rb)
                        return false;
                if (rb + 1 < end) {
                        if (rb[1] != ':')
                                return false;
                        colon = rb + 1;
                }
        } else
                colon = memrchr(a, ':', n);
        size_t hlen = colon ? (size_t)(colon - a) : n;
        const char *port = colon ? colon + 1 : default_port;
        size_t plen = colon ? (size_t)(end - port) : strlen(default_port);
        if (hlen == 0 || plen == 0 || plen > 5)
                return false;
        for (size_t i = 0; i < plen; i++)
                if (!isdigit((unsigned char)port[i]))
                        return false;
        for (size_t i = 0; i < hlen; i++) {
                unsigned char ch = (unsigned char)a[i];
                if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == '@')
                        return false;
                out[i] = (char)tolower(ch);
        }
        snprintf(out + hlen, size - hlen, ":%.*s", (int)plen, port);
        return true;
}

/* The same-origin rule for mutations: an Origin header must name the Host the request was
 * sent to; without one, Sec-Fetch-Site must not say another site (or another port of this
 * one, which is another origin).  Requests with neither header (curl, scripts) pass: they
 * come from no browser page. */
static bool same_origin(struct MHD_Connection *c)
{
        const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
        if (!origin) {
                const char *site =
                        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
                return !site ||
                       (strcasecmp(site, "cross-site") != 0 && strcasecmp(site, "same-site") != 0);
        }
        const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
        if (!host)
                return false;
        const char *dport;
        if (strncasecmp(origin, "http://", 7) == 0)
                dport = "80", origin += 7;
        else if (strncasecmp(origin, "https://", 8) == 0)
                dport = "443", origin += 8;
        else
                return false; /* "null", or a scheme that is no web page's */
        char o[300], hh[300];
        return authority_norm(origin, strlen(origin), dport, o, sizeof(o)) &&
               authority_norm(host, strlen(host), dport, hh, sizeof(hh)) && strcmp(o, hh) == 0;
}

/* Checks a POST from its headers; on refusal fills rq->status and rq->error. */
static void post_precheck(struct MHD_Connection *c, Request *rq)
{
        if (!same_origin(c)) {
                rq->status = MHD_HTTP_FORBIDDEN;
                rq->error = strdup("cross-origin request refused");
                return;
        }
        const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (type) {
                const char *form = "application/x-www-form-urlencoded";
                size_t n = strlen(form);
                if (strncasecmp(type, form, n) != 0 ||
                    (type[n] && type[n] != ';' && type[n] != ' ')) {
                        rq->status = MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
                        if (asprintf(&rq->error,
                                     "only application/x-www-form-urlencoded forms are accepted, "
                                     "not %.60s",
                                     type) < 0)
                                rq->error = NULL;
                        return;
                }
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        uint64_t len = 0;
        if (cl && parse_seq(cl, &len) == 0 && len > WEB_BODY_MAX) {
                rq->status = MHD_HTTP_CONTENT_TOO_LARGE;
                if (asprintf(&rq->error, "the body is larger than %d bytes", WEB_BODY_MAX) < 0)
                        rq->error = NULL;
        }
}

static int body_append(Request *rq, const char *data, size_t n)
{
        if (n > WEB_BODY_MAX - rq->len)
                return -EMSGSIZE;
        if (rq->len + n + 1 > rq->cap) {
                size_t cap = rq->cap ? rq->cap : 4096;
                while (cap < rq->len + n + 1)
                        cap *= 2;
                char *b = realloc(rq->body, cap);
                if (!b)
                        return -ENOMEM;
                rq->body = b;
                rq->cap = cap;
        }
        memcpy(rq->body + rq->len, data, n);
        rq->len += n;
        rq->body[rq->len] = '\0';
        return 0;
}

static enum MHD_Result run_post(Web *w, struct MHD_Connection *c, Request *rq)
{
        WebForm form = {0};
        _cleanup_free_ char *error = NULL;
        int k = web_form_parse(rq->body ? rq->body : "", rq->len, &form, &error);
        if (k < 0)
                return answer_error(c, k == -ENOMEM ? 500 : MHD_HTTP_BAD_REQUEST,
                                    error ? error : "the form cannot be read", NULL);
        Reply r = {.status = MHD_HTTP_OK, .json = json_object()};
        if (!r.json) {
                web_form_done(&form);
                return MHD_NO;
        }
        rq->route->post(w, &form, &r);
        web_form_done(&form);
        if (r.status >= 400) {
                json_decref(r.json);
                enum MHD_Result ret =
                        answer_error(c, r.status, r.error ? r.error : "the request failed", NULL);
                free(r.error);
                return ret;
        }
        free(r.error);
        return answer_json(c, r.status, r.json, NULL);
}

static void request_free(Request *rq)
{
        if (!rq)
                return;
        free(rq->error);
        free(rq->body);
        free(rq);
}

/* A client's string for a log line or a sentence: printable ASCII, at most size - 1 bytes (a
 * decoded path may hold newlines or bytes that are not UTF-8). */
static const char *printable(const char *s, char *out, size_t size)
{
        size_t i = 0;
        for (; s[i] && i + 1 < size; i++)
                out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
        out[i] = '\0';
        return out;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        Web *w = cls;
        Request *rq = *con_cls;
        bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        bool post = strcmp(method, "POST") == 0;

        if (!rq) {
                char m[24], u[128];
                printable(method, m, sizeof(m));
                printable(url, u, sizeof(u));
                log_debug("%s %s", m, u);
                rq = calloc(1, sizeof(*rq));
                if (!rq)
                        return MHD_NO;
                *con_cls = rq;
                rq->route = route_of(url);
                if (!rq->route) {
                        rq->status = MHD_HTTP_NOT_FOUND;
                        if (asprintf(&rq->error, "nothing is served at %s", u) < 0)
                                rq->error = NULL;
                } else if (rq->route->get ? !get : !post) {
                        rq->status = MHD_HTTP_METHOD_NOT_ALLOWED;
                        rq->allow = rq->route->get ? "GET, HEAD" : "POST";
                        if (asprintf(&rq->error, "%s takes %s, not %s", u,
                                     rq->route->get ? "GET" : "POST", m) < 0)
                                rq->error = NULL;
                } else if (rq->route->post)
                        post_precheck(c, rq);
                /* Answers wait for the end of the request: one queued earlier makes
                 * libmicrohttpd close the connection, and a refusal sent while the client
                 * still writes can be lost to a reset.  A body too large to read is the
                 * exception. */
                if (rq->status == MHD_HTTP_CONTENT_TOO_LARGE)
                        return answer_error(c, rq->status, rq->error ? rq->error : "too large",
                                            NULL);
                return MHD_YES;
        }

        if (*upload_data_size) {
                if (!rq->status && rq->route->post) {
                        int k = body_append(rq, upload_data, *upload_data_size);
                        if (k < 0) {
                                rq->status = k == -ENOMEM ? MHD_HTTP_INTERNAL_SERVER_ERROR
                                                          : MHD_HTTP_CONTENT_TOO_LARGE;
                                if (asprintf(&rq->error, "the body is larger than %d bytes",
                                             WEB_BODY_MAX) < 0)
                                        rq->error = NULL;
                        }
                }
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (rq->status)
                return answer_error(c, rq->status,
                                    rq->error ? rq->error : "the request was refused", rq->allow);
        if (rq->route->get)
                return rq->route->get(w, c, url);
        return run_post(w, c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        request_free(*con_cls);
        *con_cls = NULL;
}

/* What libmicrohttpd says about one client going away or misbehaving: not our trouble. */
static const char *const mhd_client_noise[] = {
        "Connection was closed by remote side",
        "Error processing request",
        "Failed to receive data",
        "Failed to send data",
        "timed out",
        "Connection reset",
        "Application reported internal error, closing connection",
};

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        char line[512];
        vsnprintf(line, sizeof(line), fmt, ap);
        line[strcspn(line, "\n")] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(mhd_client_noise); i++)
                if (strstr(line, mhd_client_noise[i])) {
                        log_debug("libmicrohttpd: %s", line);
                        return;
                }
        log_warning("libmicrohttpd: %s", line);
}

int web_start(Harness *h, const char *bind_addr, uint16_t port, Web **ret)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        if (!bind_addr)
                bind_addr = WEB_BIND_DEFAULT;
        if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1)
                return log_error_errno(-EINVAL,
                                       "cannot serve the page on \"%s\": not an IPv4 "
                                       "address",
                                       bind_addr);
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(-errno, "cannot create the page's socket: %m");
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return log_error_errno(-errno, "cannot set SO_REUSEADDR: %m");
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return log_error_errno(-errno, "cannot serve the page on %s:%u: %m", bind_addr,
                                       (unsigned)port);
        if (listen(fd, 64) < 0)
                return log_error_errno(-errno, "cannot listen on %s:%u: %m", bind_addr,
                                       (unsigned)port);
        socklen_t sl = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
                return log_error_errno(-errno, "cannot read the page's address: %m");

        Web *w = calloc(1, sizeof(*w));
        if (!w)
                return log_error_errno(-ENOMEM, "cannot start the page: %m");
        w->h = h;
        w->bus = harness_bus(h);
        w->port = ntohs(sa.sin_port);
        atomic_init(&w->stopping, false);
        atomic_init(&w->streams, 0);
        w->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                          MHD_USE_POLL | MHD_USE_ERROR_LOG,
                                  0, NULL, NULL, on_request, w, MHD_OPTION_EXTERNAL_LOGGER,
                                  on_mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned)WEB_CONNS_MAX,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)WEB_IDLE_TIMEOUT,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
        if (!w->mhd) {
                free(w);
                return log_error_errno(-EIO, "cannot start the page's HTTP server on %s:%u",
                                       bind_addr, (unsigned)port);
        }
        TAKE_FD(fd); /* libmicrohttpd closes it */
        log_info("the agent page is at http://%s:%u/", bind_addr, (unsigned)w->port);
        *ret = w;
        return 0;
}

Web *web_stop(Web *w)
{
        if (!w)
                return NULL;
        atomic_store(&w->stopping, true);
        MHD_stop_daemon(w->mhd);
        free(w);
        return NULL;
}

uint16_t web_port(const Web *w)
{
        return w->port;
}
