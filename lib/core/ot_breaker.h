/* ot_breaker: a circuit breaker around calls to one service (closed, open, half-open). */
#ifndef OT_BREAKER_H
#define OT_BREAKER_H

#include <pthread.h>

enum ot_breaker_state { OT_BREAKER_CLOSED = 0, OT_BREAKER_HALF_OPEN = 1, OT_BREAKER_OPEN = 2 };

/* Thread-safe. Opens after `threshold` failures in a row; while open, calls fail at once for
 * `open_ms`; then one probe call goes through (half-open): its success closes the breaker,
 * its failure opens it again. */
struct ot_breaker {
	const char *name;
	int threshold, open_ms;
	pthread_mutex_t mu;
	enum ot_breaker_state state;
	int failures, probing;
	long long opened_at;
	long opens;          /* times it opened: a counter for the metrics */
	long rejected;       /* calls refused while open */
};

void ot_breaker_init(struct ot_breaker *b, const char *name, int threshold, int open_ms);
void ot_breaker_destroy(struct ot_breaker *b);
/* Returns 1 when a call may go ahead (and must be followed by ot_breaker_done), 0 when the
 * breaker is open and the caller should fail fast. */
int ot_breaker_allow(struct ot_breaker *b);
/* Records how an allowed call went: ok 1 for success, 0 for a service failure. */
void ot_breaker_done(struct ot_breaker *b, int ok);
/* The current state, opens and rejections, read together. */
enum ot_breaker_state ot_breaker_read(struct ot_breaker *b, long *opens, long *rejected);
const char *ot_breaker_state_name(enum ot_breaker_state s);

#endif
