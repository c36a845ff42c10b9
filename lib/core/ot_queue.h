/* ot_queue: a first-in first-out queue of nodes embedded in the work they stand for, shared by
 * threads: producers never block, consumers wait for work. */
#ifndef OT_QUEUE_H
#define OT_QUEUE_H

#include <pthread.h>

/* The link, the first member of whatever is queued (a pointer to the node converts back to a
 * pointer to its container): no allocation per item. */
struct ot_qnode {
	struct ot_qnode *next;
};

struct ot_queue {
	pthread_mutex_t mu; /* guards the rest */
	pthread_cond_t cv;
	struct ot_qnode *head, *tail;
	int stop;
};

void ot_queue_init(struct ot_queue *q);
/* Queues n last; never blocks. n must live until taken. */
void ot_queue_push(struct ot_queue *q, struct ot_qnode *n);
/* Takes up to max of the oldest nodes, linked in order (the last's next NULL). With wait set,
 * waits for one unless the queue is stopped. NULL: nothing was queued (with wait: and it is
 * stopped, so a consumer runs what is left before it ends). */
struct ot_qnode *ot_queue_take(struct ot_queue *q, int max, int wait);
/* Wakes every waiting consumer for good: from now on take waits no more. */
void ot_queue_stop(struct ot_queue *q);
/* Frees what init made; the queue must have no waiting consumer left. */
void ot_queue_destroy(struct ot_queue *q);

#endif
