/* ot_io_out: records out, to stdout or to a Kafka topic, and read back from it. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_io.h"
#include "ot_io_int.h"
#include "ot_log.h"

struct ot_out {
	FILE *fp;
	rd_kafka_t *rk;
	char topic[128];
	long delivered, failed, queued;
	char lasterr[256];
};

static void
delivered(rd_kafka_t *rk, const rd_kafka_message_t *km, void *opaque)
{
	struct ot_out *o = opaque;

	(void)rk;
	if (km->err) {
		o->failed++;
		snprintf(o->lasterr, sizeof o->lasterr, "%s", rd_kafka_err2str(km->err));
	} else {
		o->delivered++;
	}
}

struct ot_out *
ot_out_open(const char *spec, const struct ot_config *cfg, int *rc, char *errstr, size_t errsz)
{
	struct ot_out *o = calloc(1, sizeof *o);
	rd_kafka_conf_t *conf;
	char e[512];
	int dummy, r;

	if (!rc)
		rc = &dummy;
	*rc = OT_OK;
	if (!o) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	if (!spec || !strcmp(spec, "-")) {
		o->fp = stdout;
		return o;
	}
	if (!is_kafka_spec(spec)) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "output \"%s\": expected - or kafka[:TOPIC]", spec);
		free(o);
		return NULL;
	}
	snprintf(o->topic, sizeof o->topic, "%s", spec[5] ? spec + 6 : "");
	if (!(conf = io_base_conf(cfg, errstr, errsz))) {
		*rc = OT_ECONFIG;
		free(o);
		return NULL;
	}
	/* Idempotence keeps per-key order across retries; acks=all makes "acknowledged" mean durable. */
	rd_kafka_conf_set(conf, "enable.idempotence", "true", e, sizeof e);
	rd_kafka_conf_set(conf, "acks", "all", e, sizeof e);
	rd_kafka_conf_set(conf, "linger.ms", "5", e, sizeof e);
	rd_kafka_conf_set(conf, "message.timeout.ms", "30000", e, sizeof e);
	/* Memory stays flat: the queue holds at most one relay batch (flushed before the next), so
	 * 4 MB bounds it where librdkafka's default is 1 GB; a full queue makes ot_out_send wait
	 * for acknowledgements, never fail (-X raises it). */
	rd_kafka_conf_set(conf, "queue.buffering.max.kbytes", "4096", e, sizeof e);
	rd_kafka_conf_set_dr_msg_cb(conf, delivered);
	rd_kafka_conf_set_opaque(conf, o);
	if ((r = io_apply_props(conf, cfg, errstr, errsz))) {
		rd_kafka_conf_destroy(conf);
		free(o);
		*rc = r;
		return NULL;
	}
	o->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
	if (!o->rk) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
		free(o);
		return NULL;
	}
	if ((r = io_check_reachable(o->rk, cfg->brokers, errstr, errsz))) {
		*rc = r;
		ot_out_free(o);
		return NULL;
	}
	return o;
}

int
ot_out_ping(struct ot_out *o, int timeout_ms, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err;

	if (!o->rk)
		return 0;
	if ((err = rd_kafka_metadata(o->rk, 0, NULL, &md, timeout_ms)))
		return ot_err(OT_ESERVICE, errstr, errsz, "Kafka: %s", rd_kafka_err2str(err));
	rd_kafka_metadata_destroy(md);
	return 0;
}

int
ot_out_is_kafka(const struct ot_out *o)
{
	return o && o->rk;
}

const char *
ot_out_topic(const struct ot_out *o)
{
	return o && o->rk && o->topic[0] ? o->topic : NULL;
}

int
ot_out_send(struct ot_out *o, const char *topic, const char *key, const char *value, size_t len,
            const struct ot_header *hdrs, size_t nhdrs, char *errstr, size_t errsz)
{
	rd_kafka_headers_t *h;
	rd_kafka_resp_err_t err;
	size_t i;

	if (o->fp) {
		if (fwrite(value, 1, len, o->fp) != len || putc('\n', o->fp) == EOF)
			return ot_err(OT_EOUTPUT, errstr, errsz, "writing output failed");
		return 0;
	}
	if (!topic || !*topic)
		topic = o->topic;
	if (!*topic)
		return ot_err(OT_ECONFIG, errstr, errsz, "kafka output: no topic given (use kafka:TOPIC)");
	for (;;) {
		h = rd_kafka_headers_new(nhdrs ? nhdrs : 1);
		for (i = 0; i < nhdrs; i++)
			if (hdrs[i].value)
				rd_kafka_header_add(h, hdrs[i].name, -1, hdrs[i].value, -1);
		err = rd_kafka_producev(o->rk, RD_KAFKA_V_TOPIC(topic),
		                        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
		                        RD_KAFKA_V_VALUE((void *)value, len),
		                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		                        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
		if (!err)
			break;
		rd_kafka_headers_destroy(h);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return ot_err(OT_ESERVICE, errstr, errsz, "kafka produce to %s: %s", topic,
			              rd_kafka_err2str(err));
		rd_kafka_poll(o->rk, 100); /* the queue drains as deliveries are acknowledged */
	}
	o->queued++;
	rd_kafka_poll(o->rk, 0);
	return 0;
}

int
ot_out_flush(struct ot_out *o, int timeout_ms, char *errstr, size_t errsz)
{
	long failed;

	if (o->fp) {
		if (fflush(o->fp) || ferror(o->fp))
			return ot_err(OT_EOUTPUT, errstr, errsz, "writing output failed");
		return 0;
	}
	rd_kafka_flush(o->rk, timeout_ms);
	if (rd_kafka_outq_len(o->rk) > 0)
		return ot_err(OT_ESERVICE, errstr, errsz, "kafka: %d records not acknowledged within %d ms",
		              rd_kafka_outq_len(o->rk), timeout_ms);
	failed = o->failed;
	o->failed = 0;
	if (failed)
		return ot_err(OT_ESERVICE, errstr, errsz, "kafka: %ld records failed: %s", failed, o->lasterr);
	return 0;
}

void
ot_out_free(struct ot_out *o)
{
	if (!o)
		return;
	if (o->fp)
		fflush(o->fp);
	if (o->rk) {
		rd_kafka_flush(o->rk, 10000);
		if (rd_kafka_outq_len(o->rk) > 0)
			OT_WARN(NULL, "kafka: %d records still unacknowledged at exit", rd_kafka_outq_len(o->rk));
		rd_kafka_destroy(o->rk);
	}
	free(o);
}

/* Producer settings copied into a consumer draw a warning per property: keep only errors. */
static void
tail_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (level <= 3)
		io_kafka_log(rk, level, fac, buf);
}

int
ot_out_recent_ids(struct ot_out *o, const char *topic, long last,
                  void (*each)(const char *id, size_t len, void *arg), void *arg,
                  char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *parts = NULL;
	rd_kafka_topic_t *rkt = NULL;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk = NULL;
	int64_t *high = NULL, lo, hi;
	int i, np = 0, left = 0, rc = 0;
	long long deadline;
	char e[512];

	if (!o->rk)
		return 0;
	/* The producer's own settings: the same brokers, and the same -X security properties. */
	conf = rd_kafka_conf_dup(rd_kafka_conf(o->rk));
	rd_kafka_conf_set_log_cb(conf, tail_log);
	if (rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof e) ||
	    rd_kafka_conf_set(conf, "enable.partition.eof", "true", e, sizeof e) ||
	    rd_kafka_conf_set(conf, "group.id", "ordertrack-tail", e, sizeof e) ||
	    !(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e))) {
		if (!rk)
			rd_kafka_conf_destroy(conf);
		return ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading back %s: %s", topic, e);
	}
	if (!(rkt = rd_kafka_topic_new(rk, topic, NULL)) ||
	    rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: no metadata for %s", topic);
		goto out;
	}
	if (md->topics[0].err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
	    md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
		goto out; /* nothing was ever published there */
	np = md->topics[0].partition_cnt;
	if (!(high = calloc((size_t)np + 1, sizeof *high)) ||
	    !(parts = rd_kafka_topic_partition_list_new(np + 1))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < np; i++) {
		int32_t p = md->topics[0].partitions[i].id;

		if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000)) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: no offsets for %s [%d]", topic, p);
			goto out;
		}
		high[i] = hi;
		if (hi <= lo)
			continue;
		rd_kafka_topic_partition_list_add(parts, topic, p)->offset = hi - last > lo ? hi - last : lo;
		left++;
	}
	if (!left)
		goto out;
	if (rd_kafka_assign(rk, parts)) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: cannot read %s", topic);
		goto out;
	}
	deadline = ot_now_ms() + 30000;
	while (left > 0) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
		rd_kafka_headers_t *h;
		const void *v;
		size_t vlen;
		int at_end = 0;

		if (ot_now_ms() > deadline) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading back %s took over 30 s", topic);
			goto out;
		}
		if (!m)
			continue;
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			at_end = 1;
		} else if (m->err) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading back %s: %s", topic,
			            rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			goto out;
		} else {
			if (!rd_kafka_message_headers(m, &h) &&
			    !rd_kafka_header_get_last(h, "ot-id", &v, &vlen) && v)
				each(v, vlen, arg);
			for (i = 0; i < np; i++)
				if (md->topics[0].partitions[i].id == m->partition)
					at_end = m->offset + 1 >= high[i];
		}
		/* Each partition ends once: at its last record, or at EOF (when the last offsets are
		 * transaction markers); mark it so the other does not count it again. */
		for (i = 0; at_end && i < np; i++)
			if (md->topics[0].partitions[i].id == m->partition && high[i] >= 0) {
				high[i] = -1;
				left--;
			}
		rd_kafka_message_destroy(m);
	}
out:
	if (rk)
		rd_kafka_consumer_close(rk);
	if (parts)
		rd_kafka_topic_partition_list_destroy(parts);
	free(high);
	if (md)
		rd_kafka_metadata_destroy(md);
	if (rkt)
		rd_kafka_topic_destroy(rkt);
	if (rk)
		rd_kafka_destroy(rk);
	return rc;
}
