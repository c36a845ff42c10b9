/* ot_status: an order's current status as readers see it — the value the cache holds. */
#ifndef OT_STATUS_H
#define OT_STATUS_H

#include <jansson.h>
#include <stddef.h>

#include "ot_event.h"

struct ot_status {
	char order_id[64];
	char status[16];
	long long version;  /* 0: no status */
	int has_pos;
	double lat, lon;
	char eta[40];
	char updated_at[40];
};

/* The status as a JSON object (new reference). */
json_t *ot_status_to_json(const struct ot_status *st);
/* The status an orders.events record carries: ORDER_CREATED (PENDING) or ORDER_STATUS_UPDATED.
 * Returns 1 with st filled, 0 for other types, OT_EINPUT for a malformed one. */
int ot_status_from_event(const struct ot_event *ev, struct ot_status *st, char *errstr, size_t errsz);

#endif
