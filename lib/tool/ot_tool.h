/* ot_tool: what every tool does once its options are read, whatever its job. */
#ifndef OT_TOOL_H
#define OT_TOOL_H

#include <stddef.h>
#include <stdio.h>

struct ot_config;
struct ot_health;
struct ot_health_deps;
struct ot_in;

/* The options every tool shares, in groups: a tool (or one of its subcommands) names the
 * groups it uses, and any other shared option is a usage error (64) for it. --log-level, -h
 * and -V are always taken. */
enum {
	OT_USE_KAFKA = 1 << 0,     /* -b, -X, -F: a Kafka client */
	OT_USE_CONSUMER = 1 << 1,  /* -G, -o, -e, -c, --attempts: a Kafka consumer */
	OT_USE_BATCH = 1 << 2,     /* --batch */
	OT_USE_ORDERS = 1 << 3,    /* --orders-db */
	OT_USE_INVENTORY = 1 << 4, /* --inventory-db */
	OT_USE_REDIS = 1 << 5,     /* --redis */
	OT_USE_HTTP = 1 << 6,      /* --http-addr */
	OT_USE_PAYMENTS = 1 << 7   /* --payments-db */
};

/* One option of a tool's own: key is its short letter, or a value from OT_OPT_TOOL_BASE for a
 * long option alone; arg names its value (NULL: it takes none); help is its usage line, which
 * may hold "\n" for more. */
struct ot_opt {
	const char *name;
	int key;
	const char *arg;
	const char *help;
};

/* How a command line reads. synopsis: the usage lines after the tool's name ("[-i INPUT]
 * [options]"); about: what it does, for -h. */
struct ot_cli {
	const char *synopsis, *about;
	unsigned use;              /* the shared groups it takes */
	const struct ot_opt *own;  /* its own options, own[0..n) */
	size_t n;
	/* Takes the value of one of its own options: 0, or an exit status (64 after saying why). */
	int (*take)(void *arg, int key, const char *val);
	void *arg;
	size_t stride;             /* bytes from one of own to the next, when each sits at the start
	                            * of a larger struct; 0: an array of struct ot_opt */
};

/* A consumer's input (spec: -, a file, kafka:TOPIC[,TOPIC]) opened, and for a long run from
 * Kafka (no -e, no -c) its health port served, deps naming what /readyz checks besides the
 * input. Returns the input with *health (NULL: nothing served), or NULL with the error logged
 * and *rc set. */
/* The API keys (comma-separated) must be worth guessing at: each at least OT_API_KEY_MIN
 * characters, none the example file's placeholder. 0, or -1 after saying on stderr which key
 * (by position, never the key) of those from where ("OT_API_KEY or --api-key"). */
#define OT_API_KEY_MIN 16
int ot_tool_check_keys(const char *tool, const char *keys, const char *from);

struct ot_in *ot_tool_input(struct ot_config *c, const char *spec, struct ot_health_deps *deps,
                            struct ot_health **health, int *rc);

/* A take for a tool whose one option of its own is a string: *(const char **)arg = val. */
int ot_tool_take_string(void *arg, int key, const char *val);

/* The option loop of a tool or subcommand: the shared options it uses go into c, its own to
 * cli->take; -h prints the usage (cli's synopsis and about, then every option it takes) on
 * stdout and returns 0 with *done set; -V the version. Returns 0 with *next the index of the
 * first operand, or the exit status for main to return (64 for an option it does not take). */
int ot_tool_args(struct ot_config *c, const struct ot_cli *cli, int argc, char **argv, int *next, int *done);
/* The short usage on f, as a usage error prints it. */
void ot_tool_usage(const struct ot_config *c, const struct ot_cli *cli, FILE *f);

/* A tool's start, all in one: ot_config_init, ot_tool_args (no operands: a usage error), then
 * ot_tool_start with default_http_addr. Returns 0 to go on, -1 when -h or -V was answered (exit
 * 0), or the exit status for main to return; c is freed unless it returns 0. */
int ot_tool_begin(struct ot_config *c, const char *tool, const struct ot_cli *cli, int argc, char **argv,
                  const char *default_http_addr);

/* A subcommand: its name and what runs it, with argv[0] its name. */
struct ot_sub {
	const char *name;
	int (*run)(int argc, char **argv);
};
/* Runs the subcommand argv[1] names from subs[0..n) with argc - 1, argv + 1, or, when argv[1]
 * names none (or is absent), fallback (NULL: a usage error, 64, listing the subcommands). */
int ot_tool_dispatch(const char *tool, const struct ot_sub *subs, size_t n, int (*fallback)(int, char **),
                     int argc, char **argv);

/* ot_config_finish (the environment, defaults, logging, metrics, tracing), then what the
 * config itself cannot check: a Redis URL that cannot work (its form, a CA file for rediss://
 * that does not load) is an error now, not a retry loop later. Returns 0, or -1 with errstr. */
int ot_tool_finish(struct ot_config *c, const char *default_http_addr, char *errstr, size_t errsz);
/* ot_tool_finish, then SIGINT and SIGTERM set ot_stop. On failure it says why on stderr
 * ("tool: why"), frees c and returns EX_CONFIG; else 0. default_http_addr: where a long run
 * listens unless told (NULL: nowhere). */
int ot_tool_start(struct ot_config *c, const char *default_http_addr);

#endif
