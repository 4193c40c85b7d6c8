/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * otel-exec, BCC backend: what the kernel program (otel_exec_bcc.c) and user
 * space share: the records it writes into the ring buffer, the `procs`
 * entries user space looks up, the comm_filter key and the counters.
 * otel_exec/bcc/layout.py mirrors it; tests/model/test_layout_registry.py checks
 * the mirror against this header compiled for the BPF target.
 *
 * u32/u64 come from the kernel headers BCC compiles against: like the
 * program, this header names no kernel struct.
 */
#ifndef OTEL_EXEC_BCC_H
#define OTEL_EXEC_BCC_H

#define OE_REC_ARGS 11
#define OE_REC_PREP 12
#define OE_REC_EXEC 13
#define OE_REC_EXIT 14
#define OE_REC_DISCARD 15

#define OE_COMM_LEN 16
#define OE_STR_MAX 4096 /* cmdpath and interp, NUL included */

/* ARGS flags */
#define OE_A_ARGV_CUT 1
#define OE_A_ENV_CUT 2
#define OE_A_ARGV_UNREADABLE 4
#define OE_A_ENV_UNREADABLE 8
#define OE_A_ARGC_UNKNOWN 16 /* more than OE_ELEMS_MAX elements */
#define OE_A_ENVC_UNKNOWN 32

/* EXEC flags */
#define OE_E_HOST_PID_NS 1 /* in the agent's (initial) pid namespace */
#define OE_E_PARENT_KTHREAD 2 /* the parent is a kernel thread (valid with OE_P_ALIVE) */
#define OE_E_IMAGE_KNOWN 4 /* image_ppid and parent_image are set */
#define OE_E_START_KNOWN 8 /* start_lo..start_hi bound the fork time */
#define OE_E_FILENAME_CUT 16
#define OE_E_PREP_INTERP_CUT 32

/* EXEC parent_kind */
#define OE_P_UNKNOWN 0 /* nothing known (entry evicted, or parent died: reparented) */
#define OE_P_ALIVE 1 /* ppid: forked it and still alive at the exec */
#define OE_P_PARENT_OF 2 /* ppid is the forker; the parent is the forker's parent (CLONE_PARENT) */
#define OE_P_PREEXISTING 3 /* forked before the agent: no fork record */

/* procs.flags */
#define OE_PR_FORKED 1 /* forked while attached: ppid/ppid_life/start valid */
#define OE_PR_PARENT_KTHREAD 2
#define OE_PR_PARENT_OF 4 /* CLONE_PARENT from a process whose parent is unknown */
#define OE_PR_IMAGE 8 /* img_owner/img_token valid */

enum oe_counter {
	OE_CNT_EXEC_SEEN,
	OE_CNT_EXEC_FILTERED,
	OE_CNT_LOST_EXEC_RINGBUF_FULL,
	OE_CNT_LOST_ARGS_RINGBUF_FULL,
	OE_CNT_LOST_PREP_RINGBUF_FULL,
	OE_CNT_LOST_EXIT_RINGBUF_FULL,
	OE_CNT_LOST_DISCARD_RINGBUF_FULL,
	OE_CNT_LOST_NO_SCRATCH,
	OE_CNT_CUT_ARGV,
	OE_CNT_CUT_ENV,
	OE_CNT_CUT_STRING,
	OE_CNT_READ_ERROR,
	OE_CNT_MAP_FULL_PROCS,
	OE_CNT_MAP_FULL_PENDING,
	OE_CNT_COUNT,
};

struct oe_hdr {
	u32 type;
	u32 size;
	u64 boot_ns;
};

struct oe_args {
	struct oe_hdr hdr;
	u32 tid;
	u32 flags;
	u32 argc;
	u32 envc;
	u32 argv_len;
	u32 env_len;
	char comm[OE_COMM_LEN];
};

struct oe_prep {
	struct oe_hdr hdr;
	u32 tid;
	u32 interp_len;
	char comm[OE_COMM_LEN];
};

struct oe_exec {
	struct oe_hdr hdr;
	u64 cgroup_id;
	u64 args_ns;
	u64 prep_ns;
	u64 start_lo;
	u64 start_hi;
	u64 parent_image;
	u64 ppid_life; /* the parent's life token (OE_P_ALIVE) */
	u32 host_pid;
	u32 host_tid;
	u32 old_tid;
	u32 uid;
	u32 gid;
	u32 ppid;
	u32 parent_kind;
	u32 image_ppid;
	u32 flags;
	u32 filename_len;
	char comm[OE_COMM_LEN];
};

struct oe_exit {
	struct oe_hdr hdr;
	u64 start_lo;
	u64 start_hi;
	u32 pid;
	u32 flags; /* 1: start known */
	char comm[OE_COMM_LEN];
};

struct oe_discard {
	struct oe_hdr hdr;
	u32 tid;
	u32 pad;
	u64 args_ns;
};

struct oe_proc {
	u64 life; /* when this entry was made: tells two holders of a pid apart */
	u64 ppid_life; /* the parent's life token when it forked this process */
	u64 start_lo; /* the fork time lies in [start_lo, start_hi] */
	u64 start_hi;
	u64 img_token; /* boot_ns of the exec whose image this process runs */
	u32 ppid;
	u32 img_owner; /* host tgid of the process that made that image */
	u32 flags;
	u32 pad;
};

struct oe_comm {
	char c[OE_COMM_LEN];
};

#endif /* OTEL_EXEC_BCC_H */
