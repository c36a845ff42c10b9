/* ot_inventory: the Inventory Service — stock, reservations and their events. */
#ifndef OT_INVENTORY_H
#define OT_INVENTORY_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "ot_event.h"

/* The largest price of one SKU: a billion in minor units, so that an order's amount (at most
 * MAX_ITEMS lines of 10,000 each) stays far inside the processor's range. */
#define OT_PRICE_MAX 1000000000LL

/* Sets the available stock of one SKU, and its price when the line has one, from
 * {"sku":..,"qty":N[,"price":CENTS]}. Returns OT_OK, OT_EINPUT, OT_ESERVICE. */
int ot_inventory_stock(PGconn *db, json_t *line, char *errstr, size_t errsz);

/* Handles, in one transaction with processed_events(consumer):
 * ORDER_CREATED — reserves every line or none, and adds INVENTORY_RESERVED (with the amount,
 *   the sum of the lines' prices, and the order's payment when it has one) or
 *   INVENTORY_RESERVATION_FAILED (with the short SKUs) to the outbox;
 * ORDER_CANCELLED, and ORDER_STATUS_UPDATED to REJECTED (a payment declined after the stock
 *   was reserved) — releases the order's reservation and adds INVENTORY_RELEASED ("cancelled",
 *   "rejected");
 * ORDER_STATUS_UPDATED to CONFIRMED — marks the reservation confirmed, so it never expires.
 * Other types, and ORDER_STATUS_UPDATED to any other status, are skipped without a
 * transaction: nothing is committed for them, not even processed_events.
 * Returns OT_APPLIED, the outcome that changed nothing, OT_EINPUT, OT_ESERVICE. */
int ot_inventory_handle(PGconn *db, const struct ot_event *ev, const char *consumer,
                        char *errstr, size_t errsz);

/* Releases reservations still unconfirmed after older_than_s seconds, one order per
 * transaction, each announced as INVENTORY_RELEASED with reason "expired". Returns the number
 * of orders released, or an ot_rc. */
long ot_inventory_expire(PGconn *db, long older_than_s, char *errstr, size_t errsz);

/* ot_inventory_handle for n events in one transaction: the stock rows they change locked
 * first in SKU order, then each in turn; no transaction when none needs one. The caller
 * presets res[i].rc to OT_OK for the events to handle (ms[i], the record of event i, names its
 * span). Each res[i] gets its outcome (OT_APPLIED, or why nothing changed) or OT_EINPUT (malformed: nothing written,
 * for the per-record path). Returns OT_OK once committed, or the ot_rc that lost the
 * transaction (nothing committed). */
struct ot_batch_res;
struct ot_msg;
int ot_inventory_handle_batch(PGconn *db, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                              const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz);

#endif
