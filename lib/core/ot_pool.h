/* ot_pool: a few threads that run the slow part of requests (database reads, waits) handed
 * over by event-loop threads, which must never block. */
#ifndef OT_POOL_H
#define OT_POOL_H

#include "ot_queue.h"

struct ot_pool;

/* One piece of work, embedded in whatever it works on: no allocation per job. */
struct ot_pool_job {
	struct ot_qnode node; /* first: the queue's link */
	void (*fn)(struct ot_pool_job *j);
};

/* Starts threads threads (at least 1). NULL when out of memory or threads cannot start. */
struct ot_pool *ot_pool_new(int threads);
/* Queues j; one of the threads runs j->fn(j) soon, in the order they were queued. Never
 * blocks. j must live until fn has run. */
void ot_pool_run(struct ot_pool *p, struct ot_pool_job *j);
/* Runs the jobs still queued, joins the threads and frees. Accepts NULL. */
void ot_pool_free(struct ot_pool *p);

#endif
