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
#include "ot_outcome.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_signal.h"

void
ot_backoff(int attempt)
{
	long ms = ot_backoff_ms(attempt, 100, 5000); /* jitter: restarts of many consumers spread out */
	struct timespec ts;

	for (; ms > 0 && !ot_stop; ms -= 50) {
		ts.tv_sec = 0;
		ts.tv_nsec = (ms < 50 ? ms : 50) * 1000000L;
		nanosleep(&ts, NULL);
	}
}

#define MAX_TOPICS 16

static struct ot_metric *m_records, *m_handling, *m_age;
/* The timestamp of the last record handled per topic, for the age gauge at scrape time. */
static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { char tool[32], topic[128]; long long ts_ms; } last[MAX_TOPICS];
static int nlast;

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

/* A record taken, with its outcome: counted, and one that changed nothing logged at info. */
static void
counted(struct ot_run_stats *st, const char *tool, const struct ot_msg *m, int outcome, const char *err)
{
	if (outcome == OT_APPLIED || outcome == OT_UNREAD)
		st->ok++;
	else
		st->skipped++;
	ot_metric_add(m_records, 1, tool, m->topic, ot_outcome_label(outcome));
	if (outcome != OT_APPLIED && err[0])
		OT_INFO(NULL, "%s: skipped: %s", m->where, err);
}

/* What one() returns when a stop request interrupted a record: the loop ends, not in error. */
#define STOPPED 100

/* One record through the handler, with its retries, then counted and marked done, or
 * dead-lettered. Returns 0 to go on, or the ot_rc that stops the loop (the record not done). */
static int
one(struct ot_in *in, ot_handler h, void *arg, const struct ot_msg *m, struct ot_run_stats *st)
{
	const char *tool = ot_in_tool(in);
	long long t0 = ot_now_us();
	char err[1024];
	int r, rc, attempt, max = ot_in_attempts(in);

	for (attempt = 1;; attempt++) {
		err[0] = '\0';
		r = h(arg, m, err, sizeof err);
		if (r >= 0 || ot_refused(r) || attempt >= max || ot_stop)
			break;
		st->retries++;
		ot_metric_add(m_records, 1, tool, m->topic, "retried");
		OT_WARN(NULL, "%s: attempt %d of %d failed, retrying: %s", m->where, attempt, max, err);
		ot_backoff(attempt - 1);
	}
	ot_metric_observe(m_handling, (double)(ot_now_us() - t0) / 1e6, tool, m->topic);
	note_last(tool, m);
	if (r >= 0) {
		counted(st, tool, m, r, err);
	} else if (ot_refused(r)) {
		if ((rc = poison(in, m, err, attempt, st)))
			return rc;
	} else if (ot_stop) {
		return STOPPED; /* interrupted between attempts: left for the next run */
	} else if (r == OT_ESERVICE || r == OT_EOUTPUT || r == OT_ERACE) {
		/* Not done: the record is read again after a restart. */
		OT_ERROR(NULL, "%s: giving up after %d attempts: %s", m->where, attempt, err);
		return r;
	} else if ((rc = poison(in, m, err, attempt, st))) {
		return rc; /* failed every attempt while the services answer: poison */
	}
	ot_in_done(in, m);
	return 0;
}

static ot_batch_handler batch_fn;

static struct ot_event *
run_events(const struct ot_msg *ms, size_t n, struct ot_batch_res *res)
{
	struct ot_event *evs = calloc(n, sizeof *evs);

	for (size_t i = 0; evs && i < n; i++)
		/* One that does not parse is left to the per-record handler, which reports it. */
		res[i].rc = ot_event_parse(&evs[i], ms[i].value, ms[i].len, NULL, 0) ? OT_EINTERNAL : OT_OK;
	return evs;
}

static void
run_events_free(struct ot_event *evs, size_t n)
{
	for (size_t i = 0; evs && i < n; i++)
		ot_event_clear(&evs[i]);
	free(evs);
}

void
ot_run_set_batch(ot_batch_handler hb)
{
	batch_fn = hb;
}

/* A record kept for a batch: its fields copied out of the input's buffers, which the next
 * ot_in_next reuses. */
struct kept {
	struct ot_msg m;
	char *buf;
};

static int
keep(struct ot_in *in, struct kept *k, struct ot_msg *m)
{
	size_t tl = strlen(m->topic) + 1, pl = m->traceparent ? strlen(m->traceparent) + 1 : 0;
	char *p;

	if (!(p = realloc(k->buf, m->len + 1 + m->key_len + tl + pl)))
		return -1;
	k->buf = p;
	k->m = *m;
	memcpy(p, m->value, m->len);
	p[m->len] = '\0';
	k->m.value = p;
	p += m->len + 1;
	if (m->key) {
		memcpy(p, m->key, m->key_len);
		k->m.key = p;
		p += m->key_len;
	}
	memcpy(p, m->topic, tl);
	k->m.topic = p;
	p += tl;
	if (pl) {
		memcpy(p, m->traceparent, pl);
		k->m.traceparent = p;
	}
	ot_in_hold(in, m);
	return 0;
}

/* The kept records through the batch handler in one transaction; what it could not take, and
 * the whole batch when its transaction failed, through the per-record path. Returns 0 or the
 * ot_rc that stops the loop. */
static int
batch(struct ot_in *in, ot_handler h, void *arg, struct kept *k, struct ot_msg *ms,
      struct ot_batch_res *res, size_t n, struct ot_run_stats *st)
{
	const char *tool = ot_in_tool(in);
	long long t0 = ot_now_us();
	char err[1024];
	double each;
	size_t i;
	int r, rc;

	for (i = 0; i < n; i++) {
		ms[i] = k[i].m;
		res[i].rc = OT_EINTERNAL;
		res[i].err[0] = '\0';
	}
	err[0] = '\0';
	if ((r = batch_fn(arg, ms, n, res, err, sizeof err)) != OT_OK) {
		/* Nothing of it was committed: each record alone, with its own retries and dead letter. */
		OT_DEBUG(NULL, "a batch of %zu records was not applied (%s): one at a time", n, err);
		for (i = 0; i < n; i++)
			if ((rc = one(in, h, arg, &ms[i], st)))
				return rc;
		return 0;
	}
	each = (double)(ot_now_us() - t0) / 1e6 / (double)n;
	for (i = 0; i < n; i++) {
		if (ot_refused(res[i].rc)) {
			/* Refused inside the batch, judged against the state the records before it left,
			 * as one at a time: a poison record, with its reason. Retried alone after the
			 * batch, it would be judged against later records' effects too. */
			ot_metric_observe(m_handling, each, tool, ms[i].topic);
			note_last(tool, &ms[i]);
			if ((rc = poison(in, &ms[i], res[i].err[0] ? res[i].err : "refused", 1, st)))
				return rc;
			ot_in_done(in, &ms[i]);
			continue;
		}
		if (res[i].rc < 0) {
			/* Not taken by the batch, having written nothing: alone, with its retries. */
			if ((rc = one(in, h, arg, &ms[i], st)))
				return rc;
			continue;
		}
		ot_metric_observe(m_handling, each, tool, ms[i].topic);
		note_last(tool, &ms[i]);
		counted(st, tool, &ms[i], res[i].rc, res[i].err);
		ot_in_done(in, &ms[i]);
	}
	return 0;
}

/* How long a batch may take to gather: records already waiting are taken at once, so this
 * only bounds a stream that trickles in faster than it is applied. */
#define GATHER_US 20000

int
ot_run(struct ot_in *in, ot_handler h, void *arg, struct ot_run_stats *stats)
{
	struct ot_run_stats st = {0, 0, 0, 0, 0, 0};
	struct ot_msg m, *ms = NULL;
	struct ot_batch_res *res = NULL;
	struct kept *k = NULL;
	size_t n, i, max = batch_fn ? (size_t)ot_in_batch(in) : 1;
	long long t0;
	char err[1024];
	int r, rc = OT_OK;

	srand((unsigned)time(NULL) ^ (unsigned)clock());
	register_metrics();
	if (max > 1 && (!(k = calloc(max, sizeof *k)) || !(ms = calloc(max, sizeof *ms)) ||
	                !(res = calloc(max, sizeof *res)))) {
		OT_ERROR(NULL, "out of memory for a batch of %zu records", max);
		rc = OT_EINTERNAL;
		goto out;
	}
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
		if (max <= 1) {
			if ((rc = one(in, h, arg, &m, &st)))
				break;
			continue;
		}
		/* What else is waiting joins it, up to the batch size. */
		n = 0;
		t0 = ot_now_us();
		do {
			if (keep(in, &k[n], &m)) {
				OT_ERROR(NULL, "%s: out of memory", m.where);
				rc = OT_EINTERNAL;
				goto out;
			}
			n++;
		} while (n < max && ot_now_us() - t0 < GATHER_US && (r = ot_in_next(in, &m, 0, err, sizeof err)) == 1 &&
		         ++st.records);
		rc = n == 1 ? one(in, h, arg, &k[0].m, &st) : batch(in, h, arg, k, ms, res, n, &st);
		for (i = 0; i < n; i++)
			ot_in_release(in, &k[i].m);
		if (rc)
			break;
		if (r == -1)
			break;
		if (r == -2) {
			OT_ERROR(NULL, "%s", err);
			rc = OT_ESERVICE;
			break;
		}
	}
out:
	if (rc == STOPPED)
		rc = OT_OK;
	if (k)
		for (i = 0; i < max; i++) {
			ot_in_release(in, &k[i].m);
			free(k[i].buf);
		}
	free(k);
	free(ms);
	free(res);
	if (rc == OT_OK && st.bad)
		rc = OT_EINPUT;
	if (stats)
		*stats = st;
	return rc;
}

/* The order id before a skip's or a refusal's message; other messages are left as they are. */
static void
name_order(int rc, const char *order_id, char *msg, size_t sz)
{
	char tmp[768];

	if ((rc > 0 || ot_refused(rc)) && msg[0]) {
		snprintf(tmp, sizeof tmp, "order %s: %s", order_id, msg);
		snprintf(msg, sz, "%s", tmp);
	}
}

static int
step_one(void *arg, const struct ot_msg *m, char *errstr, size_t errsz)
{
	const struct ot_step *step = arg;
	struct ot_event ev;
	struct ot_span sp;
	int rc;

	if (ot_event_parse(&ev, m->value, m->len, errstr, errsz))
		return OT_EINPUT;
	ot_run_span(&sp, m, &ev);
	if (!(rc = ot_pg_ensure(step->db, errstr, errsz)))
		rc = step->one(step->arg, &ev, errstr, errsz);
	name_order(rc, ev.order_id, errstr, errsz);
	if (rc < 0)
		ot_span_error(&sp, errstr);
	ot_span_end(&sp);
	ot_event_clear(&ev);
	return rc;
}

static int
step_batch(void *arg, const struct ot_msg *ms, size_t n, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	const struct ot_step *step = arg;
	struct ot_event *evs;
	int rc;

	if (!(evs = run_events(ms, n, res)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	if (!(rc = ot_pg_ensure(step->db, errstr, errsz)))
		rc = step->batch(step->arg, ms, evs, n, res, errstr, errsz);
	for (size_t i = 0; i < n; i++)
		name_order(res[i].rc, evs[i].order_id, res[i].err, sizeof res[i].err);
	run_events_free(evs, n);
	return rc;
}

int
ot_run_step(struct ot_in *in, const struct ot_step *step, struct ot_run_stats *stats)
{
	ot_run_set_batch(step->batch ? step_batch : NULL);
	return ot_run(in, step_one, (void *)step, stats);
}
