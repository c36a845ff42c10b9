/* ot_call: what a route of ot-serve works with — its call, the worker threads' own database
 * and Redis connections, and the pool that runs database calls off the event loops. */
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_breaker.h"
#include "ot_err.h"
#include "ot_http_int.h"
#include "ot_log.h"
#include "ot_pg.h"
#include "ot_time.h"

/* A stuck statement must not hold one of the few worker threads for long. */
#define STATEMENT_TIMEOUT "SET statement_timeout = '5s'"

static _Thread_local struct conns *tconns;

/* The calling worker thread's connections, created on its first request; NULL when out of memory. */
static struct conns *
thread_conns(struct ot_http *h)
{
	if (tconns || !(tconns = calloc(1, sizeof *tconns)))
		return tconns;
	pthread_mutex_lock(&h->mu);
	tconns->next = h->conns;
	h->conns = tconns;
	pthread_mutex_unlock(&h->mu);
	return tconns;
}

/* The thread's database connection, reset if it broke; NULL while PostgreSQL is unreachable. */
PGconn *
ot_call_db_connect(struct call *x)
{
	struct conns *c = x->c;
	struct pollfd p = {c->db ? PQsocket(c->db) : -1, POLLIN, 0};
	char err[512];
	int i;

	/* An idle connection has nothing to read unless the server closed it (a restart: its last
	 * words, then EOF). Reading them marks it bad, so ot_pg_ensure reconnects before a request
	 * fails on it: a POST without request_id may not be retried. */
	for (i = 0; i < 4 && c->db && PQstatus(c->db) == CONNECTION_OK && poll(&p, 1, 0) > 0; i++)
		if (!PQconsumeInput(c->db))
			break;
	if (c->db && ot_pg_ensure(c->db, err, sizeof err)) {
		err[strcspn(err, "\n")] = '\0';
		OT_WARN(x->rq->order_id, "PostgreSQL unreachable: %s", err);
		return NULL;
	}
	if (!c->db && !(c->db = ot_pg_connect(x->h->orders_db, err, sizeof err))) {
		OT_WARN(x->rq->order_id, "%s", err);
		return NULL;
	}
	if (PQbackendPID(c->db) != c->db_pid) {
		if (ot_pg_exec(c->db, STATEMENT_TIMEOUT, 0, NULL, err, sizeof err))
			OT_WARN(NULL, "%s", err);
		else
			c->db_pid = PQbackendPID(c->db);
	}
	return c->db;
}

/* The thread's database connection, or NULL at once while the PostgreSQL circuit is open. The
 * caller reports how the call went with ot_call_db_done. */
PGconn *
ot_call_db(struct call *x)
{
	PGconn *db;

	if (!ot_breaker_allow(&x->h->pg_cb))
		return NULL;
	if (!(db = ot_call_db_connect(x)))
		ot_breaker_done(&x->h->pg_cb, 0);
	return db;
}

void
ot_call_db_done(struct call *x, int rc)
{
	ot_breaker_done(&x->h->pg_cb, rc != OT_ESERVICE);
}

/* True when a call that failed with rc may run once more: the connection broke under it (a
 * server restart) and a fresh one is at hand in *db. */
int
ot_call_db_retry(struct call *x, int rc, PGconn **db)
{
	if (rc != OT_ESERVICE || PQstatus(*db) != CONNECTION_BAD)
		return 0;
	OT_INFO(x->rq->order_id, "PostgreSQL connection lost, trying once more");
	return (*db = ot_call_db_connect(x)) != NULL;
}

/* SELECT 1 within timeout_ms. A connection that does not answer in time is dropped, so the
 * next check starts afresh. Returns 0 or OT_ESERVICE. */
int
ot_call_db_ping(struct conns *c, int timeout_ms)
{
	long long deadline = ot_now_ms() + timeout_ms;
	struct pollfd p = {PQsocket(c->db), POLLIN, 0};
	PGresult *res;
	int ok = 0;

	if (!PQsendQuery(c->db, "SELECT 1"))
		return OT_ESERVICE;
	while (PQisBusy(c->db)) {
		int left = (int)(deadline - ot_now_ms());
		if (left <= 0 || poll(&p, 1, left) == 0) {
			PQfinish(c->db);
			c->db = NULL;
			return OT_ESERVICE;
		}
		if (!PQconsumeInput(c->db))
			break;
	}
	while ((res = PQgetResult(c->db))) {
		ok |= PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
	}
	return ok ? 0 : OT_ESERVICE;
}

/* Fills the call a route works with; -1 when out of memory. */
int
ot_call_of(void *app, struct ot_httpd_req *rq, struct call *x)
{
	x->h = app;
	x->rq = rq;
	x->con = rq->con;
	x->sr = rq->ext;
	x->sr->h = x->h;
	x->sr->rq = rq;
	return (x->c = thread_conns(x->h)) ? 0 : -1;
}

/* Runs x->sr->fn on the pool, off the event loop: it answers, then the request resumes. */
static void
slow_job(struct ot_pool_job *j)
{
	struct serve_req *sr = (struct serve_req *)(void *)((char *)j - offsetof(struct serve_req, pj));
	struct ot_httpd_req *rq = sr->rq;
	struct ot_span here;
	struct call x;

	/* The request's span is this thread's current one through a copy: the event thread may
	 * still have the span itself entered, and which span is current is each thread's own. */
	here = sr->span;
	here.current = 0;
	here.prev = NULL;
	ot_span_enter(&here);
	if (ot_call_of(sr->h, rq, &x))
		ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	else
		sr->fn(&x);
	/* Resumed without an answer, the route would run again: a write twice. */
	if (!rq->pending)
		ot_httpd_reply_error(rq, 500, "internal error", NULL);
	ot_span_leave(&here);
	ot_httpd_resume(rq);
}

/* Answers x's request with fn, run on the pool: what may wait on the database never holds an
 * event loop. */
enum MHD_Result
ot_call_offload(struct call *x, enum MHD_Result (*fn)(struct call *x))
{
	x->sr->fn = fn;
	x->sr->pj.fn = slow_job;
	ot_httpd_suspend(x->rq);
	ot_pool_run(x->h->slow, &x->sr->pj);
	return MHD_YES;
}

void
ot_call_offload_suspended(struct serve_req *sr, enum MHD_Result (*fn)(struct call *x))
{
	sr->fn = fn;
	sr->pj.fn = slow_job;
	ot_pool_run(sr->h->slow, &sr->pj);
}

void
ot_call_conns_free(struct ot_http *h)
{
	struct conns *c, *next;

	for (c = h->conns; c; c = next) {
		next = c->next;
		PQfinish(c->db);
		ot_rlink_close(&c->redis);
		free(c);
	}
	h->conns = NULL;
}
