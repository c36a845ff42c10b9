/* ot_outcome: what became of one record, as one list that logs, metrics and answers map from. */
#ifndef OT_OUTCOME_H
#define OT_OUTCOME_H

#include "ot_err.h"

/* A handler's answer for a record it took (and the domain's, for each record of a batch):
 * OT_APPLIED, or why it changed nothing, each above 0; an error is a negative ot_rc. */
enum ot_outcome {
	OT_APPLIED = OT_OK,     /* its change committed */
	OT_DUPLICATE,           /* its event was processed before */
	OT_STALE,               /* for a state the order has passed, or older than the copy held */
	OT_LATE,                /* an answer for an order cancelled meanwhile */
	OT_IGNORED,             /* a type this consumer does not act on */
	OT_PLACED_BEFORE,       /* an order request whose request_id was placed before */
	OT_UNREAD,              /* committed, but not read back to print */
	OT_NOT_HERE,            /* an order this database does not have (a cache replay) */
	OT_NOTHING_TO_RELEASE,  /* a release for an order with nothing reserved */
	OT_FILTERED,            /* outside what was asked for (a replay's time window) */
	OT_OUTCOMES
};

/* The label of ot_records_total{result} for an outcome: applied, duplicate, stale, late or
 * ignored (a few outcomes share one); "unknown" for what is not an outcome. */
const char *ot_outcome_label(int outcome);

#endif
