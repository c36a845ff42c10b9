/* ot_rpipe: one Redis connection shared by every event-loop thread, pipelined: commands from
 * many requests go out in one write and their replies come back in one read, on the pipe's own
 * thread, so no event loop waits on Redis and requests in flight have no fixed ceiling. */
#ifndef OT_RPIPE_H
#define OT_RPIPE_H

#include <hiredis/hiredis.h>

struct ot_rpipe;

/* One command and what to do with its reply; embedded in the request it serves. */
struct ot_rpipe_job {
	char *cmd;           /* in Redis protocol (redisFormatCommand): the pipe frees it */
	int len;
	/* Called on the pipe's thread with the reply, or NULL when Redis did not answer (down,
	 * the connection broke, or past its 1 s timeout; then every command queued behind gets
	 * NULL at once too). rep is freed after; j may be freed by done itself (the pipe no longer
	 * touches it). done may queue another command. */
	void (*done)(struct ot_rpipe_job *j, redisReply *rep);
	struct ot_rpipe_job *next;
};

/* A pipe to the Redis at url (connected on first use and again after a failure, at most five
 * times a second). NULL when out of memory or its thread cannot start. */
struct ot_rpipe *ot_rpipe_new(const char *url);
/* Queues j (j->cmd and j->len set); never blocks. Its done runs soon, once. */
void ot_rpipe_send(struct ot_rpipe *p, struct ot_rpipe_job *j);
/* Answers what is still queued, joins the thread and frees. Accepts NULL. */
void ot_rpipe_free(struct ot_rpipe *p);

#endif
