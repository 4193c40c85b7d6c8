/* execveat_fd [--dir DIR] PATH ARG0 [ARGS...]
 *
 * Without --dir: opens PATH O_RDONLY (NOT close-on-exec, so "#!" scripts
 * work too) and runs execveat(fd, "", {ARG0, ARGS...}, environ,
 * AT_EMPTY_PATH): the kernel names the binprm "/dev/fd/N".
 * With --dir: opens DIR O_PATH|O_DIRECTORY and runs
 * execveat(dirfd, PATH, {ARG0, ARGS...}, environ, 0) with PATH relative
 * (the kernel names the binprm "/dev/fd/N/PATH"); DIR may be a path that is
 * only reachable relative to the cwd.
 *
 * If fd 3 is open at start, "<fd>\n" is written to it and fd 3 is closed
 * right before the exec.  Exit status 127 if anything fails.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>

#include "common.h"

extern char **environ;

int main(int argc, char **argv)
{
	const char *dir = NULL;
	int i = 1, fd, flags = 0, report = fd_is_open(REPORT_FD);
	const char *name = "";

	if (argc > 2 && !strcmp(argv[1], "--dir")) {
		dir = argv[2];
		i = 3;
	}
	if (argc - i < 2) {
		fprintf(stderr, "usage: %s [--dir DIR] PATH ARG0 [ARGS...]\n", argv[0]);
		return 2;
	}
	if (dir) {
		fd = open(dir, O_PATH | O_DIRECTORY);
		name = argv[i];
	} else {
		fd = open(argv[i], O_RDONLY);
		flags = AT_EMPTY_PATH;
	}
	if (fd < 0)
		die("open");
	if (report) {
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "%d\n", fd);
		if (write_all(REPORT_FD, buf, (size_t)n) < 0)
			die("write fd 3");
		close(REPORT_FD);
	}
	syscall(SYS_execveat, fd, name, argv + i + 1, environ, flags);
	die("execveat");
}
