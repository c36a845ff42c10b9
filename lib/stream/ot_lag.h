/* ot_lag: consumer-group lag as Kafka sees it, read from outside the consumers: each group's
 * committed offsets (admin API) against each partition's high watermark, so lag stays
 * measured when every member of a group is gone. */
#ifndef OT_LAG_H
#define OT_LAG_H

#include <stddef.h>

struct ot_config;
struct ot_lag;

/* A lag reader on cfg's brokers and Kafka properties. groups (n names, borrowed for the
 * reader's life) limits it to those groups; n 0 reads every consumer group. Returns NULL with
 * *rc (OT_ECONFIG, OT_ESERVICE: no broker answered) and errstr. Free with ot_lag_free. */
struct ot_lag *ot_lag_new(const struct ot_config *cfg, const char *const *groups, size_t n, int *rc,
                          char *errstr, size_t errsz);

/* One reading: lists the consumer groups (with their member counts), reads each group's
 * committed offsets, and the watermarks of every partition of each topic a group committed
 * on; then sets ot_kafka_consumergroup_lag{group,topic,partition} (high watermark minus
 * committed offset; on a partition of such a topic where the group committed nothing, every
 * record still there, as a member starting at the earliest offset would read them) and
 * ot_kafka_consumergroup_members{group}, and drops the series of groups and partitions that
 * are gone. Returns 0, or OT_ESERVICE with errstr, the last reading's series then left as
 * they were and ot_kafka_lag_errors_total counting it. Not thread-safe: one caller. */
int ot_lag_refresh(struct ot_lag *l, char *errstr, size_t errsz);

/* 0 when the last refresh succeeded at most max_age_ms ago, else -1 with why. Thread-safe
 * beside ot_lag_refresh (for /readyz). */
int ot_lag_ready(struct ot_lag *l, long long max_age_ms, char *why, size_t whysz);

/* Accepts NULL. */
void ot_lag_free(struct ot_lag *l);

#endif
