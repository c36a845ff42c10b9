/* ot_payment: the Payment Service — an order's payment authorised, captured, voided or
 * refunded with the processor, each change a row and an event. */
#ifndef OT_PAYMENT_H
#define OT_PAYMENT_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>

#include "ot_event.h"
#include "ot_run.h"

struct ot_stripe;

/* What handles the events: the payments database, the processor's client and the currency
 * every amount is in. */
struct ot_payer {
	PGconn *db;
	struct ot_stripe *processor;
	const char *currency;   /* ISO 4217, lower case: "usd" */
	const char *consumer;   /* processed_events' consumer: "ot-pay" */
};

/* Handles one event, in one transaction with processed_events(consumer) and the payment's row
 * locked while the processor is asked (every call with an idempotency key of the order and the
 * step, so that a retry after a crash repeats nothing at the processor):
 * INVENTORY_RESERVED with data.payment — authorises data.amount (PAYMENT_AUTHORIZED, or
 *   PAYMENT_DECLINED with the processor's code and decline_code);
 * ORDER_STATUS_UPDATED to DELIVERED — captures an authorised payment (PAYMENT_CAPTURED);
 * ORDER_CANCELLED — voids an authorised payment (PAYMENT_VOIDED), refunds a captured one
 *   (PAYMENT_REFUNDED), and keeps a payment not made yet from being made.
 * An outcome the processor did not tell (a timeout after the request was sent, through every
 * retry) commits the payment as UNKNOWN and returns OT_ESERVICE: the event is handled again
 * later, and the payment is then looked up at the processor by the order before anything is
 * sent again. Returns OT_APPLIED, the outcome that changed nothing, OT_EINPUT, OT_ESERVICE. */
int ot_payment_handle(struct ot_payer *p, const struct ot_event *ev, char *errstr, size_t errsz);
/* Handles evs[0..n) (those with res[i].rc OT_OK) as ot_payment_handle does, in one transaction
 * (an ot_step's batch): each in a savepoint, so that one the processor did not answer, or that
 * failed, is undone and left with the ones after it to the one-at-a-time path (res[i].rc < 0),
 * the others committed. Calls made before a commit that fails are made again with their
 * idempotency keys, which the processor answers as it did. Returns OT_OK once committed. */
int ot_payment_handle_batch(struct ot_payer *p, const struct ot_event *evs, size_t n, struct ot_batch_res *res,
                            char *errstr, size_t errsz);

/* What ot_payment_reconcile did. */
struct ot_pay_reconcile_stats {
	long seen;                 /* payments UNKNOWN for longer than asked */
	long authorized, declined; /* settled, each a line on out */
	long unknown;              /* left UNKNOWN: the processor told nothing (or a stop came first) */
	long skipped;              /* settled meanwhile, or locked by the running consumer */
};

/* Settles every payment UNKNOWN since at least older_than_s seconds ago from the processor,
 * never by guessing, each in a transaction of its own with its row locked FOR UPDATE SKIP
 * LOCKED (a row the consumer holds is its to settle): the charge looked up by the order, as the
 * consumer does; found authorised: AUTHORIZED and PAYMENT_AUTHORIZED; found failed: DECLINED and
 * PAYMENT_DECLINED; none: authorised now with the key ORDER_ID:authorize and the answer
 * recorded; no answer: left UNKNOWN and counted. Each change is written as the consumer writes
 * it (the row, payment_changes, the outbox), in the payment's own currency. One JSON line per
 * payment settled on out: {"order_id","status","found","charge_id"[,"decline_code"]}. Fills
 * *st. Returns OT_OK, or a database error with errstr (what was settled before stays). */
int ot_payment_reconcile(struct ot_payer *p, long older_than_s, FILE *out, struct ot_pay_reconcile_stats *st,
                         char *errstr, size_t errsz);

#endif
