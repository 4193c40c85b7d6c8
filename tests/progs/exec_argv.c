/* exec_argv [--env-file FILE] [--] PATH [ARGV...]
 * exec_argv [--env-file FILE] --argc0 [--] PATH
 *
 * execve(PATH, {ARGV..., NULL}, envp): the new program's argv is exactly
 * ARGV (argv[0] is the first ARGV; empty strings are kept), PATH is only the
 * file to exec.  Giving no ARGV, or --argc0, passes argv = {NULL}
 * (argc == 0).
 *
 * argc == 0: since Linux 5.18 (commit dcd46d897adb "exec: Force single
 * empty string when argv is empty") the kernel pushes one empty string, so
 * the new program sees argc == 1, argv[0] == "" and /proc/PID/cmdline is
 * the single byte "\0" (verified on 6.18 by tests/harness/test_progs.py, which
 * execs print_argv this way).  bprm->argc, as an exec tracer sees it at
 * sched_process_exec, is 1 as well; the kernel logs a one-time warning
 * "launching <path> with NULL argv: empty string added".
 *
 * --env-file FILE: envp is read from FILE as NUL-separated entries, passed
 * verbatim (no '=' needed, any bytes, any size).  A trailing NUL is
 * optional; "a\0\0b\0" gives {"a", "", "b"}; an empty file gives envp =
 * {NULL}.  Without --env-file, envp is this process's environ.
 *
 * Exit status 127 if exec fails, 2 on usage errors.
 */
#define _GNU_SOURCE
#include "common.h"

extern char **environ;

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [--env-file FILE] [--] PATH [ARGV...]\n"
		"       %s [--env-file FILE] --argc0 [--] PATH\n", prog, prog);
	exit(2);
}

static char **read_env_file(const char *file)
{
	size_t cap = 65536, len = 0, n = 0, i;
	char *buf = malloc(cap + 1), **envp, *p;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("open env file");
	if (!buf)
		die("malloc");
	for (;;) {
		ssize_t r;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			if (!buf)
				die("realloc");
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("read env file");
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (len > 0 && buf[len - 1] != '\0')
		buf[len++] = '\0'; /* room reserved by the +1 */
	for (i = 0; i < len; i++)
		n += buf[i] == '\0';
	envp = calloc(n + 1, sizeof(*envp));
	if (!envp)
		die("calloc");
	for (i = 0, p = buf; p < buf + len; p += strlen(p) + 1)
		envp[i++] = p;
	envp[i] = NULL;
	return envp;
}

int main(int argc, char **argv)
{
	static char *no_argv[] = { NULL };
	char **envp = environ, **new_argv;
	int argc0 = 0, i = 1;

	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--env-file")) {
			if (++i >= argc)
				usage(argv[0]);
			envp = read_env_file(argv[i]);
		} else if (!strcmp(argv[i], "--argc0")) {
			argc0 = 1;
		} else if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else {
			break;
		}
	}
	if (i >= argc || (argc0 && i + 1 != argc))
		usage(argv[0]);
	new_argv = argc0 ? no_argv : argv + i + 1;
	execve(argv[i], new_argv, envp);
	die("execve");
}
