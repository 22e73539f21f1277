/*
 * termsafe.c: text from outside shown on a terminal.  Hand-written: a
 * byte map is smaller than any library that would do it (OpenBSD's
 * strvis(3) is not in Debian's libc).
 */
#include "util/termsafe.h"

static char
term_byte(char c)
{
	if ((unsigned char)c < 0x20 || c == 0x7f)
		return '?';
	return c;
}

const char *
term_safe(const char *s, char *buf, size_t len)
{
	size_t i;

	if (s == NULL)
		s = "";
	for (i = 0; s[i] != '\0' && i + 1 < len; i++)
		buf[i] = term_byte(s[i]);
	buf[i] = '\0';
	return buf;
}

size_t
term_fputs(const char *s, FILE *out)
{
	size_t n = 0;

	for (; s != NULL && s[n] != '\0'; n++)
		fputc(term_byte(s[n]), out);
	return n;
}
