/* ot_halves: a second thread that takes half of a large loop; the lists it runs over. */
#include <pthread.h>
#include <stdlib.h>

#include "ot_halves.h"

struct ot_halves {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void *const *v;      /* the helper's half */
	size_t n;
	long (*fn)(void *item, void *arg);
	void *arg;
	long sum;            /* what the helper's half returned */
	int busy, quit;
	pthread_t th;
};

static void *
run(void *p)
{
	struct ot_halves *h = p;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->busy && !h->quit)
			pthread_cond_wait(&h->cv, &h->mu);
		if (h->quit)
			break;
		pthread_mutex_unlock(&h->mu);
		long sum = 0;
		for (size_t i = 0; i < h->n; i++)
			sum += h->fn(h->v[i], h->arg);
		pthread_mutex_lock(&h->mu);
		h->sum = sum;
		h->busy = 0;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

struct ot_halves *
ot_halves_start(void)
{
	struct ot_halves *h = calloc(1, sizeof *h);

	if (!h)
		return NULL;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	if (pthread_create(&h->th, NULL, run, h)) {
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
		free(h);
		return NULL;
	}
	return h;
}

void
ot_halves_stop(struct ot_halves *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	h->quit = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->th, NULL);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

long
ot_halves_run(struct ot_halves *h, void *const *v, size_t n, size_t min, long (*fn)(void *item, void *arg),
              void *arg)
{
	size_t mine = n;
	long sum = 0;

	if (h && n >= min && n >= 2) {
		mine = n / 2;
		pthread_mutex_lock(&h->mu);
		h->v = v + mine;
		h->n = n - mine;
		h->fn = fn;
		h->arg = arg;
		h->busy = 1;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
	}
	for (size_t i = 0; i < mine; i++)
		sum += fn(v[i], arg);
	if (mine < n) {
		pthread_mutex_lock(&h->mu);
		while (h->busy)
			pthread_cond_wait(&h->cv, &h->mu);
		sum += h->sum;
		pthread_mutex_unlock(&h->mu);
	}
	return sum;
}

int
ot_grow(void **v, size_t *cap, size_t n, size_t size)
{
	void *nv;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 64;
	if (!(nv = realloc(*v, c * size)))
		return -1;
	*v = nv;
	*cap = c;
	return 0;
}
