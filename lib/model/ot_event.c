/* ot_event: the envelope every tool reads and writes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_id.h"
#include "ot_time.h"
#include "ot_trace.h"

static int
copy_str(char *dst, size_t dstsz, json_t *obj, const char *field, int required,
         char *errstr, size_t errsz)
{
	json_t *v = json_object_get(obj, field);

	dst[0] = '\0';
	if (!v || json_is_null(v)) {
		if (required)
			return ot_err(-1, errstr, errsz, "field \"%s\" is missing", field);
		return 0;
	}
	if (!json_is_string(v))
		return ot_err(-1, errstr, errsz, "field \"%s\" must be a string", field);
	if (json_string_length(v) == 0 && required)
		return ot_err(-1, errstr, errsz, "field \"%s\" is empty", field);
	if (json_string_length(v) >= dstsz)
		return ot_err(-1, errstr, errsz, "field \"%s\" is longer than %zu bytes", field, dstsz - 1);
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

int
ot_event_from_json(struct ot_event *ev, json_t *obj, char *errstr, size_t errsz)
{
	json_t *v;

	memset(ev, 0, sizeof *ev);
	if (!json_is_object(obj))
		return ot_err(-1, errstr, errsz, "an event must be a JSON object");
	if (copy_str(ev->id, sizeof ev->id, obj, "id", 1, errstr, errsz) ||
	    copy_str(ev->type, sizeof ev->type, obj, "type", 1, errstr, errsz) ||
	    copy_str(ev->order_id, sizeof ev->order_id, obj, "order_id", 1, errstr, errsz) ||
	    copy_str(ev->ts, sizeof ev->ts, obj, "ts", 1, errstr, errsz) ||
	    copy_str(ev->source, sizeof ev->source, obj, "source", 0, errstr, errsz))
		return -1;
	/* Tracing is never a reason to refuse a record: a traceparent that is not one (not a
	 * string, too long, malformed) is dropped, as a header's is, and the record starts a new
	 * trace. */
	if (copy_str(ev->traceparent, sizeof ev->traceparent, obj, "traceparent", 0, NULL, 0) ||
	    !ot_traceparent_valid(ev->traceparent))
		ev->traceparent[0] = '\0';
	ev->kind = ot_event_type_of(ev->type);
	if (!ot_uuid_valid(ev->id))
		return ot_err(-1, errstr, errsz, "field \"id\" is not a UUID: \"%s\"", ev->id);
	/* An upper-case id would name another cache entry than the order's. */
	if (ot_id_canon(ev->order_id))
		return ot_err(-1, errstr, errsz, "field \"order_id\" is not a UUID");
	if (!ot_rfc3339_valid(ev->ts))
		return ot_err(-1, errstr, errsz, "field \"ts\" is not an RFC 3339 timestamp: \"%s\"", ev->ts);
	v = json_object_get(obj, "version");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return ot_err(-1, errstr, errsz, "field \"version\" must be an integer >= 0");
		ev->version = json_integer_value(v);
	}
	v = json_object_get(obj, "data");
	if (v && !json_is_null(v) && !json_is_object(v))
		return ot_err(-1, errstr, errsz, "field \"data\" must be an object");
	ev->data = v && json_is_object(v) ? json_incref(v) : json_object();
	return 0;
}

int
ot_event_parse(struct ot_event *ev, const char *buf, size_t len, char *errstr, size_t errsz)
{
	json_error_t jerr;
	json_t *obj;
	int rc;

	memset(ev, 0, sizeof *ev);
	obj = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj)
		return ot_err(-1, errstr, errsz, "not JSON: %s at column %d", jerr.text, jerr.column);
	rc = ot_event_from_json(ev, obj, errstr, errsz);
	json_decref(obj);
	if (rc)
		ot_event_clear(ev);
	return rc;
}

static const char *const type_names[OT_EV_TYPES] = {
	[OT_EV_OTHER] = "",
	[OT_EV_ORDER_CREATED] = "ORDER_CREATED",
	[OT_EV_ORDER_STATUS_UPDATED] = "ORDER_STATUS_UPDATED",
	[OT_EV_ORDER_CANCELLED] = "ORDER_CANCELLED",
	[OT_EV_INVENTORY_RESERVED] = "INVENTORY_RESERVED",
	[OT_EV_INVENTORY_RESERVATION_FAILED] = "INVENTORY_RESERVATION_FAILED",
	[OT_EV_INVENTORY_RELEASED] = "INVENTORY_RELEASED",
	[OT_EV_DELIVERY_UPDATED] = "DELIVERY_UPDATED",
	[OT_EV_PAYMENT_AUTHORIZED] = "PAYMENT_AUTHORIZED",
	[OT_EV_PAYMENT_DECLINED] = "PAYMENT_DECLINED",
	[OT_EV_PAYMENT_CAPTURED] = "PAYMENT_CAPTURED",
	[OT_EV_PAYMENT_VOIDED] = "PAYMENT_VOIDED",
	[OT_EV_PAYMENT_REFUNDED] = "PAYMENT_REFUNDED",
	[OT_EV_PAYMENT_REFUND_REQUESTED] = "PAYMENT_REFUND_REQUESTED",
};

const char *
ot_event_type_name(enum ot_event_type t)
{
	return t > OT_EV_OTHER && t < OT_EV_TYPES ? type_names[t] : "";
}

enum ot_event_type
ot_event_type_of(const char *name)
{
	int t;

	for (t = OT_EV_OTHER + 1; t < OT_EV_TYPES; t++)
		if (!strcmp(name, type_names[t]))
			return (enum ot_event_type)t;
	return OT_EV_OTHER;
}

void
ot_event_init(struct ot_event *ev, enum ot_event_type kind, const char *order_id, long long version,
              const char *source, json_t *data, const char *parent_tp)
{
	const struct ot_span *cur;

	memset(ev, 0, sizeof *ev);
	ot_uuid(ev->id);
	ev->kind = kind;
	snprintf(ev->type, sizeof ev->type, "%s", ot_event_type_name(kind));
	snprintf(ev->order_id, sizeof ev->order_id, "%s", order_id);
	ot_id_canon(ev->order_id);
	ev->version = version;
	ot_now_rfc3339(ev->ts);
	snprintf(ev->source, sizeof ev->source, "%s", source ? source : "");
	/* Emitted inside a span (a request, a record's handling): the event is its child. */
	if ((cur = ot_span_current()))
		ot_span_traceparent(cur, ev->traceparent);
	else if (parent_tp && ot_traceparent_valid(parent_tp))
		snprintf(ev->traceparent, sizeof ev->traceparent, "%s", parent_tp);
	else
		ot_traceparent_new(ev->traceparent, NULL);
	ev->data = data ? data : json_object();
}

void
ot_event_clear(struct ot_event *ev)
{
	if (!ev)
		return;
	json_decref(ev->data);
	ev->data = NULL;
}

json_t *
ot_event_to_json(const struct ot_event *ev)
{
	json_t *o = json_object();

	json_object_set_new(o, "id", json_string(ev->id));
	json_object_set_new(o, "type", json_string(ev->type));
	json_object_set_new(o, "order_id", json_string(ev->order_id));
	json_object_set_new(o, "version", json_integer(ev->version));
	json_object_set_new(o, "ts", json_string(ev->ts));
	if (ev->source[0])
		json_object_set_new(o, "source", json_string(ev->source));
	if (ev->traceparent[0])
		json_object_set_new(o, "traceparent", json_string(ev->traceparent));
	json_object_set_new(o, "data", ev->data ? json_incref(ev->data) : json_object());
	return o;
}

char *
ot_event_dump(const struct ot_event *ev)
{
	json_t *o = ot_event_to_json(ev);
	char *s = json_dumps(o, OT_JSON_FLAGS);

	json_decref(o);
	return s;
}
