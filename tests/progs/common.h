/* Small helpers shared by the test programs (header-only). */
#ifndef OE_PROGS_COMMON_H
#define OE_PROGS_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPORT_FD 3

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	_exit(127);
}

static inline int fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* write() all of buf, retrying on short writes / EINTR. */
static inline int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Copy everything readable from in_fd to out_fd. */
static inline int copy_fd(int in_fd, int out_fd)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(in_fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return 0;
		if (write_all(out_fd, buf, (size_t)n) < 0)
			return -1;
	}
}

#endif
