/* static_true / dyn_true: exit 0. Built twice: with -static (no PT_INTERP)
 * and dynamically (PT_INTERP = the glibc loader). */
int main(void) { return 0; }
