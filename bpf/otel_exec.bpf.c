// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * otel-exec kernel side: one record per successful exec and per process
 * exit, written to a single ring buffer. Tracepoints only (tp_btf), CO-RE.
 * Lineage needs no fork records: an exec names its image parent (see
 * image_parent()), and forks outnumber execs.
 * The record layout lives in otel_exec.h.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "otel_exec.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_KTHREAD 0x00200000
#define AT_NULL 0
#define AT_BASE 7
/* Pairs of saved_auxv searched for AT_BASE; the ELF loader stores it among
 * the first dozen entries on every architecture. */
#define AUXV_PAIRS_MAX 24
/* The multigrain timestamp code (6.13+) keeps a flag in the top bits of
 * i_ctime_nsec; nanoseconds never need more than 30 bits. */
#define CTIME_NSEC_MASK 0x3fffffffu

const volatile struct oe_config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by user space */
} events SEC(".maps");

/* Words of a dentry's inline name: DNAME_INLINE_LEN is 40 bytes on 64-bit
 * kernels since 6.14, 32 before. */
#define INLINE_NAME_WORDS 5
/* Words of a dentry read by walk_path() per step: from d_hash.pprev to the
 * end of the inline name. */
#define DENTRY_SPAN_WORDS 10

/* One path walked by walk_path(): per step of the walk, leaf first, the
 * name of the component it passed, or 0 where it crossed a mount. */
struct path_walk {
	__u64 name[OE_PATH_DEPTH_MAX];   /* kernel addresses of the dentry names */
	__u32 len[OE_PATH_DEPTH_MAX];    /* their lengths (d_name.len), NUL excluded */
	/* Per step, the span of its dentry (see dentry_word). A name stored
	 * inside its dentry (a short one) came with it: bit i of inline_mask
	 * says step i's did. */
	__u64 span[OE_PATH_DEPTH_MAX][DENTRY_SPAN_WORDS];
	__u64 inline_mask;
	__u32 n;                         /* steps */
	__u32 pflags;                    /* OE_PF_* */
};

/* An exec record is built here and copied out with bpf_ringbuf_output: a
 * reservation must have a constant size, while most records are a few
 * hundred bytes and a few are hundreds of KiB. Indexed by CPU: tracepoint
 * programs run with preemption disabled and do not nest with each other.
 * rec and data go out in one piece. The working space comes first: next to
 * the record and its first strings, not a MiB of data away, every exec's
 * writes stay on a few neighbouring pages. */
struct exec_scratch {
	struct path_walk walk;
	__u64 addr;                      /* see as_addr() */
	/* A path's first bytes as a path_prefixes key. A name is copied in with
	 * up to OE_NAME_MAX bytes wherever the previous one ended: key_tail
	 * takes what runs past key.data. */
	struct oe_prefix_key key;
	char key_tail[OE_PREFIX_LEN];
	struct oe_exec rec;
	char data[OE_DATA_SIZE];
};
/* walked_prefix_bits() writes a whole name (up to OE_NAME_MAX bytes) at a
 * position below OE_PREFIX_LEN and masks positions to 2 * OE_PREFIX_LEN:
 * both hold only while a name fits in key_tail. */
_Static_assert(OE_NAME_MAX <= OE_PREFIX_LEN, "key_tail holds a whole name");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* set to the number of possible CPUs */
	__type(key, __u32);
	__type(value, struct exec_scratch);
} scratch SEC(".maps");

/* counters[cpu * OE_CNT_COUNT + counter]: memory-mapped by user space, which
 * reads them with no bpf() call, so it can drop every capability once the
 * programs are attached. A CPU only writes its own slots. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OE_CNT_COUNT); /* times the number of possible CPUs */
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* comm -> OE_MATCH_* bits */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OE_FILTER_ENTRIES_MAX);
	__type(key, char[OE_COMM_LEN]);
	__type(value, __u8);
} comm_filter SEC(".maps");

/* real uid -> OE_MATCH_* bits */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OE_FILTER_ENTRIES_MAX);
	__type(key, __u32);
	__type(value, __u8);
} uid_filter SEC(".maps");

/* cgroup v2 id (kernfs id, the inode number of its directory) -> 1 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OE_FILTER_ENTRIES_MAX);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

/* path prefix -> OE_MATCH_* bits (see struct oe_prefix_key) */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OE_FILTER_ENTRIES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct oe_prefix_key);
	__type(value, __u8);
} path_prefixes SEC(".maps");

/*
 * The comm before exec, from sched_prepare_exec (6.10+) to sched_process_exec
 * of the same thread, which may run on another CPU. First in the slot of
 * prev_comm_slots its tid picks (an array element: no lock, no allocation);
 * when that slot is held by another tid's exec in flight, or left by one that
 * died after prepare, in prev_comms, keyed by tid. A slot's tag is taken with
 * an atomic exchange both to write and to read it, so a comm is never read
 * half written or under another tid's tag.
 */
#define PREV_COMM_SLOTS 8192
#define PREV_COMM_BUSY (~0ULL)
/* Never 0 (free) nor PREV_COMM_BUSY. */
#define PREV_COMM_TAG(tid) ((__u64)(tid) << 1 | 1)

struct prev_comm_slot {
	__u64 tag;                       /* 0, PREV_COMM_BUSY or PREV_COMM_TAG(tid) */
	char comm[OE_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PREV_COMM_SLOTS);
	__type(key, __u32);
	__type(value, struct prev_comm_slot);
} prev_comm_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, char[OE_COMM_LEN]);
} prev_comms SEC(".maps");

/* Kernel-version flavours of struct inode's ctime, picked by CO-RE. */
struct inode___pre66 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct inode___pre611 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___611 {
	time64_t i_ctime_sec;
	__u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

/* kernfs_node.parent was renamed __parent in 6.15. */
struct kernfs_node___pre615 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

struct kernfs_node___615 {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

/* Ancestors walked to find the image parent; a deeper chain of processes
 * that forked without exec'ing is reported from the last one reached. */
#define IMAGE_PARENT_DEPTH_MAX 16

static __always_inline void count(__u32 idx)
{
	__u32 slot = bpf_get_smp_processor_id() * OE_CNT_COUNT + idx;
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);

	if (c)
		(*c)++;
}

/*
 * Reads of kernel memory. In these tp_btf programs the verifier knows the
 * type of the tracepoint's arguments and of every struct pointer loaded from
 * them: their fields are read with plain (CO-RE relocated) loads, which the
 * JIT guards against faults, a fraction of the cost of a probe-read helper
 * call. A pointer the verifier does not know (read through a helper, passed
 * to a global function as an integer, or loaded from an array of pointers)
 * is read with BPF_CORE_READ. Both read 0 where the memory is not readable.
 */
#define DIRECT_READ(p, field) ((p)->field)

/* file_id_<how>(): the identity of a file, its fields read with READ. */
#define DEFINE_FILE_ID(how, READ)								\
static __always_inline __u64 inode_ctime_ns_##how(struct inode *inode)			\
{												\
	__u64 sec, nsec;									\
												\
	if (bpf_core_field_exists(struct inode___611, i_ctime_sec)) {			\
		struct inode___611 *i = (void *)inode;						\
												\
		sec = READ(i, i_ctime_sec);							\
		nsec = READ(i, i_ctime_nsec) & CTIME_NSEC_MASK;					\
	} else if (bpf_core_field_exists(struct inode___pre611, __i_ctime)) {		\
		struct inode___pre611 *i = (void *)inode;					\
												\
		sec = READ(i, __i_ctime.tv_sec);						\
		nsec = READ(i, __i_ctime.tv_nsec);						\
	} else {										\
		struct inode___pre66 *i = (void *)inode;					\
												\
		sec = READ(i, i_ctime.tv_sec);							\
		nsec = READ(i, i_ctime.tv_nsec);						\
	}											\
	return sec * 1000000000ULL + nsec;							\
}												\
												\
static __always_inline void file_id_##how(struct file *f, struct oe_file_id *id)	\
{												\
	struct inode *inode = f ? READ(f, f_inode) : NULL;				\
	struct super_block *sb;									\
												\
	if (!inode)										\
		return;										\
	id->inode = READ(inode, i_ino);							\
	id->mode = READ(inode, i_mode);							\
	sb = READ(inode, i_sb);									\
	id->dev = READ(sb, s_dev);								\
	id->ctime_ns = inode_ctime_ns_##how(inode);						\
}

DEFINE_FILE_ID(direct, DIRECT_READ)
DEFINE_FILE_ID(probed, BPF_CORE_READ)

/* The id of the executable of another task, which may be exiting on another
 * CPU meanwhile: exit_mm() clears p->mm, then frees the mm and drops the last
 * reference to its exe_file, and both slabs hand the memory to the next mm or
 * file at once. Read from there, the id would name another file, and the
 * parent_exec_id another image. p->mm and its exe_file unchanged after the
 * read prove both were alive throughout (exec and exit replace p->mm before
 * they free the old one). False, and *id cleared, when p has no mm or it
 * changed. */
static __always_inline bool read_exe_id(struct task_struct *p, struct oe_file_id *id)
{
	struct mm_struct *mm = p->mm;
	struct file *exe;

	if (!mm)
		return false;
	exe = mm->exe_file;
	if (!exe)
		return false;
	file_id_direct(exe, id);
	/* volatile: the compiler would reuse the loads above. */
	if (*(struct mm_struct *volatile *)&p->mm == mm && *(struct file *volatile *)&mm->exe_file == exe)
		return true;
	__builtin_memset(id, 0, sizeof(*id));
	return false;
}

/* The word at byte off of p, loaded (or stored) as one 8-byte access. p
 * goes through barrier_var first: clang knows nothing of its alignment then,
 * and takes the word's. Through the char arrays themselves it would emit a
 * byte access per byte wherever it cannot prove 8-byte alignment (the
 * record's strings are 4-aligned, the hostname lies at byte 65 of its
 * struct), with shifts to join them. Both the verifier and the JIT take
 * unaligned words on the architectures built for (x86, arm64). */
#define WORD_AT(p, off) (*(__u64 *)((char *)(p) + (off)))

/* nwords words from src to dst (see WORD_AT). */
#define COPY_WORDS(dst, src, nwords)							\
	do {										\
		const char *s_ = (const char *)(src);					\
		char *d_ = (char *)(dst);						\
		int k_;									\
												\
		barrier_var(s_);							\
		barrier_var(d_);							\
		_Pragma("unroll")							\
		for (k_ = 0; k_ < (nwords); k_++)					\
			WORD_AT(d_, 8 * k_) = WORD_AT(s_, 8 * k_);			\
	} while (0)

/* A kernel string in a fixed array, NUL-terminated within it, copied with
 * plain loads a word at a time (see WORD_AT): the bytes up to its first NUL,
 * zeros after, as the string helpers (bpf_get_current_comm,
 * bpf_probe_read_kernel_str into zeroed memory) leave them. dst_zeroed: dst
 * holds zeros already, the words past the NUL's are neither read nor
 * written. The lowest flagged byte of (w - 0x01..01) & ~w & 0x80..80 is w's
 * first zero byte. */
#define COPY_STR_WORDS(dst, src, nwords, dst_zeroed)					\
	do {										\
		const char *s_ = (const char *)(src);					\
		char *d_ = (char *)(dst);						\
		bool nul_ = false;							\
		int k_;									\
												\
		barrier_var(s_);							\
		barrier_var(d_);							\
		_Pragma("unroll")							\
		for (k_ = 0; k_ < (nwords); k_++) {					\
			__u64 w_ = nul_ ? 0 : WORD_AT(s_, 8 * k_);			\
			__u64 z_ = (w_ - 0x0101010101010101ULL) & ~w_ & 0x8080808080808080ULL; \
												\
			if (z_) {							\
				w_ &= (z_ & -z_) - 1;					\
				nul_ = true;						\
			}								\
			WORD_AT(d_, 8 * k_) = w_;					\
			if (nul_ && (dst_zeroed))					\
				break;							\
		}									\
	} while (0)

/* Append a NUL-terminated copy of a kernel or user string at *off. */
static __always_inline __u32 put_str(struct exec_scratch *s, __u32 off, const void *src,
				     __u32 max, bool user, bool *cut)
{
	long n;

	off &= OE_DATA_HALF - 1;
	if (user)
		n = bpf_probe_read_user_str(&s->data[off], max, src);
	else
		n = bpf_probe_read_kernel_str(&s->data[off], max, src);
	if (n <= 0) {
		s->data[off] = 0;
		return 1;
	}
	/* bpf_probe_read_*_str cuts at max - 1 bytes plus NUL */
	if (n == max && cut)
		*cut = true;
	return n;
}

/*
 * The walks below run as global (noinline, non-static) functions: the
 * verifier checks each once with unknown arguments. Inlined at every call
 * site, the four path walks exceed the verifier's one-million-instruction
 * budget. walk_path() and put_cgroup() are each one body, inlined into a
 * global function per way of reading (_direct: plain loads, _probed: probe
 * reads), which the exec program of that build calls.
 * Kernel pointers cross the call as integers and results come back packed:
 * bytes written in the low 32 bits, OE_PF_* flags in the high 32.
 */
#define PACK(len, flags) ((__u64)(flags) << 32 | (len))

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/*
 * The walks fetch a few neighbouring words of each kernel object they pass
 * (a dentry, a mount, a kernfs node), which they know by address only:
 * nwords words at addr, from byte off, into dst; zeros where unreadable.
 * Direct: bpf_rdonly_cast (6.2+) makes the address a typed pointer, read
 * with plain loads (fault-guarded by the JIT), no helper call. The type is
 * struct pt_regs, the saved registers: plain words from first to last (at
 * least 21 of them), so the verifier sees every word as a number, as after
 * a probe read; through the object's own type, a pointer field would load
 * as a typed pointer, and the walks' states would multiply. Otherwise one
 * probe read. Each walk is built both ways; so is the exec program
 * (handle_exec, handle_exec_probed), and user space loads the one the kernel
 * can run (core/probes.py): a kfunc call fails the load of a program on a
 * kernel without it.
 */
#define FETCH(direct, dst, nwords, addr, off)						\
	do {										\
		if (direct) {								\
			const __u64 *w_ = (const void *)bpf_rdonly_cast((void *)(addr),	\
						bpf_core_type_id_kernel(struct pt_regs)) + (off); \
			int k_;								\
												\
			_Pragma("unroll")						\
			for (k_ = 0; k_ < (nwords); k_++)				\
				(dst)[k_] = w_[k_];					\
		} else if (bpf_probe_read_kernel(dst, (nwords) * 8, (void *)(addr) + (off))) { \
			__builtin_memset(dst, 0, (nwords) * 8);				\
		}									\
	} while (0)

/* A few neighbouring pointer-sized fields of a kernel struct the verifier
 * knows only as an address, fetched at once (FETCH): SPAN_WORDS words
 * from the field at offset `first`. The offsets are CO-RE relocated, so a
 * field that a kernel placed outside the span is still read, on its own. */
#define SPAN_WORDS 4

static __always_inline __u64 span_word_of(const __u64 *span, __u32 words, const void *obj, __u32 first,
					  __u32 off)
{
	__u64 v = 0;

	/* off and first are constants once relocated: so is the byte offset,
	 * added as it is (as a word index it is divided and multiplied by 8
	 * at run time: clang cannot fold two relocations). */
	if (off >= first && off - first < words * 8 && !((off - first) & 7))
		return *(const __u64 *)((const char *)span + (off - first));
	bpf_probe_read_kernel(&v, sizeof(v), obj + off);
	return v;
}

static __always_inline __u64 span_word(const __u64 *span, const void *obj, __u32 first, __u32 off)
{
	return span_word_of(span, SPAN_WORDS, obj, first, off);
}

static __always_inline __u64 dentry_word(const __u64 *span, const void *dentry, __u32 first, __u32 off)
{
	return span_word_of(span, DENTRY_SPAN_WORDS, dentry, first, off);
}

/* d_name.len, a 32-bit field in the span (it shares a word with the hash). */
static __always_inline __u32 name_len(const __u64 *span, const void *dentry, __u32 first, __u32 off)
{
	__u32 aligned = off & ~7u;

	return dentry_word(span, dentry, first, aligned) >> (8 * (off - aligned));
}

/* The inline name's field: d_shortname since 6.14, d_iname before. */
struct dentry___pre614 {
	unsigned char d_iname[32];
} __attribute__((preserve_access_index));

static __always_inline __u32 inline_name_offset(void)
{
	if (bpf_core_field_exists(struct dentry, d_shortname))
		return bpf_core_field_offset(struct dentry, d_shortname);
	return bpf_core_field_offset(struct dentry___pre614, d_iname);
}

static __always_inline __u32 inline_name_size(void)
{
	if (bpf_core_field_exists(struct dentry, d_shortname))
		return bpf_core_field_size(struct dentry, d_shortname);
	return bpf_core_field_size(struct dentry___pre614, d_iname);
}

/* Where the inline name lies in the span, when all of it does (the
 * offsets are constants once relocated); DENTRY_SPAN_WORDS if not. */
static __always_inline __u32 inline_name_word(__u32 d_first)
{
	__u32 inl = inline_name_offset();

	if (inl < d_first || ((inl - d_first) & 7) || inline_name_size() > INLINE_NAME_WORDS * 8 ||
	    inl - d_first + INLINE_NAME_WORDS * 8 > DENTRY_SPAN_WORDS * 8)
		return DENTRY_SPAN_WORDS;
	return (inl - d_first) / 8;
}

/* Step i's name and length, from its dentry's span; a name inside the
 * dentry, and so in the span, needs no read of its own in put_walked(). */
static __always_inline void walked_name(struct exec_scratch *s, int i, const __u64 *span, void *dentry,
					__u32 d_first, __u32 d_name, __u32 d_len)
{
	__u64 name = dentry_word(span, dentry, d_first, d_name);
	__u32 len = name_len(span, dentry, d_first, d_len);

	s->walk.name[i & (OE_PATH_DEPTH_MAX - 1)] = name;
	s->walk.len[i & (OE_PATH_DEPTH_MAX - 1)] = len;
	if (inline_name_word(d_first) < DENTRY_SPAN_WORDS && name == (__u64)dentry + inline_name_offset() &&
	    len > 0 && len < inline_name_size())
		s->walk.inline_mask |= 1ULL << (i & (OE_PATH_DEPTH_MAX - 1));
}

/* Where walk_path() stands between two steps: bpf_loop()'s context. The
 * walk's outcome goes straight to s->walk: the verifier tracks no values in
 * a map, while each value of the outcome held here would be a state of its
 * own to check the step from. */
struct walk_state {
	struct exec_scratch *s;
	void *mnt;
	void *dentry;
	void *mnt_root;
	__u64 mspan[SPAN_WORDS];         /* the mount's span (see span_word) */
};

/* Step i of walk_path(): 1 once the walk is done. */
static __always_inline long walk_step(__u32 i, struct walk_state *w, const bool direct)
{
	__u32 d_first = bpf_core_field_offset(struct dentry, d_hash.pprev);
	__u32 d_parent = bpf_core_field_offset(struct dentry, d_parent);
	__u32 d_name = bpf_core_field_offset(struct dentry, d_name.name);
	__u32 d_len = bpf_core_field_offset(struct dentry, d_name.len);
	__u32 mnt_off = bpf_core_field_offset(struct mount, mnt);
	__u32 m_first = bpf_core_field_offset(struct mount, mnt_parent);
	__u32 m_mountpoint = bpf_core_field_offset(struct mount, mnt_mountpoint);
	__u32 m_root = mnt_off + bpf_core_field_offset(struct vfsmount, mnt_root);
	struct exec_scratch *s = w->s;
	void *dentry = w->dentry;
	void *parent, *mnt_parent;
	__u64 *span;

	i &= OE_PATH_DEPTH_MAX - 1;
	span = s->walk.span[i];
	/* Past the first step a mount's root needs nothing of its own (the
	 * mount's fields say where to go): its span is not read, and what the
	 * slot holds is not used. */
	if (i == 0 || dentry != w->mnt_root)
		FETCH(direct, span, DENTRY_SPAN_WORDS, dentry, d_first);
	parent = (void *)dentry_word(span, dentry, d_first, d_parent);
	if (i == 0 && !dentry_word(span, dentry, d_first, d_first) && parent != dentry)
		s->walk.pflags |= OE_PF_DELETED;
	if (dentry != w->mnt_root && dentry != parent) {
		walked_name(s, i, span, dentry, d_first, d_name, d_len);
		w->dentry = parent;
		return 0;
	}
	if (dentry != w->mnt_root) {
		/* A dentry with no parent that is not a mount root: a pseudo
		 * file (memfd, pipe, socket, anon inode). */
		walked_name(s, i, span, dentry, d_first, d_name, d_len);
		s->walk.n = i + 1;
		s->walk.pflags = (s->walk.pflags & ~OE_PF_TRUNCATED) | OE_PF_DETACHED;
		return 1;
	}
	mnt_parent = (void *)span_word(w->mspan, w->mnt, m_first, m_first);
	if (mnt_parent == w->mnt) {
		s->walk.n = i;
		s->walk.pflags &= ~OE_PF_TRUNCATED;
		return 1;
	}
	/* Indexed by step, not by component: a counter of its own would
	 * multiply the states the verifier explores. */
	s->walk.name[i] = 0;
	w->dentry = (void *)span_word(w->mspan, w->mnt, m_first, m_mountpoint);
	w->mnt = mnt_parent;
	FETCH(direct, w->mspan, SPAN_WORDS, mnt_parent, m_first);
	w->mnt_root = (void *)span_word(w->mspan, mnt_parent, m_first, m_root);
	return 0;
}

/* The two builds of walk_step() (see FETCH), bpf_loop() callbacks. */
static long walk_step_direct(__u32 i, void *w)
{
	return walk_step(i, w, true);
}

static long walk_step_probed(__u32 i, void *w)
{
	return walk_step(i, w, false);
}

/* Walks (mnt, dentry) up to the root of the mount namespace as d_path()
 * does, dentries up to the mount root and then across mounts, into s->walk.
 * Apart from writing the path (put_walked), the --path-prefix filters read
 * the walk of the executable, which is then written without a second one.
 * One fetch per dentry (its hash link, parent and name are neighbours)
 * and one per mount (parent, mountpoint and root likewise). The steps run
 * under bpf_loop(): the verifier checks a step once, where it checked a
 * loop's body once per iteration, the bulk of the time the programs take to
 * load. */
static __always_inline int walk_path(struct exec_scratch *s, __u64 vfsmnt_addr, __u64 dentry_addr,
				     const bool direct)
{
	__u32 mnt_off = bpf_core_field_offset(struct mount, mnt);
	__u32 m_first = bpf_core_field_offset(struct mount, mnt_parent);
	__u32 m_root = mnt_off + bpf_core_field_offset(struct vfsmount, mnt_root);
	struct walk_state w = {
		.s = s,
		.mnt = (void *)vfsmnt_addr - mnt_off,
		.dentry = (void *)dentry_addr,
	};

	if (!s)
		return 0;
	s->walk.n = 0;
	s->walk.pflags = 0;
	s->walk.inline_mask = 0;
	if (!dentry_addr || !vfsmnt_addr)
		return 0;
	FETCH(direct, w.mspan, SPAN_WORDS, w.mnt, m_first);
	w.mnt_root = (void *)span_word(w.mspan, w.mnt, m_first, m_root);
	/* Cut unless a step finds the end. */
	s->walk.n = OE_PATH_DEPTH_MAX;
	s->walk.pflags = OE_PF_TRUNCATED;
	bpf_loop(OE_PATH_DEPTH_MAX, direct ? walk_step_direct : walk_step_probed, &w, 0);
	return 0;
}

/* The two builds of walk_path() (see FETCH). */
__noinline int walk_path_direct(struct exec_scratch *s, __u64 vfsmnt_addr, __u64 dentry_addr)
{
	return walk_path(s, vfsmnt_addr, dentry_addr, true);
}

__noinline int walk_path_probed(struct exec_scratch *s, __u64 vfsmnt_addr, __u64 dentry_addr)
{
	return walk_path(s, vfsmnt_addr, dentry_addr, false);
}

static __always_inline void walk(struct exec_scratch *s, __u64 vfsmnt_addr, __u64 dentry_addr, const bool direct)
{
	if (direct)
		walk_path_direct(s, vfsmnt_addr, dentry_addr);
	else
		walk_path_probed(s, vfsmnt_addr, dentry_addr);
}

/* Step i's name of the walk in s at dst: its bytes, then a NUL at its
 * length; the bytes written, NUL included (1 for a name that cannot be
 * read). An inline name comes from the walk's own read of its dentry: its
 * words, the ones past the NUL landing where the next string starts, which
 * is written after them. Another, of known length, by one fixed-size read
 * (word by word) rather than a string read (byte by byte): the same bytes,
 * as d_name is NUL-terminated at its length. A length that does not fit (a
 * rename meanwhile) falls back to the string read. inline_word: see
 * inline_name_word(), worked out once per path by the caller (clang does not
 * move CO-RE relocations out of a loop). */
static __always_inline __u32 put_component(struct exec_scratch *s, __u32 i, char *dst, __u32 inline_word)
{
	const void *name;
	__u32 len;
	long n;
	int k;

	i &= OE_PATH_DEPTH_MAX - 1;
	name = (const void *)s->walk.name[i];
	len = s->walk.len[i];
	if (s->walk.inline_mask & (1ULL << i)) {
		const __u64 *words = &s->walk.span[i][inline_word];

		for (k = 0; k < INLINE_NAME_WORDS; k++)
			*(__u64 *)&dst[8 * k] = words[k];
		/* An inline name is shorter than the mask. */
		dst[len & (OE_NAME_MAX - 1)] = 0;
		return len + 1;
	}
	if (len == 0 || len >= OE_NAME_MAX) {
		n = bpf_probe_read_kernel_str(dst, OE_NAME_MAX, name);
		if (n <= 0) {
			dst[0] = 0;
			return 1;
		}
		return n;
	}
	if (bpf_probe_read_kernel(dst, len, name)) {
		dst[0] = 0;
		return 1;
	}
	dst[len] = 0;
	return len + 1;
}

/* Where put_walked() stands between two components: bpf_loop()'s context. */
struct put_walked_state {
	struct exec_scratch *s;
	__u32 start;
	__u32 off;
	__u32 pflags;
};

/* Component i of put_walked(): 1 once the path is cut. */
static long put_walked_step(__u32 i, void *ctx)
{
	struct put_walked_state *p = ctx;
	struct exec_scratch *s = p->s;
	__u32 off = p->off;

	if (!s->walk.name[i & (OE_PATH_DEPTH_MAX - 1)])
		return 0;
	if (off - p->start > OE_PATH_MAX - OE_NAME_MAX) {
		p->pflags |= OE_PF_TRUNCATED;
		return 1;
	}
	p->off = off + put_component(s, i, &s->data[off & (OE_DATA_HALF - 1)],
				     inline_name_word(bpf_core_field_offset(struct dentry, d_hash.pprev)));
	return 0;
}

/* Writes the path in s->walk at off as leaf-first components, at most
 * OE_PATH_MAX bytes (a cut keeps the leaf-most ones). The words an inline
 * name writes past its NUL land past the record's end when it is the last.
 * One component per bpf_loop() step (see walk_path()). */
__noinline __u64 put_walked(struct exec_scratch *s, __u32 off)
{
	struct put_walked_state p = { .s = s, .start = off, .off = off };
	__u32 n;

	if (!s)
		return 0;
	n = s->walk.n;
	p.pflags = s->walk.pflags;
	bpf_loop(n < OE_PATH_DEPTH_MAX ? n : OE_PATH_DEPTH_MAX, put_walked_step, &p, 0);
	if (p.pflags & OE_PF_TRUNCATED)
		count(OE_CNT_CUT_PATH);
	return PACK(p.off - off, p.pflags);
}

/* The OE_MATCH_* bits of the longest configured prefix of the first len
 * bytes in s->key.data. */
static __always_inline __u32 prefix_bits(struct exec_scratch *s, __u32 len)
{
	__u8 *bits;

	s->key.prefixlen = len * 8;
	bits = bpf_map_lookup_elem(&path_prefixes, &s->key);
	return bits ? *bits : 0;
}

/* The same for a kernel string (cmdpath), of which OE_PREFIX_LEN - 1 bytes
 * are compared. */
static __always_inline __u32 string_prefix_bits(struct exec_scratch *s, const char *str)
{
	long n = bpf_probe_read_kernel_str(s->key.data, OE_PREFIX_LEN, str);

	return prefix_bits(s, n > 1 ? n - 1 : 0);
}

/* Where walked_prefix_bits() stands between two components: bpf_loop()'s
 * context. */
struct walked_prefix_state {
	struct exec_scratch *s;
	__u64 pos;  /* 64 bits: a 32-bit index is widened in a copy the verifier cannot bound */
};

/* Component i, root first, of walked_prefix_bits(): 1 once the key is full. */
static long walked_prefix_step(__u32 i, void *ctx)
{
	struct walked_prefix_state *p = ctx;
	struct exec_scratch *s = p->s;
	__u32 j = s->walk.n - 1 - i;
	__u64 pos = p->pos;

	/* pos is no more precise than this range: a precise pos per step
	 * would multiply the states the verifier explores. */
	barrier_var(pos);
	pos &= 2 * OE_PREFIX_LEN - 1;
	if (pos >= OE_PREFIX_LEN - 1)
		return 1;
	if (!s->walk.name[j & (OE_PATH_DEPTH_MAX - 1)])
		return 0;
	s->key.data[pos] = '/';
	/* The names the walk kept, as put_walked() writes them: no second
	 * string read. */
	p->pos = pos + put_component(s, j, &s->key.data[pos + 1],
				     inline_name_word(bpf_core_field_offset(struct dentry, d_hash.pprev)));
	return 0;
}

/* The same for the path in s->walk, joined root first as user space joins
 * it ("..." first when the walk was cut). One component per bpf_loop() step
 * (see walk_path()). */
__noinline __u32 walked_prefix_bits(struct exec_scratch *s)
{
	struct walked_prefix_state p = { .s = s };
	bool cut;
	__u32 n;

	if (!s)
		return 0;
	n = s->walk.n;
	cut = s->walk.pflags & OE_PF_TRUNCATED;
	if (cut) {
		__builtin_memcpy(s->key.data, "...", 3);
		p.pos = 3;
	}
	bpf_loop(n < OE_PATH_DEPTH_MAX ? n : OE_PATH_DEPTH_MAX, walked_prefix_step, &p, 0);
	/* No component: the root. */
	if (p.pos == 0) {
		s->key.data[0] = '/';
		p.pos = 1;
	} else if (p.pos == 3 && cut) {
		s->key.data[3] = '/';
		p.pos = 4;
	}
	return prefix_bits(s, p.pos < OE_PREFIX_LEN - 1 ? p.pos : OE_PREFIX_LEN - 1);
}

static __always_inline __u32 kernfs_parent_offset(void)
{
	if (bpf_core_field_exists(struct kernfs_node___pre615, parent))
		return bpf_core_field_offset(struct kernfs_node___pre615, parent);
	return bpf_core_field_offset(struct kernfs_node___615, __parent);
}

/* Leaf-first names of a cgroup v2 directory, root excluded. A node's parent
 * and name are neighbours: one fetch per level (see span_word). */
static __always_inline __u64 put_cgroup(struct exec_scratch *s, __u32 off, __u64 kn_addr, const bool direct)
{
	__u32 first = kernfs_parent_offset(), name = bpf_core_field_offset(struct kernfs_node, name);
	void *kn = (void *)kn_addr;
	__u64 span[SPAN_WORDS];
	__u32 start = off;
	int i;

	if (!s || !kn)
		return 0;
	/* One level more than written: whether the last one had a parent. */
	for (i = 0; i <= OE_CGROUP_DEPTH_MAX; i++) {
		void *parent;

		FETCH(direct, span, SPAN_WORDS, kn, first);
		parent = (void *)span_word(span, kn, first, first);
		if (!parent)
			return PACK(off - start, 0);
		if (i == OE_CGROUP_DEPTH_MAX)
			break;
		off += put_str(s, off, (void *)span_word(span, kn, first, name), OE_NAME_MAX, false, NULL);
		kn = parent;
	}
	count(OE_CNT_CUT_PATH);
	return PACK(off - start, OE_PF_TRUNCATED);
}

/* The two builds of put_cgroup() (see FETCH). */
__noinline __u64 put_cgroup_direct(struct exec_scratch *s, __u32 off, __u64 kn_addr)
{
	return put_cgroup(s, off, kn_addr, true);
}

__noinline __u64 put_cgroup_probed(struct exec_scratch *s, __u32 off, __u64 kn_addr)
{
	return put_cgroup(s, off, kn_addr, false);
}

/* Appends one resolved path as string `which`, its flags into rec.flags. */
static __always_inline __u32 put_resolved(struct exec_scratch *s, __u32 off, int which,
					  int path_idx, __u64 packed)
{
	__u32 len = (__u32)packed;

	s->rec.str_len[which] = len;
	s->rec.flags |= (__u32)(packed >> 32) << (OE_F_PATH_SHIFT + OE_F_PATH_BITS * path_idx);
	return len;
}

/* A global function takes no typed pointer: the path's pointers cross as
 * integers. A pointer the verifier knows the type of becomes one by a trip
 * through the scratch map: a privileged program may store a pointer into a
 * map value, and what it loads from one is an integer. A store and a load
 * instead of a probe read per pointer. */
static __always_inline __u64 as_addr(struct exec_scratch *s, const void *p)
{
	*(volatile __u64 *)&s->addr = (__u64)p;
	return *(volatile __u64 *)&s->addr;
}

/* f: a pointer the verifier knows as a file. */
static __always_inline void walk_file(struct exec_scratch *s, struct file *f, const bool direct)
{
	walk(s, as_addr(s, f->f_path.mnt), as_addr(s, f->f_path.dentry), direct);
}

/* The same for a file the verifier knows by its address only. */
static __always_inline void walk_file_at(struct exec_scratch *s, struct file *f, const bool direct)
{
	walk(s, (__u64)BPF_CORE_READ(f, f_path.mnt), (__u64)BPF_CORE_READ(f, f_path.dentry), direct);
}

/* Copy [start, end) of the new process's memory (argv or env block). */
static __always_inline __u32 put_user_block(struct exec_scratch *s, __u32 off, unsigned long start,
					    unsigned long end, __u32 max, __u32 cut_flag,
					    __u32 unreadable_flag, __u32 cut_counter)
{
	__u64 len = end > start ? end - start : 0;

	if (max == 0)  /* not collected: nothing is cut */
		return 0;
	if (len > max) {
		len = max;
		s->rec.flags |= cut_flag;
		count(cut_counter);
	}
	/* Spelled out for the verifier: max is load-time data it cannot see. */
	if (len > OE_ARGS_MAX)
		len = OE_ARGS_MAX;
	off &= OE_DATA_HALF - 1;
	if (len && bpf_probe_read_user(&s->data[off], len, (void *)start)) {
		s->rec.flags |= unreadable_flag;
		count(OE_CNT_READ_ERROR);
		return 0;
	}
	return len;
}

/* argv and env with one read, when that writes what put_user_block() would
 * for each: both collected, neither cut, env right after argv (where the
 * ELF loader puts it). False, and nothing kept, otherwise or if the read
 * failed (each is then read on its own, and a failure told apart). */
static __always_inline bool put_user_blocks(struct exec_scratch *s, __u32 off, unsigned long arg_start,
					    unsigned long arg_end, unsigned long env_start, unsigned long env_end)
{
	__u64 len;

	if (!cfg.argv_max || !cfg.env_max || arg_end != env_start || arg_start > arg_end ||
	    env_start > env_end || arg_end - arg_start > cfg.argv_max || env_end - env_start > cfg.env_max)
		return false;
	len = env_end - arg_start;
	/* Spelled out for the verifier, as in put_user_block(). */
	if (len > 2 * OE_ARGS_MAX)
		return false;
	off &= OE_DATA_HALF - 1;
	if (len && bpf_probe_read_user(&s->data[off], len, (void *)arg_start))
		return false;
	s->rec.str_len[OE_STR_ARGV] = arg_end - arg_start;
	s->rec.str_len[OE_STR_ENV] = env_end - env_start;
	return true;
}

/* Entry `level` of a struct pid: the pid it is in that namespace, and that
 * namespace's address into *ns (and its inode number into *ns_inum, when
 * asked). The host's level by plain loads; another one's index is not a
 * constant offset. Each branch keeps its own loads (barrier_var): the
 * verifier refuses one load through a typed or a stack pointer. */
static __always_inline __u32 pid_nr_at(struct pid *pid, unsigned int level, __u64 *ns, __u32 *ns_inum)
{
	struct upid up = {};
	__u32 nr;

	if (level == 0) {
		nr = pid->numbers[0].nr;
		*ns = (__u64)pid->numbers[0].ns;
		if (ns_inum)
			*ns_inum = pid->numbers[0].ns->ns.inum;
		barrier_var(nr);
	} else {
		bpf_core_read(&up, sizeof(up), &pid->numbers[level]);
		nr = up.nr;
		*ns = (__u64)up.ns;
		if (ns_inum)
			*ns_inum = BPF_CORE_READ(up.ns, ns.inum);
		barrier_var(nr);
	}
	return nr;
}

/* The pid of task t in the pid namespace at `ns` (level `level`), 0 if t is
 * not visible there (a parent outside a container's pid namespace). */
static __always_inline __u32 pid_at_level(struct task_struct *t, unsigned int level, __u64 ns)
{
	struct pid *pid = t->group_leader->thread_pid;
	__u64 pid_ns;
	__u32 nr;

	if (!pid || pid->level < level)
		return 0;
	nr = pid_nr_at(pid, level, &pid_ns, NULL);
	return pid_ns == ns ? nr : 0;
}

struct vma_file_ctx {
	struct file *file;
};

static long vma_file_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct vma_file_ctx *ctx = data;

	ctx->file = vma->vm_file;
	return 0;
}

/* The ELF interpreter's file: AT_BASE in the new mm's auxiliary vector is
 * where the loader was mapped; static binaries have AT_BASE 0. The exec's
 * task is the current one: bpf_find_vma() takes it as the trusted pointer
 * it needs (handle_exec reads the task through an untrusted one). */
static __always_inline struct file *elf_interpreter(struct mm_struct *mm)
{
	struct vma_file_ctx ctx = {};
	unsigned long base = 0;
	int i;

	if (!mm)
		return NULL;
	/* Unrolled: a direct read needs a constant offset. */
#pragma unroll
	for (i = 0; i < AUXV_PAIRS_MAX; i++) {
		unsigned long type = mm->saved_auxv[2 * i];

		if (type == AT_NULL)
			return NULL;
		if (type == AT_BASE) {
			base = mm->saved_auxv[2 * i + 1];
			break;
		}
	}
	if (!base)
		return NULL;
	bpf_find_vma(bpf_get_current_task_btf(), base, vma_file_cb, &ctx, 0);
	return ctx.file;
}

/* A process that never exec'd since its fork still has self_exec_id equal
 * to the parent_exec_id it got at fork: it runs a copy of its parent's
 * image. Walk up to the process whose image that is. */
static __always_inline struct task_struct *image_parent(struct task_struct *p)
{
	int i;

	for (i = 0; i < IMAGE_PARENT_DEPTH_MAX; i++) {
		if (p->self_exec_id != p->parent_exec_id || (p->flags & PF_KTHREAD) || p->tgid <= 1)
			break;
		p = p->real_parent->group_leader;
	}
	return p;
}

static __always_inline __u64 wakeup_flags(void)
{
	/* The bytes bpf_ringbuf_query(BPF_RB_AVAIL_DATA) counts, by plain
	 * loads from the ring the map holds: no helper call. */
	struct bpf_ringbuf *rb = ((struct bpf_ringbuf_map *)&events)->rb;

	/* Batch wake-ups: the reader polls on a short timer and is woken
	 * early only once enough data waits. */
	return rb->producer_pos - rb->consumer_pos >= cfg.wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* The OE_MATCH_* bits of t's comm (after the exec). */
static __always_inline __u32 comm_bits(struct task_struct *t)
{
	char comm[OE_COMM_LEN] __attribute__((aligned(8)));  /* stack words must be aligned */
	__u8 *bits;

	COPY_STR_WORDS(comm, t->comm, OE_COMM_LEN / 8, false);
	bits = bpf_map_lookup_elem(&comm_filter, comm);
	return bits ? *bits : 0;
}

static __always_inline __u32 uid_bits(__u32 uid)
{
	__u8 *bits = bpf_map_lookup_elem(&uid_filter, &uid);

	return bits ? *bits : 0;
}

/* The task's cgroup v2, or one of its ancestors, is in cgroup_filter. Level
 * 0 is the root; a configured cgroup deeper than OE_CGROUP_DEPTH_MAX is
 * refused by user space. */
static __always_inline bool in_filtered_cgroup(void)
{
	int level;

	for (level = 0; level <= OE_CGROUP_DEPTH_MAX; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (!id)
			return false;  /* deeper than the task's own cgroup */
		if (bpf_map_lookup_elem(&cgroup_filter, &id))
			return true;
	}
	return false;
}

/* The filters that need no scratch: comm, uid, pid namespace, cgroup. */
static __always_inline bool filtered(__u32 comm, __u32 uid, __u32 pid_ns)
{
	if (cfg.filter_comm_include && !(comm & OE_MATCH_INCLUDE))
		return true;
	if (cfg.filter_comm_exclude && (comm & OE_MATCH_EXCLUDE))
		return true;
	if (cfg.filter_uid && !(uid & OE_MATCH_INCLUDE))
		return true;
	if (cfg.container_only && pid_ns == cfg.host_pid_ns)
		return true;
	if (cfg.filter_cgroup && !in_filtered_cgroup())
		return true;
	return false;
}

/* An exec that is not reported ends the image user space may hold for the
 * process: tell it, unless this is the first exec since the fork (the
 * previous image was the parent's, which goes on). After the exec,
 * self_exec_id has grown by one per exec since the fork. */
static __always_inline void unreported(struct task_struct *t)
{
	struct oe_unreported_exec *r;

	if (t->self_exec_id == t->parent_exec_id + 1)
		return;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count(OE_CNT_LOST_UNREPORTED_RINGBUF_FULL);
		return;
	}
	r->hdr.type = OE_REC_UNREPORTED_EXEC;
	r->hdr.size = sizeof(*r);
	r->hdr.boot_ns = bpf_ktime_get_boot_ns();
	r->start_boottime_ns = t->start_boottime;
	r->pid = t->tgid;
	r->_pad = 0;
	bpf_ringbuf_submit(r, wakeup_flags());
}

SEC("tp_btf/sched_prepare_exec")
int BPF_PROG(handle_prepare_exec, struct task_struct *t, struct linux_binprm *bprm)
{
	char comm[OE_COMM_LEN] __attribute__((aligned(8)));  /* stack words must be aligned */
	__u32 tid = t->pid, idx = tid & (PREV_COMM_SLOTS - 1);
	struct prev_comm_slot *slot = bpf_map_lookup_elem(&prev_comm_slots, &idx);
	char *dst = comm;
	bool in_slot = false;

	if (slot) {
		/* A tag of this tid is left by an exec of an earlier thread
		 * with the same tid that died after prepare: no longer read. */
		__u64 tag = *(volatile __u64 *)&slot->tag;

		if ((tag == 0 || tag == PREV_COMM_TAG(tid)) &&
		    __sync_val_compare_and_swap(&slot->tag, tag, PREV_COMM_BUSY) == tag) {
			dst = slot->comm;
			in_slot = true;
		}
	}
	/* Straight into the slot taken, else onto the stack for prev_comms. */
	COPY_STR_WORDS(dst, t->comm, OE_COMM_LEN / 8, false);
	if (in_slot)
		__sync_lock_test_and_set(&slot->tag, PREV_COMM_TAG(tid));
	else
		bpf_map_update_elem(&prev_comms, &tid, comm, BPF_ANY);
	return 0;
}

/* Moves the comm sched_prepare_exec kept for thread tid into prev_comm:
 * false if it kept none. */
static __always_inline bool take_prev_comm(__u32 tid, char *prev_comm)
{
	__u32 idx = tid & (PREV_COMM_SLOTS - 1);
	struct prev_comm_slot *slot = bpf_map_lookup_elem(&prev_comm_slots, &idx);
	char *kept;

	if (slot && __sync_val_compare_and_swap(&slot->tag, PREV_COMM_TAG(tid), PREV_COMM_BUSY) ==
			    PREV_COMM_TAG(tid)) {
		COPY_WORDS(prev_comm, slot->comm, OE_COMM_LEN / 8);
		__sync_lock_test_and_set(&slot->tag, 0);
		return true;
	}
	kept = bpf_map_lookup_elem(&prev_comms, &tid);
	if (!kept)
		return false;
	COPY_WORDS(prev_comm, kept, OE_COMM_LEN / 8);
	bpf_map_delete_elem(&prev_comms, &tid);
	return true;
}

/* The exec record in s, off bytes of strings after it, into the ring: 0 if
 * it went out. */
static __always_inline long output_exec(struct exec_scratch *s, __u32 off)
{
	off &= OE_DATA_SIZE - 1;
	s->rec.hdr.size = sizeof(s->rec) + off;
	return bpf_ringbuf_output(&events, &s->rec, sizeof(s->rec) + off, wakeup_flags());
}

/* The record did not fit in what the reader has left of the ring (it is
 * behind): rather than lose the exec, out it goes without its environment,
 * else with its argv cut to OE_ARGV_RING_FULL_MAX bytes too, each flagged
 * truncated, every other field kept. argv and env are the last strings,
 * in that order: cutting them is shortening the record. Only on this
 * failure path: an exec that fits pays nothing. */
static __always_inline void output_cut(struct exec_scratch *s, __u32 off)
{
	__u32 env = s->rec.str_len[OE_STR_ENV], argv = s->rec.str_len[OE_STR_ARGV];

	if (env) {
		off -= env;
		s->rec.str_len[OE_STR_ENV] = 0;
		s->rec.flags |= OE_F_ENV_TRUNCATED;
		if (!output_exec(s, off)) {
			count(OE_CNT_CUT_RING_FULL);
			return;
		}
	}
	if (argv > OE_ARGV_RING_FULL_MAX) {
		off -= argv - OE_ARGV_RING_FULL_MAX;
		s->rec.str_len[OE_STR_ARGV] = OE_ARGV_RING_FULL_MAX;
		s->rec.flags |= OE_F_ARGV_TRUNCATED;
		if (!output_exec(s, off)) {
			count(OE_CNT_CUT_RING_FULL);
			return;
		}
	}
	count(OE_CNT_LOST_EXEC_RINGBUF_FULL);
}

/* The record of an exec; direct: built with FETCH's plain loads. */
static __always_inline int exec_record(struct task_struct *t, pid_t old_pid, struct linux_binprm *bprm,
				       const bool direct)
{
	/* Read once: the parent may exit meanwhile and t be handed to a reaper,
	 * whose executable is not the parent's. */
	struct task_struct *forker = t->real_parent;
	struct task_struct *parent = forker->group_leader;
	struct task_struct *image_owner;
	const struct cred *cred = t->cred;
	struct mm_struct *mm = t->mm;
	struct pid *tpid = t->thread_pid;
	struct file *exe = bprm->file;
	struct exec_scratch *s;
	struct kernfs_node *cgroup;
	__u32 key = bpf_get_smp_processor_id(), off = 0, level;
	__u64 ns;
	__u32 comm = 0, uid = 0, prefix = 0, pid_ns, nr, len;
	bool cut = false, exe_walked = false, sampled = false;

	if (t->tgid == cfg.self_tgid || parent->tgid == cfg.self_tgid)
		return 0;
	count(OE_CNT_EXEC_SEEN);

	/* Filters, cheapest first; then sampling. Both come before the work of
	 * building the record. */
	level = tpid->level;
	nr = pid_nr_at(tpid, level, &ns, &pid_ns);
	if (cfg.filter_comm_include || cfg.filter_comm_exclude || cfg.keep_comm)
		comm = comm_bits(t);
	if (cfg.filter_uid || cfg.keep_uid)
		uid = uid_bits(cred->uid.val);
	if (filtered(comm, uid, pid_ns)) {
		count(OE_CNT_EXEC_FILTERED);
		unreported(t);
		return 0;
	}

	s = bpf_map_lookup_elem(&scratch, &key);
	if (!s) {
		count(OE_CNT_LOST_EXEC_NO_SCRATCH);
		unreported(t);
		return 0;
	}
	/* A prefix of cmdpath decides without a walk; the executable's path is
	 * walked only when that did not, and the walk is kept for the record. */
	if (cfg.filter_path || cfg.keep_path)
		prefix = string_prefix_bits(s, bprm->filename);
	if (cfg.filter_path && !(prefix & OE_MATCH_INCLUDE)) {
		walk_file(s, exe, direct);
		exe_walked = true;
		prefix |= walked_prefix_bits(s);
		if (!(prefix & OE_MATCH_INCLUDE)) {
			count(OE_CNT_EXEC_FILTERED);
			unreported(t);
			return 0;
		}
	}
	if (cfg.sample_rate > 1 && !((comm | uid | prefix) & OE_MATCH_KEEP)) {
		if (cfg.keep_path && !exe_walked) {
			walk_file(s, exe, direct);
			exe_walked = true;
			prefix |= walked_prefix_bits(s);
		}
		if (!(prefix & OE_MATCH_KEEP)) {
			if (bpf_get_prandom_u32() % cfg.sample_rate) {
				count(OE_CNT_EXEC_SAMPLED_OUT);
				unreported(t);
				return 0;
			}
			sampled = true;
		}
	}

	__builtin_memset(&s->rec, 0, sizeof(s->rec));
	s->rec.hdr.type = OE_REC_EXEC;
	if (sampled)
		s->rec.flags |= OE_F_SAMPLED;
	s->rec.hdr.boot_ns = bpf_ktime_get_boot_ns();

	s->rec.host_pid = t->tgid;
	s->rec.host_tid = t->pid;
	s->rec.old_tid = old_pid;
	s->rec.host_ppid = parent->tgid;
	s->rec.pid = nr;
	s->rec.tid = nr; /* after exec the task is its thread group's leader */
	s->rec.ppid = pid_at_level(parent, level, ns);
	s->rec.pid_ns = pid_ns;
	s->rec.mount_ns = t->nsproxy->mnt_ns->ns.inum;
	s->rec.uid = cred->uid.val;
	s->rec.gid = cred->gid.val;
	s->rec.euid = cred->euid.val;
	s->rec.egid = cred->egid.val;
	cgroup = t->cgroups->dfl_cgrp->kn;
	s->rec.cgroup_id = cgroup->id;  /* bpf_get_current_cgroup_id() */
	s->rec.start_boottime_ns = t->start_boottime;
	image_owner = image_parent(parent);
	s->rec.image_ppid = image_owner->tgid;
	s->rec.parent_start_boottime_ns = image_owner->start_boottime;
	s->rec.argc = bprm->argc;
	s->rec.envc = bprm->envc;
	if (parent->flags & PF_KTHREAD)
		s->rec.flags |= OE_F_INVOKED_FROM_KERNEL;
	COPY_STR_WORDS(s->rec.comm, t->comm, OE_COMM_LEN / 8, true);
	if (take_prev_comm(old_pid, s->rec.prev_comm))
		s->rec.flags |= OE_F_PREV_COMM_KNOWN;
	/* Its last byte is always NUL, left by the memset above. */
	COPY_STR_WORDS(s->rec.hostname, t->nsproxy->uts_ns->name.nodename, (OE_HOSTNAME_LEN - 1) / 8, true);

	file_id_direct(exe, &s->rec.file);
	/* A forked copy shares its image parent's mm->exe_file. The thread that
	 * forked us still has the mm when its group leader exited. */
	if (!read_exe_id(forker, &s->rec.parent_exe) &&
	    !read_exe_id(parent, &s->rec.parent_exe) && !(parent->flags & PF_KTHREAD))
		s->rec.flags |= OE_F_PARENT_EXE_UNKNOWN;

	/* Strings, in enum oe_str order. */
	s->rec.str_len[OE_STR_CMDPATH] = put_str(s, off, bprm->filename, OE_STR_MAX,
						  false, &cut);
	off += s->rec.str_len[OE_STR_CMDPATH];
	if (cut) {
		s->rec.flags |= OE_F_CMDPATH_TRUNCATED;
		count(OE_CNT_CUT_STRING);
		cut = false;
	}
	/* Unless a script or binfmt_misc named an interpreter, interp is the
	 * filename's string itself: the bytes just written are copied (word by
	 * word), not read again (byte by byte). */
	if (bprm->interp == bprm->filename) {
		len = s->rec.str_len[OE_STR_CMDPATH];
		if (len > OE_STR_MAX)
			len = OE_STR_MAX;  /* spelled out for the verifier */
		bpf_probe_read_kernel(&s->data[off & (OE_DATA_HALF - 1)], len, s->data);
		cut = s->rec.flags & OE_F_CMDPATH_TRUNCATED;
	} else {
		len = put_str(s, off, bprm->interp, OE_STR_MAX, false, &cut);
	}
	s->rec.str_len[OE_STR_INTERP] = len;
	off += len;
	if (cut) {
		s->rec.flags |= OE_F_INTERP_TRUNCATED;
		count(OE_CNT_CUT_STRING);
	}

	/* cfg.skip is constant for the verifier: what --no-field switched off is
	 * not even in the program that runs. */
	if (!(cfg.skip & OE_SKIP_PATHS)) {
		if (!exe_walked)
			walk_file(s, exe, direct);
		off += put_resolved(s, off, OE_STR_PATHNAME, OE_PATH_PATHNAME, put_walked(s, off));
	}
	if (!(cfg.skip & OE_SKIP_INTERPRETER)) {
		struct file *ld = elf_interpreter(mm);

		file_id_direct(ld, &s->rec.interpreter);
		if (!(cfg.skip & OE_SKIP_PATHS) && ld) {
			walk_file(s, ld, direct);
			off += put_resolved(s, off, OE_STR_INTERPRETER, OE_PATH_INTERPRETER, put_walked(s, off));
		}
	}
	if (!(cfg.skip & OE_SKIP_STDIN)) {
		struct files_struct *files = t->files;
		struct fdtable *fdt = files->fdt;
		struct file *in = NULL;

		/* fdt->fd is an array of pointers, whose elements the verifier
		 * knows as integers only. Until the table grows past its first
		 * NR_OPEN_DEFAULT fds it is files->fd_array, whose elements it
		 * knows as files; exec unshared the table, nothing grows it now. */
		if ((void *)fdt->fd == (void *)files->fd_array) {
			in = files->fd_array[0];
			file_id_direct(in, &s->rec.stdin);
			s->rec.stdin_fs_magic = in ? in->f_inode->i_sb->s_magic : 0;
			if (!(cfg.skip & OE_SKIP_PATHS) && in)
				walk_file(s, in, direct);
		} else {
			if (fdt->max_fds > 0)
				bpf_core_read(&in, sizeof(in), &fdt->fd[0]);
			file_id_probed(in, &s->rec.stdin);
			s->rec.stdin_fs_magic = BPF_CORE_READ(in, f_inode, i_sb, s_magic);
			if (!(cfg.skip & OE_SKIP_PATHS) && in)
				walk_file_at(s, in, direct);
		}
		if (!(cfg.skip & OE_SKIP_PATHS) && in)
			off += put_resolved(s, off, OE_STR_STDIN, OE_PATH_STDIN, put_walked(s, off));
	}
	if (!(cfg.skip & OE_SKIP_PATHS)) {
		walk(s, as_addr(s, t->fs->pwd.mnt), as_addr(s, t->fs->pwd.dentry), direct);
		off += put_resolved(s, off, OE_STR_PWD, OE_PATH_PWD, put_walked(s, off));
		off += put_resolved(s, off, OE_STR_CGROUP, OE_PATH_CGROUP,
				    direct ? put_cgroup_direct(s, off, as_addr(s, cgroup)) :
					     put_cgroup_probed(s, off, as_addr(s, cgroup)));
	}

	if (put_user_blocks(s, off, mm->arg_start, mm->arg_end, mm->env_start, mm->env_end)) {
		off += s->rec.str_len[OE_STR_ARGV] + s->rec.str_len[OE_STR_ENV];
	} else {
		s->rec.str_len[OE_STR_ARGV] =
			put_user_block(s, off, mm->arg_start, mm->arg_end, cfg.argv_max, OE_F_ARGV_TRUNCATED,
				       OE_F_ARGV_UNREADABLE, OE_CNT_CUT_ARGV);
		off += s->rec.str_len[OE_STR_ARGV];
		off &= OE_DATA_HALF - 1;
		s->rec.str_len[OE_STR_ENV] =
			put_user_block(s, off, mm->env_start, mm->env_end, cfg.env_max, OE_F_ENV_TRUNCATED,
				       OE_F_ENV_UNREADABLE, OE_CNT_CUT_ENV);
		off += s->rec.str_len[OE_STR_ENV];
	}

	if (output_exec(s, off))
		output_cut(s, off);
	return 0;
}

/* The task and bprm are read through untrusted pointers (bpf_rdonly_cast):
 * the same loads, fault-guarded alike, but the verifier (6.5+) searches the
 * whole kernel BTF by name for every pointer field it loads through a trusted
 * one (is that field trusted, RCU-protected?), once per state it explores,
 * which made most of handle_exec's verification time. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *t, pid_t old_pid, struct linux_binprm *bprm)
{
	return exec_record(bpf_rdonly_cast(t, bpf_core_type_id_kernel(struct task_struct)), old_pid,
			   bpf_rdonly_cast(bprm, bpf_core_type_id_kernel(struct linux_binprm)), true);
}

/* handle_exec for kernels without bpf_rdonly_cast (before 6.2). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec_probed, struct task_struct *t, pid_t old_pid, struct linux_binprm *bprm)
{
	return exec_record(t, old_pid, bprm, false);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *t)
{
	struct oe_exit r;

	/* Report the process once, when its last thread exits: signal->live
	 * has already been decremented for this thread on every kernel. */
	if (t->signal->live.counter != 0 || (t->flags & PF_KTHREAD))
		return 0;
	if (t->tgid == cfg.self_tgid)
		return 0;
	r.hdr.type = OE_REC_EXIT;
	r.hdr.size = sizeof(r);
	r.hdr.boot_ns = bpf_ktime_get_boot_ns();
	r.pid = t->tgid;
	r.start_boottime_ns = t->group_leader->start_boottime;
	r.exit_code = t->exit_code;
	/* Two words, not a string read: the comm is NUL-terminated and user
	 * space reads it up to the NUL. */
	COPY_WORDS(r.comm, t->comm, OE_COMM_LEN / 8);
	/* Built on the stack and copied out by one helper call, not two
	 * (reserve and submit). */
	if (bpf_ringbuf_output(&events, &r, sizeof(r), wakeup_flags()))
		count(OE_CNT_LOST_EXIT_RINGBUF_FULL);
	return 0;
}
