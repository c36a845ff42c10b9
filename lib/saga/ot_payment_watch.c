/* ot_payment_watch: ot_payments_unknown and its oldest age, counted off the consumer's thread. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_err.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_payment_watch.h"
#include "ot_pg.h"

struct ot_payment_watch {
	char *conninfo;
	long interval_ms;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int poked, stopping;
};

/* One count: the gauges set, or left as they were when the database did not answer. */
static void
count(PGconn **db, const char *conninfo)
{
	struct ot_metric *m_n = ot_metric_new(OT_GAUGE, "ot_payments_unknown", "Payments whose outcome the processor "
	                                      "has not told (UNKNOWN) now.", NULL, NULL, 0);
	struct ot_metric *m_age = ot_metric_new(OT_GAUGE, "ot_payments_unknown_oldest_seconds", "Age of the oldest "
	                                        "payment in UNKNOWN, from its first missed answer; 0 when none.",
	                                        NULL, NULL, 0);
	char err[512];
	PGresult *res;
	int rc;

	if (!*db && !(*db = ot_pg_connect(conninfo, err, sizeof err))) {
		OT_WARN(NULL, "counting the unknown payments: %s", err);
		return;
	}
	if (!(res = ot_pg_query(*db, "SELECT count(*), coalesce(extract(epoch FROM now() - min(updated_at)), 0) "
	                        "FROM payments WHERE status = 'UNKNOWN'", 0, NULL, &rc, err, sizeof err))) {
		OT_WARN(NULL, "counting the unknown payments: %s", err);
		PQfinish(*db);
		*db = NULL; /* a new connection next round */
		return;
	}
	ot_metric_set(m_n, strtod(PQgetvalue(res, 0, 0), NULL));
	ot_metric_set(m_age, strtod(PQgetvalue(res, 0, 1), NULL));
	PQclear(res);
}

static void *
run(void *arg)
{
	struct ot_payment_watch *w = arg;
	PGconn *db = NULL;
	struct timespec until;

	pthread_mutex_lock(&w->mu);
	while (!w->stopping) {
		w->poked = 0;
		pthread_mutex_unlock(&w->mu);
		count(&db, w->conninfo);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += w->interval_ms / 1000;
		until.tv_nsec += (w->interval_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&w->mu);
		while (!w->stopping && !w->poked)
			if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT)
				break;
	}
	pthread_mutex_unlock(&w->mu);
	PQfinish(db);
	return NULL;
}

struct ot_payment_watch *
ot_payment_watch_start(const char *conninfo, long interval_ms, char *errstr, size_t errsz)
{
	struct ot_payment_watch *w = calloc(1, sizeof *w);

	if (!w || !(w->conninfo = strdup(conninfo ? conninfo : ""))) {
		free(w);
		ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	w->interval_ms = interval_ms > 0 ? interval_ms : 15000;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->thread, NULL, run, w)) {
		pthread_cond_destroy(&w->cv);
		pthread_mutex_destroy(&w->mu);
		free(w->conninfo);
		free(w);
		ot_err(OT_EINTERNAL, errstr, errsz, "cannot start the thread that counts unknown payments");
		return NULL;
	}
	return w;
}

void
ot_payment_watch_poke(struct ot_payment_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->poked = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
ot_payment_watch_stop(struct ot_payment_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stopping = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w->conninfo);
	free(w);
}
