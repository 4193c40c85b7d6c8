/* memfd_exec SRC [ARGS...]
 *
 * Copies the file SRC into memfd_create("oe-memfd", MFD_CLOEXEC) and runs
 * fexecve(memfd, {SRC, ARGS...}, environ).  The exec'd program's
 * /proc/PID/exe (and d_path of its file) is "/memfd:oe-memfd (deleted)".
 *
 * SRC must be an ELF: with a close-on-exec fd the kernel marks the binprm
 * path inaccessible and a "#!" script fails with ENOENT.
 *
 * On kernels >= 6.3 MFD_EXEC is added (so vm.memfd_noexec=1 does not seal
 * the memfd non-executable); older kernels reject it with EINVAL and we
 * retry without.  Exit status 127 if anything fails.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "common.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

extern char **environ;

int main(int argc, char **argv)
{
	int src, fd;

	if (argc < 2) {
		fprintf(stderr, "usage: %s SRC [ARGS...]\n", argv[0]);
		return 2;
	}
	src = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (src < 0)
		die("open SRC");
	fd = memfd_create("oe-memfd", MFD_CLOEXEC | MFD_EXEC);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("oe-memfd", MFD_CLOEXEC);
	if (fd < 0)
		die("memfd_create");
	if (copy_fd(src, fd) < 0)
		die("copy");
	close(src);
	fexecve(fd, argv + 1, environ);
	die("fexecve");
}
