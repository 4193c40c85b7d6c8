/* Minimal JSON string output for arbitrary bytes.
 *
 * Convention: every byte maps to one code point U+0000..U+00FF, i.e. the
 * string is the latin-1 decoding of the bytes.  '"' and '\\' are escaped,
 * bytes < 0x20 and >= 0x7f are written as \u00XX, so the output is pure
 * ASCII.  In Python: json.loads(...)[...].encode("latin-1") gives back the
 * exact bytes (tests/helpers/progs.py: decode_bytes()).
 */
#ifndef OE_PROGS_JSON_H
#define OE_PROGS_JSON_H

#include <stdio.h>
#include <string.h>

static inline void json_bytes(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static inline void json_str(FILE *f, const char *s)
{
	if (s)
		json_bytes(f, s, strlen(s));
	else
		fputs("null", f);
}

#endif
