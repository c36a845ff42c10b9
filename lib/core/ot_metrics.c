/* ot_metrics: the registry, one mutex over every family; series found by a short linear scan
 * (a tool has tens of them), so counting stays cheap and a scrape sees one consistent state. */
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ot_metrics.h"

#define MAX_LABELS 8

const double ot_metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25, 0.5, 1, 2.5, 5, 10};
const size_t ot_metrics_latency_nbuckets = sizeof ot_metrics_latency_buckets / sizeof ot_metrics_latency_buckets[0];

struct series {
	char **values;        /* one per label name */
	double v;             /* counter or gauge */
	double sum;           /* histogram */
	unsigned long long *counts; /* histogram: per bucket, the last +Inf; not cumulative */
	struct series *next;
};

struct ot_metric {
	enum ot_metric_type type;
	char *name, *help;
	char *labels[MAX_LABELS];
	size_t nlabels;
	double *bounds;
	size_t nbounds;
	struct series *series, **tail;
	struct ot_metric *next;
};

struct collector {
	void (*fn)(void *);
	void *arg;
	struct collector *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct ot_metric *families, **families_tail = &families;
static struct collector *collectors;

static void
series_free(struct ot_metric *m, struct series *s)
{
	for (size_t i = 0; s->values && i < m->nlabels; i++)
		free(s->values[i]);
	free(s->values);
	free(s->counts);
	free(s);
}

static void
family_free(struct ot_metric *m)
{
	struct series *s, *next;

	for (s = m->series; s; s = next) {
		next = s->next;
		series_free(m, s);
	}
	for (size_t i = 0; i < m->nlabels; i++)
		free(m->labels[i]);
	free(m->bounds);
	free(m->name);
	free(m->help);
	free(m);
}

/* The label values in ap, NULL as "". */
static void
values_of(const struct ot_metric *m, va_list ap, const char **vals)
{
	for (size_t i = 0; i < m->nlabels; i++) {
		vals[i] = va_arg(ap, const char *);
		if (!vals[i])
			vals[i] = "";
	}
}

/* The series of m with the label values vals, created if new; NULL when out of memory.
 * Called with mu held. */
static struct series *
series_of(struct ot_metric *m, const char *const *vals)
{
	struct series *s;
	size_t i;

	for (s = m->series; s; s = s->next) {
		for (i = 0; i < m->nlabels && !strcmp(s->values[i], vals[i]); i++)
			;
		if (i == m->nlabels)
			return s;
	}
	if (!(s = calloc(1, sizeof *s)) || (m->nlabels && !(s->values = calloc(m->nlabels, sizeof *s->values))) ||
	    (m->type == OT_HISTOGRAM && !(s->counts = calloc(m->nbounds + 1, sizeof *s->counts))))
		goto oom;
	for (i = 0; i < m->nlabels; i++)
		if (!(s->values[i] = strdup(vals[i])))
			goto oom;
	*m->tail = s;
	m->tail = &s->next;
	return s;
oom:
	if (s)
		series_free(m, s);
	return NULL;
}

struct ot_metric *
ot_metric_new(enum ot_metric_type type, const char *name, const char *help, const char *labels,
              const double *bounds, size_t nbounds)
{
	struct ot_metric *m;
	const char *p;

	pthread_mutex_lock(&mu);
	for (m = families; m && strcmp(m->name, name); m = m->next)
		;
	if (m) {
		if (m->type != type)
			m = NULL;
		goto out;
	}
	if (!(m = calloc(1, sizeof *m)) || !(m->name = strdup(name)) || !(m->help = strdup(help)))
		goto oom;
	m->type = type;
	m->tail = &m->series;
	for (p = labels; p && *p && m->nlabels < MAX_LABELS; p += strcspn(p, ","), p += *p == ',') {
		size_t n = strcspn(p, ",");
		if (!(m->labels[m->nlabels] = strndup(p, n)))
			goto oom;
		m->nlabels++;
	}
	if (type == OT_HISTOGRAM) {
		if (!bounds) {
			bounds = ot_metrics_latency_buckets;
			nbounds = ot_metrics_latency_nbuckets;
		}
		if (!(m->bounds = malloc(nbounds * sizeof *m->bounds)))
			goto oom;
		memcpy(m->bounds, bounds, nbounds * sizeof *m->bounds);
		m->nbounds = nbounds;
	}
	/* A family without labels has its one series from the start: it shows 0, not nothing. */
	if (!m->nlabels && !series_of(m, NULL))
		goto oom;
	*families_tail = m;
	families_tail = &m->next;
	goto out;
oom:
	if (m)
		family_free(m);
	m = NULL;
out:
	pthread_mutex_unlock(&mu);
	return m;
}

static void
update(struct ot_metric *m, int op, double v, va_list ap)
{
	const char *vals[MAX_LABELS];
	struct series *s;
	size_t b;

	values_of(m, ap, vals);
	pthread_mutex_lock(&mu);
	if ((s = series_of(m, vals))) {
		if (op == 's')
			s->v = v;
		else if (op == 'a')
			s->v += v;
		else if (m->type == OT_HISTOGRAM) {
			for (b = 0; b < m->nbounds && v > m->bounds[b]; b++)
				;
			s->counts[b]++;
			s->sum += v;
		}
	}
	pthread_mutex_unlock(&mu);
}

void
ot_metric_add(struct ot_metric *m, double v, ...)
{
	va_list ap;

	if (!m)
		return;
	va_start(ap, v);
	update(m, 'a', v, ap);
	va_end(ap);
}

void
ot_metric_set(struct ot_metric *m, double v, ...)
{
	va_list ap;

	if (!m)
		return;
	va_start(ap, v);
	update(m, 's', v, ap);
	va_end(ap);
}

void
ot_metric_observe(struct ot_metric *m, double v, ...)
{
	va_list ap;

	if (!m)
		return;
	va_start(ap, v);
	update(m, 'o', v, ap);
	va_end(ap);
}

double
ot_metric_get(struct ot_metric *m, ...)
{
	const char *vals[MAX_LABELS];
	struct series *s;
	va_list ap;
	double v = 0;

	if (!m)
		return 0;
	va_start(ap, m);
	values_of(m, ap, vals);
	pthread_mutex_lock(&mu);
	if ((s = series_of(m, vals)))
		v = s->v;
	pthread_mutex_unlock(&mu);
	va_end(ap);
	return v;
}

void
ot_metric_clear(struct ot_metric *m)
{
	struct series *s, *next;

	if (!m || !m->nlabels)
		return;
	pthread_mutex_lock(&mu);
	for (s = m->series; s; s = next) {
		next = s->next;
		series_free(m, s);
	}
	m->series = NULL;
	m->tail = &m->series;
	pthread_mutex_unlock(&mu);
}

void
ot_metric_retain(struct ot_metric *m, int (*keep)(const char *const *values, void *arg), void *arg)
{
	struct series **p, *s;

	if (!m)
		return;
	pthread_mutex_lock(&mu);
	for (p = &m->series; (s = *p);) {
		if (keep((const char *const *)s->values, arg)) {
			p = &s->next;
			continue;
		}
		*p = s->next;
		series_free(m, s);
	}
	m->tail = p;
	pthread_mutex_unlock(&mu);
}

int
ot_metrics_collector(void (*fn)(void *arg), void *arg)
{
	struct collector *c = malloc(sizeof *c);

	if (!c)
		return -1;
	c->fn = fn;
	c->arg = arg;
	pthread_mutex_lock(&mu);
	c->next = collectors;
	collectors = c;
	pthread_mutex_unlock(&mu);
	return 0;
}

void
ot_metrics_collector_remove(void (*fn)(void *arg), void *arg)
{
	struct collector **p, *c;

	pthread_mutex_lock(&mu);
	for (p = &collectors; (c = *p); p = &c->next)
		if (c->fn == fn && c->arg == arg) {
			*p = c->next;
			free(c);
			break;
		}
	pthread_mutex_unlock(&mu);
}

/* A growing text buffer; once an append fails, it stays failed. */
struct buf {
	char **s;
	size_t *len, cap;
	int failed;
};

static void
append(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char line[1024];
	int n;
	char *nb;

	if (b->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line) {
		b->failed = 1;
		return;
	}
	if (*b->len + (size_t)n + 1 > b->cap) {
		size_t cap = (*b->len + (size_t)n + 1) * 2;
		if (!(nb = realloc(*b->s, cap))) {
			b->failed = 1;
			return;
		}
		*b->s = nb;
		b->cap = cap;
	}
	memcpy(*b->s + *b->len, line, (size_t)n + 1);
	*b->len += (size_t)n;
}

/* Label values escaped as the text format wants: backslash, double quote and newline. */
static void
escape(char *out, size_t outsz, const char *in)
{
	size_t o = 0;

	for (; *in && o + 3 < outsz; in++) {
		if (*in == '\\' || *in == '"' || *in == '\n') {
			out[o++] = '\\';
			out[o++] = *in == '\n' ? 'n' : *in;
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

/* "a=\"x\",b=\"y\"" for s, with extra ("le=\"0.5\"") appended if given. */
static void
label_text(const struct ot_metric *m, const struct series *s, const char *extra, char *out, size_t outsz)
{
	char v[256];
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < m->nlabels && o < outsz; i++) {
		escape(v, sizeof v, s->values[i]);
		o += (size_t)snprintf(out + o, outsz - o, "%s%s=\"%s\"", i ? "," : "", m->labels[i], v);
	}
	if (extra && o < outsz)
		snprintf(out + o, outsz - o, "%s%s", o ? "," : "", extra);
}

static void
render_family(struct buf *b, const struct ot_metric *m)
{
	static const char *const tname[] = {"counter", "gauge", "histogram"};
	const struct series *s;
	char labels[768], le[48];
	unsigned long long cum;

	append(b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, tname[m->type]);
	for (s = m->series; s; s = s->next) {
		if (m->type != OT_HISTOGRAM) {
			label_text(m, s, NULL, labels, sizeof labels);
			append(b, "%s%s%s%s %.16g\n", m->name, *labels ? "{" : "", labels, *labels ? "}" : "", s->v);
			continue;
		}
		cum = 0;
		for (size_t i = 0; i <= m->nbounds; i++) {
			cum += s->counts[i];
			if (i < m->nbounds)
				snprintf(le, sizeof le, "le=\"%g\"", m->bounds[i]);
			else
				snprintf(le, sizeof le, "le=\"+Inf\"");
			label_text(m, s, le, labels, sizeof labels);
			append(b, "%s_bucket{%s} %llu\n", m->name, labels, cum);
		}
		label_text(m, s, NULL, labels, sizeof labels);
		append(b, "%s_sum%s%s%s %.16g\n", m->name, *labels ? "{" : "", labels, *labels ? "}" : "", s->sum);
		append(b, "%s_count%s%s%s %llu\n", m->name, *labels ? "{" : "", labels, *labels ? "}" : "", cum);
	}
}

int
ot_metrics_render(char **buf, size_t *len)
{
	struct buf b = {buf, len, *len, 0};
	struct collector *c;
	const struct ot_metric *m;

	/* Collectors set gauges, which takes the lock: run them before. The list only grows at
	 * start and shrinks at stop, never under a scrape. */
	for (c = collectors; c; c = c->next)
		c->fn(c->arg);
	pthread_mutex_lock(&mu);
	for (m = families; m; m = m->next)
		render_family(&b, m);
	pthread_mutex_unlock(&mu);
	return b.failed ? -1 : 0;
}

void
ot_metrics_reset(void)
{
	struct ot_metric *m, *next;
	struct collector *c, *cn;

	pthread_mutex_lock(&mu);
	for (m = families; m; m = next) {
		next = m->next;
		family_free(m);
	}
	families = NULL;
	families_tail = &families;
	for (c = collectors; c; c = cn) {
		cn = c->next;
		free(c);
	}
	collectors = NULL;
	pthread_mutex_unlock(&mu);
}

static char tool_name[32] = "ordertrack";

void
ot_metrics_set_tool(const char *tool)
{
	/* Once, at configuration, before any thread reads it. */
	snprintf(tool_name, sizeof tool_name, "%s", tool ? tool : "ordertrack");
}

const char *
ot_metrics_tool(void)
{
	return tool_name;
}

static struct ot_metric *m_start, *m_rss, *m_fds;

/* The process's start in seconds since the epoch: boot time plus its start in clock ticks. */
static double
start_time(void)
{
	char line[1024], *p;
	unsigned long long ticks = 0, btime = 0;
	FILE *f;
	int i;

	if ((f = fopen("/proc/stat", "r"))) {
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "btime %llu", &btime) == 1)
				break;
		fclose(f);
	}
	if ((f = fopen("/proc/self/stat", "r"))) {
		/* The command name may hold spaces: fields count from after its closing parenthesis. */
		if (fgets(line, sizeof line, f) && (p = strrchr(line, ')'))) {
			for (i = 0; i < 20 && p; i++)
				p = strchr(p + 1, ' ');
			if (p)
				ticks = strtoull(p + 1, NULL, 10);
		}
		fclose(f);
	}
	if (!btime)
		return (double)time(NULL);
	return (double)btime + (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

static void
process_collect(void *arg)
{
	unsigned long long pages = 0, rss = 0;
	struct dirent *e;
	DIR *d;
	FILE *f;
	long fds = 0;

	(void)arg;
	if ((f = fopen("/proc/self/statm", "r"))) {
		if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	ot_metric_set(m_rss, (double)rss * (double)sysconf(_SC_PAGESIZE));
	if ((d = opendir("/proc/self/fd"))) {
		while ((e = readdir(d)))
			fds += e->d_name[0] != '.';
		closedir(d);
		fds--; /* the one reading the directory */
	}
	ot_metric_set(m_fds, (double)fds);
}

void
ot_metrics_process(const char *tool, const char *version)
{
	ot_metric_set(ot_metric_new(OT_GAUGE, "ot_build_info", "Always 1; the labels say which tool and version run.",
	                            "tool,version", NULL, 0), 1, tool, version);
	m_start = ot_metric_new(OT_GAUGE, "process_start_time_seconds",
	                        "Start time of the process since the Unix epoch in seconds.", NULL, NULL, 0);
	m_rss = ot_metric_new(OT_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL, NULL, 0);
	m_fds = ot_metric_new(OT_GAUGE, "process_open_fds", "Number of open file descriptors.", NULL, NULL, 0);
	ot_metric_set(m_start, start_time());
	ot_metrics_collector(process_collect, NULL);
}
