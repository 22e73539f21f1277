/*
 * metrics.h: a process-wide registry of Prometheus counters, gauges and
 * histograms, rendered in the text exposition format (version 0.0.4).
 *
 * Families are defined once (metrics_define*), before or after threads
 * start; series are created on first use from a label string such as
 * `route="webhook",code="200"` that the caller formats.  One mutex guards
 * the registry; an update is a lookup among a handful of series, cheap
 * next to the request it counts.  Values are integers: histogram
 * observations are in the unit the family's name says (seconds are
 * given in microseconds and rendered as seconds).
 */
#ifndef RS_METRICS_H
#define RS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

enum metric_type {
	METRIC_COUNTER,
	METRIC_GAUGE,
	METRIC_HISTOGRAM
};

/*
 * Define a family.  name and help are borrowed and must be static.
 * For a histogram, bounds[] (ascending, in observation units) and
 * nbounds give the buckets; scale divides them and the sum for display
 * (1000000 turns microseconds into seconds, 1 leaves them).  Defining the
 * same name twice is a no-op.
 */
void	metrics_define(const char *name, enum metric_type type,
	    const char *help);
void	metrics_define_histogram(const char *name, const char *help,
	    const int64_t *bounds, size_t nbounds, int64_t scale);

/* labels may be "" for none.  Unknown names are an invariant failure.
 * A family holds at most 1024 series: an update that would make one
 * more does nothing (the first such logs a warning). */
void	metrics_add(const char *name, const char *labels, int64_t n);
void	metrics_set(const char *name, const char *labels, int64_t v);
void	metrics_observe(const char *name, const char *labels, int64_t v);
/*
 * The label `name="value"`, with the backslash, double quote and newline
 * of value escaped as the text format wants; any other byte is kept.
 * Caller owns the result; free with free().
 */
char	*metrics_label(const char *name, const char *value);
/* Value of a counter or gauge series; 0 if absent.  For tests. */
int64_t	metrics_get(const char *name, const char *labels);

/* Append the whole registry in text format to out. */
void	metrics_render(struct buf *out);
/* Drop every family and series (tests). */
void	metrics_reset(void);

#endif
