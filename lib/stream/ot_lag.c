/* ot_lag: consumer-group lag from committed offsets and watermarks, through the admin API. */
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_io.h"
#include "ot_lag.h"
#include "ot_log.h"
#include "ot_metrics.h"

#define TIMEOUT_MS 10000 /* one admin request, and one watermark lookup */
#define IN_FLIGHT 32     /* offset requests at once: a coordinator is not flooded */

struct ot_lag {
	rd_kafka_t *rk;
	rd_kafka_queue_t *q;
	const char *const *only;
	size_t nonly;
	atomic_llong ok_ms; /* when the last refresh succeeded, on ot_now_ms's clock; 0 never */
	struct ot_metric *lag, *members, *errors, *stamp;
};

/* One reading's groups: their names, member counts (-1 unknown) and committed offsets. */
struct reading {
	char **groups;
	long *members;
	rd_kafka_topic_partition_list_t **committed; /* per group; NULL until read */
	size_t n;
	char **seen; /* "group\ntopic\npartition" of every series set, sorted for bsearch */
	size_t nseen, capseen;
};

static void
reading_clear(struct reading *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->groups[i]);
		if (r->committed[i])
			rd_kafka_topic_partition_list_destroy(r->committed[i]);
	}
	for (size_t i = 0; i < r->nseen; i++)
		free(r->seen[i]);
	free(r->groups);
	free(r->members);
	free(r->committed);
	free(r->seen);
}

static int
wanted(const struct ot_lag *l, const char *group)
{
	if (!l->nonly)
		return 1;
	for (size_t i = 0; i < l->nonly; i++)
		if (!strcmp(l->only[i], group))
			return 1;
	return 0;
}

static rd_kafka_AdminOptions_t *
options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
	rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
	char e[256];

	if (o)
		rd_kafka_AdminOptions_set_request_timeout(o, TIMEOUT_MS, e, sizeof e);
	return o;
}

/* The next admin result of type on l's queue; NULL with errstr on a timeout or an error. */
static rd_kafka_event_t *
result(struct ot_lag *l, rd_kafka_event_type_t type, const char *what, char *errstr, size_t errsz)
{
	rd_kafka_event_t *ev;

	for (;;) {
		if (!(ev = rd_kafka_queue_poll(l->q, TIMEOUT_MS + 5000))) {
			ot_err(OT_ESERVICE, errstr, errsz, "kafka: %s: no answer in %d s", what, TIMEOUT_MS / 1000 + 5);
			return NULL;
		}
		if (rd_kafka_event_type(ev) == type)
			break;
		rd_kafka_event_destroy(ev); /* a late answer to an earlier reading's request */
	}
	if (rd_kafka_event_error(ev)) {
		ot_err(OT_ESERVICE, errstr, errsz, "kafka: %s: %s", what, rd_kafka_event_error_string(ev));
		rd_kafka_event_destroy(ev);
		return NULL;
	}
	return ev;
}

static int
list_groups(struct ot_lag *l, struct reading *r, char *errstr, size_t errsz)
{
	const rd_kafka_ConsumerGroupListing_t **valid;
	const rd_kafka_error_t **errs;
	rd_kafka_AdminOptions_t *o = options(l->rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS);
	rd_kafka_event_t *ev;
	size_t n, nerr, i;
	int rc = OT_OK;

	rd_kafka_ListConsumerGroups(l->rk, o, l->q);
	rd_kafka_AdminOptions_destroy(o);
	if (!(ev = result(l, RD_KAFKA_EVENT_LISTCONSUMERGROUPS_RESULT, "listing consumer groups", errstr, errsz)))
		return OT_ESERVICE;
	valid = rd_kafka_ListConsumerGroups_result_valid(rd_kafka_event_ListConsumerGroups_result(ev), &n);
	errs = rd_kafka_ListConsumerGroups_result_errors(rd_kafka_event_ListConsumerGroups_result(ev), &nerr);
	/* A broker that did not answer hides its groups: better the last reading than a gap. */
	if (nerr) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: listing consumer groups: %s",
		            rd_kafka_error_string(errs[0]));
		goto out;
	}
	r->groups = calloc(n + 1, sizeof *r->groups);
	r->members = calloc(n + 1, sizeof *r->members);
	r->committed = calloc(n + 1, sizeof *r->committed);
	if (!r->groups || !r->members || !r->committed) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		const char *g = rd_kafka_ConsumerGroupListing_group_id(valid[i]);
		if (!wanted(l, g))
			continue;
		if (!(r->groups[r->n] = strdup(g))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		r->members[r->n++] = -1;
	}
out:
	rd_kafka_event_destroy(ev);
	return rc;
}

/* Member counts; a group that cannot be described keeps -1 (no series this time). */
static int
describe_groups(struct ot_lag *l, struct reading *r, char *errstr, size_t errsz)
{
	const rd_kafka_ConsumerGroupDescription_t **d;
	rd_kafka_AdminOptions_t *o;
	rd_kafka_event_t *ev;
	size_t n, i, j;

	if (!r->n)
		return OT_OK;
	o = options(l->rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
	rd_kafka_DescribeConsumerGroups(l->rk, (const char **)r->groups, r->n, o, l->q);
	rd_kafka_AdminOptions_destroy(o);
	if (!(ev = result(l, RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT, "describing consumer groups", errstr,
	                  errsz)))
		return OT_ESERVICE;
	d = rd_kafka_DescribeConsumerGroups_result_groups(rd_kafka_event_DescribeConsumerGroups_result(ev), &n);
	for (i = 0; i < n; i++) {
		if (rd_kafka_ConsumerGroupDescription_error(d[i]))
			continue;
		for (j = 0; j < r->n; j++)
			if (!strcmp(r->groups[j], rd_kafka_ConsumerGroupDescription_group_id(d[i])))
				r->members[j] = (long)rd_kafka_ConsumerGroupDescription_member_count(d[i]);
	}
	rd_kafka_event_destroy(ev);
	return OT_OK;
}

static void
take_offsets(struct reading *r, rd_kafka_event_t *ev)
{
	const rd_kafka_group_result_t **g;
	size_t n, i, j;

	g = rd_kafka_ListConsumerGroupOffsets_result_groups(rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
	for (i = 0; i < n; i++) {
		if (rd_kafka_group_result_error(g[i]) || !rd_kafka_group_result_partitions(g[i]))
			continue;
		for (j = 0; j < r->n; j++)
			if (!r->committed[j] && !strcmp(r->groups[j], rd_kafka_group_result_name(g[i])))
				r->committed[j] = rd_kafka_topic_partition_list_copy(rd_kafka_group_result_partitions(g[i]));
	}
}

/* Every group's committed offsets, IN_FLIGHT requests at a time. */
static int
read_offsets(struct ot_lag *l, struct reading *r, char *errstr, size_t errsz)
{
	size_t sent = 0, got = 0;
	rd_kafka_event_t *ev;

	while (got < r->n) {
		while (sent < r->n && sent - got < IN_FLIGHT) {
			rd_kafka_ListConsumerGroupOffsets_t *req = rd_kafka_ListConsumerGroupOffsets_new(r->groups[sent], NULL);
			rd_kafka_AdminOptions_t *o = options(l->rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
			rd_kafka_ListConsumerGroupOffsets(l->rk, &req, 1, o, l->q);
			rd_kafka_AdminOptions_destroy(o);
			rd_kafka_ListConsumerGroupOffsets_destroy(req);
			sent++;
		}
		if (!(ev = result(l, RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT, "reading committed offsets",
		                  errstr, errsz)))
			return OT_ESERVICE;
		take_offsets(r, ev);
		rd_kafka_event_destroy(ev);
		got++;
	}
	for (size_t i = 0; i < r->n; i++)
		if (!r->committed[i])
			return ot_err(OT_ESERVICE, errstr, errsz, "kafka: no committed offsets for group %s", r->groups[i]);
	return OT_OK;
}

/* Every partition of each topic some group committed on, with offset set to `which`
 * (RD_KAFKA_OFFSET_END, _BEGINNING) looked up: the high or low watermarks. */
static rd_kafka_topic_partition_list_t *
watermarks(struct ot_lag *l, const struct reading *r, const struct rd_kafka_metadata *md, int64_t which,
           char *errstr, size_t errsz)
{
	rd_kafka_topic_partition_list_t *w = rd_kafka_topic_partition_list_new(64);
	rd_kafka_resp_err_t err;
	int i, t, p;

	for (size_t g = 0; g < r->n; g++) {
		for (i = 0; i < r->committed[g]->cnt; i++) {
			const char *topic = r->committed[g]->elems[i].topic;
			if (rd_kafka_topic_partition_list_find(w, topic, 0))
				continue;
			for (t = 0; t < md->topic_cnt; t++) {
				if (strcmp(md->topics[t].topic, topic))
					continue;
				for (p = 0; p < md->topics[t].partition_cnt; p++)
					rd_kafka_topic_partition_list_add(w, topic, md->topics[t].partitions[p].id)->offset = which;
			}
		}
	}
	if (w->cnt && (err = rd_kafka_offsets_for_times(l->rk, w, TIMEOUT_MS))) {
		ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading watermarks: %s", rd_kafka_err2str(err));
		rd_kafka_topic_partition_list_destroy(w);
		return NULL;
	}
	return w;
}

static int
by_key(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Remembers that the series (values...) was set this reading; -1 when out of memory. */
static int
saw(struct reading *r, const char *a, const char *b, const char *c)
{
	char *k;

	if (r->nseen == r->capseen) {
		size_t cap = r->capseen ? 2 * r->capseen : 256;
		char **s = realloc(r->seen, cap * sizeof *s);
		if (!s)
			return -1;
		r->seen = s;
		r->capseen = cap;
	}
	if (!(k = malloc(strlen(a) + strlen(b) + strlen(c) + 3)))
		return -1;
	sprintf(k, "%s\n%s\n%s", a, b, c);
	r->seen[r->nseen++] = k;
	return 0;
}

static int
was_seen(const struct reading *r, const char *a, const char *b, const char *c)
{
	char *k = malloc(strlen(a) + strlen(b) + strlen(c) + 3);
	int found;

	if (!k)
		return 1; /* keep what cannot be checked */
	sprintf(k, "%s\n%s\n%s", a, b, c);
	found = bsearch(&k, r->seen, r->nseen, sizeof *r->seen, by_key) != NULL;
	free(k);
	return found;
}

static int
keep_lag(const char *const *v, void *arg)
{
	return was_seen(arg, v[0], v[1], v[2]);
}

static int
keep_members(const char *const *v, void *arg)
{
	return was_seen(arg, v[0], "", "");
}

static int
topic_in(const rd_kafka_topic_partition_list_t *l, const char *topic)
{
	for (int i = 0; i < l->cnt; i++)
		if (!strcmp(l->elems[i].topic, topic))
			return 1;
	return 0;
}

/* Sets the series of one reading; -1 when out of memory. */
static int
publish(struct ot_lag *l, struct reading *r, const rd_kafka_topic_partition_list_t *hi,
        const rd_kafka_topic_partition_list_t *lo)
{
	char part[16];
	int i;

	for (size_t g = 0; g < r->n; g++) {
		if (r->members[g] >= 0) {
			ot_metric_set(l->members, (double)r->members[g], r->groups[g]);
			if (saw(r, r->groups[g], "", ""))
				return -1;
		}
		for (i = 0; i < hi->cnt; i++) {
			const rd_kafka_topic_partition_t *h = &hi->elems[i], *c, *b;
			int64_t from;

			/* Only topics this group committed on, each with all its partitions. */
			if (!topic_in(r->committed[g], h->topic))
				continue;
			if (h->err || h->offset < 0)
				continue;
			c = rd_kafka_topic_partition_list_find(r->committed[g], h->topic, h->partition);
			b = rd_kafka_topic_partition_list_find(lo, h->topic, h->partition);
			if (c && c->offset >= 0)
				from = c->offset;
			else if (b && !b->err && b->offset >= 0)
				from = b->offset;
			else
				continue;
			snprintf(part, sizeof part, "%d", (int)h->partition);
			ot_metric_set(l->lag, (double)(h->offset > from ? h->offset - from : 0), r->groups[g], h->topic,
			              part);
			if (saw(r, r->groups[g], h->topic, part))
				return -1;
		}
	}
	return 0;
}

struct ot_lag *
ot_lag_new(const struct ot_config *cfg, const char *const *groups, size_t n, int *rc, char *errstr,
           size_t errsz)
{
	struct ot_lag *l = calloc(1, sizeof *l);

	if (!l) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	if (!(l->rk = ot_kafka_admin(cfg, rc, errstr, errsz))) {
		free(l);
		return NULL;
	}
	l->q = rd_kafka_queue_new(l->rk);
	l->only = groups;
	l->nonly = n;
	l->lag = ot_metric_new(OT_GAUGE, "ot_kafka_consumergroup_lag", "Records a consumer group has yet to "
	                       "read, as Kafka sees it: the partition's high watermark minus the group's committed "
	                       "offset.", "group,topic,partition", NULL, 0);
	l->members = ot_metric_new(OT_GAUGE, "ot_kafka_consumergroup_members", "Members of a consumer group now.",
	                           "group", NULL, 0);
	l->errors = ot_metric_new(OT_COUNTER, "ot_kafka_lag_errors_total", "Readings of consumer-group lag that "
	                          "failed (the last good one stays).", NULL, NULL, 0);
	l->stamp = ot_metric_new(OT_GAUGE, "ot_kafka_lag_last_success_timestamp_seconds",
	                         "When consumer-group lag was last read in full.", NULL, NULL, 0);
	return l;
}

int
ot_lag_refresh(struct ot_lag *l, char *errstr, size_t errsz)
{
	struct reading r = {0};
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *hi = NULL, *lo = NULL;
	rd_kafka_resp_err_t err;
	int rc;

	if ((rc = list_groups(l, &r, errstr, errsz)) || (rc = describe_groups(l, &r, errstr, errsz)) ||
	    (rc = read_offsets(l, &r, errstr, errsz)))
		goto out;
	if ((err = rd_kafka_metadata(l->rk, 1, NULL, &md, TIMEOUT_MS))) {
		md = NULL;
		rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: reading topic metadata: %s", rd_kafka_err2str(err));
		goto out;
	}
	if (!(hi = watermarks(l, &r, md, RD_KAFKA_OFFSET_END, errstr, errsz)) ||
	    !(lo = watermarks(l, &r, md, RD_KAFKA_OFFSET_BEGINNING, errstr, errsz))) {
		rc = OT_ESERVICE;
		goto out;
	}
	if (publish(l, &r, hi, lo)) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	if (r.nseen)
		qsort(r.seen, r.nseen, sizeof *r.seen, by_key);
	ot_metric_retain(l->lag, keep_lag, &r);
	ot_metric_retain(l->members, keep_members, &r);
	atomic_store(&l->ok_ms, ot_now_ms());
	ot_metric_set(l->stamp, (double)time(NULL));
out:
	if (rc)
		ot_metric_add(l->errors, 1);
	if (hi)
		rd_kafka_topic_partition_list_destroy(hi);
	if (lo)
		rd_kafka_topic_partition_list_destroy(lo);
	if (md)
		rd_kafka_metadata_destroy(md);
	reading_clear(&r);
	return rc;
}

int
ot_lag_ready(struct ot_lag *l, long long max_age_ms, char *why, size_t whysz)
{
	long long ok = atomic_load(&l->ok_ms);

	if (ok && ot_now_ms() - ok <= max_age_ms)
		return 0;
	snprintf(why, whysz, "consumer-group lag %s", ok ? "has not been read lately" : "has not been read yet");
	return -1;
}

void
ot_lag_free(struct ot_lag *l)
{
	if (!l)
		return;
	if (l->q)
		rd_kafka_queue_destroy(l->q);
	if (l->rk)
		rd_kafka_destroy(l->rk);
	free(l);
}
