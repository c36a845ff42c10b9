/* ot_log: JSON lines on stderr, one write(2) per line so concurrent writers do not interleave. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ot_time.h"
#include "ot_log.h"
#include "ot_text.h"

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

/* A line being built; what does not fit is cut (the line stays valid JSON: the caller
 * closes it). */
struct line {
	char buf[8192];
	size_t n;
};

static void
put(struct line *l, const char *s, size_t len)
{
	if (len > sizeof l->buf - 64 - l->n) /* room kept for the closing of the line */
		len = sizeof l->buf - 64 - l->n;
	memcpy(l->buf + l->n, s, len);
	l->n += len;
}

/* s as a JSON string: quotes, backslashes and control characters escaped, and bytes that are
 * not UTF-8 (which JSON cannot carry) as \xNN, so the line is written rather than lost. */
static void
put_string(struct line *l, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	char esc[4 * 2048 + 1], u[6] = {'\\', 'u', '0', '0', 0, 0};
	const char *p, *run;

	if (!ot_utf8_valid(s, strlen(s))) {
		ot_utf8_escape(esc, sizeof esc, s);
		s = esc;
	}
	put(l, "\"", 1);
	for (p = run = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		put(l, run, (size_t)(p - run));
		if (c == '"' || c == '\\') {
			put(l, "\\", 1);
			put(l, p, 1);
		} else if (c == '\n') {
			put(l, "\\n", 2);
		} else if (c == '\t') {
			put(l, "\\t", 2);
		} else {
			u[4] = hex[c >> 4];
			u[5] = hex[c & 15];
			put(l, u, 6);
		}
		run = p + 1;
	}
	put(l, run, (size_t)(p - run));
	put(l, "\"", 1);
}

static void
put_field(struct line *l, const char *name, const char *value)
{
	put(l, ",\"", 2);
	put(l, name, strlen(name));
	put(l, "\":", 2);
	put_string(l, value);
}

static int (*_Atomic log_context)(const char **, const char **);

void
ot_log_set_context(int (*fn)(const char **trace_id, const char **span_id))
{
	log_context = fn;
}

void
ot_log_write(int level, const char *order_id, const char *trace_id, const char *fmt, ...)
{
	char msg[2048], ts[OT_TS_LEN];
	const char *tid, *sid;
	struct line l;
	va_list ap;
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
	/* Written by hand, not through jansson: a busy consumer logs thousands of lines a second. */
	l.n = 0;
	put(&l, "{\"ts\":\"", 7);
	put(&l, ts, strlen(ts));
	put(&l, "\"", 1);
	put_field(&l, "level", level_names[level]);
	put_field(&l, "tool", log_tool);
	put_field(&l, "msg", msg);
	if (order_id && *order_id)
		put_field(&l, "order_id", order_id);
	if (trace_id && *trace_id) {
		put_field(&l, "trace_id", trace_id);
	} else if (log_context && log_context(&tid, &sid)) {
		put_field(&l, "trace_id", tid);
		put_field(&l, "span_id", sid);
	}
	memcpy(l.buf + l.n, "}\n", 2); /* put() always leaves room for this */
	l.n += 2;
	if (write(STDERR_FILENO, l.buf, l.n) < 0) {
		/* nowhere left to report it */
	}
}
