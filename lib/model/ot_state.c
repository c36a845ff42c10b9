/* ot_state: which transitions the order state machine allows. */
#include <string.h>

#include "ot_state.h"

static const char *const names[OT_ST_COUNT] = {
	"PENDING", "CONFIRMED", "REJECTED", "PREPARING", "IN_TRANSIT", "DELIVERED", "CANCELLED"
};

/* allowed[from][to]; IN_TRANSIT → IN_TRANSIT is a position update. */
static const unsigned char allowed[OT_ST_COUNT][OT_ST_COUNT] = {
	/*               PEN CON REJ PRE INT DEL CAN */
	[OT_ST_PENDING]    = {0, 1, 1, 0, 0, 0, 1},
	[OT_ST_CONFIRMED]  = {0, 0, 0, 1, 0, 0, 1},
	[OT_ST_REJECTED]   = {0, 0, 0, 0, 0, 0, 0},
	[OT_ST_PREPARING]  = {0, 0, 0, 0, 1, 0, 1},
	[OT_ST_IN_TRANSIT] = {0, 0, 0, 0, 1, 1, 0},
	[OT_ST_DELIVERED]  = {0, 0, 0, 0, 0, 0, 0},
	[OT_ST_CANCELLED]  = {0, 0, 0, 0, 0, 0, 0},
};

/* Position along the happy path; a request for a state at or behind the current one on the
 * same path is a late duplicate, not an error. */
static const signed char rank[OT_ST_COUNT] = {
	[OT_ST_PENDING] = 0, [OT_ST_CONFIRMED] = 1, [OT_ST_REJECTED] = 1, [OT_ST_PREPARING] = 2,
	[OT_ST_IN_TRANSIT] = 3, [OT_ST_DELIVERED] = 4, [OT_ST_CANCELLED] = 5,
};

int
ot_state_parse(const char *name)
{
	int i;

	if (!name)
		return -1;
	for (i = 0; i < OT_ST_COUNT; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

const char *
ot_state_name(int st)
{
	return st >= 0 && st < OT_ST_COUNT ? names[st] : "UNKNOWN";
}

int
ot_state_terminal(int st)
{
	return st == OT_ST_REJECTED || st == OT_ST_DELIVERED || st == OT_ST_CANCELLED;
}

enum ot_transition
ot_state_check(int from, int to)
{
	if (from < 0 || from >= OT_ST_COUNT || to < 0 || to >= OT_ST_COUNT)
		return OT_TR_IMPOSSIBLE;
	if (allowed[from][to])
		return OT_TR_APPLY;
	if (from == to)
		return OT_TR_STALE;
	/* The inventory's answer (the release follows it), or a courier's update, for an order
	 * cancelled meanwhile: the cancel won a race nobody can prevent. */
	if (from == OT_ST_CANCELLED && to != OT_ST_PENDING)
		return OT_TR_LATE;
	/* Behind on the main line (CONFIRMED after PREPARING, say): an old event arriving late. */
	if (to != OT_ST_REJECTED && to != OT_ST_CANCELLED && from != OT_ST_REJECTED &&
	    from != OT_ST_CANCELLED && rank[to] < rank[from])
		return OT_TR_STALE;
	return OT_TR_IMPOSSIBLE;
}
