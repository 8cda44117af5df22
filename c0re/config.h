/* The daemon's configuration: one typed option table drives parsing, --help and
 * --check-config. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct HiveConfig {
        bool dev;
        bool check_config;
        char *state_dir;
        char *run_dir;
        char *backend;
        char *dashboard;
        char *log_level;
        char *domain;
        char *home_url;
        char *forge_url;
        char *matrix_url;
        int64_t max_clients;
        int64_t idle_timeout;
        int64_t lease_seconds;
        bool no_manager;
        char *agent_command;    /* NULL = the harness (hive-ag3nt / hive-m1nd serve) */
        char *nixos_container;  /* the nixos-container program */
        int64_t op_timeout;     /* seconds one nixos-container call may take */
        int64_t stop_grace;     /* seconds between SIGTERM and SIGKILL on stop */
        int64_t crash_interval; /* seconds between crash-watch sweeps */
        char *templates_dir;    /* the seed of a new agent's config repo */
        char *nixpkgs;          /* flake ref of the meta flake's nixpkgs input */
        char *builder;          /* NULL: nix build; else a command (sh -c) given the attribute */
        char **payload_env;     /* NAME=VALUE for every payload, NULL-terminated (or NULL);
                                 * after config_finalize each NAME once */
} HiveConfig;

/* Parses `serve` options (argv[0] is "serve").  Defaults depend on --dev wherever it stands.
 * Returns 0, 1 when --help was printed, or -EINVAL after printing a message naming the
 * option and what it accepts. */
int config_parse(HiveConfig *c, int argc, char **argv);

/* Fills in paths derived from others and checks every value.  Returns 0 or -EINVAL after
 * printing why. */
int config_finalize(HiveConfig *c);

void config_done(HiveConfig *c);
void config_print_help(FILE *f);
/* Prints the resolved configuration, one "name = value" line per option. */
void config_dump(const HiveConfig *c, FILE *f);

/* The host socket path: <run_dir>/host.sock (malloc'ed, or NULL). */
char *config_host_socket(const HiveConfig *c);
