/* ot_run: the shared record loop. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_run.h"
#include "ot_signal.h"

void
ot_backoff(int attempt)
{
	long ms = 100L << (attempt < 6 ? attempt : 6);
	struct timespec ts;

	if (ms > 5000)
		ms = 5000;
	ms = ms / 2 + rand() % (ms / 2 + 1); /* jitter: restarts of many consumers spread out */
	for (; ms > 0 && !ot_stop; ms -= 50) {
		ts.tv_sec = 0;
		ts.tv_nsec = (ms < 50 ? ms : 50) * 1000000L;
		nanosleep(&ts, NULL);
	}
}

#define MAX_TOPICS 16

static struct ot_metric *m_records, *m_handling, *m_age;
static _Thread_local const char *skip_as;
/* The timestamp of the last record handled per topic, for the age gauge at scrape time. */
static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { char tool[32], topic[128]; long long ts_ms; } last[MAX_TOPICS];
static int nlast;

void
ot_run_skipped_as(const char *result)
{
	skip_as = result;
}

static void
age_collect(void *arg)
{
	long long now;
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
	pthread_mutex_lock(&last_mu);
	for (int i = 0; i < nlast; i++)
		ot_metric_set(m_age, (double)(now - last[i].ts_ms) / 1000.0, last[i].tool, last[i].topic);
	pthread_mutex_unlock(&last_mu);
}

static void
register_metrics(void)
{
	if (m_records)
		return;
	m_records = ot_metric_new(OT_COUNTER, "ot_records_total", "Input records by outcome: applied, duplicate, "
	                          "stale, late, ignored, dead_lettered, bad; retried counts extra attempts.",
	                          "tool,topic,result", NULL, 0);
	m_handling = ot_metric_new(OT_HISTOGRAM, "ot_record_handling_seconds",
	                           "Time to handle one record, retries included.", "tool,topic", NULL, 0);
	m_age = ot_metric_new(OT_GAUGE, "ot_kafka_last_record_age_seconds",
	                      "Now minus the timestamp of the last Kafka record handled.", "tool,topic", NULL, 0);
	ot_metrics_collector(age_collect, NULL);
}

/* Notes the Kafka record just handled for the age gauge. */
static void
note_last(const char *tool, const struct ot_msg *m)
{
	int i;

	if (m->ts_ms <= 0)
		return;
	pthread_mutex_lock(&last_mu);
	for (i = 0; i < nlast && strcmp(last[i].topic, m->topic); i++)
		;
	if (i == nlast && nlast < MAX_TOPICS) {
		snprintf(last[i].tool, sizeof last[i].tool, "%s", tool);
		snprintf(last[i].topic, sizeof last[i].topic, "%s", m->topic);
		nlast++;
	}
	if (i < nlast)
		last[i].ts_ms = m->ts_ms;
	pthread_mutex_unlock(&last_mu);
}

/* What to do with a record the handler gave up on. Returns 0 when it was dealt with. */
static int
poison(struct ot_in *in, const struct ot_msg *m, const char *err, int attempts, struct ot_run_stats *st)
{
	char derr[512];

	if (!ot_in_is_kafka(in)) {
		st->bad++;
		ot_metric_add(m_records, 1, ot_in_tool(in), m->topic, "bad");
		OT_ERROR(NULL, "%s: %s", m->where, err);
		return 0;
	}
	if (ot_in_dead_letter(in, m, err, attempts, derr, sizeof derr)) {
		/* Not done: it is read again once the dead-letter topic takes it. */
		OT_ERROR(NULL, "%s: cannot dead-letter (%s): %s", m->where, derr, err);
		return OT_ESERVICE;
	}
	st->dead++;
	ot_metric_add(m_records, 1, ot_in_tool(in), m->topic, "dead_lettered");
	OT_ERROR(NULL, "%s: sent to %s.dlq after %d attempt%s: %s", m->where, m->topic, attempts,
	         attempts == 1 ? "" : "s", err);
	return 0;
}

void
ot_run_span(struct ot_span *s, const struct ot_msg *m, const struct ot_event *ev)
{
	char name[96], num[32];
	const char *parent = m->traceparent && ot_traceparent_valid(m->traceparent) ? m->traceparent
	                                                                           : ev->traceparent;

	snprintf(name, sizeof name, "handle %s", ev->type);
	ot_span_begin(s, name, OT_SPAN_CONSUMER, parent);
	if (!s->exported)
		return;
	ot_span_tag(s, "order_id", ev->order_id);
	ot_span_tag(s, "event.id", ev->id);
	if (m->topic && strcmp(m->topic, "-")) {
		ot_span_tag(s, "messaging.system", "kafka");
		ot_span_tag(s, "messaging.source", m->topic);
		snprintf(num, sizeof num, "%d", (int)m->partition);
		ot_span_tag(s, "messaging.kafka.partition", num);
	}
	snprintf(num, sizeof num, "%lld", (long long)m->offset);
	ot_span_tag(s, m->topic && strcmp(m->topic, "-") ? "messaging.kafka.offset" : "line", num);
}

static void (*idle_fn)(void *);
static void *idle_arg;

void
ot_run_set_idle(void (*fn)(void *arg), void *arg)
{
	idle_fn = fn;
	idle_arg = arg;
}

int
ot_run(struct ot_in *in, ot_handler h, void *arg, struct ot_run_stats *stats)
{
	struct ot_run_stats st = {0, 0, 0, 0, 0, 0};
	struct ot_msg m;
	long long t0;
	const char *tool = ot_in_tool(in);
	char err[1024];
	int r, rc = OT_OK, attempt, max = ot_in_attempts(in);

	srand((unsigned)time(NULL) ^ (unsigned)clock());
	register_metrics();
	while (!ot_stop) {
		r = ot_in_next(in, &m, 500, err, sizeof err);
		if (r == 0) {
			if (idle_fn)
				idle_fn(idle_arg);
			continue;
		}
		if (r == -1)
			break;
		if (r < 0) {
			OT_ERROR(NULL, "%s", err);
			rc = OT_ESERVICE;
			break;
		}
		st.records++;
		t0 = ot_now_us();
		for (attempt = 1;; attempt++) {
			err[0] = '\0';
			skip_as = "duplicate";
			r = h(arg, &m, err, sizeof err);
			if (r == OT_OK || r == OT_SKIP || r == OT_EINPUT || attempt >= max || ot_stop)
				break;
			st.retries++;
			ot_metric_add(m_records, 1, tool, m.topic, "retried");
			OT_WARN(NULL, "%s: attempt %d of %d failed, retrying: %s", m.where, attempt, max, err);
			ot_backoff(attempt - 1);
		}
		ot_metric_observe(m_handling, (double)(ot_now_us() - t0) / 1e6, tool, m.topic);
		note_last(tool, &m);
		if (r == OT_OK) {
			st.ok++;
			ot_metric_add(m_records, 1, tool, m.topic, "applied");
		} else if (r == OT_SKIP) {
			st.skipped++;
			ot_metric_add(m_records, 1, tool, m.topic, skip_as);
			if (err[0])
				OT_INFO(NULL, "%s: skipped: %s", m.where, err);
		} else if (r == OT_EINPUT) {
			if ((rc = poison(in, &m, err, attempt, &st)))
				break;
		} else if (ot_stop) {
			break; /* interrupted between attempts: left for the next run */
		} else if (r == OT_ESERVICE || r == OT_EOUTPUT) {
			/* Not done: the record is read again after a restart. */
			OT_ERROR(NULL, "%s: giving up after %d attempts: %s", m.where, attempt, err);
			rc = r;
			break;
		} else if ((rc = poison(in, &m, err, attempt, &st))) {
			break; /* failed every attempt while the services answer: poison */
		}
		ot_in_done(in, &m);
	}
	if (rc == OT_OK && st.bad)
		rc = OT_EINPUT;
	if (stats)
		*stats = st;
	return rc;
}
