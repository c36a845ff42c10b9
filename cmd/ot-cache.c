/* ot-cache: cache maintenance — get (cache-aside), warm, invalidate. */
#include <getopt.h>
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

static void
usage(FILE *f, int full)
{
	fprintf(f, "usage: %s get [ID...]\n"
	        "       %s warm\n"
	        "       %s invalidate [ID...]\n"
	        "       %s rebuild [-i kafka:orders.events] [-o beginning]\n"
	        "       %s sync [-i kafka:orders.events] [-G group]\n"
	        "       %s stats\n"
	        "       %s verify [--repair] [--since DURATION]\n", argv0, argv0, argv0, argv0, argv0, argv0, argv0);
	if (!full)
		return;
	fprintf(f, "\nget: prints each order's status as JSON, from Redis, else from the database (and\n"
	        "  refills Redis). warm: caches every order not yet in a final state. invalidate:\n"
	        "  deletes the cached entries. Without IDs, get and invalidate read ids from stdin.\n"
	        "rebuild: replays orders.events (from the beginning, to its end) into Redis through the\n"
	        "  same versioned compare-and-set as live writes, so the result matches them.\n"
	        "sync: the same, continuously, in a consumer group (default ot-cache-sync): keeps a\n"
	        "  second cache, or one that lost its data, in step with Kafka.\n"
	        "stats: hits, misses, fills and hit ratio of cache-aside reads, keys per state.\n"
	        "verify: compares Redis with the database and prints each drift as a JSON line;\n"
	        "  --repair replaces drifted entries with the database's state. Exits 65 on drift\n"
	        "  left unrepaired. --since checks only the orders the database changed lately, from\n"
	        "  the database's side: run every minute with --repair, it mends what a writer that\n"
	        "  died could not.\n\n"
	        "      --repair            verify: fix what drifted\n"
	        "      --since D           verify: only orders changed in the last D (90s, 15m, 2h)\n"
	        "  -i, --input SPEC        rebuild: kafka:TOPIC or - (default kafka:orders.events)\n"
	        "  -h, --help              this help\n"
	        "  -V, --version           print the version\n%s", ot_config_usage);
}

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
	struct ot_health_deps deps = {cfg->orders_db, NULL, cfg->redis_url, NULL, NULL};
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

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		OT_CONFIG_LONGOPTS,
		{"input", required_argument, NULL, 'i'},
		{"repair", no_argument, NULL, OT_OPT_TOOL_BASE},
		{"since", required_argument, NULL, OT_OPT_TOOL_BASE + 1},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct ot_config cfg;
	struct ot_cache *cache = NULL;
	PGconn *db = NULL;
	const char *cmd, *id, *input = "kafka:" OT_TOPIC_ORDERS;
	char err[1024], *line = NULL;
	size_t cap = 0;
	int c, rc = OT_OK, i = 0, bad = 0, n = 0, repair = 0, redis_down = 0;
	long count, since = -1;

	ot_config_init(&cfg, argv0);
	while ((c = getopt_long(argc, argv, OT_CONFIG_SHORTOPTS "i:hV", longopts, NULL)) != -1) {
		if ((rc = ot_config_arg(&cfg, c, optarg, usage)) != OT_ARG_TOOL) {
			if (rc >= 0)
				return rc;
			continue;
		}
		switch (c) {
		case 'i': input = optarg; break;
		case OT_OPT_TOOL_BASE: repair = 1; break;
		case OT_OPT_TOOL_BASE + 1:
			if ((since = ot_duration(optarg)) <= 0) {
				fprintf(stderr, "%s: --since %s: expected 90s, 15m, 2h or seconds\n", argv0, optarg);
				return EX_USAGE;
			}
			break;
		}
	}
	rc = OT_OK;
	if (optind >= argc || (strcmp(argv[optind], "get") && strcmp(argv[optind], "warm") &&
	                       strcmp(argv[optind], "invalidate") && strcmp(argv[optind], "rebuild") &&
	                       strcmp(argv[optind], "sync") && strcmp(argv[optind], "stats") &&
	                       strcmp(argv[optind], "verify"))) {
		if (optind < argc)
			fprintf(stderr, "%s: unknown command: %s\n", argv0, argv[optind]);
		usage(stderr, 0);
		return EX_USAGE;
	}
	cmd = argv[optind++];
	if ((repair || since > 0) && strcmp(cmd, "verify")) {
		fprintf(stderr, "%s: --%s belongs to verify\n", argv0, repair ? "repair" : "since");
		return EX_USAGE;
	}
	if ((strcmp(cmd, "get") && strcmp(cmd, "invalidate")) && optind < argc) {
		fprintf(stderr, "%s: %s takes no arguments\n", argv0, cmd);
		return EX_USAGE;
	}
	if ((rc = ot_tool_start(&cfg, !strcmp(cmd, "sync") ? ":8084" : NULL)))
		return rc;
	if (!(cache = ot_cache_new(cfg.redis_url))) {
		OT_ERROR(NULL, "out of memory");
		rc = OT_EINTERNAL;
		goto out;
	}
	if (ot_cache_ping(cache, err, sizeof err)) {
		if (strcmp(cmd, "get")) {
			OT_ERROR(NULL, "%s", err);
			rc = OT_ESERVICE;
			goto out;
		}
		OT_WARN(NULL, "%s; reading the database", err);
		redis_down = 1;
	}
	if (!strcmp(cmd, "rebuild") || !strcmp(cmd, "sync")) {
		rc = rebuild(&cfg, input, cache, !strcmp(cmd, "sync"));
		goto out;
	}
	if (!strcmp(cmd, "stats")) {
		json_t *o = ot_cache_stats(cache, err, sizeof err);
		char *js = o ? json_dumps(o, OT_JSON_FLAGS) : NULL;
		if (!o) {
			OT_ERROR(NULL, "%s", err);
			rc = OT_ESERVICE;
		} else if (!js || puts(js) == EOF) {
			rc = OT_EOUTPUT;
		}
		free(js);
		json_decref(o);
		goto out;
	}
	if (strcmp(cmd, "invalidate") && !(db = ot_pg_open(cfg.orders_db, "orders", &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	if (!strcmp(cmd, "verify")) {
		struct ot_drift d;
		long drift;

		if (since > 0)
			rc = (count = ot_cache_verify_since(cache, db, (double)since, repair, stdout, &d, err, sizeof err)) < 0
			     ? (int)count : OT_OK;
		else
			rc = ot_cache_verify(cache, db, repair, stdout, &d, err, sizeof err);
		if (rc) {
			OT_ERROR(NULL, "verify: %s", err);
			goto out;
		}
		drift = d.stale + d.ahead + d.mismatch + d.orphan;
		if (since > 0)
			OT_INFO(NULL, "verify: %ld orders changed in the last %lds: %ld cached and checked: %ld stale, "
			        "%ld ahead, %ld mismatched, %ld repaired; %ld not cached", count, since, d.checked,
			        d.stale, d.ahead, d.mismatch, d.repaired, d.missing);
		else
			OT_INFO(NULL, "verify: %ld cached entries checked: %ld stale, %ld ahead, %ld mismatched, "
			        "%ld orphaned, %ld repaired; %ld active orders not cached", d.checked, d.stale,
			        d.ahead, d.mismatch, d.orphan, d.repaired, d.missing);
		if (drift > d.repaired)
			rc = OT_EINPUT;
		goto out;
	}
	if (!strcmp(cmd, "warm")) {
		count = ot_cache_warm(cache, db, err, sizeof err);
		if (count < 0) {
			OT_ERROR(NULL, "%s", err);
			rc = (int)count;
		} else {
			OT_INFO(NULL, "warmed %ld active orders", count);
		}
		goto out;
	}
	argc -= optind;
	argv += optind;
	while (!ot_stop && (id = next_id(argv, &i, argc, &line, &cap))) {
		n++;
		if (!ot_uuid_valid(id)) {
			OT_ERROR(NULL, "order id is not a UUID: %s", id);
			bad++;
		} else if (!strcmp(cmd, "get")) {
			if ((rc = get(db, redis_down ? NULL : cache, id, &bad)))
				break;
		} else {
			c = ot_cache_invalidate(cache, id, err, sizeof err);
			if (c < 0) {
				OT_ERROR(id, "%s", err);
				rc = c;
				break;
			}
			OT_INFO(id, "%s", c ? "invalidated" : "was not cached");
		}
	}
	if (!rc && bad)
		rc = OT_EINPUT;
	if (!strcmp(cmd, "get") && !redis_down)
		ot_cache_stats_flush(cache, err, sizeof err);
out:
	if (fflush(stdout) && !rc)
		rc = OT_EOUTPUT;
	free(line);
	ot_cache_free(cache);
	PQfinish(db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
