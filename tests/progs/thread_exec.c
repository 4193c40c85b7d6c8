/* thread_exec PATH [ARGS...]
 *
 * A non-leader thread calls execve(PATH, {PATH, ARGS...}, environ) while the
 * main (leader) thread blocks in pause().  The kernel's de_thread() kills the
 * leader and the exec'ing thread takes over the leader's pid, so the new
 * program runs with the original pid (== tgid) while the execve was issued
 * by a different tid.
 *
 * If fd 3 is open at start, the exec'ing thread writes its tid as
 * "<tid>\n" to it and then closes fd 3 (so a reader sees EOF right away)
 * before exec.  Prints nothing otherwise.  Exit status 127 if exec fails.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "common.h"

extern char **environ;

static char **exec_argv;
static int report;

static void *exec_thread(void *arg)
{
	(void)arg;
	if (report) {
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "%d\n", (int)gettid());
		if (write_all(REPORT_FD, buf, (size_t)n) < 0)
			die("write fd 3");
		close(REPORT_FD);
	}
	execve(exec_argv[0], exec_argv, environ);
	die("execve"); /* _exit() ends the whole thread group */
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;
	int err;

	if (argc < 2) {
		fprintf(stderr, "usage: %s PATH [ARGS...]\n", argv[0]);
		return 2;
	}
	exec_argv = argv + 1;
	report = fd_is_open(REPORT_FD);
	err = pthread_create(&t, NULL, exec_thread, NULL);
	if (err) {
		errno = err;
		die("pthread_create");
	}
	for (;;)
		pause();
}
