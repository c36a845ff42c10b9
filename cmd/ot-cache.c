/* ot-cache: cache maintenance — get (cache-aside), warm, invalidate, rebuild, sync, stats, verify. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ot_cache.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_event.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_redis.h"
#include "ot_run.h"
#include "ot_signal.h"
#include "ot_text.h"
#include "ot_tool.h"
#include "ot_trace.h"

static const char *argv0 = "ot-cache";

/* Next id from argv, else from stdin, in its canonical form when it is a UUID; NULL at the end. */
static const char *
next_id(char **argv, int *i, int argc, char **line, size_t *cap)
{
	ssize_t n;

	if (argc > 0) {
		if (*i >= argc)
			return NULL;
		ot_id_canon(argv[*i]);
		return argv[(*i)++];
	}
	while ((n = getline(line, cap, stdin)) >= 0) {
		while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r' || (*line)[n - 1] == ' '))
			(*line)[--n] = '\0';
		if (n > 0) {
			ot_id_canon(*line);
			return *line;
		}
	}
	return NULL;
}

static int
get(PGconn *db, struct ot_cache *cache, const char *id, int *bad)
{
	struct ot_status st;
	char err[1024], *s;
	json_t *o;
	int hit, rc;

	/* Without a cache (Redis did not answer at start), the database alone. */
	hit = 0;
	rc = cache ? ot_cache_get(cache, db, id, &st, &hit, err, sizeof err) : ot_order_load(db, id, &st, err, sizeof err);
	if (rc < 0) {
		OT_ERROR(id, "%s", err);
		return rc;
	}
	if (rc == 0) {
		OT_ERROR(id, "order %s not found", id);
		(*bad)++;
		return OT_OK;
	}
	o = ot_status_to_json(&st);
	json_object_set_new(o, "cache", json_string(hit ? "hit" : "miss"));
	s = json_dumps(o, OT_JSON_FLAGS);
	json_decref(o);
	if (!s || puts(s) == EOF) {
		free(s);
		return OT_EOUTPUT;
	}
	free(s);
	return OT_OK;
}

struct replay {
	struct ot_cache *cache;
	const char *orders_db;
	PGconn *db;          /* opened on the first order Redis knows nothing of */
	int sync;            /* following the topic: each record's handling is a span of its trace */
};

static int apply_status(struct replay *rp, struct ot_status *st, char *errstr, size_t errsz);

static int
rebuild_one(void *arg, const struct ot_msg *m, char *errstr, size_t errsz)
{
	struct replay *rp = arg;
	struct ot_status st;
	struct ot_event ev;
	struct ot_span sp;
	int rc;

	if (ot_event_parse(&ev, m->value, m->len, errstr, errsz))
		return OT_EINPUT;
	rc = ot_status_from_event(&ev, &st, errstr, errsz);
	/* A rebuild replays old events: only sync's live ones join their order's trace. */
	if (rc > 0 && rp->sync)
		ot_run_span(&sp, m, &ev);
	ot_event_clear(&ev);
	if (rc <= 0)
		return rc ? rc : OT_IGNORED; /* an event that carries no status */
	rc = apply_status(rp, &st, errstr, errsz);
	if (rp->sync) {
		if (rc < 0)
			ot_span_error(&sp, errstr);
		ot_span_end(&sp);
	}
	return rc;
}

/* Writes st to the cache if it is newer; from the database when Redis knows nothing of it. */
static int
apply_status(struct replay *rp, struct ot_status *st, char *errstr, size_t errsz)
{
	int rc;

	/* rc 0: the cache already had a newer version */
	if ((rc = ot_cache_put_known(rp->cache, st, errstr, errsz)) != 2)
		return rc < 0 ? rc : rc ? OT_APPLIED : OT_STALE;
	/* Redis knows nothing of this order (it lost its data, or never had it): its status comes
	 * from the database, which is never older than this change. */
	if (!rp->db && !(rp->db = ot_pg_open(rp->orders_db, "orders", &rc, errstr, errsz)))
		return rc;
	if ((rc = ot_pg_ensure(rp->db, errstr, errsz)))
		return rc;
	if ((rc = ot_order_load(rp->db, st->order_id, st, errstr, errsz)) <= 0)
		return rc ? rc : OT_NOT_HERE; /* not in this database: nothing to cache */
	rc = ot_cache_fill(rp->cache, st, errstr, errsz);
	return rc < 0 ? rc : rc ? OT_APPLIED : OT_STALE;
}

/* Replays the topic from its beginning to its end; a fresh group each time, so nothing of an
 * earlier rebuild is skipped. */
static int
rebuild(struct ot_config *cfg, const char *input, struct ot_cache *cache, int sync)
{
	struct replay rp = {cache, cfg->orders_db, NULL, sync};
	struct ot_health_deps deps = {.orders_db = cfg->orders_db, .redis_url = cfg->redis_url};
	struct ot_health *health;
	struct ot_run_stats st;
	struct ot_in *in;
	char err[1024], group[64];
	int rc;

	if (sync) {
		/* A standing group: after a restart it goes on where it stopped. */
		if (!strcmp(cfg->group, argv0)) {
			free(cfg->group);
			cfg->group = strdup("ot-cache-sync");
		}
	} else {
		if (!strcmp(cfg->offset, "stored")) {
			free(cfg->offset);
			cfg->offset = strdup("beginning");
		}
		if (!strcmp(cfg->group, argv0)) {
			snprintf(group, sizeof group, "ot-cache-rebuild-%ld", (long)getpid());
			free(cfg->group);
			cfg->group = strdup(group);
		}
		cfg->exit_at_end = 1;
	}
	if (!(in = ot_in_open(input, cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		return rc;
	}
	/* A rebuild reads once, in a group of its own: it leaves no offsets (and no lag) behind. */
	if (!sync)
		ot_in_keep_no_place(in);
	deps.in = in;
	if (!(health = ot_health_serve(cfg, sync && ot_in_is_kafka(in) && !cfg->exit_at_end && !cfg->count, &deps,
	                               &rc, err, sizeof err)) && rc) {
		OT_ERROR(NULL, "%s", err);
		ot_in_free(in);
		return rc;
	}
	rc = ot_run(in, rebuild_one, &rp, &st);
	ot_health_stop(health);
	PQfinish(rp.db);
	OT_INFO(NULL, "%s: %ld events, %ld written, %ld already current or not a status, %ld bad",
	        sync ? "sync" : "rebuild", st.records, st.ok, st.skipped, st.bad + st.dead);
	ot_in_free(in);
	return rc;
}

/* A subcommand's run: its config, the cache, and where its operands start. */
struct job {
	struct ot_config cfg;
	struct ot_cache *cache;
	PGconn *db;
	int next, redis_down;
};

/* The end of every subcommand: output flushed and checked, everything freed; the exit status. */
static int
finish(struct job *j, int rc)
{
	if (fflush(stdout) && !rc)
		rc = OT_EOUTPUT;
	ot_cache_free(j->cache);
	PQfinish(j->db);
	ot_config_free(&j->cfg);
	return ot_exit_status(rc);
}

enum { IDS = 1, REDIS_MAY_FAIL = 2, ORDERS_DB = 4 };

/* A subcommand's start: its options (argv[0] its name; operands only with IDS), the config,
 * the cache with Redis answering (unless REDIS_MAY_FAIL: then j->redis_down), and with
 * ORDERS_DB the database. Returns 0, -1 after -h or -V, or the exit status. */
static int
start(struct job *j, const struct ot_cli *cli, int argc, char **argv, int how, const char *addr)
{
	static char prog[64];
	const char *name = argv[0];
	char err[1024];
	int rc, done;

	memset(j, 0, sizeof *j);
	ot_config_init(&j->cfg, argv0);
	snprintf(prog, sizeof prog, "%s %s", argv0, argv[0]); /* getopt's messages begin with it */
	argv[0] = prog;
	if ((rc = ot_tool_args(&j->cfg, cli, argc, argv, &j->next, &done)) || done ||
	    (!(how & IDS) && j->next < argc)) {
		if (!rc && !done) {
			fprintf(stderr, "%s: %s takes no arguments\n", argv0, name);
			rc = EX_USAGE;
		}
		ot_config_free(&j->cfg);
		return rc ? rc : -1;
	}
	if ((rc = ot_tool_start(&j->cfg, addr)))
		return rc;
	if (!(j->cache = ot_cache_new(j->cfg.redis_url))) {
		OT_ERROR(NULL, "out of memory");
		return finish(j, OT_EINTERNAL);
	}
	if (ot_cache_ping(j->cache, err, sizeof err)) {
		if (!(how & REDIS_MAY_FAIL)) {
			OT_ERROR(NULL, "%s", err);
			return finish(j, OT_ESERVICE);
		}
		OT_WARN(NULL, "%s; reading the database", err);
		j->redis_down = 1;
	}
	if ((how & ORDERS_DB) && !(j->db = ot_pg_open(j->cfg.orders_db, "orders", &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		return finish(j, rc);
	}
	return 0;
}

/* Runs one on each id of the operands, else of stdin; an id that is not a UUID, or that one
 * counts in *bad (not found), makes the run's status 65. Returns 0 or the error that stopped it. */
static int
each_id(struct job *j, int argc, char **argv, int (*one)(struct job *j, const char *id, int *bad))
{
	const char *id;
	char *line = NULL;
	size_t cap = 0;
	int rc = OT_OK, i = 0, bad = 0;

	argc -= j->next;
	argv += j->next;
	while (!ot_stop && (id = next_id(argv, &i, argc, &line, &cap))) {
		if (!ot_uuid_valid(id)) {
			OT_ERROR(NULL, "order id is not a UUID: %s", id);
			bad++;
		} else if ((rc = one(j, id, &bad))) {
			break;
		}
	}
	free(line);
	return !rc && bad ? OT_EINPUT : rc;
}

static int
get_one(struct job *j, const char *id, int *bad)
{
	return get(j->db, j->redis_down ? NULL : j->cache, id, bad);
}

/* "get [ID...]": each order's status, cache-aside. */
static int
get_main(int argc, char **argv)
{
	const struct ot_cli cli = {"get [ID...] [options]",
	                           "Prints each order's status as JSON, from Redis, else from the database (and\n"
	                           "refills Redis); with Redis unreachable, from the database. Without IDs, reads\n"
	                           "one id a line from stdin.", OT_USE_ORDERS | OT_USE_REDIS, NULL, 0, NULL, NULL, 0};
	struct job j;
	char err[1024];
	int rc;

	if ((rc = start(&j, &cli, argc, argv, IDS | REDIS_MAY_FAIL | ORDERS_DB, NULL)))
		return rc < 0 ? 0 : rc;
	rc = each_id(&j, argc, argv, get_one);
	if (!j.redis_down)
		ot_cache_stats_flush(j.cache, err, sizeof err);
	return finish(&j, rc);
}

static int
invalidate_one(struct job *j, const char *id, int *bad)
{
	char err[1024];
	int c;

	(void)bad;
	if ((c = ot_cache_invalidate(j->cache, id, err, sizeof err)) < 0) {
		OT_ERROR(id, "%s", err);
		return c;
	}
	OT_INFO(id, "%s", c ? "invalidated" : "was not cached");
	return OT_OK;
}

/* "invalidate [ID...]": deletes the cached entries. */
static int
invalidate_main(int argc, char **argv)
{
	const struct ot_cli cli = {"invalidate [ID...] [options]",
	                           "Deletes the cached entries. Without IDs, reads one id a line from stdin.",
	                           OT_USE_REDIS, NULL, 0, NULL, NULL, 0};
	struct job j;
	int rc;

	if ((rc = start(&j, &cli, argc, argv, IDS, NULL)))
		return rc < 0 ? 0 : rc;
	return finish(&j, each_id(&j, argc, argv, invalidate_one));
}

/* "warm": caches every order not yet in a final state. */
static int
warm_main(int argc, char **argv)
{
	const struct ot_cli cli = {"warm [options]", "Caches every order not yet delivered, rejected or cancelled.",
	                           OT_USE_ORDERS | OT_USE_REDIS, NULL, 0, NULL, NULL, 0};
	struct job j;
	char err[1024];
	long n;
	int rc;

	if ((rc = start(&j, &cli, argc, argv, ORDERS_DB, NULL)))
		return rc < 0 ? 0 : rc;
	if ((n = ot_cache_warm(j.cache, j.db, err, sizeof err)) < 0) {
		OT_ERROR(NULL, "%s", err);
		return finish(&j, (int)n);
	}
	OT_INFO(NULL, "warmed %ld active orders", n);
	return finish(&j, OT_OK);
}

static const struct ot_opt input_opt[] = {
	{"input", 'i', "SPEC", "kafka:TOPIC or - (default kafka:orders.events)"},
};

/* "rebuild" and "sync": the order events replayed into Redis, once or continuously. */
static int
replay_main(int argc, char **argv, int sync)
{
	const char *input = "kafka:" OT_TOPIC_ORDERS;
	const struct ot_cli rebuild_cli = {"rebuild [-i INPUT] [options]",
	                                   "Replays orders.events (from the beginning, to its end) into Redis through the\n"
	                                   "same versioned compare-and-set as live writes, so the result matches them.",
	                                   OT_USE_KAFKA | OT_USE_CONSUMER | OT_USE_ORDERS | OT_USE_REDIS, input_opt, 1,
	                                   ot_tool_take_string, &input, 0};
	const struct ot_cli sync_cli = {"sync [-i INPUT] [options]",
	                                "The same as rebuild, continuously, in a consumer group (default ot-cache-sync):\n"
	                                "keeps a second cache, or one that lost its data, in step with Kafka.",
	                                OT_USE_KAFKA | OT_USE_CONSUMER | OT_USE_ORDERS | OT_USE_REDIS | OT_USE_HTTP,
	                                input_opt, 1, ot_tool_take_string, &input, 0};
	struct job j;
	int rc;

	if ((rc = start(&j, sync ? &sync_cli : &rebuild_cli, argc, argv, 0, sync ? ":8084" : NULL)))
		return rc < 0 ? 0 : rc;
	return finish(&j, rebuild(&j.cfg, input, j.cache, sync));
}

static int
rebuild_main(int argc, char **argv)
{
	return replay_main(argc, argv, 0);
}

static int
sync_main(int argc, char **argv)
{
	return replay_main(argc, argv, 1);
}

/* "stats": the cache-aside counters and the keys per state, as one JSON line. */
static int
stats_main(int argc, char **argv)
{
	const struct ot_cli cli = {"stats [options]",
	                           "Prints hits, misses, fills and hit ratio of cache-aside reads, and keys per state.",
	                           OT_USE_REDIS, NULL, 0, NULL, NULL, 0};
	struct job j;
	char err[1024], *js;
	json_t *o;
	int rc;

	if ((rc = start(&j, &cli, argc, argv, 0, NULL)))
		return rc < 0 ? 0 : rc;
	if (!(o = ot_cache_stats(j.cache, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		return finish(&j, OT_ESERVICE);
	}
	js = json_dumps(o, OT_JSON_FLAGS);
	rc = !js || puts(js) == EOF ? OT_EOUTPUT : OT_OK;
	free(js);
	json_decref(o);
	return finish(&j, rc);
}

struct verify {
	int repair;
	long since;   /* seconds; -1: every cached entry */
};

static const struct ot_opt verify_opt[] = {
	{"repair", OT_OPT_TOOL_BASE, NULL, "replace drifted entries with the database's state"},
	{"since", OT_OPT_TOOL_BASE + 1, "D", "only orders the database changed in the last D (90s, 15m, 2h)"},
};

static int
verify_take(void *arg, int key, const char *val)
{
	struct verify *v = arg;

	if (key == OT_OPT_TOOL_BASE)
		v->repair = 1;
	else if ((v->since = ot_duration(val)) <= 0) {
		fprintf(stderr, "%s: --since %s: expected 90s, 15m, 2h or seconds\n", argv0, val);
		return EX_USAGE;
	}
	return 0;
}

/* "verify": Redis compared with the database, each drift a JSON line; 65 on drift left. */
static int
verify_main(int argc, char **argv)
{
	struct verify v = {0, -1};
	const struct ot_cli cli = {"verify [--repair] [--since DURATION] [options]",
	                           "Compares Redis with the database and prints each drift as a JSON line. Exits 65\n"
	                           "on drift left unrepaired. --since checks only the orders the database changed\n"
	                           "lately, from the database's side: run every minute with --repair, it mends what\n"
	                           "a writer that died could not.", OT_USE_ORDERS | OT_USE_REDIS, verify_opt, 2,
	                           verify_take, &v, 0};
	struct ot_drift d;
	struct job j;
	char err[1024];
	long count = 0;
	int rc;

	if ((rc = start(&j, &cli, argc, argv, ORDERS_DB, NULL)))
		return rc < 0 ? 0 : rc;
	if (v.since > 0)
		rc = (count = ot_cache_verify_since(j.cache, j.db, (double)v.since, v.repair, stdout, &d, err,
		                                    sizeof err)) < 0 ? (int)count : OT_OK;
	else
		rc = ot_cache_verify(j.cache, j.db, v.repair, stdout, &d, err, sizeof err);
	if (rc) {
		OT_ERROR(NULL, "verify: %s", err);
		return finish(&j, rc);
	}
	if (v.since > 0)
		OT_INFO(NULL, "verify: %ld orders changed in the last %lds: %ld cached and checked: %ld stale, "
		        "%ld ahead, %ld mismatched, %ld repaired; %ld not cached", count, v.since, d.checked,
		        d.stale, d.ahead, d.mismatch, d.repaired, d.missing);
	else
		OT_INFO(NULL, "verify: %ld cached entries checked: %ld stale, %ld ahead, %ld mismatched, "
		        "%ld orphaned, %ld repaired; %ld active orders not cached", d.checked, d.stale,
		        d.ahead, d.mismatch, d.orphan, d.repaired, d.missing);
	return finish(&j, d.stale + d.ahead + d.mismatch + d.orphan > d.repaired ? OT_EINPUT : OT_OK);
}

static const struct ot_sub subs[] = {
	{"get", get_main}, {"warm", warm_main}, {"invalidate", invalidate_main}, {"rebuild", rebuild_main},
	{"sync", sync_main}, {"stats", stats_main}, {"verify", verify_main},
};
#define NSUBS (sizeof subs / sizeof *subs)

/* No subcommand named: -h and -V answer, anything else is a usage error. */
static int
no_command(int argc, char **argv)
{
	FILE *f = stderr;
	size_t i;

	if (argc > 1 && (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))) {
		puts(OT_VERSION);
		return EX_OK;
	}
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))
		f = stdout;
	else if (argc > 1 && argv[1][0] == '-')
		fprintf(stderr, "%s: %s: options go after the command\n", argv0, argv[1]);
	else if (argc > 1)
		fprintf(stderr, "%s: unknown command: %s\n", argv0, argv[1]);
	fprintf(f, "usage: %s COMMAND [options]   (%s COMMAND -h for each)\n\ncommands:", argv0, argv0);
	for (i = 0; i < NSUBS; i++)
		fprintf(f, " %s", subs[i].name);
	fputc('\n', f);
	return f == stdout ? EX_OK : EX_USAGE;
}

int
main(int argc, char **argv)
{
	return ot_tool_dispatch(argv0, subs, NSUBS, no_command, argc, argv);
}
