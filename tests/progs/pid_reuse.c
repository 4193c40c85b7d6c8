/* pid_reuse [--same-tick | --other-tick] [--tries N] PATH [ARGS...]
 *
 * Makes two processes get the same pid, one after the other, in this
 * process's pid namespace (run it under `unshare -p -f --mount-proc` for a
 * quiet namespace, or directly for a host pid):
 *   - fork child A; it waits on a pipe, then execs {PATH, ARGS..., "first-T"}
 *     (T: the attempt number, from 1);
 *     the parent reads A's start time (field 22 of /proc/A/stat), lets it
 *     go and reaps it;
 *   - writes A - 1 to /proc/sys/kernel/ns_last_pid and forks child B, which
 *     waits likewise; if B did not get A's pid (another process forked in
 *     between) B is killed before it execs and everything is retried;
 *   - B execs {PATH, ARGS..., "second-T"} and is reaped.
 * --same-tick retries until A and B started in the same clock tick (so an
 * identity made of pid and start ticks cannot tell them apart);
 * --other-tick sleeps 50 ms between A's exit and B's fork, so they differ.
 *
 * Prints {"pid": P, "ticks_a": T, "ticks_b": T, "tries": N} on stdout and
 * exits 0; 3 if no attempt succeeded within --tries (default 200); 127 on
 * errors.  A child killed before its exec never execs (no exec event).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "common.h"

extern char **environ;

static char **child_argv;

static pid_t spawn(const char *what, int try, int *release_fd)
{
	static char tag[64];
	int p[2];
	pid_t pid;
	char c;

	snprintf(tag, sizeof(tag), "%s-%d", what, try);
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		int n = 0;
		close(p[1]);
		if (read(p[0], &c, 1) != 0)
			_exit(0); /* told to stop: exit without exec */
		while (child_argv[n])
			n++;
		child_argv[n] = tag;
		execve(child_argv[0], child_argv, environ);
		die("execve");
	}
	close(p[0]);
	*release_fd = p[1];
	return pid;
}

static unsigned long long start_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long v = 0;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open stat");
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		die("read stat");
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p)
		die("parse stat");
	p += 2; /* field 3 */
	for (field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			die("parse stat");
		p++;
	}
	v = strtoull(p, NULL, 10);
	return v;
}

static void reap(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
}

static void set_last_pid(pid_t last)
{
	char buf[32];
	int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
	int n = snprintf(buf, sizeof(buf), "%d", (int)last);

	if (fd < 0)
		die("open ns_last_pid");
	if (write(fd, buf, (size_t)n) != n)
		die("write ns_last_pid");
	close(fd);
}

int main(int argc, char **argv)
{
	int same_tick = 0, other_tick = 0, tries = 200, i = 1, t, ra, rb, n;

	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--same-tick"))
			same_tick = 1;
		else if (!strcmp(argv[i], "--other-tick"))
			other_tick = 1;
		else if (!strcmp(argv[i], "--tries") && i + 1 < argc)
			tries = atoi(argv[++i]);
		else
			break;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: %s [--same-tick|--other-tick] [--tries N] PATH [ARGS...]\n", argv[0]);
		return 2;
	}
	n = argc - i;
	child_argv = calloc((size_t)n + 2, sizeof(char *));
	if (!child_argv)
		die("calloc");
	memcpy(child_argv, argv + i, (size_t)n * sizeof(char *));

	for (t = 1; t <= tries; t++) {
		pid_t a, b;
		unsigned long long ta, tb = 0;

		a = spawn("first", t, &ra);
		ta = start_ticks(a);
		/* B must not exist yet when A execs: A goes first, alone. */
		close(ra);
		reap(a);
		if (other_tick) {
			struct timespec ts = { 0, 50 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
		set_last_pid(a - 1);
		b = spawn("second", t, &rb);
		if (b == a)
			tb = start_ticks(b);
		if (b != a || (same_tick && tb != ta)) {
			/* Not the reuse asked for: B leaves without exec'ing. */
			if (write(rb, "x", 1) != 1)
				kill(b, SIGKILL);
			close(rb);
			reap(b);
			continue;
		}
		close(rb);
		reap(b);
		printf("{\"pid\": %d, \"ticks_a\": %llu, \"ticks_b\": %llu, \"tries\": %d}\n",
		       (int)a, ta, tb, t);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	fprintf(stderr, "pid_reuse: no attempt succeeded in %d tries\n", tries);
	return 3;
}
