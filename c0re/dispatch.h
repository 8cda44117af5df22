/* Verb tables and the generic checks every request passes before its handler: JSON object,
 * known "cmd", protocol version, field types, mandatory fields.  Handlers contain only their
 * logic. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "store.h"

typedef struct DispatchCtx {
        void *userdata; /* the socket's owner (the daemon, an agent endpoint) */
        void *origin;   /* where the request came from (a ServerConn), or NULL */
        int error;
        char *error_msg;
} DispatchCtx;

/* Fills resp (which already holds "version" and "ok") with the answer's keys and returns 0,
 * or returns a negative errno, normally through dispatch_fail().  Returns DISPATCH_PARKED
 * when it took the request over and will answer later through ctx->origin. */
#define DISPATCH_PARKED 1
typedef int (*VerbHandler)(DispatchCtx *ctx, json_t *req, json_t *resp);

typedef enum {
        FT_STRING,
        FT_INT,
        FT_BOOL,
        FT_OBJECT,
        FT_ARRAY,
} FieldType;

typedef struct FieldSpec {
        const char *name;
        FieldType type;
        bool required;
} FieldSpec;

enum {
        VERB_STREAM = 1u << 0, /* the connection becomes a push stream after the answer */
        /* takes "request_id": a repeat is answered as the first time, not carried out again
         * (see dispatch_line) */
        VERB_DEDUPE = 1u << 1,
};

typedef struct VerbSpec {
        const char *cmd;
        VerbHandler handler;
        const FieldSpec *fields; /* terminated by {NULL}; may be NULL */
        unsigned flags;
        const char *summary;
} VerbSpec;

typedef struct VerbTable {
        const char *socket; /* for messages: "host.sock" */
        const VerbSpec *verbs;
        size_t n_verbs;
        /* For VERB_DEDUPE verbs: the store that keeps the answers to request ids, and whose
         * ids they are (the socket's identity).  NULL: "request_id" is ignored. */
        Store *(*dedupe_store)(void *userdata);
        const char *(*dedupe_identity)(void *userdata);
} VerbTable;

/* Records a sentence for the reply and returns error (a negative errno).  Always returns
 * error, even when formatting fails. */
int dispatch_fail(DispatchCtx *ctx, int error, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Handles one request line and produces one response line (with '\n', malloc'ed) in *ret.
 * A VERB_DEDUPE verb with a "request_id" (on a table with dedupe_store) is looked up first:
 * an id this identity used for the same verb gets the answer recorded then, one used for
 * another verb EINVAL; a new one runs the handler in a savepoint of a durable write batch
 * and, on success, records the answer in it (a refusal or a parked request records
 * nothing).
 * *ret_verb is the matched verb or NULL.  Returns 1 if the response says ok, 0 if it is a
 * refusal, 2 if the handler parked the request (*ret is then NULL), -ENOMEM if no response
 * could be built. */
int dispatch_line(const VerbTable *t, void *userdata, void *origin, const char *line, size_t len,
                  char **ret, size_t *ret_len, const VerbSpec **ret_verb);

const VerbSpec *dispatch_find(const VerbTable *t, const char *cmd);
