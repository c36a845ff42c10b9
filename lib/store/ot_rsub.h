/* ot_rsub: what listens to a Redis pub/sub subscription besides the code that holds it. */
#ifndef OT_RSUB_H
#define OT_RSUB_H

#include <hiredis/hiredis.h>

/* What hears a Redis subscription besides its owner (ot_live's hub holds one; ot_lcache
 * listens). Each hook runs on the owner's thread and may be NULL. */
struct ot_rsub_hooks {
	/* On each new connection, before PSUBSCRIBE order:*: may send its own commands on r. */
	void (*connecting)(void *arg, redisContext *r);
	/* The subscription holds (1, once PSUBSCRIBE answered) or dropped (0; also at the end). */
	void (*subscribed)(void *arg, int up);
	/* Every message the subscription receives, before the streams get it. */
	void (*message)(void *arg, const redisReply *rep);
	void *arg;
};

#endif
