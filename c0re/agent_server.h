/* The per-agent sockets (<run>/agents/<name>/mcp.sock) and the manager's
 * (<run>/manager/mcp.sock): the sender of every request is the socket it came in on.  Owns
 * the parked long-poll receivers. */
#pragma once

#include "daemon.h"

typedef struct AgentServer AgentServer;

#define MANAGER_NAME  "manager" /* the manager's identity on the wire */
#define OPERATOR_NAME "operator"

/* Creates the manager's socket and one socket per live agent in the registry. */
int agent_server_new(Daemon *d, AgentServer **ret);
AgentServer *agent_server_free(AgentServer *as);

/* Creates the socket of a newly registered agent (idempotent). */
int agent_server_register(AgentServer *as, const char *name);
/* Closes and removes the socket of an agent that is gone. */
void agent_server_unregister(AgentServer *as, const char *name);

/* A message for recipient was written in the open batch: hand it to a parked recv. */
void agent_server_wake(AgentServer *as, const char *recipient);

/* Validates a recipient and expands it: "*" is every agent but the sender.  Returns a
 * NULL-terminated vector of identities, or -ENOENT / -EINVAL with a sentence in ctx. */
int agent_server_resolve_to(Daemon *d, DispatchCtx *ctx, const char *from, const char *to,
                            char ***ret);

/* The send verb, shared by agents and the operator (host.sock): validates {to, body,
 * in_reply_to?} and stores the message(s) from `from`, answering {id} (or {ids} for "*"). */
int agent_server_send(Daemon *d, DispatchCtx *ctx, const char *from, json_t *req, json_t *resp);

/* Reads req["ids"] (1 to 256 positive integers) into a malloc'ed array. */
int agent_server_ids(DispatchCtx *ctx, json_t *req, int64_t **ret, size_t *ret_n);
/* The same for req[key]. */
int agent_server_ids_of(DispatchCtx *ctx, json_t *req, const char *key, int64_t **ret,
                        size_t *ret_n);

/* The answer verb {id, answer}: by the question's target, or anyone with operator authority
 * (host.sock).  Wakes the asker. */
int agent_server_answer(Daemon *d, DispatchCtx *ctx, const char *who, bool operator_authority,
                        json_t *req);
/* A question's target must be the operator, the manager or a live agent, and not `from`. */
int agent_server_check_target(Daemon *d, DispatchCtx *ctx, const char *from, const char *to);

/* The verbs of the agent and manager sockets (the handlers want an endpoint as userdata;
 * exported for the unit tests' look at its flags). */
extern const VerbTable agent_verb_table;

/* Field tables shared by the agent sockets and host.sock. */
extern const FieldSpec agent_send_fields[];          /* to, body, in_reply_to? */
extern const FieldSpec agent_ack_fields[];           /* ids */
extern const FieldSpec agent_answer_fields[];        /* id, answer */
extern const FieldSpec agent_limit_fields[];         /* limit? */
extern const FieldSpec agent_request_spawn_fields[]; /* name, description? */
