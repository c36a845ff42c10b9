/* ot_rpipe: a thread that batches queued Redis commands on one connection, or on one per master
 * of a Redis Cluster. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_event.h"
#include "ot_log.h"
#include "ot_rcluster.h"
#include "ot_redis.h"
#include "ot_rlink.h"
#include "ot_rpipe.h"

#define BATCH_MAX 512   /* commands per write: bounds one batch's wait and memory */
#define ROUNDS 3        /* sends of a command the cluster keeps answering MOVED */

struct ot_rpipe {
	char *url;
	/* The pipe thread's alone: a single server's connection, or, once the server said it is a
	 * cluster, the router to its masters, kept for good (it follows the cluster's changes). */
	struct ot_rlink k;
	redisContext *at[BATCH_MAX]; /* in a cluster batch, where each job went (NULL: nowhere) */
	struct ot_queue q;
	int started;
	pthread_t t;
};

/* Jobs taken from the queue, linked by their next in the same order. */
static struct ot_rpipe_job *
jobs(struct ot_qnode *n)
{
	struct ot_rpipe_job *first = (struct ot_rpipe_job *)n;

	for (; n; n = n->next)
		((struct ot_rpipe_job *)n)->next = (struct ot_rpipe_job *)n->next;
	return first;
}

/* Up to BATCH_MAX queued jobs, oldest first; NULL once stopped with nothing left. */
static struct ot_rpipe_job *
take(struct ot_rpipe *p)
{
	return jobs(ot_queue_take(&p->q, BATCH_MAX, 1));
}

/* Hands j its reply (NULL: none) and frees that. */
static void
answer(struct ot_rpipe_job *j, redisReply *rep)
{
	free(j->cmd);
	j->cmd = NULL;
	j->done(j, rep);
	freeReplyObject(rep);
}

/* Hands every queued job a NULL reply. */
static void
fail_queued(struct ot_rpipe *p)
{
	struct ot_rpipe_job *j, *next;

	for (j = jobs(ot_queue_take(&p->q, INT_MAX, 0)); j; j = next) {
		next = j->next;
		answer(j, NULL);
	}
}

/* A single server: writes the batch, then hands each job its reply in order. */
static void
run_single(struct ot_rpipe *p, redisContext *r, struct ot_rpipe_job *batch)
{
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
		answer(j, rep);
	}
	/* Redis down, or the connection broke or timed out: what waits behind fails over at once
	 * rather than a timeout per batch. */
	if (!r || r->err)
		fail_queued(p);
}

/* A master that answers, for a command of no key: the first in the map. */
static redisContext *
any_master(struct ot_rcluster *c)
{
	redisContext *r = NULL;

	for (size_t i = 0; !r && i < ot_rcluster_masters(c); i++)
		r = ot_rcluster_master(c, i);
	return r;
}

/* One send of a cluster batch: each job to the master of its slot, one write to each master,
 * then each job its reply, in order. The jobs answered ASK go to *asked, those answered MOVED
 * are returned when follow_moved (else they get that answer), each with its slot set to the
 * one the answer names. *failed is set when a master did not answer. */
static struct ot_rpipe_job *
cluster_send(struct ot_rpipe *p, struct ot_rpipe_job *batch, int follow_moved, struct ot_rpipe_job **asked,
             int *failed)
{
	struct ot_rpipe_job *j, *next, *moved = NULL, **moved_end = &moved, **asked_end = asked;
	redisContext *r;
	redisReply *rep;
	char host[256];
	int i, n, kind, slot, port, done, appending = 1;
	void *v;

	*asked = NULL;
	*failed = 0;
	/* The router hands out no connection after this loop: those in at[] stay valid (an append
	 * that fails breaks its connection, which the router would drop, so none follows one). */
	for (j = batch, n = 0; j; j = j->next, n++) {
		r = !appending ? NULL
		    : j->slot >= 0 ? ot_rcluster_node_of_slot(p->k.cl, (unsigned)j->slot) : any_master(p->k.cl);
		if (r && redisAppendFormattedCommand(r, j->cmd, (size_t)j->len) != REDIS_OK)
			appending = 0;
		p->at[n] = r;
	}
	/* Every master gets its commands before any reply is awaited, so one that stopped answering
	 * delays the others' replies by its timeout at most. */
	for (i = 0; i < n; i++)
		while ((r = p->at[i]) && !r->err && redisBufferWrite(r, &done) == REDIS_OK && !done)
			;
	for (j = batch, i = 0; j; j = next, i++) {
		next = j->next;
		rep = NULL;
		if ((r = p->at[i]) && !r->err && redisGetReply(r, &v) == REDIS_OK)
			rep = v;
		*failed |= !rep;
		kind = ot_rcluster_redirect(rep, &slot, host, sizeof host, &port);
		if (kind == 2 || (kind == 1 && follow_moved)) {
			freeReplyObject(rep);
			j->slot = slot;
			j->next = NULL;
			if (kind == 2)
				*asked_end = j, asked_end = &j->next;
			else
				*moved_end = j, moved_end = &j->next;
			continue;
		}
		answer(j, rep);
	}
	return moved;
}

/* j's command through the router, which follows the ASK its slot's master answers (ASKING, then
 * the command, on the node named). The router wants the key: the first argument of the command
 * in j's slot. Returns the reply, or NULL. */
static redisReply *
ask(struct ot_rpipe *p, struct ot_rpipe_job *j)
{
	redisReader *rd = redisReaderCreate();
	redisReply *cmd = NULL, *rep = NULL, *a;
	const char **argv = NULL;
	size_t *argvlen = NULL, i, key = 0;
	char err[512] = "out of memory";
	void *v = NULL;

	/* A command in Redis protocol is an array of bulk strings, as a reply is. */
	if (!rd || redisReaderFeed(rd, j->cmd, (size_t)j->len) != REDIS_OK ||
	    redisReaderGetReply(rd, &v) != REDIS_OK || !(cmd = v) || cmd->type != REDIS_REPLY_ARRAY ||
	    !cmd->elements || !(argv = calloc(cmd->elements, sizeof *argv)) ||
	    !(argvlen = calloc(cmd->elements, sizeof *argvlen)))
		goto out;
	snprintf(err, sizeof err, "no argument of the command is in slot %d", j->slot);
	for (i = 0; i < cmd->elements; i++) {
		if ((a = cmd->element[i])->type != REDIS_REPLY_STRING)
			goto out;
		argv[i] = a->str;
		argvlen[i] = a->len;
		if (!key && i > 0 && ot_rcluster_slot(a->str, a->len) == (unsigned)j->slot)
			key = i;
	}
	if (key)
		rep = ot_rcluster_command_argv(p->k.cl, argv[key], argvlen[key], (int)cmd->elements, argv, argvlen, err,
		                               sizeof err);
out:
	if (!rep)
		OT_WARN(NULL, "Redis Cluster: a command sent on by ASK got no answer: %s", err);
	free(argv);
	free(argvlen);
	freeReplyObject(cmd);
	redisReaderFree(rd);
	return rep;
}

/* A cluster: sends the batch, follows what the cluster redirected, and reads the map again
 * when a slot moved or a master failed (a replica may have taken its slots over: at most once a
 * second then). */
static void
run_cluster(struct ot_rpipe *p, struct ot_rpipe_job *batch)
{
	struct ot_rpipe_job *asked, *j, *next;
	char err[512];
	long long now;
	int failed;

	for (int round = 1; batch; round++) {
		batch = cluster_send(p, batch, round < ROUNDS, &asked, &failed);
		for (j = asked; j; j = next) {
			next = j->next;
			answer(j, ask(p, j));
		}
		now = ot_now_ms();
		if (!batch && (!failed || now - p->k.refreshed < 1000))
			continue;
		if (failed)
			p->k.refreshed = now;
		if (ot_rcluster_refresh(p->k.cl, err, sizeof err))
			OT_WARN(NULL, "Redis Cluster: the map of slots not read again: %s", err);
	}
}

static void *
pipe_thread(void *arg)
{
	struct ot_rpipe *p = arg;
	struct ot_rpipe_job *batch;
	redisContext *r;

	while ((batch = take(p))) {
		/* The first connection finds out whether Redis is a cluster. */
		r = p->k.cl ? NULL : ot_rlink_conn(&p->k, p->url, NULL);
		if (p->k.cl)
			run_cluster(p, batch);
		else
			run_single(p, r, batch);
	}
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
	ot_queue_init(&p->q);
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
	ot_queue_push(&p->q, &j->node);
}

void
ot_rpipe_free(struct ot_rpipe *p)
{
	if (!p)
		return;
	ot_queue_stop(&p->q);
	if (p->started)
		pthread_join(p->t, NULL);
	ot_rlink_close(&p->k);
	ot_queue_destroy(&p->q);
	free(p->url);
	free(p);
}
