/* ot_log: one compact JSON object per line on stderr. */
#ifndef OT_LOG_H
#define OT_LOG_H

enum ot_log_level { OT_LOG_DEBUG, OT_LOG_INFO, OT_LOG_WARN, OT_LOG_ERROR };

/* Sets the tool name and level (NULL or unknown keeps "info"). Call once, first. */
void ot_log_init(const char *tool, const char *level);
/* Returns the level for "debug".."error", or -1. */
int ot_log_parse_level(const char *s);
extern int ot_log_level;

/* Where a line written inside a span gets its ids: fn sets them and returns 1 when the calling
 * thread is in a span. ot_trace sets it (the log knows nothing of spans). */
void ot_log_set_context(int (*fn)(const char **trace_id, const char **span_id));

/* Writes {"ts","level","tool","msg"[,"order_id"][,"trace_id","span_id"]}. order_id, trace_id may
 * be NULL; a NULL trace_id takes the ids of the thread's current span, if any.
 * Use the OT_LOG macro: it checks the level before any formatting work. */
void ot_log_write(int level, const char *order_id, const char *trace_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define OT_LOG(lvl, oid, ...) \
	do { if ((lvl) >= ot_log_level) ot_log_write((lvl), (oid), NULL, __VA_ARGS__); } while (0)
#define OT_DEBUG(oid, ...) OT_LOG(OT_LOG_DEBUG, oid, __VA_ARGS__)
#define OT_INFO(oid, ...)  OT_LOG(OT_LOG_INFO, oid, __VA_ARGS__)
#define OT_WARN(oid, ...)  OT_LOG(OT_LOG_WARN, oid, __VA_ARGS__)
#define OT_ERROR(oid, ...) OT_LOG(OT_LOG_ERROR, oid, __VA_ARGS__)

#endif
