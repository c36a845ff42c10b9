/* ot_config: flags, then OT_* variables, then defaults. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <sys/stat.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_trace.h"

const char ot_config_usage[] =
	"  -b, --brokers LIST      Kafka bootstrap servers (OT_KAFKA_BROKERS)\n"
	"  -G, --group ID          Kafka consumer group (default: the tool's name)\n"
	"  -o, --offset WHERE      where a group without a committed offset starts:\n"
	"                          beginning|end|stored|<offset>|-<count>|s@<ms> (default: stored)\n"
	"  -e, --exit-at-end       exit at the end of every partition\n"
	"  -c, --count N           stop after N input records\n"
	"  -X PROP=VAL             librdkafka property (wins over -F)\n"
	"  -F, --kafka-config FILE librdkafka properties, prop=value a line: SASL and TLS settings\n"
	"                          stay off the command line (OT_KAFKA_CONFIG)\n"
	"      --orders-db CONN    orders database (OT_ORDERS_DB)\n"
	"      --inventory-db CONN inventory database (OT_INVENTORY_DB)\n"
	"      --payments-db CONN  payments database (OT_PAYMENTS_DB)\n"
	"      --redis URL         redis://[[user]:pass@]host:port/db, rediss://... (TLS) or\n"
	"                          unix:///path (OT_REDIS_URL)\n"
	"      --log-level LEVEL   debug|info|warn|error (OT_LOG_LEVEL)\n"
	"      --http-addr ADDR    [host:]port for health and metrics (OT_HTTP_ADDR)\n"
	"      --attempts N        tries of one record before giving up on it (OT_RETRY_ATTEMPTS, 8)\n"
	"      --batch N           records (outbox rows, for ot-relay) handled in one transaction\n"
	"                          at most (OT_BATCH, 256; 1 = a transaction each)\n";

/* Plain decimal digits, at least one, no sign, space or overflow. */
static int
digits(const char *s, long long *v)
{
	long long n = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || n > (LLONG_MAX - (*s - '0')) / 10)
			return -1;
		n = n * 10 + (*s - '0');
	}
	*v = n;
	return 0;
}

int
ot_offset_parse(const char *s, struct ot_offset *o)
{
	long long v = 0;

	memset(o, 0, sizeof *o);
	if (!s)
		return -1;
	if (!strcmp(s, "stored"))
		o->kind = OT_OFFSET_STORED;
	else if (!strcmp(s, "beginning"))
		o->kind = OT_OFFSET_BEGINNING;
	else if (!strcmp(s, "end"))
		o->kind = OT_OFFSET_END;
	else if (!strncmp(s, "s@", 2) && !digits(s + 2, &v))
		*o = (struct ot_offset){OT_OFFSET_TIME, v};
	else if (s[0] == '-' && !digits(s + 1, &v) && v >= 1 && v <= OT_OFFSET_TAIL_MAX)
		*o = (struct ot_offset){OT_OFFSET_TAIL, v};
	else if (!digits(s, &v))
		*o = (struct ot_offset){OT_OFFSET_ABS, v};
	else
		return -1;
	return 0;
}

static void
set(char **dst, const char *val)
{
	free(*dst);
	*dst = val ? strdup(val) : NULL;
}

void
ot_config_init(struct ot_config *c, const char *tool)
{
	memset(c, 0, sizeof *c);
	c->tool = tool;
}

/* A whole decimal number within [lo, hi] into *out. Returns 0, or -1 leaving *out alone. */
static int
int_in(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

int
ot_config_opt(struct ot_config *c, int opt, const char *arg, char *errstr, size_t errsz)
{
	struct ot_offset off;
	char *end;

	switch (opt) {
	case 'b': set(&c->brokers, arg); return 1;
	case 'G': set(&c->group, arg); return 1;
	case 'o':
		if (ot_offset_parse(arg, &off))
			return ot_err(-1, errstr, errsz, "-o %s: expected beginning, end, stored, "
			              "an offset, -<count> or s@<ms>", arg);
		set(&c->offset, arg);
		return 1;
	case 'e': c->exit_at_end = 1; return 1;
	case 'c':
		errno = 0;
		c->count = strtol(arg, &end, 10);
		if (errno || *end || end == arg || c->count < 0)
			return ot_err(-1, errstr, errsz, "-c %s: expected a count >= 0", arg);
		return 1;
	case 'X':
		if (!strchr(arg, '=') || arg[0] == '=')
			return ot_err(-1, errstr, errsz, "-X %s: expected prop=value", arg);
		if (c->nprops == OT_MAX_KAFKA_PROPS)
			return ot_err(-1, errstr, errsz, "-X: at most %d properties", OT_MAX_KAFKA_PROPS);
		c->props[c->nprops++] = strdup(arg);
		return 1;
	case 'F': set(&c->kafka_config, arg); return 1;
	case OT_OPT_ORDERS_DB: set(&c->orders_db, arg); return 1;
	case OT_OPT_INVENTORY_DB: set(&c->inventory_db, arg); return 1;
	case OT_OPT_PAYMENTS_DB: set(&c->payments_db, arg); return 1;
	case OT_OPT_REDIS: set(&c->redis_url, arg); return 1;
	case OT_OPT_LOG_LEVEL: set(&c->log_level, arg); return 1;
	case OT_OPT_HTTP_ADDR: set(&c->http_addr, arg); return 1;
	case OT_OPT_ATTEMPTS:
		if (int_in(arg, 1, 1000, &c->attempts))
			return ot_err(-1, errstr, errsz, "--attempts %s: expected 1 to 1000", arg);
		return 1;
	case OT_OPT_BATCH:
		if (int_in(arg, 1, OT_BATCH_MAX, &c->batch))
			return ot_err(-1, errstr, errsz, "--batch %s: expected 1 to %d", arg, OT_BATCH_MAX);
		return 1;
	default: return 0;
	}
}

int
ot_config_read_kafka_file(struct ot_config *c, const char *path, char *errstr, size_t errsz)
{
	char *file[OT_MAX_KAFKA_PROPS], *line = NULL, *k, *v, *eq, *end;
	struct stat sb;
	size_t cap = 0, n = 0, i;
	long lineno = 0;
	int rc = -1;
	FILE *f;

	if (!(f = fopen(path, "r")))
		return ot_err(-1, errstr, errsz, "-F %s: %s", path, strerror(errno));
	/* It holds SASL passwords and key passphrases: only its owner (and group) should read it. */
	if (!fstat(fileno(f), &sb) && (sb.st_mode & (S_IROTH | S_IWOTH)))
		OT_WARN(NULL, "-F %s can be read%s by every user of this machine, and may hold passwords: "
		        "chmod o-rwx %s", path, sb.st_mode & S_IWOTH ? " and written" : "", path);
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		for (k = line; *k == ' ' || *k == '\t'; k++)
			;
		end = k + strlen(k);
		while (end > k && strchr(" \t\r\n", end[-1]))
			*--end = '\0';
		if (!*k || *k == '#')
			continue;
		if (!(eq = strchr(k, '=')) || eq == k) {
			ot_err(-1, errstr, errsz, "%s:%ld: expected property=value", path, lineno);
			goto out;
		}
		for (v = eq + 1; *v == ' ' || *v == '\t'; v++)
			;
		while (eq > k && (eq[-1] == ' ' || eq[-1] == '\t'))
			eq--;
		*eq = '\0';
		if (!*k) {
			ot_err(-1, errstr, errsz, "%s:%ld: expected property=value", path, lineno);
			goto out;
		}
		if (n + c->nprops >= OT_MAX_KAFKA_PROPS) {
			ot_err(-1, errstr, errsz, "%s: with -X, at most %d properties", path, OT_MAX_KAFKA_PROPS);
			goto out;
		}
		if (asprintf(&file[n], "%s=%s", k, v) < 0) {
			ot_err(-1, errstr, errsz, "%s: out of memory", path);
			goto out;
		}
		n++;
	}
	if (ferror(f)) {
		ot_err(-1, errstr, errsz, "-F %s: read error", path);
		goto out;
	}
	/* The file's first, so a -X given for one run overrides it. */
	memmove(c->props + n, c->props, c->nprops * sizeof c->props[0]);
	memcpy(c->props, file, n * sizeof file[0]);
	c->nprops += n;
	n = 0;
	rc = 0;
out:
	for (i = 0; i < n; i++)
		free(file[i]);
	free(line);
	fclose(f);
	return rc;
}

static void
fill(char **dst, const char *env, const char *def)
{
	const char *v;

	if (*dst)
		return;
	v = getenv(env);
	set(dst, v && *v ? v : def);
}

int
ot_config_finish(struct ot_config *c, const char *default_http_addr, char *errstr, size_t errsz)
{
	struct ot_offset off;

	fill(&c->brokers, "OT_KAFKA_BROKERS", "localhost:9092");
	fill(&c->orders_db, "OT_ORDERS_DB", "dbname=ot_orders");
	fill(&c->inventory_db, "OT_INVENTORY_DB", "dbname=ot_inventory");
	fill(&c->payments_db, "OT_PAYMENTS_DB", "dbname=ot_payments");
	fill(&c->redis_url, "OT_REDIS_URL", "redis://127.0.0.1:6379/0");
	fill(&c->log_level, "OT_LOG_LEVEL", "info");
	/* Set and empty is a choice here: no listener (a pipeline's stage). */
	if (!c->http_addr)
		set(&c->http_addr, getenv("OT_HTTP_ADDR") ? getenv("OT_HTTP_ADDR")
		                   : default_http_addr ? default_http_addr : "");
	fill(&c->group, "OT_KAFKA_GROUP", c->tool);
	fill(&c->offset, "OT_KAFKA_OFFSET", "stored");
	if (ot_offset_parse(c->offset, &off))
		return ot_err(-1, errstr, errsz, "OT_KAFKA_OFFSET=%s: expected beginning, end, stored, "
		              "an offset, -<count> or s@<ms>", c->offset);
	if (!c->attempts) {
		const char *v = getenv("OT_RETRY_ATTEMPTS");
		if (!v || !*v)
			c->attempts = 8;
		else if (int_in(v, 1, 1000, &c->attempts))
			return ot_err(-1, errstr, errsz, "OT_RETRY_ATTEMPTS=%s: expected 1 to 1000", v);
	}
	if (!c->batch) {
		const char *v = getenv("OT_BATCH");
		if (!v || !*v)
			c->batch = OT_BATCH_DEFAULT;
		else if (int_in(v, 1, OT_BATCH_MAX, &c->batch))
			return ot_err(-1, errstr, errsz, "OT_BATCH=%s: expected 1 to %d", v, OT_BATCH_MAX);
	}
	fill(&c->kafka_config, "OT_KAFKA_CONFIG", NULL);
	if (c->kafka_config && *c->kafka_config &&
	    ot_config_read_kafka_file(c, c->kafka_config, errstr, errsz))
		return -1;
	if (ot_log_parse_level(c->log_level) < 0)
		return ot_err(-1, errstr, errsz, "log level \"%s\": expected debug, info, warn or error",
		              c->log_level);
	ot_log_init(c->tool, c->log_level);
	ot_metrics_set_tool(c->tool);
	/* Spans leave the process only where OT_TRACE_URL points; ot_config_free stops the exporter. */
	return ot_trace_start(c->tool, getenv("OT_TRACE_URL"), errstr, errsz);
}

void
ot_config_free(struct ot_config *c)
{
	size_t i;

	if (!c)
		return;
	ot_trace_stop(OT_TRACE_STOP_MS);
	free(c->brokers); free(c->orders_db); free(c->inventory_db); free(c->payments_db); free(c->redis_url);
	free(c->log_level); free(c->http_addr); free(c->group); free(c->offset); free(c->kafka_config);
	for (i = 0; i < c->nprops; i++)
		free(c->props[i]);
	memset(c, 0, sizeof *c);
}

int
ot_config_arg(struct ot_config *c, int opt, const char *arg, void (*usage)(FILE *f, int full))
{
	char err[512];
	int r = ot_config_opt(c, opt, arg, err, sizeof err);

	if (r == 1)
		return OT_ARG_DONE;
	if (r < 0) {
		fprintf(stderr, "%s: %s\n", c->tool, err);
		return EX_USAGE;
	}
	switch (opt) {
	case 'h':
		usage(stdout, 1);
		return EX_OK;
	case 'V':
		puts(OT_VERSION);
		return EX_OK;
	case '?':
	case ':':
		usage(stderr, 0);
		return EX_USAGE;
	default:
		return OT_ARG_TOOL;
	}
}

const char *const ot_db_names[] = {"orders", "inventory", "payments", NULL};

int
ot_db_known(const char *name)
{
	for (size_t i = 0; name && ot_db_names[i]; i++)
		if (!strcmp(name, ot_db_names[i]))
			return 1;
	return 0;
}

const char *
ot_config_db(const struct ot_config *c, const char *name)
{
	if (!name)
		return NULL;
	if (!strcmp(name, "orders"))
		return c->orders_db;
	if (!strcmp(name, "inventory"))
		return c->inventory_db;
	if (!strcmp(name, "payments"))
		return c->payments_db;
	return NULL;
}
