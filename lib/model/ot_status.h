/* ot_status: an order's current status as readers see it — the value the cache holds. */
#ifndef OT_STATUS_H
#define OT_STATUS_H

#include <jansson.h>
#include <stddef.h>

#include "ot_event.h"

/* An order's payment by card, as its payment events (payments.events) left it. */
struct ot_payment {
	char status[16];        /* AUTHORIZED, DECLINED, CAPTURED, VOIDED, REFUNDED; "": no payment */
	long long amount;       /* in the currency's minor unit (cents); with currency only */
	char currency[8];       /* "": amount not known */
	char decline_code[64];  /* DECLINED: the processor's decline_code, else its code */
};

struct ot_status {
	char order_id[64];
	char status[16];
	long long version;  /* 0: no status */
	int has_pos;
	double lat, lon;
	char eta[40];
	char updated_at[40];
	struct ot_payment pay;  /* pay.status "": the order is not paid by card, or not yet */
};

/* The status as a JSON object (new reference). */
json_t *ot_status_to_json(const struct ot_status *st);
/* The status order_id's JSON (as ot_status_to_json made it, published on order:{id}) holds.
 * Returns 1 with st filled, 0 when json is not one. */
int ot_status_parse(const char *order_id, const char *json, struct ot_status *st);
/* The status an orders.events record carries: ORDER_CREATED (PENDING) or ORDER_STATUS_UPDATED.
 * Returns 1 with st filled, 0 for other types, OT_EINPUT for a malformed one. */
int ot_status_from_event(const struct ot_event *ev, struct ot_status *st, char *errstr, size_t errsz);

/* The payment as {"status","amount","currency","decline_code"?} (new reference), or NULL
 * when it has no status. */
json_t *ot_payment_to_json(const struct ot_payment *p);
/* Fills p from o, a payment object as ot_payment_to_json makes it. Returns 1, or 0 (p
 * emptied) when o is not one. */
int ot_payment_from_json(const json_t *o, struct ot_payment *p);
/* The payment a PAYMENT_* event reports: its kind's status, data.amount and data.currency, and
 * for PAYMENT_DECLINED data.decline_code (else data.code). Returns 1 with p filled, 0 for
 * another kind. */
int ot_payment_from_event(const struct ot_event *ev, struct ot_payment *p);
/* Whether next may replace cur: payment events only move forward, so a redelivered or older
 * one changes nothing. AUTHORIZED or DECLINED comes first (neither replaces the other, and
 * nothing follows a decline); CAPTURED and VOIDED are final over AUTHORIZED; REFUNDED is
 * final over CAPTURED. Returns 1 or 0. */
int ot_payment_supersedes(const struct ot_payment *next, const struct ot_payment *cur);

/* The status the data of a DELIVERY_UPDATED envelope asks for: OT_ST_PREPARING,
 * OT_ST_IN_TRANSIT or OT_ST_DELIVERED, else OT_EINPUT with errstr naming the field. */
int ot_delivery_status(const json_t *data, char *errstr, size_t errsz);
/* The optional position of an envelope's data: lat and lon both numbers within [-90, 90] and
 * [-180, 180], or neither; eta a string under 40 bytes, absent or null. Fills lat and lon
 * ("%.7f"; "" when none) and eta ("" when none). Returns OT_OK, or OT_EINPUT with errstr naming
 * the field. */
int ot_event_position(const json_t *data, char lat[32], char lon[32], char eta[40], char *errstr, size_t errsz);

#endif
