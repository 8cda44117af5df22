/* Approvals: the manager proposes, the operator approves or denies, the daemon records every
 * outcome as an annotated tag in the agent's applied repo.
 *
 *   request_apply_commit → pending (commit fetched into applied, tagged proposal/<id>, the
 *     diff against the deployed commit stored)
 *   approve → approved/<id>, building/<id>; prepare (meta flake + lock pinned to the commit),
 *     build, then finalize (deployed/<id>, applied main moved, meta committed "deploy <n>
 *     deployed/<id> <sha12>", container restarted) or abort (failed/<id> with the build log
 *     tail, meta put back, applied main untouched)
 *   deny → denied/<id> with the operator's note
 *
 * The pipeline runs on the operations workers (key "meta", so one at a time) holding the meta
 * lock; the loop records each phase, so a daemon killed mid-pipeline finds the approval at
 * start-up (approvals_recover) and aborts it.  The manager hears approval_resolved in its
 * inbox for every outcome.  Loop thread only. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "daemon.h"

/* Manager requests.  Return 0 and the new approval's id, or a negative errno with a
 * sentence in *ret_error (nothing recorded). */
int approvals_request_apply_commit(Daemon *d, const char *agent, const char *commit_ref,
                                   const char *description, int64_t *ret_id, char **ret_error);
int approvals_request_spawn(Daemon *d, const char *name, const char *description, int64_t *ret_id,
                            char **ret_error);

/* inputs: a JSON array of input names of the meta flake (NULL or empty: every non-agent
 * input).  Approving updates them in flake.lock, commits meta, and marks every agent
 * needs_update when a locked input changed. */
int approvals_request_update_meta_inputs(Daemon *d, json_t *inputs, const char *description,
                                         int64_t *ret_id, char **ret_error);

/* Every approval, newest first, in hyperhive's Approval shape, appended to arr. */
int approvals_list(Daemon *d, json_t *arr);
/* One approval with what the pipeline knows ({approval, phase?, diff?, build_log?}) put
 * into resp.  -ENOENT. */
int approvals_show(Daemon *d, int64_t id, json_t *resp, char **ret_error);

/* The operator's decisions.  approve answers at once (the pipeline runs in the background);
 * both refuse an approval that is not pending (-EALREADY) or unknown (-ENOENT). */
int approvals_approve(Daemon *d, int64_t id, char **ret_error);
int approvals_deny(Daemon *d, int64_t id, const char *note, char **ret_error);

/* Start-up: aborts approvals a killed daemon left half-done, and readies the meta repo. */
int approvals_recover(Daemon *d);
