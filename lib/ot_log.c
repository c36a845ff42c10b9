/* ot_log: JSON lines on stderr, one write(2) per line so concurrent writers do not interleave. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_log.h"
#include "ot_text.h"
#include "ot_trace.h"

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

/* s as a JSON string; bytes that are not UTF-8 (which JSON cannot carry) become \xNN, so the
 * line is written rather than lost. */
static json_t *
text(const char *s, char *buf, size_t bufsz)
{
	if (ot_utf8_valid(s, strlen(s)))
		return json_string(s);
	ot_utf8_escape(buf, bufsz, s);
	return json_string(buf);
}

void
ot_log_write(int level, const char *order_id, const char *trace_id, const char *fmt, ...)
{
	char msg[2048], esc[4 * sizeof msg], ts[OT_TS_LEN], *line;
	const struct ot_span *sp;
	va_list ap;
	json_t *o;
	size_t n;
	int len;

	if (level < ot_log_level)
		return;
	if (level < 0 || level > OT_LOG_ERROR)
		level = OT_LOG_ERROR;
	va_start(ap, fmt);
	len = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (len >= (int)sizeof msg) /* cut: not in the middle of a character */
		msg[ot_utf8_cut(msg, sizeof msg - 1)] = '\0';
	ot_now_rfc3339(ts);
	o = json_pack("{s:s, s:s, s:s, s:o}", "ts", ts, "level", level_names[level],
	              "tool", log_tool, "msg", text(msg, esc, sizeof esc));
	if (!o)
		return;
	if (order_id && *order_id)
		json_object_set_new(o, "order_id", text(order_id, esc, sizeof esc));
	if (trace_id && *trace_id) {
		json_object_set_new(o, "trace_id", text(trace_id, esc, sizeof esc));
	} else if ((sp = ot_span_current())) {
		json_object_set_new(o, "trace_id", json_string(sp->trace_id));
		json_object_set_new(o, "span_id", json_string(sp->id));
	}
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
