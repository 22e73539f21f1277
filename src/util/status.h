/*
 * status.h: the one status enum of the project.
 *
 * Every fallible function returns an enum rs_status.  The codes tell the
 * caller what to do next, not what broke inside: reject the input, retry
 * later, treat it as not found, or stop.
 */
#ifndef RS_STATUS_H
#define RS_STATUS_H

enum rs_status {
	RS_OK = 0,		/* success */
	RS_ERR_INPUT,		/* malformed input: reject it (HTTP 400) */
	RS_ERR_AUTH,		/* signature, algorithm or claims failed (401) */
	RS_ERR_TOOBIG,		/* input over a configured ceiling (413) */
	RS_ERR_RANGE,		/* well-formed, but not representable */
	RS_ERR_NOTFOUND,	/* no such object */
	RS_ERR_BUSY,		/* store locked or full: retry later (503) */
	RS_ERR_IO,		/* an I/O or library failure */
	RS_ERR_CONFIG,		/* bad configuration */
	RS_ERR_STOPPING,	/* the component is shutting down */
	RS_ERR_INTERNAL		/* a bug: should never be seen */
};

/* A short, static, lower-case name for st ("bad input", ...). */
const char *rs_strstatus(enum rs_status st);

#endif
