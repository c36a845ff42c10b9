/* ot_gcra: an in-process rate limiter — GCRA per client name in a fixed table. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ot_gcra.h"
#include "ot_text.h"

struct slot {
	unsigned hash;       /* the client's ot_hash32; 0 with tat 0: free */
	long long tat_us;    /* theoretical arrival time of the next request */
};

struct ot_gcra {
	pthread_mutex_t mu;
	long long interval_us;  /* between two requests at the rate */
	long long tolerance_us; /* (burst - 1) intervals: how far ahead tat may run */
	int n;
	struct slot s[];
};

struct ot_gcra *
ot_gcra_new(double rate, int burst, int slots)
{
	struct ot_gcra *g;

	if (!(rate > 0) || slots < 1 || !(g = calloc(1, sizeof *g + (size_t)slots * sizeof g->s[0])))
		return NULL;
	pthread_mutex_init(&g->mu, NULL);
	g->interval_us = (long long)(1e6 / rate);
	if (g->interval_us < 1)
		g->interval_us = 1;
	g->tolerance_us = (long long)(burst > 1 ? burst - 1 : 0) * g->interval_us;
	g->n = slots;
	return g;
}

void
ot_gcra_free(struct ot_gcra *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->mu);
	free(g);
}

long
ot_gcra_take(struct ot_gcra *g, const char *client, long long now_ms)
{
	unsigned h = ot_hash32(client ? client : "");
	long long now = now_ms * 1000, tat, wait = 0;
	struct slot *s = &g->s[h % (unsigned)g->n];

	pthread_mutex_lock(&g->mu);
	/* Another client's slot, or one whose budget refilled: a fresh start. */
	tat = s->hash == h && s->tat_us > now ? s->tat_us : now;
	if (tat - now > g->tolerance_us)
		wait = tat - now - g->tolerance_us;
	else {
		s->hash = h;
		s->tat_us = tat + g->interval_us;
	}
	pthread_mutex_unlock(&g->mu);
	return wait ? (long)((wait + 999) / 1000) : 0;
}
