/* ot-relay: the Event Relay — an outbox drained to Kafka or stdout, or envelopes piped to Kafka. */
#include <ctype.h>
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

/* A job's options: the config, its own options to cli->take, the operands from *next (none
 * unless operands). prog names it in getopt's messages ("ot-relay replay"); NULL keeps
 * argv[0]. Returns 0, -1 after -h or -V, or the exit status, with cfg freed. */
static int
args(struct ot_config *cfg, const struct ot_cli *cli, int argc, char **argv, char *prog, int operands, int *next)
{
	int rc, done;

	ot_config_init(cfg, argv0);
	if (prog)
		argv[0] = prog;
	if (!(rc = ot_tool_args(cfg, cli, argc, argv, next, &done)) && !done && !operands && *next < argc) {
		fprintf(stderr, "%s: unexpected argument: %s\n", argv0, argv[*next]);
		ot_tool_usage(cfg, cli, stderr);
		rc = EX_USAGE;
	}
	if (rc || done)
		ot_config_free(cfg);
	return rc ? rc : done ? -1 : 0;
}

static int
usage_error(struct ot_config *cfg)
{
	ot_config_free(cfg);
	return EX_USAGE;
}

/* The outbox relay, the default job. */
static const struct ot_opt relay_opt[] = {
	{"db", OPT_DB, "NAME", "orders (default), inventory or payments"},
	{"output", 'O', "SPEC", "- (default), kafka or kafka:TOPIC"},
	{"mode", OPT_MODE, "MODE", "poll (default): read the table; cdc: stream inserts from the WAL\n"
	 "(logical replication, pgoutput; needs wal_level=logical)"},
	{"slot", OPT_SLOT, "NAME", "cdc: the replication slot (default ot_relay_<db>)"},
	{"drop-slot", OPT_DROP_SLOT, NULL, "cdc: drop the slot, so the server keeps no more WAL for it, and exit"},
	{"once", OPT_ONCE, NULL, "drain the outbox and exit (for a CronJob)"},
	{"attempts", OT_OPT_ATTEMPTS, "N", "tries of a batch while a service fails (OT_RETRY_ATTEMPTS, 8)"},
};

struct relay {
	struct ot_config *cfg;
	const char *db, *output, *mode, *slot;
	int once, drop_slot, outset;
};

static int
relay_take(void *arg, int key, const char *val)
{
	struct relay *r = arg;
	char err[512];

	if ((key == OPT_DB && !ot_db_known(val)) ||
	    (key == OPT_MODE && strcmp(val, "poll") && strcmp(val, "cdc"))) {
		fprintf(stderr, "%s: %s %s: expected %s\n", argv0, key == OPT_DB ? "--db" : "--mode", val,
		        key == OPT_DB ? OT_DB_NAMES : "poll or cdc");
		return EX_USAGE;
	}
	if (key == OT_OPT_ATTEMPTS && ot_config_opt(r->cfg, key, val, err, sizeof err) < 0) {
		fprintf(stderr, "%s: %s\n", argv0, err);
		return EX_USAGE;
	}
	switch (key) {
	case OPT_DB: r->db = val; break;
	case 'O': r->output = val; r->outset = 1; break;
	case OPT_MODE: r->mode = val; break;
	case OPT_SLOT: r->slot = val; break;
	case OPT_ONCE: r->once = 1; break;
	case OPT_DROP_SLOT: r->drop_slot = 1; break;
	}
	return 0;
}

/* --drop-slot: the slot gone, so the server keeps no WAL for it. */
static int
drop_slot(const char *conn, const char *slot)
{
	char err[1024];
	int rc;

	if ((rc = ot_cdc_drop(conn, slot, err, sizeof err)) < 0) {
		OT_ERROR(NULL, "cdc: %s", err);
		return rc;
	}
	OT_INFO(NULL, "cdc: replication slot %s %s", slot, rc ? "dropped" : "did not exist");
	return OT_OK;
}

static int
relay_main(int argc, char **argv)
{
	struct ot_config cfg;
	struct relay r = {&cfg, "orders", "-", "poll", NULL, 0, 0, 0};
	const struct ot_cli cli = {"[--db orders|inventory|payments] [--mode poll|cdc] [-O OUTPUT] [--once] [options]",
	                           "Drains a service's outbox, oldest row first, to OUTPUT: - (stdout, default) or kafka\n"
	                           "(each row to its own topic, key = order_id, headers ot-id, ot-type, traceparent).\n"
	                           "Rows are deleted only after every record of the batch was acknowledged. It runs until\n"
	                           "stopped, woken by LISTEN/NOTIFY, or with --once drains what is there and exits.\n"
	                           "Other jobs: the copy (ot-relay -i INPUT -h), replay, topics, migrate and lag\n"
	                           "(ot-relay replay -h).", OT_USE_KAFKA | OT_USE_BATCH | OT_USE_ORDERS |
	                           OT_USE_INVENTORY | OT_USE_PAYMENTS | OT_USE_HTTP, relay_opt, 7, relay_take, &r, 0};
	struct ot_health_deps deps = {0};
	struct ot_health *health = NULL;
	struct ot_outbox_watch *watch = NULL;
	struct ot_out *out = NULL;
	PGconn *db = NULL;
	char err[1024], slot[64];
	const char *conn;
	long total = 0;
	int next, rc;

	if ((rc = args(&cfg, &cli, argc, argv, NULL, 0, &next)))
		return rc < 0 ? 0 : rc;
	if (r.drop_slot && (strcmp(r.mode, "cdc") || r.once || r.outset)) {
		fprintf(stderr, "%s: --drop-slot takes --mode cdc, --db and --slot only\n", argv0);
		return usage_error(&cfg);
	}
	/* Only a relay that runs for long has a port of its own. */
	if ((rc = ot_tool_start(&cfg, !r.once && !r.drop_slot ? ":8082" : NULL)))
		return rc;
	if (!r.slot) {
		snprintf(slot, sizeof slot, "ot_relay_%s", r.db);
		r.slot = slot;
	}
	conn = ot_config_db(&cfg, r.db);
	if (r.drop_slot) {
		rc = drop_slot(conn, r.slot);
		goto out;
	}
	if (!(out = ot_out_open(r.output, &cfg, &rc, err, sizeof err)) ||
	    !(db = ot_pg_open(conn, r.db, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	ot_outbox_metrics_db(r.db);
	deps.orders_db = !strcmp(r.db, "orders") ? conn : NULL;
	deps.inventory_db = !strcmp(r.db, "inventory") ? conn : NULL;
	deps.payments_db = !strcmp(r.db, "payments") ? conn : NULL;
	deps.out = out;
	if (!(health = ot_health_serve(&cfg, !r.once, &deps, &rc, err, sizeof err)) && rc) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	if (health && !(watch = ot_outbox_watch_start(conn, r.db, strcmp(r.mode, "cdc") ? NULL : r.slot, err,
	                                              sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		rc = OT_EINTERNAL;
		goto out;
	}
	if (!strcmp(r.mode, "cdc")) {
		PQfinish(db);
		db = NULL;
		if ((rc = ot_cdc_relay(conn, r.db, r.slot, out, r.once, cfg.attempts, &total, err, sizeof err)))
			OT_ERROR(NULL, "cdc: %s", err);
		OT_INFO(NULL, "relayed %ld events from the %s outbox's WAL", total, r.db);
		goto out;
	}
	OT_INFO(NULL, "relaying the %s outbox to %s%s", r.db, r.output, r.once ? " (once)" : "");
	rc = ot_outbox_drain(db, out, cfg.batch, r.once, cfg.attempts, &total);
	OT_INFO(NULL, "relayed %ld events from the %s outbox", total, r.db);
out:
	ot_outbox_watch_stop(watch);
	ot_health_stop(health);
	ot_out_free(out);
	PQfinish(db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

/* The copy (-i): envelopes from a pipe, a file or a topic to stdout or a topic. */
struct stream {
	struct ot_in *in;
	struct ot_out *out;
	int meta, raw;
};

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

static const struct ot_opt copy_opt[] = {
	{"input", 'i', "SPEC", "-, a file or kafka:TOPIC"},
	{"output", 'O', "SPEC", "- (default) or kafka:TOPIC"},
	{"meta", OPT_META, NULL, "with -i kafka:TOPIC -O -, print topic, partition, offset, key\n"
	 "and headers around each value"},
	{"raw", OPT_RAW, NULL, "copy lines without checking they are envelopes"},
};

struct copy {
	const char *input, *output;
	int meta, raw;
};

static int
copy_take(void *arg, int key, const char *val)
{
	struct copy *c = arg;

	switch (key) {
	case 'i': c->input = val; break;
	case 'O': c->output = val; break;
	case OPT_META: c->meta = 1; break;
	case OPT_RAW: c->raw = 1; break;
	}
	return 0;
}

static int
copy_main(int argc, char **argv)
{
	struct copy c = {NULL, "-", 0, 0};
	const struct ot_cli cli = {"-i INPUT [-O OUTPUT] [--meta | --raw] [options]",
	                           "Copies envelopes from INPUT (-, a file or kafka:TOPIC) to OUTPUT, keyed by\n"
	                           "order_id; a Kafka offset is stored only once its record was written.",
	                           OT_USE_KAFKA | OT_USE_CONSUMER, copy_opt, 4, copy_take, &c, 0};
	struct stream sm = {NULL, NULL, 0, 0};
	struct ot_run_stats st;
	struct ot_config cfg;
	char err[1024];
	int next, rc, r;

	if ((rc = args(&cfg, &cli, argc, argv, NULL, 0, &next)))
		return rc < 0 ? 0 : rc;
	if (c.meta && (!c.input || strncmp(c.input, "kafka", 5) || strcmp(c.output, "-"))) {
		fprintf(stderr, "%s: --meta needs -i kafka:TOPIC and -O -\n", argv0);
		return usage_error(&cfg);
	}
	if ((rc = ot_tool_start(&cfg, NULL)))
		return rc;
	sm.meta = c.meta;
	sm.raw = c.raw;
	if (!(sm.out = ot_out_open(c.output, &cfg, &rc, err, sizeof err)) ||
	    !(sm.in = ot_in_open(c.input, &cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	rc = ot_run(sm.in, publish, &sm, &st);
	if ((r = ot_out_flush(sm.out, 30000, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		rc = r;
	}
	OT_INFO(NULL, "%ld records: %ld published, %ld bad, %ld dead-lettered", st.records, r ? 0 : st.ok, st.bad,
	        st.dead);
out:
	ot_in_free(sm.in);
	ot_out_free(sm.out);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

/* Whether the command line asks for the copy (-i) rather than the outbox relay: the two take
 * different options. A short option's value ends its bundle ("-G-i" is a group). */
static int
wants_copy(int argc, char **argv)
{
	const char *a;
	int k;

	for (k = 1; k < argc && strcmp(argv[k], "--"); k++) {
		a = argv[k];
		if (!strncmp(a, "--inp", 5) && !strncmp(a, "--input", strcspn(a, "=")))
			return 1;
		if (a[0] != '-' || a[1] == '-')
			continue;
		for (a++; *a && !strchr("bXFGocO", *a); a++)
			if (*a == 'i')
				return 1;
	}
	return 0;
}

/* No subcommand: the outbox relay, or with -i the copy. */
static int
relay_or_copy(int argc, char **argv)
{
	return wants_copy(argc, argv) ? copy_main(argc, argv) : relay_main(argc, argv);
}

/* "replay": dead letters sent back to their topics, or printed. */
struct replay_opts {
	struct ot_replay rp;
	const char *from, *output;
};

static const struct ot_opt replay_opt[] = {
	{"from", OPT_FROM, "SPEC", "a dead-letter topic, or - for JSON lines as --dry-run prints them"},
	{"since", OPT_SINCE, "TIME", "only records dead-lettered at or after TIME (RFC 3339 or ms)"},
	{"until", OPT_UNTIL, "TIME", "only records dead-lettered before TIME"},
	{"dry-run", OPT_DRY_RUN, NULL, "print instead of publishing"},
	{"max", OPT_MAX, "N", "stop after N records"},
	{"limit", OPT_LIMIT, "N", "refuse records already replayed N times (default 3)"},
	{"output", 'O', "SPEC", "kafka (default; each record to its ot-dlq-topic), or - with --dry-run"},
};

static int
replay_take(void *arg, int key, const char *val)
{
	struct replay_opts *o = arg;
	int n;

	if (key == OPT_FROM) {
		o->from = val;
	} else if (key == 'O') {
		o->output = val;
	} else if (key == OPT_DRY_RUN) {
		o->rp.dry_run = 1;
	} else if (key == OPT_SINCE || key == OPT_UNTIL) {
		if (ot_time_ms(val, key == OPT_SINCE ? &o->rp.since_ms : &o->rp.until_ms)) {
			fprintf(stderr, "%s: %s %s: expected an RFC 3339 time or milliseconds\n", argv0,
			        key == OPT_SINCE ? "--since" : "--until", val);
			return EX_USAGE;
		}
	} else if ((n = atoi(val)) < 1) {
		fprintf(stderr, "%s: %s %s: expected a number >= 1\n", argv0, key == OPT_MAX ? "--max" : "--limit", val);
		return EX_USAGE;
	} else if (key == OPT_MAX) {
		o->rp.max = n;
	} else {
		o->rp.limit = n;
	}
	return 0;
}

static int
replay_main(int argc, char **argv)
{
	static char prog[] = "ot-relay replay";
	struct replay_opts o = {{0, 0, 0, 3, 0}, NULL, NULL};
	const struct ot_cli cli = {"replay --from TOPIC.dlq|- [--since TIME] [--until TIME] [--dry-run] [--max N]\n"
	                           "                [--limit N] [options]",
	                           "Republishes dead letters to the topic in their ot-dlq-topic header, with their key,\n"
	                           "value and original headers and ot-replay-count raised by one. It reads the\n"
	                           "dead-letter topic (-o to start elsewhere) up to its end at the start, so a record\n"
	                           "that fails again meanwhile waits for the next replay, and commits nothing;\n"
	                           "--dry-run prints the records as JSON lines instead, which replay --from - takes\n"
	                           "back after any filtering.", OT_USE_KAFKA | OT_USE_CONSUMER, replay_opt, 7, replay_take,
	                           &o, 0};
	struct ot_replay_stats st;
	struct ot_config cfg;
	struct ot_out *out = NULL;
	struct ot_in *in = NULL;
	char err[1024];
	int next, rc;

	if ((rc = args(&cfg, &cli, argc, argv, prog, 0, &next)))
		return rc < 0 ? 0 : rc;
	if (!o.output)
		o.output = o.rp.dry_run ? "-" : "kafka";
	if (!o.from) {
		fprintf(stderr, "%s: replay needs --from TOPIC.dlq or -\n", argv0);
		return usage_error(&cfg);
	}
	if (!o.rp.dry_run && !strcmp(o.output, "-")) {
		fprintf(stderr, "%s: replay publishes to Kafka; use --dry-run to print\n", argv0);
		return usage_error(&cfg);
	}
	if ((rc = ot_tool_start(&cfg, NULL)))
		return rc;
	if (!(out = ot_out_open(o.output, &cfg, &rc, err, sizeof err)) ||
	    !(in = ot_replay_open(&cfg, o.from, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	rc = ot_replay_run(in, out, &o.rp, &st, err, sizeof err);
	if (rc && rc != OT_EINPUT)
		OT_ERROR(NULL, "replay: %s", err);
	OT_INFO(NULL, "replay: %ld read, %ld %s, %ld outside the time window, %ld refused, %ld bad", st.read,
	        st.replayed, o.rp.dry_run ? "printed" : "replayed", st.filtered, st.refused, st.bad);
out:
	ot_in_free(in);
	ot_out_free(out);
	ot_config_free(&cfg);
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

/* "topics create|list": what each takes. */
struct topic_opts {
	int partitions, replication, isr, dlq_isr;
	const char **conf, **dlq;
	size_t nconf, ndlq;
};

static const struct ot_opt create_opt[] = {
	{"partitions", OPT_PARTITIONS, "N", "partitions of a new topic, 1 to 10000 (default 12)"},
	{"replication-factor", OPT_REPLICATION, "N", "replicas of a new topic, and of an existing one (refused\n"
	 "if it has others), 1 to 32 (default: the broker's)"},
	{"config", OPT_CONFIG, "KEY=VALUE", "a topic setting, such as min.insync.replicas=2 (repeatable)"},
	{"dlq-config", OPT_DLQ_CONFIG, "KEY=VALUE", "a setting of the .dlq topics only, over --config, such as\n"
	 "retention.ms=2592000000 (repeatable)"},
};

static int
create_take(void *arg, int key, const char *val)
{
	struct topic_opts *t = arg;

	if (key == OPT_PARTITIONS && (t->partitions = count_arg("--partitions", val, 10000)) < 0)
		return EX_USAGE;
	if (key == OPT_REPLICATION && (t->replication = count_arg("--replication-factor", val, 32)) < 0)
		return EX_USAGE;
	if (key == OPT_CONFIG) {
		if (topic_setting("--config", val, &t->isr))
			return EX_USAGE;
		t->conf[t->nconf++] = val;
	}
	if (key == OPT_DLQ_CONFIG) {
		if (topic_setting("--dlq-config", val, &t->dlq_isr))
			return EX_USAGE;
		t->dlq[t->ndlq++] = val;
	}
	return 0;
}

/* "topics create" (create) or "topics list"; argv[0] is the verb. */
static int
topics_job(int argc, char **argv, int create)
{
	static char create_prog[] = "ot-relay topics create", list_prog[] = "ot-relay topics list";
	struct topic_opts t = {12, -1, 0, 0, calloc((size_t)argc, sizeof *t.conf), calloc((size_t)argc, sizeof *t.dlq),
	                       0, 0};
	const struct ot_cli create_cli = {"topics create [--partitions N] [--replication-factor N] [--config KEY=VALUE]\n"
	                                  "                        [--dlq-config KEY=VALUE] [options] [TOPIC...]",
	                                  "Makes each TOPIC (default: the orders, inventory, delivery and payments topics and\n"
	                                  "their .dlq) as asked, idempotently: a topic that exists keeps its partitions and\n"
	                                  "replicas and gets the settings asked. One JSON line per topic.",
	                                  OT_USE_KAFKA, create_opt, 4, create_take, &t, 0};
	const struct ot_cli list_cli = {"topics list [options] [TOPIC...]",
	                                "Prints the topics named, or all but Kafka's own, as JSON lines; 65 if one named\n"
	                                "does not exist.", OT_USE_KAFKA, NULL, 0, NULL, NULL, 0};
	struct ot_topics_req req;
	struct ot_config cfg;
	char err[1024];
	int next, rc, i;

	if (!t.conf || !t.dlq) {
		rc = EX_OSERR;
		goto out;
	}
	if ((rc = args(&cfg, create ? &create_cli : &list_cli, argc, argv, create ? create_prog : list_prog, 1, &next))) {
		rc = rc < 0 ? 0 : rc;
		goto out;
	}
	/* Contradictory: a quorum larger than the replicas could never be met. */
	if (t.replication > 0 && (t.isr > t.replication || t.dlq_isr > t.replication)) {
		fprintf(stderr, "%s: min.insync.replicas=%d is more than --replication-factor %d: producers "
		        "with acks=all could never write\n", argv0, t.isr > t.dlq_isr ? t.isr : t.dlq_isr, t.replication);
		rc = usage_error(&cfg);
		goto out;
	}
	req = (struct ot_topics_req){t.partitions, t.replication, t.conf, t.nconf, t.dlq, t.ndlq};
	for (i = next; i < argc; i++)
		if (ot_replay_target_check(argv[i], err, sizeof err)) {
			fprintf(stderr, "%s: topics: %s\n", argv0, err);
			rc = usage_error(&cfg);
			goto out;
		}
	if (!(rc = ot_tool_start(&cfg, NULL))) {
		if ((rc = ot_topics_print(&cfg, create ? &req : NULL, (const char *const *)argv + next,
		                          (size_t)(argc - next), stdout, err, sizeof err)))
			OT_ERROR(NULL, "%s", err);
		rc = ot_exit_status(rc);
		ot_config_free(&cfg);
	}
out:
	free(t.conf);
	free(t.dlq);
	return rc;
}

static int
topics_create(int argc, char **argv)
{
	return topics_job(argc, argv, 1);
}

static int
topics_list(int argc, char **argv)
{
	return topics_job(argc, argv, 0);
}

/* "topics" without create or list: -h says what there is, anything else is a usage error. */
static int
topics_other(int argc, char **argv)
{
	int help = argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));

	fprintf(help ? stdout : stderr, "usage: %s topics create|list [options] [TOPIC...]   (%s topics create -h)\n",
	        argv0, argv0);
	return help ? EX_OK : EX_USAGE;
}

static int
topics_main(int argc, char **argv)
{
	static const struct ot_sub subs[] = {{"create", topics_create}, {"list", topics_list}};

	return ot_tool_dispatch("ot-relay topics", subs, 2, topics_other, argc, argv);
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

/* "migrate": both databases' schemas (or --db's) brought to this release's. */
struct migrate {
	const char *only;
	long lock_ms;
};

static const struct ot_opt migrate_opt[] = {
	{"db", OPT_DB, "NAME", "orders, inventory or payments: the one database to migrate (default all)"},
	{"lock-timeout", OPT_LOCK_TIMEOUT, "D", "how long to wait for any one lock: 500ms, 5s, 1m (default 10s)"},
};

static int
migrate_take(void *arg, int key, const char *val)
{
	struct migrate *m = arg;

	if (key == OPT_DB && !ot_db_known(val)) {
		fprintf(stderr, "%s: --db %s: expected %s\n", argv0, val, OT_DB_NAMES);
		return EX_USAGE;
	}
	if (key == OPT_DB)
		m->only = val;
	else if ((m->lock_ms = duration_ms(val)) <= 0) {
		fprintf(stderr, "%s: --lock-timeout %s: expected 500ms, 5s, 1m or seconds, above 0\n", argv0, val);
		return EX_USAGE;
	}
	return 0;
}

static int
migrate_main(int argc, char **argv)
{
	static char prog[] = "ot-relay migrate";
	struct migrate m = {NULL, OT_PG_LOCK_TIMEOUT_MS};
	const struct ot_cli cli = {"migrate [--db orders|inventory|payments] [--lock-timeout DURATION] [options]",
	                           "Brings the databases' schemas (all three, or --db's) to this release's, once, under a\n"
	                           "lock, as a deployment step run with the migration role. Every other command\n"
	                           "refuses a schema newer than it knows (exit 78).",
	                           OT_USE_ORDERS | OT_USE_INVENTORY | OT_USE_PAYMENTS, migrate_opt, 2, migrate_take, &m, 0};
	struct ot_config cfg;
	char err[1024];
	int next, rc;

	if ((rc = args(&cfg, &cli, argc, argv, prog, 0, &next)) || (rc = ot_tool_start(&cfg, NULL)))
		return rc < 0 ? 0 : rc;
	for (size_t i = 0; !rc && ot_db_names[i]; i++)
		if (!m.only || !strcmp(m.only, ot_db_names[i]))
			rc = ot_pg_migrate_report(ot_config_db(&cfg, ot_db_names[i]), ot_db_names[i], m.lock_ms, stdout,
			                          err, sizeof err);
	if (rc)
		OT_ERROR(NULL, "migrate: %s", err);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

/* "lag": the consumer-group lag exporter, until SIGTERM. Its /readyz: a reading at most max_ms old. */
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

static const struct ot_opt lag_opt[] = {
	{"interval", OPT_INTERVAL, "SECONDS", "between readings, 0.1 to 3600 (default 10)"},
};

static int
lag_take(void *arg, int key, const char *val)
{
	char *end;
	double s = strtod(val, &end);

	(void)key;
	if (*end || end == val || !(s >= 0.1 && s <= 3600)) {
		fprintf(stderr, "%s: lag: --interval %s: expected 0.1 to 3600 seconds\n", argv0, val);
		return EX_USAGE;
	}
	*(long long *)arg = (long long)(s * 1000);
	return 0;
}

static int
lag_main(int argc, char **argv)
{
	static char prog[] = "ot-relay lag";
	long long interval_ms = 10000;
	const struct ot_cli cli = {"lag [--interval SECONDS] [options] [GROUP...]",
	                           "Serves consumer-group lag as Kafka sees it on /metrics (default port 8085): every\n"
	                           "group's committed offsets against each partition's high watermark, read every\n"
	                           "--interval seconds, whether or not a member of the group is alive. GROUP names\n"
	                           "limit it to those groups. /readyz answers 200 while the last reading is recent.",
	                           OT_USE_KAFKA | OT_USE_HTTP, lag_opt, 1, lag_take, &interval_ms, 0};
	struct ot_config cfg;
	struct ot_lag *lag = NULL;
	struct ot_health *health = NULL;
	struct ot_health_deps deps = {0};
	struct lag_check check;
	char err[1024];
	int next, rc, failing = 0;

	if ((rc = args(&cfg, &cli, argc, argv, prog, 1, &next)) || (rc = ot_tool_start(&cfg, ":8085")))
		return rc < 0 ? 0 : rc;
	if (!(lag = ot_lag_new(&cfg, (const char *const *)argv + next, (size_t)(argc - next), &rc, err, sizeof err))) {
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
	OT_INFO(NULL, "lag: reading %s every %lld ms", next < argc ? "the groups named" : "every consumer group",
	        interval_ms);
	while (!ot_stop) {
		long long until = ot_now_ms() + interval_ms;
		if (ot_lag_refresh(lag, err, sizeof err)) {
			if (!failing++)
				OT_WARN(NULL, "lag: %s", err);
		} else if (failing) {
			OT_INFO(NULL, "lag: read again after %d failed readings", failing);
			failing = 0;
		}
		while (!ot_stop && ot_now_ms() < until)
			usleep(50000);
	}
	rc = OT_OK;
out:
	ot_health_stop(health);
	ot_lag_free(lag);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

int
main(int argc, char **argv)
{
	static const struct ot_sub subs[] = {
		{"replay", replay_main}, {"topics", topics_main}, {"migrate", migrate_main}, {"lag", lag_main},
	};

	return ot_tool_dispatch(argv0, subs, sizeof subs / sizeof *subs, relay_or_copy, argc, argv);
}
