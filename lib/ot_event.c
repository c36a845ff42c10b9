/* ot_event: the envelope every tool reads and writes. */
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_trace.h"

static void
random_bytes(unsigned char *buf, size_t n)
{
	static int fd = -1;
	size_t got = 0;
	ssize_t r;

	if (fd < 0)
		fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	while (fd >= 0 && got < n && (r = read(fd, buf + got, n - got)) > 0)
		got += (size_t)r;
	for (; got < n; got++) /* /dev/urandom unavailable: still unique enough per process */
		buf[got] = (unsigned char)(rand() ^ (int)clock() ^ getpid());
}

void
ot_hex(char *out, const unsigned char *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

void
ot_sha256_hex(const void *p, size_t n, char out[65])
{
	struct sha256_ctx ctx;
	uint8_t d[SHA256_DIGEST_SIZE];

	sha256_init(&ctx);
	sha256_update(&ctx, n, p);
	sha256_digest(&ctx, sizeof d, d);
	ot_hex(out, d, sizeof d);
}

void
ot_uuid(char out[OT_UUID_LEN])
{
	unsigned char b[16];
	char h[33];

	random_bytes(b, sizeof b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	ot_hex(h, b, 16);
	snprintf(out, OT_UUID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

static int
is_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
			return 0;
	return 1;
}

int
ot_uuid_valid(const char *s)
{
	return s && strlen(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' &&
	       is_hex(s, 8) && is_hex(s + 9, 4) && is_hex(s + 14, 4) && is_hex(s + 19, 4) &&
	       is_hex(s + 24, 12);
}

int
ot_id_canon(char *id)
{
	char *p;

	if (!ot_uuid_valid(id))
		return -1;
	for (p = id; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	return 0;
}

void
ot_now_rfc3339(char out[OT_TS_LEN])
{
	struct timespec ts;
	struct tm tm;
	char buf[24];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, OT_TS_LEN, "%.19s.%03dZ", buf, (int)(ts.tv_nsec / 1000000));
}

int
ot_rfc3339_valid(const char *s)
{
	int y, mo, d, h, mi, sec, n = 0;
	const char *p;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
		return 0;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return 0;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return 0;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if ((*p == 'Z' || *p == 'z') && !p[1])
		return 1;
	return (*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':';
}

int
ot_traceparent_valid(const char *s)
{
	/* W3C Trace Context: version ff and an all-zero trace id or parent id are invalid. */
	return s && strlen(s) == 55 && is_hex(s, 2) && strncasecmp(s, "ff", 2) && s[2] == '-' &&
	       is_hex(s + 3, 32) && s[35] == '-' && is_hex(s + 36, 16) && s[52] == '-' && is_hex(s + 53, 2) &&
	       strncmp(s + 3, "00000000000000000000000000000000", 32) && strncmp(s + 36, "0000000000000000", 16);
}

void
ot_traceparent_new(char out[OT_TRACEPARENT_LEN], const char *parent)
{
	unsigned char b[24];
	char h[49];

	random_bytes(b, sizeof b);
	ot_hex(h, b, sizeof b);
	if (parent && ot_traceparent_valid(parent))
		snprintf(out, OT_TRACEPARENT_LEN, "00-%.32s-%.16s-01", parent + 3, h);
	else
		snprintf(out, OT_TRACEPARENT_LEN, "00-%.32s-%.16s-01", h, h + 32);
}

static int
copy_str(char *dst, size_t dstsz, json_t *obj, const char *field, int required,
         char *errstr, size_t errsz)
{
	json_t *v = json_object_get(obj, field);

	dst[0] = '\0';
	if (!v || json_is_null(v)) {
		if (required)
			return ot_err(-1, errstr, errsz, "field \"%s\" is missing", field);
		return 0;
	}
	if (!json_is_string(v))
		return ot_err(-1, errstr, errsz, "field \"%s\" must be a string", field);
	if (json_string_length(v) == 0 && required)
		return ot_err(-1, errstr, errsz, "field \"%s\" is empty", field);
	if (json_string_length(v) >= dstsz)
		return ot_err(-1, errstr, errsz, "field \"%s\" is longer than %zu bytes", field, dstsz - 1);
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

int
ot_event_from_json(struct ot_event *ev, json_t *obj, char *errstr, size_t errsz)
{
	json_t *v;

	memset(ev, 0, sizeof *ev);
	if (!json_is_object(obj))
		return ot_err(-1, errstr, errsz, "an event must be a JSON object");
	if (copy_str(ev->id, sizeof ev->id, obj, "id", 1, errstr, errsz) ||
	    copy_str(ev->type, sizeof ev->type, obj, "type", 1, errstr, errsz) ||
	    copy_str(ev->order_id, sizeof ev->order_id, obj, "order_id", 1, errstr, errsz) ||
	    copy_str(ev->ts, sizeof ev->ts, obj, "ts", 1, errstr, errsz) ||
	    copy_str(ev->source, sizeof ev->source, obj, "source", 0, errstr, errsz))
		return -1;
	/* Tracing is never a reason to refuse a record: a traceparent that is not one (not a
	 * string, too long, malformed) is dropped, as a header's is, and the record starts a new
	 * trace. */
	if (copy_str(ev->traceparent, sizeof ev->traceparent, obj, "traceparent", 0, NULL, 0) ||
	    !ot_traceparent_valid(ev->traceparent))
		ev->traceparent[0] = '\0';
	if (!ot_uuid_valid(ev->id))
		return ot_err(-1, errstr, errsz, "field \"id\" is not a UUID: \"%s\"", ev->id);
	/* An upper-case id would name another cache entry than the order's. */
	if (ot_id_canon(ev->order_id))
		return ot_err(-1, errstr, errsz, "field \"order_id\" is not a UUID");
	if (!ot_rfc3339_valid(ev->ts))
		return ot_err(-1, errstr, errsz, "field \"ts\" is not an RFC 3339 timestamp: \"%s\"", ev->ts);
	v = json_object_get(obj, "version");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return ot_err(-1, errstr, errsz, "field \"version\" must be an integer >= 0");
		ev->version = json_integer_value(v);
	}
	v = json_object_get(obj, "data");
	if (v && !json_is_null(v) && !json_is_object(v))
		return ot_err(-1, errstr, errsz, "field \"data\" must be an object");
	ev->data = v && json_is_object(v) ? json_incref(v) : json_object();
	return 0;
}

int
ot_event_parse(struct ot_event *ev, const char *buf, size_t len, char *errstr, size_t errsz)
{
	json_error_t jerr;
	json_t *obj;
	int rc;

	memset(ev, 0, sizeof *ev);
	obj = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj)
		return ot_err(-1, errstr, errsz, "not JSON: %s at column %d", jerr.text, jerr.column);
	rc = ot_event_from_json(ev, obj, errstr, errsz);
	json_decref(obj);
	if (rc)
		ot_event_clear(ev);
	return rc;
}

void
ot_event_init(struct ot_event *ev, const char *type, const char *order_id, long long version,
              const char *source, json_t *data, const char *parent_tp)
{
	const struct ot_span *cur;

	memset(ev, 0, sizeof *ev);
	ot_uuid(ev->id);
	snprintf(ev->type, sizeof ev->type, "%s", type);
	snprintf(ev->order_id, sizeof ev->order_id, "%s", order_id);
	ot_id_canon(ev->order_id);
	ev->version = version;
	ot_now_rfc3339(ev->ts);
	snprintf(ev->source, sizeof ev->source, "%s", source ? source : "");
	/* Emitted inside a span (a request, a record's handling): the event is its child. */
	if ((cur = ot_span_current()))
		ot_span_traceparent(cur, ev->traceparent);
	else if (parent_tp && ot_traceparent_valid(parent_tp))
		snprintf(ev->traceparent, sizeof ev->traceparent, "%s", parent_tp);
	else
		ot_traceparent_new(ev->traceparent, NULL);
	ev->data = data ? data : json_object();
}

void
ot_event_clear(struct ot_event *ev)
{
	if (!ev)
		return;
	json_decref(ev->data);
	ev->data = NULL;
}

json_t *
ot_event_to_json(const struct ot_event *ev)
{
	json_t *o = json_object();

	json_object_set_new(o, "id", json_string(ev->id));
	json_object_set_new(o, "type", json_string(ev->type));
	json_object_set_new(o, "order_id", json_string(ev->order_id));
	json_object_set_new(o, "version", json_integer(ev->version));
	json_object_set_new(o, "ts", json_string(ev->ts));
	if (ev->source[0])
		json_object_set_new(o, "source", json_string(ev->source));
	if (ev->traceparent[0])
		json_object_set_new(o, "traceparent", json_string(ev->traceparent));
	json_object_set_new(o, "data", ev->data ? json_incref(ev->data) : json_object());
	return o;
}

char *
ot_event_dump(const struct ot_event *ev)
{
	json_t *o = ot_event_to_json(ev);
	char *s = json_dumps(o, OT_JSON_FLAGS);

	json_decref(o);
	return s;
}

long long
ot_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

long long
ot_now_ms(void)
{
	return ot_now_us() / 1000;
}
