/* ot_status: an order's status as a value: to JSON and back, and from the event that carries it. */
#include <math.h>
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
	if (st->pay.status[0])
		json_object_set_new(o, "payment", ot_payment_to_json(&st->pay));
	return o;
}

/* The statuses of a payment, each with its place: a later one replaces only an earlier one.
 * AUTHORIZED and DECLINED are the two answers to one authorisation: neither replaces the
 * other, and nothing follows a decline. */
static const struct {
	const char *name;
	int kind, rank;
} pay_states[] = {
	{"AUTHORIZED", OT_EV_PAYMENT_AUTHORIZED, 1},
	{"DECLINED", OT_EV_PAYMENT_DECLINED, 1},
	{"CAPTURED", OT_EV_PAYMENT_CAPTURED, 2},
	{"VOIDED", OT_EV_PAYMENT_VOIDED, 2},
	{"REFUNDED", OT_EV_PAYMENT_REFUNDED, 3},
};
#define NPAY (sizeof pay_states / sizeof pay_states[0])

/* The rank of status: 0 for none or an unknown one. */
static int
pay_rank(const char *status)
{
	for (size_t i = 0; i < NPAY; i++)
		if (!strcmp(pay_states[i].name, status))
			return pay_states[i].rank;
	return 0;
}

json_t *
ot_payment_to_json(const struct ot_payment *p)
{
	json_t *o;

	if (!p->status[0])
		return NULL;
	o = json_pack("{s:s}", "status", p->status);
	if (p->currency[0]) {
		json_object_set_new(o, "amount", json_integer(p->amount));
		json_object_set_new(o, "currency", json_string(p->currency));
	}
	if (p->decline_code[0])
		json_object_set_new(o, "decline_code", json_string(p->decline_code));
	return o;
}

/* Copies the string member name of o into dst when it is one that fits. */
static void
str_member(const json_t *o, const char *name, char *dst, size_t size)
{
	json_t *v = json_object_get(o, name);

	if (json_is_string(v) && json_string_length(v) < size)
		snprintf(dst, size, "%s", json_string_value(v));
}

int
ot_payment_from_json(const json_t *o, struct ot_payment *p)
{
	json_t *a = json_object_get(o, "amount");

	memset(p, 0, sizeof *p);
	str_member(o, "status", p->status, sizeof p->status);
	if (!pay_rank(p->status)) {
		memset(p, 0, sizeof *p);
		return 0;
	}
	str_member(o, "currency", p->currency, sizeof p->currency);
	if (p->currency[0] && json_is_integer(a))
		p->amount = json_integer_value(a);
	else
		p->currency[0] = '\0';
	str_member(o, "decline_code", p->decline_code, sizeof p->decline_code);
	return 1;
}

int
ot_payment_from_event(const struct ot_event *ev, struct ot_payment *p)
{
	json_t *d = ev->data;
	size_t i;

	memset(p, 0, sizeof *p);
	for (i = 0; i < NPAY && pay_states[i].kind != (int)ev->kind; i++)
		;
	if (i == NPAY)
		return 0;
	snprintf(p->status, sizeof p->status, "%s", pay_states[i].name);
	str_member(d, "currency", p->currency, sizeof p->currency);
	if (p->currency[0] && json_is_integer(json_object_get(d, "amount")))
		p->amount = json_integer_value(json_object_get(d, "amount"));
	else
		p->currency[0] = '\0';
	if (ev->kind == OT_EV_PAYMENT_DECLINED) {
		str_member(d, "decline_code", p->decline_code, sizeof p->decline_code);
		if (!p->decline_code[0])
			str_member(d, "code", p->decline_code, sizeof p->decline_code);
		if (!p->decline_code[0])
			snprintf(p->decline_code, sizeof p->decline_code, "declined");
	}
	return 1;
}

int
ot_payment_supersedes(const struct ot_payment *next, const struct ot_payment *cur)
{
	return pay_rank(next->status) > pay_rank(cur->status) && strcmp(cur->status, "DECLINED");
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
	if ((v = json_object_get(d, "payment")))
		ot_payment_from_json(v, &st->pay);
	return 1;
}

int
ot_status_parse(const char *order_id, const char *json, struct ot_status *st)
{
	json_t *o = json_loads(json, 0, NULL), *v;
	int ok;

	memset(st, 0, sizeof *st);
	ok = o && json_is_string(json_object_get(o, "status")) && json_is_integer(json_object_get(o, "version"));
	if (ok) {
		snprintf(st->order_id, sizeof st->order_id, "%s", order_id);
		snprintf(st->status, sizeof st->status, "%s", json_string_value(json_object_get(o, "status")));
		st->version = json_integer_value(json_object_get(o, "version"));
		if ((v = json_object_get(o, "lat")) && json_is_number(v)) {
			st->has_pos = 1;
			st->lat = json_number_value(v);
			st->lon = json_number_value(json_object_get(o, "lon"));
		}
		if (json_is_string(v = json_object_get(o, "eta")))
			snprintf(st->eta, sizeof st->eta, "%s", json_string_value(v));
		if (json_is_string(v = json_object_get(o, "updated_at")))
			snprintf(st->updated_at, sizeof st->updated_at, "%s", json_string_value(v));
		if ((v = json_object_get(o, "payment")))
			ot_payment_from_json(v, &st->pay);
	}
	json_decref(o);
	return ok;
}

int
ot_delivery_status(const json_t *data, char *errstr, size_t errsz)
{
	json_t *s = json_object_get(data, "status");
	int to = json_is_string(s) ? ot_state_parse(json_string_value(s)) : -1;

	if (to != OT_ST_PREPARING && to != OT_ST_IN_TRANSIT && to != OT_ST_DELIVERED)
		return ot_err(OT_EINPUT, errstr, errsz, "field \"data.status\" of DELIVERY_UPDATED must be "
		              "PREPARING, IN_TRANSIT or DELIVERED");
	return to;
}

int
ot_event_position(const json_t *data, char lat[32], char lon[32], char eta[40], char *errstr, size_t errsz)
{
	json_t *la = json_object_get(data, "lat"), *lo = json_object_get(data, "lon");
	json_t *e = json_object_get(data, "eta");

	lat[0] = lon[0] = eta[0] = '\0';
	if (la || lo) {
		if (!json_is_number(la) || !json_is_number(lo) || fabs(json_number_value(la)) > 90 ||
		    fabs(json_number_value(lo)) > 180)
			return ot_err(OT_EINPUT, errstr, errsz, "fields \"data.lat\" and \"data.lon\" must both "
			              "be numbers within [-90, 90] and [-180, 180]");
		snprintf(lat, 32, "%.7f", json_number_value(la));
		snprintf(lon, 32, "%.7f", json_number_value(lo));
	}
	if (e && !json_is_null(e)) {
		if (!json_is_string(e) || json_string_length(e) >= 40)
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.eta\" must be a timestamp string");
		snprintf(eta, 40, "%s", json_string_value(e));
	}
	return OT_OK;
}
