/*
 * termsafe.h: text from outside shown on a terminal.
 *
 * Refund ids, statuses and error texts come from Wix (or from whoever
 * holds a signing key) and may hold escape sequences.  Everything the
 * CLI prints of them in its text output goes through here, so that
 * none can drive the operator's terminal: each control byte (below
 * 0x20, and 0x7f) is shown as '?'.  JSON output needs none of this;
 * cJSON escapes control characters.
 */
#ifndef RS_TERMSAFE_H
#define RS_TERMSAFE_H

#include <stddef.h>
#include <stdio.h>

/* s (NULL: "") with control bytes as '?', cut to fit len bytes with its
 * NUL, into buf (len >= 1).  Returns buf. */
const char	*term_safe(const char *s, char *buf, size_t len);

/* Write s (NULL: nothing) to out with control bytes as '?'.  Returns the
 * number of bytes written. */
size_t		 term_fputs(const char *s, FILE *out);

#endif
