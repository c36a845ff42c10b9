/* ot_rpc: ordertrack.Delivery on ot_grpc's server — Track, an order's changes as a server
 * stream, started from the cache's history and fed by the live hub's Redis subscription;
 * Report, a courier's updates streamed in and written to delivery.updates — and the
 * standard health check. */
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "health.pb-c.h"
#include "ordertrack.pb-c.h"
#include "ot_cache.h"
#include "ot_err.h"
#include "ot_grpc.h"
#include "ot_halves.h"
#include "ot_id.h"
#include "ot_io.h"
#include "ot_limit.h"
#include "ot_log.h"
#include "ot_pg.h"
#include "ot_redis.h"
#include "ot_rlink.h"
#include "ot_rpc.h"
#include "ot_rsub.h"
#include "ot_state.h"
#include "ot_status.h"
#include "ot_text.h"

#define BUCKETS 4096
#define FAN_SPLIT 1024 /* a change to this many streams or more: the helper sends half */

/* One Track stream. Until its backlog is queued (ready), the changes the hub hears for its
 * order wait in pend, so that the client sees every version once, in order. */
struct watch {
	struct watch *next, **pprev;    /* in its bucket */
	struct ot_grpc_call *c;
	char id[64];
	long long last;                 /* the highest version queued (or the client's after_version) */
	int ready, done;
	struct ot_status *pend;
	size_t npend, cappend;
};

struct ot_rpc {
	char *addr, *orders_db, *api_keys;
	struct ot_cache *cache;
	int max_streams;
	struct ot_grpc *g;
	pthread_mutex_t mu;             /* guards the buckets, nwatch and every watch */
	struct watch *bucket[BUCKETS];
	long nwatch;
	struct watch **fan;             /* the hub's: the streams one change goes to (under mu) */
	size_t fancap;
	struct ot_halves *halves;       /* takes half of a large fan-out; NULL: the hub sends all */
	atomic_int subscribed;          /* the hub holds its subscription: changes reach the streams */
	pthread_mutex_t db_mu;          /* guards db */
	PGconn *db;                     /* for the orders Redis does not have */
	const struct ot_config *cfg;
	struct ot_limit *limit;         /* ot-serve's rate limiter; NULL: none */
	pthread_mutex_t rl_mu;          /* guards rl */
	struct ot_rlink rl;             /* the limiter's connection to Redis */
	pthread_mutex_t out_mu;         /* guards out */
	struct ot_out *out;             /* Report's producer to delivery.updates, from the first */
};

static unsigned
bucket_of(const char *id)
{
	return ot_hash32(id) % BUCKETS;
}

/* st as the message a stream carries; NULL when out of memory. */
static struct ot_grpc_msg *
pack_status(const struct ot_status *st)
{
	Ordertrack__OrderStatus m = ORDERTRACK__ORDER_STATUS__INIT;
	Ordertrack__OrderPayment pay = ORDERTRACK__ORDER_PAYMENT__INIT;

	if (st->pay.status[0]) {
		pay.status = (char *)st->pay.status;
		pay.amount = st->pay.amount;
		pay.currency = (char *)st->pay.currency;
		pay.decline_code = (char *)st->pay.decline_code;
		m.payment = &pay;
	}
	m.order_id = (char *)st->order_id;
	m.status = (char *)st->status;
	m.version = st->version;
	m.has_position = st->has_pos;
	m.lat = st->lat;
	m.lon = st->lon;
	m.eta = (char *)st->eta;
	m.updated_at = (char *)st->updated_at;
	m.final = ot_state_terminal(ot_state_parse(st->status));
	return ot_grpc_msg_new(&m.base);
}

/* Queues st, packed as pm (NULL: packed here), on w's stream; a final state ends it. r->mu held. */
static void
send_status(struct watch *w, const struct ot_status *st, const struct ot_grpc_msg *pm)
{
	struct ot_grpc_msg *own = pm ? NULL : pack_status(st);

	w->last = st->version;
	if (!(pm ? pm : own) || ot_grpc_send_msg(w->c, pm ? pm : own) || ot_state_terminal(ot_state_parse(st->status))) {
		ot_grpc_finish(w->c, GRPC_STATUS_OK, NULL);
		w->done = 1;
	}
	ot_grpc_msg_free(own);
}

/* One change going out to many streams: what ot_halves hands send_each. */
struct fan_job {
	const struct ot_status *st;
	const struct ot_grpc_msg *pm;
};

/* send_status for one stream of a fan-out, on the hub's thread or the helper's (r->mu held by
 * the hub for both). */
static long
send_each(void *item, void *arg)
{
	struct fan_job *j = arg;

	send_status(item, j->st, j->pm);
	return 1;
}

/* Hub thread: a change published on order:{id} goes to the streams of that order; from
 * FAN_SPLIT streams on, half of the sends go to the helper thread. */
static void
heard(void *arg, const redisReply *rep)
{
	struct ot_rpc *r = arg;
	struct ot_status st;
	struct ot_grpc_msg *pm = NULL;
	struct watch *w;
	char id[64];
	int parsed = 0;
	size_t nfan = 0;

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4 || !rep->element[0]->str ||
	    strcmp(rep->element[0]->str, "pmessage") || !rep->element[2]->str || !rep->element[3]->str ||
	    !ot_redis_order_of(rep->element[2]->str, id))
		return;
	pthread_mutex_lock(&r->mu);
	for (w = r->bucket[bucket_of(id)]; w; w = w->next) {
		if (w->done || strcmp(w->id, id))
			continue;
		if (!parsed++ && (ot_status_parse(id, rep->element[3]->str, &st) != 1 || !(pm = pack_status(&st))))
			break; /* parsed and packed once, for the first stream of the order */
		if (st.version <= w->last)
			continue;
		if (w->ready) {
			if (!ot_grow((void **)&r->fan, &r->fancap, nfan, sizeof *r->fan))
				r->fan[nfan++] = w;
			else
				send_status(w, &st, pm); /* out of memory: this one now, alone */
			continue;
		}
		if (w->npend == w->cappend) {
			size_t cap = w->cappend ? 2 * w->cappend : 4;
			struct ot_status *p = realloc(w->pend, cap * sizeof *p);
			if (!p)
				continue;
			w->pend = p;
			w->cappend = cap;
		}
		w->pend[w->npend++] = st;
	}
	if (nfan)
		ot_halves_run(r->halves, (void *const *)r->fan, nfan, FAN_SPLIT, send_each, &(struct fan_job){&st, pm});
	pthread_mutex_unlock(&r->mu);
	ot_grpc_msg_free(pm);
}

/* Ends every open stream with code and why. */
static void
end_all(struct ot_rpc *r, grpc_status_code code, const char *why)
{
	struct watch *w;

	pthread_mutex_lock(&r->mu);
	for (size_t b = 0; b < BUCKETS; b++)
		for (w = r->bucket[b]; w; w = w->next)
			if (!w->done) {
				ot_grpc_finish(w->c, code, why);
				w->done = 1;
			}
	pthread_mutex_unlock(&r->mu);
}

/* Hub thread: without the subscription, changes would be lost to the open streams: they end
 * UNAVAILABLE, and their clients call again with the last version they saw. */
static void
subscribed(void *arg, int up)
{
	struct ot_rpc *r = arg;

	atomic_store(&r->subscribed, up);
	if (!up)
		end_all(r, GRPC_STATUS_UNAVAILABLE, "live updates were interrupted: call again with after_version set "
		        "to the last version seen");
}

void
ot_rpc_hooks(struct ot_rpc *r, struct ot_rsub_hooks *h)
{
	memset(h, 0, sizeof *h);
	h->message = heard;
	h->subscribed = subscribed;
	h->arg = r;
}

/* The status of id: through the cache's read order, the database when Redis has it not.
 * Returns 1, 0 (no such order) or an ot_rc with err. */
static int
read_status(struct ot_rpc *r, const char *id, struct ot_status *st, char *err, size_t errsz)
{
	struct ot_cache_rd rd;
	int rc = 0;

	if (ot_cache_read_near(r->cache, id, &rd, st))
		return 1;
	pthread_mutex_lock(&r->db_mu);
	for (int tries = 0; tries < 2; tries++) {
		if (!r->db && !(r->db = ot_pg_connect(r->orders_db, err, errsz))) {
			rc = OT_ESERVICE;
			continue;
		}
		if ((rc = ot_cache_read_db(r->cache, r->db, &rd, st, err, errsz)) >= 0 || PQstatus(r->db) == CONNECTION_OK)
			break;
		PQfinish(r->db); /* broken: once more on a new connection */
		r->db = NULL;
	}
	pthread_mutex_unlock(&r->db_mu);
	return rc;
}

int
ot_rpc_api_key(const char *api_keys, struct ot_grpc_call *c, char key_id[65])
{
	char buf[512];
	const char *key = ot_grpc_metadata(c, "authorization", buf, sizeof buf);

	key_id[0] = '\0';
	if (!key)
		return 0;
	if (!strncasecmp(key, "Bearer ", 7))
		key += 7;
	if (!api_keys || !*key || !ot_key_listed(api_keys, key))
		return -1;
	ot_sha256_hex(key, strlen(key), key_id);
	return 1;
}

static int
authenticate(struct ot_rpc *r, struct ot_grpc_call *c, char key_id[65])
{
	return ot_rpc_api_key(r->api_keys, c, key_id);
}

/* The rate limiter's verdict on c, whose key is auth (as authenticate): 0 go on, else c is
 * answered RESOURCE_EXHAUSTED, as HTTP answers 429. */
static int
limited(struct ot_rpc *r, struct ot_grpc_call *c, int auth, const char *key_id)
{
	enum ot_limit_verdict v;
	char addr[72];
	long wait_ms;

	if (!r->limit)
		return 0;
	ot_grpc_peer_address(c, addr, sizeof addr);
	pthread_mutex_lock(&r->rl_mu);
	v = ot_limit_check_sync(r->limit, &r->rl, addr, auth, key_id, &wait_ms);
	pthread_mutex_unlock(&r->rl_mu);
	if (v == OT_LIMIT_GO)
		return 0;
	ot_rpc_exhausted(c, v == OT_LIMIT_AUTH, wait_ms);
	return 1;
}

void
ot_rpc_exhausted(struct ot_grpc_call *c, int auth_failures, long wait_ms)
{
	char msg[160];

	snprintf(msg, sizeof msg, "%s; retry after %ld s", auth_failures ? "too many failed authentications "
	         "from this client" : "rate limit exceeded", (wait_ms + 999) / 1000);
	ot_grpc_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
	ot_grpc_release(c);
}

/* Refuses c with code and why; the handler is done with it. */
static void
refuse(struct ot_grpc_call *c, grpc_status_code code, const char *why)
{
	ot_grpc_finish(c, code, why);
	ot_grpc_release(c);
}

/* Queues the changes after w->last that the cache's history holds, then the current status st
 * when newer, then what the hub heard meanwhile; from then on the hub sends directly. */
static void
backlog(struct ot_rpc *r, struct watch *w, const struct ot_status *st)
{
	char err[256];
	redisReply *hist = ot_cache_history(r->cache, w->id, w->last, err, sizeof err);
	struct ot_status h;

	if (!hist && err[0])
		OT_WARN(w->id, "stream history unavailable: %s", err);
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; hist && i + 1 < hist->elements && !w->done; i += 2)
		if (hist->element[i]->str && ot_status_parse(w->id, hist->element[i]->str, &h) == 1 && h.version > w->last)
			send_status(w, &h, NULL);
	if (!w->done && st->version > w->last)
		send_status(w, st, NULL);
	for (size_t i = 0; i < w->npend && !w->done; i++)
		if (w->pend[i].version > w->last)
			send_status(w, &w->pend[i], NULL);
	free(w->pend);
	w->pend = NULL;
	w->npend = w->cappend = 0;
	w->ready = 1;
	pthread_mutex_unlock(&r->mu);
	freeReplyObject(hist);
}

/* Why req on c cannot be tracked, with the code to say it; NULL when it can. */
static const char *
refused(struct ot_rpc *r, int auth, const Ordertrack__TrackRequest *req, grpc_status_code *code)
{
	*code = GRPC_STATUS_INVALID_ARGUMENT;
	if (auth < 0) {
		*code = GRPC_STATUS_UNAUTHENTICATED;
		return "the authorization metadata holds no valid API key";
	}
	if (!req->order_id || strlen(req->order_id) >= 64 || !ot_uuid_valid(req->order_id))
		return "order_id must be a UUID";
	if (req->after_version < 0)
		return "after_version must be 0 or more";
	*code = GRPC_STATUS_UNAVAILABLE;
	if (!atomic_load(&r->subscribed))
		return "live updates are not running (Redis is down): try again later";
	return NULL;
}

/* Delivery/Track. */
static void
track(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	const Ordertrack__TrackRequest *req = (const Ordertrack__TrackRequest *)(const void *)msg;
	struct ot_rpc *r = app;
	struct ot_status st;
	struct watch *w;
	grpc_status_code code;
	const char *why;
	char err[512], key_id[65];
	unsigned b;
	int rc, auth = authenticate(r, c, key_id);

	if (limited(r, c, auth, key_id))
		return;
	if ((why = refused(r, auth, req, &code)) || !(w = calloc(1, sizeof *w))) {
		refuse(c, why ? code : GRPC_STATUS_RESOURCE_EXHAUSTED, why ? why : "out of memory");
		return;
	}
	w->c = c;
	w->last = req->after_version;
	snprintf(w->id, sizeof w->id, "%s", req->order_id);
	ot_id_canon(w->id);
	pthread_mutex_lock(&r->mu);
	if (r->nwatch >= r->max_streams) {
		pthread_mutex_unlock(&r->mu);
		free(w);
		refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many streams open: try again later");
		return;
	}
	b = bucket_of(w->id);
	if ((w->next = r->bucket[b]))
		w->next->pprev = &w->next;
	w->pprev = &r->bucket[b];
	r->bucket[b] = w;
	r->nwatch++;
	pthread_mutex_unlock(&r->mu);
	/* From here the stream is the watch's: closed frees both. */
	ot_grpc_set_data(c, w);
	if ((rc = read_status(r, w->id, &st, err, sizeof err)) < 0) {
		OT_WARN(w->id, "track: %s", err);
		ot_grpc_finish(c, GRPC_STATUS_UNAVAILABLE, "the order's status cannot be read now: try again later");
	} else if (rc == 0) {
		ot_grpc_finish(c, GRPC_STATUS_NOT_FOUND, "no such order");
	} else {
		backlog(r, w, &st);
	}
}

static void
track_closed(struct ot_grpc_call *c, void *app)
{
	struct ot_rpc *r = app;
	struct watch *w = ot_grpc_data(c);

	if (!w)
		return; /* refused: released already */
	pthread_mutex_lock(&r->mu);
	if ((*w->pprev = w->next))
		w->next->pprev = w->pprev;
	r->nwatch--;
	pthread_mutex_unlock(&r->mu);
	free(w->pend);
	free(w);
	ot_grpc_release(c);
}

/* One Report stream. */
#define REPORT_ERRORS 100
struct report {
	long n, accepted, rejected;
	char *errors[REPORT_ERRORS];
	size_t nerr;
};

/* Report's producer, opened on first use. NULL with err when Kafka cannot be reached. */
static struct ot_out *
producer(struct ot_rpc *r, char *err, size_t errsz)
{
	int rc;

	if (!r->out)
		r->out = ot_out_open("kafka:" OT_TOPIC_DELIVERY, r->cfg, &rc, err, errsz);
	return r->out;
}

/* One courier update as the envelope ot-consume takes, written to delivery.updates. 0, or an
 * ot_rc with why: OT_EINPUT for an update that is not one. */
static int
report_one(struct ot_rpc *r, const Ordertrack__CourierUpdate *u, char *err, size_t errsz)
{
	json_t *data = json_pack("{s:s}", "status", u->status ? u->status : "");
	char lat[32], lon[32], eta[40];
	struct ot_event ev;
	struct ot_out *out;
	char *line;
	int rc;

	if (!u->order_id || !ot_uuid_valid(u->order_id)) {
		json_decref(data);
		return ot_err(OT_EINPUT, err, errsz, "field \"order_id\" is not a UUID");
	}
	if (u->has_position) {
		json_object_set_new(data, "lat", json_real(u->lat));
		json_object_set_new(data, "lon", json_real(u->lon));
	}
	if (u->eta && *u->eta)
		json_object_set_new(data, "eta", json_string(u->eta));
	if ((rc = ot_delivery_status(data, err, errsz)) < 0 ||
	    (rc = ot_event_position(data, lat, lon, eta, err, errsz)) < 0) {
		json_decref(data);
		return rc;
	}
	ot_event_init(&ev, OT_EV_DELIVERY_UPDATED, u->order_id, 0, "ot-serve", data, NULL);
	line = ot_event_dump(&ev);
	pthread_mutex_lock(&r->out_mu);
	if (!line)
		rc = ot_err(OT_EINTERNAL, err, errsz, "out of memory");
	else if (!(out = producer(r, err, errsz)))
		rc = OT_ESERVICE;
	else
		rc = ot_out_send(out, OT_TOPIC_DELIVERY, ev.order_id, line, strlen(line), NULL, 0, err, errsz);
	pthread_mutex_unlock(&r->out_mu);
	free(line);
	ot_event_clear(&ev);
	return rc;
}

/* Delivery/Report, as it opens: only a key holder may report. */
static void
report_open(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	struct ot_rpc *r = app;
	struct report *rp;
	char key_id[65];
	int auth = authenticate(r, c, key_id);

	(void)msg;
	if (limited(r, c, auth, key_id))
		return;
	if (auth != 1) {
		refuse(c, GRPC_STATUS_UNAUTHENTICATED, "Report needs an API key in the authorization metadata");
		return;
	}
	if (!(rp = calloc(1, sizeof *rp))) {
		refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	ot_grpc_set_data(c, rp);
}

/* Delivery/Report: each update as it comes; at the end (msg NULL), every accepted one
 * acknowledged by Kafka, then the summary. */
static void
report_update(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	Ordertrack__ReportSummary sum = ORDERTRACK__REPORT_SUMMARY__INIT;
	struct report *rp = ot_grpc_data(c);
	struct ot_rpc *r = app;
	char err[512], line[600];
	int rc;

	if (!rp)
		return; /* refused */
	if (msg) {
		rp->n++;
		if ((rc = report_one(r, (const Ordertrack__CourierUpdate *)(const void *)msg, err, sizeof err)) == 0) {
			rp->accepted++;
			return;
		}
		if (rc != OT_EINPUT) {
			OT_WARN(NULL, "report: %s", err);
			ot_grpc_finish(c, GRPC_STATUS_UNAVAILABLE, "the updates cannot be written to Kafka now: send "
			               "those not acknowledged again");
			return;
		}
		rp->rejected++;
		snprintf(line, sizeof line, "update %ld: %s", rp->n, err);
		if (rp->nerr < REPORT_ERRORS)
			rp->errors[rp->nerr++] = strdup(line);
		return;
	}
	pthread_mutex_lock(&r->out_mu);
	rc = rp->accepted && r->out ? ot_out_flush(r->out, 10000, err, sizeof err) : 0;
	pthread_mutex_unlock(&r->out_mu);
	if (rc) {
		OT_WARN(NULL, "report: %s", err);
		ot_grpc_finish(c, GRPC_STATUS_UNAVAILABLE, "Kafka did not acknowledge the updates: send them again");
		return;
	}
	sum.accepted = rp->accepted;
	sum.rejected = rp->rejected;
	sum.n_errors = rp->nerr;
	sum.errors = rp->errors;
	ot_grpc_send(c, &sum.base);
	ot_grpc_finish(c, GRPC_STATUS_OK, NULL);
}

static void
report_closed(struct ot_grpc_call *c, void *app)
{
	struct report *rp = ot_grpc_data(c);

	(void)app;
	if (!rp)
		return; /* refused: released already */
	for (size_t i = 0; i < rp->nerr; i++)
		free(rp->errors[i]);
	free(rp);
	ot_grpc_release(c);
}

/* grpc.health.v1.Health/Check: SERVING while the streams hear the changes; "" names the whole
 * server. */
static void
health(struct ot_grpc_call *c, const ProtobufCMessage *msg, void *app)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const Grpc__Health__V1__HealthCheckRequest *)(const void *)msg;
	Grpc__Health__V1__HealthCheckResponse res = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	struct ot_rpc *r = app;

	if (req->service && *req->service && strcmp(req->service, "ordertrack.Delivery")) {
		refuse(c, GRPC_STATUS_NOT_FOUND, "no such service");
		return;
	}
	res.status = atomic_load(&r->subscribed) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	                                         : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	ot_grpc_send(c, &res.base);
	refuse(c, GRPC_STATUS_OK, NULL);
}

static const struct ot_grpc_method methods[] = {
	{"/ordertrack.Delivery/Track", &ordertrack__track_request__descriptor, track, track_closed, "Delivery/Track",
	 NULL},
	{"/ordertrack.Delivery/Report", &ordertrack__courier_update__descriptor, report_open, report_closed,
	 "Delivery/Report", report_update},
	{"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor, health, NULL,
	 "Health/Check", NULL},
	{NULL, NULL, NULL, NULL, NULL, NULL},
};

struct ot_rpc *
ot_rpc_new(const struct ot_rpc_opts *o)
{
	struct ot_rpc *r = calloc(1, sizeof *r);

	if (!r || !(r->addr = strdup(o->addr)) || !(r->orders_db = strdup(o->orders_db)) ||
	    (o->api_keys && *o->api_keys && !(r->api_keys = strdup(o->api_keys)))) {
		if (r) {
			free(r->addr);
			free(r->orders_db);
		}
		free(r);
		return NULL;
	}
	r->cache = o->cache;
	r->max_streams = o->max_streams;
	r->cfg = o->cfg;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->db_mu, NULL);
	pthread_mutex_init(&r->out_mu, NULL);
	pthread_mutex_init(&r->rl_mu, NULL);
	if (!(r->halves = ot_halves_start()))
		OT_WARN(NULL, "gRPC streams: no helper thread: one thread sends every change");
	return r;
}

void
ot_rpc_set_limit(struct ot_rpc *r, struct ot_limit *limit)
{
	r->limit = limit;
}

int
ot_rpc_listen(struct ot_rpc *r, char *errstr, size_t errsz)
{
	if (!(r->g = ot_grpc_start(r->addr, methods, r, errstr, errsz)))
		return 0;
	return ot_grpc_port(r->g);
}

void
ot_rpc_stop(struct ot_rpc *r)
{
	if (!r)
		return;
	end_all(r, GRPC_STATUS_UNAVAILABLE, "the server is stopping: call again with after_version set to the "
	        "last version seen");
	ot_grpc_stop(r->g);
	r->g = NULL;
}

void
ot_rpc_free(struct ot_rpc *r)
{
	if (!r)
		return;
	ot_rpc_stop(r);
	PQfinish(r->db);
	if (r->out) {
		char err[256];
		if (ot_out_flush(r->out, 5000, err, sizeof err))
			OT_WARN(NULL, "courier updates not acknowledged at exit: %s", err);
		ot_out_free(r->out);
	}
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->db_mu);
	pthread_mutex_destroy(&r->out_mu);
	pthread_mutex_destroy(&r->rl_mu);
	ot_halves_stop(r->halves);
	free(r->fan);
	ot_rlink_close(&r->rl);
	free(r->addr);
	free(r->orders_db);
	free(r->api_keys);
	free(r);
}
