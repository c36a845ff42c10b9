/* ot_limit: ot-serve's rate limiter — GCRA in Redis per client, leases of requests spent here,
 * and a stricter limit on failed authentications per address. */
#ifndef OT_LIMIT_H
#define OT_LIMIT_H

#include <microhttpd.h>

#include "ot_httpd.h"
#include "ot_rpipe.h"

#define OT_AUTH_FAIL_RATE (1.0 / 6) /* failed authentications a second per address, after ... */
#define OT_AUTH_FAIL_BURST 10       /* ... this many at once */

struct ot_breaker;
struct ot_limit;
struct ot_rlink;

/* A request's check, kept in the request's own (zeroed) memory while it waits for Redis. */
struct ot_limit_req {
	struct ot_rpipe_job rj; /* the check, on the pipe */
	struct ot_limit *l;
	struct ot_httpd_req *rq;
	int state;           /* 0 not decided, 1 go on, 2 refused for wait_ms */
	long wait_ms;
	char client[96];
	int take;            /* requests asked for: a lease, or 1 */
	int source;          /* the script's source was sent (Redis had lost it) */
};

/* What a check decided. */
enum ot_limit_verdict {
	OT_LIMIT_GO,         /* go on */
	OT_LIMIT_WAIT,       /* suspended on Redis: the route runs again once it answered */
	OT_LIMIT_RATE,       /* refused: the client is over its rate */
	OT_LIMIT_AUTH        /* refused: too many failed authentications from the address */
};

/* A limiter of rate requests a second per client (0: none but the one on failed
 * authentications) after a burst, checked in the Redis at redis_url, on the pipe for requests
 * without a key, on the calling thread's link otherwise. cb is the Redis circuit: while it is
 * open nothing is enforced. redis_url, cb and pipe must outlive it. NULL when out of memory. */
struct ot_limit *ot_limit_new(double rate, int burst, const char *redis_url, struct ot_breaker *cb,
                              struct ot_rpipe *pipe);
/* Accepts NULL. */
void ot_limit_free(struct ot_limit *l);

/* Judges rq, whose key was valid (auth 1, key_id its name), wrong (-1) or absent (0): a valid
 * key by its key's budget, else the client's address; a wrong key also by its address's limit
 * on failed authentications. link is the calling thread's connection to Redis. A request
 * without a key may be suspended (OT_LIMIT_WAIT) while its check goes through the pipe; once
 * it resumes, the same call with the same lr returns what Redis decided. Fails open: with Redis
 * down, its circuit open, or out of memory, OT_LIMIT_GO. A refusal sets *wait_ms. */
enum ot_limit_verdict ot_limit_check(struct ot_limit *l, struct ot_limit_req *lr, struct ot_httpd_req *rq,
                                     struct ot_rlink *link, int auth, const char *key_id, long *wait_ms);
/* The same verdict for a caller that may wait (a gRPC call, on a server thread): the client's
 * address (no port), its key's verdict auth and name key_id; Redis asked on link, the calling
 * thread's. A refusal is counted in ot_rate_limited_total. */
enum ot_limit_verdict ot_limit_check_sync(struct ot_limit *l, struct ot_rlink *link, const char *address, int auth,
                                          const char *key_id, long *wait_ms);
/* The 429 for a refusal v, with Retry-After from wait_ms and a body that says which limit it
 * was; counted in ot_rate_limited_total. */
enum MHD_Result ot_limit_refuse(struct ot_httpd_req *rq, enum ot_limit_verdict v, long wait_ms);
/* Registers ot_rate_limited_total. */
void ot_limit_metrics(void);

#endif
