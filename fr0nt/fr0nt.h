/* The shared web assets (hive.css, hive.js, the pages), compiled into the binaries by
 * fr0nt-embed (embed.c) at build time. */
#pragma once

#include <stddef.h>

typedef struct {
        const char *path;          /* "/static/hive.css", "/agent.html" */
        const unsigned char *data; /* the file's bytes, followed by a NUL not counted in len */
        size_t len;
        const char *content_type; /* "text/css; charset=utf-8", ... */
} Fr0ntAsset;

/* The asset served at path, or NULL.  Static data: never freed. */
const Fr0ntAsset *fr0nt_asset(const char *path);
