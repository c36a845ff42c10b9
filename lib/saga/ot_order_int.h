/* ot_order_int: what placing and reading orders (ot_order.c) and applying events to them
 * (ot_order_apply.c) share: the columns of a status, and the transition counter. */
#ifndef OT_ORDER_INT_H
#define OT_ORDER_INT_H

#include <libpq-fe.h>

#include "ot_status.h"

#define TS_SQL(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define STATUS_COLS "status, version, coalesce(lat::text, ''), coalesce(lon::text, ''), " \
                    "coalesce(eta, ''), " TS_SQL("updated_at") ", coalesce(payment::text, '')"
/* How many columns STATUS_COLS is. */
#define STATUS_NCOLS 7

/* The status in STATUS_COLS starting at column col of row of res, for order_id. */
void order_status_from_cols(struct ot_status *st, const char *order_id, PGresult *res, int row, int col);
/* Counts a committed transition to status to, made by tool (ot_order_transitions_total). */
void order_count_transition(const char *tool, const char *to);

#endif
