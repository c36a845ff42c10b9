/* ot_refund: a refund support staff ask for (ordertrack.Payment/Refund), taken into the saga —
 * a row of refund_requests and a PAYMENT_REFUND_REQUESTED event in the payments outbox, which
 * the Payment Service (ot_payment_handle) makes with the processor when it comes back to it. */
#ifndef OT_REFUND_H
#define OT_REFUND_H

#include <libpq-fe.h>
#include <stddef.h>

#include "ot_id.h"

/* A request, as taken (or as taken before, for a request_id seen already). */
struct ot_refund_ticket {
	char request_id[80];
	long long amount;        /* in the currency's minor unit */
	char status[16];         /* REQUESTED, REFUNDED or FAILED */
};

/* Takes a refund of amount (0: all that is captured and not refunded or asked for yet) of
 * order_id's payment, for reason, under request_id (1 to 64 of [A-Za-z0-9_.:-]; NULL or "": a
 * new one), in one transaction with the payment's row locked. Returns OT_OK with the ticket;
 * OT_DUPLICATE with the ticket of the same request_id taken before; OT_ENOTFOUND for an order
 * without a payment; OT_ECONFLICT when nothing is left to refund (not captured, refunded
 * already) or request_id names another order's request; OT_EINPUT for an amount above what is
 * left, a bad request_id or a reason empty or over 200 bytes; OT_ESERVICE when the database
 * fails. */
int ot_refund_request(PGconn *db, const char *order_id, long long amount, const char *reason,
                      const char *request_id, struct ot_refund_ticket *t, char *errstr, size_t errsz);

#endif
