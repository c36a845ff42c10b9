/* ot_log: JSON lines on stderr, one write(2) per line so concurrent writers do not interleave. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_log.h"

int ot_log_level = OT_LOG_INFO;
static char log_tool[32] = "ordertrack";
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int
ot_log_parse_level(const char *s)
{
	int i;

	if (!s)
		return -1;
	for (i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return OT_LOG_WARN;
	return -1;
}

void
ot_log_init(const char *tool, const char *level)
{
	int l = ot_log_parse_level(level);

	if (tool)
		snprintf(log_tool, sizeof log_tool, "%s", tool);
	if (l >= 0)
		ot_log_level = l;
}

void
ot_log_write(int level, const char *order_id, const char *trace_id, const char *fmt, ...)
{
	char msg[2048], ts[OT_TS_LEN], *line;
	va_list ap;
	json_t *o;
	size_t n;

	if (level < ot_log_level)
		return;
	if (level < 0 || level > OT_LOG_ERROR)
		level = OT_LOG_ERROR;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	ot_now_rfc3339(ts);
	o = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[level],
	              "tool", log_tool, "msg", msg);
	if (!o)
		return;
	if (order_id && *order_id)
		json_object_set_new(o, "order_id", json_string(order_id));
	if (trace_id && *trace_id)
		json_object_set_new(o, "trace_id", json_string(trace_id));
	line = json_dumps(o, OT_JSON_FLAGS);
	json_decref(o);
	if (!line)
		return;
	n = strlen(line);
	{
		char *l2 = realloc(line, n + 2);
		if (l2) {
			line = l2;
			line[n++] = '\n';
			line[n] = '\0';
		}
	}
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
	free(line);
}
