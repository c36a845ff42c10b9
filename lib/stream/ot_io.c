/* ot_io: one interface over stdio and Kafka, so each tool runs the same in a pipe or a cluster;
 * here records in (ot_io_out.c: records out). */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_io.h"
#include "ot_io_int.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_signal.h"

static struct ot_in *
in_open(const char *spec, const struct ot_config *cfg, int no_dlq, int *rc, char *errstr, size_t errsz)
{
	struct ot_in *in = calloc(1, sizeof *in);
	int dummy;

	if (!rc)
		rc = &dummy;
	*rc = OT_OK;
	if (!in) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	in->no_dlq = no_dlq;
	in->count = cfg->count;
	snprintf(in->tool, sizeof in->tool, "%s", cfg->tool ? cfg->tool : "ordertrack");
	in->attempts = cfg->attempts > 0 ? cfg->attempts : 8;
	in->batch = cfg->batch > 0 ? cfg->batch : 1;
	if (!spec || !strcmp(spec, "-")) {
		in->fp = stdin;
		return in;
	}
	if (!is_kafka_spec(spec)) {
		if (!(in->fp = fopen(spec, "r"))) {
			*rc = ot_err(OT_EINPUT, errstr, errsz, "cannot open %s: %s", spec, strerror(errno));
			free(in);
			return NULL;
		}
		in->own_fp = 1;
		return in;
	}
	if (!io_open_kafka_in(in, spec[5] ? spec + 6 : "", cfg, rc, errstr, errsz)) {
		ot_in_free(in);
		return NULL;
	}
	return in;
}

struct ot_in *
ot_in_open(const char *spec, const struct ot_config *cfg, int *rc, char *errstr, size_t errsz)
{
	return in_open(spec, cfg, 0, rc, errstr, errsz);
}

struct ot_in *
ot_in_open_no_dlq(const char *spec, const struct ot_config *cfg, int *rc, char *errstr, size_t errsz)
{
	return in_open(spec, cfg, 1, rc, errstr, errsz);
}

int
ot_in_stop_at_end(struct ot_in *in, char *errstr, size_t errsz)
{
	rd_kafka_topic_partition_list_t *subs = NULL;
	const struct rd_kafka_metadata *md;
	const struct rd_kafka_metadata_topic *t;
	rd_kafka_resp_err_t err;
	int64_t lo, hi;
	int i, j, rc = 0;

	if (!in->rk)
		return 0;
	if ((err = rd_kafka_subscription(in->rk, &subs)))
		return ot_err(OT_ESERVICE, errstr, errsz, "kafka: %s", rd_kafka_err2str(err));
	if (!(md = io_all_metadata(in->rk, 10000, errstr, errsz))) {
		rd_kafka_topic_partition_list_destroy(subs);
		return OT_ESERVICE;
	}
	for (i = 0; i < subs->cnt && !rc; i++) {
		if (!(t = io_find_topic(md, subs->elems[i].topic)))
			continue; /* not there yet: nothing in it to read */
		for (j = 0; j < t->partition_cnt && !rc; j++) {
			if ((err = rd_kafka_query_watermark_offsets(in->rk, t->topic, t->partitions[j].id, &lo, &hi,
			                                            10000))) {
				rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: the end of %s [%d]: %s", t->topic,
				            (int)t->partitions[j].id, rd_kafka_err2str(err));
			} else if (in->nends < MAX_PARTS) {
				snprintf(in->ends[in->nends].topic, sizeof in->ends[0].topic, "%s", t->topic);
				in->ends[in->nends].partition = t->partitions[j].id;
				in->ends[in->nends++].end = hi;
			}
		}
	}
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_partition_list_destroy(subs);
	return rc;
}

const char *
ot_in_tool(const struct ot_in *in)
{
	return in->tool;
}

int
ot_in_ping(struct ot_in *in, int timeout_ms, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err;

	if (!in->rk)
		return 0;
	if ((err = rd_kafka_metadata(in->rk, 0, NULL, &md, timeout_ms)))
		return ot_err(OT_ESERVICE, errstr, errsz, "Kafka: %s", rd_kafka_err2str(err));
	rd_kafka_metadata_destroy(md);
	return 0;
}

int
ot_in_is_kafka(const struct ot_in *in)
{
	return in && in->rk;
}

int
ot_in_attempts(const struct ot_in *in)
{
	return in->attempts;
}

int
ot_in_batch(const struct ot_in *in)
{
	return in->batch;
}

int
ot_in_dead_letter(struct ot_in *in, const struct ot_msg *m, const char *error, int attempts,
                  char *errstr, size_t errsz)
{
	struct ot_header h[64];
	rd_kafka_headers_t *orig = NULL;
	char topic[300], part[16], off[24], att[16], ts[OT_TS_LEN], *key = NULL;
	const char *name;
	const void *val;
	size_t i, n = 0, len;
	char *copies[64];
	size_t ncopies = 0;
	int rc;

	if (!in->rk || !in->dlq || !m->raw)
		return ot_err(OT_EINTERNAL, errstr, errsz, "dead letters need a Kafka input");
	/* The original headers first, so the record can be replayed exactly as it came. */
	if (!rd_kafka_message_headers(m->raw, &orig))
		for (i = 0; n < 56 && !rd_kafka_header_get_all(orig, i, &name, &val, &len); i++) {
			if (!strncmp(name, "ot-dlq-", 7))
				continue; /* a replayed record dead-lettered again gets fresh ones */
			copies[ncopies] = val ? strndup(val, len) : NULL;
			h[n].name = name;
			h[n++].value = copies[ncopies++];
		}
	snprintf(topic, sizeof topic, "%s.dlq", m->topic);
	snprintf(part, sizeof part, "%d", (int)m->partition);
	snprintf(off, sizeof off, "%lld", (long long)m->offset);
	snprintf(att, sizeof att, "%d", attempts);
	ot_now_rfc3339(ts);
	h[n++] = (struct ot_header){"ot-dlq-topic", m->topic};
	h[n++] = (struct ot_header){"ot-dlq-partition", part};
	h[n++] = (struct ot_header){"ot-dlq-offset", off};
	h[n++] = (struct ot_header){"ot-dlq-group", in->group};
	h[n++] = (struct ot_header){"ot-dlq-error", error};
	h[n++] = (struct ot_header){"ot-dlq-attempts", att};
	h[n++] = (struct ot_header){"ot-dlq-ts", ts};
	if (m->key)
		key = strndup(m->key, m->key_len);
	rc = ot_out_send(in->dlq, topic, key, m->value, m->len, h, n, errstr, errsz);
	if (!rc)
		rc = ot_out_flush(in->dlq, 30000, errstr, errsz);
	free(key);
	for (i = 0; i < ncopies; i++)
		free(copies[i]);
	return rc;
}

json_t *
ot_in_describe(const struct ot_in *in, const struct ot_msg *m)
{
	rd_kafka_headers_t *hdrs = NULL;
	json_t *o, *h, *v;
	const char *name;
	const void *val;
	size_t i, len;

	(void)in; /* the record carries what is needed */
	o = json_pack("{s:s, s:i, s:I}", "topic", m->topic, "partition", (int)m->partition,
	              "offset", (json_int_t)m->offset);
	if (m->raw) {
		rd_kafka_timestamp_type_t tt;
		int64_t ts = rd_kafka_message_timestamp(m->raw, &tt);
		if (ts >= 0)
			json_object_set_new(o, "timestamp", json_integer(ts));
	}
	if (m->key)
		json_object_set_new(o, "key", json_stringn(m->key, m->key_len));
	if (m->raw && !rd_kafka_message_headers(m->raw, &hdrs)) {
		h = json_object();
		for (i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &len); i++)
			json_object_set_new(h, name, val ? json_stringn(val, len) : json_null());
		json_object_set_new(o, "headers", h);
	}
	v = json_loadb(m->value, m->len, 0, NULL);
	json_object_set_new(o, "value", v ? v : json_stringn(m->value, m->len));
	return o;
}

/* Whether a line (or the end) can be read without waiting: stdio holds buffered bytes, or
 * the descriptor is readable. For a caller that takes only what is there (ot_run's batches),
 * so a slow writer upstream never holds back the records already read. */
static int
line_ready(struct ot_in *in)
{
	struct pollfd pfd = {.fd = fileno(in->fp), .events = POLLIN};

	if (in->fp->_IO_read_ptr < in->fp->_IO_read_end || feof(in->fp))
		return 1;
	return poll(&pfd, 1, 0) > 0;
}

static int
next_line(struct ot_in *in, struct ot_msg *m, char *errstr, size_t errsz)
{
	ssize_t n;

	for (;;) {
		if (ot_stop)
			return -1;
		n = getline(&in->line, &in->cap, in->fp);
		if (n < 0) {
			if (ferror(in->fp))
				return ot_err(-2, errstr, errsz, "reading input: read error at line %ld", in->lineno + 1);
			return -1;
		}
		in->lineno++;
		while (n > 0 && (in->line[n - 1] == '\n' || in->line[n - 1] == '\r'))
			in->line[--n] = '\0';
		if (n == 0)
			continue; /* blank lines separate nothing; skip them */
		memset(m, 0, sizeof *m);
		m->value = in->line;
		m->len = (size_t)n;
		m->topic = "-";
		m->partition = -1;
		m->offset = in->lineno;
		snprintf(m->where, sizeof m->where, "line %ld", in->lineno);
		return 1;
	}
}

/* The record's last traceparent header, copied NUL-terminated into in (a header value is not);
 * NULL when it has none that could be one. */
static const char *
header_traceparent(struct ot_in *in, rd_kafka_message_t *km)
{
	rd_kafka_headers_t *h;
	const void *v;
	size_t len;

	if (rd_kafka_message_headers(km, &h) || rd_kafka_header_get_last(h, "traceparent", &v, &len) ||
	    !v || len >= sizeof in->traceparent)
		return NULL;
	memcpy(in->traceparent, v, len);
	in->traceparent[len] = '\0';
	return in->traceparent;
}

int
ot_in_next(struct ot_in *in, struct ot_msg *m, int timeout_ms, char *errstr, size_t errsz)
{
	rd_kafka_message_t *km;
	struct part *p;

	if (in->count && in->seen >= in->count)
		return -1;
	if (in->fp) {
		int r;
		if (timeout_ms == 0 && !line_ready(in))
			return 0;
		r = next_line(in, m, errstr, errsz);
		if (r == 1)
			in->seen++;
		return r;
	}
	if (in->cur) {
		rd_kafka_message_destroy(in->cur);
		in->cur = NULL;
	}
	if (ot_stop)
		return -1;
	if (in->exit_at_end && io_all_eof(in))
		return -1;
	km = rd_kafka_consumer_poll(in->rk, timeout_ms);
	if (!km)
		return 0;
	if (km->err) {
		int r = 0;
		if (km->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if ((p = io_find_part(in, rd_kafka_topic_name(km->rkt), km->partition)))
				p->eof = 1;
			r = in->exit_at_end && io_all_eof(in) ? -1 : 0;
		} else if (km->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
		           km->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
		           km->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
			OT_WARN(NULL, "kafka: %s", rd_kafka_message_errstr(km));
		} else if (km->err == RD_KAFKA_RESP_ERR__FATAL) {
			ot_err(-2, errstr, errsz, "kafka: %s", rd_kafka_message_errstr(km));
			r = -2;
		} else {
			OT_WARN(NULL, "kafka consumer: %s", rd_kafka_message_errstr(km));
		}
		rd_kafka_message_destroy(km);
		return r;
	}
	p = io_find_part(in, rd_kafka_topic_name(km->rkt), km->partition);
	if (p && p->end >= 0 && km->offset >= p->end) {
		/* Written after ot_in_stop_at_end looked: not for this run. */
		p->eof = 1;
		rd_kafka_message_destroy(km);
		return in->exit_at_end && io_all_eof(in) ? -1 : 0;
	}
	in->cur = km;
	if (p)
		p->eof = p->end >= 0 && km->offset + 1 >= p->end;
	memset(m, 0, sizeof *m);
	m->value = km->payload ? km->payload : "";
	m->len = km->len;
	m->key = km->key;
	m->key_len = km->key_len;
	m->topic = rd_kafka_topic_name(km->rkt);
	m->partition = km->partition;
	m->offset = km->offset;
	m->ts_ms = rd_kafka_message_timestamp(km, NULL);
	snprintf(m->where, sizeof m->where, "%s [%d] at offset %lld", m->topic, (int)m->partition,
	         (long long)m->offset);
	m->traceparent = header_traceparent(in, km);
	m->raw = km;
	in->seen++;
	return 1;
}

void
ot_in_hold(struct ot_in *in, struct ot_msg *m)
{
	if (m->raw && m->raw == in->cur)
		in->cur = NULL; /* now m's to free */
}

void
ot_in_release(struct ot_in *in, struct ot_msg *m)
{
	if (m->raw && m->raw != in->cur)
		rd_kafka_message_destroy(m->raw);
	m->raw = NULL;
}

void
ot_in_done(struct ot_in *in, const struct ot_msg *m)
{
	rd_kafka_topic_partition_list_t *l;

	if (!in->rk || in->keep_no_place)
		return;
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, m->topic, m->partition)->offset = m->offset + 1;
	rd_kafka_offsets_store(in->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
}

void
ot_in_keep_no_place(struct ot_in *in)
{
	in->keep_no_place = 1;
}

void
ot_in_free(struct ot_in *in)
{
	if (!in)
		return;
	if (in->cur)
		rd_kafka_message_destroy(in->cur);
	if (in->rk) {
		rd_kafka_resp_err_t err = rd_kafka_commit(in->rk, NULL, 0);
		if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
			OT_WARN(NULL, "kafka: final commit: %s", rd_kafka_err2str(err));
		rd_kafka_consumer_close(in->rk);
		rd_kafka_destroy(in->rk);
	}
	ot_out_free(in->dlq);
	if (in->own_fp)
		fclose(in->fp);
	free(in->line);
	free(in);
}
