/* ot_refund: a refund request taken into the saga, for the Payment Service to make. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_outbox.h"
#include "ot_outcome.h"
#include "ot_pg.h"
#include "ot_refund.h"

static int
valid_request_id(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= 64 &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == n;
}

/* The ticket of request_id taken before: OT_DUPLICATE, OT_ECONFLICT for another order's, OT_OK
 * when there is none. */
static int
taken_before(PGconn *db, const char *order_id, const char *request_id, struct ot_refund_ticket *t, char *errstr,
             size_t errsz)
{
	const char *p[1] = {request_id};
	PGresult *q;
	int rc;

	if (!(q = ot_pg_query(db, "SELECT order_id, amount, status FROM refund_requests WHERE request_id = $1", 1, p,
	                      &rc, errstr, errsz)))
		return rc;
	rc = OT_OK;
	if (PQntuples(q) && strcmp(PQgetvalue(q, 0, 0), order_id))
		rc = ot_err(OT_ECONFLICT, errstr, errsz, "request_id %s was used for another order", request_id);
	else if (PQntuples(q)) {
		t->amount = strtoll(PQgetvalue(q, 0, 1), NULL, 10);
		snprintf(t->status, sizeof t->status, "%s", PQgetvalue(q, 0, 2));
		rc = OT_DUPLICATE;
	}
	PQclear(q);
	return rc;
}

/* What is left to refund of order_id's payment (captured, less refunded and asked for), its
 * row locked. */
static int
refundable(PGconn *db, const char *order_id, long long *left, char *errstr, size_t errsz)
{
	const char *p[1] = {order_id};
	PGresult *q;
	int rc;

	if (!(q = ot_pg_query(db, "SELECT status, captured - refunded - (SELECT coalesce(sum(amount), 0) FROM "
	                      "refund_requests r WHERE r.order_id = p.order_id AND r.status = 'REQUESTED') "
	                      "FROM payments p WHERE order_id = $1 FOR UPDATE", 1, p, &rc, errstr, errsz)))
		return rc;
	if (!PQntuples(q))
		rc = ot_err(OT_ENOTFOUND, errstr, errsz, "order %s has no payment", order_id);
	else if (strcmp(PQgetvalue(q, 0, 0), "CAPTURED") || (*left = strtoll(PQgetvalue(q, 0, 1), NULL, 10)) <= 0)
		rc = ot_err(OT_ECONFLICT, errstr, errsz, "order %s has nothing captured left to refund (payment %s)",
		            order_id, PQgetvalue(q, 0, 0));
	PQclear(q);
	return rc;
}

/* The request's row, its change and its event. */
static int
take(PGconn *db, const char *order_id, const char *reason, const struct ot_refund_ticket *t, char *errstr,
     size_t errsz)
{
	char am[24];
	const char *p[4] = {t->request_id, order_id, am, reason};
	struct ot_event ev;
	int rc;

	snprintf(am, sizeof am, "%lld", t->amount);
	if ((rc = ot_pg_exec(db, "INSERT INTO refund_requests (request_id, order_id, amount, reason) VALUES "
	                     "($1, $2, $3, $4)", 4, p, errstr, errsz)) ||
	    (rc = ot_pg_exec(db, "INSERT INTO payment_changes (order_id, status, amount, detail) VALUES "
	                     "($1, 'REFUND_REQUESTED', $2, $3)", 3, p + 1, errstr, errsz)))
		return rc;
	ot_event_init(&ev, OT_EV_PAYMENT_REFUND_REQUESTED, order_id, 0, "ot-pay",
	              json_pack("{s:I, s:s, s:s}", "amount", (json_int_t)t->amount, "reason", reason,
	                        "request_id", t->request_id), NULL);
	rc = ot_outbox_add(db, OT_TOPIC_PAYMENTS, &ev, errstr, errsz);
	ot_event_clear(&ev);
	return rc;
}

int
ot_refund_request(PGconn *db, const char *order_id, long long amount, const char *reason,
                  const char *request_id, struct ot_refund_ticket *t, char *errstr, size_t errsz)
{
	long long left = 0;
	int rc;

	memset(t, 0, sizeof *t);
	if (!ot_uuid_valid(order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "order_id is not a UUID");
	if (amount < 0)
		return ot_err(OT_EINPUT, errstr, errsz, "amount must be 0 (all that is left) or more");
	if (!reason || !*reason || strlen(reason) > 200)
		return ot_err(OT_EINPUT, errstr, errsz, "reason must be 1 to 200 bytes");
	if (request_id && *request_id && !valid_request_id(request_id))
		return ot_err(OT_EINPUT, errstr, errsz, "request_id must be 1 to 64 of A-Z a-z 0-9 _ . : -");
	if (request_id && *request_id)
		snprintf(t->request_id, sizeof t->request_id, "%s", request_id);
	else
		ot_uuid(t->request_id);
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		return rc;
	if ((rc = taken_before(db, order_id, t->request_id, t, errstr, errsz)) ||
	    (rc = refundable(db, order_id, &left, errstr, errsz)))
		goto out;
	if (amount > left) {
		rc = ot_err(OT_EINPUT, errstr, errsz, "amount %lld is more than the %lld left to refund", amount, left);
		goto out;
	}
	t->amount = amount ? amount : left;
	snprintf(t->status, sizeof t->status, "REQUESTED");
	if (!(rc = take(db, order_id, reason, t, errstr, errsz)))
		rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
out:
	ot_pg_rollback(db);
	return rc;
}
