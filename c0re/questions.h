/* Structured questions: an agent (or the manager) asks the operator or a peer; the target
 * answers; the answer reaches the asker's inbox as a question_answered event. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define QUESTIONS_TTL_MAX     (6 * 3600) /* seconds */
#define QUESTIONS_TEXT_MAX    4096
#define QUESTIONS_OPTIONS_MAX 20
#define HIVE_SYSTEM_SENDER    "hive" /* sender of system events in inboxes */

/* Stores a question.  options may be NULL; deadline_ms 0 means none.  If target is a peer
 * (not "operator"), a question_asked event goes to its inbox.  Returns 0 and *ret_id. */
int questions_ask(Store *s, const char *asker, const char *target, const char *question,
                  const json_t *options, bool multi, int64_t deadline_ms, int64_t *ret_id);

/* Answers question id as answerer.  Unless operator_authority, only the target may answer.
 * The asker gets question_answered.  Returns 0 and the asker in *ret_asker (malloc'ed), or
 * -ENOENT (no such question), -EPERM (not the target), -EALREADY (answered already). */
int questions_answer(Store *s, int64_t id, const char *answerer, const char *answer,
                     bool operator_authority, char **ret_asker);

/* The asker (or the operator) withdraws a question: it is answered "[cancelled by WHO]".
 * Same errors as questions_answer(), -EPERM when who is not the asker. */
int questions_cancel(Store *s, int64_t id, const char *who, bool operator_authority);

/* Answers "[expired]" (answerer "ttl-watchdog") every question past its deadline at now_ms;
 * appends the askers that got an event to askers (a JSON array of strings).  Returns the
 * count. */
int questions_expire(Store *s, int64_t now_ms, json_t *askers);

/* The earliest deadline of an open question, or 0 if none. */
int questions_next_deadline(Store *s, int64_t *ret_ms);

/* Open (unanswered) questions into arr: all of them when who is NULL, else those asked by
 * or targeted at who. */
int questions_list_open(Store *s, const char *who, json_t *arr);
