/* leader_exit PATH [ARGS...]
 *
 * The main (leader) thread starts a second thread and leaves with
 * pthread_exit(): the process lives on, but its leader is a zombie whose
 * mm is gone (/proc/PID/exe can no longer be read).  Once /proc shows the
 * leader in state Z, the second thread forks a child that runs
 * execve(PATH, {PATH, ARGS...}, environ), waits for it and ends the
 * process with the child's exit status.  The child's parent is this
 * process, whose image (exe, exec id) is unchanged.
 * Exit status 127 if anything fails.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>

#include "common.h"

extern char **environ;

static char **child_argv;

static int leader_is_zombie(void)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)getpid());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'Z';
}

static void *run(void *arg)
{
	struct timespec ts = { 0, 1000 * 1000 };
	int i, st;
	pid_t pid;

	(void)arg;
	for (i = 0; i < 5000 && !leader_is_zombie(); i++)
		nanosleep(&ts, NULL);
	if (!leader_is_zombie()) {
		fprintf(stderr, "leader_exit: the leader did not become a zombie\n");
		_exit(127);
	}
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		execve(child_argv[0], child_argv, environ);
		die("execve");
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 127);
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
	child_argv = argv + 1;
	err = pthread_create(&t, NULL, run, NULL);
	if (err) {
		errno = err;
		die("pthread_create");
	}
	pthread_exit(NULL);
}
