/* ot_state: the order state machine. */
#ifndef OT_STATE_H
#define OT_STATE_H

enum ot_state {
	OT_ST_PENDING, OT_ST_CONFIRMED, OT_ST_REJECTED, OT_ST_PREPARING,
	OT_ST_IN_TRANSIT, OT_ST_DELIVERED, OT_ST_CANCELLED, OT_ST_COUNT
};

/* What to do with a transition from the current state to a requested one. */
enum ot_transition {
	OT_TR_APPLY,      /* allowed: apply it */
	OT_TR_STALE,      /* already there or past it: a late duplicate, skip */
	OT_TR_LATE,       /* the order was cancelled meanwhile: an answer or a courier update that
	                   * lost the race, expected, skip */
	OT_TR_IMPOSSIBLE  /* never allowed from here by the protocol: refuse */
};

/* Returns the state for a name such as "IN_TRANSIT", or -1. */
int ot_state_parse(const char *name);
/* Returns the name, or "UNKNOWN" for an out-of-range value. */
const char *ot_state_name(int st);
int ot_state_terminal(int st);
/* Classifies from → to. IN_TRANSIT → IN_TRANSIT applies: it is a position update. */
enum ot_transition ot_state_check(int from, int to);

#endif
