/* ot_payment: authorise on reservation, capture on delivery, void or refund on a cancel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_err.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_outbox.h"
#include "ot_outcome.h"
#include "ot_payment.h"
#include "ot_payment_int.h"
#include "ot_pg.h"
#include "ot_stripe.h"

/* The payment of an order, as its row holds it. */
struct pay {
	int found;
	char status[16];
	long long amount;
	char charge_id[OT_PAY_ID_LEN];
};

static void
count_payment(const char *outcome, const char *code)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_payments_total", "Payment changes committed, by outcome "
	                            "(authorized, declined, captured, voided, refunded, unknown) and decline code.",
	                            "outcome,decline_code", NULL, 0), 1, outcome, code ? code : "");
}

/* What ev asks of the Payment Service: OT_OK to act, OT_IGNORED, OT_EINPUT. */
static int
screen(const struct ot_event *ev, char *errstr, size_t errsz)
{
	json_t *st = json_object_get(ev->data, "status"), *pay = json_object_get(ev->data, "payment");
	json_t *amount = json_object_get(ev->data, "amount");

	switch (ev->kind) {
	case OT_EV_INVENTORY_RESERVED:
		if (!pay)
			return OT_IGNORED; /* paid another way */
		if (!json_is_string(json_object_get(pay, "source")))
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.payment.source\" must be a string");
		if (!json_is_integer(amount) || json_integer_value(amount) < 0)
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.amount\" must be an integer >= 0");
		break;
	case OT_EV_ORDER_STATUS_UPDATED:
		if (!json_is_string(st) || strcmp(json_string_value(st), "DELIVERED"))
			return OT_IGNORED;
		break;
	case OT_EV_ORDER_CANCELLED:
		break;
	case OT_EV_PAYMENT_REFUND_REQUESTED:
		if (!json_is_integer(amount) || json_integer_value(amount) <= 0)
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.amount\" must be an integer > 0");
		if (!json_is_string(json_object_get(ev->data, "request_id")))
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.request_id\" must be a string");
		break;
	default:
		return OT_IGNORED;
	}
	if (!ot_uuid_valid(ev->order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"order_id\" is not a UUID");
	return OT_OK;
}

static int
load(PGconn *db, const char *order_id, struct pay *py, char *errstr, size_t errsz)
{
	const char *p[1] = {order_id};
	PGresult *q;
	int rc;

	memset(py, 0, sizeof *py);
	if (!(q = ot_pg_query(db, "SELECT status, amount, coalesce(charge_id, '') FROM payments WHERE order_id = $1 "
	                      "FOR UPDATE", 1, p, &rc, errstr, errsz)))
		return rc;
	if ((py->found = PQntuples(q) > 0)) {
		snprintf(py->status, sizeof py->status, "%s", PQgetvalue(q, 0, 0));
		py->amount = strtoll(PQgetvalue(q, 0, 1), NULL, 10);
		snprintf(py->charge_id, sizeof py->charge_id, "%s", PQgetvalue(q, 0, 2));
	}
	PQclear(q);
	return OT_OK;
}

/* A change of the payment: a row of its history, and (kind not OT_EV_OTHER) its event. */
static int
emit(struct ot_payer *p, const struct ot_event *cause, const char *status, long long amount,
     const char *charge_id, const char *detail, enum ot_event_type kind, json_t *data, char *errstr, size_t errsz)
{
	char am[24];
	const char *q[4] = {cause->order_id, status, am, detail};
	struct ot_event out;
	int rc;

	snprintf(am, sizeof am, "%lld", amount);
	if ((rc = ot_pg_exec(p->db, "INSERT INTO payment_changes (order_id, status, amount, detail) "
	                     "VALUES ($1, $2, $3, $4)", 4, q, errstr, errsz)))
		goto out;
	if (kind != OT_EV_OTHER) {
		json_object_set_new(data, "amount", json_integer(amount));
		json_object_set_new(data, "currency", json_string(p->currency));
		if (charge_id && *charge_id)
			json_object_set_new(data, "charge_id", json_string(charge_id));
		ot_event_init(&out, kind, cause->order_id, cause->version, "ot-pay", data, cause->traceparent);
		data = NULL;
		rc = ot_outbox_add(p->db, OT_TOPIC_PAYMENTS, &out, errstr, errsz);
		ot_event_clear(&out);
	}
out:
	json_decref(data);
	return rc;
}

/* The payment's new status, a row of its history, and (kind not OT_EV_OTHER) its event. */
static int
record(struct ot_payer *p, const struct ot_event *cause, const char *status, long long amount,
       const char *charge_id, const char *detail, enum ot_event_type kind, json_t *data, char *errstr, size_t errsz)
{
	char am[24];
	const char *q[5] = {cause->order_id, status, am, charge_id && *charge_id ? charge_id : NULL, detail};
	int rc;

	snprintf(am, sizeof am, "%lld", amount);
	if ((rc = ot_pg_exec(p->db, "UPDATE payments SET status = $2, charge_id = coalesce($4, charge_id), "
	                     "captured = CASE WHEN $2 = 'CAPTURED' THEN $3::bigint ELSE captured END, "
	                     "refunded = CASE WHEN $2 = 'REFUNDED' THEN $3::bigint ELSE refunded END, "
	                     "decline_code = CASE WHEN $2 = 'DECLINED' THEN $5 ELSE decline_code END, "
	                     "updated_at = now() WHERE order_id = $1", 5, q, errstr, errsz))) {
		json_decref(data);
		return rc;
	}
	return emit(p, cause, status, amount, charge_id, detail, kind, data, errstr, errsz);
}

/* The processor's answer for the authorisation, recorded. */
static int
authorized(struct ot_payer *p, const struct ot_event *ev, long long amount, struct ot_pay_settled *st,
           char *errstr, size_t errsz)
{
	const struct ot_pay_result *r = &st->r;
	const char *code = *r->decline_code ? r->decline_code : *r->err_code ? r->err_code : "declined";
	int rc;

	if (r->outcome == OT_PAY_OK) {
		rc = record(p, ev, "AUTHORIZED", amount, r->charge_id, NULL, OT_EV_PAYMENT_AUTHORIZED, json_object(),
		            errstr, errsz);
		if (!rc) {
			OT_INFO(ev->order_id, "payment of %lld authorised (%s)", amount, r->charge_id);
			count_payment("authorized", NULL);
			st->status = "AUTHORIZED";
		}
		return rc;
	}
	/* Declined, or refused as invalid (an amount the processor takes no charge for): final. */
	rc = record(p, ev, "DECLINED", amount, r->charge_id, code, OT_EV_PAYMENT_DECLINED,
	            json_pack("{s:s, s:s}", "code", *r->err_code ? r->err_code : "invalid_request",
	                      "decline_code", r->decline_code), errstr, errsz);
	if (!rc) {
		OT_INFO(ev->order_id, "payment of %lld declined: %s", amount, code);
		count_payment("declined", code);
		st->status = "DECLINED";
	}
	return rc;
}

int
ot_payment_settle(struct ot_payer *p, const struct ot_event *cause, long long amount, const char *source,
                  int lookup, struct ot_pay_settled *st, char *errstr, size_t errsz)
{
	struct ot_pay_result *r = &st->r;
	char key[96];

	memset(st, 0, sizeof *st);
	if (amount == 0)
		return authorized(p, cause, amount, st, errstr, errsz); /* nothing to charge: authorised as it is */
	if (lookup && ot_stripe_find_by_order(p->processor, cause->order_id, 0, 0, r) == OT_PAY_OK) {
		OT_INFO(cause->order_id, "reconciled: the processor has charge %s (%s)", r->charge_id, r->status);
		st->found = 1;
		if (!strcmp(r->status, "failed"))
			r->outcome = OT_PAY_DECLINED;
		return authorized(p, cause, amount, st, errstr, errsz);
	}
	snprintf(key, sizeof key, "%s:authorize", cause->order_id);
	switch (ot_stripe_authorize(p->processor, &(struct ot_pay_charge){cause->order_id, amount, p->currency, source,
	                                                                   key}, r)) {
	case OT_PAY_OK:
	case OT_PAY_DECLINED:
	case OT_PAY_INVALID:
		return authorized(p, cause, amount, st, errstr, errsz);
	default:
		st->untold = 1;
		return ot_err(OT_ESERVICE, errstr, errsz, "authorising the payment: %s (%s)",
		              ot_pay_outcome_name(r->outcome), r->message);
	}
}

/* INVENTORY_RESERVED with a payment: the authorisation, unless decided before. A payment left
 * UNKNOWN is first looked up at the processor by its order. */
static int
authorize(struct ot_payer *p, const struct ot_event *ev, const struct pay *py, int *unknown, char *errstr,
          size_t errsz)
{
	json_t *pay = json_object_get(ev->data, "payment");
	const char *src = json_string_value(json_object_get(pay, "source"));
	long long amount = json_integer_value(json_object_get(ev->data, "amount"));
	char am[24];
	const char *q[4] = {ev->order_id, am, p->currency, src};
	struct ot_pay_settled st;
	int rc;

	if (py->found && strcmp(py->status, "UNKNOWN"))
		return OT_DUPLICATE; /* decided, or cancelled first */
	snprintf(am, sizeof am, "%lld", amount);
	if (!py->found && (rc = ot_pg_exec(p->db, "INSERT INTO payments (order_id, status, amount, currency, source) "
	                                   "VALUES ($1, 'PENDING', $2, $3, $4)", 4, q, errstr, errsz)))
		return rc;
	rc = ot_payment_settle(p, ev, amount, src, py->found, &st, errstr, errsz);
	*unknown = st.untold;
	return rc;
}

/* DELIVERED: the authorised payment captured. */
static int
capture(struct ot_payer *p, const struct ot_event *ev, const struct pay *py, char *errstr, size_t errsz)
{
	struct ot_pay_result r;
	char key[96];
	int rc;

	if (!py->found || strcmp(py->status, "AUTHORIZED"))
		return py->found ? OT_DUPLICATE : OT_IGNORED;
	if (!*py->charge_id)
		r.outcome = OT_PAY_OK; /* nothing was charged */
	else {
		snprintf(key, sizeof key, "%s:capture", ev->order_id);
		if (ot_stripe_capture(p->processor, py->charge_id, 0, key, &r) != OT_PAY_OK)
			return ot_err(OT_ESERVICE, errstr, errsz, "capturing charge %s: %s (%s)", py->charge_id,
			              ot_pay_outcome_name(r.outcome), r.message);
	}
	rc = record(p, ev, "CAPTURED", py->amount, py->charge_id, NULL, OT_EV_PAYMENT_CAPTURED, json_object(),
	            errstr, errsz);
	if (!rc) {
		OT_INFO(ev->order_id, "payment of %lld captured", py->amount);
		count_payment("captured", NULL);
	}
	return rc;
}

/* The charge an authorisation with no recorded outcome made all the same (its answer or its
 * commit lost), found by the order: into made, charge_id left empty when there is none to give
 * back. OT_OK, or OT_ESERVICE when the processor could not tell. */
static int
lost_charge(struct ot_payer *p, const struct ot_event *ev, struct pay *made, char *errstr, size_t errsz)
{
	struct ot_pay_result r;

	switch (ot_stripe_find_by_order(p->processor, ev->order_id, 0, 0, &r)) {
	case OT_PAY_NOT_FOUND:
		return OT_OK;
	case OT_PAY_OK:
		if (strcmp(r.status, "failed")) {
			OT_INFO(ev->order_id, "reconciled: the processor has charge %s (%s)", r.charge_id, r.status);
			snprintf(made->charge_id, sizeof made->charge_id, "%s", r.charge_id);
			made->amount = r.amount;
		}
		return OT_OK;
	default:
		return ot_err(OT_ESERVICE, errstr, errsz, "looking the order's charge up: %s (%s)",
		              ot_pay_outcome_name(r.outcome), r.message);
	}
}

/* A cancel: an authorisation voided, a capture refunded, a payment not made yet never made. A
 * cancel read before the authorisation's outcome (no row, or UNKNOWN) voids the charge a lost
 * answer or a crash left at the processor; the authorisation, read later, finds it VOIDED. */
static int
give_back(struct ot_payer *p, const struct ot_event *ev, struct pay *py, char *errstr, size_t errsz)
{
	char am[24];
	const char *q[4] = {ev->order_id, p->currency, am};
	int captured = py->found && !strcmp(py->status, "CAPTURED");
	struct pay made = *py;
	struct ot_pay_result r;
	char key[96];
	int rc;

	if (!py->found || !strcmp(py->status, "UNKNOWN")) {
		made.charge_id[0] = '\0';
		if ((rc = lost_charge(p, ev, &made, errstr, errsz)))
			return rc;
		snprintf(am, sizeof am, "%lld", *made.charge_id ? made.amount : 0);
		if (!py->found && (rc = ot_pg_exec(p->db, "INSERT INTO payments (order_id, status, amount, currency, source) "
		                                   "VALUES ($1, 'VOIDED', $3, $2, '')", 3, q, errstr, errsz)))
			return rc;
		if (!*made.charge_id) /* none made: none may be */
			return py->found ? record(p, ev, "VOIDED", py->amount, NULL, "cancelled", OT_EV_OTHER, NULL,
			                          errstr, errsz) : OT_OK;
		py = &made;
	} else if (strcmp(py->status, "AUTHORIZED") && !captured)
		return OT_DUPLICATE; /* declined, voided or refunded already */
	if (*py->charge_id) {
		snprintf(key, sizeof key, "%s:%s", ev->order_id, captured ? "refund" : "void");
		if ((captured ? ot_stripe_refund(p->processor, py->charge_id, 0, key, &r)
		              : ot_stripe_void(p->processor, py->charge_id, key, &r)) != OT_PAY_OK)
			return ot_err(OT_ESERVICE, errstr, errsz, "%s charge %s: %s (%s)", captured ? "refunding" : "voiding",
			              py->charge_id, ot_pay_outcome_name(r.outcome), r.message);
	}
	rc = record(p, ev, captured ? "REFUNDED" : "VOIDED", py->amount, py->charge_id, "cancelled",
	            captured ? OT_EV_PAYMENT_REFUNDED : OT_EV_PAYMENT_VOIDED, json_pack("{s:s}", "reason", "cancelled"),
	            errstr, errsz);
	if (!rc) {
		OT_INFO(ev->order_id, "payment of %lld %s", py->amount, captured ? "refunded" : "voided");
		count_payment(captured ? "refunded" : "voided", NULL);
	}
	return rc;
}

/* Outside the lost transaction: the payment's outcome is not known. */
static void
mark_unknown(struct ot_payer *p, const struct ot_event *ev)
{
	json_t *pay = json_object_get(ev->data, "payment");
	char am[24], err[256];
	const char *q[4] = {ev->order_id, am, p->currency, json_string_value(json_object_get(pay, "source"))};

	snprintf(am, sizeof am, "%lld", (long long)json_integer_value(json_object_get(ev->data, "amount")));
	/* updated_at stays when it was UNKNOWN already: the age of the doubt, for the metrics and the
	 * reconciliation, counts from the first answer missed. */
	if (ot_pg_exec(p->db, "WITH u AS (INSERT INTO payments (order_id, status, amount, currency, source) "
	               "VALUES ($1, 'UNKNOWN', $2, $3, $4) ON CONFLICT (order_id) DO UPDATE SET status = 'UNKNOWN', "
	               "updated_at = CASE WHEN payments.status = 'UNKNOWN' THEN payments.updated_at ELSE now() END "
	               "WHERE payments.status IN ('PENDING', 'UNKNOWN') RETURNING order_id) "
	               "INSERT INTO payment_changes (order_id, status, amount, detail) SELECT order_id, 'UNKNOWN', "
	               "$2, 'the processor did not answer' FROM u", 4, q, err, sizeof err))
		OT_WARN(ev->order_id, "recording the payment as unknown: %s", err);
	else
		count_payment("unknown", NULL);
}

/* The request's row, locked: its status (REQUESTED to make it) in status; "" when none. */
static int
refund_status(PGconn *db, const char *request_id, char status[16], char *errstr, size_t errsz)
{
	const char *q[1] = {request_id};
	PGresult *r;
	int rc;

	if (!(r = ot_pg_query(db, "SELECT status FROM refund_requests WHERE request_id = $1 FOR UPDATE", 1, q, &rc,
	                      errstr, errsz)))
		return rc;
	snprintf(status, 16, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return OT_OK;
}

/* PAYMENT_REFUND_REQUESTED (ot_refund_request): the refund made with the processor, keyed by
 * the request, and recorded; one the processor refuses is recorded FAILED. */
static int
refund(struct ot_payer *p, const struct ot_event *ev, const struct pay *py, char *errstr, size_t errsz)
{
	const char *req = json_string_value(json_object_get(ev->data, "request_id"));
	long long amount = json_integer_value(json_object_get(ev->data, "amount"));
	char key[160], am[24], st[16];
	const char *q[5] = {ev->order_id, am, req, NULL, NULL};
	struct ot_pay_result r;
	int rc;

	if ((rc = refund_status(p->db, req, st, errstr, errsz)))
		return rc;
	if (strcmp(st, "REQUESTED") || !py->found)
		return OT_DUPLICATE; /* made, failed, or never taken */
	snprintf(am, sizeof am, "%lld", amount);
	snprintf(key, sizeof key, "%s:refund:%s", ev->order_id, req);
	memset(&r, 0, sizeof r);
	if (!*py->charge_id || strcmp(py->status, "CAPTURED")) { /* refunded in full by a cancel since */
		r.outcome = OT_PAY_INVALID;
		snprintf(r.message, sizeof r.message, "the payment is %s", py->status);
	} else if (ot_stripe_refund(p->processor, py->charge_id, amount, key, &r) != OT_PAY_OK &&
	         r.outcome != OT_PAY_INVALID && r.outcome != OT_PAY_DECLINED)
		return ot_err(OT_ESERVICE, errstr, errsz, "refunding charge %s: %s (%s)", py->charge_id,
		              ot_pay_outcome_name(r.outcome), r.message);
	q[3] = r.outcome == OT_PAY_OK ? "REFUNDED" : "FAILED";
	q[4] = r.outcome == OT_PAY_OK ? json_string_value(json_object_get(ev->data, "reason")) : r.message;
	if ((rc = ot_pg_exec(p->db, "UPDATE refund_requests SET status = $2, detail = $3, updated_at = now() "
	                     "WHERE request_id = $1", 3, q + 2, errstr, errsz)))
		return rc;
	if (r.outcome != OT_PAY_OK) {
		OT_WARN(ev->order_id, "refund %s of %lld refused: %s", req, amount, r.message);
		return ot_pg_exec(p->db, "INSERT INTO payment_changes (order_id, status, amount, detail) VALUES "
		                  "($1, 'REFUND_FAILED', $2, $3)", 3, (const char *[3]){q[0], q[1], q[4]}, errstr, errsz);
	}
	if ((rc = ot_pg_exec(p->db, "UPDATE payments SET refunded = refunded + $2, updated_at = now(), status = "
	                     "CASE WHEN refunded + $2 >= captured THEN 'REFUNDED' ELSE status END WHERE order_id = $1",
	                     2, q, errstr, errsz)) ||
	    (rc = emit(p, ev, "REFUNDED", amount, py->charge_id, q[4], OT_EV_PAYMENT_REFUNDED,
	               json_pack("{s:s, s:s}", "reason", q[4], "request_id", req), errstr, errsz)))
		return rc;
	OT_INFO(ev->order_id, "refund %s of %lld made", req, amount);
	count_payment("refunded", NULL);
	return OT_APPLIED;
}

/* Applies ev inside the caller's transaction: processed_events, the payment's row locked, the
 * processor asked, the change recorded. *unknown is set when the processor did not tell. */
static int
apply(struct ot_payer *p, const struct ot_event *ev, int *unknown, char *errstr, size_t errsz)
{
	const char *ids[1] = {ev->id};
	struct pay py;
	int rc, fresh = 0;

	if ((rc = ot_pg_mark_processed(p->db, p->consumer, ids, 1, &fresh, errstr, errsz)))
		return rc;
	if (!fresh)
		return OT_DUPLICATE;
	if ((rc = load(p->db, ev->order_id, &py, errstr, errsz)))
		return rc;
	switch (ev->kind) {
	case OT_EV_INVENTORY_RESERVED: return authorize(p, ev, &py, unknown, errstr, errsz);
	case OT_EV_ORDER_CANCELLED: return give_back(p, ev, &py, errstr, errsz);
	case OT_EV_PAYMENT_REFUND_REQUESTED: return refund(p, ev, &py, errstr, errsz);
	default: return capture(p, ev, &py, errstr, errsz);
	}
}

int
ot_payment_handle(struct ot_payer *p, const struct ot_event *ev, char *errstr, size_t errsz)
{
	int rc, unknown = 0;

	if ((rc = screen(ev, errstr, errsz)))
		return rc;
	if ((rc = ot_pg_exec(p->db, "BEGIN", 0, NULL, errstr, errsz)))
		goto out;
	rc = apply(p, ev, &unknown, errstr, errsz);
	if (rc >= 0) {
		int c = ot_pg_exec(p->db, "COMMIT", 0, NULL, errstr, errsz);
		if (c)
			rc = c;
	}
out:
	ot_pg_rollback(p->db);
	if (unknown)
		mark_unknown(p, ev);
	return rc;
}

int
ot_payment_handle_batch(struct ot_payer *p, const struct ot_event *evs, size_t n, struct ot_batch_res *res,
                        char *errstr, size_t errsz)
{
	size_t i;
	int rc, unknown, stop = 0;

	if ((rc = ot_pg_exec(p->db, "BEGIN", 0, NULL, errstr, errsz)))
		return rc;
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK)
			continue; /* did not parse: refused already */
		if (stop) {
			/* After a failure the rest go one at a time, so an order's events keep their order. */
			res[i].rc = ot_err(OT_ESERVICE, res[i].err, sizeof res[i].err, "after a failure in its batch");
			continue;
		}
		if ((res[i].rc = screen(&evs[i], res[i].err, sizeof res[i].err)))
			continue; /* ignored, or refused: nothing written */
		if ((rc = ot_pg_exec(p->db, "SAVEPOINT ev", 0, NULL, errstr, errsz)))
			goto fail;
		unknown = 0;
		if ((res[i].rc = apply(p, &evs[i], &unknown, res[i].err, sizeof res[i].err)) >= 0)
			continue;
		/* Undone, and left to the one-at-a-time path, which retries it and records an
		 * unknown outcome (with the same idempotency key, the processor repeats nothing). */
		if ((rc = ot_pg_exec(p->db, "ROLLBACK TO SAVEPOINT ev", 0, NULL, errstr, errsz)))
			goto fail;
		stop = 1;
	}
	if (!(rc = ot_pg_exec(p->db, "COMMIT", 0, NULL, errstr, errsz)))
		return OT_OK;
fail:
	ot_pg_rollback(p->db);
	return rc;
}
