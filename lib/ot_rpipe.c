/* ot_rpipe: a thread that batches queued Redis commands on one connection. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ot_redis.h"
#include "ot_rpipe.h"

#define BATCH_MAX 512 /* commands per write: bounds one batch's wait and memory */

struct ot_rpipe {
	char *url;
	redisContext *r;     /* the pipe thread's alone */
	pthread_mutex_t mu;  /* guards the queue and stop */
	pthread_cond_t cv;
	struct ot_rpipe_job *head, *tail;
	int stop, started;
	pthread_t t;
};

/* Up to BATCH_MAX queued jobs, oldest first; NULL once stopped with nothing left. */
static struct ot_rpipe_job *
take(struct ot_rpipe *p)
{
	struct ot_rpipe_job *first, *last;
	int n;

	pthread_mutex_lock(&p->mu);
	while (!p->head && !p->stop)
		pthread_cond_wait(&p->cv, &p->mu);
	first = p->head;
	for (last = first, n = 1; last && last->next && n < BATCH_MAX; last = last->next, n++)
		;
	if (last) {
		if (!(p->head = last->next))
			p->tail = NULL;
		last->next = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	return first;
}

/* Hands every queued job a NULL reply. */
static void
fail_queued(struct ot_rpipe *p)
{
	struct ot_rpipe_job *j, *next;

	pthread_mutex_lock(&p->mu);
	j = p->head;
	p->head = p->tail = NULL;
	pthread_mutex_unlock(&p->mu);
	for (; j; j = next) {
		next = j->next;
		free(j->cmd);
		j->cmd = NULL;
		j->done(j, NULL);
	}
}

/* Writes the batch, then hands each job its reply in order. */
static void
run(struct ot_rpipe *p, struct ot_rpipe_job *batch)
{
	redisContext *r = ot_redis_live(&p->r, p->url);
	struct ot_rpipe_job *j, *next;
	redisReply *rep;
	long sent = 0;
	void *v;

	for (j = batch; r && j; j = j->next, sent++)
		if (redisAppendFormattedCommand(r, j->cmd, (size_t)j->len) != REDIS_OK)
			break;
	for (j = batch; j; j = next, sent--) {
		next = j->next;
		rep = NULL;
		if (sent > 0 && !r->err && redisGetReply(r, &v) == REDIS_OK)
			rep = v;
		free(j->cmd);
		j->cmd = NULL;
		j->done(j, rep);
		freeReplyObject(rep);
	}
	/* Redis down, or the connection broke or timed out: what waits behind fails over at once
	 * rather than a timeout per batch. */
	if (!r || r->err)
		fail_queued(p);
}

static void *
pipe_thread(void *arg)
{
	struct ot_rpipe *p = arg;
	struct ot_rpipe_job *batch;

	while ((batch = take(p)))
		run(p, batch);
	return NULL;
}

struct ot_rpipe *
ot_rpipe_new(const char *url)
{
	struct ot_rpipe *p;

	if (!(p = calloc(1, sizeof *p)) || !(p->url = strdup(url))) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->t, NULL, pipe_thread, p)) {
		ot_rpipe_free(p);
		return NULL;
	}
	p->started = 1;
	return p;
}

void
ot_rpipe_send(struct ot_rpipe *p, struct ot_rpipe_job *j)
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
ot_rpipe_free(struct ot_rpipe *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (p->started)
		pthread_join(p->t, NULL);
	if (p->r)
		redisFree(p->r);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->url);
	free(p);
}
