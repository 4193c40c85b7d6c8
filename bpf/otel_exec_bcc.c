// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * otel-exec, BCC backend: the kernel side for kernels without BTF.
 *
 * Compiled at run time by BCC (otel_exec/bcc/program.py, which prepends the
 * OE_* #defines and puts otel_exec_bcc.h, shipped next to it, on the include
 * path). It reads NO kernel struct: every value comes from a
 * tracepoint's format fields (which BCC reads from tracefs for the running
 * kernel), from a BPF helper, or from user memory at an address a syscall
 * argument gave. So it is correct whatever kernel headers BCC compiles
 * against: the headers only provide helper prototypes and integer types.
 * Anything else the CO-RE backend reads from kernel structs is filled in
 * user space from /proc, or reported unavailable (docs/backends.md).
 *
 * Records, all into one BPF ring buffer, in the order they happen:
 *   ARGS     syscalls:sys_enter_execve(at): argv and env as the caller passed
 *            them, and the comm before the exec
 *   PREP     sched:sched_prepare_exec (6.10+): bprm->interp and the old comm
 *   EXEC     sched:sched_process_exec: the exec succeeded
 *   EXIT     sched:sched_process_exit, once per process
 *   DISCARD  the ARGS of an exec that failed or was filtered out
 * User space joins ARGS/PREP to EXEC by the exec'ing thread id and the
 * record's time stamp, which the EXEC record repeats (the `pending` map).
 *
 * Lineage without task_struct: `procs` holds, per host tgid, a life token
 * (the time the entry was made), the parent and the image the process
 * runs, kept by sched_process_fork (+ task:task_newtask for the clone
 * flags), sched_process_exec and sched_process_exit.
 */

#define CLONE_PARENT 0x00008000 /* uapi/linux/sched.h: ABI, not a layout */
#define CLONE_THREAD 0x00010000

/* The records, the procs entries and the counters user space reads. */
#include "otel_exec_bcc.h"

#define OE_HALF 131072 /* >= OE_ARGV_MAX and OE_ENV_MAX (ARGS_MAX) */
#define OE_DATA_SIZE (3 * OE_HALF)

/* Records are built here: a record's header ends where data[] starts, so
 * header and strings go out in one piece (RA/RP/RX give the header). */
#define OE_HEAD_MAX 128 /* >= the largest header, a multiple of 8 */
struct oe_scratch {
	char head[OE_HEAD_MAX];
	char data[OE_DATA_SIZE];
	/* handed along the ARGS tail calls */
	u64 argv;
	u64 envp;
	u64 used; /* bytes of the block copied so far */
	u32 phase; /* 0 argv, 1 env */
	u32 idx; /* the next element oe_copy or oe_count reads */
};

struct oe_clone {
	u64 enter_ns; /* the clone-family syscall entry; 0: forked by the kernel */
	u64 clone_flags;
	u32 have_flags; /* task_newtask saw a new process (not a thread) */
	u32 pad;
};

struct oe_pending {
	u64 args_ns;
	u64 prep_ns;
};

_Static_assert(sizeof(struct oe_exec) <= OE_HEAD_MAX && sizeof(struct oe_args) <= OE_HEAD_MAX &&
	       sizeof(struct oe_prep) <= OE_HEAD_MAX, "a record header outgrew OE_HEAD_MAX");
#define RA(s) ((struct oe_args *)&(s)->head[OE_HEAD_MAX - sizeof(struct oe_args)])
#define RP(s) ((struct oe_prep *)&(s)->head[OE_HEAD_MAX - sizeof(struct oe_prep)])
#define RX(s) ((struct oe_exec *)&(s)->head[OE_HEAD_MAX - sizeof(struct oe_exec)])

BPF_RINGBUF_OUTPUT(events, OE_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(counters, u64, OE_CNT_COUNT);
BPF_ARRAY(scratch, struct oe_scratch, OE_NCPUS);
BPF_TABLE("lru_hash", u32, struct oe_proc, procs, OE_PROCS_MAX);
BPF_HASH(clones, u32, struct oe_clone, 16384);
BPF_HASH(pending, u32, struct oe_pending, 16384);
BPF_HASH(comm_filter, struct oe_comm, u8, 256);
BPF_HASH(uid_filter, u32, u8, 256);
BPF_HASH(cgroup_filter, u64, u8, 256); /* cgroup v2 ids of --cgroup */
BPF_ARRAY(control, u64, 1); /* [0]: 1 once user space filled the filters and tails */
BPF_PROG_ARRAY(tails, 2); /* [OE_TAIL_COPY] oe_copy, [OE_TAIL_COUNT] oe_count */

static __always_inline void count(u32 idx)
{
	u64 *c = counters.lookup(&idx);

	if (c)
		(*c)++;
}

static __always_inline bool ready(void)
{
	int zero = 0;
	u64 *r = control.lookup(&zero);

	return r && *r;
}

static __always_inline struct oe_scratch *get_scratch(void)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct oe_scratch *s = scratch.lookup(&cpu);

	if (!s)
		count(OE_CNT_LOST_NO_SCRATCH);
	return s;
}

/*
 * A string read's result as a length in [1, OE_STR_MAX] (a failed read
 * counts as the empty string), computed in 64 bits behind a compiler
 * barrier: clang knows what the verifier does not (that the read returns at
 * most its size), drops a plain clamp, and the verifier then rejects the
 * unbounded record size.
 */
static __always_inline u64 str_len(long n)
{
	asm volatile("" : "+r"(n));
	if (n <= 0)
		n = 1;
	if (n > OE_STR_MAX)
		n = OE_STR_MAX;
	return n;
}

static __always_inline bool agent_or_child(u32 tgid)
{
	struct oe_proc *p;

	if (tgid == OE_SELF_TGID)
		return true;
	p = procs.lookup(&tgid);
	return p && (p->flags & OE_PR_FORKED) && p->ppid == OE_SELF_TGID;
}

/*
 * argv and env from the caller's memory, in programs chained by tail calls
 * (each verified on its own, so the verifier's work stays linear in
 * OE_ELEMS_MAX rather than growing with the product of the loops):
 *   entry (sys_enter_execve/at) -> oe_copy(argv) [-> oe_count(argv)]
 *   -> oe_copy(env) [-> oe_count(env)] -> the ARGS record.
 * oe_copy copies the strings vec[0..] points to, NUL-terminated, one after
 * the other, at most `max` bytes: an element that does not fit whole is not
 * copied and the block is marked cut; oe_count then counts the remaining
 * elements (pointer reads only) up to OE_ELEMS_MAX.
 */
#define OE_TAIL_COPY 0
#define OE_CHUNK 1024 /* elements per call: the verifier's pending-branch limit */
#ifndef OE_ELEMS_MAX
/* Elements read per block, at most 8 calls of oe_copy + oe_count together
 * for argv and as many for env: within the kernel's 33 tail calls. */
#define OE_ELEMS_MAX 8192
#endif
#define OE_TAIL_COUNT 1

static __always_inline struct oe_scratch *args_scratch(void)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct oe_scratch *s = scratch.lookup(&cpu);

	if (!s || RA(s)->hdr.type != OE_REC_ARGS)
		return NULL;
	return s;
}

static __always_inline void args_output(struct oe_scratch *s)
{
	struct oe_pending pend = {};
	u32 tid = RA(s)->tid;
	u64 size, len;

	if (RA(s)->flags & OE_A_ARGV_CUT)
		count(OE_CNT_CUT_ARGV);
	if (RA(s)->flags & OE_A_ENV_CUT)
		count(OE_CNT_CUT_ENV);
	if (RA(s)->flags & (OE_A_ARGV_UNREADABLE | OE_A_ENV_UNREADABLE))
		count(OE_CNT_READ_ERROR);
	size = RA(s)->argv_len;
	asm volatile("" : "+r"(size));
	if (size > OE_HALF)
		size = OE_HALF;
	len = RA(s)->env_len;
	asm volatile("" : "+r"(len));
	if (len > OE_HALF)
		len = OE_HALF;
	size += len + sizeof(struct oe_args);
	RA(s)->hdr.size = size;
	RA(s)->hdr.type = OE_REC_ARGS;
	if (events.ringbuf_output(RA(s), size, 0)) {
		count(OE_CNT_LOST_ARGS_RINGBUF_FULL);
		RA(s)->hdr.type = 0;
		return;
	}
	RA(s)->hdr.type = 0;
	pend.args_ns = RA(s)->hdr.boot_ns;
	if (pending.update(&tid, &pend))
		count(OE_CNT_MAP_FULL_PENDING);
}

/* The argv phase is done: on to env, or out if env is done too. */
static __always_inline void args_next(void *ctx, struct oe_scratch *s)
{
	if (s->phase == 0) {
		s->phase = 1;
		s->idx = 0;
		s->used = 0;
		tails.call(ctx, OE_TAIL_COPY);
		RA(s)->flags |= OE_A_ENV_UNREADABLE; /* the tail call failed */
	}
	args_output(s);
}

int oe_copy(void *ctx)
{
	struct oe_scratch *s = args_scratch();
	const char *const *vec;
	u64 used, max, base, start, i = 0, status = 0;
	u32 cut_flag, err_flag, count_flag;
	int k;

	if (!s)
		return 0;
	if (s->phase == 0) {
		vec = (const char *const *)s->argv;
		max = OE_ARGV_MAX;
		base = 0;
		cut_flag = OE_A_ARGV_CUT;
		err_flag = OE_A_ARGV_UNREADABLE;
		count_flag = OE_A_ARGC_UNKNOWN;
	} else {
		vec = (const char *const *)s->envp;
		max = OE_ENV_MAX;
		base = RA(s)->argv_len;
		cut_flag = OE_A_ENV_CUT;
		err_flag = OE_A_ENV_UNREADABLE;
		count_flag = OE_A_ENVC_UNKNOWN;
	}
	asm volatile("" : "+r"(base));
	if (base > OE_HALF)
		base = OE_HALF;
	used = s->used;
	asm volatile("" : "+r"(used));
	if (used > max)
		used = max;
	start = s->idx;
	/* status: 0 chunk done, 1 NULL reached, 2 unreadable, 3 cut, 4 element bound */
	for (k = 0; k < OE_CHUNK; k++) {
		const char *p = NULL;
		u64 left, off;
		long n;

		i = start + k;
		if (i >= OE_ELEMS_MAX) {
			status = 4;
			break;
		}
		if (!vec) {
			status = 1;
			break;
		}
		if (bpf_probe_read_user(&p, sizeof(p), (void *)&vec[i])) {
			status = 2;
			break;
		}
		if (!p) {
			status = 1;
			break;
		}
		if (used >= max) {
			status = 3;
			break;
		}
		/* 64-bit and behind barriers, so the verifier sees the bounds */
		left = max - used;
		asm volatile("" : "+r"(left));
		if (left > OE_HALF)
			left = OE_HALF;
		off = base + used;
		asm volatile("" : "+r"(off));
		if (off > 2 * OE_HALF - 1)
			off = 2 * OE_HALF - 1;
		/* left + 1: a result of left + 1 means the element does not fit */
		n = bpf_probe_read_user_str(&s->data[off], left + 1, p);
		asm volatile("" : "+r"(n));
		if (n < 0) {
			status = 2;
			break;
		}
		if (n > left) {
			status = 3;
			break;
		}
		used += n;
	}
	if (s->phase == 0) {
		RA(s)->argv_len = used;
		RA(s)->argc = i;
	} else {
		RA(s)->env_len = used;
		RA(s)->envc = i;
	}
	if (status == 0) {
		s->used = used;
		s->idx = start + OE_CHUNK;
		tails.call(ctx, OE_TAIL_COPY);
		status = 4; /* the tail call failed */
	}
	if (status == 2) {
		RA(s)->flags |= err_flag;
	} else if (status == 3) {
		RA(s)->flags |= cut_flag;
		s->idx = i;
		tails.call(ctx, OE_TAIL_COUNT);
		RA(s)->flags |= count_flag; /* the tail call failed */
	} else if (status == 4) {
		RA(s)->flags |= cut_flag | count_flag;
	}
	args_next(ctx, s);
	return 0;
}

/* After a cut: count the remaining elements, OE_CHUNK per call. */
int oe_count(void *ctx)
{
	struct oe_scratch *s = args_scratch();
	const char *const *vec;
	u64 start, idx, done = 0;
	int k;

	if (!s)
		return 0;
	vec = (const char *const *)(s->phase == 0 ? s->argv : s->envp);
	start = s->idx;
	idx = start;
	for (k = 0; k < OE_CHUNK; k++) {
		const char *p = NULL;

		idx = start + k;
		if (idx >= OE_ELEMS_MAX) {
			done = 2;
			break;
		}
		if (bpf_probe_read_user(&p, sizeof(p), (void *)&vec[idx]) || !p) {
			done = 1;
			break;
		}
	}
	if (!done) {
		s->idx = start + OE_CHUNK;
		tails.call(ctx, OE_TAIL_COUNT);
		done = 2; /* the tail call failed */
	}
	if (done == 2) {
		RA(s)->flags |= s->phase == 0 ? OE_A_ARGC_UNKNOWN : OE_A_ENVC_UNKNOWN;
		idx = OE_ELEMS_MAX;
	}
	if (s->phase == 0)
		RA(s)->argc = idx;
	else
		RA(s)->envc = idx;
	args_next(ctx, s);
	return 0;
}

static __always_inline int on_exec_enter(void *ctx, const char *const *argv, const char *const *envp)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	struct oe_scratch *s;

	pending.delete(&tid);
	if (!ready() || agent_or_child(tgid))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	__builtin_memset(RA(s), 0, sizeof(struct oe_args));
	RA(s)->hdr.type = OE_REC_ARGS;
	RA(s)->hdr.boot_ns = bpf_ktime_get_boot_ns();
	RA(s)->tid = tid;
	bpf_get_current_comm(RA(s)->comm, sizeof(RA(s)->comm));
	s->argv = (u64)argv;
	s->envp = (u64)envp;
	s->phase = 0;
	s->idx = 0;
	s->used = 0;
	tails.call(ctx, OE_TAIL_COPY);
	/* only reached if the tail call failed */
	RA(s)->hdr.type = 0;
	count(OE_CNT_LOST_NO_SCRATCH);
	return 0;
}

#ifdef OE_HAVE_SYS_ENTER_EXECVE
TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
	return on_exec_enter(args, args->argv, args->envp);
}
#endif

#ifdef OE_HAVE_SYS_ENTER_EXECVEAT
TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
	return on_exec_enter(args, args->argv, args->envp);
}
#endif

static __always_inline int on_exec_exit(long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct oe_pending *pend;
	struct oe_discard d = {};

	if (ret >= 0)
		return 0;
	pend = pending.lookup(&tid);
	if (!pend)
		return 0;
	d.hdr.type = OE_REC_DISCARD;
	d.hdr.size = sizeof(d);
	d.hdr.boot_ns = bpf_ktime_get_boot_ns();
	d.tid = tid;
	d.args_ns = pend->args_ns;
	pending.delete(&tid);
	if (d.args_ns && events.ringbuf_output(&d, sizeof(d), 0))
		count(OE_CNT_LOST_DISCARD_RINGBUF_FULL);
	return 0;
}

#ifdef OE_HAVE_SYS_EXIT_EXECVE
TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
	return on_exec_exit(args->ret);
}
#endif

#ifdef OE_HAVE_SYS_EXIT_EXECVEAT
TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
	return on_exec_exit(args->ret);
}
#endif

#ifdef OE_HAVE_SCHED_PREPARE_EXEC
/* begin_new_exec, after binfmt_script/binfmt_misc: interp is final and the
 * comm is still the old one. pid is the exec'ing thread (before de_thread). */
TRACEPOINT_PROBE(sched, sched_prepare_exec)
{
	u32 tid = args->pid, tgid = bpf_get_current_pid_tgid() >> 32;
	struct oe_pending *pend, fresh = {};
	struct oe_scratch *s;
	u64 len, size;

	if (!ready() || agent_or_child(tgid))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	__builtin_memset(RP(s), 0, sizeof(struct oe_prep));
	RP(s)->hdr.type = OE_REC_PREP;
	RP(s)->hdr.boot_ns = bpf_ktime_get_boot_ns();
	RP(s)->tid = tid;
	bpf_get_current_comm(RP(s)->comm, sizeof(RP(s)->comm));
	len = str_len(bpf_probe_read_kernel_str(&s->data[0], OE_STR_MAX,
						(void *)args + (args->data_loc_interp & 0xFFFF)));
	if (len == 1)
		s->data[0] = 0;
	RP(s)->interp_len = len;
	size = sizeof(struct oe_prep) + len;
	RP(s)->hdr.size = size;
	if (events.ringbuf_output(RP(s), size, 0)) {
		count(OE_CNT_LOST_PREP_RINGBUF_FULL);
		return 0;
	}
	pend = pending.lookup(&tid);
	if (pend) {
		pend->prep_ns = RP(s)->hdr.boot_ns;
	} else {
		fresh.prep_ns = RP(s)->hdr.boot_ns;
		if (pending.update(&tid, &fresh))
			count(OE_CNT_MAP_FULL_PENDING);
	}
	return 0;
}
#endif

static __always_inline int on_clone_enter(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct oe_clone c = {};

	c.enter_ns = bpf_ktime_get_boot_ns();
	clones.update(&tid, &c);
	return 0;
}

#ifdef OE_HAVE_SYS_ENTER_CLONE
TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
	return on_clone_enter();
}
#endif

#ifdef OE_HAVE_SYS_ENTER_CLONE3
TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
	return on_clone_enter();
}
#endif

#ifdef OE_HAVE_SYS_ENTER_FORK
TRACEPOINT_PROBE(syscalls, sys_enter_fork)
{
	return on_clone_enter();
}
#endif

#ifdef OE_HAVE_SYS_ENTER_VFORK
TRACEPOINT_PROBE(syscalls, sys_enter_vfork)
{
	return on_clone_enter();
}
#endif

/* In copy_process, after the child's start time was taken, in the parent's
 * context: whether the child is a thread or a process, and CLONE_PARENT. */
TRACEPOINT_PROBE(task, task_newtask)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct oe_clone *c, fresh = {};

	if (args->clone_flags & CLONE_THREAD)
		return 0;
	c = clones.lookup(&tid);
	if (c) {
		c->clone_flags = args->clone_flags;
		c->have_flags = 1;
	} else {
		/* no clone syscall in progress: a kernel thread forks */
		fresh.clone_flags = args->clone_flags;
		fresh.have_flags = 1;
		clones.update(&tid, &fresh);
	}
	return 0;
}

/* A new process (threads are left out by task_newtask): record its parent,
 * the parent's life token, the image it inherits and its fork time bounds. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_boot_ns();
	u32 tid = (u32)id, ptgid = id >> 32, child = args->child_pid;
	struct oe_clone *c = clones.lookup(&tid);
	struct oe_proc *parent, child_info = {}, fresh = {};
	u64 flags, enter_ns;

	if (!c)
		return 0;
	flags = c->clone_flags;
	enter_ns = c->enter_ns;
	if (!c->have_flags) {
		clones.delete(&tid);
		return 0; /* a thread */
	}
	clones.delete(&tid);

	parent = procs.lookup(&ptgid);
	if (!parent) {
		/* The forker predates the agent: its entry starts now. */
		fresh.life = now;
		if (procs.update(&ptgid, &fresh)) {
			count(OE_CNT_MAP_FULL_PROCS);
			return 0;
		}
		parent = procs.lookup(&ptgid);
		if (!parent)
			return 0;
	}
	child_info.life = now;
	child_info.start_lo = enter_ns;
	child_info.start_hi = now;
	child_info.flags = OE_PR_FORKED;
	if (parent->flags & OE_PR_IMAGE) {
		child_info.img_owner = parent->img_owner;
		child_info.img_token = parent->img_token;
		child_info.flags |= OE_PR_IMAGE;
	}
	if (flags & CLONE_PARENT) {
		/* The child's parent is the forker's parent. */
		if (parent->flags & OE_PR_FORKED) {
			child_info.ppid = parent->ppid;
			child_info.ppid_life = parent->ppid_life;
			child_info.flags |= parent->flags & (OE_PR_PARENT_KTHREAD | OE_PR_PARENT_OF);
		} else {
			child_info.ppid = ptgid;
			child_info.flags |= OE_PR_PARENT_OF;
		}
	} else {
		child_info.ppid = ptgid;
		child_info.ppid_life = parent->life;
		if (!enter_ns)
			child_info.flags |= OE_PR_PARENT_KTHREAD;
	}
	if (procs.update(&child, &child_info))
		count(OE_CNT_MAP_FULL_PROCS);
	return 0;
}

static __always_inline bool filtered(void)
{
#if defined(OE_FILTER_COMM_INCLUDE) || defined(OE_FILTER_COMM_EXCLUDE)
	struct oe_comm comm = {};
	u8 *mode;

	bpf_get_current_comm(comm.c, sizeof(comm.c));
	mode = comm_filter.lookup(&comm);
#ifdef OE_FILTER_COMM_INCLUDE
	if (!mode || *mode != 1)
		return true;
#endif
#ifdef OE_FILTER_COMM_EXCLUDE
	if (mode && *mode == 2)
		return true;
#endif
#endif
#ifdef OE_FILTER_UID
	{
		u32 uid = (u32)bpf_get_current_uid_gid();

		if (!uid_filter.lookup(&uid))
			return true;
	}
#endif
#ifdef OE_CONTAINER_ONLY
	{
		struct bpf_pidns_info ns = {};

		if (!bpf_get_ns_current_pid_tgid(OE_HOST_PIDNS_DEV, OE_HOST_PIDNS_INO, &ns, sizeof(ns)))
			return true;
	}
#endif
#ifdef OE_FILTER_CGROUP
	{
		/* The task's cgroup or an ancestor, from the root (level 0) down. */
		bool in = false;
		int level;

		for (level = 0; level <= OE_CGROUP_DEPTH_MAX; level++) {
			u64 id = bpf_get_current_ancestor_cgroup_id(level);

			if (!id)
				break;
			if (cgroup_filter.lookup(&id)) {
				in = true;
				break;
			}
		}
		if (!in)
			return true;
	}
#endif
	return false;
}

/* tgid now runs an image of its own: the token user space checks its /proc
 * reads against, and what its children inherit. Set before the EXEC record
 * goes out, so a reader never sees the record before the token. */
static __always_inline void set_image(u32 tgid, struct oe_proc *p, u64 token)
{
	struct oe_proc fresh = {};

	if (p) {
		p->img_owner = tgid;
		p->img_token = token;
		p->flags |= OE_PR_IMAGE;
		return;
	}
	fresh.life = token;
	fresh.img_owner = tgid;
	fresh.img_token = token;
	fresh.flags = OE_PR_IMAGE;
	if (procs.update(&tgid, &fresh))
		count(OE_CNT_MAP_FULL_PROCS);
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	u64 id = bpf_get_current_pid_tgid(), ugid = bpf_get_current_uid_gid();
	u64 token = bpf_ktime_get_boot_ns(); /* the record's time and the image token */
	u32 tgid = id >> 32, tid = (u32)id, old_tid = args->old_pid, key;
	struct oe_pending *pend;
	struct oe_proc *p, *pp;
	struct oe_scratch *s = NULL;
	struct bpf_pidns_info ns = {};
	struct oe_discard d = {};
	u64 args_ns = 0, prep_ns = 0, len, size;

	pend = pending.lookup(&old_tid);
	if (pend) {
		args_ns = pend->args_ns;
		prep_ns = pend->prep_ns;
		pending.delete(&old_tid);
	}
	if (agent_or_child(tgid))
		return 0;
	p = procs.lookup(&tgid);
	if (!ready())
		goto image;
	count(OE_CNT_EXEC_SEEN);
	if (filtered()) {
		count(OE_CNT_EXEC_FILTERED);
		if (args_ns) {
			d.hdr.type = OE_REC_DISCARD;
			d.hdr.size = sizeof(d);
			d.hdr.boot_ns = token;
			d.tid = old_tid;
			d.args_ns = args_ns;
			if (events.ringbuf_output(&d, sizeof(d), 0))
				count(OE_CNT_LOST_DISCARD_RINGBUF_FULL);
		}
		goto image;
	}
	s = get_scratch();
	if (!s)
		goto image;
	__builtin_memset(RX(s), 0, sizeof(struct oe_exec));
	RX(s)->hdr.type = OE_REC_EXEC;
	RX(s)->hdr.boot_ns = token;
	RX(s)->cgroup_id = bpf_get_current_cgroup_id();
	RX(s)->args_ns = args_ns;
	RX(s)->prep_ns = prep_ns;
	RX(s)->host_pid = tgid;
	RX(s)->host_tid = tid;
	RX(s)->old_tid = old_tid;
	RX(s)->uid = (u32)ugid;
	RX(s)->gid = ugid >> 32;
	bpf_get_current_comm(RX(s)->comm, sizeof(RX(s)->comm));
	if (!bpf_get_ns_current_pid_tgid(OE_HOST_PIDNS_DEV, OE_HOST_PIDNS_INO, &ns, sizeof(ns)))
		RX(s)->flags |= OE_E_HOST_PID_NS;

	if (!p) {
		RX(s)->parent_kind = OE_P_PREEXISTING;
	} else if (!(p->flags & OE_PR_FORKED)) {
		RX(s)->parent_kind = OE_P_PREEXISTING; /* entry made when it forked */
	} else {
		RX(s)->start_lo = p->start_lo;
		RX(s)->start_hi = p->start_hi;
		if (p->start_lo)
			RX(s)->flags |= OE_E_START_KNOWN;
		RX(s)->ppid = p->ppid;
		if (p->flags & OE_PR_PARENT_OF) {
			RX(s)->parent_kind = OE_P_PARENT_OF;
		} else {
			key = p->ppid;
			pp = procs.lookup(&key);
			/* Alive with the same life token: the parent that forked it
			 * has not died, so the process was not reparented. */
			if (pp && pp->life == p->ppid_life) {
				RX(s)->parent_kind = OE_P_ALIVE;
				RX(s)->ppid_life = pp->life;
				if (p->flags & OE_PR_PARENT_KTHREAD)
					RX(s)->flags |= OE_E_PARENT_KTHREAD;
				if (pp->flags & OE_PR_IMAGE) {
					RX(s)->flags |= OE_E_IMAGE_KNOWN;
					RX(s)->image_ppid = pp->img_owner;
					RX(s)->parent_image = pp->img_token;
				}
			} else {
				RX(s)->parent_kind = OE_P_UNKNOWN;
			}
		}
	}

	len = str_len(bpf_probe_read_kernel_str(&s->data[0], OE_STR_MAX,
						(void *)args + (args->data_loc_filename & 0xFFFF)));
	if (len == 1)
		s->data[0] = 0;
	if (len == OE_STR_MAX) {
		RX(s)->flags |= OE_E_FILENAME_CUT;
		count(OE_CNT_CUT_STRING);
	}
	RX(s)->filename_len = len;
	size = sizeof(struct oe_exec) + len;
	RX(s)->hdr.size = size;
	set_image(tgid, p, token);
	if (events.ringbuf_output(RX(s), size, 0))
		count(OE_CNT_LOST_EXEC_RINGBUF_FULL);
	return 0;

image:
	set_image(tgid, p, token);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id;
	struct oe_proc *p;
	struct oe_exit e = {};

	pending.delete(&tid);
	clones.delete(&tid);
#ifdef OE_HAVE_GROUP_DEAD
	if (!args->group_dead)
		return 0;
#else
	/* No group_dead field: the leader's exit stands for the process's. */
	if (tid != tgid)
		return 0;
#endif
	p = procs.lookup(&tgid);
	if (p) {
		if (p->flags & OE_PR_FORKED && p->start_lo) {
			e.start_lo = p->start_lo;
			e.start_hi = p->start_hi;
			e.flags = 1;
		}
		procs.delete(&tgid);
	}
	if (tgid == OE_SELF_TGID)
		return 0;
	e.hdr.type = OE_REC_EXIT;
	e.hdr.size = sizeof(e);
	e.hdr.boot_ns = bpf_ktime_get_boot_ns();
	e.pid = tgid;
	bpf_probe_read_kernel(e.comm, sizeof(e.comm), args->comm);
	if (events.ringbuf_output(&e, sizeof(e), 0))
		count(OE_CNT_LOST_EXIT_RINGBUF_FULL);
	return 0;
}
