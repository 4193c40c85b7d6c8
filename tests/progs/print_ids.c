/* print_ids: prints "uid gid euid egid\n" (decimal) and exits 0.
 * A setuid copy (chmod 4755, owned by another user) shows euid != uid. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("%u %u %u %u\n", (unsigned)getuid(), (unsigned)getgid(),
	       (unsigned)geteuid(), (unsigned)getegid());
	return fflush(stdout) == 0 ? 0 : 1;
}
