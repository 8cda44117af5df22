/* Agent status rows, following hyperhive's rules: status text only while running, sha cut to
 * 12 characters, url only when the hive has a domain. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "container_view.h"
#include "timeutil.h"

static int dup_opt(const char *s, char **ret)
{
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int container_view_row(const HiveConfig *cfg, const AgentRecord *a, AgentStatusRow *ret)
{
        AgentStatusRow r = {
                .running = strcmp(a->status, "running") == 0,
                .failed = strcmp(a->status, "failed") == 0,
                .paused = a->paused,
                .needs_update = a->needs_update,
                .needs_login = a->needs_login,
        };
        int k = dup_opt(a->name, &r.name);
        if (k >= 0 && a->deployed_sha) {
                r.deployed_sha = strndup(a->deployed_sha, 12);
                k = r.deployed_sha ? 0 : -ENOMEM;
        }
        if (k >= 0)
                k = dup_opt(a->parent, &r.parent);
        if (k >= 0)
                k = dup_opt(a->active_model, &r.active_model);
        /* Stale status text of a stopped container is hidden (hyperhive does the same). */
        if (k >= 0 && r.running && a->status_text) {
                k = dup_opt(a->status_text, &r.status_text);
                if (k >= 0) {
                        char ts[TIMEUTIL_RFC3339_MAX];
                        timeutil_rfc3339(a->status_set_at, ts);
                        k = dup_opt(ts, &r.status_set_at);
                }
        }
        if (k >= 0 && cfg->domain &&
            asprintf(&r.url, "https://%s/agent/%s/", cfg->domain, a->name) < 0) {
                r.url = NULL;
                k = -ENOMEM;
        }
        if (k < 0) {
                agent_status_row_done(&r);
                return k;
        }
        *ret = r;
        return 0;
}
