/*
 * The per-exec OTLP encoding of otel_exec/export/otlp/encode.py in C: the
 * ids of an exec record, the log record (exec_record: both in one call),
 * the span and the exit record of an image. encode.py is the reference: every function here returns the
 * bytes its Python twin returns (tests/export/test_encode_native.py), and
 * returns None (exec_ids) or calls back into encode.py for what is rare
 * (an id of an unusual length, a cache miss, an untrusted TRACEPARENT, a
 * late executable identity). The constants (attribute heads, prefixes, the
 * caches) are encode.py's, handed over once by setup().
 *
 * Protobuf field numbers: opentelemetry/proto/logs/v1/logs.proto
 * (LogRecord) and trace/v1/trace.proto (Span), as in encode.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* What setup() handed over, kept for the life of the interpreter. */
static PyObject *pid_heads, *ppid_heads, *vpid_heads, *vppid_heads; /* tuples: varint size -> head */
static PyObject *created_head, *exec_id_head, *parent_exec_id_head;   /* bytes */
static Py_ssize_t created_size, exec_id_size;
static PyObject *log_event_name, *exit_event_name, *log_severity, *duration_head, *span_kind_start;
static PyObject *names, *endings, *exe_names;                       /* encode.py's caches (dicts) */
static PyObject *new_span_name, *ending, *span_extras, *exe_name, *late_identity_attrs, *framed_fixed;
/* encode.py's own exec_record, span and exit_record: for a value past 64 bits or negative. */
static PyObject *py_span, *py_exit_record, *py_exec_record;
/* encode.py's cache of shared parts (ExecEvent.shared -> (Attrs, body)), identity_attrs, SPAN_SLIM. */
static PyObject *shared_encodings, *identity_attrs;
static long span_slim;
static PyObject *exec_id_key;
static int ready;

/* Attribute names, interned once. */
static PyObject *s_host_pid, *s_host_ppid, *s_pid, *s_ppid, *s_process_start_time, *s_exec_id,
    *s_parent_exec_id, *s_timestamp, *s_log, *s_trace_flags, *s_trace_id,
    *s_span_id, *s_process, *s_exe, *s_comm, *s_trace_state, *s_parent_span_id, *s_start_ns, *s_end_ns,
    *s_attributes, *s_ended_by, *s_incomplete, *s_exit_code, *s_signal, *s_untrusted_traceparent,
    *s_late_identity, *s_result, *s_shared, *s_span, *s_executable_identity, *s_script_identity, *s_unavailable, *s_nul;

#define LOG_ATTR 0x32   /* LogRecord.attributes: field 6, LEN */
#define SPAN_ATTR 0x4a  /* Span.attributes: field 9, LEN */
#define IN_SCOPE 0x12   /* ScopeLogs.log_records, ScopeSpans.spans: field 2, LEN */

static inline Py_ssize_t varint_size(uint64_t n)
{
	Py_ssize_t size = 1;

	while (n >= 0x80) {
		n >>= 7;
		size++;
	}
	return size;
}

static inline char *put_varint(char *out, uint64_t n)
{
	while (n >= 0x80) {
		*out++ = (char)((n & 0x7f) | 0x80);
		n >>= 7;
	}
	*out++ = (char)n;
	return out;
}

static inline char *put_u64(char *out, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*out++ = (char)(v >> (8 * i));
	return out;
}

static inline char *put_bytes(char *out, PyObject *b)
{
	Py_ssize_t n = PyBytes_GET_SIZE(b);

	memcpy(out, PyBytes_AS_STRING(b), n);
	return out + n;
}

static inline char *put_mem(char *out, const char *p, Py_ssize_t n)
{
	memcpy(out, p, n);
	return out + n;
}

/* Where the slots classes the encoder reads (ExecEvent, ProcessSpan,
 * ProcessInfo, Attrs, ...) keep an attribute: by (type, name), in a small
 * table filled on first use. A generic attribute lookup (the type's MRO,
 * then the member descriptor) costs more per record than the encoding:
 * these are a few reads of the same few classes per exec. A member
 * descriptor found on a type with the generic getattr wins over anything
 * else (it is a data descriptor), so reading its slot is what
 * PyObject_GetAttr would return; every other case goes to PyObject_GetAttr. */
#define SLOT_TABLE_BITS 12 /* room for every (class, name) read */
/* Two ways per index (i and i ^ 1): two pairs whose addresses hash alike
 * do not take turns evicting each other (a descriptor lookup per read). */
static struct {
	PyTypeObject *type; /* a strong reference: its address is not reused while here */
	PyObject *name;     /* one of the interned s_* names, which live as long as the module */
	Py_ssize_t offset;  /* 0: not a plain object slot, use PyObject_GetAttr */
} slot_table[1 << SLOT_TABLE_BITS];

static size_t slot_index(PyTypeObject *type, PyObject *name)
{
	return (size_t)((((uint64_t)(uintptr_t)type * 31 + (uintptr_t)name) * 0x9E3779B97F4A7C15u) >>
			(64 - SLOT_TABLE_BITS));
}

static Py_ssize_t slot_of(PyTypeObject *type, PyObject *name)
{
	size_t i = slot_index(type, name);

	if (slot_table[i].type == type && slot_table[i].name == name)
		return slot_table[i].offset;
	if (slot_table[i ^ 1].type == type && slot_table[i ^ 1].name == name)
		return slot_table[i ^ 1].offset;
	Py_ssize_t offset = 0;
	if (type->tp_getattro == PyObject_GenericGetAttr) {
		PyObject *descr = _PyType_Lookup(type, name); /* borrowed */
		if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
		    ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
			offset = ((PyMemberDescrObject *)descr)->d_member->offset;
	}
	/* The pair at i moves to the other way, whose pair goes. */
	Py_XSETREF(slot_table[i ^ 1].type, slot_table[i].type);
	slot_table[i ^ 1].name = slot_table[i].name;
	slot_table[i ^ 1].offset = slot_table[i].offset;
	slot_table[i].type = (PyTypeObject *)Py_NewRef(type);
	slot_table[i].name = name;
	slot_table[i].offset = offset;
	return offset;
}

/* attr's every case but a filled slot the table knows, out of line: the
 * hit, read for most attributes of every record, then saves no register. */
static __attribute__((noinline)) PyObject *attr_slow(PyObject *obj, PyObject *name)
{
	Py_ssize_t offset = slot_of(Py_TYPE(obj), name);

	if (offset > 0) {
		PyObject *v = *(PyObject **)((char *)obj + offset);
		if (v != NULL)
			return Py_NewRef(v);
	}
	return PyObject_GetAttr(obj, name); /* and its AttributeError for an empty slot */
}

/* A new reference to obj.name (name: one of the s_* names), as PyObject_GetAttr. */
static PyObject *attr(PyObject *obj, PyObject *name)
{
	PyTypeObject *type = Py_TYPE(obj);
	size_t i = slot_index(type, name);

	if (slot_table[i].type == type && slot_table[i].name == name && slot_table[i].offset > 0) {
		PyObject *v = *(PyObject **)((char *)obj + slot_table[i].offset);
		if (v != NULL)
			return Py_NewRef(v);
	}
	return attr_slow(obj, name);
}

/* obj.name = value (name: one of the s_* names), as PyObject_SetAttr: a
 * slot attr() reads is one a generic setattr stores into. */
static int set_attr(PyObject *obj, PyObject *name, PyObject *value)
{
	PyTypeObject *type = Py_TYPE(obj);
	Py_ssize_t offset = type->tp_setattro == PyObject_GenericSetAttr ? slot_of(type, name) : 0;

	if (offset > 0) {
		Py_XSETREF(*(PyObject **)((char *)obj + offset), Py_NewRef(value));
		return 0;
	}
	return PyObject_SetAttr(obj, name, value);
}

/* v as a uint64 (a Python int >= 0), as PyLong_AsUnsignedLongLong, which
 * takes a slower path for every value above one digit (30 bits): times in ns. */
static inline uint64_t as_u64(PyObject *v)
{
#if ULONG_MAX == UINT64_MAX
	return PyLong_AsUnsignedLong(v);
#else
	return PyLong_AsUnsignedLongLong(v);
#endif
}

/* A new reference to obj.name, which must be bytes (of `size` bytes, if size >= 0). */
static PyObject *get_bytes(PyObject *obj, PyObject *name, Py_ssize_t size)
{
	PyObject *v = attr(obj, name);

	if (v == NULL)
		return NULL;
	if (!PyBytes_Check(v) || (size >= 0 && PyBytes_GET_SIZE(v) != size)) {
		PyErr_Format(PyExc_ValueError, "%U: %zd bytes expected", name, size);
		Py_DECREF(v);
		return NULL;
	}
	return v;
}

/* obj.name as a uint64 (a Python int >= 0). */
static int get_u64(PyObject *obj, PyObject *name, uint64_t *out)
{
	PyObject *v = attr(obj, name);

	if (v == NULL)
		return -1;
	*out = as_u64(v);
	Py_DECREF(v);
	return (*out == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

/* After a get_u64() failed: 1 when the value did not fit (encode.py takes
 * the record: it has its own answer for it), 0 for any other error. */
static int did_not_fit(void)
{
	if (!PyErr_ExceptionMatches(PyExc_OverflowError))
		return 0;
	PyErr_Clear();
	return 1;
}

static int u64_of(PyObject *v, uint64_t *out)
{
	*out = as_u64(v);
	return (*out == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *head_for(PyObject *heads, uint64_t value)
{
	return PyTuple_GET_ITEM(heads, varint_size(value)); /* borrowed */
}

/* encode.iso8601(ns): "YYYY-MM-DDTHH:MM:SS.mmmZ"; 0 when it does not fit out (24 bytes for years 1000-9999).
 * The part up to the seconds is kept for the last second formatted (as encode.py's _seconds keeps it):
 * the execs of a storm, and the processes they start, mostly fall within one second. Under the GIL. */
static int iso8601(uint64_t ns, char *out, size_t room)
{
	enum { prefix_size = 19, full_size = 24 }; /* "YYYY-MM-DDTHH:MM:SS", and ".mmmZ" after it */
	static time_t cached_secs = (time_t)-1;
	static char cached_prefix[prefix_size];
	time_t secs = (time_t)(ns / 1000000000u);
	unsigned ms = (unsigned)(ns % 1000000000u / 1000000u);
	struct tm tm;

	if (secs == cached_secs && room > full_size) {
		memcpy(out, cached_prefix, prefix_size);
		out[19] = '.';
		out[20] = (char)('0' + ms / 100);
		out[21] = (char)('0' + ms / 10 % 10);
		out[22] = (char)('0' + ms % 10);
		out[23] = 'Z';
		out[24] = '\0';
		return full_size;
	}
	if (gmtime_r(&secs, &tm) == NULL)
		return 0;
	int n = snprintf(out, room, "%d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	if (n == full_size && (size_t)n < room) {
		memcpy(cached_prefix, out, prefix_size);
		cached_secs = secs;
	}
	return n > 0 && (size_t)n < room ? n : 0;
}

/* An exec's own ids, read once: what put_ids() writes. */
struct ids {
	uint64_t host_pid, host_ppid, pid, ppid;
	int own_ns; /* the vpid and vppid only when they differ from the host's */
	char created[32];
	PyObject *exec_id, *parent; /* new references (put_ids_of() drops them) */
	const char *exec_s, *parent_s;
	Py_ssize_t exec_len, parent_len;
	PyObject *pid_head, *ppid_head, *vpid_head, *vppid_head; /* borrowed */
	Py_ssize_t pid_kv, exec_kv, size; /* size: every id KeyValue, each after its one-byte tag */
};

/* ev's ids into d: 0, -1 on an error, 1 when encode.py must encode them
 * (ids of unusual lengths, a creation time outside years 1000-9999, a
 * value that is not plain). d->exec_id and d->parent are set (maybe NULL)
 * in every case. */
static int get_ids(PyObject *ev, struct ids *d)
{
	uint64_t start;

	d->exec_id = d->parent = NULL;
	if (get_u64(ev, s_host_pid, &d->host_pid) || get_u64(ev, s_host_ppid, &d->host_ppid) ||
	    get_u64(ev, s_pid, &d->pid) || get_u64(ev, s_ppid, &d->ppid) ||
	    get_u64(ev, s_process_start_time, &start))
		return did_not_fit() ? 1 : -1;
	if (iso8601(start, d->created, sizeof d->created) != created_size)
		return 1;
	if ((d->exec_id = attr(ev, s_exec_id)) == NULL ||
	    (d->parent = attr(ev, s_parent_exec_id)) == NULL)
		return -1;
	d->exec_s = PyUnicode_Check(d->exec_id) ? PyUnicode_AsUTF8AndSize(d->exec_id, &d->exec_len) : NULL;
	d->parent_s = PyUnicode_Check(d->parent) ? PyUnicode_AsUTF8AndSize(d->parent, &d->parent_len) : NULL;
	if (d->exec_s == NULL || d->parent_s == NULL || d->exec_len != exec_id_size || d->parent_len != exec_id_size) {
		PyErr_Clear();
		return 1;
	}
	d->own_ns = d->pid != d->host_pid || d->ppid != d->host_ppid;
	d->pid_head = head_for(pid_heads, d->host_pid);
	d->ppid_head = head_for(ppid_heads, d->host_ppid);
	d->vpid_head = head_for(vpid_heads, d->pid);
	d->vppid_head = head_for(vppid_heads, d->ppid);
	d->pid_kv = PyBytes_GET_SIZE(d->pid_head) + varint_size(d->host_pid);
	d->exec_kv = PyBytes_GET_SIZE(exec_id_head) + d->exec_len;
	d->size = (d->own_ns ? 7 : 5) + d->pid_kv + PyBytes_GET_SIZE(d->ppid_head) + varint_size(d->host_ppid) +
		  PyBytes_GET_SIZE(created_head) + created_size + d->exec_kv + PyBytes_GET_SIZE(parent_exec_id_head) +
		  d->parent_len;
	if (d->own_ns)
		d->size += PyBytes_GET_SIZE(d->vpid_head) + varint_size(d->pid) + PyBytes_GET_SIZE(d->vppid_head) +
			   varint_size(d->ppid);
	return 0;
}

static void put_ids_of(struct ids *d)
{
	Py_XDECREF(d->exec_id);
	Py_XDECREF(d->parent);
}

/* Every id KeyValue under `tag` (LogRecord.attributes or Span.attributes). */
static char *put_ids(char *p, const struct ids *d, char tag)
{
	*p++ = tag;
	p = put_varint(put_bytes(p, d->pid_head), d->host_pid);
	*p++ = tag;
	p = put_varint(put_bytes(p, d->ppid_head), d->host_ppid);
	if (d->own_ns) {
		*p++ = tag;
		p = put_varint(put_bytes(p, d->vpid_head), d->pid);
		*p++ = tag;
		p = put_varint(put_bytes(p, d->vppid_head), d->ppid);
	}
	*p++ = tag;
	p = put_mem(put_bytes(p, created_head), d->created, created_size);
	*p++ = tag;
	p = put_mem(put_bytes(p, exec_id_head), d->exec_s, d->exec_len);
	*p++ = tag;
	return put_mem(put_bytes(p, parent_exec_id_head), d->parent_s, d->parent_len);
}

/* The span's own ids (Span.attributes): the pid and exec id when slim,
 * else every id; then `extra` (bytes, or NULL). */
static PyObject *span_ids(const struct ids *d, int slim, PyObject *extra)
{
	Py_ssize_t extra_size = extra != NULL ? PyBytes_GET_SIZE(extra) : 0;
	PyObject *span = PyBytes_FromStringAndSize(NULL, (slim ? 2 + d->pid_kv + d->exec_kv : d->size) + extra_size);

	if (span == NULL)
		return NULL;
	char *q = PyBytes_AS_STRING(span);
	if (slim) {
		*q++ = SPAN_ATTR;
		q = put_varint(put_bytes(q, d->pid_head), d->host_pid);
		*q++ = SPAN_ATTR;
		q = put_mem(put_bytes(q, exec_id_head), d->exec_s, d->exec_len);
	} else {
		q = put_ids(q, d, SPAN_ATTR);
	}
	if (extra != NULL)
		put_bytes(q, extra);
	return span;
}

/* exec_ids(ev, slim) -> (LogRecord.attributes, Span.attributes) of the
 * exec's own ids, or None when encode.py must encode them (get_ids). */
static PyObject *exec_ids(PyObject *self, PyObject *args)
{
	PyObject *ev, *result = NULL;
	int slim;
	struct ids d;

	if (!PyArg_ParseTuple(args, "Op", &ev, &slim))
		return NULL;
	if (!ready)
		return PyErr_Format(PyExc_RuntimeError, "_encode_native.setup() was not called");
	int mine = get_ids(ev, &d);
	if (mine == 1)
		result = Py_NewRef(Py_None);
	if (mine != 0)
		goto out;
	PyObject *log = PyBytes_FromStringAndSize(NULL, d.size);
	if (log == NULL)
		goto out;
	put_ids(PyBytes_AS_STRING(log), &d, LOG_ATTR);
	PyObject *span = span_ids(&d, slim, NULL);
	if (span != NULL)
		result = PyTuple_Pack(2, log, span);
	Py_DECREF(log);
	Py_XDECREF(span);
out:
	put_ids_of(&d);
	return result;
}

/* The LogRecord fields after the body and attributes: flags (8), trace_id (9), span_id (10),
 * observed_time_unix_nano (11); event_name (12) follows. */
#define TAIL_SIZE (5 + 2 + 16 + 2 + 8 + 9)

static char *put_tail(char *p, uint64_t flags, PyObject *trace_id, PyObject *span_id, uint64_t observed_ns)
{
	*p++ = 0x45; /* flags: field 8, I32 */
	p[0] = (char)flags;
	p[1] = (char)(flags >> 8);
	p[2] = (char)(flags >> 16);
	p[3] = (char)(flags >> 24);
	p += 4;
	*p++ = 0x4a; /* trace_id: field 9, LEN */
	*p++ = 16;
	p = put_bytes(p, trace_id);
	*p++ = 0x52; /* span_id: field 10, LEN */
	*p++ = 8;
	p = put_bytes(p, span_id);
	*p++ = 0x59; /* observed_time_unix_nano: field 11, I64 */
	return put_u64(p, observed_ns);
}

/* A new bytes object in *out for a message of `inner` bytes framed as a record of its scope
 * block (IN_SCOPE, then the length); returns where the message goes, NULL on error. */
static char *new_framed(Py_ssize_t inner, PyObject **out)
{
	if ((*out = PyBytes_FromStringAndSize(NULL, 1 + varint_size(inner) + inner)) == NULL)
		return NULL;
	char *p = PyBytes_AS_STRING(*out);
	*p++ = IN_SCOPE;
	return put_varint(p, inner);
}

/* new_framed() for a LogRecord, its head written: time_unix_nano (1) and the severity. */
static char *new_log_record(Py_ssize_t inner, uint64_t time_ns, PyObject **out)
{
	char *p = new_framed(inner, out);
	if (p == NULL)
		return NULL;
	*p++ = 0x09; /* time_unix_nano: field 1, I64 */
	p = put_u64(p, time_ns);
	return put_bytes(p, log_severity);
}

/* The trace context of a span (or of the ProcessSpan an exec record names). */
struct context {
	uint64_t flags;
	PyObject *trace_id, *span_id; /* new references */
};

/* The ids of span (c->flags was read already): 0, -1 on an error, 1 when
 * they are not what a span's ids are (16 and 8 bytes, flags below 256),
 * which encode.py answers for. */
static int get_context(PyObject *span, struct context *c)
{
	c->span_id = NULL;
	if ((c->trace_id = attr(span, s_trace_id)) == NULL ||
	    (c->span_id = attr(span, s_span_id)) == NULL)
		return -1;
	return c->flags > 255 || !PyBytes_Check(c->trace_id) || PyBytes_GET_SIZE(c->trace_id) != 16 ||
	       !PyBytes_Check(c->span_id) || PyBytes_GET_SIZE(c->span_id) != 8;
}

static void put_context(struct context *c)
{
	Py_XDECREF(c->trace_id);
	Py_XDECREF(c->span_id);
}

/* The last executable identity an exec record carried and its
 * encode.identity_attrs, held: the execs of a storm run one binary, whose
 * identity the cache hands over as one object. Only for an exec with no
 * script identity and nothing unavailable, whose attributes are the
 * identity's alone. setup() forgets it. */
static PyObject *last_identity, *last_identity_attrs;

/* A new reference to encode.identity_attrs(ev); identity: ev.executable_identity, not None. */
static PyObject *exec_identity_attrs(PyObject *ev, PyObject *identity)
{
	PyObject *script = attr(ev, s_script_identity), *unavailable = script ? attr(ev, s_unavailable) : NULL;

	if (unavailable == NULL) {
		Py_XDECREF(script);
		return NULL;
	}
	int alone = script == Py_None && PyTuple_CheckExact(unavailable) && PyTuple_GET_SIZE(unavailable) == 0;
	Py_DECREF(script);
	Py_DECREF(unavailable);
	if (alone && identity == last_identity)
		return Py_NewRef(last_identity_attrs);
	PyObject *attrs = PyObject_CallOneArg(identity_attrs, ev);
	if (attrs != NULL && alone) {
		Py_XSETREF(last_identity, Py_NewRef(identity));
		Py_XSETREF(last_identity_attrs, Py_NewRef(attrs));
	}
	return attrs;
}

/* exec_record(ev, span, span_set, limits, observed_ns): encode.exec_record,
 * the exec's framed log record in one call, its ids written in place and
 * span.attributes set. For an exec whose shared part is encoded already
 * (encode.py's cache of them); every other exec, and every value the
 * native encoding leaves to encode.py, goes to encode._py_exec_record. */
static PyObject *exec_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *ev, *span, *result = NULL, *shared = NULL, *common = NULL, *attrs_log = NULL, *attrs_span = NULL;
	PyObject *identity = NULL, *extra = NULL, *extra_log = NULL, *extra_span = NULL, *ids_span = NULL;
	uint64_t observed_ns, timestamp;
	struct ids d = {.exec_id = NULL, .parent = NULL};
	struct context c = {.trace_id = NULL, .span_id = NULL};
	int mine = 1;

	if (nargs != 5)
		return PyErr_Format(PyExc_TypeError, "exec_record() takes 5 arguments (%zd given)", nargs);
	if (!ready)
		return PyErr_Format(PyExc_RuntimeError, "_encode_native.setup() was not called");
	ev = args[0];
	span = args[1];
	if ((shared = attr(ev, s_shared)) == NULL)
		return NULL;
	if (shared == Py_None || !PyLong_CheckExact(args[2]))
		goto out;
	common = PyDict_GetItemWithError(shared_encodings, shared);
	if (common == NULL) {
		if (PyErr_Occurred())
			mine = -1;
		goto out;
	}
	Py_INCREF(common);
	if (!PyTuple_CheckExact(common) || PyTuple_GET_SIZE(common) != 2 ||
	    !PyBytes_Check(PyTuple_GET_ITEM(common, 1)))
		goto out;
	mine = -1;
	PyObject *attrs = PyTuple_GET_ITEM(common, 0), *body = PyTuple_GET_ITEM(common, 1);
	if ((attrs_log = get_bytes(attrs, s_log, -1)) == NULL || (attrs_span = attr(attrs, s_span)) == NULL ||
	    (identity = attr(ev, s_executable_identity)) == NULL)
		goto out;
	int slim = PyLong_AsLong(args[2]) == span_slim;
	if (PyErr_Occurred()) {
		PyErr_Clear();
		mine = 1;
		goto out;
	}
	if (identity != Py_None) {
		if ((extra = exec_identity_attrs(ev, identity)) == NULL ||
		    (extra_log = get_bytes(extra, s_log, -1)) == NULL ||
		    (!slim && (extra_span = get_bytes(extra, s_span, -1)) == NULL))
			goto out;
	}
	if ((mine = get_ids(ev, &d)) != 0)
		goto out;
	if (u64_of(args[4], &observed_ns) || get_u64(ev, s_timestamp, &timestamp) ||
	    get_u64(span, s_trace_flags, &c.flags)) {
		mine = did_not_fit() ? 1 : -1;
		goto out;
	}
	if ((mine = get_context(span, &c)) != 0)
		goto out;
	mine = -1;
	if ((ids_span = span_ids(&d, slim, extra_span)) == NULL)
		goto out;
	Py_ssize_t extra_size = extra_log != NULL ? PyBytes_GET_SIZE(extra_log) : 0;
	Py_ssize_t inner = 9 + PyBytes_GET_SIZE(log_severity) + PyBytes_GET_SIZE(body) + d.size + extra_size +
			   PyBytes_GET_SIZE(attrs_log) + TAIL_SIZE + PyBytes_GET_SIZE(log_event_name);
	PyObject *record;
	char *p = new_log_record(inner, timestamp, &record);
	if (p == NULL)
		goto out;
	p = put_bytes(p, body);
	p = put_ids(p, &d, LOG_ATTR);
	if (extra_log != NULL)
		p = put_bytes(p, extra_log);
	p = put_bytes(p, attrs_log);
	p = put_tail(p, c.flags, c.trace_id, c.span_id, observed_ns);
	put_bytes(p, log_event_name);
	PyObject *pair = PyTuple_Pack(2, ids_span, attrs_span);
	if (pair == NULL || set_attr(span, s_attributes, pair) < 0) {
		Py_XDECREF(pair);
		Py_DECREF(record);
		goto out;
	}
	Py_DECREF(pair);
	result = record;
	mine = 0;
out:
	if (mine == 1)
		result = PyObject_Vectorcall(py_exec_record, args, nargs, NULL);
	put_context(&c);
	put_ids_of(&d);
	Py_XDECREF(shared);
	Py_XDECREF(common);
	Py_XDECREF(attrs_log);
	Py_XDECREF(attrs_span);
	Py_XDECREF(identity);
	Py_XDECREF(extra);
	Py_XDECREF(extra_log);
	Py_XDECREF(extra_span);
	Py_XDECREF(ids_span);
	return result;
}

/* The last ending found and the values it was found by, held: the exits
 * of a storm end alike, and a span's exit record asks again at once. Only
 * values of exact immutable types (None, bool, int, str) are kept, so the
 * same objects are the same key. setup() forgets it. */
static PyObject *last_ending_items[4], *last_ending;

static int is_plain_value(PyObject *v)
{
	return v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v) || PyUnicode_CheckExact(v);
}

static void forget_last_ending(void)
{
	for (int i = 0; i < 4; i++)
		Py_CLEAR(last_ending_items[i]);
	Py_CLEAR(last_ending);
}

/* encode._ending(reason, incomplete, code, signo): a new reference to its
 * (span part, exit record part), from encode.py's cache or computed there. */
static PyObject *ending_of(PyObject *ended, PyObject *info)
{
	PyObject *items[4] = {attr(ended, s_ended_by), attr(ended, s_incomplete),
			      attr(info, s_exit_code), attr(info, s_signal)};
	int same = last_ending != NULL, plain = 1;

	for (int i = 0; i < 4; i++) {
		if (items[i] == NULL) {
			for (int j = 0; j < 4; j++)
				Py_XDECREF(items[j]);
			return NULL;
		}
		same = same && items[i] == last_ending_items[i];
		plain = plain && is_plain_value(items[i]);
	}
	if (same) {
		for (int i = 0; i < 4; i++)
			Py_DECREF(items[i]);
		return Py_NewRef(last_ending);
	}
	PyObject *key = PyTuple_New(4);
	if (key == NULL) {
		for (int i = 0; i < 4; i++)
			Py_DECREF(items[i]);
		return NULL;
	}
	for (int i = 0; i < 4; i++)
		PyTuple_SET_ITEM(key, i, items[i]);
	PyObject *hit = PyDict_GetItemWithError(endings, key);
	if (hit != NULL)
		Py_INCREF(hit);
	else if (!PyErr_Occurred())
		hit = PyObject_Call(ending, key, NULL);
	if (hit != NULL && !(PyTuple_Check(hit) && PyTuple_GET_SIZE(hit) == 2 &&
			     PyBytes_Check(PyTuple_GET_ITEM(hit, 0)) && PyBytes_Check(PyTuple_GET_ITEM(hit, 1)))) {
		Py_DECREF(hit);
		PyErr_SetString(PyExc_TypeError, "encode._ending: (bytes, bytes) expected");
		hit = NULL;
	}
	if (hit != NULL && plain) {
		forget_last_ending();
		for (int i = 0; i < 4; i++)
			last_ending_items[i] = Py_NewRef(PyTuple_GET_ITEM(key, i));
		last_ending = Py_NewRef(hit);
	}
	Py_DECREF(key);
	return hit;
}

/* A new reference to the value cached under key in cache, or to miss(arg)'s bytes. */
static PyObject *cached_bytes(PyObject *cache, PyObject *key, PyObject *miss, PyObject *arg)
{
	PyObject *hit = PyDict_GetItemWithError(cache, key);

	if (hit != NULL)
		Py_INCREF(hit);
	else if (!PyErr_Occurred())
		hit = PyObject_CallOneArg(miss, arg);
	if (hit != NULL && !PyBytes_Check(hit)) {
		Py_DECREF(hit);
		PyErr_SetString(PyExc_TypeError, "bytes expected");
		return NULL;
	}
	return hit;
}

static int is_set(PyObject *obj, PyObject *name, int *out)
{
	PyObject *v = attr(obj, name);

	*out = v == NULL ? -1 : PyObject_IsTrue(v);
	Py_XDECREF(v);
	return *out < 0 ? -1 : 0;
}

/* span(ended): encode.span. */
static PyObject *span(PyObject *self, PyObject *ended)
{
	PyObject *info = NULL, *exe = NULL, *key = NULL, *name = NULL, *state = NULL, *parent = NULL;
	PyObject *attrs = NULL, *end = NULL, *extras = NULL, *result = NULL;
	uint64_t start_ns, end_ns;
	struct context c = {0};
	const char *state_s = NULL;
	Py_ssize_t state_len = 0;
	int untrusted, late;

	if (!ready)
		return PyErr_Format(PyExc_RuntimeError, "_encode_native.setup() was not called");
	if ((info = attr(ended, s_process)) == NULL || (exe = attr(info, s_exe)) == NULL)
		goto out;
	if (!PyUnicode_Check(exe)) {
		PyErr_SetString(PyExc_TypeError, "ProcessInfo.exe: str expected");
		goto out;
	}
	if (PyUnicode_GET_LENGTH(exe) > 0) {
		key = Py_NewRef(exe);
	} else {
		PyObject *comm = attr(info, s_comm);
		if (comm == NULL)
			goto out;
		key = PyUnicode_Concat(s_nul, comm);
		Py_DECREF(comm);
		if (key == NULL)
			goto out;
	}
	if ((name = cached_bytes(names, key, new_span_name, info)) == NULL)
		goto out;
	if ((state = attr(ended, s_trace_state)) == NULL)
		goto out;
	if (PyObject_IsTrue(state) && (state_s = PyUnicode_AsUTF8AndSize(state, &state_len)) == NULL)
		goto out;
	if ((parent = get_bytes(ended, s_parent_span_id, -1)) == NULL)
		goto out;
	if (PyBytes_GET_SIZE(parent) != 0 && PyBytes_GET_SIZE(parent) != 8) {
		result = PyObject_CallOneArg(py_span, ended);
		goto out;
	}
	if (get_u64(ended, s_start_ns, &start_ns) || get_u64(ended, s_end_ns, &end_ns)) {
		if (did_not_fit())
			result = PyObject_CallOneArg(py_span, ended);
		goto out;
	}
	int mine = get_context(ended, &c); /* a Span has no flags: c.flags stays 0 */
	if (mine == 1)
		result = PyObject_CallOneArg(py_span, ended);
	if (mine != 0)
		goto out;
	if ((attrs = attr(ended, s_attributes)) == NULL)
		goto out;
	if (!PyTuple_Check(attrs)) {
		PyErr_SetString(PyExc_TypeError, "ProcessSpan.attributes: a tuple expected");
		goto out;
	}
	if ((end = ending_of(ended, info)) == NULL)
		goto out;
	if (is_set(ended, s_untrusted_traceparent, &untrusted))
		goto out;
	PyObject *late_identity = attr(ended, s_late_identity);
	if (late_identity == NULL)
		goto out;
	late = late_identity != Py_None;
	Py_DECREF(late_identity);
	if ((untrusted || late) && (extras = PyObject_CallOneArg(span_extras, ended)) == NULL)
		goto out;
	if (extras != NULL && !PyBytes_Check(extras)) {
		PyErr_SetString(PyExc_TypeError, "encode._span_extras: bytes expected");
		goto out;
	}
	Py_ssize_t inner = 2 + 16 + 2 + 8 + PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(span_kind_start) + 8 + 1 + 8 +
			   PyBytes_GET_SIZE(PyTuple_GET_ITEM(end, 0)) + (extras ? PyBytes_GET_SIZE(extras) : 0);
	if (state_s != NULL)
		inner += 1 + varint_size(state_len) + state_len;
	if (PyBytes_GET_SIZE(parent))
		inner += 2 + 8;
	for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(attrs); i++) {
		PyObject *part = PyTuple_GET_ITEM(attrs, i);
		if (!PyBytes_Check(part)) {
			PyErr_SetString(PyExc_TypeError, "ProcessSpan.attributes: bytes expected");
			goto out;
		}
		inner += PyBytes_GET_SIZE(part);
	}
	char *p = new_framed(inner, &result);
	if (p == NULL)
		goto out;
	*p++ = 0x0a; /* trace_id: field 1, LEN */
	*p++ = 16;
	p = put_bytes(p, c.trace_id);
	*p++ = 0x12; /* span_id: field 2, LEN */
	*p++ = 8;
	p = put_bytes(p, c.span_id);
	if (state_s != NULL) {
		*p++ = 0x1a; /* trace_state: field 3, LEN */
		p = put_mem(put_varint(p, state_len), state_s, state_len);
	}
	if (PyBytes_GET_SIZE(parent)) {
		*p++ = 0x22; /* parent_span_id: field 4, LEN */
		*p++ = 8;
		p = put_bytes(p, parent);
	}
	p = put_bytes(p, name);
	p = put_u64(put_bytes(p, span_kind_start), start_ns);
	*p++ = 0x41; /* end_time_unix_nano: field 8, I64 */
	p = put_u64(p, end_ns > start_ns ? end_ns : start_ns);
	for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(attrs); i++)
		p = put_bytes(p, PyTuple_GET_ITEM(attrs, i));
	p = put_bytes(p, PyTuple_GET_ITEM(end, 0));
	if (extras != NULL)
		put_bytes(p, extras);
out:
	put_context(&c);
	PyObject *held[] = {info, exe, key, name, state, parent, attrs, end, extras};

	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
		Py_XDECREF(held[i]);
	return result;
}

/* exit_record(ended, observed_ns, repeat_derived=False): encode.exit_record. */
static PyObject *exit_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *ended, *observed, *info = NULL, *end = NULL, *exec_id = NULL, *exec_kv = NULL, *exe = NULL;
	PyObject *name = NULL, *late = NULL, *result = NULL;
	uint64_t observed_ns, start_ns, end_ns, pid = 0;
	struct context c = {0};
	int repeat_derived = 0;

	if (nargs != 2 && nargs != 3)
		return PyErr_Format(PyExc_TypeError, "exit_record() takes 2 or 3 arguments (%zd given)", nargs);
	if (!ready)
		return PyErr_Format(PyExc_RuntimeError, "_encode_native.setup() was not called");
	ended = args[0];
	observed = args[1];
	if (nargs == 3 && (repeat_derived = PyObject_IsTrue(args[2])) < 0)
		return NULL;
	if ((info = attr(ended, s_process)) == NULL)
		goto out;
	if (u64_of(observed, &observed_ns) || get_u64(ended, s_start_ns, &start_ns) ||
	    get_u64(ended, s_end_ns, &end_ns) || (repeat_derived && get_u64(info, s_pid, &pid)) ||
	    get_u64(ended, s_trace_flags, &c.flags)) {
		if (did_not_fit())
			result = PyObject_Vectorcall(py_exit_record, args, nargs, NULL);
		goto out;
	}
	if ((end = ending_of(ended, info)) == NULL)
		goto out;
	if (end_ns < start_ns)
		end_ns = start_ns;
	if ((exec_id = attr(info, s_exec_id)) == NULL)
		goto out;
	Py_ssize_t exec_len = 0;
	const char *exec_s = PyUnicode_Check(exec_id) ? PyUnicode_AsUTF8AndSize(exec_id, &exec_len) : NULL;
	if (exec_s == NULL || exec_len != exec_id_size) {
		PyErr_Clear();
		exec_kv = PyObject_CallFunctionObjArgs(framed_fixed, exec_id_key, exec_id, NULL);
		if (exec_kv == NULL)
			goto out;
		if (!PyBytes_Check(exec_kv)) {
			PyErr_SetString(PyExc_TypeError, "encode._framed_fixed: bytes expected");
			goto out;
		}
	}
	/* The pid and the executable's name are the exec record's: only with --record-attributes full. */
	if (repeat_derived &&
	    ((exe = attr(info, s_exe)) == NULL || (name = cached_bytes(exe_names, exe, exe_name, exe)) == NULL))
		goto out;
	PyObject *identity = attr(ended, s_late_identity);
	if (identity == NULL)
		goto out;
	if (identity != Py_None) {
		PyObject *value = attr(identity, s_result);
		if (value != NULL && value != Py_None) {
			PyObject *attrs = PyObject_CallOneArg(late_identity_attrs, value);
			if (attrs != NULL) {
				late = get_bytes(attrs, s_log, -1);
				Py_DECREF(attrs);
			}
		}
		Py_XDECREF(value);
		if (PyErr_Occurred()) {
			Py_DECREF(identity);
			goto out;
		}
	}
	Py_DECREF(identity);
	int mine = get_context(ended, &c);
	if (mine == 1)
		result = PyObject_Vectorcall(py_exit_record, args, nargs, NULL);
	if (mine != 0)
		goto out;
	PyObject *pid_head = repeat_derived ? head_for(pid_heads, pid) : NULL, *end_log = PyTuple_GET_ITEM(end, 1);
	Py_ssize_t exec_size = exec_kv ? PyBytes_GET_SIZE(exec_kv) : PyBytes_GET_SIZE(exec_id_head) + exec_len;
	Py_ssize_t who_size = 0;
	if (repeat_derived)
		who_size = 1 + PyBytes_GET_SIZE(pid_head) + varint_size(pid) + PyBytes_GET_SIZE(name);
	Py_ssize_t inner = 9 + PyBytes_GET_SIZE(log_severity) + PyBytes_GET_SIZE(end_log) + who_size + 1 + exec_size +
			   PyBytes_GET_SIZE(duration_head) + 8 + (late ? PyBytes_GET_SIZE(late) : 0) + TAIL_SIZE +
			   PyBytes_GET_SIZE(exit_event_name);
	char *p = new_log_record(inner, end_ns, &result);
	if (p == NULL)
		goto out;
	p = put_bytes(p, end_log);
	if (repeat_derived) {
		*p++ = LOG_ATTR;
		p = put_varint(put_bytes(p, pid_head), pid);
	}
	*p++ = LOG_ATTR;
	if (exec_kv != NULL)
		p = put_bytes(p, exec_kv);
	else
		p = put_mem(put_bytes(p, exec_id_head), exec_s, exec_len);
	if (repeat_derived)
		p = put_bytes(p, name);
	p = put_bytes(p, duration_head);
	double seconds = (double)(end_ns - start_ns) / 1e9;
	uint64_t bits;
	memcpy(&bits, &seconds, 8);
	p = put_u64(p, bits);
	if (late != NULL)
		p = put_bytes(p, late);
	p = put_tail(p, c.flags, c.trace_id, c.span_id, observed_ns);
	put_bytes(p, exit_event_name);
out:
	put_context(&c);
	Py_XDECREF(info);
	Py_XDECREF(end);
	Py_XDECREF(exec_id);
	Py_XDECREF(exec_kv);
	Py_XDECREF(exe);
	Py_XDECREF(name);
	Py_XDECREF(late);
	return result;
}

/* setup(**constants): encode.py's constants, caches and the functions
 * called for what is rare; once, at encode.py's import. */
static PyObject *setup(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"pid_heads", "ppid_heads", "vpid_heads", "vppid_heads", "created_head",
				 "created_size", "exec_id_head", "parent_exec_id_head", "exec_id_size",
				 "log_event_name", "exit_event_name", "log_severity", "duration_head",
				 "span_kind_start", "names", "endings", "exe_names", "new_span_name", "ending",
				 "span_extras", "exe_name", "late_identity_attrs", "framed_fixed", "exec_id_key",
				 "py_span", "py_exit_record", "py_exec_record", "shared_encodings",
				 "identity_attrs", "span_slim", NULL};
	PyObject *v[27];

	if (!PyArg_ParseTupleAndKeywords(args, kw, "$O!O!O!O!SnSSnSSSSSO!O!O!OOOOOOUOOOO!Ol", kwlist, &PyTuple_Type, &v[0],
					 &PyTuple_Type, &v[1], &PyTuple_Type, &v[2], &PyTuple_Type, &v[3], &v[4],
					 &created_size, &v[5], &v[6], &exec_id_size, &v[7], &v[8], &v[9], &v[10],
					 &v[11], &PyDict_Type, &v[12], &PyDict_Type, &v[13], &PyDict_Type, &v[14],
					 &v[15], &v[16], &v[17], &v[18], &v[19], &v[20], &v[21], &v[22], &v[23],
					 &v[24], &PyDict_Type, &v[25], &v[26], &span_slim))
		return NULL;
	for (int i = 0; i < 4; i++) {
		if (PyTuple_GET_SIZE(v[i]) != 11)
			return PyErr_Format(PyExc_ValueError, "a head per varint size (0-10) expected");
		for (int j = 0; j < 11; j++)
			if (!PyBytes_Check(PyTuple_GET_ITEM(v[i], j)))
				return PyErr_Format(PyExc_TypeError, "heads: bytes expected");
	}
	PyObject **slots[27] = {&pid_heads, &ppid_heads, &vpid_heads, &vppid_heads, &created_head, &exec_id_head,
				&parent_exec_id_head, &log_event_name, &exit_event_name, &log_severity, &duration_head,
				&span_kind_start, &names, &endings, &exe_names, &new_span_name, &ending, &span_extras,
				&exe_name, &late_identity_attrs, &framed_fixed, &exec_id_key, &py_span,
				&py_exit_record, &py_exec_record, &shared_encodings, &identity_attrs};
	for (int i = 0; i < 27; i++)
		Py_XSETREF(*slots[i], Py_NewRef(v[i]));
	forget_last_ending();
	Py_CLEAR(last_identity);
	Py_CLEAR(last_identity_attrs);
	ready = 1;
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
	{"setup", (PyCFunction)(void (*)(void))setup, METH_VARARGS | METH_KEYWORDS, "encode.py's constants, once"},
	{"exec_ids", exec_ids, METH_VARARGS, "exec_ids(ev, slim) -> (log ids, span ids) or None"},
	{"exec_record", (PyCFunction)(void (*)(void))exec_record, METH_FASTCALL,
	 "exec_record(ev, span, span_set, limits, observed_ns) -> bytes; sets span.attributes"},
	{"span", span, METH_O, "span(ended) -> bytes"},
	{"exit_record", (PyCFunction)(void (*)(void))exit_record, METH_FASTCALL, "exit_record(ended, observed_ns, repeat_derived=False) -> bytes"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_encode_native", "The per-exec OTLP encoding of encode.py, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__encode_native(void)
{
	struct {
		PyObject **slot;
		const char *name;
	} strings[] = {
		{&s_host_pid, "host_pid"}, {&s_host_ppid, "host_ppid"}, {&s_pid, "pid"}, {&s_ppid, "ppid"},
		{&s_process_start_time, "process_start_time"}, {&s_exec_id, "exec_id"},
		{&s_parent_exec_id, "parent_exec_id"}, {&s_timestamp, "timestamp"},
		{&s_log, "log"}, {&s_trace_flags, "trace_flags"}, {&s_trace_id, "trace_id"},
		{&s_span_id, "span_id"}, {&s_process, "process"}, {&s_exe, "exe"}, {&s_comm, "comm"},
		{&s_trace_state, "trace_state"}, {&s_parent_span_id, "parent_span_id"}, {&s_start_ns, "start_ns"},
		{&s_end_ns, "end_ns"}, {&s_attributes, "attributes"}, {&s_ended_by, "ended_by"},
		{&s_incomplete, "incomplete"}, {&s_exit_code, "exit_code"}, {&s_signal, "signal"},
		{&s_untrusted_traceparent, "untrusted_traceparent"}, {&s_late_identity, "late_identity"},
		{&s_result, "result"}, {&s_shared, "shared"}, {&s_span, "span"},
		{&s_executable_identity, "executable_identity"}, {&s_script_identity, "script_identity"},
		{&s_unavailable, "unavailable"},
	};
	for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
		if ((*strings[i].slot = PyUnicode_InternFromString(strings[i].name)) == NULL)
			return NULL;
	if ((s_nul = PyUnicode_FromStringAndSize("\0", 1)) == NULL)
		return NULL;
	return PyModule_Create(&module);
}
