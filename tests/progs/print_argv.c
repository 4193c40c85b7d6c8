/* print_argv [ARGS...]
 *
 * Prints one JSON object on stdout and exits 0:
 *   {"pid": P, "argc": N, "argv": [...], "env": [...],
 *    "cmdline": "<raw /proc/self/cmdline, NULs included>",
 *    "exe": "<readlink /proc/self/exe>",
 *    "execfn": "<getauxval(AT_EXECFN): the filename execve was given,
 *                e.g. /dev/fd/N for fexecve/execveat>"}
 * Strings use the latin-1 convention of json.h: decode_bytes() in
 * tests/helpers/progs.py turns them back into the exact bytes.
 */
#define _GNU_SOURCE
#include <sys/auxv.h>

#include "common.h"
#include "json.h"

extern char **environ;

static void json_array(FILE *f, char **v, int n)
{
	fputc('[', f);
	for (int i = 0; (n < 0 ? v[i] != NULL : i < n); i++) {
		if (i)
			fputs(", ", f);
		json_str(f, v[i]);
	}
	fputc(']', f);
}

int main(int argc, char **argv)
{
	char buf[1 << 16], exe[4096];
	size_t len = 0;
	ssize_t n;
	int fd;

	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		while (len < sizeof(buf) &&
		       (n = read(fd, buf + len, sizeof(buf) - len)) > 0)
			len += (size_t)n;
		close(fd);
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n < 0 ? 0 : n] = '\0';

	printf("{\"pid\": %d, \"argc\": %d, \"argv\": ", (int)getpid(), argc);
	json_array(stdout, argv, argc);
	fputs(", \"env\": ", stdout);
	json_array(stdout, environ, -1);
	fputs(", \"cmdline\": ", stdout);
	json_bytes(stdout, buf, len);
	fputs(", \"exe\": ", stdout);
	json_str(stdout, exe);
	fputs(", \"execfn\": ", stdout);
	json_str(stdout, (const char *)getauxval(AT_EXECFN));
	fputs("}\n", stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}
