/* ot_tool: what every tool does once its options are read, whatever its job. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_redis.h"
#include "ot_signal.h"
#include "ot_tool.h"

int
ot_tool_finish(struct ot_config *c, const char *default_http_addr, char *errstr, size_t errsz)
{
	struct ot_redis_url ru;

	if (ot_config_finish(c, default_http_addr, errstr, errsz) ||
	    ot_redis_parse_url(c->redis_url, &ru, errstr, errsz) || ot_redis_tls_check(&ru, errstr, errsz))
		return -1;
	return 0;
}

int
ot_tool_start(struct ot_config *c, const char *default_http_addr)
{
	char err[1024];

	if (ot_tool_finish(c, default_http_addr, err, sizeof err)) {
		fprintf(stderr, "%s: %s\n", c->tool, err);
		ot_config_free(c);
		return EX_CONFIG;
	}
	ot_signal_install();
	return 0;
}

/* The shared options: the group that takes each, and its usage line. */
static const struct shared {
	struct ot_opt o;
	unsigned use;     /* 0: every tool */
} shared[] = {
	{{"brokers", 'b', "LIST", "Kafka bootstrap servers (OT_KAFKA_BROKERS)"}, OT_USE_KAFKA},
	{{NULL, 'X', "PROP=VAL", "librdkafka property (wins over -F)"}, OT_USE_KAFKA},
	{{"kafka-config", 'F', "FILE", "librdkafka properties, prop=value a line: SASL and TLS settings\n"
	  "stay off the command line (OT_KAFKA_CONFIG)"}, OT_USE_KAFKA},
	{{"group", 'G', "ID", "Kafka consumer group (default: the tool's name)"}, OT_USE_CONSUMER},
	{{"offset", 'o', "WHERE", "where a group without a committed offset starts:\n"
	  "beginning|end|stored|<offset>|-<count>|s@<ms> (default: stored)"}, OT_USE_CONSUMER},
	{{"exit-at-end", 'e', NULL, "exit at the end of every partition"}, OT_USE_CONSUMER},
	{{"count", 'c', "N", "stop after N input records"}, OT_USE_CONSUMER},
	{{"attempts", OT_OPT_ATTEMPTS, "N", "tries of one record before giving up on it (OT_RETRY_ATTEMPTS, 8)"},
	 OT_USE_CONSUMER},
	{{"batch", OT_OPT_BATCH, "N", "records handled in one transaction at most (OT_BATCH, 256;\n"
	  "1 = a transaction each)"}, OT_USE_BATCH},
	{{"orders-db", OT_OPT_ORDERS_DB, "CONN", "orders database (OT_ORDERS_DB)"}, OT_USE_ORDERS},
	{{"inventory-db", OT_OPT_INVENTORY_DB, "CONN", "inventory database (OT_INVENTORY_DB)"}, OT_USE_INVENTORY},
	{{"payments-db", OT_OPT_PAYMENTS_DB, "CONN", "payments database (OT_PAYMENTS_DB)"}, OT_USE_PAYMENTS},
	{{"redis", OT_OPT_REDIS, "URL", "redis://[[user]:pass@]host:port/db, rediss://... (TLS) or\n"
	  "unix:///path (OT_REDIS_URL)"}, OT_USE_REDIS},
	{{"http-addr", OT_OPT_HTTP_ADDR, "ADDR", "[host:]port for health and metrics (OT_HTTP_ADDR)"}, OT_USE_HTTP},
	{{"log-level", OT_OPT_LOG_LEVEL, "LEVEL", "debug|info|warn|error (OT_LOG_LEVEL)"}, 0},
	{{"help", 'h', NULL, "this help"}, 0},
	{{"version", 'V', NULL, "print the version"}, 0},
};
#define NSHARED (sizeof shared / sizeof *shared)
#define MAX_OPTS 64

static void
usage_line(FILE *f, const struct ot_opt *o)
{
	char head[64];
	const char *p, *nl;
	int n;

	if (o->key > 0 && o->key < 128)
		n = snprintf(head, sizeof head, "  -%c%s%s%s", o->key, o->name ? ", --" : "", o->name ? o->name : "",
		             "");
	else
		n = snprintf(head, sizeof head, "      --%s", o->name);
	if (o->arg)
		n += snprintf(head + n, sizeof head - (size_t)n, " %s", o->arg);
	if (n > 25) /* the help goes on a line of its own */
		fprintf(f, "%s\n%26s", head, "");
	else
		fprintf(f, "%-25s ", head);
	for (p = o->help; (nl = strchr(p, '\n')); p = nl + 1)
		fprintf(f, "%.*s\n%26s", (int)(nl - p), p, "");
	fprintf(f, "%s\n", p);
}

void
ot_tool_usage(const struct ot_config *c, const struct ot_cli *cli, FILE *f)
{
	fprintf(f, "usage: %s %s\n", c->tool, cli->synopsis);
}

/* The i-th of cli's own options. */
static const struct ot_opt *
own(const struct ot_cli *cli, size_t i)
{
	return (const struct ot_opt *)((const char *)cli->own + i * (cli->stride ? cli->stride : sizeof *cli->own));
}

static void
help(const struct ot_config *c, const struct ot_cli *cli)
{
	size_t i;

	ot_tool_usage(c, cli, stdout);
	if (cli->about)
		printf("\n%s\n", cli->about);
	putchar('\n');
	for (i = 0; i < cli->n; i++)
		if (own(cli, i)->help)
			usage_line(stdout, own(cli, i));
	for (i = 0; i < NSHARED; i++)
		if (!shared[i].use || (shared[i].use & cli->use))
			usage_line(stdout, &shared[i].o);
}

/* getopt_long's tables for what cli takes. */
static int
tables(const struct ot_cli *cli, struct option *lo, char *so, size_t sosz)
{
	size_t i, n = 0, k = 0;
	const struct ot_opt *o;

	for (i = 0; i < cli->n + NSHARED; i++) {
		o = i < cli->n ? own(cli, i) : &shared[i - cli->n].o;
		if (i >= cli->n && shared[i - cli->n].use && !(shared[i - cli->n].use & cli->use))
			continue;
		if (n + 1 >= MAX_OPTS || k + 3 >= sosz)
			return -1;
		if (o->name)
			lo[n++] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->key};
		if (o->key > 0 && o->key < 128) {
			so[k++] = (char)o->key;
			if (o->arg)
				so[k++] = ':';
		}
	}
	lo[n] = (struct option){NULL, 0, NULL, 0};
	so[k] = '\0';
	return 0;
}

int
ot_tool_check_keys(const char *tool, const char *keys, const char *from)
{
	const char *k, *end;
	size_t n;
	int i = 0, count = 1;

	for (k = keys; *k; k++)
		count += *k == ',';
	for (k = keys;; k = end + 1) {
		end = k + strcspn(k, ",");
		n = (size_t)(end - k);
		i++;
		if (n < OT_API_KEY_MIN) {
			fprintf(stderr, "%s: API key %d of %d (%s) is %s: use at least %d random characters, e.g. from "
			        "openssl rand -hex 32\n", tool, i, count, from,
			        n == 9 && !strncmp(k, "CHANGE-ME", 9) ? "the example file's placeholder"
			        : n ? "too short" : "empty", OT_API_KEY_MIN);
			return -1;
		}
		if (!*end)
			return 0;
	}
}

struct ot_in *
ot_tool_input(struct ot_config *c, const char *spec, struct ot_health_deps *deps, struct ot_health **health,
              int *rc)
{
	struct ot_in *in;
	char err[1024];

	*health = NULL;
	if (!(in = ot_in_open(spec, c, rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		return NULL;
	}
	deps->in = in;
	*rc = OT_OK;
	if (!(*health = ot_health_serve(c, ot_in_is_kafka(in) && !c->exit_at_end && !c->count, deps, rc, err,
	                                sizeof err)) && *rc) {
		OT_ERROR(NULL, "%s", err);
		ot_in_free(in);
		return NULL;
	}
	return in;
}

int
ot_tool_take_string(void *arg, int key, const char *val)
{
	(void)key;
	*(const char **)arg = val;
	return 0;
}

int
ot_tool_args(struct ot_config *c, const struct ot_cli *cli, int argc, char **argv, int *next, int *done)
{
	struct option lo[MAX_OPTS];
	char so[2 * MAX_OPTS + 2], err[512];
	size_t i;
	int opt, r;

	*done = 0;
	if (tables(cli, lo, so, sizeof so)) {
		fprintf(stderr, "%s: too many options\n", c->tool);
		return EX_SOFTWARE;
	}
	/* A subcommand's argv starts at its name (ot_tool_dispatch), so its options and operands
	 * may come in any order after it. */
	optind = 1;
	while ((opt = getopt_long(argc, argv, so, lo, NULL)) != -1) {
		if (opt == 'h') {
			help(c, cli);
			*done = 1;
			return EX_OK;
		}
		if (opt == 'V') {
			puts(OT_VERSION);
			*done = 1;
			return EX_OK;
		}
		if (opt == '?' || opt == ':') {
			ot_tool_usage(c, cli, stderr);
			return EX_USAGE;
		}
		for (i = 0; i < cli->n && own(cli, i)->key != opt; i++)
			;
		if (i < cli->n) {
			if ((r = cli->take(cli->arg, opt, optarg)))
				return r;
			continue;
		}
		if (ot_config_opt(c, opt, optarg, err, sizeof err) < 0) {
			fprintf(stderr, "%s: %s\n", c->tool, err);
			return EX_USAGE;
		}
	}
	*next = optind;
	return 0;
}

int
ot_tool_dispatch(const char *tool, const struct ot_sub *subs, size_t n, int (*fallback)(int, char **), int argc,
                 char **argv)
{
	size_t i;

	for (i = 0; argc > 1 && i < n; i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].run(argc - 1, argv + 1);
	if (fallback)
		return fallback(argc, argv);
	fprintf(stderr, "usage: %s", tool);
	for (i = 0; i < n; i++)
		fprintf(stderr, "%s%s", i ? "|" : " ", subs[i].name);
	fprintf(stderr, " [options] (%s COMMAND -h for each)\n", tool);
	return EX_USAGE;
}

int
ot_tool_begin(struct ot_config *c, const char *tool, const struct ot_cli *cli, int argc, char **argv,
              const char *default_http_addr)
{
	int rc, next, done;

	ot_config_init(c, tool);
	if ((rc = ot_tool_args(c, cli, argc, argv, &next, &done)) || done) {
		ot_config_free(c);
		return rc ? rc : -1;
	}
	if (next < argc) {
		ot_tool_usage(c, cli, stderr);
		ot_config_free(c);
		return EX_USAGE;
	}
	return ot_tool_start(c, default_http_addr); /* frees c when it fails */
}
