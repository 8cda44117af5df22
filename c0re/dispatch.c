/* Request dispatch: parse, check generically, call the handler (or answer a repeated request
 * id from its record), build the envelope. */
#define LOG_SUBSYSTEM "dispatch"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dispatch.h"
#include "errors.h"
#include "log.h"
#include "proto.h"
#include "request_ids.h"

int dispatch_fail(DispatchCtx *ctx, int error, const char *fmt, ...)
{
        if (error >= 0)
                error = -EIO;
        ctx->error = error;
        free(ctx->error_msg);
        ctx->error_msg = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&ctx->error_msg, fmt, ap) < 0)
                ctx->error_msg = NULL;
        va_end(ap);
        return error;
}

const VerbSpec *dispatch_find(const VerbTable *t, const char *cmd)
{
        for (size_t i = 0; i < t->n_verbs; i++)
                if (strcmp(t->verbs[i].cmd, cmd) == 0)
                        return &t->verbs[i];
        return NULL;
}

static const char *field_type_name(FieldType t)
{
        switch (t) {
        case FT_STRING:
                return "a string";
        case FT_INT:
                return "an integer";
        case FT_BOOL:
                return "a boolean";
        case FT_OBJECT:
                return "an object";
        case FT_ARRAY:
                return "an array";
        }
        return "?";
}

static const char *json_type_name(const json_t *v)
{
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "an object";
        case JSON_ARRAY:
                return "an array";
        case JSON_STRING:
                return "a string";
        case JSON_INTEGER:
                return "an integer";
        case JSON_REAL:
                return "a number with a fraction";
        case JSON_TRUE:
        case JSON_FALSE:
                return "a boolean";
        case JSON_NULL:
                return "null";
        }
        return "?";
}

static bool field_type_ok(FieldType t, const json_t *v)
{
        switch (t) {
        case FT_STRING:
                return json_is_string(v);
        case FT_INT:
                return json_is_integer(v);
        case FT_BOOL:
                return json_is_boolean(v);
        case FT_OBJECT:
                return json_is_object(v);
        case FT_ARRAY:
                return json_is_array(v);
        }
        return false;
}

static int unknown_verb(DispatchCtx *ctx, const VerbTable *t, const char *what)
{
        char known[1024] = "";
        size_t off = 0;
        for (size_t i = 0; i < t->n_verbs && off < sizeof(known); i++)
                off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s", i ? ", " : "",
                                        t->verbs[i].cmd);
        return dispatch_fail(ctx, -EOPNOTSUPP, "%s; %s understands: %s", what, t->socket, known);
}

/* The generic checks.  Returns the verb or NULL with ctx's error set. */
static const VerbSpec *dispatch_check(DispatchCtx *ctx, const VerbTable *t, const json_t *req)
{
        if (!json_is_object(req)) {
                dispatch_fail(ctx, -EBADMSG, "a request must be a JSON object, not %s",
                              json_type_name(req));
                return NULL;
        }
        json_t *version = json_object_get(req, "version");
        if (version &&
            (!json_is_integer(version) || json_integer_value(version) != HIVE_PROTOCOL_VERSION)) {
                _cleanup_free_ char *v = json_dumps(version, JSON_ENCODE_ANY | JSON_COMPACT);
                dispatch_fail(ctx, -EPROTONOSUPPORT,
                              "request version %s is not supported; this daemon speaks version %d",
                              v ? v : "?", HIVE_PROTOCOL_VERSION);
                return NULL;
        }
        json_t *cmd = json_object_get(req, "cmd");
        if (!cmd) {
                unknown_verb(ctx, t, "the request has no \"cmd\" key");
                ctx->error = -EINVAL;
                return NULL;
        }
        if (!json_is_string(cmd)) {
                dispatch_fail(ctx, -EINVAL, "\"cmd\" must be a string, not %s",
                              json_type_name(cmd));
                return NULL;
        }
        const VerbSpec *v = dispatch_find(t, json_string_value(cmd));
        if (!v) {
                _cleanup_free_ char *q = json_dumps(cmd, JSON_ENCODE_ANY);
                char what[256];
                snprintf(what, sizeof(what), "unknown command %.200s", q ? q : "?");
                unknown_verb(ctx, t, what);
                return NULL;
        }
        for (const FieldSpec *f = v->fields; f && f->name; f++) {
                json_t *val = json_object_get(req, f->name);
                if (!val) {
                        if (f->required) {
                                dispatch_fail(ctx, -EINVAL, "%s needs \"%s\" (%s)", v->cmd, f->name,
                                              field_type_name(f->type));
                                return NULL;
                        }
                        continue;
                }
                if (!field_type_ok(f->type, val)) {
                        dispatch_fail(ctx, -EINVAL, "%s: \"%s\" must be %s, not %s", v->cmd,
                                      f->name, field_type_name(f->type), json_type_name(val));
                        return NULL;
                }
        }
        return v;
}

/* Runs v's handler, through the request id when the request carries one (see dispatch_line).
 * A repeat replaces *resp by the recorded answer.  Returns as the handler does. */
static int run_handler(DispatchCtx *ctx, const VerbTable *t, const VerbSpec *v, json_t *req,
                       json_t **resp)
{
        json_t *jid = (v->flags & VERB_DEDUPE) && t->dedupe_store
                              ? json_object_get(req, "request_id")
                              : NULL;
        if (!jid)
                return v->handler(ctx, req, *resp);
        if (!json_is_string(jid) || !proto_request_id_valid(json_string_value(jid)))
                return dispatch_fail(ctx, -EINVAL,
                                     "%s: \"request_id\" must be a string of %d to %d "
                                     "characters from A-Z, a-z, 0-9, _ and -",
                                     v->cmd, PROTO_REQUEST_ID_MIN, PROTO_REQUEST_ID_MAX);
        const char *rid = json_string_value(jid);
        Store *s = t->dedupe_store(ctx->userdata);
        const char *who = t->dedupe_identity(ctx->userdata);

        _cleanup_free_ char *cmd = NULL, *answer = NULL;
        int r = request_ids_get(s, who, rid, &cmd, &answer);
        if (r < 0)
                return dispatch_fail(ctx, r, "cannot look up request_id %s: %s", rid, strerror(-r));
        if (r > 0) {
                if (strcmp(cmd, v->cmd) != 0)
                        return dispatch_fail(ctx, -EINVAL, "request_id %s was already used for %s",
                                             rid, cmd);
                json_t *first = json_loads(answer, JSON_REJECT_DUPLICATES, NULL);
                if (!json_is_object(first)) {
                        json_decref(first);
                        return dispatch_fail(ctx, -EIO,
                                             "the answer recorded for request_id %s cannot be "
                                             "read",
                                             rid);
                }
                log_debug("%s sent %s request_id %s again: answering as the first time", who,
                          v->cmd, rid);
                store_need_flush(s); /* the first may still be on its way to the disk */
                json_decref(*resp);
                *resp = first;
                return 0;
        }

        /* The handler's writes and the record share one savepoint of one durable batch: both
         * commit, or neither (a crash before the commit, a failed record). */
        r = store_batch_write(s, true);
        if (r >= 0)
                r = store_op_begin(s);
        if (r < 0)
                return dispatch_fail(ctx, r, "cannot start %s: %s", v->cmd, strerror(-r));
        r = v->handler(ctx, req, *resp);
        if (r == 0) {
                _cleanup_free_ char *line = json_dumps(*resp, JSON_COMPACT);
                int k = line ? request_ids_put(s, who, rid, v->cmd, line) : -ENOMEM;
                if (k < 0) {
                        log_error_errno(k, "cannot record request_id %s of %s: %m", rid, who);
                        r = dispatch_fail(ctx, k,
                                          "could not record request_id %s (%s); nothing was "
                                          "changed, try again",
                                          rid, strerror(-k));
                }
        }
        return store_op_end(s, r);
}

int dispatch_line(const VerbTable *t, void *userdata, void *origin, const char *line, size_t len,
                  char **ret, size_t *ret_len, const VerbSpec **ret_verb)
{
        DispatchCtx ctx = {.userdata = userdata, .origin = origin};
        const VerbSpec *v = NULL;
        json_t *resp = NULL;

        json_error_t jerr;
        json_t *req = proto_parse_line(line, len, &jerr);
        if (!req)
                dispatch_fail(&ctx, -EBADMSG, "the request is not valid JSON: %s (column %d)",
                              jerr.text, jerr.column);
        else
                v = dispatch_check(&ctx, t, req);

        if (v) {
                resp = proto_response_new();
                if (!resp) {
                        ctx.error = -ENOMEM;
                } else {
                        int r = run_handler(&ctx, t, v, req, &resp);
                        if (r == DISPATCH_PARKED) {
                                json_decref(resp);
                                json_decref(req);
                                free(ctx.error_msg);
                                *ret = NULL;
                                if (ret_len)
                                        *ret_len = 0;
                                if (ret_verb)
                                        *ret_verb = v;
                                return 2;
                        }
                        if (r < 0) {
                                if (ctx.error == 0)
                                        ctx.error = r;
                                json_decref(resp);
                                resp = NULL;
                        }
                }
        }
        json_decref(req);

        int ok = resp != NULL;
        if (!resp) {
                if (!ctx.error_msg && asprintf(&ctx.error_msg, "%s failed: %s",
                                               v ? v->cmd : "request", strerror(-ctx.error)) < 0)
                        ctx.error_msg = NULL;
                resp = proto_error_new(ctx.error_msg, hive_errno_name(ctx.error));
        }
        free(ctx.error_msg);
        if (!resp)
                return -ENOMEM;
        char *out = proto_dump_line(resp, ret_len);
        json_decref(resp);
        if (!out)
                return -ENOMEM;
        *ret = out;
        if (ret_verb)
                *ret_verb = ok ? v : NULL;
        return ok;
}
