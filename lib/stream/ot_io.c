/* ot_io: one interface over stdio and Kafka, so each tool runs the same in a pipe or a cluster. */
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
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_signal.h"

#define KAFKA_PREFIX "kafka"
#define MAX_PARTS 256

/* end: where ot_in_stop_at_end stops this partition (-1: at its end whenever that is). */
struct part { char topic[128]; int32_t partition; int eof; int64_t end; };

struct ot_in {
	/* stdin */
	FILE *fp;
	int own_fp;           /* a file we opened, closed by ot_in_free */
	char *line;
	size_t cap;
	long lineno;
	/* kafka */
	rd_kafka_t *rk;
	rd_kafka_message_t *cur;
	struct ot_offset start; /* -o, for partitions the group has no offset on */
	int exit_at_end;
	int keep_no_place;    /* ot_in_keep_no_place: offsets are never stored */
	struct part parts[MAX_PARTS];
	int nparts;
	struct part ends[MAX_PARTS]; /* ot_in_stop_at_end's high watermarks, by topic and partition */
	int nends;
	struct ot_out *dlq;   /* dead letters, opened with the consumer */
	int no_dlq;           /* ot_in_open_no_dlq: it sends none, so needs no "<topic>.dlq" */
	char group[128];
	char traceparent[64]; /* the current record's header, for ot_msg */
	char tool[32];        /* the lag gauges' tool label */
	/* both */
	long count, seen;
	int attempts;
	int batch;            /* records a consumer may apply in one transaction */
};

struct ot_out {
	FILE *fp;
	rd_kafka_t *rk;
	char topic[128];
	long delivered, failed, queued;
	char lasterr[256];
};

static void
kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	OT_LOG(level <= 3 ? OT_LOG_ERROR : level <= 4 ? OT_LOG_WARN : level <= 6 ? OT_LOG_INFO
	       : OT_LOG_DEBUG, NULL, "kafka %s: %s", fac, buf);
}

static void
kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	(void)rk; (void)opaque;
	/* Transient broker errors are retried by librdkafka; say so once at warn, not as fatal. */
	OT_WARN(NULL, "kafka: %s: %s", rd_kafka_err2name(err), reason);
}

static rd_kafka_conf_t *
base_conf(const struct ot_config *cfg, char *errstr, size_t errsz)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[256];

	if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->brokers, e, sizeof e) ||
	    rd_kafka_conf_set(conf, "client.id", cfg->tool ? cfg->tool : "ordertrack", e, sizeof e))
		goto bad;
	rd_kafka_conf_set_log_cb(conf, kafka_log);
	rd_kafka_conf_set_error_cb(conf, kafka_error);
	return conf;
bad:
	ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
	rd_kafka_conf_destroy(conf);
	return NULL;
}

/* -F and -X props go last so an operator can override anything we set. An error names the
 * property, never its value: values hold passwords. */
static int
apply_props(rd_kafka_conf_t *conf, const struct ot_config *cfg, char *errstr, size_t errsz)
{
	char e[256], name[256];
	size_t i;
	const char *eq;

	for (i = 0; i < cfg->nprops; i++) {
		eq = strchr(cfg->props[i], '=');
		snprintf(name, sizeof name, "%.*s", (int)(eq - cfg->props[i]), cfg->props[i]);
		if (rd_kafka_conf_set(conf, name, eq + 1, e, sizeof e) != RD_KAFKA_CONF_OK)
			return ot_err(OT_ECONFIG, errstr, errsz, "kafka property %s: %s", name, e);
	}
	return 0;
}

/* Fails fast, with exit status 69, when no broker answers at start. */
static int
check_reachable(rd_kafka_t *rk, const char *brokers, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md;
	rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, 10000);

	if (err)
		return ot_err(OT_ESERVICE, errstr, errsz, "cannot reach Kafka at %s: %s", brokers,
		              rd_kafka_err2str(err));
	rd_kafka_metadata_destroy(md);
	return 0;
}

/* Reads every topic's metadata (all topics: asking for a topic by name may have the broker
 * create it). Returns NULL with errstr. */
static const struct rd_kafka_metadata *
all_metadata(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);

	if (err) {
		ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading topic metadata: %s", rd_kafka_err2str(err));
		return NULL;
	}
	return md;
}

static const struct rd_kafka_metadata_topic *
find_topic(const struct rd_kafka_metadata *md, const char *topic)
{
	int j;

	for (j = 0; j < md->topic_cnt; j++)
		if (!strcmp(md->topics[j].topic, topic) && !md->topics[j].err &&
		    md->topics[j].partition_cnt > 0)
			return &md->topics[j];
	return NULL;
}

static int
is_kafka_spec(const char *spec)
{
	return !strncmp(spec, KAFKA_PREFIX, 5) && (spec[5] == '\0' || spec[5] == ':');
}

/* Positions a new assignment: a partition the group has committed an offset on resumes there,
 * whatever -o says, so a restart or a rebalance never re-reads or skips a topic; only a
 * partition without one starts where -o asks. If the committed offsets cannot be read, every
 * partition is left to librdkafka (committed, else auto.offset.reset). */
static void
position(rd_kafka_t *rk, struct ot_in *in, rd_kafka_topic_partition_list_t *parts)
{
	rd_kafka_topic_partition_list_t *committed = NULL, *times = NULL;
	rd_kafka_resp_err_t err;
	int64_t off;
	int i, fresh = 0;

	if (in->start.kind == OT_OFFSET_STORED || parts->cnt == 0)
		return;
	committed = rd_kafka_topic_partition_list_copy(parts);
	if ((err = rd_kafka_committed(rk, committed, 10000))) {
		OT_WARN(NULL, "kafka: cannot read the group's committed offsets, so -o is not applied: %s",
		        rd_kafka_err2str(err));
		goto out;
	}
	switch (in->start.kind) {
	case OT_OFFSET_BEGINNING: off = RD_KAFKA_OFFSET_BEGINNING; break;
	case OT_OFFSET_END: off = RD_KAFKA_OFFSET_END; break;
	case OT_OFFSET_TAIL: off = RD_KAFKA_OFFSET_TAIL(in->start.value); break;
	default: off = in->start.value; break; /* ABS, or TIME looked up below */
	}
	if (in->start.kind == OT_OFFSET_TIME)
		times = rd_kafka_topic_partition_list_new(parts->cnt);
	for (i = 0; i < parts->cnt; i++) {
		if (committed->elems[i].err) /* unknown: never guess "none" and re-read */
			continue;
		if (committed->elems[i].offset >= 0) {
			parts->elems[i].offset = committed->elems[i].offset;
			continue;
		}
		fresh++;
		parts->elems[i].offset = off;
		if (times)
			rd_kafka_topic_partition_list_add(times, parts->elems[i].topic,
			                                  parts->elems[i].partition)->offset = off;
	}
	if (times && times->cnt) {
		if ((err = rd_kafka_offsets_for_times(rk, times, 10000))) {
			OT_WARN(NULL, "kafka: cannot look up offsets for s@%lld: %s", in->start.value,
			        rd_kafka_err2str(err));
		} else {
			for (i = 0; i < parts->cnt; i++) {
				rd_kafka_topic_partition_t *t = rd_kafka_topic_partition_list_find(times,
					parts->elems[i].topic, parts->elems[i].partition);
				if (t)
					parts->elems[i].offset = t->err ? RD_KAFKA_OFFSET_INVALID : t->offset;
			}
		}
	}
	OT_DEBUG(NULL, "kafka: -o applies to %d of %d assigned partitions (the others resume)", fresh,
	         parts->cnt);
out:
	if (times)
		rd_kafka_topic_partition_list_destroy(times);
	rd_kafka_topic_partition_list_destroy(committed);
}

/* The offset ot_in_stop_at_end saw as a partition's end, or -1. */
static int64_t
end_of(const struct ot_in *in, const char *topic, int32_t partition)
{
	int i;

	for (i = 0; i < in->nends; i++)
		if (in->ends[i].partition == partition && !strcmp(in->ends[i].topic, topic))
			return in->ends[i].end;
	return -1;
}

/* ot_kafka_consumer_lag{tool,topic,partition}: per partition this member is assigned. */
static struct ot_metric *
lag_metric(void)
{
	static struct ot_metric *lag;

	if (!lag)
		lag = ot_metric_new(OT_GAUGE, "ot_kafka_consumer_lag", "Records a consumer group is behind: the "
		                    "partition's high watermark minus its committed offset.", "tool,topic,partition", NULL, 0);
	return lag;
}

/* Keeps a lag series (tool, topic, partition) unless its partition is in the list revoked. */
static int
not_revoked(const char *const *values, void *arg)
{
	const rd_kafka_topic_partition_list_t *revoked = arg;
	char *end;
	long n = strtol(values[2], &end, 10);

	return *end || !rd_kafka_topic_partition_list_find(revoked, values[1], (int32_t)n);
}

static void
rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct ot_in *in = opaque;
	int i;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		position(rk, in, parts);
		in->nparts = 0;
		for (i = 0; i < parts->cnt && i < MAX_PARTS; i++) {
			snprintf(in->parts[i].topic, sizeof in->parts[i].topic, "%s", parts->elems[i].topic);
			in->parts[i].partition = parts->elems[i].partition;
			in->parts[i].eof = 0;
			in->parts[i].end = end_of(in, parts->elems[i].topic, parts->elems[i].partition);
			in->nparts++;
		}
		OT_INFO(NULL, "kafka: assigned %d partitions", parts->cnt);
		rd_kafka_assign(rk, parts);
	} else {
		/* Commit what is done before the partitions move to another member. */
		rd_kafka_commit(rk, NULL, 0);
		in->nparts = 0;
		/* Their lag is the new owner's to report now: a copy frozen here would be summed
		 * with it. */
		ot_metric_retain(lag_metric(), not_revoked, parts);
		OT_INFO(NULL, "kafka: partitions revoked");
		rd_kafka_assign(rk, NULL);
	}
}

static struct part *
find_part(struct ot_in *in, const char *topic, int32_t partition)
{
	int i;

	for (i = 0; i < in->nparts; i++)
		if (in->parts[i].partition == partition && !strcmp(in->parts[i].topic, topic))
			return &in->parts[i];
	return NULL;
}

static int
all_eof(const struct ot_in *in)
{
	int i;

	if (in->nparts == 0)
		return 0;
	for (i = 0; i < in->nparts; i++)
		if (!in->parts[i].eof)
			return 0;
	return 1;
}

/* The partitions one statistics report showed a lag for, as "topic\npartition". */
struct lagset {
	char seen[256][150];
	int n;
};

static int
lag_seen(const char *const *values, void *arg)
{
	struct lagset *ls = arg;
	char k[150];

	snprintf(k, sizeof k, "%s\n%s", values[1], values[2]);
	for (int i = 0; i < ls->n; i++)
		if (!strcmp(ls->seen[i], k))
			return 1;
	return 0;
}

/* librdkafka's statistics (statistics.interval.ms) as ot_kafka_consumer_lag: per assigned
 * partition, its consumer_lag is the high watermark (last stable offset under read_committed)
 * minus the group's committed offset; -1 while either is unknown, and then left out. The
 * report also lists partitions this member lost in a rebalance, at their lag when lost and
 * never refreshed: only the assigned ones count. */
static int
stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
	static struct lagset ls; /* only the consumer's own thread calls this, as it does rebalance */
	struct ot_metric *lag = lag_metric();
	struct ot_in *in = opaque;
	json_t *root = json_loadb(json, len, 0, NULL), *t, *p;
	const char *topic, *key;
	char part[24]; /* any json_int_t */

	(void)rk;
	ls.n = 0;
	json_object_foreach(json_object_get(root, "topics"), topic, t) {
		json_object_foreach(json_object_get(t, "partitions"), key, p) {
			json_int_t n = json_integer_value(json_object_get(p, "partition"));
			json_int_t l = json_integer_value(json_object_get(p, "consumer_lag"));
			if (n < 0 || l < 0 || !json_is_integer(json_object_get(p, "consumer_lag")) || ls.n == 256 ||
			    !find_part(in, topic, (int32_t)n))
				continue;
			snprintf(part, sizeof part, "%lld", (long long)n);
			snprintf(ls.seen[ls.n++], sizeof ls.seen[0], "%s\n%s", topic, part);
			ot_metric_set(lag, (double)l, in->tool, topic, part);
		}
	}
	ot_metric_retain(lag, lag_seen, &ls); /* partitions revoked since go */
	json_decref(root);
	return 0; /* librdkafka frees json */
}

static struct ot_in *
open_kafka_in(struct ot_in *in, const char *topics, const struct ot_config *cfg, int *rc,
              char *errstr, size_t errsz)
{
	rd_kafka_conf_t *conf;
	rd_kafka_topic_partition_list_t *subs;
	const struct rd_kafka_metadata *md;
	char e[512], *list, *tok, *save, dlqs[8][140];
	const char *names[16];
	size_t i, n = 0;
	int r;

	if (!*topics) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: input needs a topic: kafka:TOPIC[,TOPIC]");
		return NULL;
	}
	if (!(conf = base_conf(cfg, errstr, errsz))) {
		*rc = OT_ECONFIG;
		return NULL;
	}
	if (ot_offset_parse(cfg->offset, &in->start)) {
		rd_kafka_conf_destroy(conf);
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "-o %s: not an offset", cfg->offset);
		return NULL;
	}
	snprintf(in->group, sizeof in->group, "%s", cfg->group);
	in->exit_at_end = cfg->exit_at_end;
	rd_kafka_conf_set(conf, "group.id", cfg->group, e, sizeof e);
	rd_kafka_conf_set(conf, "enable.auto.commit", "true", e, sizeof e);
	/* Offsets are stored by ot_in_done only, after the effect is durable. */
	rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", e, sizeof e);
	/* Where a committed offset is out of range, and where -o could not be applied. */
	rd_kafka_conf_set(conf, "auto.offset.reset", in->start.kind == OT_OFFSET_END ? "latest" : "earliest",
	                  e, sizeof e);
	rd_kafka_conf_set(conf, "enable.partition.eof", cfg->exit_at_end ? "true" : "false", e, sizeof e);
	/* A member that died without leaving holds its partitions until its session expires:
	 * keep that short, so a restarted consumer takes over in seconds. */
	rd_kafka_conf_set(conf, "session.timeout.ms", "10000", e, sizeof e);
	rd_kafka_conf_set(conf, "heartbeat.interval.ms", "2000", e, sizeof e);
	/* Topics created after we start are picked up within seconds, not minutes. */
	rd_kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "10000", e, sizeof e);
	/* Memory stays flat whatever the backlog: librdkafka prefetches up to 64 MB into its queue
	 * and fetches 50 MB at a time by default; records are handled one by one, so 2 MB queued and
	 * 1 MB per fetch keep a consumer busy (-X raises either). */
	rd_kafka_conf_set(conf, "queued.max.messages.kbytes", "2048", e, sizeof e);
	rd_kafka_conf_set(conf, "fetch.max.bytes", "1048576", e, sizeof e);
	rd_kafka_conf_set_rebalance_cb(conf, rebalance);
	/* Lag for /metrics every 5 s (-X statistics.interval.ms changes it; 0 turns it off). */
	rd_kafka_conf_set(conf, "statistics.interval.ms", "5000", e, sizeof e);
	rd_kafka_conf_set_stats_cb(conf, stats);
	rd_kafka_conf_set_opaque(conf, in);
	if ((r = apply_props(conf, cfg, errstr, errsz))) {
		rd_kafka_conf_destroy(conf);
		*rc = r;
		return NULL;
	}
	in->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
	if (!in->rk) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
		return NULL;
	}
	if ((r = check_reachable(in->rk, cfg->brokers, errstr, errsz))) {
		*rc = r;
		return NULL;
	}
	rd_kafka_poll_set_consumer(in->rk);
	list = strdup(topics);
	subs = rd_kafka_topic_partition_list_new(4);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		rd_kafka_topic_partition_list_add(subs, tok, RD_KAFKA_PARTITION_UA);
		if (n < 8) {
			snprintf(dlqs[n], sizeof dlqs[n], "%s.dlq", tok);
			names[n++] = tok;
		}
	}
	for (i = 0; i < n; i++) /* each input topic and, for one that dead-letters, its own */
		names[n + i] = dlqs[i];
	/* Topics are made by "ot-relay topics create", not here: a consumer needs no right to
	 * create them. One missing is waited for (subscribed all the same), and said once. */
	if ((md = all_metadata(in->rk, 5000, NULL, 0))) {
		for (i = 0; i < (in->no_dlq ? 1 : 2) * n; i++)
			if (!find_topic(md, names[i]))
				OT_WARN(NULL, "kafka: topic %s does not exist (yet); create it with "
				        "ot-relay topics create %s", names[i], names[i]);
		rd_kafka_metadata_destroy(md);
	}
	r = 0;
	if (!in->no_dlq)
		in->dlq = ot_out_open(KAFKA_PREFIX, cfg, &r, errstr, errsz);
	if (!r && rd_kafka_subscribe(in->rk, subs))
		r = ot_err(OT_ESERVICE, errstr, errsz, "kafka: cannot subscribe to %s", topics);
	rd_kafka_topic_partition_list_destroy(subs);
	free(list);
	if (r) {
		*rc = r;
		return NULL;
	}
	return in;
}

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
	if (!open_kafka_in(in, spec[5] ? spec + 6 : "", cfg, rc, errstr, errsz)) {
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
	if (!(md = all_metadata(in->rk, 10000, errstr, errsz))) {
		rd_kafka_topic_partition_list_destroy(subs);
		return OT_ESERVICE;
	}
	for (i = 0; i < subs->cnt && !rc; i++) {
		if (!(t = find_topic(md, subs->elems[i].topic)))
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
	if (in->exit_at_end && all_eof(in))
		return -1;
	km = rd_kafka_consumer_poll(in->rk, timeout_ms);
	if (!km)
		return 0;
	if (km->err) {
		int r = 0;
		if (km->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			if ((p = find_part(in, rd_kafka_topic_name(km->rkt), km->partition)))
				p->eof = 1;
			r = in->exit_at_end && all_eof(in) ? -1 : 0;
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
	p = find_part(in, rd_kafka_topic_name(km->rkt), km->partition);
	if (p && p->end >= 0 && km->offset >= p->end) {
		/* Written after ot_in_stop_at_end looked: not for this run. */
		p->eof = 1;
		rd_kafka_message_destroy(km);
		return in->exit_at_end && all_eof(in) ? -1 : 0;
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
	if (!(conf = base_conf(cfg, errstr, errsz))) {
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
	if ((r = apply_props(conf, cfg, errstr, errsz))) {
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
	if ((r = check_reachable(o->rk, cfg->brokers, errstr, errsz))) {
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

/* A client for metadata and the admin API, with the operator's properties. */
rd_kafka_t *
ot_kafka_admin(const struct ot_config *cfg, int *rc, char *errstr, size_t errsz)
{
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char e[512];

	if (!(conf = base_conf(cfg, errstr, errsz))) {
		*rc = OT_ECONFIG;
		return NULL;
	}
	if ((*rc = apply_props(conf, cfg, errstr, errsz))) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e))) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
		return NULL;
	}
	if ((*rc = check_reachable(rk, cfg->brokers, errstr, errsz))) {
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
}

/* Producer settings copied into a consumer draw a warning per property: keep only errors. */
static void
tail_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (level <= 3)
		kafka_log(rk, level, fac, buf);
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
