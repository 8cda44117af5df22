/* The agent page: an HTTP server (libmicrohttpd, one thread per connection) that serves the
 * page and its fr0nt assets, the state snapshot, the event history and live stream (SSE), and
 * the operator's controls as same-origin form POSTs.  Endpoints: docs/web-ui.md. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

#define WEB_BODY_MAX     (1024 * 1024) /* a POST body above this: 413 */
#define WEB_FORM_FIELDS  32            /* fields in one form, at most */
#define WEB_STREAMS_MAX  32            /* live streams at once; more: 503 */
#define WEB_CONNS_MAX    64            /* connections (and so threads) at once */
#define WEB_KEEPALIVE_MS 15000         /* a ": keepalive" comment on an idle stream */
#define WEB_IDLE_TIMEOUT 60            /* seconds a connection may sit idle */
#define WEB_HISTORY_MAX  EVBUS_KEEP    /* events in one /events/history answer */

typedef struct Web Web;

#define WEB_BIND_DEFAULT "127.0.0.1"

/* Starts serving h's page on bind_addr (an IPv4 literal; NULL: WEB_BIND_DEFAULT) and port (0:
 * any free port; see web_port()).  Logs and returns a negative errno when it cannot: -EINVAL for a
 * bad address, the bind's errno (-EADDRINUSE, -EACCES, -EADDRNOTAVAIL), -EIO when
 * libmicrohttpd will not start. */
int web_start(Harness *h, const char *bind_addr, uint16_t port, Web **ret);

/* Stops serving: open streams end within half a second, then every connection thread is
 * joined.  Accepts NULL; returns NULL. */
Web *web_stop(Web *w);

/* The port it listens on. */
uint16_t web_port(const Web *w);

/* One field of an application/x-www-form-urlencoded body, decoded. */
typedef struct {
        char *name;
        char *value;
} WebField;

typedef struct {
        WebField *fields;
        size_t n;
} WebForm;

/* Parses an application/x-www-form-urlencoded body of len bytes ('+' is a space, %XX a byte,
 * empty pieces between '&' skipped).  Refuses with -EINVAL and *ret_error (malloc'ed) a bad
 * escape, a NUL, bytes that are not UTF-8, a field without a name, a field given twice, more
 * than WEB_FORM_FIELDS fields; -ENOMEM.  *ret is written only on success and needs
 * web_form_done().  Does not log. */
int web_form_parse(const char *body, size_t len, WebForm *ret, char **ret_error);
void web_form_done(WebForm *f);

/* The value of field name, or NULL when the form has none. */
const char *web_form_get(const WebForm *f, const char *name);
