/*
 * metrics.c: the Prometheus registry behind metrics.h.
 *
 * Families live in a fixed array and series in a per-family growable
 * array; both only grow while the process runs, so the label sets must
 * be bounded by the caller (routes, status codes, reasons, exporter
 * names from config).  Instance ids are the exception: AppInstalled
 * brings new ones for as long as the daemon runs.  So a family keeps
 * at most METRICS_MAX_SERIES series and drops the ones past that, with
 * a warning, instead of stopping the daemon.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/metrics.h"
#include "util/xmalloc.h"

#define METRICS_MAX_FAMILIES	64
#define METRICS_MAX_BOUNDS	16
#define METRICS_MAX_SERIES	1024

struct series {
	char	*labels;
	int64_t	 value;				/* counter, gauge or count */
	int64_t	 sum;				/* histogram */
	int64_t	 buckets[METRICS_MAX_BOUNDS];	/* histogram, cumulative */
};

struct family {
	const char	*name;
	const char	*help;
	enum metric_type type;
	bool		 full;		/* a series was dropped */
	int64_t		 bounds[METRICS_MAX_BOUNDS];
	size_t		 nbounds;
	int64_t		 scale;
	struct series	*series;
	size_t		 nseries;
};

static pthread_mutex_t	 mtx = PTHREAD_MUTEX_INITIALIZER;
static struct family	 families[METRICS_MAX_FAMILIES];
static size_t		 nfamilies;

static struct family *
family_find(const char *name)
{
	for (size_t i = 0; i < nfamilies; i++)
		if (strcmp(families[i].name, name) == 0)
			return &families[i];
	return NULL;
}

static struct family *
family_add(const char *name, enum metric_type type, const char *help)
{
	struct family *f;

	if (family_find(name) != NULL)
		return NULL;
	if (nfamilies == METRICS_MAX_FAMILIES)
		RS_PANIC("too many metric families");
	f = &families[nfamilies++];
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->help = help;
	f->type = type;
	f->scale = 1;
	return f;
}

void
metrics_define(const char *name, enum metric_type type, const char *help)
{
	pthread_mutex_lock(&mtx);
	(void)family_add(name, type, help);
	pthread_mutex_unlock(&mtx);
}

void
metrics_define_histogram(const char *name, const char *help,
    const int64_t *bounds, size_t nbounds, int64_t scale)
{
	struct family *f;

	if (nbounds > METRICS_MAX_BOUNDS || scale <= 0)
		RS_PANIC("bad histogram definition");
	pthread_mutex_lock(&mtx);
	if ((f = family_add(name, METRIC_HISTOGRAM, help)) != NULL) {
		memcpy(f->bounds, bounds, nbounds * sizeof(*bounds));
		f->nbounds = nbounds;
		f->scale = scale;
	}
	pthread_mutex_unlock(&mtx);
}

/*
 * Called with mtx held.  NULL when the family already has
 * METRICS_MAX_SERIES series: the new one is dropped, with one warning
 * per family, rather than the daemon stopping for want of a metric.
 */
static struct series *
series_get(const char *name, const char *labels, enum metric_type want)
{
	struct family *f;
	struct series *s;

	if ((f = family_find(name)) == NULL)
		fatalx("%s: metric %s was never defined", __func__, name);
	if ((want == METRIC_HISTOGRAM) != (f->type == METRIC_HISTOGRAM))
		fatalx("%s: metric %s used with the wrong type", __func__,
		    name);
	for (size_t i = 0; i < f->nseries; i++)
		if (strcmp(f->series[i].labels, labels) == 0)
			return &f->series[i];
	if (f->nseries == METRICS_MAX_SERIES) {
		if (!f->full)
			log_warnx("metrics: %s has %d series, the most kept: "
			    "new ones (%s first) are not shown", name,
			    METRICS_MAX_SERIES, labels);
		f->full = true;
		return NULL;
	}
	f->series = xreallocarray(f->series, f->nseries + 1,
	    sizeof(*f->series));
	s = &f->series[f->nseries++];
	memset(s, 0, sizeof(*s));
	s->labels = xstrdup(labels);
	return s;
}

void
metrics_add(const char *name, const char *labels, int64_t n)
{
	struct series *s;

	pthread_mutex_lock(&mtx);
	if ((s = series_get(name, labels, METRIC_COUNTER)) != NULL)
		s->value += n;
	pthread_mutex_unlock(&mtx);
}

void
metrics_set(const char *name, const char *labels, int64_t v)
{
	struct series *s;

	pthread_mutex_lock(&mtx);
	if ((s = series_get(name, labels, METRIC_GAUGE)) != NULL)
		s->value = v;
	pthread_mutex_unlock(&mtx);
}

void
metrics_observe(const char *name, const char *labels, int64_t v)
{
	struct family *f;
	struct series *s;

	pthread_mutex_lock(&mtx);
	if ((s = series_get(name, labels, METRIC_HISTOGRAM)) == NULL) {
		pthread_mutex_unlock(&mtx);
		return;
	}
	f = family_find(name);
	for (size_t i = 0; i < f->nbounds; i++)
		if (v <= f->bounds[i])
			s->buckets[i]++;
	s->value++;
	s->sum += v;
	pthread_mutex_unlock(&mtx);
}

int64_t
metrics_get(const char *name, const char *labels)
{
	struct family *f;
	int64_t v = 0;

	pthread_mutex_lock(&mtx);
	if ((f = family_find(name)) != NULL)
		for (size_t i = 0; i < f->nseries; i++)
			if (strcmp(f->series[i].labels, labels) == 0)
				v = f->series[i].value;
	pthread_mutex_unlock(&mtx);
	return v;
}

char *
metrics_label(const char *name, const char *value)
{
	struct buf b;
	const char *s;

	/* Every byte escaped, the quotes and '=': room for all. */
	buf_init(&b, strlen(name) + 2 * strlen(value) + 3);
	(void)buf_printf(&b, "%s=\"", name);
	for (s = value; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			(void)buf_printf(&b, "\\%c", *s);
		else if (*s == '\n')
			(void)buf_appends(&b, "\\n");
		else
			(void)buf_append(&b, s, 1);
	}
	(void)buf_appends(&b, "\"");
	return buf_detach(&b, NULL);
}

/* Print v / scale as a decimal without floating point. */
static void
put_scaled(struct buf *out, int64_t v, int64_t scale)
{
	int64_t whole = v / scale, frac = v % scale;
	int digits = 0;

	if (scale == 1) {
		(void)buf_printf(out, "%lld", (long long)v);
		return;
	}
	for (int64_t s = scale; s > 1; s /= 10)
		digits++;
	if (frac < 0)
		frac = -frac;
	(void)buf_printf(out, "%s%lld.%0*lld", v < 0 && whole == 0 ? "-" : "",
	    (long long)whole, digits, (long long)frac);
}

static void
put_labels(struct buf *out, const char *labels, const char *extra)
{
	bool l = labels[0] != '\0', e = extra != NULL && extra[0] != '\0';

	if (!l && !e)
		return;
	(void)buf_printf(out, "{%s%s%s}", labels, l && e ? "," : "",
	    e ? extra : "");
}

void
metrics_render(struct buf *out)
{
	static const char *tnames[] = { "counter", "gauge", "histogram" };

	pthread_mutex_lock(&mtx);
	for (size_t i = 0; i < nfamilies; i++) {
		struct family *f = &families[i];

		(void)buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name,
		    f->help, f->name, tnames[f->type]);
		for (size_t j = 0; j < f->nseries; j++) {
			struct series *s = &f->series[j];

			if (f->type != METRIC_HISTOGRAM) {
				(void)buf_appends(out, f->name);
				put_labels(out, s->labels, NULL);
				(void)buf_printf(out, " %lld\n",
				    (long long)s->value);
				continue;
			}
			for (size_t b = 0; b < f->nbounds; b++) {
				struct buf le;

				buf_init(&le, 64);
				(void)buf_appends(&le, "le=\"");
				put_scaled(&le, f->bounds[b], f->scale);
				(void)buf_appends(&le, "\"");
				(void)buf_printf(out, "%s_bucket", f->name);
				put_labels(out, s->labels, le.data);
				(void)buf_printf(out, " %lld\n",
				    (long long)s->buckets[b]);
				buf_cleanup(&le);
			}
			(void)buf_printf(out, "%s_bucket", f->name);
			put_labels(out, s->labels, "le=\"+Inf\"");
			(void)buf_printf(out, " %lld\n%s_sum", (long long)s->value,
			    f->name);
			put_labels(out, s->labels, NULL);
			(void)buf_appends(out, " ");
			put_scaled(out, s->sum, f->scale);
			(void)buf_printf(out, "\n%s_count", f->name);
			put_labels(out, s->labels, NULL);
			(void)buf_printf(out, " %lld\n", (long long)s->value);
		}
	}
	pthread_mutex_unlock(&mtx);
}

void
metrics_reset(void)
{
	pthread_mutex_lock(&mtx);
	for (size_t i = 0; i < nfamilies; i++) {
		for (size_t j = 0; j < families[i].nseries; j++)
			free(families[i].series[j].labels);
		free(families[i].series);
	}
	nfamilies = 0;
	pthread_mutex_unlock(&mtx);
}
