/* ot_event: the event envelope — parse, validate, build and emit. */
#ifndef OT_EVENT_H
#define OT_EVENT_H

#include <jansson.h>
#include <stddef.h>

#include "ot_id.h"
#include "ot_text.h"
#include "ot_time.h"
#include "ot_trace.h"

/* The topics, each named once; a topic's dead letters go to "<topic>.dlq". */
#define OT_TOPIC_ORDERS "orders.events"
#define OT_TOPIC_INVENTORY "inventory.events"
#define OT_TOPIC_DELIVERY "delivery.updates"
#define OT_TOPIC_PAYMENTS "payments.events"

/* The event types, each named once (ot_event_type_name). A type this release does not know
 * parses as OT_EV_OTHER, its name kept in type. */
enum ot_event_type {
	OT_EV_OTHER,
	OT_EV_ORDER_CREATED,                /* orders.events: placed, PENDING */
	OT_EV_ORDER_STATUS_UPDATED,         /* orders.events: each accepted transition */
	OT_EV_ORDER_CANCELLED,              /* orders.events: a cancel, with the order's lines */
	OT_EV_INVENTORY_RESERVED,           /* inventory.events */
	OT_EV_INVENTORY_RESERVATION_FAILED, /* inventory.events: {short_skus} */
	OT_EV_INVENTORY_RELEASED,           /* inventory.events: {items, reason} */
	OT_EV_DELIVERY_UPDATED,             /* delivery.updates: {status, lat, lon} */
	OT_EV_PAYMENT_AUTHORIZED,           /* payments.events: {amount, currency, charge_id} */
	OT_EV_PAYMENT_DECLINED,             /* payments.events: {amount, currency, code, decline_code} */
	OT_EV_PAYMENT_CAPTURED,             /* payments.events: {amount, currency, charge_id} */
	OT_EV_PAYMENT_VOIDED,               /* payments.events: {amount, currency, charge_id, reason} */
	OT_EV_PAYMENT_REFUNDED,             /* payments.events: {amount, currency, charge_id, reason} */
	OT_EV_PAYMENT_REFUND_REQUESTED,     /* payments.events: {amount, reason, request_id}, for ot-pay */
	OT_EV_TYPES
};
const char *ot_event_type_name(enum ot_event_type t);
enum ot_event_type ot_event_type_of(const char *name);

struct ot_event {
	char id[OT_UUID_LEN];
	enum ot_event_type kind; /* type, as the enum */
	char type[48];
	char order_id[64];
	long long version;
	char ts[OT_TS_LEN];
	char source[32];
	char traceparent[OT_TRACEPARENT_LEN]; /* "" when absent */
	json_t *data; /* owned; always an object after parse or init */
};

/* Parses and validates one envelope; order_id must be a UUID and comes out in lower case (the
 * canonical form). Returns 0, or -1 with errstr naming the field and why.
 * On success the caller owns ev->data (free with ot_event_clear). */
int ot_event_parse(struct ot_event *ev, const char *buf, size_t len, char *errstr, size_t errsz);
int ot_event_from_json(struct ot_event *ev, json_t *obj, char *errstr, size_t errsz);

/* A new event of kind with a fresh id and timestamp; a UUID order_id is kept in its canonical form. data
 * is stolen (NULL means {}). Its traceparent names the thread's current span (ot_trace) if there
 * is one, else parent_tp if that is valid, else a new trace; ot_outbox_add then puts the span of
 * its insert in between. */
void ot_event_init(struct ot_event *ev, enum ot_event_type kind, const char *order_id, long long version,
                   const char *source, json_t *data, const char *parent_tp);
void ot_event_clear(struct ot_event *ev);

/* The envelope as a new JSON object, or as a compact malloc'd string (caller frees). */
json_t *ot_event_to_json(const struct ot_event *ev);
char *ot_event_dump(const struct ot_event *ev);

#endif
