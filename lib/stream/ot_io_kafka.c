/* ot_io_kafka: the Kafka clients behind ot_io: their configuration, the consumer's assignment
 * and lag callbacks, and the admin client. */
#include <errno.h>
#include <jansson.h>
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
#include "ot_metrics.h"
#include "ot_signal.h"

void
io_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
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

rd_kafka_conf_t *
io_base_conf(const struct ot_config *cfg, char *errstr, size_t errsz)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char e[256];

	if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->brokers, e, sizeof e) ||
	    rd_kafka_conf_set(conf, "client.id", cfg->tool ? cfg->tool : "ordertrack", e, sizeof e))
		goto bad;
	rd_kafka_conf_set_log_cb(conf, io_kafka_log);
	rd_kafka_conf_set_error_cb(conf, kafka_error);
	return conf;
bad:
	ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
	rd_kafka_conf_destroy(conf);
	return NULL;
}

/* -F and -X props go last so an operator can override anything we set. An error names the
 * property, never its value: values hold passwords. */
int
io_apply_props(rd_kafka_conf_t *conf, const struct ot_config *cfg, char *errstr, size_t errsz)
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
int
io_check_reachable(rd_kafka_t *rk, const char *brokers, char *errstr, size_t errsz)
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
const struct rd_kafka_metadata *
io_all_metadata(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);

	if (err) {
		ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading topic metadata: %s", rd_kafka_err2str(err));
		return NULL;
	}
	return md;
}

const struct rd_kafka_metadata_topic *
io_find_topic(const struct rd_kafka_metadata *md, const char *topic)
{
	int j;

	for (j = 0; j < md->topic_cnt; j++)
		if (!strcmp(md->topics[j].topic, topic) && !md->topics[j].err &&
		    md->topics[j].partition_cnt > 0)
			return &md->topics[j];
	return NULL;
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

struct part *
io_find_part(struct ot_in *in, const char *topic, int32_t partition)
{
	int i;

	for (i = 0; i < in->nparts; i++)
		if (in->parts[i].partition == partition && !strcmp(in->parts[i].topic, topic))
			return &in->parts[i];
	return NULL;
}

int
io_all_eof(const struct ot_in *in)
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
			    !io_find_part(in, topic, (int32_t)n))
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

struct ot_in *
io_open_kafka_in(struct ot_in *in, const char *topics, const struct ot_config *cfg, int *rc,
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
	if (!(conf = io_base_conf(cfg, errstr, errsz))) {
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
	if ((r = io_apply_props(conf, cfg, errstr, errsz))) {
		rd_kafka_conf_destroy(conf);
		*rc = r;
		return NULL;
	}
	in->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
	if (!in->rk) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
		return NULL;
	}
	if ((r = io_check_reachable(in->rk, cfg->brokers, errstr, errsz))) {
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
	if ((md = io_all_metadata(in->rk, 5000, NULL, 0))) {
		for (i = 0; i < (in->no_dlq ? 1 : 2) * n; i++)
			if (!io_find_topic(md, names[i]))
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

/* A client for metadata and the admin API, with the operator's properties. */
rd_kafka_t *
ot_kafka_admin(const struct ot_config *cfg, int *rc, char *errstr, size_t errsz)
{
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char e[512];

	if (!(conf = io_base_conf(cfg, errstr, errsz))) {
		*rc = OT_ECONFIG;
		return NULL;
	}
	if ((*rc = io_apply_props(conf, cfg, errstr, errsz))) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e))) {
		*rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: %s", e);
		return NULL;
	}
	if ((*rc = io_check_reachable(rk, cfg->brokers, errstr, errsz))) {
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
}
