/* ot_status: an order's status as a value: to JSON, and from the event that carries it. */
#include <stdio.h>
#include <string.h>

#include "ot_err.h"
#include "ot_state.h"
#include "ot_status.h"

json_t *
ot_status_to_json(const struct ot_status *st)
{
	json_t *o = json_pack("{s:s, s:s, s:I}", "order_id", st->order_id, "status", st->status,
	                      "version", (json_int_t)st->version);

	if (st->has_pos) {
		json_object_set_new(o, "lat", json_real(st->lat));
		json_object_set_new(o, "lon", json_real(st->lon));
	}
	if (st->eta[0])
		json_object_set_new(o, "eta", json_string(st->eta));
	if (st->updated_at[0])
		json_object_set_new(o, "updated_at", json_string(st->updated_at));
	return o;
}

int
ot_status_from_event(const struct ot_event *ev, struct ot_status *st, char *errstr, size_t errsz)
{
	json_t *d = ev->data, *v;

	memset(st, 0, sizeof *st);
	if (ev->kind != OT_EV_ORDER_CREATED && ev->kind != OT_EV_ORDER_STATUS_UPDATED)
		return 0;
	snprintf(st->order_id, sizeof st->order_id, "%s", ev->order_id);
	st->version = ev->version;
	v = json_object_get(d, "status");
	if (!json_is_string(v) || ot_state_parse(json_string_value(v)) < 0 || ev->version < 1)
		return ot_err(OT_EINPUT, errstr, errsz, "%s without a valid data.status and version", ev->type);
	snprintf(st->status, sizeof st->status, "%s", json_string_value(v));
	v = json_object_get(d, "updated_at");
	snprintf(st->updated_at, sizeof st->updated_at, "%s", json_is_string(v) ? json_string_value(v) : ev->ts);
	if (json_is_number(json_object_get(d, "lat")) && json_is_number(json_object_get(d, "lon"))) {
		st->has_pos = 1;
		st->lat = json_number_value(json_object_get(d, "lat"));
		st->lon = json_number_value(json_object_get(d, "lon"));
	}
	v = json_object_get(d, "eta");
	if (json_is_string(v))
		snprintf(st->eta, sizeof st->eta, "%s", json_string_value(v));
	return 1;
}
