/* ot_pool: a fixed set of threads running queued jobs in order. */
#include <pthread.h>
#include <stdlib.h>

#include "ot_pool.h"
#include "ot_queue.h"

struct ot_pool {
	struct ot_queue q;
	int n;               /* threads started */
	pthread_t *t;
};

static void *
worker(void *arg)
{
	struct ot_pool *p = arg;
	struct ot_qnode *n;

	/* One job at a time; NULL once stopping with nothing left. */
	while ((n = ot_queue_take(&p->q, 1, 1))) {
		struct ot_pool_job *j = (struct ot_pool_job *)n;
		j->fn(j);
	}
	return NULL;
}

struct ot_pool *
ot_pool_new(int threads)
{
	struct ot_pool *p;

	if (threads < 1)
		threads = 1;
	if (!(p = calloc(1, sizeof *p)) || !(p->t = calloc((size_t)threads, sizeof *p->t))) {
		free(p);
		return NULL;
	}
	ot_queue_init(&p->q);
	for (; p->n < threads; p->n++)
		if (pthread_create(&p->t[p->n], NULL, worker, p)) {
			ot_pool_free(p);
			return NULL;
		}
	return p;
}

void
ot_pool_run(struct ot_pool *p, struct ot_pool_job *j)
{
	ot_queue_push(&p->q, &j->node);
}

void
ot_pool_free(struct ot_pool *p)
{
	if (!p)
		return;
	ot_queue_stop(&p->q);
	for (int i = 0; i < p->n; i++)
		pthread_join(p->t[i], NULL);
	ot_queue_destroy(&p->q);
	free(p->t);
	free(p);
}
