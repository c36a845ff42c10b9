/* ot_config: settings from flags, then OT_* environment variables, then defaults. */
#ifndef OT_CONFIG_H
#define OT_CONFIG_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#define OT_MAX_KAFKA_PROPS 64
#define OT_BATCH_DEFAULT 256 /* records in one consumer transaction at most */
#define OT_BATCH_MAX 4096

struct ot_config {
	const char *tool;
	/* Owned strings; NULL until set. ot_config_finish fills every one. */
	char *brokers, *orders_db, *inventory_db, *payments_db, *redis_url, *log_level, *http_addr;
	char *group;          /* -G: consumer group, default "<tool>" */
	char *offset;         /* -o: beginning|end|stored|<n>|-<n>|s@<ms>, default "stored" */
	int exit_at_end;      /* -e */
	long count;           /* -c: stop after N records, 0 = no limit */
	int attempts;         /* --attempts: tries of one record before it is given up on */
	int batch;            /* --batch: records applied in one transaction at most (1: one each) */
	char *kafka_config;   /* -F: a file of librdkafka properties (OT_KAFKA_CONFIG) */
	/* librdkafka properties, "prop=val": the -F file's first, then -X, so -X wins. */
	char *props[OT_MAX_KAFKA_PROPS];
	size_t nprops;
};

/* Where a consumer group without a committed offset starts on a partition (-o). */
enum ot_offset_kind {
	OT_OFFSET_STORED,     /* "stored": the group's offset, else the earliest */
	OT_OFFSET_BEGINNING,  /* "beginning" */
	OT_OFFSET_END,        /* "end" */
	OT_OFFSET_ABS,        /* "<n>": offset n */
	OT_OFFSET_TAIL,       /* "-<n>": the last n records */
	OT_OFFSET_TIME        /* "s@<ms>": the first record at or after ms since the epoch */
};
struct ot_offset {
	enum ot_offset_kind kind;
	long long value;      /* n or ms; 0 for the named kinds */
};
/* The largest n of "-<n>": librdkafka encodes the tail as -2000 - n in an int64. */
#define OT_OFFSET_TAIL_MAX (9223372036854775807LL - 2000)

/* Parses an -o value: beginning, end, stored, <n> (n >= 0), -<n> (1 <= n <=
 * OT_OFFSET_TAIL_MAX) or s@<ms> (ms >= 0), numbers in plain decimal digits only. Returns 0
 * with *o filled, or -1 (s NULL or malformed; *o then zeroed). Pure: no allocation, no I/O. */
int ot_offset_parse(const char *s, struct ot_offset *o);

/* Short options and long options every tool accepts; a tool appends its own. */
#define OT_CONFIG_SHORTOPTS "b:G:o:ec:X:F:"
enum {
	OT_OPT_ORDERS_DB = 1000, OT_OPT_INVENTORY_DB, OT_OPT_REDIS, OT_OPT_LOG_LEVEL,
	OT_OPT_HTTP_ADDR, OT_OPT_ATTEMPTS, OT_OPT_BATCH, OT_OPT_PAYMENTS_DB, OT_OPT_TOOL_BASE = 1100
};
#define OT_CONFIG_LONGOPTS \
	{"brokers", required_argument, NULL, 'b'}, \
	{"group", required_argument, NULL, 'G'}, \
	{"offset", required_argument, NULL, 'o'}, \
	{"exit-at-end", no_argument, NULL, 'e'}, \
	{"count", required_argument, NULL, 'c'}, \
	{"kafka-config", required_argument, NULL, 'F'}, \
	{"orders-db", required_argument, NULL, OT_OPT_ORDERS_DB}, \
	{"inventory-db", required_argument, NULL, OT_OPT_INVENTORY_DB}, \
	{"payments-db", required_argument, NULL, OT_OPT_PAYMENTS_DB}, \
	{"redis", required_argument, NULL, OT_OPT_REDIS}, \
	{"log-level", required_argument, NULL, OT_OPT_LOG_LEVEL}, \
	{"http-addr", required_argument, NULL, OT_OPT_HTTP_ADDR}, \
	{"attempts", required_argument, NULL, OT_OPT_ATTEMPTS}, \
	{"batch", required_argument, NULL, OT_OPT_BATCH}

/* The lines of usage text for the options above. */
extern const char ot_config_usage[];

void ot_config_init(struct ot_config *c, const char *tool);
/* Handles one getopt result. Returns 1 if it was a common option, 0 if not, -1 on a bad
 * value (errstr says why). */
int ot_config_opt(struct ot_config *c, int opt, const char *arg, char *errstr, size_t errsz);
/* Reads librdkafka properties from path into c, ahead of the -X ones: one prop=value a line,
 * blank lines and lines starting with # ignored, space around prop and value trimmed. Returns
 * 0, or -1 with errstr naming the file and line but never a value (they hold secrets). */
int ot_config_read_kafka_file(struct ot_config *c, const char *path, char *errstr, size_t errsz);
/* Fills what flags left unset from OT_* variables, then defaults; validates; reads the -F
 * (or OT_KAFKA_CONFIG) file; starts logging, and the span exporter when OT_TRACE_URL is set.
 * Returns 0, or -1 with errstr. */
int ot_config_finish(struct ot_config *c, const char *default_http_addr, char *errstr, size_t errsz);
/* The service databases, each with its own schema (lib/store/sql/NAME), outbox and relay. */
#define OT_DB_NAMES "orders, inventory or payments"
extern const char *const ot_db_names[]; /* "orders", "inventory", "payments", NULL */
/* Whether name is one of ot_db_names. */
int ot_db_known(const char *name);
/* The connection string of the database name names (one of ot_db_names), or NULL. */
const char *ot_config_db(const struct ot_config *c, const char *name);

/* Stops the span exporter (joined; OT_TRACE_STOP_MS at most) and frees c's strings. */
void ot_config_free(struct ot_config *c);

/* What ot_config_arg did with one getopt_long result. */
enum { OT_ARG_TOOL = -1, OT_ARG_DONE = -2 };
/* The half of a tool's option loop that every tool shares: stores a shared option, prints
 * usage(stdout, 1) for -h and the version for -V, and reports a bad value or an unknown option
 * on stderr. Returns OT_ARG_DONE (on to the next option), OT_ARG_TOOL (the tool's own option,
 * for it to handle), or an exit status for main to return: 0 after -h or -V, 64 for a usage
 * error. */
int ot_config_arg(struct ot_config *c, int opt, const char *arg, void (*usage)(FILE *f, int full));

#endif
