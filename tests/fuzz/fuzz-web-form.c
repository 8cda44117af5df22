/* libFuzzer target: the agent page's form parser (every POST body goes through it). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        WebForm f;
        char *err = NULL;
        int r = web_form_parse((const char *)data, size, &f, &err);
        if (r < 0) {
                if (r == -EINVAL && !err)
                        abort(); /* a refusal always says why */
                free(err);
                return 0;
        }
        if (err)
                abort();
        for (size_t i = 0; i < f.n; i++) {
                /* names are unique and non-empty, values NUL-free strings */
                if (!f.fields[i].name[0])
                        abort();
                if (web_form_get(&f, f.fields[i].name) != f.fields[i].value)
                        abort();
                (void)strlen(f.fields[i].value);
        }
        web_form_done(&f);
        return 0;
}
