/* ot_breaker: fail fast while a service is down, and probe it back one call at a time. */

#include "ot_time.h"
#include "ot_breaker.h"
#include "ot_log.h"

void
ot_breaker_init(struct ot_breaker *b, const char *name, int threshold, int open_ms)
{
	b->name = name;
	b->threshold = threshold > 0 ? threshold : 1;
	b->open_ms = open_ms;
	pthread_mutex_init(&b->mu, NULL);
	b->state = OT_BREAKER_CLOSED;
	b->failures = b->probing = 0;
	b->opened_at = 0;
	b->opens = b->rejected = 0;
}

void
ot_breaker_destroy(struct ot_breaker *b)
{
	pthread_mutex_destroy(&b->mu);
}

int
ot_breaker_allow(struct ot_breaker *b)
{
	int ok = 1;

	pthread_mutex_lock(&b->mu);
	if (b->state == OT_BREAKER_OPEN && ot_now_ms() - b->opened_at >= b->open_ms) {
		b->state = OT_BREAKER_HALF_OPEN;
		b->probing = 0;
		OT_INFO(NULL, "%s circuit half-open: probing", b->name);
	}
	if (b->state == OT_BREAKER_OPEN || (b->state == OT_BREAKER_HALF_OPEN && b->probing)) {
		ok = 0;
		b->rejected++;
	} else if (b->state == OT_BREAKER_HALF_OPEN) {
		b->probing = 1;
	}
	pthread_mutex_unlock(&b->mu);
	return ok;
}

void
ot_breaker_done(struct ot_breaker *b, int ok)
{
	pthread_mutex_lock(&b->mu);
	if (ok) {
		if (b->state != OT_BREAKER_CLOSED)
			OT_INFO(NULL, "%s circuit closed", b->name);
		b->state = OT_BREAKER_CLOSED;
		b->failures = 0;
	} else if (b->state == OT_BREAKER_HALF_OPEN || ++b->failures >= b->threshold) {
		if (b->state != OT_BREAKER_OPEN) {
			OT_WARN(NULL, "%s circuit open: failing fast for %d ms", b->name, b->open_ms);
			b->opens++;
		}
		b->state = OT_BREAKER_OPEN;
		b->opened_at = ot_now_ms();
		b->failures = 0;
	}
	b->probing = 0;
	pthread_mutex_unlock(&b->mu);
}

enum ot_breaker_state
ot_breaker_read(struct ot_breaker *b, long *opens, long *rejected)
{
	enum ot_breaker_state s;

	pthread_mutex_lock(&b->mu);
	s = b->state;
	if (s == OT_BREAKER_OPEN && ot_now_ms() - b->opened_at >= b->open_ms)
		s = OT_BREAKER_HALF_OPEN; /* the next call will probe */
	*opens = b->opens;
	*rejected = b->rejected;
	pthread_mutex_unlock(&b->mu);
	return s;
}

const char *
ot_breaker_state_name(enum ot_breaker_state s)
{
	return s == OT_BREAKER_OPEN ? "open" : s == OT_BREAKER_HALF_OPEN ? "half-open" : "closed";
}
