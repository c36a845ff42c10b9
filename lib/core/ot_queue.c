/* ot_queue: a first-in first-out queue of embedded nodes, shared by threads. */
#include "ot_queue.h"

void
ot_queue_init(struct ot_queue *q)
{
	q->head = q->tail = NULL;
	q->stop = 0;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
}

void
ot_queue_push(struct ot_queue *q, struct ot_qnode *n)
{
	n->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->tail)
		q->tail->next = n;
	else
		q->head = n;
	q->tail = n;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

struct ot_qnode *
ot_queue_take(struct ot_queue *q, int max, int wait)
{
	struct ot_qnode *first, *last;
	int n;

	pthread_mutex_lock(&q->mu);
	while (wait && !q->head && !q->stop)
		pthread_cond_wait(&q->cv, &q->mu);
	first = q->head;
	for (last = first, n = 1; last && last->next && n < max; last = last->next, n++)
		;
	if (last) {
		if (!(q->head = last->next))
			q->tail = NULL;
		last->next = NULL;
	}
	pthread_mutex_unlock(&q->mu);
	return first;
}

void
ot_queue_stop(struct ot_queue *q)
{
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void
ot_queue_destroy(struct ot_queue *q)
{
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
}
