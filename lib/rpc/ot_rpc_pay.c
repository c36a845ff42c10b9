/* ot_rpc_pay: ordertrack.Payment on ot_grpc's server — GetPayment, an order's payment and its
 * changes read from the payments database; Refund, a refund taken into the saga
 * (ot_refund_request) for ot-pay's consumer to make — and the standard health check. */
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.pb-c.h"
#include "ordertrack.pb-c.h"
#include "ot_breaker.h"
#include "ot_err.h"
#include "ot_gcra.h"
#include "ot_grpc.h"
#include "ot_id.h"
#include "ot_limit.h"
#include "ot_log.h"
#include "ot_outcome.h"
#include "ot_pg.h"
#include "ot_refund.h"
#include "ot_rpc.h"
#include "ot_rpc_pay.h"
#include "ot_time.h"

#define MAX_CHANGES 200 /* GetPayment's changes, the newest kept */
#define OT_STR_(x) #x
#define OT_STR(x) OT_STR_(x)
#define RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

struct ot_rpc_pay {
	char *db_conninfo, *api_keys;
	struct ot_breaker *breaker;
	struct ot_gcra *per_key;    /* calls per API key; NULL: no limit */
	struct ot_gcra *failed;     /* failed authentications per address */
	struct ot_grpc *g;
	pthread_mutex_t db_mu;  /* guards db */
	PGconn *db;             /* NULL until the first call, or after it broke */
};

/* The breaker is open: the processor fails fast. */
static int
processor_down(struct ot_rpc_pay *r)
{
	long opens, rejected;

	return r->breaker && ot_breaker_read(r->breaker, &opens, &rejected) == OT_BREAKER_OPEN;
}

/* Ends c with code and why; the handler is done with it. */
static void
refuse(struct ot_grpc_call *c, grpc_status_code code, const char *why)
{
	ot_grpc_finish(c, code, why);
	ot_grpc_release(c);
}

/* The checks every Payment call passes first: a valid API key, time left. 0 go on, else c is
 * answered. */
static int
admitted(struct ot_rpc_pay *r, struct ot_grpc_call *c)
{
	char key_id[65], addr[72];
	long wait_ms = 0;

	switch (ot_rpc_api_key(r->api_keys, c, key_id)) {
	case 1:
		if (r->per_key && (wait_ms = ot_gcra_take(r->per_key, key_id, ot_now_ms()))) {
			ot_rpc_exhausted(c, 0, wait_ms);
			return 1;
		}
		break;
	case 0: refuse(c, GRPC_STATUS_UNAUTHENTICATED, "Payment needs an API key in the authorization metadata"); return 1;
	default:
		/* A wrong key counts against its address: guessing keys is slow. */
		if ((wait_ms = ot_gcra_take(r->failed, ot_grpc_peer_address(c, addr, sizeof addr), ot_now_ms())))
			ot_rpc_exhausted(c, 1, wait_ms);
		else
			refuse(c, GRPC_STATUS_UNAUTHENTICATED, "the authorization metadata holds no valid API key");
		return 1;
	}
	if (ot_grpc_deadline_ms(c) <= 0) {
		refuse(c, GRPC_STATUS_DEADLINE_EXCEEDED, "the deadline passed before the call was taken");
		return 1;
	}
	return 0;
}

/* The connection, opened (or opened again) as needed, with db_mu held; NULL with errstr. */
static PGconn *
db_of(struct ot_rpc_pay *r, char *errstr, size_t errsz)
{
	if (r->db && PQstatus(r->db) != CONNECTION_OK && ot_pg_ensure(r->db, NULL, 0)) {
		PQfinish(r->db);
		r->db = NULL;
	}
	if (!r->db)
		r->db = ot_pg_connect(r->db_conninfo, errstr, errsz);
	return r->db;
}

static char *
text(PGresult *q, int row, int col)
{
	return PQgetvalue(q, row, col);
}

/* The payment's changes, oldest first, into info (strings pointing into q); *cs holds them,
 * for the caller to free with info->changes. -1 when out of memory. */
static int
changes(Ordertrack__PaymentInfo *info, PGresult *q, Ordertrack__PaymentChange **cs)
{
	int i, n = PQntuples(q);
	Ordertrack__PaymentChange **ptrs = calloc((size_t)n + 1, sizeof *ptrs);

	*cs = calloc((size_t)n + 1, sizeof **cs);
	if (!ptrs || !*cs) {
		free(ptrs);
		free(*cs);
		*cs = NULL;
		return -1;
	}
	for (i = 0; i < n; i++) {
		ordertrack__payment_change__init(&(*cs)[i]);
		(*cs)[i].status = text(q, i, 0);
		(*cs)[i].amount = strtoll(text(q, i, 1), NULL, 10);
		(*cs)[i].detail = text(q, i, 2);
		(*cs)[i].at = text(q, i, 3);
		ptrs[i] = &(*cs)[i];
	}
	info->n_changes = (size_t)n;
	info->changes = ptrs;
	return n;
}

/* Reads order_id's payment and its changes, and sends it on c. Returns the status code. */
static grpc_status_code
send_payment(struct ot_rpc_pay *r, struct ot_grpc_call *c, const char *order_id, char *err, size_t errsz)
{
	Ordertrack__PaymentInfo info = ORDERTRACK__PAYMENT_INFO__INIT;
	Ordertrack__PaymentChange *cs = NULL;
	const char *p[1] = {order_id};
	PGresult *q = NULL, *h = NULL;
	grpc_status_code code = GRPC_STATUS_UNAVAILABLE;
	PGconn *db;
	int rc;

	pthread_mutex_lock(&r->db_mu);
	if (!(db = db_of(r, err, errsz)) ||
	    !(q = ot_pg_query(db, "SELECT status, amount, currency, captured, refunded, coalesce(charge_id, ''), "
	                      "coalesce(decline_code, ''), " RFC3339("updated_at") " FROM payments WHERE order_id = $1",
	                      1, p, &rc, err, errsz)))
		goto out;
	if (!PQntuples(q)) {
		snprintf(err, errsz, "order %s has no payment", order_id);
		code = GRPC_STATUS_NOT_FOUND;
		goto out;
	}
	if (!(h = ot_pg_query(db, "SELECT * FROM (SELECT status, amount, coalesce(detail, ''), " RFC3339("created_at")
	                      ", id FROM payment_changes WHERE order_id = $1 ORDER BY id DESC LIMIT " OT_STR(MAX_CHANGES) ") c ORDER BY id",
	                      1, p, &rc, err, errsz)))
		goto out;
	info.order_id = (char *)order_id;
	info.status = text(q, 0, 0);
	info.amount = strtoll(text(q, 0, 1), NULL, 10);
	info.currency = text(q, 0, 2);
	info.captured = strtoll(text(q, 0, 3), NULL, 10);
	info.refunded = strtoll(text(q, 0, 4), NULL, 10);
	info.charge_id = text(q, 0, 5);
	info.decline_code = text(q, 0, 6);
	info.updated_at = text(q, 0, 7);
	if (changes(&info, h, &cs) < 0) {
		snprintf(err, errsz, "out of memory");
		code = GRPC_STATUS_RESOURCE_EXHAUSTED;
		goto out;
	}
	code = ot_grpc_send(c, &info.base) ? GRPC_STATUS_CANCELLED : GRPC_STATUS_OK;
	free(info.changes);
	free(cs);
out:
	pthread_mutex_unlock(&r->db_mu);
	PQclear(q);
	PQclear(h);
	return code;
}

static void
get_payment(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	const Ordertrack__GetPaymentRequest *req = (const Ordertrack__GetPaymentRequest *)(const void *)msg;
	struct ot_rpc_pay *r = app;
	grpc_status_code code;
	char err[256] = "";

	if (admitted(r, c))
		return;
	if (!ot_uuid_valid(req->order_id)) {
		refuse(c, GRPC_STATUS_INVALID_ARGUMENT, "order_id is not a UUID");
		return;
	}
	if ((code = send_payment(r, c, req->order_id, err, sizeof err)) == GRPC_STATUS_UNAVAILABLE)
		OT_WARN(req->order_id, "GetPayment: %s", err);
	refuse(c, code, code == GRPC_STATUS_OK ? NULL : code == GRPC_STATUS_UNAVAILABLE ?
	       "the payments database is unavailable: retry" : err);
}

/* The gRPC status of what ot_refund_request returned. */
static grpc_status_code
refund_code(int rc)
{
	switch (rc) {
	case OT_OK:
	case OT_DUPLICATE: return GRPC_STATUS_OK;
	case OT_ENOTFOUND: return GRPC_STATUS_NOT_FOUND;
	case OT_ECONFLICT: return GRPC_STATUS_FAILED_PRECONDITION;
	case OT_EINPUT: return GRPC_STATUS_INVALID_ARGUMENT;
	default: return GRPC_STATUS_UNAVAILABLE;
	}
}

static void
refund(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	const Ordertrack__RefundRequest *req = (const Ordertrack__RefundRequest *)(const void *)msg;
	Ordertrack__RefundReceipt rr = ORDERTRACK__REFUND_RECEIPT__INIT;
	struct ot_rpc_pay *r = app;
	struct ot_refund_ticket t;
	grpc_status_code code;
	char err[256] = "";
	PGconn *db;
	int rc = OT_ESERVICE;

	if (admitted(r, c))
		return;
	if (processor_down(r)) {
		refuse(c, GRPC_STATUS_UNAVAILABLE, "the payment processor is failing (circuit open): retry later");
		return;
	}
	pthread_mutex_lock(&r->db_mu);
	if ((db = db_of(r, err, sizeof err)))
		rc = ot_refund_request(db, req->order_id, req->amount, req->reason, req->request_id, &t, err, sizeof err);
	pthread_mutex_unlock(&r->db_mu);
	if ((code = refund_code(rc)) != GRPC_STATUS_OK) {
		if (code == GRPC_STATUS_UNAVAILABLE)
			OT_WARN(NULL, "Refund: %s", err);
		refuse(c, code, code == GRPC_STATUS_UNAVAILABLE ? "the payments database is unavailable: retry" : err);
		return;
	}
	OT_INFO(req->order_id, "refund %s of %lld %s", t.request_id, t.amount,
	        rc == OT_DUPLICATE ? "asked again: the first answer repeated" : "requested");
	rr.order_id = req->order_id;
	rr.request_id = t.request_id;
	rr.amount = t.amount;
	rr.status = t.status;
	ot_grpc_send(c, &rr.base);
	refuse(c, GRPC_STATUS_OK, NULL);
}

/* grpc.health.v1.Health/Check: SERVING while the payments database answers and the
 * processor's breaker is not open; "" names the whole server. */
static void
health(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const Grpc__Health__V1__HealthCheckRequest *)(const void *)msg;
	Grpc__Health__V1__HealthCheckResponse res = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	struct ot_rpc_pay *r = app;
	char err[256];
	int up;

	if (req->service && *req->service && strcmp(req->service, "ordertrack.Payment")) {
		refuse(c, GRPC_STATUS_NOT_FOUND, "no such service");
		return;
	}
	pthread_mutex_lock(&r->db_mu);
	up = db_of(r, err, sizeof err) && ot_pg_exec(r->db, "SELECT 1", 0, NULL, err, sizeof err) == OT_OK;
	pthread_mutex_unlock(&r->db_mu);
	up = up && !processor_down(r);
	res.status = up ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	                : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	ot_grpc_send(c, &res.base);
	refuse(c, GRPC_STATUS_OK, NULL);
}

static const struct ot_grpc_method methods[] = {
	{"/ordertrack.Payment/GetPayment", &ordertrack__get_payment_request__descriptor, get_payment, NULL,
	 "Payment/GetPayment", NULL},
	{"/ordertrack.Payment/Refund", &ordertrack__refund_request__descriptor, refund, NULL, "Payment/Refund", NULL},
	{"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor, health, NULL,
	 "Health/Check", NULL},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

struct ot_rpc_pay *
ot_rpc_pay_start(const struct ot_rpc_pay_opts *o, int *port, char *errstr, size_t errsz)
{
	struct ot_rpc_pay *r = calloc(1, sizeof *r);

	if (!r || !(r->db_conninfo = strdup(o->payments_db)) ||
	    (o->api_keys && *o->api_keys && !(r->api_keys = strdup(o->api_keys)))) {
		ot_err(OT_ESERVICE, errstr, errsz, "out of memory");
		goto fail;
	}
	r->breaker = o->breaker;
	if ((o->rate > 0 && !(r->per_key = ot_gcra_new(o->rate, (int)ceil(2 * o->rate), 1024))) ||
	    !(r->failed = ot_gcra_new(OT_AUTH_FAIL_RATE, OT_AUTH_FAIL_BURST, 1024))) {
		ot_err(OT_ESERVICE, errstr, errsz, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&r->db_mu, NULL);
	if (!(r->g = ot_grpc_start(o->addr, methods, r, errstr, errsz))) {
		pthread_mutex_destroy(&r->db_mu);
		goto fail;
	}
	*port = ot_grpc_port(r->g);
	return r;
fail:
	if (r) {
		ot_gcra_free(r->per_key);
		ot_gcra_free(r->failed);
		free(r->db_conninfo);
		free(r->api_keys);
	}
	free(r);
	return NULL;
}

void
ot_rpc_pay_stop(struct ot_rpc_pay *r)
{
	if (!r)
		return;
	ot_grpc_stop(r->g);
	PQfinish(r->db);
	pthread_mutex_destroy(&r->db_mu);
	ot_gcra_free(r->per_key);
	ot_gcra_free(r->failed);
	free(r->db_conninfo);
	free(r->api_keys);
	free(r);
}
