/* execveat_unlinked SRC DIR ARG0 [ARGS...]
 *
 * Copies SRC to a new file DIR/oe-unlinked-XXXXXX (mode 0755), opens it
 * O_RDONLY (NOT close-on-exec, so "#!" scripts work too: the kernel then
 * names the binprm "/dev/fd/N"), unlinks it, and runs
 *   execveat(fd, "", {ARG0, ARGS...}, environ, AT_EMPTY_PATH).
 * The exec'd program inherits that fd.
 *
 * If fd 3 is open at start, one JSON line is written to it (then fd 3 is
 * closed) right before the exec, describing the already-unlinked file:
 *   {"path": "<abs path of the temp file>", "pid": P, "tid": T,
 *    "fd": N, "dev": st_dev, "dev_major": M, "dev_minor": m, "ino": I,
 *    "nlink": 0, "ctime_sec": S, "ctime_nsec": NS,
 *    "ctime_pre_unlink_sec": S0, "ctime_pre_unlink_nsec": NS0}
 * ctime_* is from fstat() after the unlink (unlink bumps ctime), i.e. the
 * inode state the kernel sees at exec time; ctime_pre_unlink_* is before.
 * "dev" is the userspace st_dev encoding; dev_major/dev_minor are what to
 * compare with a kernel dev_t (MAJOR = dev >> 20, MINOR = dev & 0xfffff).
 * "path" is JSON-escaped; bytes >= 0x80 are emitted as \u00XX (latin-1).
 * Exit status 127 if anything fails.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "common.h"
#include "json.h"

extern char **environ;

int main(int argc, char **argv)
{
	char dir[PATH_MAX], path[PATH_MAX + 32];
	struct stat pre, post;
	int report, src, tmp, fd;

	if (argc < 4) {
		fprintf(stderr, "usage: %s SRC DIR ARG0 [ARGS...]\n", argv[0]);
		return 2;
	}
	report = fd_is_open(REPORT_FD);

	if (!realpath(argv[2], dir))
		die("realpath DIR");
	snprintf(path, sizeof(path), "%s/oe-unlinked-XXXXXX", dir);
	tmp = mkostemp(path, O_CLOEXEC);
	if (tmp < 0)
		die("mkostemp");
	src = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (src < 0)
		die("open SRC");
	if (copy_fd(src, tmp) < 0)
		die("copy");
	if (fchmod(tmp, 0755) < 0)
		die("fchmod");
	close(src);
	close(tmp); /* a writable fd would make execveat fail with ETXTBSY */

	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open temp");
	if (fstat(fd, &pre) < 0)
		die("fstat");
	if (unlink(path) < 0)
		die("unlink");
	if (fstat(fd, &post) < 0)
		die("fstat");

	if (report) {
		FILE *f = fdopen(REPORT_FD, "w");
		if (!f)
			die("fdopen fd 3");
		fputs("{\"path\": ", f);
		json_str(f, path);
		fprintf(f, ", \"pid\": %d, \"tid\": %d, \"fd\": %d"
			", \"dev\": %llu, \"dev_major\": %u, \"dev_minor\": %u"
			", \"ino\": %llu, \"nlink\": %llu"
			", \"ctime_sec\": %lld, \"ctime_nsec\": %ld"
			", \"ctime_pre_unlink_sec\": %lld"
			", \"ctime_pre_unlink_nsec\": %ld}\n",
			(int)getpid(), (int)gettid(), fd,
			(unsigned long long)post.st_dev,
			major(post.st_dev), minor(post.st_dev),
			(unsigned long long)post.st_ino,
			(unsigned long long)post.st_nlink,
			(long long)post.st_ctim.tv_sec, post.st_ctim.tv_nsec,
			(long long)pre.st_ctim.tv_sec, pre.st_ctim.tv_nsec);
		if (fclose(f) != 0) /* also closes fd 3 */
			die("write fd 3");
	}

	syscall(SYS_execveat, fd, "", argv + 3, environ, AT_EMPTY_PATH);
	die("execveat");
}
