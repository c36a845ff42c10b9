/* ot_limit: ot-serve's rate limiter — GCRA in Redis per client, leases of requests spent here,
 * and a stricter limit on failed authentications per address. */
#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_breaker.h"
#include "ot_err.h"
#include "ot_limit.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_rcluster.h"
#include "ot_redis.h"
#include "ot_rlink.h"
#include "ot_text.h"
#include "ot_time.h"

#define LEASES 256                /* clients holding leased requests at once (by hash: a clash drops one) */
#define LEASE_MS 100              /* a lease is at most this long of a client's rate ... */
#define LEASE_MAX 64              /* ... at most this many requests, and a quarter of its burst */

struct ot_limit {
	double rate;         /* requests a second per client; 0: no limit */
	int burst;
	int lease_n;         /* requests taken from Redis at once; 1: no leases */
	const char *redis_url;
	struct ot_breaker *cb;
	struct ot_rpipe *pipe;
	pthread_mutex_t lease_mu; /* guards lease */
	struct lease {       /* requests a client was granted in Redis and has not made yet */
		char client[96];
		int left;
		long long until; /* ms, monotonic: unused, they lapse */
	} lease[LEASES];
};

static struct ot_metric *m_limited;

struct ot_limit *
ot_limit_new(double rate, int burst, const char *redis_url, struct ot_breaker *cb, struct ot_rpipe *pipe)
{
	struct ot_limit *l = calloc(1, sizeof *l);

	if (!l)
		return NULL;
	l->rate = rate;
	l->burst = burst > 0 ? burst : 1;
	l->lease_n = (int)(l->rate * LEASE_MS / 1000);
	l->lease_n = l->lease_n < l->burst / 4 ? l->lease_n : l->burst / 4;
	l->lease_n = l->lease_n > LEASE_MAX ? LEASE_MAX : l->lease_n < 1 ? 1 : l->lease_n;
	l->redis_url = redis_url;
	l->cb = cb;
	l->pipe = pipe;
	pthread_mutex_init(&l->lease_mu, NULL);
	return l;
}

void
ot_limit_free(struct ot_limit *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->lease_mu);
	free(l);
}

/* Takes one request from client's lease: 1 when it had one. */
static int
lease_take(struct ot_limit *l, const char *client)
{
	struct lease *e = &l->lease[ot_hash32(client) % LEASES];
	int got = 0;

	pthread_mutex_lock(&l->lease_mu);
	if (e->left > 0 && !strcmp(e->client, client) && ot_now_ms() < e->until) {
		e->left--;
		got = 1;
	}
	pthread_mutex_unlock(&l->lease_mu);
	return got;
}

/* client may make n more requests without asking Redis, for LEASE_MS. Several of its requests
 * may have asked at once: what is left of a lease still running adds up, since Redis counted it. */
static void
lease_give(struct ot_limit *l, const char *client, int n)
{
	struct lease *e = &l->lease[ot_hash32(client) % LEASES];
	long long now = ot_now_ms();

	pthread_mutex_lock(&l->lease_mu);
	if (strcmp(e->client, client) || now >= e->until)
		e->left = 0;
	snprintf(e->client, sizeof e->client, "%s", client);
	e->left += n;
	e->until = now + LEASE_MS;
	pthread_mutex_unlock(&l->lease_mu);
}

/* The slot of a client's rate-limit key, for the pipe to find its master on a cluster. */
static int
limit_slot(const char *client)
{
	char key[112];
	int n = snprintf(key, sizeof key, OT_REDIS_RL_FMT, client);

	return (int)ot_rcluster_slot(key, n < (int)sizeof key ? (size_t)n : sizeof key - 1);
}

/* Queues lr's GCRA check on the pipe; -1 when out of memory. */
static int
limit_send(struct ot_limit_req *lr)
{
	struct ot_limit *l = lr->l;
	int len = ot_redis_gcra_cmd(&lr->rj.cmd, lr->client, l->rate, l->burst, lr->take, lr->source);

	if (len < 0)
		return -1;
	lr->rj.len = len;
	lr->rj.slot = limit_slot(lr->client);
	ot_rpipe_send(l->pipe, &lr->rj);
	return 0;
}

/* Redis answered a request's limiter check (on the pipe's thread): as ot_limit_check decides,
 * then the request goes on (or is refused) on its event loop. */
static void
got_limit(struct ot_rpipe_job *j, redisReply *rep)
{
	struct ot_limit_req *lr = (struct ot_limit_req *)(void *)((char *)j - offsetof(struct ot_limit_req, rj));
	struct ot_limit *l = lr->l;
	long wait_ms;
	int rc = ot_redis_gcra_of(rep, &wait_ms);

	if (rc < 0 && ot_redis_noscript(rep) && !lr->source) { /* Redis restarted: load it again */
		lr->source = 1;
		if (!limit_send(lr))
			return;
	} else if (rc == 0 && lr->take > 1) { /* not room for a lease: perhaps for this one */
		lr->take = 1;
		lr->source = 0;
		if (!limit_send(lr))
			return;
	}
	if (rc == 1 && lr->take > 1)
		lease_give(l, lr->client, lr->take - 1);
	ot_breaker_done(l->cb, rc >= 0);
	if (rc < 0)
		OT_WARN(NULL, "rate limit not checked: Redis: %s", rep && rep->str ? rep->str : "no reply");
	lr->wait_ms = rc == 0 ? wait_ms : 0;
	lr->state = rc == 0 ? 2 : 1;
	ot_httpd_resume(lr->rq);
}

/* ot_redis_gcra on this thread's connection to the client's key's master, once more after a
 * cluster's map was read again (a slot that moved). With Redis down or its circuit open, 1 (go
 * on: the limiter fails open). The breaker hears whether the connection held: an answer that
 * was an error is the limiter's to report, not a Redis outage. */
static int
gcra_sync(struct ot_limit *l, struct ot_rlink *link, const char *client, double per_s, int burst, int take,
          long *wait_ms, char *err, size_t errsz)
{
	char key[112];
	redisContext *r;
	int rc = OT_ESERVICE, tries = 0;

	if (!ot_breaker_allow(l->cb))
		return 1;
	snprintf(key, sizeof key, OT_REDIS_RL_FMT, client);
	do
		r = ot_rlink_conn(link, l->redis_url, key);
	while ((!r || (rc = ot_redis_gcra(r, client, per_s, burst, take, wait_ms, err, errsz)) < 0) &&
	       ot_rlink_retry(link, r, r ? rc : OT_ESERVICE, &tries));
	ot_breaker_done(l->cb, r && !r->err);
	return r ? rc : 1;
}

/* Sends the check of a request without a key through the pipe and suspends the request:
 * OT_LIMIT_WAIT, or OT_LIMIT_GO when Redis is not to be asked (its circuit open, or out of
 * memory: fails open). */
static enum ot_limit_verdict
ask_async(struct ot_limit *l, struct ot_limit_req *lr, struct ot_httpd_req *rq, const char *client, int n)
{
	if (!ot_breaker_allow(l->cb))
		return OT_LIMIT_GO;
	snprintf(lr->client, sizeof lr->client, "%s", client);
	lr->l = l;
	lr->rq = rq;
	lr->take = n;
	lr->source = 0;
	lr->rj.done = got_limit;
	lr->rj.slot = limit_slot(client);
	if ((lr->rj.len = ot_redis_gcra_cmd(&lr->rj.cmd, client, l->rate, l->burst, n, 0)) < 0) {
		ot_breaker_done(l->cb, 1);
		return OT_LIMIT_GO; /* out of memory: fails open */
	}
	ot_httpd_suspend(rq);
	ot_rpipe_send(l->pipe, &lr->rj);
	return OT_LIMIT_WAIT;
}

/* The verdict on a request of the client at addr ("ip:ADDRESS") with a valid key named key_id
 * (auth 1), a wrong one (-1) or none (0), as ot_limit_check describes. With rq, a request
 * without a key asks Redis through the pipe and may be suspended (OT_LIMIT_WAIT); without,
 * the calling thread waits on link. */
static enum ot_limit_verdict
judge(struct ot_limit *l, struct ot_limit_req *lr, struct ot_httpd_req *rq, struct ot_rlink *link, const char *addr,
      int auth, const char *key_id, long *wait_ms)
{
	char client[96], err[256];
	/* A request with a wrong key spends no lease and takes none: it is refused all the sooner. */
	int rc = 1, n = auth < 0 ? 1 : l->lease_n;

	if (l->rate <= 0 && !auth)
		return OT_LIMIT_GO;
	if (auth > 0)
		snprintf(client, sizeof client, "key:%s", key_id);
	else
		snprintf(client, sizeof client, "%s", addr);
	if (!auth && lease_take(l, client))
		return OT_LIMIT_GO;
	if (!auth && rq)
		return ask_async(l, lr, rq, client, n);
	if (auth < 0) {
		char fails[96];
		snprintf(fails, sizeof fails, "authfail:%s", addr);
		if ((rc = gcra_sync(l, link, fails, OT_AUTH_FAIL_RATE, OT_AUTH_FAIL_BURST, 1, wait_ms, err, sizeof err)) == 0)
			return OT_LIMIT_AUTH;
	}
	if (rc > 0 && l->rate > 0 && !(auth > 0 && lease_take(l, client))) {
		rc = gcra_sync(l, link, client, l->rate, l->burst, n, wait_ms, err, sizeof err);
		if (rc == 0 && n > 1) /* not room for a lease: perhaps for this one */
			rc = gcra_sync(l, link, client, l->rate, l->burst, 1, wait_ms, err, sizeof err);
		else if (rc == 1 && n > 1)
			lease_give(l, client, n - 1);
	}
	if (rc < 0)
		OT_WARN(NULL, "rate limit not checked: %s", err);
	return rc != 0 ? OT_LIMIT_GO : OT_LIMIT_RATE;
}

/* GCRA in Redis, per client: a valid API key, else the address (a key that is not valid is no
 * identity: a new one per request must not buy a fresh limit), behind a trusted proxy the
 * client's own. A request with a valid key is judged by its key's budget alone; one with a
 * wrong key also counts against its address's stricter limit on failed authentications, past
 * which it gets 429, so one client sending junk keys slows itself and no one else (behind the
 * ingress, without trusted proxies, its address is everyone's). With Redis down or its circuit
 * open nothing is enforced (fails open), since refusing every client would turn a cache outage
 * into an API outage.
 * Where the rate allows (lease_n > 1), a request takes lease_n requests from Redis at once when
 * all may pass, and the client's next ones spend them here without a round trip: Redis has
 * counted them already, so no client gets more than its limit across every server; a lease not
 * spent within LEASE_MS lapses (the client loses those few). A request without a key waits for
 * Redis off the event loop: suspended while its check goes through the pipe. */
enum ot_limit_verdict
ot_limit_check(struct ot_limit *l, struct ot_limit_req *lr, struct ot_httpd_req *rq, struct ot_rlink *link,
               int auth, const char *key_id, long *wait_ms)
{
	char addr[72];

	*wait_ms = 0;
	if (lr->state) { /* decided while it was suspended */
		*wait_ms = lr->wait_ms;
		return lr->state == 1 ? OT_LIMIT_GO : OT_LIMIT_RATE;
	}
	/* The client's address: behind a trusted proxy, the one its headers name. */
	snprintf(addr, sizeof addr, "ip:%s", rq->client);
	return judge(l, lr, rq, link, addr, auth, key_id, wait_ms);
}

enum ot_limit_verdict
ot_limit_check_sync(struct ot_limit *l, struct ot_rlink *link, const char *address, int auth, const char *key_id,
                    long *wait_ms)
{
	char addr[72];
	enum ot_limit_verdict v;

	*wait_ms = 0;
	snprintf(addr, sizeof addr, "ip:%s", address);
	if ((v = judge(l, NULL, NULL, link, addr, auth, key_id, wait_ms)) != OT_LIMIT_GO)
		ot_metric_add(m_limited, 1);
	return v;
}

enum MHD_Result
ot_limit_refuse(struct ot_httpd_req *rq, enum ot_limit_verdict v, long wait_ms)
{
	char secs[24], msg[128];
	const char *hdr[] = {"Retry-After", secs, NULL};
	long s = (wait_ms + 999) / 1000;

	snprintf(secs, sizeof secs, "%ld", s);
	/* A client locked out for its wrong keys should learn that a key is what is wrong. */
	if (v == OT_LIMIT_AUTH)
		snprintf(msg, sizeof msg, "too many failed authentications from this client; retry after %ld s", s);
	else
		snprintf(msg, sizeof msg, "rate limit exceeded");
	ot_metric_add(m_limited, 1);
	return ot_httpd_reply_json(rq, 429, json_pack("{s:s, s:f}", "error", msg, "retry_after_s", (double)wait_ms / 1000),
	                           hdr);
}

void
ot_limit_metrics(void)
{
	m_limited = ot_metric_new(OT_COUNTER, "ot_rate_limited_total", "Requests refused by the rate limiter: HTTP 429, gRPC RESOURCE_EXHAUSTED.", NULL, NULL, 0);
}
