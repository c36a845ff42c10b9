/* ot_payment_reconcile: payments left UNKNOWN settled from the processor, one at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ot_err.h"
#include "ot_log.h"
#include "ot_payment.h"
#include "ot_payment_int.h"
#include "ot_pg.h"
#include "ot_signal.h"

/* The one JSON line of a payment settled. */
static void
report(FILE *out, const char *order_id, const struct ot_pay_settled *ps)
{
	json_t *o = json_pack("{s:s, s:s, s:b}", "order_id", order_id, "status", ps->status, "found", ps->found);

	if (*ps->r.charge_id)
		json_object_set_new(o, "charge_id", json_string(ps->r.charge_id));
	if (!strcmp(ps->status, "DECLINED") && *ps->r.decline_code)
		json_object_set_new(o, "decline_code", json_string(ps->r.decline_code));
	json_dumpf(o, out, JSON_COMPACT);
	fputc('\n', out);
	fflush(out);
	json_decref(o);
}

/* One payment, in its own transaction: its row locked unless the consumer holds it (then it is
 * the consumer's to settle), still UNKNOWN and old enough, settled as the consumer would. */
static int
settle_one(struct ot_payer *p, const char *order_id, const char *older, FILE *out,
           struct ot_pay_reconcile_stats *st, char *errstr, size_t errsz)
{
	const char *q[2] = {order_id, older};
	struct ot_payer rp = *p;
	struct ot_pay_settled ps = {0};
	struct ot_event cause = {0};
	char currency[8], source[256];
	long long amount;
	PGresult *res = NULL;
	int rc;

	if ((rc = ot_pg_exec(p->db, "BEGIN", 0, NULL, errstr, errsz)) ||
	    !(res = ot_pg_query(p->db, "SELECT amount, currency, source FROM payments WHERE order_id = $1 AND "
	                        "status = 'UNKNOWN' AND updated_at <= now() - $2::bigint * interval '1 second' "
	                        "FOR UPDATE SKIP LOCKED", 2, q, &rc, errstr, errsz)))
		goto out;
	if (PQntuples(res) == 0) {
		st->skipped++; /* settled meanwhile, or the consumer is at it */
		goto out;
	}
	amount = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(currency, sizeof currency, "%s", PQgetvalue(res, 0, 1));
	snprintf(source, sizeof source, "%s", PQgetvalue(res, 0, 2));
	snprintf(cause.order_id, sizeof cause.order_id, "%s", order_id);
	rp.currency = currency;
	rc = ot_payment_settle(&rp, &cause, amount, source, 1, &ps, errstr, errsz);
	if (rc >= 0 && !(rc = ot_pg_exec(p->db, "COMMIT", 0, NULL, errstr, errsz))) {
		report(out, order_id, &ps);
		if (!strcmp(ps.status, "AUTHORIZED"))
			st->authorized++;
		else
			st->declined++;
	} else if (ps.untold) {
		OT_WARN(order_id, "reconcile: left UNKNOWN: %s", errstr);
		st->unknown++;
		rc = OT_OK;
	}
out:
	PQclear(res);
	ot_pg_rollback(p->db);
	return rc;
}

int
ot_payment_reconcile(struct ot_payer *p, long older_than_s, FILE *out, struct ot_pay_reconcile_stats *st,
                     char *errstr, size_t errsz)
{
	char older[24];
	const char *q[1] = {older};
	PGresult *res;
	int rc = OT_OK, i, n;

	memset(st, 0, sizeof *st);
	snprintf(older, sizeof older, "%ld", older_than_s);
	/* The ids first, no row locked: each is then taken in a transaction of its own. */
	if (!(res = ot_pg_query(p->db, "SELECT order_id FROM payments WHERE status = 'UNKNOWN' AND "
	                        "updated_at <= now() - $1::bigint * interval '1 second' ORDER BY updated_at", 1, q, &rc,
	                        errstr, errsz)))
		return rc;
	n = PQntuples(res);
	st->seen = n;
	for (i = 0; i < n && !ot_stop && rc == OT_OK; i++)
		rc = settle_one(p, PQgetvalue(res, i, 0), older, out, st, errstr, errsz);
	st->unknown += n - i; /* stopped before them */
	PQclear(res);
	return rc < 0 ? rc : OT_OK;
}
