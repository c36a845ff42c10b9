/* ot-consume: inventory events and delivery updates applied to orders, write-through to Redis. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "ot_cache.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_signal.h"
#include "ot_tool.h"
#include "ot_trace.h"

static const char *argv0 = "ot-consume";

struct consume {
	PGconn *db;
	struct ot_cache *cache;
	const char *consumer;
};

static const struct ot_opt opts[] = {
	{"input", 'i', "SPEC", "- (stdin, default), a file, or kafka:TOPIC[,TOPIC]"},
};

static const char about[] =
	"Applies events to orders through guarded transitions:\n"
	"  INVENTORY_RESERVED -> CONFIRMED (an order paid by card: PAYMENT_AUTHORIZED ->\n"
	"  CONFIRMED, PAYMENT_DECLINED -> REJECTED), INVENTORY_RESERVATION_FAILED -> REJECTED,\n"
	"  DELIVERY_UPDATED {status: PREPARING|IN_TRANSIT|DELIVERED, lat, lon, eta},\n"
	"  ORDER_CANCELLED -> CANCELLED (announced on orders.events, so stock is released),\n"
	"  INVENTORY_RELEASED {reason: expired} -> CANCELLED.\n"
	"Each change commits with ORDER_STATUS_UPDATED in the outbox, then is written to Redis\n"
	"with its version. Duplicates and late events change nothing; impossible transitions\n"
	"are refused and logged.";

/* One event: the order's state moves, and the cache follows what committed. */
static int
apply_one(void *arg, const struct ot_event *ev, char *errstr, size_t errsz)
{
	struct consume *c = arg;
	struct ot_status st;
	int rc = ot_order_apply(c->db, ev, c->consumer, &st, errstr, errsz);

	if (rc >= 0 && st.version)
		ot_cache_put(c->cache, &st);
	return rc;
}

/* The events waiting, in one transaction; once committed the cache follows in one round trip. */
static int
apply_batch(void *arg, const struct ot_msg *ms, const struct ot_event *evs, size_t n, struct ot_batch_res *res,
            char *errstr, size_t errsz)
{
	struct consume *c = arg;
	int rc = ot_order_apply_batch(c->db, ms, evs, n, c->consumer, res, errstr, errsz);

	if (!rc)
		ot_cache_put_results(c->cache, res, n);
	return rc;
}

/* While idle: statuses committed while Redis did not answer go to the cache once it does. */
static void
repair(void *arg)
{
	struct consume *c = arg;
	char err[512];

	if (!ot_pg_ensure(c->db, NULL, 0))
		ot_cache_repair(c->cache, c->db, err, sizeof err);
}

int
main(int argc, char **argv)
{
	const char *input = "-";
	const struct ot_cli cli = {"[-i INPUT] [options]", about,
	                           OT_USE_KAFKA | OT_USE_CONSUMER | OT_USE_BATCH | OT_USE_ORDERS | OT_USE_REDIS | OT_USE_HTTP,
	                           opts, 1, ot_tool_take_string, &input, 0};
	struct ot_config cfg;
	struct consume cs = {0};
	struct ot_in *in = NULL;
	struct ot_health *health = NULL;
	struct ot_health_deps deps = {0};
	struct ot_run_stats st;
	char err[1024];
	int rc = OT_OK, r;

	if ((r = ot_tool_begin(&cfg, argv0, &cli, argc, argv, ":8083")))
		return r < 0 ? 0 : r;
	if (!(cs.db = ot_pg_open(cfg.orders_db, "orders", &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	cs.consumer = argv0; /* processed_events is per service, whatever the Kafka group */
	if (!(cs.cache = ot_cache_new(cfg.redis_url))) {
		rc = OT_EINTERNAL;
		OT_ERROR(NULL, "out of memory");
		goto out;
	}
	if (ot_cache_ping(cs.cache, err, sizeof err))
		OT_WARN(NULL, "%s; the database is updated and the cache repaired on read", err);
	deps.orders_db = cfg.orders_db;
	if (!(in = ot_tool_input(&cfg, input, &deps, &health, &rc)))
		goto out;
	ot_run_set_idle(repair, &cs);
	rc = ot_run_step(in, &(struct ot_step){cs.db, apply_one, apply_batch, &cs}, &st);
	OT_INFO(NULL, "%ld records: %ld applied, %ld skipped, %ld refused, %ld dead-lettered, %ld retries; "
	        "%ld of the skipped late (the order was cancelled meanwhile)",
	        st.records, st.ok, st.skipped, st.bad, st.dead, st.retries, ot_order_late());
out:
	ot_health_stop(health);
	ot_in_free(in);
	ot_cache_finish(cs.cache, cs.db);
	ot_cache_free(cs.cache);
	PQfinish(cs.db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
