/* ot_topics: topics created, their settings brought in line and listed, through Kafka's admin API. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_text.h"
#include "ot_topics.h"

#define ADMIN_TIMEOUT_MS 15000
#define SETTLE_TRIES 100 /* of 100 ms: how long a change may take to show on every broker */

/* Every topic's metadata (asking for one topic by name may have the broker create it).
 * Returns NULL with errstr. */
static const struct rd_kafka_metadata *
metadata(rd_kafka_t *rk, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 10000);

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
		if (!strcmp(md->topics[j].topic, topic) && !md->topics[j].err && md->topics[j].partition_cnt > 0)
			return &md->topics[j];
	return NULL;
}

/* A refusal the operator fixes in the request (a factor above the broker count, a bad name or
 * setting), not by waiting. */
static int
error_rc(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
	case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_INVALID_REPLICA_ASSIGNMENT:
	case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
	case RD_KAFKA_RESP_ERR_INVALID_REQUEST:
	case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
		return OT_ECONFIG;
	default:
		return OT_ESERVICE;
	}
}

/* The result of one admin request. Returns the event (the caller destroys it), or NULL with
 * errstr. */
static rd_kafka_event_t *
await(rd_kafka_queue_t *q, const char *what, char *errstr, size_t errsz)
{
	rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS * 2);

	if (!ev) {
		ot_err(OT_ESERVICE, errstr, errsz, "kafka: %s timed out", what);
		return NULL;
	}
	if (rd_kafka_event_error(ev)) {
		ot_err(OT_ESERVICE, errstr, errsz, "kafka: %s: %s", what, rd_kafka_event_error_string(ev));
		rd_kafka_event_destroy(ev);
		return NULL;
	}
	return ev;
}

static rd_kafka_AdminOptions_t *
options(rd_kafka_t *rk, rd_kafka_admin_op_t op)
{
	rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
	char e[256];

	rd_kafka_AdminOptions_set_request_timeout(o, ADMIN_TIMEOUT_MS, e, sizeof e);
	if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
		rd_kafka_AdminOptions_set_operation_timeout(o, ADMIN_TIMEOUT_MS, e, sizeof e);
	return o;
}

/* The settings spec asks, as an object of strings; of a key given twice, the last. Returns
 * NULL with errstr for one that is not key=value. */
static json_t *
wanted(const struct ot_topic_spec *s, char *errstr, size_t errsz)
{
	json_t *o = json_object();
	char key[256];
	size_t i;

	for (i = 0; i < s->nconfig; i++) {
		const char *eq = strchr(s->config[i], '=');
		if (!eq || eq == s->config[i] || (size_t)(eq - s->config[i]) >= sizeof key) {
			ot_err(OT_ECONFIG, errstr, errsz, "topic setting %s: expected key=value", s->config[i]);
			json_decref(o);
			return NULL;
		}
		snprintf(key, sizeof key, "%.*s", (int)(eq - s->config[i]), s->config[i]);
		json_object_set_new(o, key, json_string(eq + 1));
	}
	return o;
}

static int
by_entry_name(const void *a, const void *b)
{
	return strcmp(rd_kafka_ConfigEntry_name(*(const rd_kafka_ConfigEntry_t *const *)a),
	              rd_kafka_ConfigEntry_name(*(const rd_kafka_ConfigEntry_t *const *)b));
}

/* The settings set on the topic itself (not the broker's defaults), by name. */
static json_t *
own_settings(const rd_kafka_ConfigResource_t *r)
{
	const rd_kafka_ConfigEntry_t **es, **sorted;
	json_t *o = json_object();
	size_t j, ne, k = 0;

	es = rd_kafka_ConfigResource_configs(r, &ne);
	if (!(sorted = calloc(ne ? ne : 1, sizeof *sorted)))
		return o;
	for (j = 0; j < ne; j++)
		if (rd_kafka_ConfigEntry_source(es[j]) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG &&
		    !rd_kafka_ConfigEntry_is_sensitive(es[j]) && rd_kafka_ConfigEntry_value(es[j]))
			sorted[k++] = es[j];
	qsort(sorted, k, sizeof *sorted, by_entry_name);
	for (j = 0; j < k; j++)
		json_object_set_new(o, rd_kafka_ConfigEntry_name(sorted[j]), json_string(rd_kafka_ConfigEntry_value(sorted[j])));
	free(sorted);
	return o;
}

/* Each of the n topics' own settings into have[i] (a new reference; NULL for a topic the
 * broker could not describe, such as one that does not exist). Returns 0 or an ot_rc. */
static int
describe_settings(rd_kafka_t *rk, const char *const *names, size_t n, json_t **have, char *errstr,
                  size_t errsz)
{
	rd_kafka_ConfigResource_t **res;
	const rd_kafka_ConfigResource_t **rs;
	rd_kafka_AdminOptions_t *opts = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	size_t i, j, k, nres = 0, nrs;
	int rc = OT_OK;

	for (i = 0; i < n; i++)
		have[i] = NULL;
	if (!(res = calloc(n ? n : 1, sizeof *res)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	/* A resource named twice is refused by the client: each once. */
	for (i = 0; i < n; i++) {
		for (j = 0; j < i && strcmp(names[j], names[i]); j++)
			;
		if (j == i)
			res[nres++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
	}
	if (!nres)
		goto out;
	q = rd_kafka_queue_new(rk);
	opts = options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
	rd_kafka_DescribeConfigs(rk, res, nres, opts, q);
	if (!(ev = await(q, "reading topic settings", errstr, errsz))) {
		rc = OT_ESERVICE;
		goto out;
	}
	rs = rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &nrs);
	for (k = 0; k < nrs; k++) {
		if (rd_kafka_ConfigResource_error(rs[k]))
			continue;
		for (i = 0; i < n; i++)
			if (!strcmp(names[i], rd_kafka_ConfigResource_name(rs[k])) && !have[i])
				have[i] = own_settings(rs[k]);
	}
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (opts)
		rd_kafka_AdminOptions_destroy(opts);
	if (q)
		rd_kafka_queue_destroy(q);
	rd_kafka_ConfigResource_destroy_array(res, nres);
	free(res);
	return rc;
}

/* Whether every setting want asks is set on the topic (have) with that value. */
static int
in_line(const json_t *want, const json_t *have)
{
	const char *k;
	json_t *v;

	if (!have)
		return 0;
	json_object_foreach((json_t *)want, k, v) {
		const char *h = json_string_value(json_object_get(have, k));
		if (!h || strcmp(h, json_string_value(v)))
			return 0;
	}
	return 1;
}

static int
min_insync(const json_t *want)
{
	const char *v = json_string_value(json_object_get(want, "min.insync.replicas"));

	return v ? atoi(v) : 0;
}

/* Nothing is changed for a request that is partly wrong: every refusal comes first. */
static int
check(const struct rd_kafka_metadata *md, const struct ot_topic_spec *s, const json_t *want,
      char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata_topic *t = find_topic(md, s->name);
	int rf = t ? t->partitions[0].replica_cnt : s->replication, isr = min_insync(want);

	if (t && s->replication > 0 && rf != s->replication)
		return ot_err(OT_ECONFIG, errstr, errsz, "topic %s has replication factor %d, not the %d asked: "
		              "it changes by a partition reassignment (kafka-reassign-partitions.sh), not here",
		              s->name, rf, s->replication);
	if (isr > 0 && rf > 0 && isr > rf)
		return ot_err(OT_ECONFIG, errstr, errsz, "topic %s: min.insync.replicas=%d is more than its "
		              "replication factor %d: producers with acks=all could never write to it", s->name,
		              isr, rf);
	if (t && s->partitions > 0 && t->partition_cnt != s->partitions)
		OT_WARN(NULL, "topics: %s has %d partitions, not %d: left as it is (more would move keys to "
		        "other partitions)", s->name, t->partition_cnt, s->partitions);
	return OT_OK;
}

/* Creates the topics of spec whose exists[i] is 0; one created meanwhile by someone else is
 * marked as existing. Returns 0 or an ot_rc. */
static int
create(rd_kafka_t *rk, const struct ot_topic_spec *spec, size_t n, json_t *const *want, int *exists,
       enum ot_topic_outcome *out, char *errstr, size_t errsz)
{
	rd_kafka_NewTopic_t **nt;
	rd_kafka_AdminOptions_t *opts = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	const rd_kafka_topic_result_t **res;
	size_t i, j, nres, nnew = 0;
	const char *k;
	json_t *v;
	char e[512];
	int rc = OT_OK;

	if (!(nt = calloc(n ? n : 1, sizeof *nt)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	for (i = 0; i < n; i++) {
		if (exists[i])
			continue;
		for (j = 0; j < i && strcmp(spec[j].name, spec[i].name); j++)
			;
		if (j < i) /* named twice: once is enough */
			continue;
		if (!(nt[nnew] = rd_kafka_NewTopic_new(spec[i].name, spec[i].partitions, spec[i].replication, e, sizeof e))) {
			rc = ot_err(OT_ECONFIG, errstr, errsz, "kafka: topic %s: %s", spec[i].name, e);
			goto out;
		}
		json_object_foreach(want[i], k, v)
			rd_kafka_NewTopic_set_config(nt[nnew], k, json_string_value(v));
		nnew++;
	}
	if (!nnew)
		goto out;
	q = rd_kafka_queue_new(rk);
	opts = options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	rd_kafka_CreateTopics(rk, nt, nnew, opts, q);
	if (!(ev = await(q, "creating topics", errstr, errsz))) {
		rc = OT_ESERVICE;
		goto out;
	}
	res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres);
	for (i = 0; i < nres; i++) {
		rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
		const char *name = rd_kafka_topic_result_name(res[i]);
		if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
			const char *why = rd_kafka_topic_result_error_string(res[i]);
			rc = ot_err(error_rc(err), errstr, errsz, "kafka: creating topic %s: %s", name,
			            why ? why : rd_kafka_err2str(err));
			goto out;
		}
		for (j = 0; j < n; j++) {
			if (strcmp(spec[j].name, name))
				continue;
			if (err)
				exists[j] = 1;
			else if (out)
				out[j] = OT_TOPIC_CREATED;
		}
	}
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (opts)
		rd_kafka_AdminOptions_destroy(opts);
	if (q)
		rd_kafka_queue_destroy(q);
	rd_kafka_NewTopic_destroy_array(nt, nnew);
	free(nt);
	return rc;
}

/* Sets want's settings on each existing topic not in line with them, keeping the rest of
 * what it has (AlterConfigs replaces a topic's whole set: librdkafka 2.0 has no incremental
 * form). Returns 0 or an ot_rc. */
static int
align(rd_kafka_t *rk, const struct ot_topic_spec *spec, size_t n, json_t *const *want, const int *exists,
      enum ot_topic_outcome *out, char *errstr, size_t errsz)
{
	const char **names = calloc(n ? n : 1, sizeof *names);
	json_t **have = calloc(n ? n : 1, sizeof *have);
	rd_kafka_ConfigResource_t **res = calloc(n ? n : 1, sizeof *res);
	const rd_kafka_ConfigResource_t **rs;
	rd_kafka_AdminOptions_t *opts = NULL;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	size_t i, j, k, nres = 0, nrs;
	int rc = OT_OK;

	if (!names || !have || !res) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		names[i] = spec[i].name;
	if ((rc = describe_settings(rk, names, n, have, errstr, errsz)))
		goto out;
	for (i = 0; i < n; i++) {
		const char *key;
		json_t *v, *all;
		if (!exists[i] || in_line(want[i], have[i]))
			continue;
		for (j = 0; j < i && strcmp(names[j], names[i]); j++)
			;
		if (j < i)
			continue;
		if (!have[i]) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "kafka: cannot read the settings of topic %s", names[i]);
			goto out;
		}
		all = json_deep_copy(have[i]);
		json_object_update(all, want[i]);
		res[nres] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
		json_object_foreach(all, key, v) {
			rd_kafka_ConfigResource_set_config(res[nres], key, json_string_value(v));
			if (!json_equal(v, json_object_get(have[i], key)))
				OT_INFO(NULL, "topics: %s: %s=%s (was %s)", names[i], key, json_string_value(v),
				        json_string_value(json_object_get(have[i], key)) ? json_string_value(json_object_get(have[i], key))
				                                                         : "the broker's default");
		}
		json_decref(all);
		nres++;
	}
	if (!nres)
		goto out;
	q = rd_kafka_queue_new(rk);
	opts = options(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
	rd_kafka_AlterConfigs(rk, res, nres, opts, q);
	if (!(ev = await(q, "changing topic settings", errstr, errsz))) {
		rc = OT_ESERVICE;
		goto out;
	}
	rs = rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &nrs);
	for (k = 0; k < nrs; k++) {
		rd_kafka_resp_err_t err = rd_kafka_ConfigResource_error(rs[k]);
		const char *name = rd_kafka_ConfigResource_name(rs[k]);
		if (err) {
			const char *why = rd_kafka_ConfigResource_error_string(rs[k]);
			rc = ot_err(error_rc(err), errstr, errsz, "kafka: changing the settings of topic %s: %s", name,
			            why ? why : rd_kafka_err2str(err));
			goto out;
		}
		for (i = 0; out && i < n; i++)
			if (!strcmp(names[i], name))
				out[i] = OT_TOPIC_ALTERED;
	}
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (opts)
		rd_kafka_AdminOptions_destroy(opts);
	if (q)
		rd_kafka_queue_destroy(q);
	if (res)
		rd_kafka_ConfigResource_destroy_array(res, nres);
	for (i = 0; have && i < n; i++)
		json_decref(have[i]);
	free(res);
	free(have);
	free(names);
	return rc;
}

/* Whether every topic shows in the metadata with the settings asked: a consumer that
 * subscribes before its topics show may not see them for seconds. */
static int
settled(rd_kafka_t *rk, const struct ot_topic_spec *spec, size_t n, json_t *const *want)
{
	const struct rd_kafka_metadata *md = metadata(rk, NULL, 0);
	const char **names = calloc(n ? n : 1, sizeof *names);
	json_t **have = calloc(n ? n : 1, sizeof *have);
	size_t i, ok = 0;

	if (md && names && have) {
		for (i = 0; i < n; i++) {
			names[i] = spec[i].name;
			ok += find_topic(md, names[i]) != NULL;
		}
		if (ok == n && !describe_settings(rk, names, n, have, NULL, 0))
			for (i = 0; i < n; i++)
				ok -= !in_line(want[i], have[i]);
	}
	for (i = 0; have && i < n; i++)
		json_decref(have[i]);
	if (md)
		rd_kafka_metadata_destroy(md);
	free(have);
	free(names);
	return ok == n;
}

int
ot_topics_ensure(const struct ot_config *cfg, const struct ot_topic_spec *spec, size_t n,
                 enum ot_topic_outcome *out, char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md = NULL;
	json_t **want = calloc(n ? n : 1, sizeof *want);
	int *exists = calloc(n ? n : 1, sizeof *exists);
	rd_kafka_t *rk = NULL;
	size_t i;
	int rc = OT_OK;

	if (!want || !exists) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (out)
			out[i] = OT_TOPIC_KEPT;
		if (!(want[i] = wanted(&spec[i], errstr, errsz))) {
			rc = OT_ECONFIG;
			goto out;
		}
	}
	if (!(rk = ot_kafka_admin(cfg, &rc, errstr, errsz)))
		goto out;
	if (!(md = metadata(rk, errstr, errsz))) {
		rc = OT_ESERVICE;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((rc = check(md, &spec[i], want[i], errstr, errsz)))
			goto out;
		exists[i] = find_topic(md, spec[i].name) != NULL;
	}
	if ((rc = create(rk, spec, n, want, exists, out, errstr, errsz)) ||
	    (rc = align(rk, spec, n, want, exists, out, errstr, errsz)))
		goto out;
	for (i = 0; i < SETTLE_TRIES && !settled(rk, spec, n, want); i++)
		rd_kafka_poll(rk, 100);
	if (i == SETTLE_TRIES)
		OT_WARN(NULL, "topics: not every topic showed its partitions and settings within %d s",
		        SETTLE_TRIES / 10);
out:
	if (md)
		rd_kafka_metadata_destroy(md);
	for (i = 0; want && i < n; i++)
		json_decref(want[i]);
	free(want);
	free(exists);
	if (rk)
		rd_kafka_destroy(rk);
	return rc;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *
ot_topics_describe(const struct ot_config *cfg, const char *const *topics, size_t n, int *rc,
                   char *errstr, size_t errsz)
{
	const struct rd_kafka_metadata *md = NULL;
	const char **names = NULL;
	json_t *a = NULL, **have = NULL;
	rd_kafka_t *rk;
	size_t i;
	int j;

	if (!(rk = ot_kafka_admin(cfg, rc, errstr, errsz)))
		return NULL;
	if (!(md = metadata(rk, errstr, errsz))) {
		*rc = OT_ESERVICE;
		goto out;
	}
	if (!(names = calloc((n ? n : (size_t)md->topic_cnt) + 1, sizeof *names))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	if (n) {
		memcpy(names, topics, n * sizeof *names);
	} else {
		for (j = 0; j < md->topic_cnt; j++)
			if (strncmp(md->topics[j].topic, "__", 2)) /* Kafka's own */
				names[n++] = md->topics[j].topic;
		qsort(names, n, sizeof *names, by_name);
	}
	if (!(have = calloc(n + 1, sizeof *have))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	if ((*rc = describe_settings(rk, names, n, have, errstr, errsz)))
		goto out;
	a = json_array();
	for (i = 0; i < n; i++) {
		const struct rd_kafka_metadata_topic *t = find_topic(md, names[i]);
		if (!t)
			json_array_append_new(a, json_pack("{s:s, s:s}", "topic", names[i], "error", "unknown topic"));
		else
			json_array_append_new(a, json_pack("{s:s, s:i, s:i, s:o}", "topic", names[i], "partitions",
			                                   t->partition_cnt, "replication_factor",
			                                   t->partitions[0].replica_cnt, "config",
			                                   have[i] ? json_incref(have[i]) : json_object()));
	}
	*rc = OT_OK;
out:
	for (i = 0; have && i < n; i++)
		json_decref(have[i]);
	free(have);
	free(names);
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_destroy(rk);
	return a;
}

static int
is_dlq(const char *topic)
{
	size_t n = strlen(topic);

	return n > 4 && !strcmp(topic + n - 4, ".dlq");
}

/* What "topics create" makes when it is named no topic: every topic the tools use. */
static const char *const default_topics[] = {
	OT_TOPIC_ORDERS, OT_TOPIC_ORDERS ".dlq", OT_TOPIC_INVENTORY, OT_TOPIC_INVENTORY ".dlq",
	OT_TOPIC_DELIVERY, OT_TOPIC_DELIVERY ".dlq", OT_TOPIC_PAYMENTS, OT_TOPIC_PAYMENTS ".dlq",
};

/* The topics ot_topics_ensure makes of names and req: a dead-letter topic's own settings come
 * after the others, so they win. *both holds the settings; the caller frees it and the specs. */
static struct ot_topic_spec *
specs(const struct ot_topics_req *req, const char *const *names, size_t n, const char ***both)
{
	struct ot_topic_spec *spec = calloc(n, sizeof *spec);
	size_t i;

	if (!spec || !(*both = calloc(req->nconfig + req->ndlq_config + 1, sizeof **both))) {
		free(spec);
		return NULL;
	}
	if (req->nconfig)
		memcpy(*both, req->config, req->nconfig * sizeof **both);
	if (req->ndlq_config)
		memcpy(*both + req->nconfig, req->dlq_config, req->ndlq_config * sizeof **both);
	for (i = 0; i < n; i++)
		spec[i] = (struct ot_topic_spec){names[i], req->partitions, req->replication, *both,
		                                 req->nconfig + (is_dlq(names[i]) ? req->ndlq_config : 0)};
	return spec;
}

int
ot_topics_print(const struct ot_config *cfg, const struct ot_topics_req *req, const char *const *names, size_t n,
                FILE *f, char *errstr, size_t errsz)
{
	struct ot_topic_spec *spec = NULL;
	enum ot_topic_outcome *outcome = NULL;
	const char **both = NULL;
	char *line;
	int rc = OT_OK, unknown = 0;
	json_t *a = NULL, *t;
	size_t i;

	if (req) {
		if (!n) {
			names = default_topics;
			n = sizeof default_topics / sizeof default_topics[0];
		}
		if (!(outcome = calloc(n, sizeof *outcome)) || !(spec = specs(req, names, n, &both))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		if ((rc = ot_topics_ensure(cfg, spec, n, outcome, errstr, errsz)))
			goto out;
	}
	if (!(a = ot_topics_describe(cfg, names, n, &rc, errstr, errsz)))
		goto out;
	json_array_foreach(a, i, t) {
		if (outcome) {
			json_object_set_new(t, "created", json_boolean(outcome[i] == OT_TOPIC_CREATED));
			json_object_set_new(t, "altered", json_boolean(outcome[i] == OT_TOPIC_ALTERED));
		}
		if (json_object_get(t, "error"))
			unknown++;
		if (!(line = json_dumps(t, OT_JSON_FLAGS))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		fprintf(f, "%s\n", line);
		free(line);
		if (outcome && outcome[i] == OT_TOPIC_CREATED)
			OT_INFO(NULL, "topics: created %s", names[i]);
	}
	if (fflush(f) || ferror(f))
		rc = ot_err(OT_EOUTPUT, errstr, errsz, "writing output failed");
	else if (unknown)
		rc = ot_err(OT_EINPUT, errstr, errsz, "topics: %d of the topics named do not exist", unknown);
out:
	json_decref(a);
	free(spec);
	free(outcome);
	free(both);
	return rc;
}
