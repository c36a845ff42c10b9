/* ot_halves: a second thread that takes half of a large loop — the sends of one change to many
 * live streams — while the calling thread does the other half, so the per-stream cost (the
 * kernel's TCP work, a gRPC batch) spreads over two cores; and the growth of the lists it runs
 * over. */
#ifndef OT_HALVES_H
#define OT_HALVES_H

#include <stddef.h>

struct ot_halves;

/* Starts the helper thread. NULL when it cannot start: ot_halves_run then does it all. */
struct ot_halves *ot_halves_start(void);
/* Joins the thread and frees. Accepts NULL. */
void ot_halves_stop(struct ot_halves *h);
/* fn(v[i], arg) for every i in [0, n), returning the sum of what it returned: from min items
 * on (and with a helper), the helper does v[n/2, n) while the caller does the rest. Returns
 * once both halves are done. One caller at a time; fn must be safe on two threads at once for
 * different items. */
long ot_halves_run(struct ot_halves *h, void *const *v, size_t n, size_t min, long (*fn)(void *item, void *arg),
                   void *arg);

/* Makes room for n + 1 elements of size in *v (of *cap), doubling from 64: the lists a fan-out
 * is run over. 0, or -1 when out of memory (*v as it was). */
int ot_grow(void **v, size_t *cap, size_t n, size_t size);

#endif
