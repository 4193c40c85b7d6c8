/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Record layout shared by the kernel programs and user space: the one
 * source of truth. otel_exec/model/layout.py mirrors it and tests/model/test_layout_registry.py
 * checks the mirror against the BTF of the compiled object.
 *
 * Every record starts with struct oe_header. Exec records carry a fixed part
 * followed by variable-length strings, in the order of enum oe_str, whose
 * lengths are in oe_exec.str_len[]. Path strings are encoded leaf first, one
 * NUL-terminated component each ("true\0bin\0usr\0" is /usr/bin/true), so
 * the kernel never has to write backwards; argv and env are copied verbatim
 * from the new mm (NUL-separated).
 */
#ifndef OTEL_EXEC_H
#define OTEL_EXEC_H

#define OE_COMM_LEN 16
#define OE_HOSTNAME_LEN 65
#define OE_ABI_VERSION 1

/* Hard ceilings the verifier sees; the configured bounds are at most these. */
#define OE_ARGS_MAX (128 * 1024)  /* argv bytes and env bytes, each */
#define OE_STR_MAX 4096           /* cmdpath, interp */
#define OE_PATH_MAX 4096          /* one resolved path, all components */
#define OE_PATH_DEPTH_MAX 64      /* components walked per path */
#define OE_CGROUP_DEPTH_MAX 16    /* cgroup hierarchy levels walked */
#define OE_NAME_MAX 256           /* one dentry / kernfs name incl. NUL */
/* argv bytes an exec record keeps when the ring had no room for it whole
 * (OE_CNT_CUT_RING_FULL): that record is then about an ordinary exec's size,
 * so it fits wherever ordinary records still do. */
#define OE_ARGV_RING_FULL_MAX 1024
/* Exec data area: strings are written at offsets masked into the first half,
 * so a write of at most OE_ARGS_MAX bytes provably stays inside. */
#define OE_DATA_HALF (512 * 1024)
#define OE_DATA_SIZE (2 * OE_DATA_HALF)

enum oe_record_type {
	OE_REC_EXEC = 1,
	OE_REC_EXIT = 3,
	OE_REC_UNREPORTED_EXEC = 4,
};

/* Variable-length strings of an exec record, in the order they follow it. */
enum oe_str {
	OE_STR_CMDPATH = 0,     /* bprm->filename, verbatim */
	OE_STR_INTERP,          /* bprm->interp, verbatim */
	OE_STR_PATHNAME,        /* path of bprm->file, leaf-first components */
	OE_STR_INTERPRETER,     /* path of the mapped ELF interpreter */
	OE_STR_STDIN,           /* path of fd 0 */
	OE_STR_PWD,             /* current working directory */
	OE_STR_CGROUP,          /* cgroup v2 path, leaf-first components */
	OE_STR_ARGV,            /* mm->arg_start..arg_end */
	OE_STR_ENV,             /* mm->env_start..env_end */
	OE_STR_COUNT,
};

/* oe_exec.flags */
#define OE_F_ARGV_TRUNCATED        (1u << 0)
#define OE_F_ENV_TRUNCATED         (1u << 1)
#define OE_F_INVOKED_FROM_KERNEL   (1u << 2)
#define OE_F_ARGV_UNREADABLE       (1u << 3)
#define OE_F_ENV_UNREADABLE        (1u << 4)
#define OE_F_CMDPATH_TRUNCATED     (1u << 5)
#define OE_F_INTERP_TRUNCATED      (1u << 6)
#define OE_F_PREV_COMM_KNOWN       (1u << 7)
/* The parent's mm was gone (it is exiting, or its main thread exited): its
 * executable is unknown, user space takes the image from its table. */
#define OE_F_PARENT_EXE_UNKNOWN    (1u << 23)
/* Kept by --sample-rate N (it stands for N execs), not by an always-keep
 * filter; without sampling no exec has it. */
#define OE_F_SAMPLED               (1u << 24)
/* Per resolved path p (OE_PATH_*), three bits from OE_F_PATH_SHIFT + 3p:
 * the walk hit its bound, the file is unlinked, the dentry is detached
 * (a pseudo file such as a memfd, pipe or socket: the kernel names it via
 * d_dname, user space formats it the same way). */
#define OE_F_PATH_SHIFT            8
#define OE_F_PATH_BITS             3
#define OE_PF_TRUNCATED            1u
#define OE_PF_DELETED              2u
#define OE_PF_DETACHED             4u
#define OE_PATH_PATHNAME 0
#define OE_PATH_INTERPRETER 1
#define OE_PATH_STDIN 2
#define OE_PATH_PWD 3
#define OE_PATH_CGROUP 4

/* Kernel-side loss and truncation counters (per-CPU array index). */
enum oe_counter {
	OE_CNT_EXEC_SEEN = 0,
	OE_CNT_EXEC_FILTERED,
	OE_CNT_EXEC_SAMPLED_OUT,         /* passed the filters, dropped by --sample-rate */
	OE_CNT_LOST_EXEC_RINGBUF_FULL,   /* record could not be output, not even cut */
	OE_CNT_LOST_EXIT_RINGBUF_FULL,
	OE_CNT_LOST_EXEC_NO_SCRATCH,     /* per-CPU scratch lookup failed */
	OE_CNT_LOST_UNREPORTED_RINGBUF_FULL, /* an oe_unreported_exec could not be output */
	OE_CNT_CUT_ARGV,                 /* argv cut by the configured bound */
	OE_CNT_CUT_ENV,
	OE_CNT_CUT_PATH,                 /* a path deeper/longer than the walk bound */
	OE_CNT_CUT_STRING,               /* cmdpath or interp longer than OE_STR_MAX */
	OE_CNT_READ_ERROR,               /* argv/env could not be read from the new mm */
	OE_CNT_CUT_RING_FULL,            /* output only without env, or argv cut too: the ring was full */
	OE_CNT_COUNT,
};

struct oe_header {
	__u32 type;     /* enum oe_record_type */
	__u32 size;     /* bytes of the whole record */
	__u64 boot_ns;  /* bpf_ktime_get_boot_ns() at the event */
};

/* Identity of a file: device in kernel encoding (MAJOR << 20 | MINOR). */
struct oe_file_id {
	__u64 inode;
	__u64 ctime_ns;
	__u32 dev;
	__u32 mode;
};

/*
 * Per-process fields come first, up to OE_EXEC_SHARED_OFFSET; everything from
 * there on (identity of the file, context, strings) is identical for execs
 * of one command from one context, such as the iterations of a build loop,
 * and user space decodes it once per distinct value.
 */
struct oe_exec {
	struct oe_header hdr;
	__u64 start_boottime_ns;         /* task->start_boottime */
	__u64 parent_start_boottime_ns;  /* of the image parent (see image_ppid) */
	__u32 host_pid, host_tid, host_ppid, old_tid;
	/* The nearest ancestor that exec'd: the process whose image the parent
	 * runs (the parent itself unless it is a forked copy, e.g. a subshell). */
	__u32 image_ppid;
	__u32 pid, tid, ppid;            /* in the task's own pid namespace */
	/* shared part (OE_EXEC_SHARED_OFFSET) */
	__u64 cgroup_id;
	struct oe_file_id file;          /* bprm->file */
	struct oe_file_id interpreter;   /* ELF interpreter; zero if none */
	struct oe_file_id stdin;         /* fd 0; zero if closed */
	struct oe_file_id parent_exe;    /* real_parent->mm->exe_file; zero for kthreads */
	__u32 stdin_fs_magic;            /* names pipe:[N], socket:[N], anon_inode:... */
	__u32 uid, gid, euid, egid;
	__u32 mount_ns, pid_ns;
	__u32 argc, envc;                /* bprm->argc / envc: the true counts */
	__u32 flags;                     /* OE_F_* */
	__u32 str_len[OE_STR_COUNT];     /* bytes of each string that follows */
	char comm[OE_COMM_LEN];
	char prev_comm[OE_COMM_LEN];
	char hostname[OE_HOSTNAME_LEN];
	char _pad[3];
};

#define OE_EXEC_SHARED_OFFSET 64

struct oe_exit {
	struct oe_header hdr;
	__u64 start_boottime_ns;
	__u32 pid;                       /* host tgid */
	__u32 exit_code;                 /* wait status: code << 8, or signal | 0x80 if core */
	char comm[OE_COMM_LEN];
};

/*
 * An exec that was not reported (filtered or sampled out) by a process that
 * had exec'd before: the image user space may hold for it has ended. Not sent
 * for a first exec after fork, whose previous image is its parent's.
 */
struct oe_unreported_exec {
	struct oe_header hdr;
	__u64 start_boottime_ns;
	__u32 pid;                       /* host tgid */
	__u32 _pad;
};

/* Entries of each filter map: comms, uids, cgroups, path prefixes. */
#define OE_FILTER_ENTRIES_MAX 256

/* Bits of the comm_filter, uid_filter and path_prefixes values. */
#define OE_MATCH_INCLUDE 1u              /* --comm, --uid, --path-prefix */
#define OE_MATCH_EXCLUDE 2u              /* --exclude-comm */
#define OE_MATCH_KEEP    4u              /* --keep-comm, --keep-uid, --keep-path-prefix */

/* path_prefixes is an LPM trie keyed by a path's first OE_PREFIX_LEN - 1
 * bytes; each entry's value holds the bits of every configured prefix that
 * is a prefix of it, so the longest match answers for all. */
#define OE_PREFIX_LEN 256
struct oe_prefix_key {
	__u32 prefixlen;                 /* bits */
	char data[OE_PREFIX_LEN];
};

/* oe_config.skip: what --no-field switches off (argv and env: argv_max and
 * env_max are 0). */
#define OE_SKIP_STDIN       (1u << 0)    /* fd 0's identity and path */
#define OE_SKIP_INTERPRETER (1u << 1)    /* the ELF interpreter's identity and path */
#define OE_SKIP_PATHS       (1u << 2)    /* every dentry/kernfs walk: pathname, interpreter,
					  * stdin, pwd, cgroup */

/* Load-time configuration (.rodata, set before load). */
struct oe_config {
	__u32 self_tgid;                 /* the agent: its execs/forks/exits are not reported */
	__u32 argv_max;                  /* bytes, <= OE_ARGS_MAX; 0 = do not read argv */
	__u32 env_max;                   /* bytes, <= OE_ARGS_MAX; 0 = do not read env */
	__u32 host_pid_ns;               /* pid-ns inum of the host, for container_only */
	__u8 filter_comm_include;        /* only comms in comm_filter with OE_MATCH_INCLUDE */
	__u8 filter_comm_exclude;        /* drop comms in comm_filter with OE_MATCH_EXCLUDE */
	__u8 filter_uid;                 /* only uids in uid_filter with OE_MATCH_INCLUDE */
	__u8 container_only;             /* only tasks outside the host pid namespace */
	__u32 wakeup_bytes;              /* wake the reader once this much is queued */
	__u8 filter_cgroup;              /* only tasks in a cgroup of cgroup_filter, or below one */
	__u8 filter_path;                /* only cmdpath or pathname under an OE_MATCH_INCLUDE prefix */
	__u8 keep_comm;                  /* sampling spares comms with OE_MATCH_KEEP */
	__u8 keep_uid;                   /* ... uids with OE_MATCH_KEEP */
	__u8 keep_path;                  /* ... cmdpath or pathname under an OE_MATCH_KEEP prefix */
	__u8 _pad[3];
	__u32 sample_rate;               /* keep 1 exec in sample_rate; 0 and 1 keep every exec */
	__u32 skip;                      /* OE_SKIP_* */
};

#endif /* OTEL_EXEC_H */
