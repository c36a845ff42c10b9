/* ot_order: the Order Service's business logic, shared by ot-place, ot-consume, ot-cache and ot-serve. */
#ifndef OT_ORDER_H
#define OT_ORDER_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "ot_event.h"
#include "ot_status.h"

/* Places one order request {customer_id, items[{sku,qty}], address, request_id?}: the order,
 * its items and an ORDER_CREATED outbox row in one transaction. *order gets the created order
 * (new reference); *created is 0 when request_id had already placed it. st, if not NULL, gets
 * the PENDING status for the cache when created (version 0 otherwise). Never touches the
 * cache. Returns OT_OK, OT_EINPUT (errstr names the field), OT_ESERVICE. */
int ot_order_place(PGconn *db, json_t *req, const char *source, json_t **order, int *created,
                   struct ot_status *st, char *errstr, size_t errsz);
/* The same, with request_id belonging to scope (ot-serve: a hash of the caller's API key;
 * ot_order_place uses ""): a request_id answers only within its scope, and only for the body
 * it first came with (a SHA-256 fingerprint of the request without request_id, keys sorted).
 * The same request_id with another body returns OT_ECONFLICT. */
int ot_order_place_as(PGconn *db, json_t *req, const char *source, const char *scope, json_t **order,
                      int *created, struct ot_status *st, char *errstr, size_t errsz);
/* ot_order_place for n requests in one transaction and one commit (scope ""). The caller
 * presets res[i].rc to OT_OK for the requests to place; the rest are left alone. Each res[i]
 * gets OT_OK (orders[i] the new order, a new reference; res[i].st its status for the cache,
 * res[i].tp its trace), OT_PLACED_BEFORE (its request_id placed orders[i] before),
 * OT_UNREAD (placed, but not read back), or for a request refused without a trace in the transaction OT_EINPUT or
 * OT_ECONFLICT, for the per-record path to report. Returns OT_OK once committed, or the ot_rc
 * that lost the transaction (nothing committed, orders[] all NULL). */
struct ot_batch_res;
int ot_order_place_batch(PGconn *db, json_t *const *reqs, size_t n, const char *source, json_t **orders,
                         struct ot_batch_res *res, char *errstr, size_t errsz);
/* The same within scope (see ot_order_place_as); ot_order_place_as is this for one request. */
int ot_order_place_batch_as(PGconn *db, json_t *const *reqs, size_t n, const char *source, const char *scope,
                            json_t **orders, struct ot_batch_res *res, char *errstr, size_t errsz);
/* The fingerprint of an order request: SHA-256 in hex of its compact JSON with sorted keys,
 * request_id left out. Returns 0 with out filled (65 bytes), or -1 out of memory. */
int ot_order_fingerprint(const json_t *req, char out[65]);

/* Applies an INVENTORY_*, PAYMENT_*, DELIVERY_UPDATED or ORDER_CANCELLED event through a guarded
 * transition, records it in processed_events(consumer), adds ORDER_STATUS_UPDATED to the outbox
 * (and ORDER_CANCELLED with the order's lines when it cancels) and commits. A PAYMENT_* event
 * also sets the order's payment (ot_payment_supersedes decides), and one that moves no state
 * (a capture after DELIVERED) is applied as the payment alone: same status, next version. st, if not NULL,
 * gets the status for the cache: the new one, or the current one when a stale event says the
 * cache may be behind (version 0: nothing to write). Never touches the cache.
 * INVENTORY_RELEASED with reason "expired" cancels the order. Returns OT_APPLIED, the
 * outcome that changed nothing (OT_DUPLICATE, OT_STALE, OT_LATE: for an order cancelled
 * meanwhile, OT_IGNORED: a type that moves no order), OT_ENOTFOUND (an unknown order),
 * OT_EINPUT (an impossible transition, a bad event), OT_ESERVICE. */
int ot_order_apply(PGconn *db, const struct ot_event *ev, const char *consumer, struct ot_status *st,
                   char *errstr, size_t errsz);

/* ot_order_apply for n events in one transaction (ms[i], the record event i came in, names
 * its span): each through the same guarded transition, one commit. The caller presets
 * res[i].rc to OT_OK for the events to apply; the others are left as they are. Each res[i]
 * gets its outcome (the message for the log in .err), or a refusal (OT_EINPUT, OT_ENOTFOUND)
 * for an event refused
 * without a trace in the transaction (for the per-record path to dead-letter), and in .st
 * and .tp the status for the cache as ot_order_apply gives it. Returns OT_OK once committed,
 * or the ot_rc that lost the transaction (nothing committed). */
struct ot_batch_res;
struct ot_msg;
int ot_order_apply_batch(PGconn *db, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                         const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz);

/* How many events ot_order_apply skipped as late since the process started: answers and
 * courier updates for an order cancelled meanwhile (an expected race, never dead-lettered). */
long ot_order_late(void);

/* Reads the status from the database. Returns 1 found, 0 absent, or an ot_rc. */
int ot_order_load(PGconn *db, const char *order_id, struct ot_status *st, char *errstr, size_t errsz);
/* The whole order (items, address, status) as JSON, or NULL with *rc (0 when absent). */
json_t *ot_order_get_full(PGconn *db, const char *order_id, int *rc, char *errstr, size_t errsz);
/* Calls fn with the status of every order not yet in a final state; fn returns 0 to go on or
 * an ot_rc that stops the walk. Returns how many it was called for, or that ot_rc, or an ot_rc
 * of the database. */
long ot_order_active(PGconn *db, int (*fn)(void *arg, const struct ot_status *st), void *arg, char *errstr,
                     size_t errsz);
/* The same for every order changed (updated_at) in the last seconds, whatever its state. */
long ot_order_changed(PGconn *db, double seconds, int (*fn)(void *arg, const struct ot_status *st), void *arg,
                      char *errstr, size_t errsz);

#endif
