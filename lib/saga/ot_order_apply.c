/* ot_order_apply: events move orders through guarded, versioned transitions, a batch at a time. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_err.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_order_int.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_state.h"
#include "ot_text.h"
#include "ot_trace.h"

/* Events skipped because the order was cancelled meanwhile, since the process started. */
static atomic_long late_count;

long
ot_order_late(void)
{
	return atomic_load(&late_count);
}

static const double delivery_bounds[] = {300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 14400, 28800, 86400};

static void
count_delivery(double seconds)
{
	ot_metric_observe(ot_metric_new(OT_HISTOGRAM, "ot_order_delivery_seconds", "Time from an order's creation "
	                                "to its delivery.", NULL, delivery_bounds,
	                                sizeof delivery_bounds / sizeof delivery_bounds[0]), seconds);
}

/* The status an event asks for: -1 for a payment event that only records the payment,
 * OT_IGNORED for events that touch no order. */
static int
target_of(const struct ot_event *ev, int *to, char *errstr, size_t errsz)
{
	json_t *s;

	switch (ev->kind) {
	case OT_EV_INVENTORY_RESERVED:
		/* An order paid by card is confirmed once its payment is authorised, not before. */
		if (json_object_get(ev->data, "payment"))
			return OT_IGNORED;
		*to = OT_ST_CONFIRMED;
		return OT_OK;
	case OT_EV_PAYMENT_AUTHORIZED: *to = OT_ST_CONFIRMED; return OT_OK;
	case OT_EV_PAYMENT_DECLINED: *to = OT_ST_REJECTED; return OT_OK;
	case OT_EV_PAYMENT_CAPTURED:
	case OT_EV_PAYMENT_VOIDED:
	case OT_EV_PAYMENT_REFUNDED:
		/* After a delivery or a cancel: the order stays where it is, its payment moves. */
		*to = -1;
		return OT_OK;
	case OT_EV_PAYMENT_REFUND_REQUESTED: /* for ot-pay: the refund, when made, is PAYMENT_REFUNDED */
		return OT_IGNORED;
	case OT_EV_INVENTORY_RESERVATION_FAILED: *to = OT_ST_REJECTED; return OT_OK;
	case OT_EV_ORDER_CANCELLED: *to = OT_ST_CANCELLED; return OT_OK;
	case OT_EV_INVENTORY_RELEASED:
		/* Stock released because its reservation expired: the order cannot go on. A
		 * release that answers a cancel changes nothing here. */
		s = json_object_get(ev->data, "reason");
		if (!json_is_string(s) || strcmp(json_string_value(s), "expired"))
			return OT_IGNORED;
		*to = OT_ST_CANCELLED;
		return OT_OK;
	case OT_EV_ORDER_CREATED:
	case OT_EV_ORDER_STATUS_UPDATED:
		return OT_IGNORED;
	case OT_EV_DELIVERY_UPDATED:
		*to = ot_delivery_status(ev->data, errstr, errsz);
		return *to < 0 ? *to : OT_OK;
	default:
		return ot_err(OT_EINPUT, errstr, errsz, "unknown event type \"%s\"", ev->type);
	}
}

/* ORDER_CANCELLED on orders.events, with the order's lines, tells the Inventory Service to
 * release what it reserved (the saga's compensation). Fills out (for the outbox). */
static int
cancel_event(PGconn *db, const struct ot_event *cause, long long version, const char *reason,
             struct ot_event *out, char *errstr, size_t errsz)
{
	const char *p[1] = {cause->order_id};
	PGresult *res;
	json_t *items;
	int rc;

	res = ot_pg_query(db, "SELECT coalesce(json_agg(json_build_object('sku', sku, 'qty', qty) "
	                  "ORDER BY line), '[]') FROM order_items WHERE order_id = $1", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	items = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	ot_event_init(out, OT_EV_ORDER_CANCELLED, cause->order_id, version, "ot-consume",
	              json_pack("{s:s, s:o}", "reason", reason, "items", items ? items : json_array()),
	              cause->traceparent);
	return OT_OK;
}

/* One event of a batch on its way through ot_order_apply_batch. */
struct step {
	int to;                   /* the status it asks for; -1 none (a payment event) */
	int has_pay;              /* a payment event: pay is what it reports */
	int pay_only;             /* applied as its payment alone: the status stays */
	struct ot_payment pay;
	char lat[32], lon[32], eta[40], reason[256];
	int fresh;                /* first seen now: not in processed_events before */
	int kind;                 /* what came of it: NOTHING, APPLIED, REFRESH (the cache may be behind) */
	int from;
	struct ot_status st;      /* APPLIED: the new status */
};
enum { NOTHING, APPLIED, REFRESH };

/* An order a batch touches, as locked at its start and as the batch leaves it. */
struct row {
	char id[OT_UUID_LEN];
	int status;               /* st.status, parsed */
	char lat[32], lon[32], eta[40], reason[256]; /* the last of each the batch set; "" none */
	int changed;
	double age_s;             /* created_at to now, for the delivery histogram */
	struct ot_status st;      /* the current status, for the events' payloads */
};

/* Checks ev before any transaction: OT_OK with s filled, OT_IGNORED (a type that moves no
 * order), or OT_EINPUT. */
static int
step_check(const struct ot_event *ev, struct step *s, char *errstr, size_t errsz)
{
	json_t *sk;
	int rc;

	memset(s, 0, sizeof *s);
	s->to = -1;
	if ((rc = target_of(ev, &s->to, errstr, errsz)))
		return rc;
	if (!ot_uuid_valid(ev->order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"order_id\" is not a UUID");
	if ((rc = ot_event_position(ev->data, s->lat, s->lon, s->eta, errstr, errsz)))
		return rc;
	s->has_pay = ot_payment_from_event(ev, &s->pay);
	if (ev->kind == OT_EV_PAYMENT_DECLINED) {
		/* The processor's decline code (insufficient_funds), else its error code. */
		sk = json_object_get(ev->data, "decline_code");
		if (!json_is_string(sk) || !json_string_length(sk))
			sk = json_object_get(ev->data, "code");
		snprintf(s->reason, sizeof s->reason, "payment_declined: %s",
		         json_is_string(sk) && json_string_length(sk) ? json_string_value(sk) : "declined");
		s->reason[ot_utf8_cut(s->reason, sizeof s->reason)] = '\0';
	} else if (s->to == OT_ST_REJECTED && (sk = json_object_get(ev->data, "short_skus")) && json_is_array(sk)) {
		char *d = json_dumps(sk, JSON_COMPACT);
		snprintf(s->reason, sizeof s->reason, "insufficient stock: %s", d ? d : "");
		s->reason[ot_utf8_cut(s->reason, sizeof s->reason)] = '\0'; /* whole characters only */
		free(d);
	}
	if (s->to == OT_ST_CANCELLED) {
		sk = json_object_get(ev->data, "reason");
		ot_utf8_copy(s->reason, sizeof s->reason, ev->kind == OT_EV_INVENTORY_RELEASED ?
		             "reservation expired" : json_is_string(sk) ? json_string_value(sk) : "cancelled");
	}
	return OT_OK;
}

static struct row *
row_of(struct row *rows, size_t nrows, const char *id)
{
	for (size_t i = 0; i < nrows; i++)
		if (!strcmp(rows[i].id, id))
			return &rows[i];
	return NULL;
}

/* The order ids of the fresh events as a JSON array, one statement parameter (caller frees;
 * NULL out of memory). */
static char *
ids_json(const struct ot_event *evs, const struct ot_batch_res *res, const struct step *steps, size_t n)
{
	json_t *a = json_array();
	char *s;

	for (size_t i = 0; i < n; i++)
		if (res[i].rc == OT_OK && steps[i].fresh)
			json_array_append_new(a, json_string(evs[i].order_id));
	s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

/* Marks which events are new to consumer (inserting them into processed_events). */
static int
mark_fresh(PGconn *db, const char *consumer, const struct ot_event *evs, const struct ot_batch_res *res,
           struct step *steps, size_t n, char *errstr, size_t errsz)
{
	const char **ids = calloc(n, sizeof *ids);
	int *fresh = calloc(n, sizeof *fresh), rc;
	size_t i;

	if (!ids || !fresh) {
		free(ids);
		free(fresh);
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	}
	for (i = 0; i < n; i++)
		ids[i] = res[i].rc == OT_OK ? evs[i].id : NULL;
	if (!(rc = ot_pg_mark_processed(db, consumer, ids, n, fresh, errstr, errsz)))
		for (i = 0; i < n; i++)
			steps[i].fresh = fresh[i];
	free(ids);
	free(fresh);
	return rc;
}

/* Locks the orders of the fresh events, in id order (so two consumers' batches cannot
 * deadlock), and reads them into rows. */
static int
lock_orders(PGconn *db, const struct ot_event *evs, const struct ot_batch_res *res, const struct step *steps,
            size_t n, struct row *rows, size_t *nrows, char *errstr, size_t errsz)
{
	const char *p[1];
	PGresult *q;
	char *ids;
	int k, rc;

	*nrows = 0;
	if (!(ids = ids_json(evs, res, steps, n)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	p[0] = ids;
	q = ot_pg_query(db, "SELECT id::text, " STATUS_COLS ", coalesce(reason, ''), "
	                "extract(epoch FROM clock_timestamp() - created_at), " TS_SQL("now()") " FROM orders "
	                "WHERE id IN (SELECT e::uuid FROM jsonb_array_elements_text($1::jsonb) e) ORDER BY id FOR UPDATE",
	                1, p, &rc, errstr, errsz);
	free(ids);
	if (!q)
		return rc;
	for (k = 0; k < PQntuples(q) && (size_t)k < n; k++) {
		struct row *w = &rows[(*nrows)++];
		memset(w, 0, sizeof *w);
		snprintf(w->id, sizeof w->id, "%s", PQgetvalue(q, k, 0));
		order_status_from_cols(&w->st, w->id, q, k, 1);
		w->status = ot_state_parse(w->st.status);
		w->age_s = strtod(PQgetvalue(q, k, STATUS_NCOLS + 2), NULL);
		/* A change made now is stamped with the transaction's time, as updated_at = now(). */
		snprintf(w->st.updated_at, sizeof w->st.updated_at, "%s", PQgetvalue(q, k, STATUS_NCOLS + 3));
	}
	PQclear(q);
	return OT_OK;
}

/* Judges the fresh event ev against its order w as the batch has left it so far: 1 to apply
 * (s->pay_only when only its payment moves: a payment event that arrives after the order
 * has moved on, or past the state it would move it to, is still recorded), or 0 with res
 * telling why not (skipped, or refused: its processed_events row to be taken back, into
 * refused). */
static int
judge(const struct ot_event *ev, struct ot_batch_res *res, struct step *s, const struct row *w, json_t *refused)
{
	int pay = s->has_pay && ot_payment_supersedes(&s->pay, &w->st.pay);
	int tr = s->to < 0 ? OT_TR_STALE : ot_state_check(w->status, s->to);

	s->from = w->status;
	if (tr == OT_TR_APPLY)
		return 1;
	if (pay) {
		s->pay_only = 1;
		s->to = w->status;
		return 1;
	}
	switch (tr) {
	case OT_TR_LATE:
		/* The processed_events row stays: a third copy is then refused at once. */
		s->kind = REFRESH;
		ot_err(res->rc = OT_LATE, res->err, sizeof res->err, "late %s: the order was cancelled meanwhile",
		       ev->type);
		break;
	case OT_TR_IMPOSSIBLE:
		ot_err(res->rc = OT_EINPUT, res->err, sizeof res->err, "impossible transition %s -> %s refused",
		       ot_state_name(w->status), ot_state_name(s->to));
		json_array_append_new(refused, json_string(ev->id));
		break;
	default:
		s->kind = REFRESH;
		if (s->to < 0)
			ot_err(res->rc = OT_STALE, res->err, sizeof res->err, "stale %s: payment is already %s", ev->type,
			       w->st.pay.status[0] ? w->st.pay.status : "unknown");
		else
			ot_err(res->rc = OT_STALE, res->err, sizeof res->err, "stale %s: order is already %s",
			       ot_state_name(s->to), ot_state_name(w->status));
		break;
	}
	return 0;
}

/* Applies the judged step s of ev to w: what the UPDATE at the end of the batch will leave,
 * and in outs the events it causes (ORDER_STATUS_UPDATED, and ORDER_CANCELLED with the
 * order's lines when it cancels). */
static int
apply_step(PGconn *db, const struct ot_event *ev, struct step *s, struct row *w, struct ot_span *sp,
           struct ot_event *outs, size_t *nouts, char *errstr, size_t errsz)
{
	int cancels = s->to == OT_ST_CANCELLED && !s->pay_only, rc;
	json_t *data;

	w->status = s->to;
	w->st.version++;
	w->changed = 1;
	snprintf(w->st.status, sizeof w->st.status, "%s", ot_state_name(s->to));
	if (s->lat[0]) {
		snprintf(w->lat, sizeof w->lat, "%s", s->lat);
		snprintf(w->lon, sizeof w->lon, "%s", s->lon);
		w->st.has_pos = 1;
		w->st.lat = strtod(s->lat, NULL);
		w->st.lon = strtod(s->lon, NULL);
	}
	if (s->eta[0]) {
		snprintf(w->eta, sizeof w->eta, "%s", s->eta);
		snprintf(w->st.eta, sizeof w->st.eta, "%s", s->eta);
	}
	if (s->pay_only)
		s->reason[0] = '\0'; /* the order's reason is its state's, not the payment's */
	if (s->reason[0])
		snprintf(w->reason, sizeof w->reason, "%s", s->reason);
	if (s->has_pay && ot_payment_supersedes(&s->pay, &w->st.pay)) {
		struct ot_payment was = w->st.pay;
		w->st.pay = s->pay;
		if (!s->pay.currency[0]) { /* an event without the amount keeps the one known */
			w->st.pay.amount = was.amount;
			memcpy(w->st.pay.currency, was.currency, sizeof was.currency);
		}
	}
	s->st = w->st;
	s->kind = APPLIED;
	data = ot_status_to_json(&s->st);
	json_object_del(data, "order_id");
	json_object_del(data, "version");
	if (s->reason[0])
		json_object_set_new(data, "reason", json_string(s->reason));
	/* The events it causes are children of its handling. */
	ot_span_enter(sp);
	ot_event_init(&outs[(*nouts)++], OT_EV_ORDER_STATUS_UPDATED, ev->order_id, s->st.version, "ot-consume",
	              data, ev->traceparent);
	rc = cancels ? cancel_event(db, ev, s->st.version, s->reason, &outs[*nouts], errstr, errsz) : OT_OK;
	ot_span_leave(sp);
	if (!rc && cancels)
		(*nouts)++;
	return rc;
}

/* Decides each fresh event against its order as the batch has left it so far: applied
 * (the next version, the outbox event), skipped, or refused (rc OT_EINPUT, its
 * processed_events row to be taken back, into refused). */
static int
decide_all(PGconn *db, const struct ot_event *evs, struct ot_batch_res *res, struct step *steps, size_t n,
           struct row *rows, size_t nrows, struct ot_span *sp, struct ot_event *outs, size_t *nouts,
           json_t *refused, char *errstr, size_t errsz)
{
	struct row *w;
	struct step *s;
	size_t i;
	int rc;

	*nouts = 0;
	for (i = 0; i < n; i++) {
		s = &steps[i];
		if (res[i].rc != OT_OK)
			continue;
		if (!s->fresh) {
			/* Redelivered: the process that applied it may have died between its commit and
			 * its cache write (its offset was never stored). The cache gets the database's. */
			s->kind = REFRESH;
			res[i].rc = ot_err(OT_DUPLICATE, res[i].err, sizeof res[i].err, "event %s was already applied",
			                   evs[i].id);
			continue;
		}
		if (!(w = row_of(rows, nrows, evs[i].order_id))) {
			res[i].rc = ot_err(OT_ENOTFOUND, res[i].err, sizeof res[i].err, "%s for unknown order %s",
			                   evs[i].type, evs[i].order_id);
			json_array_append_new(refused, json_string(evs[i].id));
			continue;
		}
		if (!judge(&evs[i], &res[i], s, w, refused))
			continue;
		if ((rc = apply_step(db, &evs[i], s, w, sp ? &sp[i] : NULL, outs, nouts, errstr, errsz)))
			return rc;
	}
	return OT_OK;
}

/* The payment as the orders.payment column holds it: its JSON, or null (new reference). */
static json_t *
pay_json(const struct ot_payment *p)
{
	json_t *o = ot_payment_to_json(p);

	return o ? o : json_null();
}

/* The batch's writes: refused events taken back out of processed_events, every changed order
 * updated to where the batch left it (a field the batch did not set keeps its value), and the
 * outbox rows in order. */
static int
write_all(PGconn *db, const char *consumer, struct row *rows, size_t nrows, const struct ot_event *outs,
          size_t nouts, json_t *refused, char *errstr, size_t errsz)
{
	json_t *upd = json_array();
	const char *p[2];
	char *doc = NULL, *ids = NULL;
	size_t i;
	int rc = OT_OK;

#define OPT(s) ((s)[0] ? json_string(s) : json_null())
	for (i = 0; i < nrows; i++)
		if (rows[i].changed)
			json_array_append_new(upd, json_pack("[s, s, I, o, o, o, o, o]", rows[i].id,
			                                     ot_state_name(rows[i].status), (json_int_t)rows[i].st.version,
			                                     OPT(rows[i].lat), OPT(rows[i].lon), OPT(rows[i].eta),
			                                     OPT(rows[i].reason), pay_json(&rows[i].st.pay)));
#undef OPT
	if (json_array_size(refused)) {
		if (!(ids = json_dumps(refused, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = consumer;
		p[1] = ids;
		/* Refused, so not processed: a later copy is judged again (and dead-lettered again). */
		if ((rc = ot_pg_exec(db, "DELETE FROM processed_events WHERE consumer = $1 AND event_id IN "
		                     "(SELECT e::uuid FROM jsonb_array_elements_text($2::jsonb) e)", 2, p, errstr, errsz)))
			goto out;
	}
	if (json_array_size(upd)) {
		if (!(doc = json_dumps(upd, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = doc;
		if ((rc = ot_pg_exec(db, "UPDATE orders o SET status = x->>1, version = (x->>2)::bigint, "
		                     "lat = coalesce((x->>3)::float8, o.lat), lon = coalesce((x->>4)::float8, o.lon), "
		                     "eta = coalesce(x->>5, o.eta), reason = coalesce(x->>6, o.reason), "
		                     "payment = nullif(x->7, 'null'::jsonb), updated_at = now() "
		                     "FROM jsonb_array_elements($1::jsonb) x WHERE o.id = (x->>0)::uuid",
		                     1, p, errstr, errsz)))
			goto out;
	}
	rc = ot_outbox_add_many(db, OT_TOPIC_ORDERS, outs, nouts, errstr, errsz);
out:
	free(doc);
	free(ids);
	json_decref(upd);
	return rc;
}

/* After the commit: the log lines, the counters, and in res[i].st the status to cache: the
 * new one, or the current one when the cache may be behind (REFRESH). */
static void
after_commit(PGconn *db, const char *consumer, const struct ot_event *evs, struct ot_batch_res *res,
             struct step *steps, size_t n, struct row *rows, size_t nrows, struct ot_span *sp)
{
	struct row *w;
	size_t i;

	for (i = 0; i < n; i++) {
		if (res[i].rc == OT_LATE)
			atomic_fetch_add(&late_count, 1);
		ot_span_enter(sp ? &sp[i] : NULL);
		if (steps[i].kind == APPLIED && steps[i].pay_only) {
			OT_INFO(evs[i].order_id, "payment %s, order stays %s (version %lld)", steps[i].st.pay.status,
			        steps[i].st.status, steps[i].st.version);
			res[i].st = steps[i].st;
		} else if (steps[i].kind == APPLIED) {
			OT_INFO(evs[i].order_id, "%s -> %s (version %lld)", ot_state_name(steps[i].from), steps[i].st.status,
			        steps[i].st.version);
			order_count_transition(consumer, steps[i].st.status);
			if (steps[i].to == OT_ST_DELIVERED && (w = row_of(rows, nrows, evs[i].order_id)))
				count_delivery(w->age_s);
			res[i].st = steps[i].st;
		} else if (steps[i].kind == REFRESH && ot_order_load(db, evs[i].order_id, &res[i].st, NULL, 0) != 1) {
			res[i].st.version = 0;
		}
		if (sp && res[i].st.version && sp[i].exported)
			ot_span_traceparent(&sp[i], res[i].tp);
		ot_span_leave(sp ? &sp[i] : NULL);
	}
}

int
ot_order_apply_batch(PGconn *db, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                     const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct step *steps = calloc(n, sizeof *steps);
	struct row *rows = calloc(n, sizeof *rows);
	struct ot_event *outs = calloc(2 * n, sizeof *outs);
	json_t *refused = json_array();
	struct ot_span *sp = calloc(n, sizeof *sp);
	size_t i, nrows = 0, nouts = 0, todo = 0;
	int rc = OT_OK;

	if (!steps || !rows || !outs || !sp) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++) {
		res[i].st.version = 0;
		res[i].tp[0] = '\0';
		if (res[i].rc != OT_OK)
			continue; /* refused before: left to the per-record path */
		res[i].rc = step_check(&evs[i], &steps[i], res[i].err, sizeof res[i].err);
		todo += res[i].rc == OT_OK;
	}
	if (!todo)
		goto done; /* nothing to commit: no transaction */
	/* Each record's span (ms NULL: the caller's span is current already), entered while its
	 * outbox events are made and its cache written, so those are its children. */
	if (ms)
		for (i = 0; i < n; i++)
			if (res[i].rc == OT_OK) {
				ot_run_span(&sp[i], &ms[i], &evs[i]);
				ot_span_leave(&sp[i]);
			}
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)) ||
	    (rc = mark_fresh(db, consumer, evs, res, steps, n, errstr, errsz)) ||
	    (rc = lock_orders(db, evs, res, steps, n, rows, &nrows, errstr, errsz)) ||
	    (rc = decide_all(db, evs, res, steps, n, rows, nrows, ms ? sp : NULL, outs, &nouts, refused,
	                     errstr, errsz)) ||
	    (rc = write_all(db, consumer, rows, nrows, outs, nouts, refused, errstr, errsz)) ||
	    (rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		goto done;
	after_commit(db, consumer, evs, res, steps, n, rows, nrows, ms ? sp : NULL);
done:
	if (rc)
		ot_pg_rollback(db);
	for (i = 0; sp && i < n; i++) {
		if (rc || (res[i].rc < 0 && res[i].rc != OT_EINPUT))
			ot_span_error(&sp[i], rc ? errstr : res[i].err);
		ot_span_end(&sp[i]);
	}
	for (i = 0; i < nouts; i++)
		ot_event_clear(&outs[i]);
	json_decref(refused);
	free(sp);
	free(outs);
	free(rows);
	free(steps);
	return rc;
}

int
ot_order_apply(PGconn *db, const struct ot_event *ev, const char *consumer, struct ot_status *st,
               char *errstr, size_t errsz)
{
	struct ot_batch_res res = {.rc = OT_OK};
	int rc;

	if (st)
		memset(st, 0, sizeof *st);
	rc = ot_order_apply_batch(db, NULL, ev, 1, consumer, &res, errstr, errsz);
	if (rc)
		return rc;
	if (st)
		*st = res.st;
	snprintf(errstr, errsz, "%s", res.err);
	return res.rc;
}
