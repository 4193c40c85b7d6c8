// Exec storm: WORKERS processes each fork+execve a program in a loop.
//   storm WORKERS TOTAL RATE PROGRAM [ARGS...]
// TOTAL execs in all, split across workers; RATE execs/s in all (0: as fast
// as possible). Prints "execs seconds rate" when done. The environment is
// passed on unchanged, so a marker variable identifies the storm's execs.
//
//   storm hold COUNT
// Forks COUNT children that sleep until killed (live processes for a tracer's
// process table), prints "ready" once all exist, then sleeps too: killing the
// process group ends them all.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>

extern char **environ;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void worker(long n, double rate, char **argv)
{
	double start = now();

	for (long i = 0; i < n; i++) {
		if (rate > 0) {
			double due = start + i / rate;
			double wait = due - now();

			if (wait > 0) {
				struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };
				nanosleep(&ts, NULL);
			}
		}
		pid_t pid = fork();
		if (pid == 0) {
			execve(argv[0], argv, environ);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, NULL, 0) < 0) {
			perror("storm");
			exit(1);
		}
	}
}

static int hold(long count)
{
	// Root may exceed RLIMIT_NPROC only by raising it.
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };

	setrlimit(RLIMIT_NPROC, &unlimited);
	for (long i = 0; i < count; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			for (;;)
				pause();
		}
		if (pid < 0) {
			perror("storm hold");
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "hold") == 0)
		return hold(atol(argv[2]));
	if (argc < 5) {
		fprintf(stderr, "usage: storm WORKERS TOTAL RATE PROGRAM [ARGS...] | storm hold COUNT\n");
		return 2;
	}
	int workers = atoi(argv[1]);
	long total = atol(argv[2]);
	double rate = atof(argv[3]);
	double t0 = now();

	for (int w = 0; w < workers; w++) {
		long n = total / workers + (w < total % workers);

		if (fork() == 0) {
			worker(n, rate / workers, argv + 4);
			_exit(0);
		}
	}
	int status, failed = 0;
	while (wait(&status) > 0)
		failed |= !WIFEXITED(status) || WEXITSTATUS(status);
	double secs = now() - t0;
	printf("%ld %.3f %.1f\n", total, secs, total / secs);
	return failed;
}
