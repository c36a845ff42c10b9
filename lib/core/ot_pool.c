/* ot_pool: a fixed set of threads running queued jobs in order. */
#include <pthread.h>
#include <stdlib.h>

#include "ot_pool.h"

struct ot_pool {
	pthread_mutex_t mu;  /* guards the queue and stop */
	pthread_cond_t cv;
	struct ot_pool_job *head, *tail;
	int stop;
	int n;               /* threads started */
	pthread_t *t;
};

static void *
worker(void *arg)
{
	struct ot_pool *p = arg;
	struct ot_pool_job *j;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!(j = p->head))
			break; /* stopping, and nothing is left */
		if (!(p->head = j->next))
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		j->next = NULL;
		j->fn(j);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
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
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
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
	j->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void
ot_pool_free(struct ot_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n; i++)
		pthread_join(p->t[i], NULL);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->t);
	free(p);
}
