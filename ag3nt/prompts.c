/* The system prompts, compiled in from ag3nt/prompts/ (see prompts.h). */
#include "prompts.h"

const char *prompts_system(HarnessFlavor flavor)
{
        const Fr0ntAsset *a = prompts_file(flavor == HARNESS_MANAGER ? "/manager.md" : "/agent.md");
        return a ? (const char *)a->data : "";
}
