/* ot_io_int: what the input (ot_io.c), the output (ot_io_out.c) and the Kafka clients
 * (ot_io_kafka.c) share: the input's state and the calls that make and read a Kafka client. */
#ifndef OT_IO_INT_H
#define OT_IO_INT_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ot_config.h"

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

static inline int
is_kafka_spec(const char *spec)
{
	return !strncmp(spec, KAFKA_PREFIX, 5) && (spec[5] == '\0' || spec[5] == ':');
}

/* ot_io_kafka.c. A client's configuration: brokers, client id, our log and error callbacks;
 * NULL with errstr. */
rd_kafka_conf_t *io_base_conf(const struct ot_config *cfg, char *errstr, size_t errsz);
/* The operator's -F and -X properties, applied last; 0, or an OT_E* code with errstr. */
int io_apply_props(rd_kafka_conf_t *conf, const struct ot_config *cfg, char *errstr, size_t errsz);
/* 0 when a broker answers, else OT_ESERVICE with errstr. */
int io_check_reachable(rd_kafka_t *rk, const char *brokers, char *errstr, size_t errsz);
/* Every topic's metadata (free with rd_kafka_metadata_destroy); NULL with errstr. */
const struct rd_kafka_metadata *io_all_metadata(rd_kafka_t *rk, int timeout_ms, char *errstr, size_t errsz);
/* topic in md, when it exists and has partitions; else NULL. */
const struct rd_kafka_metadata_topic *io_find_topic(const struct rd_kafka_metadata *md, const char *topic);
/* librdkafka's log lines through ours. */
void io_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
/* in's assigned partition (topic, partition); NULL when it is not one. */
struct part *io_find_part(struct ot_in *in, const char *topic, int32_t partition);
/* Whether in has partitions assigned and every one has reached its end. */
int io_all_eof(const struct ot_in *in);
/* Makes in a consumer of topics (comma-separated) in cfg's group; in on success, else NULL
 * with *rc and errstr (in is the caller's to free). */
struct ot_in *io_open_kafka_in(struct ot_in *in, const char *topics, const struct ot_config *cfg, int *rc,
                               char *errstr, size_t errsz);

#endif
