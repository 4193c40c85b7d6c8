/* crash: dies of a real SIGSEGV (a store to address 0).
 *
 * Meant for core_pattern tests: with a "|helper" core_pattern the kernel
 * spawns the helper as a usermode-helper process (kernel thread -> exec).
 *
 * Before faulting it makes sure a core dump is attempted:
 *  - prctl(PR_SET_DUMPABLE, 1): a non-dumpable process (e.g. after a
 *    setuid exec with suid_dumpable=0) never dumps.
 *  - RLIMIT_CORE: for a pipe core_pattern the kernel ignores the limit
 *    (core(5)) except for the value 1 (byte), which fs/coredump.c uses as
 *    the "recursive crash of a core helper" marker and refuses to dump.
 *    Measured on 6.18 with "|helper %p %c": soft limit 0 -> helper runs;
 *    1 -> no helper, dmesg "coredump: PID(comm): RLIMIT_CORE is set to 1,
 *    aborting core"; 2, 1024, unlimited -> helper runs.  For a file
 *    core_pattern, 0 means no core.  So the soft limit is raised to
 *    unlimited, or to the hard limit when that fails (no CAP_SYS_RESOURCE:
 *    root in this VM lacks it), and if it would still be exactly 1 it is
 *    lowered to 0 (always allowed) so that a pipe helper still runs.
 *  - SIGSEGV is reset to SIG_DFL and unblocked.
 *
 * With a file core_pattern such as the default "core" a core file lands in
 * the cwd: run it in a temporary directory.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>

/* volatile pointer: the compiler cannot prove it is NULL, so it emits a
 * real store (no ud2/SIGILL from -fisolate-erroneous-paths). */
static int *volatile null_ptr;

int main(void)
{
	struct rlimit rl;
	sigset_t set;

	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
	if (setrlimit(RLIMIT_CORE, &rl) != 0 && getrlimit(RLIMIT_CORE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		if (rl.rlim_cur == 1)
			rl.rlim_cur = 0;
		setrlimit(RLIMIT_CORE, &rl);
	}
	signal(SIGSEGV, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, SIGSEGV);
	sigprocmask(SIG_UNBLOCK, &set, NULL);

	*null_ptr = 0;
	raise(SIGSEGV); /* not reached */
	return 1;
}
