/* hyperhive host protocol v1: the response envelope and the wire types, with encoders that
 * write keys in hyperhive's order and omit unset optional keys (never null), and decoders
 * that accept unknown keys (forward drift) but refuse wrong types. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define HIVE_PROTOCOL_VERSION 1

/* A client's request id (the optional "request_id" of the agent-socket verbs that a repeat
 * would carry out twice): 8 to 64 characters of A-Z a-z 0-9 _ -. */
#define PROTO_REQUEST_ID_MIN 8
#define PROTO_REQUEST_ID_MAX 64
bool proto_request_id_valid(const char *s);
/* Whether the agent-socket verb cmd takes a "request_id" (send, wake, ask, remind,
 * request_spawn, request_apply_commit, request_update_meta_inputs).  The daemon's verb table
 * flags the same verbs VERB_DEDUPE; a unit test keeps the two in step. */
bool proto_verb_takes_request_id(const char *cmd);

static inline void hive_json_decrefp(json_t **p)
{
        json_decref(*p);
}
#define _cleanup_json_ __attribute__((cleanup(hive_json_decrefp)))

/* One element of "agent_statuses" (research/hyperhive-interfaces.md §1.6). */
typedef struct AgentStatusRow {
        char *name;
        bool running;
        bool failed;
        bool needs_update;
        bool needs_login;
        char *deployed_sha; /* optional: first 12 hex chars */
        int64_t pending_reminders;
        bool paused;
        char *parent;        /* optional */
        char *active_model;  /* optional */
        char *status_text;   /* optional */
        char *status_set_at; /* optional, RFC 3339 UTC; set exactly when status_text is */
        char *url;           /* optional */
} AgentStatusRow;

/* The value of "urls"; every key optional. */
typedef struct HiveUrls {
        char *domain;
        char *home;
        char *forge;
        char *matrix;
} HiveUrls;

/* One element of "approvals". */
typedef struct Approval {
        int64_t id;
        char *agent;
        char *kind;
        char *commit_ref;
        char *fetched_sha; /* optional */
        char *requested_at;
        char *status;
        char *resolved_at; /* optional */
        char *note;        /* optional */
        char *description; /* optional */
} Approval;

void agent_status_row_done(AgentStatusRow *r);
void hive_urls_done(HiveUrls *u);
void approval_done(Approval *a);

/* Encoders return a new reference, or NULL on allocation failure. */
json_t *proto_agent_status_row_encode(const AgentStatusRow *r);
json_t *proto_urls_encode(const HiveUrls *u);
json_t *proto_approval_encode(const Approval *a);

/* Decoders fill *ret (owned by the caller, free with *_done()) and return 0, or -EBADMSG when
 * a key has the wrong type or a mandatory key is missing.  *ret is untouched on failure. */
int proto_agent_status_row_decode(const json_t *j, AgentStatusRow *ret);
int proto_urls_decode(const json_t *j, HiveUrls *ret);
int proto_approval_decode(const json_t *j, Approval *ret);

/* {"version":1,"ok":true}: the start of every successful response. */
json_t *proto_response_new(void);
/* {"version":1,"ok":false,"error":…[,"error_code":…]}; error_code may be NULL. */
json_t *proto_error_new(const char *error, const char *error_code);

/* Parses a request or answer line as json_loadb(line, len, JSON_REJECT_DUPLICATES, err) does,
 * with the same result, faster for the plain lines of the hot path.  Returns a new reference,
 * or NULL with *err set (err may be NULL). */
json_t *proto_parse_line(const char *line, size_t len, json_error_t *err);

/* How deep proto_dump_line follows nested objects and arrays (as deep as jansson parses). */
#define PROTO_DUMP_DEPTH_MAX 2048

/* Serialises an object or array j exactly as json_dumps(j, JSON_COMPACT) does, followed by
 * '\n'.  Returns a malloc'ed string (length in *ret_len when non-NULL), or NULL on allocation
 * failure, for another kind of j, or past PROTO_DUMP_DEPTH_MAX levels. */
char *proto_dump_line(const json_t *j, size_t *ret_len);

/* Checks a response envelope.  Returns 1 if ok is true, 0 if the daemon refused (then
 * *ret_error and *ret_code point into j; *ret_code may be NULL), -EPROTONOSUPPORT if the
 * version is not ours, -EBADMSG if the envelope is malformed. */
int proto_response_check(const json_t *j, const char **ret_error, const char **ret_code);
