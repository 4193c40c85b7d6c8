/* otel_exec.core._decode_native: the reader thread's per-record work in C.
 *
 * The pure-Python code is the reference (otel_exec/core/ringbuf.py,
 * otel_exec/core/decode.py) and this module gives the same results:
 *
 *   RingCopy  moves the ring buffer's records into the agent's memory on
 *             a thread that never takes the GIL, and hands them over in
 *             RingBuffer.drain's order; given a Decoder, it decodes each
 *             record without entering the interpreter for it.
 *   Decoder   decodes the records that make up nearly all of a storm: an
 *             exec record whose shared part the reference decoder already
 *             holds in its cache, and an exit record. Every other record (a
 *             new shared part, an unreported exec, anything malformed) goes
 *             to the reference Decoder.decode, which fills its caches and
 *             raises its DecodeError: both share one set of caches, so a
 *             block decoded once is one shared instance whichever decoded it.
 *
 *   libbpf_print_filter()
 *             libbpf's print callback in front of the Python one
 *             (otel_exec/core/libbpf.py), for the loader: see below.
 *
 * Events are built the way per_exec_constructor's function builds them:
 * an instance of the slots dataclass, every slot set; the slot offsets come
 * from the class's member descriptors, checked against its __slots__ when a
 * Decoder is made.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

/* bpf/otel_exec.h; otel_exec/core/decode.py compares these with
 * otel_exec/model/layout.py before it uses this module (LAYOUT). */
#define REC_EXEC 1
#define REC_EXIT 3
#define HEADER_SIZE 16
#define EXEC_SIZE 344
#define EXEC_SHARED_OFFSET 64
#define EXIT_SIZE 48
#define OFF_BOOT_NS 8
#define OFF_START 16
#define OFF_PARENT_START 24
#define OFF_HOST_PID 32
#define OFF_HOST_TID 36
#define OFF_HOST_PPID 40
#define OFF_IMAGE_PPID 48
#define OFF_PID 52
#define OFF_TID 56
#define OFF_PPID 60
#define OFF_EXIT_PID 24
#define OFF_EXIT_STATUS 28
#define OFF_EXIT_COMM 32
#define COMM_LEN 16

/* The ring buffer's record header (kernel/bpf/ringbuf.c). */
#define RB_BUSY (1U << 31)
#define RB_DISCARD (1U << 30)
#define RB_LEN_MASK (RB_DISCARD - 1)
#define RB_HDR_SIZE 8

/* ExecEvent's per-exec fields, set here; its shared fields come, in order,
 * from the SharedExec. Together they must be exactly its __slots__. */
static const char *const EXEC_PER_EXEC[] = {
    "timestamp", "pid", "tid", "ppid", "host_pid", "host_tid", "host_ppid", "image_ppid",
    "process_start_time", "start_ticks", "exec_id", "parent_exec_id", "sample_rate", "shared",
    "unavailable", "parent_start_ticks", "observed", "executable_identity", "script_identity",
};
enum {
    X_TIMESTAMP, X_PID, X_TID, X_PPID, X_HOST_PID, X_HOST_TID, X_HOST_PPID, X_IMAGE_PPID,
    X_PROCESS_START_TIME, X_START_TICKS, X_EXEC_ID, X_PARENT_EXEC_ID, X_SAMPLE_RATE, X_SHARED,
    X_UNAVAILABLE, X_PARENT_START_TICKS, X_OBSERVED, X_EXECUTABLE_IDENTITY, X_SCRIPT_IDENTITY,
    X_COUNT
};
static const char *const EXIT_FIELDS[] = {
    "timestamp", "pid", "start_ticks", "exit_code", "signal", "core_dumped", "comm",
};
#define EXIT_COUNT 7

/* Python ints of recent values, direct-mapped by value: one object per
 * value while it stays. The pid fields of an exec repeat each other (pid,
 * tid and their host values; ppid, host and image ppid), an exit names a
 * pid and start an exec named shortly before, and the children of one
 * parent name its pid and start: sharing one int makes the process
 * table's and lineage's look-ups and start comparisons find the very
 * object (no comparison of two equal ints) and saves an int's allocation
 * and deallocation per field. */
#define INT_MEMO 1024
typedef struct {
    uint64_t value[INT_MEMO];
    PyObject *obj[INT_MEMO];
} IntMemo;

typedef struct {
    PyObject_HEAD
    PyObject *reference;     /* otel_exec.core.decode.Decoder */
    PyObject *decode_error;  /* its DecodeError */
    PyObject *shared_cache;  /* reference._shared: raw shared part -> SharedExec */
    PyObject *parents;       /* reference._parents: (pid, start ns, kdev, inode) -> exec id */
    PyObject *id_host_part;  /* identity._id_host_part: the bytes every exec id hashes first */
    /* BLAKE2b-128 state after the host part's whole blocks, and the rest of it. */
    uint64_t id_h[8];
    uint64_t id_hashed;      /* bytes compressed into id_h */
    unsigned char id_tail[128];
    Py_ssize_t id_tail_len;
    PyObject *not_collected; /* reference.not_collected */
    PyObject *to_epoch_obj;
    /* The key of the last shared part found in shared_cache: execs of one
     * command come in runs, and a bytes object keeps its hash, so the next
     * lookup of an equal part costs a memcmp instead of a copy and a hash. */
    PyObject *last_key;
    /* The last SharedExec found and its fields and parent_exe, read once
     * per run of execs of one command rather than per exec. */
    PyObject *last_shared, *last_fields, *last_parent_exe;
    /* The last parent exec id worked out, and what it was worked out from
     * (the image parent's pid and start, and the parent_exe pair, held):
     * the children of one parent come in runs, and the id is a function of
     * these alone (reference._parent_exec_id). */
    PyObject *last_parent_of, *last_parent_id;
    uint32_t last_ppid;
    uint64_t last_pstart;
    /* The last exit's comm, decoded, and its bytes: the exits of a storm
     * name one command, whose str is then shared rather than decoded anew. */
    PyObject *last_comm;
    unsigned char last_comm_raw[COMM_LEN];
    Py_ssize_t last_comm_len;
    IntMemo pids, ticks;     /* pids; starts in clock ticks */
    PyTypeObject *exec_type;
    PyTypeObject *exit_type;
    long long to_epoch;      /* realtime_minus_boottime_ns */
    unsigned long long tick_ns;
    Py_ssize_t n_shared;
    Py_ssize_t dev_index, inode_index; /* in SharedExec.fields */
    Py_ssize_t exec_off[X_COUNT];
    Py_ssize_t *shared_off;  /* n_shared slot offsets */
    Py_ssize_t exit_off[EXIT_COUNT];
} DecoderObject;

static PyObject *s_fields, *s_parent_exe, *s_decode, *s_parent_exec_id,
    *s_empty;

static inline uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* The slot offset of `name` in `type`, which must be a plain object slot. */
static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", type->tp_name, name);
        return -1;
    }
    *out = m->offset;
    return 0;
}

/* The names of `type`'s slots, as a set. */
static PyObject *slot_names(PyTypeObject *type)
{
    PyObject *slots = PyObject_GetAttrString((PyObject *)type, "__slots__");
    if (slots == NULL)
        return NULL;
    PyObject *set = PySet_New(slots);
    Py_DECREF(slots);
    return set;
}

/* Whether `names` (n C strings plus the tuple `more`) are exactly type's
 * slots, each once. */
static int same_slots(PyTypeObject *type, const char *const *names, Py_ssize_t n, PyObject *more)
{
    PyObject *want = slot_names(type);
    if (want == NULL)
        return -1;
    PyObject *got = PySet_New(more);
    int ok = got != NULL;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        ok = s != NULL && PySet_Add(got, s) == 0;
        Py_XDECREF(s);
    }
    int result = -1;
    if (ok) {
        Py_ssize_t total = n + (more ? PyTuple_GET_SIZE(more) : 0);
        int eq = PyObject_RichCompareBool(want, got, Py_EQ);
        if (eq == 1 && PySet_GET_SIZE(got) == total)
            result = 0;
        else if (eq >= 0)
            PyErr_Format(PyExc_TypeError, "%s's slots are not the fields this module sets", type->tp_name);
    }
    Py_DECREF(want);
    Py_XDECREF(got);
    return result;
}

/* BLAKE2b (RFC 7693) with a 16-byte digest and no key, as
 * hashlib.blake2b(digest_size=16): identity.exec_id's hash. In C rather
 * than through the hashlib object (a copy, an update and a hexdigest call
 * per exec, and their objects). */
static const uint64_t BLAKE2B_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};
static const uint8_t BLAKE2B_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};
#define ID_DIGEST 16

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

/* One 128-byte block into h; t: bytes hashed up to its end; last: the final block. */
static void blake2b_compress(uint64_t h[8], const unsigned char *block, uint64_t t, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = BLAKE2B_IV[i];
    }
    v[12] ^= t;
    if (last)
        v[14] = ~v[14];
    for (int i = 0; i < 16; i++)
        m[i] = rd64(block + 8 * i);
#define G(a, b, c, d, x, y)                                                                                  \
    do {                                                                                                     \
        v[a] += v[b] + (x); v[d] = rotr64(v[d] ^ v[a], 32); v[c] += v[d]; v[b] = rotr64(v[b] ^ v[c], 24); \
        v[a] += v[b] + (y); v[d] = rotr64(v[d] ^ v[a], 16); v[c] += v[d]; v[b] = rotr64(v[b] ^ v[c], 63); \
    } while (0)
    /* Unrolled, the message schedule's indices are constants: no table
     * reads, and the message words are addressed directly. */
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = BLAKE2B_SIGMA[r];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
#undef G
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* The state after the host part (every exec id starts with it): its whole
 * blocks compressed (never the last block: 32 bytes always follow), the
 * rest kept. Byte counts stay far below 2^64: the high counter word is 0. */
static void id_start(DecoderObject *self, const unsigned char *host, Py_ssize_t n)
{
    for (int i = 0; i < 8; i++)
        self->id_h[i] = BLAKE2B_IV[i];
    self->id_h[0] ^= 0x01010000 ^ ID_DIGEST; /* digest length, no key, fanout 1, depth 1 */
    self->id_hashed = 0;
    while (n > 128) {
        self->id_hashed += 128;
        blake2b_compress(self->id_h, host, self->id_hashed, 0);
        host += 128;
        n -= 128;
    }
    memcpy(self->id_tail, host, n);
    self->id_tail_len = n;
}

static int Decoder_init(DecoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reference", "decode_error", "exec_type", "shared_fields", "exit_type", NULL};
    PyObject *reference, *decode_error, *shared_fields;
    PyTypeObject *exec_type, *exit_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!O!O!", kwlist, &reference, &decode_error, &PyType_Type,
                                     &exec_type, &PyTuple_Type, &shared_fields, &PyType_Type, &exit_type))
        return -1;
    if (exec_type->tp_dictoffset != 0 || exit_type->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "the event types must have slots and no __dict__");
        return -1;
    }
    Py_INCREF(reference); Py_XSETREF(self->reference, reference);
    Py_INCREF(decode_error); Py_XSETREF(self->decode_error, decode_error);
    Py_INCREF(exec_type); Py_XSETREF(self->exec_type, exec_type);
    Py_INCREF(exit_type); Py_XSETREF(self->exit_type, exit_type);
    Py_XSETREF(self->shared_cache, PyObject_GetAttrString(reference, "_shared"));
    Py_XSETREF(self->parents, PyObject_GetAttrString(reference, "_parents"));
    Py_XSETREF(self->not_collected, PyObject_GetAttrString(reference, "not_collected"));
    if (!self->shared_cache || !self->parents || !self->not_collected)
        return -1;
    if (!PyDict_Check(self->shared_cache) || !PyDict_Check(self->parents)) {
        PyErr_SetString(PyExc_TypeError, "the decoder's caches must be dicts");
        return -1;
    }
    PyObject *identity = PyObject_GetAttrString(reference, "identity");
    if (identity == NULL)
        return -1;
    Py_XSETREF(self->id_host_part, PyObject_GetAttrString(identity, "_id_host_part"));
    Py_XSETREF(self->to_epoch_obj, PyObject_GetAttrString(identity, "realtime_minus_boottime_ns"));
    Py_DECREF(identity);
    if (!self->id_host_part || !self->to_epoch_obj)
        return -1;
    if (!PyBytes_Check(self->id_host_part)) {
        PyErr_SetString(PyExc_TypeError, "HostIdentity._id_host_part must be bytes");
        return -1;
    }
    id_start(self, (const unsigned char *)PyBytes_AS_STRING(self->id_host_part), PyBytes_GET_SIZE(self->id_host_part));
    self->to_epoch = PyLong_AsLongLong(self->to_epoch_obj);
    if (self->to_epoch == -1 && PyErr_Occurred())
        return -1;
    PyObject *tick = PyObject_GetAttrString(reference, "_tick_ns");
    if (tick == NULL)
        return -1;
    self->tick_ns = PyLong_AsUnsignedLongLong(tick);
    Py_DECREF(tick);
    if (PyErr_Occurred())
        return -1;
    if (self->tick_ns == 0) {
        PyErr_SetString(PyExc_ValueError, "a clock tick of 0 ns");
        return -1;
    }

    if (same_slots(exec_type, EXEC_PER_EXEC, X_COUNT, shared_fields) < 0 ||
        same_slots(exit_type, EXIT_FIELDS, EXIT_COUNT, NULL) < 0)
        return -1;
    for (int i = 0; i < X_COUNT; i++)
        if (slot_offset(exec_type, EXEC_PER_EXEC[i], &self->exec_off[i]) < 0)
            return -1;
    for (int i = 0; i < EXIT_COUNT; i++)
        if (slot_offset(exit_type, EXIT_FIELDS[i], &self->exit_off[i]) < 0)
            return -1;
    self->n_shared = PyTuple_GET_SIZE(shared_fields);
    PyMem_Free(self->shared_off);
    self->shared_off = PyMem_New(Py_ssize_t, self->n_shared ? self->n_shared : 1);
    if (self->shared_off == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->dev_index = self->inode_index = -1;
    for (Py_ssize_t i = 0; i < self->n_shared; i++) {
        PyObject *name = PyTuple_GET_ITEM(shared_fields, i);
        const char *s = PyUnicode_AsUTF8(name);
        if (s == NULL || slot_offset(exec_type, s, &self->shared_off[i]) < 0)
            return -1;
        if (strcmp(s, "dev") == 0)
            self->dev_index = i;
        else if (strcmp(s, "inode") == 0)
            self->inode_index = i;
    }
    if (self->dev_index < 0 || self->inode_index < 0) {
        PyErr_SetString(PyExc_TypeError, "the shared fields lack dev or inode");
        return -1;
    }
    return 0;
}

/* The Python objects a Decoder holds: the one list traverse and clear go through. */
#define DECODER_OBJECTS(X) \
    X(reference) \
    X(decode_error) \
    X(shared_cache) \
    X(parents) \
    X(id_host_part) \
    X(not_collected) \
    X(to_epoch_obj) \
    X(last_key) \
    X(last_shared) \
    X(last_fields) \
    X(last_parent_exe) \
    X(last_parent_of) \
    X(last_parent_id) \
    X(last_comm) \
    X(exec_type) \
    X(exit_type)

static int Decoder_traverse(DecoderObject *self, visitproc visit, void *arg)
{
#define VISIT_FIELD(name) Py_VISIT(self->name);
    DECODER_OBJECTS(VISIT_FIELD)
#undef VISIT_FIELD
    return 0;
}

static int Decoder_clear(DecoderObject *self)
{
#define CLEAR_FIELD(name) Py_CLEAR(self->name);
    DECODER_OBJECTS(CLEAR_FIELD)
#undef CLEAR_FIELD
    for (int i = 0; i < INT_MEMO; i++) { /* ints: no cycle to traverse */
        Py_CLEAR(self->pids.obj[i]);
        Py_CLEAR(self->ticks.obj[i]);
    }
    return 0;
}

/* The int v, from the memo when it holds v: a new reference, or NULL with
 * an exception set. */
static PyObject *memo_int(IntMemo *memo, uint64_t v)
{
    size_t i = (size_t)(v % INT_MEMO);
    if (memo->obj[i] != NULL && memo->value[i] == v)
        return Py_NewRef(memo->obj[i]);
    PyObject *obj = PyLong_FromUnsignedLongLong(v);
    if (obj != NULL) {
        Py_XSETREF(memo->obj[i], Py_NewRef(obj));
        memo->value[i] = v;
    }
    return obj;
}

static void Decoder_dealloc(DecoderObject *self)
{
    PyObject_GC_UnTrack(self);
    Decoder_clear(self);
    PyMem_Free(self->shared_off);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* An unsigned 64-bit kernel time plus the signed offset to the epoch, as
 * Python adds them (no wrap-around). */
static PyObject *plus_epoch(DecoderObject *self, uint64_t ns)
{
    __int128 sum = (__int128)ns + self->to_epoch;
    if (sum >= 0 && sum <= (__int128)UINT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)sum);
    if (sum < 0 && sum >= (__int128)INT64_MIN)
        return PyLong_FromLongLong((long long)sum);
    PyObject *n = PyLong_FromUnsignedLongLong(ns);
    if (n == NULL)
        return NULL;
    PyObject *r = PyNumber_Add(n, self->to_epoch_obj);
    Py_DECREF(n);
    return r;
}

/* identity.exec_id(pid, start_ticks, dev, inode): blake2b of the host part
 * and the four as "<QQQQ", in hex. */
static PyObject *exec_id(DecoderObject *self, uint64_t pid, uint64_t ticks, PyObject *dev, PyObject *inode)
{
    uint64_t v[4] = {pid, ticks, PyLong_AsUnsignedLongLong(dev), PyLong_AsUnsignedLongLong(inode)};
    if (PyErr_Occurred())
        return NULL;
    unsigned char buf[256] = {0};
    Py_ssize_t n = self->id_tail_len;
    memcpy(buf, self->id_tail, n);
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 8; b++)
            buf[n++] = (unsigned char)(v[i] >> (8 * b));
    uint64_t h[8];
    memcpy(h, self->id_h, sizeof h);
    uint64_t hashed = self->id_hashed;
    const unsigned char *block = buf;
    if (n > 128) { /* the tail and the fields span two blocks */
        hashed += 128;
        blake2b_compress(h, block, hashed, 0);
        block += 128;
        n -= 128;
    }
    blake2b_compress(h, block, hashed + n, 1); /* zero-padded */
    PyObject *hex = PyUnicode_New(2 * ID_DIGEST, 127);
    if (hex == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(hex);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < ID_DIGEST; i++) {
        unsigned char byte = (unsigned char)(h[i / 8] >> (8 * (i % 8)));
        out[2 * i] = digits[byte >> 4];
        out[2 * i + 1] = digits[byte & 15];
    }
    return hex;
}

/* reference._parent_exec_id, its cache hit here. */
static PyObject *parent_exec_id(DecoderObject *self, uint32_t ppid, uint64_t pstart, PyObject *parent_exe)
{
    int known = PyObject_IsTrue(parent_exe);
    if (known < 0)
        return NULL;
    if (!known) {
        Py_INCREF(s_empty);
        return s_empty;
    }
    if (!PyTuple_Check(parent_exe) || PyTuple_GET_SIZE(parent_exe) != 2) {
        PyErr_SetString(PyExc_TypeError, "SharedExec.parent_exe is not a (dev, inode) pair");
        return NULL;
    }
    PyObject *key = PyTuple_New(4);
    if (key == NULL)
        return NULL;
    PyObject *a = PyLong_FromUnsignedLong(ppid), *b = PyLong_FromUnsignedLongLong(pstart);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, a);
    PyTuple_SET_ITEM(key, 1, b);
    PyObject *dev = PyTuple_GET_ITEM(parent_exe, 0), *ino = PyTuple_GET_ITEM(parent_exe, 1);
    Py_INCREF(dev);
    Py_INCREF(ino);
    PyTuple_SET_ITEM(key, 2, dev);
    PyTuple_SET_ITEM(key, 3, ino);
    PyObject *hit = PyDict_GetItemWithError(self->parents, key);
    if (hit != NULL) {
        Py_INCREF(hit);
        Py_DECREF(key);
        return hit;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *args[] = {self->reference, a, b, dev, ino};
    hit = PyObject_VectorcallMethod(s_parent_exec_id, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(key);
    return hit;
}

#define SET(obj, off, value) (*(PyObject **)((char *)(obj) + (off)) = (value))

/* A new event of `type` with its n fields v stored at the slot offsets off;
 * NULL, every v released, when one of them is NULL or the allocation fails. */
static PyObject *new_event(PyTypeObject *type, PyObject **v, int n, const Py_ssize_t *off)
{
    int ok = 1;
    for (int i = 0; i < n; i++)
        ok &= v[i] != NULL;
    PyObject *ev = ok ? type->tp_alloc(type, 0) : NULL;
    for (int i = 0; i < n; i++) {
        if (ev == NULL)
            Py_XDECREF(v[i]);
        else
            SET(ev, off[i], v[i]);
    }
    return ev;
}

/* An exec record whose shared part is in the cache; NULL without an error
 * set when it is not (the reference decodes it). */
static PyObject *decode_exec(DecoderObject *self, const unsigned char *p, uint32_t size)
{
    const char *part = (const char *)p + EXEC_SHARED_OFFSET;
    Py_ssize_t part_len = size - EXEC_SHARED_OFFSET;
    PyObject *key = self->last_key;
    if (key != NULL && PyBytes_GET_SIZE(key) == part_len && memcmp(PyBytes_AS_STRING(key), part, part_len) == 0) {
        Py_INCREF(key);
    } else {
        key = PyBytes_FromStringAndSize(part, part_len);
        if (key == NULL)
            return NULL;
    }
    /* Looked up every time, also for the last key: the cache may have been
     * emptied since, and then the reference decodes the part anew. */
    PyObject *shared = PyDict_GetItemWithError(self->shared_cache, key);
    if (shared == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    Py_XSETREF(self->last_key, key);
    Py_INCREF(shared);
    PyObject *fields, *parent_exe;
    if (shared == self->last_shared) {
        fields = Py_NewRef(self->last_fields);
        parent_exe = Py_NewRef(self->last_parent_exe);
    } else {
        fields = PyObject_GetAttr(shared, s_fields);
        parent_exe = fields ? PyObject_GetAttr(shared, s_parent_exe) : NULL;
        if (parent_exe != NULL) {
            Py_XSETREF(self->last_shared, Py_NewRef(shared));
            Py_XSETREF(self->last_fields, Py_NewRef(fields));
            Py_XSETREF(self->last_parent_exe, Py_NewRef(parent_exe));
        }
    }
    PyObject *ev = NULL, *id = NULL, *pid_ = NULL;
    if (parent_exe == NULL)
        goto done;
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != self->n_shared) {
        PyErr_Format(PyExc_ValueError, "SharedExec.fields holds %zd values, ExecEvent has %zd shared fields",
                     PyTuple_Check(fields) ? PyTuple_GET_SIZE(fields) : (Py_ssize_t)-1, self->n_shared);
        goto done;
    }
    uint64_t start = rd64(p + OFF_START), pstart = rd64(p + OFF_PARENT_START);
    uint32_t host_pid = rd32(p + OFF_HOST_PID);
    uint64_t start_ticks = start / self->tick_ns;
    id = exec_id(self, host_pid, start_ticks, PyTuple_GET_ITEM(fields, self->dev_index),
                 PyTuple_GET_ITEM(fields, self->inode_index));
    if (id == NULL)
        goto done;
    uint32_t ppid = rd32(p + OFF_IMAGE_PPID);
    if (parent_exe == self->last_parent_of && ppid == self->last_ppid && pstart == self->last_pstart) {
        pid_ = Py_NewRef(self->last_parent_id);
    } else {
        pid_ = parent_exec_id(self, ppid, pstart, parent_exe);
        if (pid_ == NULL)
            goto done;
        Py_XSETREF(self->last_parent_of, Py_NewRef(parent_exe));
        Py_XSETREF(self->last_parent_id, Py_NewRef(pid_));
        self->last_ppid = ppid;
        self->last_pstart = pstart;
    }
    PyObject *v[X_COUNT] = {NULL};
    v[X_TIMESTAMP] = plus_epoch(self, rd64(p + OFF_BOOT_NS));
    v[X_PID] = memo_int(&self->pids, rd32(p + OFF_PID));
    v[X_TID] = memo_int(&self->pids, rd32(p + OFF_TID));
    v[X_PPID] = memo_int(&self->pids, rd32(p + OFF_PPID));
    v[X_HOST_PID] = memo_int(&self->pids, host_pid);
    v[X_HOST_TID] = memo_int(&self->pids, rd32(p + OFF_HOST_TID));
    v[X_HOST_PPID] = memo_int(&self->pids, rd32(p + OFF_HOST_PPID));
    v[X_IMAGE_PPID] = memo_int(&self->pids, rd32(p + OFF_IMAGE_PPID));
    v[X_PROCESS_START_TIME] = plus_epoch(self, start);
    v[X_START_TICKS] = memo_int(&self->ticks, start_ticks);
    v[X_EXEC_ID] = id;
    id = NULL;
    v[X_PARENT_EXEC_ID] = pid_;
    pid_ = NULL;
    v[X_SAMPLE_RATE] = Py_NewRef(Py_None);
    v[X_SHARED] = Py_NewRef(shared);
    v[X_UNAVAILABLE] = Py_NewRef(self->not_collected);
    v[X_PARENT_START_TICKS] = memo_int(&self->ticks, pstart / self->tick_ns);
    v[X_OBSERVED] = Py_NewRef(Py_False);
    v[X_EXECUTABLE_IDENTITY] = Py_NewRef(Py_None);
    v[X_SCRIPT_IDENTITY] = Py_NewRef(Py_None);
    ev = new_event(self->exec_type, v, X_COUNT, self->exec_off);
    if (ev == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < self->n_shared; i++)
        SET(ev, self->shared_off[i], Py_NewRef(PyTuple_GET_ITEM(fields, i)));
done:
    Py_XDECREF(id);
    Py_XDECREF(pid_);
    Py_XDECREF(parent_exe);
    Py_XDECREF(fields);
    Py_DECREF(shared);
    return ev;
}

static PyObject *decode_exit(DecoderObject *self, const unsigned char *p)
{
    uint32_t status = rd32(p + OFF_EXIT_STATUS);
    const unsigned char *comm = p + OFF_EXIT_COMM;
    const unsigned char *nul = memchr(comm, 0, COMM_LEN);
    /* A wait status: the low 7 bits the signal (0x7F: stopped, not an
     * end), 0x80 a core dump, else the exit code in bits 8-15. */
    uint32_t signo = status & 0x7F;
    int killed = signo != 0 && signo != 0x7F;
    Py_ssize_t comm_len = nul ? nul - comm : COMM_LEN;
    PyObject *name;
    if (self->last_comm != NULL && comm_len == self->last_comm_len && memcmp(comm, self->last_comm_raw, comm_len) == 0) {
        name = Py_NewRef(self->last_comm);
    } else {
        name = PyUnicode_DecodeUTF8((const char *)comm, comm_len, "backslashreplace");
        if (name != NULL) {
            Py_XSETREF(self->last_comm, Py_NewRef(name));
            memcpy(self->last_comm_raw, comm, comm_len);
            self->last_comm_len = comm_len;
        }
    }
    PyObject *v[EXIT_COUNT] = {
        plus_epoch(self, rd64(p + OFF_BOOT_NS)),
        memo_int(&self->pids, rd32(p + OFF_EXIT_PID)),
        memo_int(&self->ticks, rd64(p + OFF_START) / self->tick_ns),
        killed ? Py_NewRef(Py_None) : PyLong_FromUnsignedLong((status >> 8) & 0xFF),
        killed ? PyLong_FromUnsignedLong(signo) : Py_NewRef(Py_None),
        PyBool_FromLong(killed && (status & 0x80)),
        name,
    };
    return new_event(self->exit_type, v, EXIT_COUNT, self->exit_off);
}

/* The event of the record p[0:n], or NULL with no error set: the reference
 * decodes that record. */
static PyObject *decode_fast(DecoderObject *self, const unsigned char *p, Py_ssize_t n)
{
    if (n < HEADER_SIZE)
        return NULL;
    uint32_t rtype = rd32(p), size = rd32(p + 4);
    /* The ring buffer pads records to 8 bytes; the reference names anything else. */
    if (!((Py_ssize_t)size == n || ((Py_ssize_t)size < n && n - (Py_ssize_t)size < 8)))
        return NULL;
    if (rtype == REC_EXEC && size >= EXEC_SIZE)
        return decode_exec(self, p, size);
    if (rtype == REC_EXIT && size >= EXIT_SIZE)
        return decode_exit(self, p);
    return NULL;
}

/* decode(record) -> Event, as the reference Decoder.decode. */
static PyObject *Decoder_decode(DecoderObject *self, PyObject *rec)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(rec, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *ev = decode_fast(self, buf.buf, buf.len);
    PyBuffer_Release(&buf);
    if (ev != NULL || PyErr_Occurred())
        return ev;
    return PyObject_CallMethodOneArg(self->reference, s_decode, rec);
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)Decoder_decode, METH_O,
     "decode(record) -> Event: what the reference Decoder.decode returns or raises."},
    {NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_exec.core._decode_native.Decoder",
    .tp_doc = PyDoc_STR("Decoder(reference, decode_error, exec_type, shared_fields, exit_type): the common\n"
                        "records in C, the rest through the reference decoder, with its caches."),
    .tp_basicsize = sizeof(DecoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_traverse = (traverseproc)Decoder_traverse,
    .tp_clear = (inquiry)Decoder_clear,
    .tp_methods = Decoder_methods,
};


/* -- the text of kernel strings (otel_exec.model.blocks.text and its users) -- */

#define PF_TRUNCATED 1
#define PF_DELETED 2
#define PF_DETACHED 4
#define PIPEFS_MAGIC 0x50495045
#define SOCKFS_MAGIC 0x534F434B
#define ANON_INODE_FS_MAGIC 0x09041934

/* bytes.decode("utf-8", "backslashreplace") */
static inline PyObject *text(const char *s, Py_ssize_t n)
{
    return PyUnicode_DecodeUTF8(s, n, "backslashreplace");
}

/* split_block(block, truncated) -> list[str]: otel_exec.model.blocks.split_block. */
static PyObject *split_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split_block(block, truncated)");
        return NULL;
    }
    int truncated = PyObject_IsTrue(args[1]);
    if (truncated < 0)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *p = b.buf, *end = p + b.len;
    PyObject *out = PyList_New(0);
    /* NUL-terminated elements; what follows the last NUL is an element
     * unless the block was cut there (its partial last element). */
    while (out != NULL && p < end) {
        const char *nul = memchr(p, 0, end - p);
        if (nul == NULL && truncated)
            break;
        const char *stop = nul ? nul : end;
        PyObject *e = text(p, stop - p);
        if (e == NULL || PyList_Append(out, e) < 0)
            Py_CLEAR(out);
        Py_XDECREF(e);
        p = stop + 1;
    }
    PyBuffer_Release(&b);
    return out;
}

/* cstr(raw) -> str: up to the first NUL, as text. */
static PyObject *cstr(PyObject *module, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *nul = memchr(b.buf, 0, b.len);
    PyObject *r = text(b.buf, nul ? nul - (const char *)b.buf : b.len);
    PyBuffer_Release(&b);
    return r;
}

/* join_path(leaf_first, pflags, fs_magic=0, inode=0) -> str:
 * otel_exec.core.decode.join_path. The components are joined as bytes and
 * decoded once: a '/' ends any incomplete UTF-8 sequence before it, so
 * that is the text of each component joined by '/'. */
static PyObject *join_path(PyObject *module, PyObject *args)
{
    Py_buffer b;
    unsigned long pflags, magic = 0;
    unsigned long long inode = 0;
    if (!PyArg_ParseTuple(args, "y*k|kK", &b, &pflags, &magic, &inode))
        return NULL;
    const char *s = b.buf;
    Py_ssize_t n = b.len;
    PyObject *r = NULL;
    /* The components are what precedes each NUL (a tail without one is not a component). */
    Py_ssize_t last_nul = n - 1;
    while (last_nul >= 0 && s[last_nul] != 0)
        last_nul--;
    if (pflags & PF_DETACHED) {
        /* Pseudo files: the d_dname() formats of pipefs, sockfs,
         * anon_inodefs and simple_dname() (memfd and other shmem files). */
        if (magic == PIPEFS_MAGIC)
            r = PyUnicode_FromFormat("pipe:[%llu]", inode);
        else if (magic == SOCKFS_MAGIC)
            r = PyUnicode_FromFormat("socket:[%llu]", inode);
        else {
            const char *nul = last_nul >= 0 ? memchr(s, 0, n) : NULL;
            PyObject *name = text(s, nul ? nul - s : 0);
            if (name != NULL)
                r = magic == ANON_INODE_FS_MAGIC ? PyUnicode_FromFormat("anon_inode:%U", name)
                                                 : PyUnicode_FromFormat("/%U (deleted)", name);
            Py_XDECREF(name);
        }
        PyBuffer_Release(&b);
        return r;
    }
    /* "..." + "/" + components root first + " (deleted)" */
    Py_ssize_t cap = 3 + 1 + (last_nul + 1) + 10;
    char stack[512];
    char *buf = cap <= (Py_ssize_t)sizeof stack ? stack : PyMem_Malloc(cap);
    if (buf == NULL) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    char *w = buf;
    if (pflags & PF_TRUNCATED) {
        memcpy(w, "...", 3);
        w += 3;
    }
    *w++ = '/';
    /* Leaf first: walk the components from the last one back. */
    Py_ssize_t end = last_nul; /* the NUL after the current component */
    int first = 1;
    while (end >= 0) {
        Py_ssize_t start = end - 1;
        while (start >= 0 && s[start] != 0)
            start--;
        start++;
        if (!first)
            *w++ = '/';
        first = 0;
        memcpy(w, s + start, end - start);
        w += end - start;
        end = start - 1;
    }
    if (pflags & PF_DELETED) {
        memcpy(w, " (deleted)", 10);
        w += 10;
    }
    r = text(buf, w - buf);
    if (buf != stack)
        PyMem_Free(buf);
    PyBuffer_Release(&b);
    return r;
}

/* One record (n bytes at p) to `handle`, through `decoder` when given: 0,
 * or -1 with an exception set (the record is then not consumed). A record
 * that reaches Python is a bytes copy: its memory is reused once handed. */
static int deliver(const unsigned char *p, Py_ssize_t n, PyObject *handle, DecoderObject *decoder,
                   PyObject *on_error)
{
    PyObject *ev = NULL;
    if (decoder != NULL) {
        ev = decode_fast(decoder, p, n);
        if (ev == NULL && !PyErr_Occurred()) {
            PyObject *arg = PyBytes_FromStringAndSize((const char *)p, n);
            ev = arg ? PyObject_CallMethodOneArg(decoder->reference, s_decode, arg) : NULL;
            Py_XDECREF(arg);
            if (ev == NULL && PyErr_ExceptionMatches(decoder->decode_error)) {
                PyObject *type, *exc, *tb;
                PyErr_Fetch(&type, &exc, &tb);
                PyErr_NormalizeException(&type, &exc, &tb);
                if (tb != NULL)
                    PyException_SetTraceback(exc, tb);
                PyObject *r = PyObject_CallOneArg(on_error, exc);
                Py_XDECREF(type);
                Py_XDECREF(exc);
                Py_XDECREF(tb);
                if (r == NULL)
                    return -1;
                Py_DECREF(r);
                return 0;
            }
        }
    } else {
        ev = PyBytes_FromStringAndSize((const char *)p, n);
    }
    if (ev == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(handle, ev);
    Py_DECREF(ev);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* RingCopy: the records of the kernel's ring, moved into memory of the
 * agent's own by a thread that never takes the GIL.
 *
 * The reader thread needs the GIL for every record, and whichever thread
 * holds it can be preempted on a busy host for tens to hundreds of
 * milliseconds (BENCHMARKS.md, 2026-12-07 09:47 UTC), longer than a ring
 * fed 20-40 KiB records lasts. The copy thread waits on the ring's fd (the
 * kernel's early wake-up, wakeup_bytes queued) and moves every submitted
 * record into a queue of mmap'd chunks, so the kernel's ring keeps room
 * while Python is held up. The reader's drain moves what the ring holds
 * too (the thread sees only the early wake-ups) and hands the queue's
 * records over in order. The queue is bounded (max_bytes): once full, the
 * records stay in the ring, and the kernel counts what it then cannot
 * write, as without this thread. Its memory is taken as needed and all
 * but one chunk given back once handed over.
 *
 * Queue entries keep the ring's framing (an 8-byte header whose first word
 * is the length, the next entry at the following 8-byte boundary), so a
 * record takes as many bytes queued as it took in the ring. */
#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define COPY_CHUNK_BYTES (1u << 20)

typedef struct Chunk {
    struct Chunk *next;
    size_t mapped;  /* bytes mmap'd, this header included */
    size_t cap;     /* bytes of data[] */
    size_t used;    /* bytes of data[] written, changed under the lock */
    unsigned char data[];
} Chunk;

typedef struct {
    PyObject_HEAD
    Py_buffer cons, prod, ring;  /* held until close() */
    int open;
    uint64_t *cons_pos;
    const uint64_t *prod_pos;
    const unsigned char *base;
    uint64_t mask;
    int ring_fd;    /* not ours: waited on, not closed */
    int notify_fd;  /* eventfd: the thread copied records */
    int stop_fd;    /* eventfd: the thread is to end */
    int epoll_fd;
    pthread_mutex_t lock;
    pthread_cond_t room;
    int stopping;
    int running;
    pthread_t thread;
    /* Under the lock. The reader alone hands entries over and frees
     * chunks; the copier alone appends. */
    Chunk *head, *tail, *spare;
    size_t read_off;  /* in head: the next entry to hand over */
    size_t queued;    /* bytes of entries not handed over */
    size_t max_bytes;
} RingCopyObject;

static Chunk *chunk_new(size_t need)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t mapped = sizeof(Chunk) + (need > COPY_CHUNK_BYTES ? need : COPY_CHUNK_BYTES);
    mapped = (mapped + (size_t)page - 1) & ~((size_t)page - 1);
    void *m = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    Chunk *c = m;
    c->next = NULL;
    c->mapped = mapped;
    c->cap = mapped - sizeof(Chunk);
    c->used = 0;
    return c;
}

/* A chunk handed over: kept as the spare (one, the size of the common
 * chunk) or unmapped, so that a lag's memory goes back once it is over. */
static void chunk_retire(RingCopyObject *self, Chunk *c)
{
    if (self->spare == NULL && c->cap <= COPY_CHUNK_BYTES) {
        c->next = NULL;
        c->used = 0;
        self->spare = c;
    } else {
        munmap(c, c->mapped);
    }
}

/* Room for an entry of `space` bytes at the queue's end, or NULL (the
 * queue is full, or no memory). Under the lock. */
static unsigned char *queue_reserve(RingCopyObject *self, size_t space)
{
    if (self->queued + space > self->max_bytes)
        return NULL;
    Chunk *t = self->tail;
    if (t != NULL && t->cap - t->used >= space)
        return t->data + t->used;
    Chunk *c;
    if (self->spare != NULL && self->spare->cap >= space) {
        c = self->spare;
        self->spare = NULL;
    } else if ((c = chunk_new(space)) == NULL) {
        return NULL;
    }
    if (t != NULL) {
        t->next = c;
    } else {
        self->head = c;
        self->read_off = 0;
    }
    self->tail = c;
    return c->data;
}

/* Moves the ring's submitted records into the queue, oldest first, up to
 * one still being written or a full queue; returns the bytes queued and
 * sets *full when the queue's bound stopped it. Under the lock. */
static size_t ring_to_queue(RingCopyObject *self, int *full)
{
    const unsigned char *base = self->base;
    uint64_t mask = self->mask, size = mask + 1;
    uint64_t c = __atomic_load_n(self->cons_pos, __ATOMIC_RELAXED);
    size_t copied = 0;
    *full = 0;
    for (;;) {
        uint64_t pr = __atomic_load_n(self->prod_pos, __ATOMIC_ACQUIRE);
        if (c >= pr)
            break;
        uint64_t pos = c;
        int stop = 0;
        while (pos < pr) {
            uint64_t off = pos & mask;
            uint32_t word = __atomic_load_n((const uint32_t *)(base + off), __ATOMIC_ACQUIRE);
            if (word & RB_BUSY) {
                stop = 1;
                break;
            }
            uint32_t length = word & RB_LEN_MASK;
            size_t space = ((size_t)length + RB_HDR_SIZE + 7) & ~(size_t)7;
            if (!(word & RB_DISCARD)) {
                unsigned char *dst = queue_reserve(self, space);
                if (dst == NULL) {
                    *full = 1;
                    stop = 1;
                    break;
                }
                memcpy(dst, &length, sizeof(length));
                uint64_t start = (off + RB_HDR_SIZE) & mask;
                if (start + length <= size) {
                    memcpy(dst + RB_HDR_SIZE, base + start, length);
                } else {
                    /* Wraps past the end of the ring (mapped once). */
                    memcpy(dst + RB_HDR_SIZE, base + start, size - start);
                    memcpy(dst + RB_HDR_SIZE + (size - start), base, length - (size - start));
                }
                self->tail->used += space;
                self->queued += space;
                copied += space;
            }
            pos += space;
        }
        if (pos != c)
            __atomic_store_n(self->cons_pos, pos, __ATOMIC_RELEASE);
        c = pos;
        if (stop)
            break;
    }
    return copied;
}

static void *copy_thread(void *arg)
{
    RingCopyObject *self = arg;
    struct epoll_event ev[2];
    for (;;) {
        int n = epoll_wait(self->epoll_fd, ev, 2, -1);
        if (n < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&self->lock);
        size_t copied = 0;
        while (!self->stopping) {
            int full;
            copied += ring_to_queue(self, &full);
            if (!full)
                break;
            /* Until the reader hands entries over; the ring keeps the rest. */
            pthread_cond_wait(&self->room, &self->lock);
        }
        int stopping = self->stopping;
        pthread_mutex_unlock(&self->lock);
        if (stopping)
            break;
        if (copied) {
            uint64_t one = 1;
            ssize_t w = write(self->notify_fd, &one, sizeof(one));
            (void)w;  /* EAGAIN: a wake-up is pending already */
        }
    }
    return NULL;
}

static void ringcopy_close_fds(RingCopyObject *self)
{
    int *fds[] = {&self->epoll_fd, &self->notify_fd, &self->stop_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

static int RingCopy_init(RingCopyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cons_pos", "prod_pos", "data", "ring_fd", "max_bytes", NULL};
    PyObject *cons_obj, *prod_obj, *data_obj;
    int ring_fd;
    Py_ssize_t max_bytes;
    if (self->open) {
        PyErr_SetString(PyExc_RuntimeError, "RingCopy is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOin", kwlist, &cons_obj, &prod_obj, &data_obj, &ring_fd,
                                     &max_bytes))
        return -1;
    if (PyObject_GetBuffer(cons_obj, &self->cons, PyBUF_WRITABLE) < 0)
        return -1;
    if (PyObject_GetBuffer(prod_obj, &self->prod, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&self->cons);
        return -1;
    }
    if (PyObject_GetBuffer(data_obj, &self->ring, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&self->cons);
        PyBuffer_Release(&self->prod);
        return -1;
    }
    self->open = 1;  /* from here on close() releases what init took */
    self->ring_fd = ring_fd;
    self->notify_fd = self->stop_fd = self->epoll_fd = -1;
    Py_ssize_t size = self->ring.len;
    if (self->cons.len < 8 || self->prod.len < 8 || size <= 0 || (size & (size - 1)) || max_bytes <= 0) {
        PyErr_SetString(PyExc_ValueError, "not a ring buffer's positions and data area, or no room to copy to");
        return -1;
    }
    self->cons_pos = self->cons.buf;
    self->prod_pos = self->prod.buf;
    self->base = self->ring.buf;
    self->mask = (uint64_t)size - 1;
    self->max_bytes = (size_t)max_bytes;
    self->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (self->notify_fd < 0 || self->stop_fd < 0 || self->epoll_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* Edge-triggered: one return per wake-up of the ring (records queued
     * below wakeup_bytes are the reader's), not one per record while any
     * is queued. */
    struct epoll_event ring_ev = {.events = EPOLLIN | EPOLLET, .data.fd = ring_fd};
    struct epoll_event stop_ev = {.events = EPOLLIN, .data.fd = self->stop_fd};
    if ((ring_fd >= 0 && epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, ring_fd, &ring_ev) < 0) ||
        epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, self->stop_fd, &stop_ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *RingCopy_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    RingCopyObject *self = (RingCopyObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->notify_fd = self->stop_fd = self->epoll_fd = -1;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->room, NULL);
    return (PyObject *)self;
}

static int ringcopy_check_open(RingCopyObject *self)
{
    if (!self->open || self->epoll_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "RingCopy is closed");
        return -1;
    }
    return 0;
}

/* start(): the copy thread. It inherits the caller's nice value, signal
 * mask and capabilities: started after the privilege drop, by the reader. */
static PyObject *RingCopy_start(RingCopyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ringcopy_check_open(self) < 0)
        return NULL;
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "the copy thread runs already");
        return NULL;
    }
    if (self->ring_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "no ring fd to wait on");
        return NULL;
    }
    int err = pthread_create(&self->thread, NULL, copy_thread, self);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    pthread_setname_np(self->thread, "oe-ring-copy");
    self->running = 1;
    Py_RETURN_NONE;
}

/* drain(handle, max_records, decoder, on_error) -> int */
static PyObject *RingCopy_drain(RingCopyObject *self, PyObject *args)
{
    PyObject *handle, *decoder_obj, *on_error;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OnOO", &handle, &limit, &decoder_obj, &on_error))
        return NULL;
    if (ringcopy_check_open(self) < 0)
        return NULL;
    DecoderObject *decoder = NULL;
    if (decoder_obj != Py_None) {
        if (!PyObject_TypeCheck(decoder_obj, &DecoderType)) {
            PyErr_SetString(PyExc_TypeError, "decoder must be a _decode_native.Decoder or None");
            return NULL;
        }
        decoder = (DecoderObject *)decoder_obj;
    }
    Py_ssize_t count = 0;
    int failed = 0;
    while (count != limit && !failed) {
        int full;
        /* The lock is held only by the copier's memcpy: no GIL release
         * around it, which would hand the GIL to another thread to wait on. */
        pthread_mutex_lock(&self->lock);
        ring_to_queue(self, &full);
        /* A chunk left empty behind one made for a record larger than it. */
        while (self->head != NULL && self->read_off == self->head->used && self->head->next != NULL) {
            Chunk *done = self->head;
            self->head = done->next;
            self->read_off = 0;
            chunk_retire(self, done);
        }
        Chunk *chunk = self->head;
        size_t off = self->read_off, end = chunk != NULL ? chunk->used : 0;
        pthread_mutex_unlock(&self->lock);
        if (off >= end)
            break;  /* the queue and the ring are empty */
        size_t at = off;
        while (at < end && count != limit) {
            uint32_t length;
            memcpy(&length, chunk->data + at, sizeof(length));
            if (deliver(chunk->data + at + RB_HDR_SIZE, length, handle, decoder, on_error) < 0) {
                failed = 1;
                break;
            }
            count++;
            at += ((size_t)length + RB_HDR_SIZE + 7) & ~(size_t)7;
        }
        pthread_mutex_lock(&self->lock);
        self->queued -= at - off;
        self->read_off = at;
        if (at == chunk->used) {
            if (chunk->next != NULL) {
                self->head = chunk->next;
                self->read_off = 0;
                chunk_retire(self, chunk);
            } else {
                chunk->used = 0;  /* the copier appends at its start again */
                self->read_off = 0;
            }
        }
        if (at != off)
            pthread_cond_signal(&self->room);
        pthread_mutex_unlock(&self->lock);
    }
    if (failed)
        return NULL;
    return PyLong_FromSsize_t(count);
}

static PyObject *RingCopy_queued_bytes(RingCopyObject *self, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&self->lock);
    size_t q = self->queued;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromSize_t(q);
}

static PyObject *RingCopy_notify_fd(RingCopyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ringcopy_check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(self->notify_fd);
}

/* Ends the thread, then frees the queue (what it held is not handed over:
 * the caller drains first) and the ring's buffers. */
static void ringcopy_close(RingCopyObject *self)
{
    if (self->running) {
        pthread_mutex_lock(&self->lock);
        self->stopping = 1;
        pthread_cond_signal(&self->room);
        pthread_mutex_unlock(&self->lock);
        uint64_t one = 1;
        ssize_t w = write(self->stop_fd, &one, sizeof(one));
        (void)w;
        Py_BEGIN_ALLOW_THREADS
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
        self->running = 0;
    }
    ringcopy_close_fds(self);
    for (Chunk *c = self->head; c != NULL;) {
        Chunk *next = c->next;
        munmap(c, c->mapped);
        c = next;
    }
    if (self->spare != NULL)
        munmap(self->spare, self->spare->mapped);
    self->head = self->tail = self->spare = NULL;
    self->queued = 0;
    if (self->open) {
        PyBuffer_Release(&self->cons);
        PyBuffer_Release(&self->prod);
        PyBuffer_Release(&self->ring);
        self->open = 0;
    }
}

static PyObject *RingCopy_close(RingCopyObject *self, PyObject *Py_UNUSED(ignored))
{
    ringcopy_close(self);
    Py_RETURN_NONE;
}

static void RingCopy_dealloc(RingCopyObject *self)
{
    ringcopy_close(self);
    pthread_cond_destroy(&self->room);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef RingCopy_methods[] = {
    {"start", (PyCFunction)RingCopy_start, METH_NOARGS,
     "start(): the thread that moves the ring's records into the queue at each of the ring's wake-ups."},
    {"drain", (PyCFunction)RingCopy_drain, METH_VARARGS,
     "drain(handle, max_records, decoder, on_error) -> int\n\n"
     "RingBuffer.drain's records, oldest first: the queue's, then the ring's (moved\n"
     "through the queue); max_records -1: no limit. Without a decoder each record's\n"
     "payload (bytes) goes to handle; with one, its event does, and a record the\n"
     "decoder rejects (its DecodeError) goes to on_error. A record whose handling\n"
     "raised is handed over again by the next drain."},
    {"queued_bytes", (PyCFunction)RingCopy_queued_bytes, METH_NOARGS,
     "queued_bytes() -> int: ring bytes of the records moved and not yet handed over."},
    {"notify_fd", (PyCFunction)RingCopy_notify_fd, METH_NOARGS,
     "notify_fd() -> int: an eventfd the thread adds to after moving records (non-blocking)."},
    {"close", (PyCFunction)RingCopy_close, METH_NOARGS,
     "close(): ends the thread, frees the queue and lets go of the ring's buffers; idempotent."},
    {NULL},
};

static PyTypeObject RingCopyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_exec.core._decode_native.RingCopy",
    .tp_basicsize = sizeof(RingCopyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RingCopy(cons_pos, prod_pos, data, ring_fd, max_bytes): a ring buffer's records moved\n"
              "into a queue of at most max_bytes by a thread of its own (start()), and handed over\n"
              "by drain(). ring_fd -1: no thread, drain() alone moves them.",
    .tp_new = RingCopy_new,
    .tp_init = (initproc)RingCopy_init,
    .tp_dealloc = (destructor)RingCopy_dealloc,
    .tp_methods = RingCopy_methods,
};

/* libbpf_print_fn_t. A load prints a thousand and more debug messages (the
 * CO-RE relocations), which nothing keeps unless asked: dropped here, they
 * cost no call into Python, whose GIL the load's own thread would otherwise
 * take from the main thread's start-up work once per message. */
typedef int (*libbpf_print_fn)(int level, const char *fmt, va_list args);
static libbpf_print_fn print_forward;
static int print_max_level;

static int print_filtered(int level, const char *fmt, va_list args)
{
    if (level > print_max_level)
        return 0;
    return print_forward(level, fmt, args);
}

static PyObject *libbpf_print_filter(PyObject *self, PyObject *args)
{
    unsigned long long forward;
    int max_level;
    if (!PyArg_ParseTuple(args, "Ki", &forward, &max_level))
        return NULL;
    print_forward = (libbpf_print_fn)(uintptr_t)forward;
    print_max_level = max_level;
    return PyLong_FromVoidPtr((void *)print_filtered);
}

static PyMethodDef module_methods[] = {
    {"split_block", (PyCFunction)(void (*)(void))split_block, METH_FASTCALL,
     "split_block(block, truncated) -> list[str]: otel_exec.model.blocks.split_block."},
    {"cstr", cstr, METH_O, "cstr(raw) -> str: the text up to the first NUL."},
    {"join_path", join_path, METH_VARARGS,
     "join_path(leaf_first, pflags, fs_magic=0, inode=0) -> str: otel_exec.core.decode.join_path."},
    {"libbpf_print_filter", libbpf_print_filter, METH_VARARGS,
     "libbpf_print_filter(forward, max_level) -> int\n\n"
     "The address of a libbpf_print_fn_t that passes the messages of level max_level\n"
     "and below (WARN 0, INFO 1, DEBUG 2) to the one at address forward and drops\n"
     "the rest."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "otel_exec.core._decode_native",
    "The reader thread's per-record work (ring drain, decode) in C; see otel_exec/core/decode.py.", -1,
    module_methods,
};

#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return NULL

PyMODINIT_FUNC PyInit__decode_native(void)
{
    INTERN(s_fields, "fields");
    INTERN(s_parent_exe, "parent_exe");
    INTERN(s_decode, "decode");
    INTERN(s_parent_exec_id, "_parent_exec_id");
    INTERN(s_empty, "");
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    PyObject *layout = Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:k,s:k,s:k,s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i},s:{s:i,s:i,s:i,s:i,s:i}}",
        "REC_EXEC", REC_EXEC, "REC_EXIT", REC_EXIT, "HEADER", HEADER_SIZE, "EXEC", EXEC_SIZE,
        "EXEC_SHARED_OFFSET", EXEC_SHARED_OFFSET, "EXIT", EXIT_SIZE,
        "PF_TRUNCATED", PF_TRUNCATED, "PF_DELETED", PF_DELETED, "PF_DETACHED", PF_DETACHED,
        "PIPEFS_MAGIC", (unsigned long)PIPEFS_MAGIC, "SOCKFS_MAGIC", (unsigned long)SOCKFS_MAGIC,
        "ANON_INODE_FS_MAGIC", (unsigned long)ANON_INODE_FS_MAGIC,
        "EXEC_MEMBERS", "hdr.boot_ns", OFF_BOOT_NS, "start_boottime_ns", OFF_START,
        "parent_start_boottime_ns", OFF_PARENT_START, "host_pid", OFF_HOST_PID, "host_tid", OFF_HOST_TID,
        "host_ppid", OFF_HOST_PPID, "image_ppid", OFF_IMAGE_PPID, "pid", OFF_PID, "tid", OFF_TID, "ppid", OFF_PPID,
        "EXIT_MEMBERS", "hdr.boot_ns", OFF_BOOT_NS, "start_boottime_ns", OFF_START, "pid", OFF_EXIT_PID,
        "exit_code", OFF_EXIT_STATUS, "comm", OFF_EXIT_COMM);
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    /* The event fields this module sets: otel_exec/core/decode.py uses it
     * only if they are ExecEvent's (with its shared fields) and ExitEvent's. */
    PyObject *per_exec = PyTuple_New(X_COUNT), *exit_fields = PyTuple_New(EXIT_COUNT);
    int ok = per_exec != NULL && exit_fields != NULL;
    for (int i = 0; ok && i < X_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(EXEC_PER_EXEC[i]);
        ok = name != NULL;
        if (ok)
            PyTuple_SET_ITEM(per_exec, i, name);
    }
    for (int i = 0; ok && i < EXIT_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(EXIT_FIELDS[i]);
        ok = name != NULL;
        if (ok)
            PyTuple_SET_ITEM(exit_fields, i, name);
    }
    if (!ok || PyDict_SetItemString(layout, "EXEC_EVENT_PER_EXEC", per_exec) < 0 ||
        PyDict_SetItemString(layout, "EXIT_EVENT", exit_fields) < 0) {
        Py_XDECREF(per_exec);
        Py_XDECREF(exit_fields);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(per_exec);
    Py_DECREF(exit_fields);
    /* Each made ready, and added under its tp_name's last part. */
    if (PyModule_AddType(m, &DecoderType) < 0 || PyModule_AddType(m, &RingCopyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
