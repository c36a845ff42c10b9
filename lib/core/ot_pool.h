/* ot_pool: a few threads that run the slow part of requests (database reads, waits) handed
 * over by event-loop threads, which must never block. */
#ifndef OT_POOL_H
#define OT_POOL_H

struct ot_pool;

/* One piece of work, embedded in whatever it works on: no allocation per job. */
struct ot_pool_job {
	void (*fn)(struct ot_pool_job *j);
	struct ot_pool_job *next;
};

/* Starts threads threads (at least 1). NULL when out of memory or threads cannot start. */
struct ot_pool *ot_pool_new(int threads);
/* Queues j; one of the threads runs j->fn(j) soon, in the order they were queued. Never
 * blocks. j must live until fn has run. */
void ot_pool_run(struct ot_pool *p, struct ot_pool_job *j);
/* Runs the jobs still queued, joins the threads and frees. Accepts NULL. */
void ot_pool_free(struct ot_pool *p);

#endif
