/* ot_rpipe: one Redis connection shared by every event-loop thread, pipelined: commands from
 * many requests go out in one write and their replies come back in one read, on the pipe's own
 * thread, so no event loop waits on Redis and requests in flight have no fixed ceiling. Against
 * a Redis Cluster, one connection per master, each command sent to the master of its slot. */
#ifndef OT_RPIPE_H
#define OT_RPIPE_H

#include <hiredis/hiredis.h>

#include "ot_queue.h"

struct ot_rpipe;

/* One command and what to do with its reply; embedded in the request it serves. */
struct ot_rpipe_job {
	struct ot_qnode node; /* first: the queue's link */
	char *cmd;           /* in Redis protocol (redisFormatCommand): the pipe frees it */
	int len;
	/* The hash slot of the command's key (ot_rcluster_slot), or -1 for a command of no key
	 * (any master runs it). A single server ignores it. When a cluster answers MOVED or ASK,
	 * the pipe sets it to the slot the answer names. */
	int slot;
	/* Called on the pipe's thread with the reply, or NULL when Redis did not answer (down,
	 * the connection broke, or past its 1 s timeout). On a single server every command queued
	 * behind then gets NULL at once too; in a cluster, only those that went to that master.
	 * MOVED and ASK answers are followed, not handed here, except the third MOVED in a row for
	 * one command (the cluster's map keeps changing). rep is freed after; j may be freed by
	 * done itself (the pipe no longer touches it). done may queue another command. */
	void (*done)(struct ot_rpipe_job *j, redisReply *rep);
	struct ot_rpipe_job *next; /* the pipe's own, for the batch it is in */
};

/* A pipe to the Redis at url, connected on first use and again after a failure (at most five
 * times a second). Each connect asks the server whether it is a cluster (a URL naming a db
 * other than 0 is a single server's). A single server gets one connection, one write per batch,
 * replies in order. A cluster, once found, stays one: each batch is split by master, one write
 * to each; replies come in the order queued, but for the commands the cluster redirected, which
 * are answered once followed. A command answered ASK is sent on through
 * ot_rcluster_command_argv, which may send it twice if a connection breaks: queue only commands
 * that may run twice. NULL when out of memory or its thread cannot start. */
struct ot_rpipe *ot_rpipe_new(const char *url);
/* Queues j (j->cmd, j->len and j->slot set); never blocks. Its done runs soon, once. */
void ot_rpipe_send(struct ot_rpipe *p, struct ot_rpipe_job *j);
/* Answers what is still queued, joins the thread and frees. Accepts NULL. */
void ot_rpipe_free(struct ot_rpipe *p);

#endif
