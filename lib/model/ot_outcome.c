/* ot_outcome: what became of one record, as one list that logs, metrics and answers map from. */
#include "ot_outcome.h"

static const char *const labels[OT_OUTCOMES] = {
	[OT_APPLIED] = "applied",
	[OT_DUPLICATE] = "duplicate",
	[OT_STALE] = "stale",
	[OT_LATE] = "late",
	[OT_IGNORED] = "ignored",
	[OT_PLACED_BEFORE] = "duplicate",
	[OT_UNREAD] = "applied",
	[OT_NOT_HERE] = "ignored",
	[OT_NOTHING_TO_RELEASE] = "ignored",
	[OT_FILTERED] = "ignored",
};

const char *
ot_outcome_label(int outcome)
{
	return outcome >= 0 && outcome < OT_OUTCOMES ? labels[outcome] : "unknown";
}
