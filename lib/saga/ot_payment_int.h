/* ot_payment_int: what the consumer's path (ot_payment.c) and the reconciliation
 * (ot_payment_reconcile.c) share: how an authorisation not decided yet is settled. */
#ifndef OT_PAYMENT_INT_H
#define OT_PAYMENT_INT_H

#include <stddef.h>

#include "ot_event.h"
#include "ot_stripe.h"

struct ot_payer;

/* How ot_payment_settle ended. */
struct ot_pay_settled {
	const char *status;     /* "AUTHORIZED" or "DECLINED" once recorded; NULL otherwise */
	int found;              /* the processor had the charge already: looked up, not asked */
	int untold;             /* the processor told nothing: the payment is still not known */
	struct ot_pay_result r; /* the processor's last answer */
};

/* The authorisation of cause's order for amount (in p->currency) from source, its payments row
 * locked by the caller's transaction and neither decided nor cancelled. With lookup (the payment
 * was UNKNOWN) the charge is first looked up at the processor by the order and, if found,
 * recorded as it is (a failed one as DECLINED); else the processor is asked, with the key
 * ORDER_ID:authorize, and its answer recorded: the row, a payment_changes row and
 * PAYMENT_AUTHORIZED or PAYMENT_DECLINED in the outbox, caused by cause (its order_id, version
 * and traceparent). Fills *st. Returns OT_OK, OT_ESERVICE with st->untold when the processor
 * told nothing (nothing recorded), or a database error. */
int ot_payment_settle(struct ot_payer *p, const struct ot_event *cause, long long amount, const char *source,
                      int lookup, struct ot_pay_settled *st, char *errstr, size_t errsz);

#endif
