/* ot-place: order requests in, orders placed, created orders out. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "ot_cache.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_signal.h"
#include "ot_tool.h"
#include "ot_trace.h"

static const char *argv0 = "ot-place";

struct place {
	PGconn *db;
	struct ot_cache *cache;
	struct ot_out *out;
};

static const struct ot_opt opts[] = {
	{"input", 'i', "SPEC", "- (stdin, default) or a file"},
};

static const char about[] =
	"Places order requests, one JSON object a line:\n"
	"  {\"customer_id\":\"c1\",\"items\":[{\"sku\":\"A\",\"qty\":1}],\"address\":\"...\",\"request_id\":\"r1\"}\n"
	"Each order and its ORDER_CREATED outbox row commit together; the order is cached as\n"
	"PENDING and printed. A request_id seen before prints the order it placed.";

static int
handle(void *arg, const struct ot_msg *m, char *errstr, size_t errsz)
{
	struct place *p = arg;
	json_error_t jerr;
	json_t *req, *order = NULL;
	struct ot_status st;
	struct ot_span sp;
	char *s;
	int created, rc;

	req = json_loadb(m->value, m->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req)
		return ot_err(OT_EINPUT, errstr, errsz, "not JSON: %s at column %d", jerr.text, jerr.column);
	if ((rc = ot_pg_ensure(p->db, errstr, errsz))) {
		json_decref(req);
		return rc;
	}
	/* Each order's life starts a trace here, as at ot-serve's POST /orders. */
	ot_span_begin(&sp, "place order", OT_SPAN_INTERNAL, NULL);
	rc = ot_order_place(p->db, req, "ot-place", &order, &created, &st, errstr, errsz);
	if (!rc && st.version)
		ot_cache_put(p->cache, &st);
	if (rc < 0)
		ot_span_error(&sp, errstr);
	else if (order)
		ot_span_tag(&sp, "order_id", json_string_value(json_object_get(order, "order_id")));
	ot_span_end(&sp);
	json_decref(req);
	if (rc == OT_ECONFLICT) /* a request_id reused with another order: a bad record here */
		rc = OT_EINPUT;
	if (rc)
		return rc;
	s = json_dumps(order, OT_JSON_FLAGS);
	json_decref(order);
	if (!s)
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	rc = ot_out_send(p->out, NULL, NULL, s, strlen(s), NULL, 0, errstr, errsz);
	free(s);
	if (!rc)
		rc = ot_out_flush(p->out, 10000, errstr, errsz);
	return rc ? rc : created ? OT_APPLIED : OT_PLACED_BEFORE;
}

/* The requests waiting, in one transaction; those that do not parse, or that the batch could
 * not take, are left to handle(), which reports them. */
static int
handle_batch(void *arg, const struct ot_msg *ms, size_t n, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct place *p = arg;
	json_t **reqs, **orders;
	size_t i;
	char *s;
	int rc;

	reqs = calloc(n, sizeof *reqs);
	orders = calloc(n, sizeof *orders);
	if (!reqs || !orders) {
		free(reqs);
		free(orders);
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	}
	for (i = 0; i < n; i++)
		res[i].rc = (reqs[i] = json_loadb(ms[i].value, ms[i].len, JSON_REJECT_DUPLICATES, NULL)) ? OT_OK
		                                                                                   : OT_EINTERNAL;
	if (!(rc = ot_pg_ensure(p->db, errstr, errsz)))
		rc = ot_order_place_batch(p->db, reqs, n, "ot-place", orders, res, errstr, errsz);
	if (!rc)
		ot_cache_put_results(p->cache, res, n);
	/* Committed: each placed order is printed, in input order. */
	for (i = 0; i < n; i++) {
		if (orders[i] && (s = json_dumps(orders[i], OT_JSON_FLAGS))) {
			if (ot_out_send(p->out, NULL, NULL, s, strlen(s), NULL, 0, errstr, errsz))
				OT_ERROR(NULL, "%s: %s", ms[i].where, errstr);
			free(s);
		}
		json_decref(orders[i]);
		json_decref(reqs[i]);
	}
	if (!rc && ot_out_flush(p->out, 10000, errstr, errsz))
		OT_ERROR(NULL, "writing the placed orders: %s", errstr);
	free(reqs);
	free(orders);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *input = "-";
	const struct ot_cli cli = {"[-i INPUT] [options]", about, OT_USE_BATCH | OT_USE_ORDERS | OT_USE_REDIS,
	                           opts, 1, ot_tool_take_string, &input, 0};
	struct ot_config cfg;
	struct place p = {0};
	struct ot_in *in = NULL;
	struct ot_run_stats st;
	char err[1024];
	int rc = OT_OK, r;

	if ((r = ot_tool_begin(&cfg, argv0, &cli, argc, argv, NULL)))
		return r < 0 ? 0 : r;
	if (!(p.db = ot_pg_open(cfg.orders_db, "orders", &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	if (!(p.cache = ot_cache_new(cfg.redis_url))) {
		rc = OT_EINTERNAL;
		OT_ERROR(NULL, "out of memory");
		goto out;
	}
	if (ot_cache_ping(p.cache, err, sizeof err))
		OT_WARN(NULL, "%s; orders are placed in the database and cached later", err);
	if (!(p.out = ot_out_open("-", &cfg, &rc, err, sizeof err)) ||
	    !(in = ot_in_open(input, &cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	ot_run_set_batch(handle_batch);
	rc = ot_run(in, handle, &p, &st);
	OT_INFO(NULL, "%ld records: %ld placed, %ld already placed, %ld bad", st.records, st.ok,
	        st.skipped, st.bad);
out:
	ot_in_free(in);
	if (p.out && ot_out_flush(p.out, 10000, err, sizeof err) && !rc)
		rc = OT_EOUTPUT;
	ot_out_free(p.out);
	ot_cache_finish(p.cache, p.db);
	ot_cache_free(p.cache);
	PQfinish(p.db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
