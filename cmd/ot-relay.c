/* ot-relay: the Event Relay — an outbox drained to Kafka or stdout, or envelopes piped to Kafka. */
#include <ctype.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ot_cdc.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_io.h"
#include "ot_lag.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_replay.h"
#include "ot_run.h"
#include "ot_signal.h"
#include "ot_topics.h"
#include "ot_tool.h"
#include "ot_trace.h"

static const char *argv0 = "ot-relay";

enum {
	OPT_DB = OT_OPT_TOOL_BASE, OPT_ONCE, OPT_META, OPT_RAW,
	OPT_FROM, OPT_SINCE, OPT_UNTIL, OPT_DRY_RUN, OPT_MAX, OPT_LIMIT, OPT_MODE, OPT_SLOT,
	OPT_DROP_SLOT, OPT_PARTITIONS, OPT_REPLICATION, OPT_CONFIG, OPT_DLQ_CONFIG, OPT_LOCK_TIMEOUT, OPT_INTERVAL
};

/* What "topics create" makes when it is named no topic: every topic the tools use. */
static const char *const default_topics[] = {
	OT_TOPIC_ORDERS, OT_TOPIC_ORDERS ".dlq", OT_TOPIC_INVENTORY, OT_TOPIC_INVENTORY ".dlq",
	OT_TOPIC_DELIVERY, OT_TOPIC_DELIVERY ".dlq",
};

struct stream {
	struct ot_in *in;
	struct ot_out *out;
	int meta, raw;
};

static void
usage(FILE *f, int full)
{
	fprintf(f, "usage: %s [--db orders|inventory] [--mode poll|cdc] [-O OUTPUT] [--once] [options]\n"
	        "       %s -i INPUT -O kafka:TOPIC [options]\n"
	        "       %s replay --from TOPIC.dlq|- [--since TIME] [--until TIME] [--dry-run] [--max N]\n"
	        "       %s topics create [--partitions N] [--replication-factor N] [--config KEY=VALUE]\n"
	        "                            [--dlq-config KEY=VALUE] [TOPIC...]\n"
	        "       %s topics list [TOPIC...]\n"
	        "       %s migrate [--db orders|inventory] [--lock-timeout DURATION]\n"
	        "       %s lag [--interval SECONDS] [GROUP...]   (%s lag -h)\n",
	        argv0, argv0, argv0, argv0, argv0, argv0, argv0, argv0);
	if (!full)
		return;
	fprintf(f, "\nDrains a service's outbox, oldest row first, to OUTPUT: - (stdout, default) or kafka\n"
	        "(each row to its own topic, key = order_id, headers ot-id, ot-type, traceparent).\n"
	        "Rows are deleted only after every record of the batch was acknowledged. It runs until\n"
	        "stopped, woken by LISTEN/NOTIFY, or with --once drains what is there and exits.\n"
	        "With -i it instead copies envelopes from INPUT (-, a file or kafka:TOPIC) to OUTPUT,\n"
	        "keyed by order_id; a Kafka offset is stored only once its record was written.\n\n"
	        "      --db NAME           orders (default) or inventory\n"
	        "  -O, --output SPEC       - (default), kafka or kafka:TOPIC\n"
	        "  -i, --input SPEC        copy envelopes from -, a file or kafka:TOPIC instead of an outbox\n"
	        "      --meta              with -i kafka:TOPIC -O -, print topic, partition, offset, key\n"
	        "                          and headers around each value\n"
	        "      --raw               with -i, copy lines without checking they are envelopes\n"
	        "\nreplay republishes dead letters to the topic in their ot-dlq-topic header, with their\n"
	        "key, value and original headers and ot-replay-count raised by one. It reads the\n"
	        "dead-letter topic (-o to start elsewhere) up to its end at the start, so a record that\n"
	        "fails again meanwhile waits for the next replay, and commits nothing; --dry-run prints the\n"
	        "records as JSON lines instead, which replay --from - takes back after any filtering.\n"
	        "      --from SPEC         a dead-letter topic, or - for JSON lines\n"
	        "      --since TIME        only records dead-lettered at or after TIME (RFC 3339 or ms)\n"
	        "      --until TIME        only records dead-lettered before TIME\n"
	        "      --dry-run           print instead of publishing\n"
	        "      --max N             stop after N records\n"
	        "      --limit N           refuse records already replayed N times (default 3)\n"
	        "      --mode MODE         poll (default): read the table; cdc: stream inserts from the WAL\n"
	        "                          (logical replication, pgoutput; needs wal_level=logical)\n"
	        "      --slot NAME         cdc: the replication slot (default ot_relay_<db>)\n"
	        "      --drop-slot         cdc: drop the slot, so the server keeps no more WAL for it, and exit\n"
	        "      --once              drain the outbox and exit (for a CronJob)\n"
	        "\ntopics create makes each TOPIC (default: the orders, inventory and delivery topics and\n"
	        "their .dlq) as asked, as a deployment step run by someone allowed to; no tool creates a\n"
	        "topic itself. It is idempotent: a topic that exists keeps its partitions and replicas\n"
	        "and gets the settings asked, its other settings left. topics list prints topics as JSON\n"
	        "lines. They take -b, -X, -F and --log-level only.\n"
	        "      --partitions N      partitions of a new topic (default 12)\n"
	        "      --replication-factor N  replicas of a new topic, and of an existing one (refused\n"
	        "                          if it has others; default: the broker's)\n"
	        "      --config KEY=VALUE  a topic setting, such as min.insync.replicas=2 (repeatable)\n"
	        "      --dlq-config KEY=VALUE  a setting of the .dlq topics only, over --config, such as\n"
	        "                          retention.ms=2592000000 (repeatable)\n"
	        "\nmigrate brings the databases' schemas (both, or --db's) to this release's, once, under\n"
	        "a lock, as a deployment step run with the migration role. Every other command refuses\n"
	        "a schema newer than it knows (exit 78). It takes --orders-db, --inventory-db and\n"
	        "--log-level only.\n"
	        "      --lock-timeout D    how long to wait for any one lock: 500ms, 5s, 1m (default 10s)\n"
	        "\n"
	        "  -h, --help              this help\n"
	        "  -V, --version           print the version\n%s", ot_config_usage);
}

static int
publish(void *arg, const struct ot_msg *m, char *errstr, size_t errsz)
{
	struct stream *s = arg;
	struct ot_event ev;
	json_t *d;
	char *line;
	int rc;

	if (s->meta) {
		d = ot_in_describe(s->in, m);
		line = json_dumps(d, OT_JSON_FLAGS);
		json_decref(d);
		rc = line ? ot_out_send(s->out, NULL, NULL, line, strlen(line), NULL, 0, errstr, errsz)
		          : ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		free(line);
	} else if (s->raw) {
		/* Keyed by order_id when the line has one, so even odd records keep their partition
		 * (the order's: its id in canonical form, whatever the case written). */
		json_t *o = json_loadb(m->value, m->len, 0, NULL);
		const char *key = json_string_value(json_object_get(o, "order_id"));
		char canon[OT_UUID_LEN];
		if (key && strlen(key) < sizeof canon && !ot_id_canon(strcpy(canon, key)))
			key = canon;
		rc = ot_out_send(s->out, NULL, key, m->value, m->len, NULL, 0, errstr, errsz);
		json_decref(o);
	} else {
		if (ot_event_parse(&ev, m->value, m->len, errstr, errsz))
			return OT_EINPUT;
		char tp[OT_TRACEPARENT_LEN];
		struct ot_header h[3] = {{"ot-id", ev.id}, {"ot-type", ev.type}, {"traceparent", tp}};
		struct ot_span sp;
		/* The record's own header first: a copy continues what the consumer would have. */
		ot_relay_span(&sp, ot_out_topic(s->out), ev.order_id, ev.id,
		              m->traceparent && ot_traceparent_valid(m->traceparent) ? m->traceparent
		                                                                     : ev.traceparent, tp);
		rc = ot_out_send(s->out, NULL, ev.order_id, m->value, m->len, h, 3, errstr, errsz);
		if (!rc && ot_in_is_kafka(s->in))
			rc = ot_out_flush(s->out, 30000, errstr, errsz);
		if (rc)
			ot_span_error(&sp, errstr);
		ot_span_end(&sp);
		ot_event_clear(&ev);
		return rc;
	}
	/* From Kafka, the offset is stored after this returns: the copy must be durable first. */
	if (!rc && ot_in_is_kafka(s->in))
		rc = ot_out_flush(s->out, 30000, errstr, errsz);
	return rc;
}

static int
drain(PGconn *db, struct ot_out *out, int batch, int once, int max, long *total)
{
	char err[1024];
	long n;
	int attempt = 0, listening = 0, reconciled = 0, more = 1;

	while (!ot_stop) {
		if (!listening && !once && !ot_pg_ensure(db, NULL, 0))
			listening = ot_outbox_listen(db, err, sizeof err) == 0;
		/* At start and after every failure: rows Kafka took but the DELETE never removed. */
		n = reconciled ? 0 : ot_outbox_reconcile(db, out, batch > 1000 ? batch : 1000, err, sizeof err);
		if (n >= 0) {
			reconciled = 1;
			/* The NOTIFYs queued so far are for rows this poll sees: one poll for them all. */
			if (listening && ot_outbox_wait(db, 0) < 0)
				listening = 0;
			n = ot_outbox_relay(db, out, batch, &more, err, sizeof err);
		}
		if (n < 0) {
			if (n != OT_ESERVICE || ++attempt >= max) {
				OT_ERROR(NULL, "relay: %s", err);
				return (int)n;
			}
			OT_WARN(NULL, "relay: attempt %d of %d failed, retrying: %s", attempt, max, err);
			listening = 0;
			reconciled = 0;
			ot_backoff(attempt);
			ot_pg_ensure(db, NULL, 0);
			continue;
		}
		attempt = 0;
		*total += n;
		if (n > 0)
			OT_DEBUG(NULL, "relayed %ld events", n);
		/* Rows left (a full batch, an order's next row): at once. The table seen empty: no
		 * poll that would find nothing, only a NOTIFY (or the timeout) brings the next. */
		if (n > 0 && more)
			continue;
		if (once)
			break;
		/* Idle: wait for a NOTIFY, or poll once a second in case one was missed. */
		if (ot_outbox_wait(db, 1000) < 0)
			listening = 0;
	}
	return OT_OK;
}

static void
lag_usage(FILE *f, int full)
{
	fprintf(f, "usage: %s lag [--interval SECONDS] [-b BROKERS] [-X prop=val] [-F FILE] [--http-addr ADDR] "
	        "[GROUP...]\n", argv0);
	if (!full)
		return;
	fprintf(f, "\nServes consumer-group lag as Kafka sees it on /metrics (default port 8085): every\n"
	        "group's committed offsets against each partition's high watermark, read every\n"
	        "--interval seconds, whether or not a member of the group is alive. GROUP names\n"
	        "limit it to those groups. /readyz answers 200 while the last reading is recent.\n\n"
	        "      --interval SECONDS  between readings (default 10)\n"
	        "  -b, --brokers LIST      Kafka bootstrap servers (OT_KAFKA_BROKERS)\n"
	        "  -X prop=val             a librdkafka property (repeatable)\n"
	        "  -F, --kafka-config FILE librdkafka properties, one prop=value a line (OT_KAFKA_CONFIG)\n"
	        "      --http-addr ADDR    [host:]port for health and metrics (OT_HTTP_ADDR)\n"
	        "      --log-level LEVEL   debug|info|warn|error (OT_LOG_LEVEL)\n"
	        "  -h, --help              this help\n"
	        "  -V, --version           print the version\n");
}

/* /readyz of "lag": a reading at most max_ms old. */
struct lag_check {
	struct ot_lag *lag;
	long long max_ms;
};

static int
lag_ready(void *arg, char *why, size_t whysz)
{
	struct lag_check *c = arg;

	return ot_lag_ready(c->lag, c->max_ms, why, whysz);
}

/* "lag": the consumer-group lag exporter, until SIGTERM. */
static int
lag_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"brokers", required_argument, NULL, 'b'},
		{"kafka-config", required_argument, NULL, 'F'},
		{"log-level", required_argument, NULL, OT_OPT_LOG_LEVEL},
		{"http-addr", required_argument, NULL, OT_OPT_HTTP_ADDR},
		{"interval", required_argument, NULL, OPT_INTERVAL},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct ot_config cfg;
	struct ot_lag *lag = NULL;
	struct ot_health *health = NULL;
	struct ot_health_deps deps = {0};
	struct lag_check check;
	long long interval_ms = 10000;
	char err[1024], *end;
	int c, r, rc = OT_OK, failing = 0;

	ot_config_init(&cfg, argv0);
	while ((c = getopt_long(argc, argv, "b:X:F:hV", longopts, NULL)) != -1) {
		if ((r = ot_config_arg(&cfg, c, optarg, lag_usage)) != OT_ARG_TOOL) {
			if (r >= 0)
				return r;
			continue;
		}
		if (c == OPT_INTERVAL) {
			double s = strtod(optarg, &end);
			if (*end || end == optarg || !(s >= 0.1 && s <= 3600)) {
				fprintf(stderr, "%s: lag: --interval %s: expected 0.1 to 3600 seconds\n", argv0, optarg);
				return EX_USAGE;
			}
			interval_ms = (long long)(s * 1000);
		}
	}
	if ((r = ot_tool_start(&cfg, ":8085")))
		return r;
	if (!(lag = ot_lag_new(&cfg, (const char *const *)argv + optind, (size_t)(argc - optind), &rc, err,
	                       sizeof err))) {
		OT_ERROR(NULL, "lag: %s", err);
		goto out;
	}
	/* Ready while a reading is at most three intervals (and a slow one) old. */
	check.lag = lag;
	check.max_ms = 3 * interval_ms + 30000;
	if (!(health = ot_health_serve(&cfg, 1, &deps, &rc, err, sizeof err)) && rc) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	ot_health_check(health, lag_ready, &check);
	OT_INFO(NULL, "lag: reading %s every %lld ms", optind < argc ? "the groups named" : "every consumer group",
	        interval_ms);
	while (!ot_stop) {
		long long next = ot_now_ms() + interval_ms;
		if (ot_lag_refresh(lag, err, sizeof err)) {
			if (!failing++)
				OT_WARN(NULL, "lag: %s", err);
		} else if (failing) {
			OT_INFO(NULL, "lag: read again after %d failed readings", failing);
			failing = 0;
		}
		while (!ot_stop && ot_now_ms() < next)
			usleep(50000);
	}
	rc = OT_OK;
out:
	ot_health_stop(health);
	ot_lag_free(lag);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

static int
is_dlq(const char *topic)
{
	size_t n = strlen(topic);

	return n > 4 && !strcmp(topic + n - 4, ".dlq");
}

/* "topics create|list": one JSON line per topic on stdout. */
static int
topics(const struct ot_config *cfg, int create, const char *const *names, size_t n, int partitions,
       int replication, const char *const *conf, size_t nconf, const char *const *dlq_conf, size_t ndlq)
{
	struct ot_topic_spec *spec = NULL;
	enum ot_topic_outcome *outcome = NULL;
	const char **both = NULL;
	char err[1024], *line;
	int rc = OT_OK, unknown = 0;
	json_t *a = NULL, *t;
	size_t i;

	if (create) {
		if (!n) {
			names = default_topics;
			n = sizeof default_topics / sizeof default_topics[0];
		}
		spec = calloc(n, sizeof *spec);
		outcome = calloc(n, sizeof *outcome);
		both = calloc(nconf + ndlq + 1, sizeof *both);
		if (!spec || !outcome || !both) {
			rc = ot_err(OT_EINTERNAL, err, sizeof err, "out of memory");
			goto out;
		}
		/* A dead-letter topic's own settings come after the others: they win. */
		memcpy(both, conf, nconf * sizeof *both);
		memcpy(both + nconf, dlq_conf, ndlq * sizeof *both);
		for (i = 0; i < n; i++) {
			spec[i] = (struct ot_topic_spec){names[i], partitions, replication, both, nconf};
			if (is_dlq(names[i]))
				spec[i].nconfig = nconf + ndlq;
		}
		if ((rc = ot_topics_ensure(cfg, spec, n, outcome, err, sizeof err)))
			goto out;
	}
	if (!(a = ot_topics_describe(cfg, names, n, &rc, err, sizeof err)))
		goto out;
	json_array_foreach(a, i, t) {
		if (outcome) {
			json_object_set_new(t, "created", json_boolean(outcome[i] == OT_TOPIC_CREATED));
			json_object_set_new(t, "altered", json_boolean(outcome[i] == OT_TOPIC_ALTERED));
		}
		if (json_object_get(t, "error"))
			unknown++;
		if (!(line = json_dumps(t, OT_JSON_FLAGS))) {
			rc = ot_err(OT_EINTERNAL, err, sizeof err, "out of memory");
			goto out;
		}
		puts(line);
		free(line);
		if (outcome && outcome[i] == OT_TOPIC_CREATED)
			OT_INFO(NULL, "topics: created %s", names[i]);
	}
	if (fflush(stdout) || ferror(stdout)) {
		rc = ot_err(OT_EOUTPUT, err, sizeof err, "writing output failed");
		goto out;
	}
	if (unknown)
		rc = ot_err(OT_EINPUT, err, sizeof err, "topics: %d of the topics named do not exist", unknown);
out:
	if (rc)
		OT_ERROR(NULL, "%s", err);
	json_decref(a);
	free(spec);
	free(outcome);
	free(both);
	return ot_exit_status(rc);
}

/* A topic setting: key=value, the key a Kafka config name. The min.insync.replicas one, if
 * any, into *isr. Returns 0, or -1 after saying why on stderr. */
static int
topic_setting(const char *opt, const char *s, int *isr)
{
	const char *eq = strchr(s, '=');
	size_t i;

	for (i = 0; eq && s + i < eq && (isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'); i++)
		;
	if (!eq || eq == s || s + i != eq || !eq[1]) {
		fprintf(stderr, "%s: %s %s: expected KEY=VALUE, such as retention.ms=2592000000\n", argv0, opt, s);
		return -1;
	}
	if (!strncmp(s, "min.insync.replicas=", 20))
		*isr = atoi(eq + 1);
	return 0;
}

/* A number of --partitions or --replication-factor, 1 to max; -1 after saying why. */
static int
count_arg(const char *opt, const char *s, int max)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*end || end == s || v < 1 || v > max) {
		fprintf(stderr, "%s: %s %s: expected 1 to %d\n", argv0, opt, s, max);
		return -1;
	}
	return (int)v;
}

/* "topics create|list [options] [TOPIC...]". argv[0] is "topics". */
static int
topics_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"brokers", required_argument, NULL, 'b'},
		{"kafka-config", required_argument, NULL, 'F'},
		{"log-level", required_argument, NULL, OT_OPT_LOG_LEVEL},
		{"partitions", required_argument, NULL, OPT_PARTITIONS},
		{"replication-factor", required_argument, NULL, OPT_REPLICATION},
		{"config", required_argument, NULL, OPT_CONFIG},
		{"dlq-config", required_argument, NULL, OPT_DLQ_CONFIG},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct ot_config cfg;
	const char *verb = argc > 1 ? argv[1] : "", **conf, **dlq;
	size_t nconf = 0, ndlq = 0;
	char err[512];
	int c, r = EX_USAGE, create = !strcmp(verb, "create"), topic_opts = 0, partitions = 12,
	    replication = -1, isr = 0, dlq_isr = 0;

	if (!strcmp(verb, "-h") || !strcmp(verb, "--help")) {
		usage(stdout, 1);
		return EX_OK;
	}
	if (!create && strcmp(verb, "list")) {
		fprintf(stderr, "%s: topics create|list [options] [TOPIC...]\n", argv0);
		return EX_USAGE;
	}
	ot_config_init(&cfg, argv0);
	conf = calloc((size_t)argc, sizeof *conf);
	dlq = calloc((size_t)argc, sizeof *dlq);
	if (!conf || !dlq) {
		r = EX_OSERR;
		goto out;
	}
	/* Options after the verb: argv + 1 is "create" or "list" and its options. */
	optind = 1;
	while ((c = getopt_long(argc - 1, argv + 1, "b:X:F:hV", longopts, NULL)) != -1) {
		if ((r = ot_config_arg(&cfg, c, optarg, usage)) != OT_ARG_TOOL) {
			if (r >= 0)
				goto out;
			continue;
		}
		r = EX_USAGE;
		topic_opts = 1;
		switch (c) {
		case OPT_PARTITIONS:
			if ((partitions = count_arg("--partitions", optarg, 10000)) < 0)
				goto out;
			break;
		case OPT_REPLICATION:
			if ((replication = count_arg("--replication-factor", optarg, 32)) < 0)
				goto out;
			break;
		case OPT_CONFIG:
			if (topic_setting("--config", optarg, &isr))
				goto out;
			conf[nconf++] = optarg;
			break;
		case OPT_DLQ_CONFIG:
			if (topic_setting("--dlq-config", optarg, &dlq_isr))
				goto out;
			dlq[ndlq++] = optarg;
			break;
		}
	}
	r = EX_USAGE;
	if (topic_opts && !create) {
		fprintf(stderr, "%s: --partitions, --replication-factor, --config and --dlq-config belong to "
		        "topics create\n", argv0);
		goto out;
	}
	/* Contradictory: a quorum larger than the replicas could never be met. */
	if (replication > 0 && (isr > replication || dlq_isr > replication)) {
		fprintf(stderr, "%s: min.insync.replicas=%d is more than --replication-factor %d: producers "
		        "with acks=all could never write\n", argv0, isr > dlq_isr ? isr : dlq_isr, replication);
		goto out;
	}
	for (c = optind + 1; c < argc; c++) {
		if (ot_replay_target_check(argv[c], err, sizeof err)) {
			fprintf(stderr, "%s: topics: %s\n", argv0, err);
			goto out;
		}
	}
	if ((r = ot_tool_start(&cfg, NULL)))
		goto out;
	r = topics(&cfg, create, (const char *const *)argv + optind + 1, (size_t)(argc - optind - 1),
	           partitions, replication, conf, nconf, dlq, ndlq);
out:
	ot_config_free(&cfg);
	free(conf);
	free(dlq);
	return r;
}

/* "500ms", "5s", "1m" or plain seconds, in milliseconds; -1 if it is none of them. */
static long
duration_ms(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (end == s || v < 0 || v > 86400000L)
		return -1;
	if (!strcmp(end, "ms"))
		return v;
	if (!*end || !strcmp(end, "s"))
		return v * 1000;
	if (!strcmp(end, "m"))
		return v * 60000;
	return -1;
}

/* Brings one database's schema to this binary's; one JSON line on stdout. */
static int
migrate_db(const char *conninfo, const char *db, long lock_ms, char *err, size_t errsz)
{
	struct ot_pg_schema s;
	PGconn *c;
	int rc, applied = 0;

	if (!(c = ot_pg_connect(conninfo, err, errsz)))
		return OT_ESERVICE;
	rc = ot_pg_migrate(c, db, (int)lock_ms, &s, &applied, err, errsz);
	PQfinish(c);
	if (rc)
		return rc;
	printf("{\"db\":\"%s\",\"from\":%d,\"to\":%d,\"applied\":%d}\n", db, s.version,
	       applied ? s.known : s.version, applied);
	OT_INFO(NULL, "migrate: %s at version %d%s", db, applied ? s.known : s.version,
	        applied ? "" : ", as it was");
	if (fflush(stdout) || ferror(stdout))
		return ot_err(OT_EOUTPUT, err, errsz, "writing output failed");
	return OT_OK;
}

/* "migrate [--db NAME] [--lock-timeout D]". argv[0] is "migrate". */
static int
migrate_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"orders-db", required_argument, NULL, OT_OPT_ORDERS_DB},
		{"inventory-db", required_argument, NULL, OT_OPT_INVENTORY_DB},
		{"log-level", required_argument, NULL, OT_OPT_LOG_LEVEL},
		{"db", required_argument, NULL, OPT_DB},
		{"lock-timeout", required_argument, NULL, OPT_LOCK_TIMEOUT},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct ot_config cfg;
	const char *only = NULL;
	long lock_ms = OT_PG_LOCK_TIMEOUT_MS;
	char err[1024];
	int c, r = EX_USAGE, rc = OT_OK;

	ot_config_init(&cfg, argv0);
	optind = 1;
	while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		if ((r = ot_config_arg(&cfg, c, optarg, usage)) != OT_ARG_TOOL) {
			if (r >= 0)
				goto out;
			continue;
		}
		r = EX_USAGE;
		if (c == OPT_DB) {
			if (strcmp(optarg, "orders") && strcmp(optarg, "inventory")) {
				fprintf(stderr, "%s: --db %s: expected orders or inventory\n", argv0, optarg);
				goto out;
			}
			only = optarg;
		} else if (c == OPT_LOCK_TIMEOUT && (lock_ms = duration_ms(optarg)) <= 0) {
			fprintf(stderr, "%s: --lock-timeout %s: expected 500ms, 5s, 1m or seconds, above 0\n",
			        argv0, optarg);
			goto out;
		}
	}
	r = EX_USAGE;
	if (optind < argc) {
		fprintf(stderr, "%s: migrate takes no arguments\n", argv0);
		goto out;
	}
	if ((r = ot_tool_start(&cfg, NULL)))
		goto out;
	if (!only || !strcmp(only, "orders"))
		rc = migrate_db(cfg.orders_db, "orders", lock_ms, err, sizeof err);
	if (!rc && (!only || !strcmp(only, "inventory")))
		rc = migrate_db(cfg.inventory_db, "inventory", lock_ms, err, sizeof err);
	if (rc)
		OT_ERROR(NULL, "migrate: %s", err);
	r = ot_exit_status(rc);
out:
	ot_config_free(&cfg);
	return r;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		OT_CONFIG_LONGOPTS,
		{"db", required_argument, NULL, OPT_DB},
		{"output", required_argument, NULL, 'O'},
		{"input", required_argument, NULL, 'i'},
		{"once", no_argument, NULL, OPT_ONCE},
		{"meta", no_argument, NULL, OPT_META},
		{"raw", no_argument, NULL, OPT_RAW},
		{"from", required_argument, NULL, OPT_FROM},
		{"since", required_argument, NULL, OPT_SINCE},
		{"until", required_argument, NULL, OPT_UNTIL},
		{"dry-run", no_argument, NULL, OPT_DRY_RUN},
		{"max", required_argument, NULL, OPT_MAX},
		{"limit", required_argument, NULL, OPT_LIMIT},
		{"mode", required_argument, NULL, OPT_MODE},
		{"slot", required_argument, NULL, OPT_SLOT},
		{"drop-slot", no_argument, NULL, OPT_DROP_SLOT},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct ot_config cfg;
	struct ot_out *out = NULL;
	struct ot_in *in = NULL;
	struct ot_health *health = NULL;
	struct ot_health_deps deps = {0};
	struct ot_outbox_watch *watch = NULL;
	struct ot_run_stats st;
	struct stream sm = {NULL, NULL, 0, 0};
	struct ot_replay rp = {0, 0, 0, 3, 0};
	struct ot_replay_stats rst;
	const char *from = NULL, *mode = "poll", *slot = NULL;
	char slotbuf[64];
	int replay_opts = 0;
	const char *dbname = "orders", *output = "-", *input = NULL;
	PGconn *db = NULL;
	char err[1024];
	int c, rc = OT_OK, r, attempt, drop_slot = 0, once = 0, dbset = 0, outset = 0;
	long total = 0;

	/* A subcommand comes first and has options of its own. */
	if (argc > 1 && !strcmp(argv[1], "topics"))
		return topics_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "migrate"))
		return migrate_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "lag")) {
		static char name[] = "ot-relay lag"; /* getopt's messages begin with it */
		argv[1] = name;
		return lag_main(argc - 1, argv + 1);
	}
	ot_config_init(&cfg, argv0);
	while ((c = getopt_long(argc, argv, OT_CONFIG_SHORTOPTS "O:i:hV", longopts, NULL)) != -1) {
		if ((r = ot_config_arg(&cfg, c, optarg, usage)) != OT_ARG_TOOL) {
			if (r >= 0)
				return r;
			continue;
		}
		switch (c) {
		case OPT_DB: dbname = optarg; dbset = 1; break;
		case 'O': output = optarg; outset = 1; break;
		case 'i': input = optarg; break;
		case OPT_ONCE: once = 1; break;
		case OPT_META: sm.meta = 1; break;
		case OPT_RAW: sm.raw = 1; break;
		case OPT_MODE: mode = optarg; break;
		case OPT_SLOT: slot = optarg; break;
		case OPT_DROP_SLOT: drop_slot = 1; break;
		case OPT_FROM: from = optarg; replay_opts = 1; break;
		case OPT_SINCE:
		case OPT_UNTIL:
			if (ot_time_ms(optarg, c == OPT_SINCE ? &rp.since_ms : &rp.until_ms)) {
				fprintf(stderr, "%s: %s %s: expected an RFC 3339 time or milliseconds\n", argv0,
				        c == OPT_SINCE ? "--since" : "--until", optarg);
				return EX_USAGE;
			}
			replay_opts = 1;
			break;
		case OPT_DRY_RUN: rp.dry_run = 1; replay_opts = 1; break;
		case OPT_MAX:
		case OPT_LIMIT:
			r = atoi(optarg);
			if (r < 1) {
				fprintf(stderr, "%s: %s %s: expected a number >= 1\n", argv0,
				        c == OPT_MAX ? "--max" : "--limit", optarg);
				return EX_USAGE;
			}
			if (c == OPT_MAX)
				rp.max = r;
			else
				rp.limit = r;
			replay_opts = 1;
			break;
		}
	}
	if (optind < argc && !strcmp(argv[optind], "replay")) {
		optind++;
		if (!from || input || dbset || once) {
			fprintf(stderr, "%s: replay needs --from TOPIC.dlq or -, and takes no -i, --db or --once\n", argv0);
			return EX_USAGE;
		}
		if (!outset)
			output = rp.dry_run ? "-" : "kafka";
		if (!rp.dry_run && !strcmp(output, "-")) {
			fprintf(stderr, "%s: replay publishes to Kafka; use --dry-run to print\n", argv0);
			return EX_USAGE;
		}
	} else if (replay_opts) {
		fprintf(stderr, "%s: --from, --since, --until, --dry-run, --max and --limit belong to replay\n", argv0);
		return EX_USAGE;
	}
	if (optind < argc) {
		usage(stderr, 0);
		return EX_USAGE;
	}
	if (strcmp(mode, "poll") && strcmp(mode, "cdc")) {
		fprintf(stderr, "%s: --mode %s: expected poll or cdc\n", argv0, mode);
		return EX_USAGE;
	}
	if (drop_slot && (strcmp(mode, "cdc") || once || outset)) {
		fprintf(stderr, "%s: --drop-slot takes --mode cdc, --db and --slot only\n", argv0);
		return EX_USAGE;
	}
	if ((!strcmp(mode, "cdc") || slot) && (input || from)) {
		fprintf(stderr, "%s: --mode cdc and --slot relay an outbox; not with -i or replay\n", argv0);
		return EX_USAGE;
	}
	if (strcmp(dbname, "orders") && strcmp(dbname, "inventory")) {
		fprintf(stderr, "%s: --db %s: expected orders or inventory\n", argv0, dbname);
		return EX_USAGE;
	}
	if (input && (dbset || once)) {
		fprintf(stderr, "%s: -i publishes a stream; --db and --once belong to outbox mode\n", argv0);
		return EX_USAGE;
	}
	if ((sm.meta || sm.raw) && !input) {
		fprintf(stderr, "%s: --meta and --raw belong to -i\n", argv0);
		return EX_USAGE;
	}
	if (sm.meta && (strncmp(input, "kafka", 5) || strcmp(output, "-"))) {
		fprintf(stderr, "%s: --meta needs -i kafka:TOPIC and -O -\n", argv0);
		return EX_USAGE;
	}
	/* Only an outbox relay runs for long: it alone has a port of its own. */
	if ((r = ot_tool_start(&cfg, !input && !from && !once && !drop_slot ? ":8082" : NULL)))
		return r;
	if (!slot) {
		snprintf(slotbuf, sizeof slotbuf, "ot_relay_%s", dbname);
		slot = slotbuf;
	}
	if (drop_slot) {
		if ((rc = ot_cdc_drop(!strcmp(dbname, "orders") ? cfg.orders_db : cfg.inventory_db, slot,
		                      err, sizeof err)) < 0)
			OT_ERROR(NULL, "cdc: %s", err);
		else
			OT_INFO(NULL, "cdc: replication slot %s %s", slot, rc ? "dropped" : "did not exist");
		rc = rc < 0 ? rc : OT_OK;
		goto out;
	}
	if (!(out = ot_out_open(output, &cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	if (from) {
		char spec[300], group[64];

		/* The whole dead-letter topic unless -o says otherwise, and no commits: replay
		 * does exactly what its filters select, however often it is run. */
		if (!strcmp(cfg.offset, "stored")) {
			free(cfg.offset);
			cfg.offset = strdup("beginning");
		}
		snprintf(group, sizeof group, "ot-relay-replay-%ld", (long)getpid());
		if (!cfg.group || !strcmp(cfg.group, argv0)) {
			free(cfg.group);
			cfg.group = strdup(group);
		}
		cfg.exit_at_end = 1;
		snprintf(spec, sizeof spec, "%s%s", strcmp(from, "-") ? "kafka:" : "", from);
		/* Up to the ends the topic had at the start: a record that fails again and is
		 * dead-lettered meanwhile waits for the next replay, instead of going round. */
		if (!(in = ot_in_open(spec, &cfg, &rc, err, sizeof err)) ||
		    (rc = ot_in_stop_at_end(in, err, sizeof err))) {
			OT_ERROR(NULL, "%s", err);
			goto out;
		}
		rc = ot_replay_run(in, out, &rp, &rst, err, sizeof err);
		if (rc && rc != OT_EINPUT)
			OT_ERROR(NULL, "replay: %s", err);
		OT_INFO(NULL, "replay: %ld read, %ld %s, %ld outside the time window, %ld refused, %ld bad",
		        rst.read, rst.replayed, rp.dry_run ? "printed" : "replayed", rst.filtered,
		        rst.refused, rst.bad);
		goto out;
	}
	if (input) {
		if (!(in = ot_in_open(input, &cfg, &rc, err, sizeof err))) {
			OT_ERROR(NULL, "%s", err);
			goto out;
		}
		sm.in = in;
		sm.out = out;
		rc = ot_run(in, publish, &sm, &st);
		r = ot_out_flush(out, 30000, err, sizeof err);
		if (r) {
			OT_ERROR(NULL, "%s", err);
			rc = r;
		}
		OT_INFO(NULL, "%ld records: %ld published, %ld bad, %ld dead-lettered", st.records,
		        r ? 0 : st.ok, st.bad, st.dead);
		goto out;
	}
	if (!(db = ot_pg_open(!strcmp(dbname, "orders") ? cfg.orders_db : cfg.inventory_db, dbname,
	                      &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	ot_outbox_metrics_db(dbname);
	deps.orders_db = !strcmp(dbname, "orders") ? cfg.orders_db : NULL;
	deps.inventory_db = !strcmp(dbname, "orders") ? NULL : cfg.inventory_db;
	deps.out = out;
	if (!(health = ot_health_serve(&cfg, !once, &deps, &rc, err, sizeof err)) && rc) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	if (health && !(watch = ot_outbox_watch_start(deps.orders_db ? deps.orders_db : deps.inventory_db, dbname,
	                                              strcmp(mode, "cdc") ? NULL : slot, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		rc = OT_EINTERNAL;
		goto out;
	}
	if (!strcmp(mode, "cdc")) {
		PQfinish(db);
		db = NULL;
		/* A lost connection (a PostgreSQL restart) resumes from the slot, as a restart would. */
		for (attempt = 0;;) {
			long n = 0;

			rc = ot_cdc_run(!strcmp(dbname, "orders") ? cfg.orders_db : cfg.inventory_db, dbname,
			                slot, out, once, &n, err, sizeof err);
			total += n;
			if (n > 0)
				attempt = 0;
			if (rc != OT_ESERVICE || once || ot_stop || ++attempt >= cfg.attempts)
				break;
			OT_WARN(NULL, "cdc: attempt %d of %d failed, resuming: %s", attempt, cfg.attempts, err);
			ot_backoff(attempt);
		}
		if (rc)
			OT_ERROR(NULL, "cdc: %s", err);
		OT_INFO(NULL, "relayed %ld events from the %s outbox's WAL", total, dbname);
		goto out;
	}
	OT_INFO(NULL, "relaying the %s outbox to %s%s", dbname, output, once ? " (once)" : "");
	rc = drain(db, out, cfg.batch, once, cfg.attempts, &total);
	OT_INFO(NULL, "relayed %ld events from the %s outbox", total, dbname);
out:
	ot_outbox_watch_stop(watch);
	ot_health_stop(health);
	ot_in_free(in);
	ot_out_free(out);
	PQfinish(db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
