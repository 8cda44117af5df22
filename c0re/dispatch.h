/* Verb tables and the generic checks every request passes before its handler: JSON object,
 * known "cmd", protocol version, field types, mandatory fields.  Handlers contain only their
 * logic. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

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
} VerbTable;

/* Records a sentence for the reply and returns error (a negative errno).  Always returns
 * error, even when formatting fails. */
int dispatch_fail(DispatchCtx *ctx, int error, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Handles one request line and produces one response line (with '\n', malloc'ed) in *ret.
 * *ret_verb is the matched verb or NULL.  Returns 1 if the response says ok, 0 if it is a
 * refusal, 2 if the handler parked the request (*ret is then NULL), -ENOMEM if no response
 * could be built. */
int dispatch_line(const VerbTable *t, void *userdata, void *origin, const char *line, size_t len,
                  char **ret, size_t *ret_len, const VerbSpec **ret_verb);

const VerbSpec *dispatch_find(const VerbTable *t, const char *cmd);
