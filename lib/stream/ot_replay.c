/* ot_replay: a dead-letter topic read back, filtered, and republished or printed. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_outcome.h"
#include "ot_replay.h"
#include "ot_signal.h"

#define MAX_HEADERS 64

struct ot_in *
ot_replay_open(struct ot_config *cfg, const char *from, int *rc, char *errstr, size_t errsz)
{
	struct ot_in *in;
	char spec[300], group[64];

	/* The whole dead-letter topic unless -o says otherwise, and no commits: replay does
	 * exactly what its filters select, however often it is run. */
	if (!strcmp(cfg->offset, "stored")) {
		free(cfg->offset);
		cfg->offset = strdup("beginning");
	}
	snprintf(group, sizeof group, "%s-replay-%ld", cfg->tool, (long)getpid());
	if (!cfg->group || !strcmp(cfg->group, cfg->tool)) {
		free(cfg->group);
		cfg->group = strdup(group);
	}
	cfg->exit_at_end = 1;
	snprintf(spec, sizeof spec, "%s%s", strcmp(from, "-") ? "kafka:" : "", from);
	/* Up to the ends the topic had at the start: a record that fails again and is
	 * dead-lettered meanwhile waits for the next replay, instead of going round. */
	if (!(in = ot_in_open_no_dlq(spec, cfg, rc, errstr, errsz)))
		return NULL;
	if ((*rc = ot_in_stop_at_end(in, errstr, errsz))) {
		ot_in_free(in);
		return NULL;
	}
	return in;
}

int
ot_replay_count_parse(const char *s, int *n)
{
	long v = 0;

	if (!s || !*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > OT_REPLAY_COUNT_MAX)
			return -1;
	}
	*n = (int)v;
	return 0;
}

int
ot_replay_target_check(const char *topic, char *errstr, size_t errsz)
{
	size_t i, len = topic ? strlen(topic) : 0;

	if (len == 0 || len > 249 || !strcmp(topic, ".") || !strcmp(topic, ".."))
		return ot_err(-1, errstr, errsz, "\"%s\" is not a Kafka topic name", topic ? topic : "");
	for (i = 0; i < len; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", topic[i]))
			return ot_err(-1, errstr, errsz, "\"%s\" is not a Kafka topic name", topic);
	if (!strncmp(topic, "__", 2))
		return ot_err(-1, errstr, errsz, "%s is an internal topic", topic);
	return 0;
}

static const char *
header(json_t *rec, const char *name)
{
	return json_string_value(json_object_get(json_object_get(rec, "headers"), name));
}

/* One dead letter: filtered, refused, printed or republished. Counts it in st unless it is
 * republished (the caller counts those once the output took them). */
static int
one(json_t *rec, struct ot_out *out, const struct ot_replay *o, struct ot_replay_stats *st,
    const char *where, char *errstr, size_t errsz)
{
	const char *origin = header(rec, "ot-dlq-topic"), *dts = header(rec, "ot-dlq-ts"), *name;
	const char *rc_s = header(rec, "ot-replay-count");
	struct ot_header h[MAX_HEADERS];
	json_t *hdrs = json_object_get(rec, "headers"), *v, *value = json_object_get(rec, "value");
	char count[16], why[300], *line, *vbuf;
	long long ts;
	size_t n = 0;
	int replays = 0, rc;

	if (!json_is_object(hdrs) || !origin || !*origin || !value) {
		st->bad++;
		return ot_err(OT_EINPUT, errstr, errsz, "%s: not a dead letter (no headers, ot-dlq-topic or value)", where);
	}
	/* A count that does not parse must not reset the loop guard below. */
	if (rc_s && ot_replay_count_parse(rc_s, &replays)) {
		st->bad++;
		return ot_err(OT_EINPUT, errstr, errsz, "%s: ot-replay-count \"%s\": expected 0 to %d",
		              where, rc_s, OT_REPLAY_COUNT_MAX);
	}
	if (o->since_ms || o->until_ms) {
		if (!dts || ot_time_ms(dts, &ts)) {
			st->bad++;
			return ot_err(OT_EINPUT, errstr, errsz, "%s: no usable ot-dlq-ts header", where);
		}
		if ((o->since_ms && ts < o->since_ms) || (o->until_ms && ts >= o->until_ms)) {
			st->filtered++;
			return OT_FILTERED;
		}
	}
	if (ot_replay_target_check(origin, why, sizeof why)) {
		st->refused++;
		return ot_err(OT_EINPUT, errstr, errsz, "%s: ot-dlq-topic: %s: refusing to replay there",
		              where, why);
	}
	/* A record that keeps coming back is not fixed by sending it again. */
	if (replays >= o->limit) {
		st->refused++;
		return ot_err(OT_EINPUT, errstr, errsz, "%s: already replayed %d times (limit %d): "
		              "refusing to loop; last error: %s", where, replays, o->limit,
		              header(rec, "ot-dlq-error") ? header(rec, "ot-dlq-error") : "?");
	}
	if (o->dry_run) {
		line = json_dumps(rec, OT_JSON_FLAGS);
		rc = line ? ot_out_send(out, NULL, NULL, line, strlen(line), NULL, 0, errstr, errsz)
		          : ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		free(line);
		if (!rc)
			st->replayed++;
		return rc;
	}
	json_object_foreach(hdrs, name, v) {
		if (!strncmp(name, "ot-dlq-", 7) || !strcmp(name, "ot-replay-count") || !json_is_string(v))
			continue;
		if (n < MAX_HEADERS - 1)
			h[n++] = (struct ot_header){name, json_string_value(v)};
	}
	snprintf(count, sizeof count, "%d", replays + 1);
	h[n++] = (struct ot_header){"ot-replay-count", count};
	/* Any JSON value is a value: without JSON_ENCODE_ANY a null or a number came back NULL. */
	vbuf = json_is_string(value) ? strdup(json_string_value(value))
	                             : json_dumps(value, OT_JSON_FLAGS | JSON_ENCODE_ANY);
	if (!vbuf)
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	rc = ot_out_send(out, origin, json_string_value(json_object_get(rec, "key")), vbuf,
	                 strlen(vbuf), h, n, errstr, errsz);
	free(vbuf);
	if (!rc) {
		st->replayed++;
		ot_metric_add(ot_metric_new(OT_COUNTER, "ot_dlq_replayed_total", "Dead-lettered records sent back to "
		                            "their topic.", "topic", NULL, 0), 1, origin);
		OT_INFO(json_string_value(json_object_get(rec, "key")), "%s: replayed to %s (replay %d)",
		        where, origin, replays + 1);
	}
	return rc;
}

int
ot_replay_run(struct ot_in *in, struct ot_out *out, const struct ot_replay *o,
              struct ot_replay_stats *st, char *errstr, size_t errsz)
{
	struct ot_msg m;
	json_t *rec;
	char err[1024];
	int r, rc = OT_OK, bad = 0;

	memset(st, 0, sizeof *st);
	while (!ot_stop && (!o->max || st->replayed < o->max)) {
		r = ot_in_next(in, &m, 500, errstr, errsz);
		if (r == 0)
			continue;
		if (r == -1)
			break;
		if (r < 0)
			return OT_ESERVICE;
		st->read++;
		rec = ot_in_is_kafka(in) ? ot_in_describe(in, &m) : json_loadb(m.value, m.len, 0, NULL);
		if (!json_is_object(rec)) {
			OT_ERROR(NULL, "%s: not a JSON object", m.where);
			st->bad++;
			bad = 1;
			json_decref(rec);
			continue;
		}
		r = one(rec, out, o, st, m.where, err, sizeof err);
		json_decref(rec);
		if (r == OT_EINPUT) {
			OT_ERROR(NULL, "%s", err);
			bad = 1;
		} else if (r < 0) {
			return ot_err(r, errstr, errsz, "%s", err);
		}
	}
	if ((r = ot_out_flush(out, 30000, errstr, errsz)))
		return r;
	return rc ? rc : bad ? OT_EINPUT : OT_OK;
}
