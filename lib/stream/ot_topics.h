/* ot_topics: Kafka topics as a deployment wants them: created, their settings kept in line, listed. */
#ifndef OT_TOPICS_H
#define OT_TOPICS_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

struct ot_config;

/* What one topic should be. */
struct ot_topic_spec {
	const char *name;
	int partitions;             /* of a new topic */
	int replication;            /* replicas; -1: the broker's default.replication.factor */
	const char *const *config;  /* "key=value" topic settings; of a key given twice, the last */
	size_t nconfig;
};

enum ot_topic_outcome {
	OT_TOPIC_KEPT,              /* there already, its settings as asked */
	OT_TOPIC_CREATED,
	OT_TOPIC_ALTERED            /* there already; settings changed to those asked */
};

/* Makes each of the n topics what spec says, idempotently: a topic that does not exist is
 * created with its partitions, replicas and settings; one that exists keeps its partitions
 * and replicas (more partitions would move keys between partitions, more replicas is a
 * reassignment: neither is done here; fewer or more partitions than asked is logged) and gets
 * the settings asked, every other setting it has left as it was. Nothing is changed, and
 * OT_ECONFIG returned, for an existing topic whose replication factor is not the one asked, or
 * one whose replication factor (asked or found) is below the min.insync.replicas asked:
 * producers with acks=all could never write to it. out (n entries, may be NULL) gets each
 * topic's outcome. Returns once every topic shows in the metadata with its settings: 0,
 * OT_ECONFIG for a request Kafka calls invalid (a replication factor above the broker count,
 * an unknown setting), or OT_ESERVICE (unreachable, not authorized). */
int ot_topics_ensure(const struct ot_config *cfg, const struct ot_topic_spec *spec, size_t n,
                     enum ot_topic_outcome *out, char *errstr, size_t errsz);

/* The topics as a JSON array of {"topic","partitions","replication_factor","config"} (config:
 * the settings set on the topic itself, as strings, not the broker's defaults), or
 * {"topic","error":"unknown topic"} for one that does not exist; with n 0 every topic but
 * Kafka's internal (__) ones, by name. Returns a new reference, or NULL with *rc and errstr. */
json_t *ot_topics_describe(const struct ot_config *cfg, const char *const *topics, size_t n, int *rc,
                           char *errstr, size_t errsz);

/* What "topics create" asks of every topic it makes: config for all, dlq_config over it for
 * the ".dlq" ones. */
struct ot_topics_req {
	int partitions, replication;
	const char *const *config;
	size_t nconfig;
	const char *const *dlq_config;
	size_t ndlq_config;
};

/* With req, ot_topics_ensure of names[0..n) (n 0: every topic the tools use, and their .dlq)
 * as req asks; then each topic as a JSON line on f, as ot_topics_describe has it (with req,
 * plus "created" and "altered"). Returns 0, OT_EINPUT when a topic named does not exist,
 * OT_EOUTPUT when f failed, or what stopped it, with errstr. */
int ot_topics_print(const struct ot_config *cfg, const struct ot_topics_req *req, const char *const *names,
                    size_t n, FILE *f, char *errstr, size_t errsz);

#endif
