/* otel_exec.lineage._lineage_native: the span lineage's per-exec id
 * derivation in C.
 *
 * The pure-Python code is the reference (otel_exec/lineage/spans.py,
 * _digest) and this module returns the same bytes:
 *
 *   digest(exec_id, salt, size)  the id bytes of an exec id: its leading
 *                                2*size hex digits when unsalted, BLAKE2b
 *                                (digest_size=size) of "exec_id/salt"
 *                                otherwise, or of the exec id when its
 *                                leading digits are not hex; all-zero ids
 *                                become 0x01 bytes.
 *
 *   image_parent(table, ev), on_exec(table, ev), on_exit(table, ev)
 *                                ProcessTable's per-event methods
 *                                (proctable.py: _image_parent, _on_exec,
 *                                _on_exit), bound to the table as its
 *                                methods: the same look-ups and changes of
 *                                its OrderedDict, the same ProcessInfo
 *                                built, the same on_drop calls.
 *
 *   lineage_on_exit(lineage, ev)
 *                                SpanLineage.on_exit (spans.py: _on_exit),
 *                                bound to the lineage as its method: the
 *                                table's on_exit, the process's open span
 *                                popped, ended by "exit" and handed to
 *                                each of its on_end.
 *
 *   span_class(cls), new_span(*args)
 *                                spans.ProcessSpan(*args) (the reference:
 *                                the class itself), its slots filled as
 *                                its __init__ fills them, without the
 *                                __init__'s Python frame; one span per
 *                                reported exec.
 *
 * Every exec takes one or two ids; the unsalted hex case is nearly all of
 * them and needs no Python object but the result. The hashed cases (a
 * re-exec, an exec id that is not hex) call hashlib's blake2b, as the
 * reference does: they are rare, and one hash implementation is kept.
 *
 * The table's methods leave out a Python frame per call (one to three per
 * record). They read the events' and entries' fields by slot offset when
 * the object is of the exact class the offsets were taken from (ExecEvent,
 * ExitEvent, ProcessInfo: slots classes), by name otherwise, as a generic
 * attribute read costs more than the interpreter's own specialised one.
 * A ProcessInfo is filled slot by slot, as its __init__ does: the
 * differential test compares every field. The table's OrderedDict and
 * bound are read from ProcessTable's slots (found once per class, as
 * PyObject_GetAttr would find them), its eviction count and on_drop by
 * name: its policy stays Python's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <structmember.h>

/* The largest id: a trace id. */
#define ID_MAX 16

static PyObject *blake2b; /* hashlib.blake2b */

static int hex_value(Py_UCS4 c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* hex_value of each byte, 0xff for none (filled at import). */
static unsigned char hex_digit[256];

/* The leading 2*size characters of text as hex, into out: 1 if they are all
 * hex digits (bytes.fromhex of them gives size bytes exactly; whitespace it
 * skips would give fewer), else 0. */
static int leading_hex(PyObject *text, Py_ssize_t size, unsigned char *out)
{
    if (PyUnicode_GET_LENGTH(text) < 2 * size)
        return 0;
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        /* An exec id's usual form: its bytes read directly. */
        const unsigned char *a = PyUnicode_1BYTE_DATA(text);
        for (Py_ssize_t i = 0; i < size; i++) {
            unsigned char hi = hex_digit[a[2 * i]], lo = hex_digit[a[2 * i + 1]];
            if ((hi | lo) == 0xff)
                return 0;
            out[i] = (unsigned char)(hi << 4 | lo);
        }
        return 1;
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < size; i++) {
        int hi = hex_value(PyUnicode_READ(kind, data, 2 * i));
        int lo = hex_value(PyUnicode_READ(kind, data, 2 * i + 1));
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

/* blake2b(text.encode(), digest_size=size).digest() into out: 0, or -1
 * with an exception set. */
static int hashed(PyObject *text, Py_ssize_t size, unsigned char *out)
{
    PyObject *data = PyUnicode_AsUTF8String(text);
    if (data == NULL)
        return -1;
    PyObject *args = Py_BuildValue("(N)", data);
    if (args == NULL)
        return -1;
    PyObject *kwargs = Py_BuildValue("{s:n}", "digest_size", size);
    PyObject *h = kwargs ? PyObject_Call(blake2b, args, kwargs) : NULL;
    Py_DECREF(args);
    Py_XDECREF(kwargs);
    if (h == NULL)
        return -1;
    PyObject *d = PyObject_CallMethod(h, "digest", NULL);
    Py_DECREF(h);
    if (d == NULL)
        return -1;
    if (!PyBytes_Check(d) || PyBytes_GET_SIZE(d) != size) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_RuntimeError, "blake2b gave a digest of another size");
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(d), (size_t)size);
    Py_DECREF(d);
    return 0;
}

/* digest(exec_id: str, salt: int, size: int) -> bytes */
static PyObject *digest(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t size = nargs == 3 ? PyLong_AsSsize_t(args[2]) : -1;
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyLong_Check(args[1]) || size < 1 || size > ID_MAX) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "digest(exec_id: str, salt: int, size: 1 to 16)");
        return NULL;
    }
    PyObject *exec_id = args[0], *salt = args[1];
    unsigned char id[ID_MAX];
    int salted = PyLong_CheckExact(salt) ? Py_SIZE(salt) != 0 : PyObject_IsTrue(salt);
    if (salted < 0)
        return NULL;
    if (salted) {
        PyObject *text = PyUnicode_FromFormat("%U/%S", exec_id, salt);
        if (text == NULL)
            return NULL;
        int failed = hashed(text, size, id);
        Py_DECREF(text);
        if (failed)
            return NULL;
    } else if (!leading_hex(exec_id, size, id) && hashed(exec_id, size, id) < 0) {
        return NULL;
    }
    Py_ssize_t zeros = 0;
    while (zeros < size && id[zeros] == 0)
        zeros++;
    if (zeros == size)
        memset(id, 1, (size_t)size); /* all-zero ids are invalid */
    return PyBytes_FromStringAndSize((const char *)id, size);
}


/* Slots read or written per call, by index into a Layout. */
enum { F_PID, F_PPID, F_START_TICKS, F_EXEC_ID, F_PARENT_EXEC_ID, F_COMM, F_EXE, F_ARGV, F_SEEDED_FROM_PROC,
       F_EXEC_TIME, F_EXIT_CODE, F_SIGNAL, F_HOST_PID, F_HOST_PPID, F_PATHNAME, F_TIMESTAMP, F_IMAGE_PPID,
       F_PARENT_START_TICKS, F_COUNT };
static const char *const field_names[F_COUNT] = {
    "pid", "ppid", "start_ticks", "exec_id", "parent_exec_id", "comm", "exe", "argv", "seeded_from_proc",
    "exec_time", "exit_code", "signal", "host_pid", "host_ppid", "pathname", "timestamp", "image_ppid",
    "parent_start_ticks",
};
static PyObject *names[F_COUNT]; /* field_names, interned */

/* A slots class's offsets of the fields it has (-1: not one of its slots). */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset[F_COUNT];
} Layout;
static Layout exec_event, exit_event, process_info;

static PyObject *s_procs, *s_on_drop, *s_max_entries, *s_evicted, *s_move_to_end, *s_popitem, *s_table_on_exit,
    *s_open, *s_on_end, *s_pop, *s_end_ns, *s_ended_by, *s_exit;

/* obj.<field>, a new reference, or NULL with an exception set. */
static PyObject *get(PyObject *obj, const Layout *layout, int field)
{
    if (Py_TYPE(obj) == layout->type && layout->offset[field] >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + layout->offset[field]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, names[field]); /* or the AttributeError of an unset slot */
}

/* obj.<field> = value: 0, or -1 with an exception set. */
static int set(PyObject *obj, const Layout *layout, int field, PyObject *value)
{
    if (Py_TYPE(obj) == layout->type && layout->offset[field] >= 0) {
        Py_XSETREF(*(PyObject **)((char *)obj + layout->offset[field]), Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(obj, names[field], value);
}

/* Where an object slot's member descriptor d (borrowed, or NULL) keeps its
 * value in an instance, or -1 when d is not one. */
static Py_ssize_t slot_offset(PyObject *d)
{
    PyMemberDef *member = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)d)->d_member : NULL;
    return member != NULL && member->type == T_OBJECT_EX ? member->offset : -1;
}

/* The offsets of cls's object slots among the fields. 0, or -1. */
static int take_layout(Layout *layout, const char *module, const char *cls)
{
    PyObject *m = PyImport_ImportModule(module);
    PyObject *type = m ? PyObject_GetAttrString(m, cls) : NULL;
    Py_XDECREF(m);
    if (type == NULL)
        return -1;
    if (!PyType_Check(type)) {
        Py_DECREF(type);
        PyErr_Format(PyExc_TypeError, "%s.%s is not a class", module, cls);
        return -1;
    }
    layout->type = (PyTypeObject *)type; /* kept for the module's life */
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *d = PyDict_GetItemWithError(layout->type->tp_dict, names[i]);
        if (d == NULL && PyErr_Occurred())
            return -1;
        layout->offset[i] = slot_offset(d);
    }
    return 0;
}

/* Where the table's class keeps one of its attributes (ProcessTable's
 * __slots__), found once per class: a member descriptor on a class with
 * the generic getattr wins over anything else (a data descriptor), so its
 * slot is what PyObject_GetAttr would read. */
typedef struct {
    PyTypeObject *type; /* a strong reference: its address is not reused while here */
    Py_ssize_t offset;  /* -1: read by name */
} TableSlot;
static TableSlot procs_slot, max_entries_slot;

/* table.<name>, a new reference, or NULL with an exception set. */
static PyObject *table_attr(PyObject *table, PyObject *name, TableSlot *where)
{
    PyTypeObject *type = Py_TYPE(table);
    if (type != where->type) {
        Py_ssize_t offset = type->tp_getattro == PyObject_GenericGetAttr ? slot_offset(_PyType_Lookup(type, name)) : -1;
        Py_INCREF(type);
        Py_XSETREF(where->type, type);
        where->offset = offset;
    }
    if (where->offset >= 0) {
        PyObject *value = *(PyObject **)((char *)table + where->offset);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(table, name); /* or the AttributeError of an unset slot */
}

/* The table's OrderedDict (table._procs) for a call (table, ev) of the
 * method `name`: a new reference, or NULL with an exception set. */
static PyObject *procs_for(const char *name, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(table, ev)", name);
        return NULL;
    }
    PyObject *procs = table_attr(args[0], s_procs, &procs_slot);
    if (procs != NULL && !PyODict_Check(procs)) {
        Py_DECREF(procs);
        PyErr_SetString(PyExc_TypeError, "ProcessTable._procs must be an OrderedDict");
        return NULL;
    }
    return procs;
}

/* table._dropped(info): on_drop(info) when set. 0, or -1 with an exception. */
static int dropped(PyObject *table, PyObject *info)
{
    PyObject *on_drop = PyObject_GetAttr(table, s_on_drop);
    PyObject *r = on_drop == NULL ? NULL : on_drop == Py_None ? Py_NewRef(Py_None) : PyObject_CallOneArg(on_drop, info);
    Py_XDECREF(on_drop);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* x != info.start_ticks: 1, 0, or -1 with an exception set. */
static int started_otherwise(PyObject *x, PyObject *info)
{
    PyObject *y = get(info, &process_info, F_START_TICKS);
    if (y == NULL)
        return -1;
    int r = PyObject_RichCompareBool(x, y, Py_NE);
    Py_DECREF(y);
    return r;
}

/* info.start_ticks != ev.start_ticks: 1, 0, or -1 with an exception set. */
static int stale(PyObject *info, PyObject *ev, const Layout *layout)
{
    PyObject *x = get(info, &process_info, F_START_TICKS);
    if (x == NULL)
        return -1;
    PyObject *y = get(ev, layout, F_START_TICKS);
    int r = y != NULL ? PyObject_RichCompareBool(x, y, Py_NE) : -1;
    Py_DECREF(x);
    Py_XDECREF(y);
    return r;
}

/* procs.pop(key, None): a new reference, NULL when absent (no exception
 * set) or on an error (exception set). */
static PyObject *pop(PyObject *procs, PyObject *key)
{
    PyObject *info = PyDict_GetItemWithError(procs, key);
    if (info == NULL)
        return NULL;
    Py_INCREF(info);
    if (PyODict_DelItem(procs, key) < 0) {
        Py_DECREF(info);
        return NULL;
    }
    return info;
}

/* image_parent(table, ev) -> ProcessInfo | None */
static PyObject *table_image_parent(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *procs = procs_for("image_parent", args, nargs);
    if (procs == NULL)
        return NULL;
    PyObject *ev = args[1], *result = NULL, *started = NULL, *info;
    PyObject *ppid = get(ev, &exec_event, F_IMAGE_PPID);
    if (ppid == NULL)
        goto done;
    info = PyDict_GetItemWithError(procs, ppid);
    if (info == NULL) {
        if (!PyErr_Occurred())
            result = Py_NewRef(Py_None);
        goto done;
    }
    Py_INCREF(info);
    PyObject *moved = PyObject_CallMethodOneArg(procs, s_move_to_end, ppid); /* a use, as get() counts it */
    started = moved != NULL ? get(ev, &exec_event, F_PARENT_START_TICKS) : NULL;
    Py_XDECREF(moved);
    int other = started == NULL ? -1 : started == Py_None ? 0 : started_otherwise(started, info);
    if (other == 0)
        result = Py_NewRef(info);
    else if (other > 0)
        result = Py_NewRef(Py_None);
    Py_DECREF(info);
done:
    Py_XDECREF(started);
    Py_XDECREF(ppid);
    Py_DECREF(procs);
    return result;
}

/* A new ProcessInfo of ev, its slots filled as ProcessInfo.__init__ fills
 * them from _on_exec's arguments; NULL with an exception set. */
static PyObject *new_info(PyObject *ev)
{
    /* ProcessInfo's field <- ev's field (-1: False, -2: None) */
    static const int from[][2] = {
        {F_PID, F_HOST_PID}, {F_PPID, F_HOST_PPID}, {F_START_TICKS, F_START_TICKS}, {F_EXEC_ID, F_EXEC_ID},
        {F_PARENT_EXEC_ID, F_PARENT_EXEC_ID}, {F_COMM, F_COMM}, {F_EXE, F_PATHNAME}, {F_ARGV, F_ARGV},
        {F_SEEDED_FROM_PROC, -1}, {F_EXEC_TIME, F_TIMESTAMP}, {F_EXIT_CODE, -2}, {F_SIGNAL, -2},
    };
    PyObject *info = process_info.type->tp_alloc(process_info.type, 0);
    if (info == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof from / sizeof from[0]; i++) {
        PyObject *value = from[i][1] == -1 ? Py_NewRef(Py_False)
                          : from[i][1] == -2 ? Py_NewRef(Py_None) : get(ev, &exec_event, from[i][1]);
        int failed = value == NULL || set(info, &process_info, from[i][0], value) < 0;
        Py_XDECREF(value);
        if (failed) {
            Py_DECREF(info);
            return NULL;
        }
    }
    return info;
}

/* The table holds more than its bound: count an eviction and drop its
 * least recently used entry. 0, or -1 with an exception set. */
static int evict_if_over(PyObject *table, PyObject *procs)
{
    PyObject *bound = table_attr(table, s_max_entries, &max_entries_slot);
    if (bound == NULL)
        return -1;
    int over;
    int overflow = 1;
    long limit = PyLong_CheckExact(bound) ? PyLong_AsLongAndOverflow(bound, &overflow) : 0;
    if (!overflow) { /* an int that fits: compared without making one of the size */
        over = PyDict_GET_SIZE(procs) > limit;
    } else {
        PyObject *size = PyLong_FromSsize_t(PyDict_GET_SIZE(procs));
        over = size != NULL ? PyObject_RichCompareBool(size, bound, Py_GT) : -1;
        Py_XDECREF(size);
    }
    Py_DECREF(bound);
    if (over <= 0)
        return over;
    PyObject *evicted = PyObject_GetAttr(table, s_evicted), *more = NULL;
    if (evicted != NULL) {
        PyObject *one = PyLong_FromLong(1);
        more = one != NULL ? PyNumber_InPlaceAdd(evicted, one) : NULL;
        Py_XDECREF(one);
        Py_DECREF(evicted);
    }
    int failed = more == NULL || PyObject_SetAttr(table, s_evicted, more) < 0;
    Py_XDECREF(more);
    if (failed)
        return -1;
    PyObject *item = PyObject_CallMethodObjArgs(procs, s_popitem, Py_False, NULL);
    if (item == NULL)
        return -1;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        Py_DECREF(item);
        PyErr_SetString(PyExc_TypeError, "popitem gave no (key, value)");
        return -1;
    }
    failed = dropped(table, PyTuple_GET_ITEM(item, 1)) < 0;
    Py_DECREF(item);
    return failed ? -1 : 0;
}

/* on_exec(table, ev) -> (ProcessInfo, ProcessInfo | None) */
static PyObject *table_on_exec(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *procs = procs_for("on_exec", args, nargs);
    if (procs == NULL)
        return NULL;
    PyObject *table = args[0], *ev = args[1], *result = NULL, *info = NULL;
    PyObject *pid = get(ev, &exec_event, F_HOST_PID), *previous = pid != NULL ? pop(procs, pid) : NULL;
    int other = previous != NULL ? stale(previous, ev, &exec_event) : PyErr_Occurred() ? -1 : 0;
    if (other < 0 || (other > 0 && dropped(table, previous) < 0))
        goto done;
    if (other > 0) /* a reused pid's stale entry: not this process's past */
        Py_CLEAR(previous);
    info = new_info(ev);
    if (info == NULL || PyODict_SetItem(procs, pid, info) < 0) /* a key just popped: it goes last */
        goto done;
    if (evict_if_over(table, procs) < 0)
        goto done;
    result = PyTuple_Pack(2, info, previous != NULL ? previous : Py_None);
done:
    Py_XDECREF(info);
    Py_XDECREF(previous);
    Py_XDECREF(pid);
    Py_DECREF(procs);
    return result;
}

/* on_exit(table, ev) -> ProcessInfo | None */
static PyObject *table_on_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *procs = procs_for("on_exit", args, nargs);
    if (procs == NULL)
        return NULL;
    PyObject *table = args[0], *ev = args[1], *result = NULL, *code = NULL, *sig = NULL;
    PyObject *pid = get(ev, &exit_event, F_PID);
    PyObject *info = pid != NULL ? pop(procs, pid) : NULL;
    if (info == NULL) {
        if (!PyErr_Occurred())
            result = Py_NewRef(Py_None);
        goto done;
    }
    int other = stale(info, ev, &exit_event);
    if (other != 0) {
        if (other > 0 && dropped(table, info) == 0) /* a reused pid's stale entry */
            result = Py_NewRef(Py_None);
        goto done;
    }
    code = get(ev, &exit_event, F_EXIT_CODE);
    sig = code != NULL ? get(ev, &exit_event, F_SIGNAL) : NULL;
    if (sig != NULL && set(info, &process_info, F_EXIT_CODE, code) == 0 &&
        set(info, &process_info, F_SIGNAL, sig) == 0)
        result = Py_NewRef(info);
done:
    Py_XDECREF(code);
    Py_XDECREF(sig);
    Py_XDECREF(info);
    Py_XDECREF(pid);
    Py_DECREF(procs);
    return result;
}

/* The span class (spans.ProcessSpan) new_span builds: its __init__'s
 * parameters in order, as the offsets of the slots of the same names, and
 * the defaults of the trailing ones. __init__ only stores each parameter
 * in its slot; the differential test compares every slot of both. */
#define SPAN_FIELDS_MAX 32
static PyTypeObject *span_type;
static Py_ssize_t span_offset[SPAN_FIELDS_MAX];
static Py_ssize_t span_fields;
static PyObject *span_defaults; /* a tuple */
static Py_ssize_t span_end_ns, span_ended_by; /* the offsets of its end_ns and ended_by slots (-1: none) */

/* span_class(cls): new_span builds instances of cls. None, or an exception
 * when cls is not a slots class whose __init__'s parameters are its slots.
 * An __init__ decorated with functools.wraps (mutmut's trampolines, which
 * the mutation score puts around it) has its __wrapped__'s parameters, as
 * inspect.signature reads them. */
static PyObject *span_class(PyObject *self, PyObject *cls)
{
    (void)self;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "span_class(cls): a class");
        return NULL;
    }
    PyObject *init = PyObject_GetAttrString(cls, "__init__");
    PyObject *wrapped;
    /* Bounded: a cycle of __wrapped__ would never end. */
    for (int depth = 0; init != NULL && depth < 16 && (wrapped = PyObject_GetAttrString(init, "__wrapped__")) != NULL;
         depth++)
        Py_SETREF(init, wrapped);
    if (init != NULL && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(init);
            return NULL;
        }
        PyErr_Clear();
    }
    PyObject *code = init != NULL && PyFunction_Check(init) ? PyFunction_GET_CODE(init) : NULL;
    PyObject *defaults = code != NULL ? PyFunction_GET_DEFAULTS(init) : NULL;
    PyCodeObject *c = (PyCodeObject *)code;
    Py_ssize_t n = code != NULL ? c->co_argcount - 1 : -1;
    PyObject *names = code != NULL ? PyObject_GetAttrString(code, "co_varnames") : NULL;
    Py_ssize_t offsets[SPAN_FIELDS_MAX];
    int ok = names != NULL && PyTuple_Check(names) && n > 0 && n <= SPAN_FIELDS_MAX &&
             PyTuple_GET_SIZE(names) > n && c->co_kwonlyargcount == 0 && !(c->co_flags & (CO_VARARGS | CO_VARKEYWORDS)) &&
             (defaults == NULL || PyTuple_GET_SIZE(defaults) <= n);
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *d = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, PyTuple_GET_ITEM(names, i + 1));
        offsets[i] = slot_offset(d);
        ok = offsets[i] >= 0;
    }
    Py_XDECREF(names);
    if (!ok) {
        Py_XDECREF(init);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "span_class(cls): cls.__init__'s parameters must be cls's slots");
        return NULL;
    }
    Py_XSETREF(span_defaults, defaults != NULL ? Py_NewRef(defaults) : PyTuple_New(0));
    Py_DECREF(init);
    if (span_defaults == NULL)
        return NULL;
    PyObject *end_ns = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, s_end_ns);
    PyObject *ended_by = end_ns != NULL ? PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, s_ended_by) : NULL;
    if (PyErr_Occurred())
        return NULL;
    Py_XSETREF(span_type, (PyTypeObject *)Py_NewRef(cls));
    memcpy(span_offset, offsets, sizeof offsets);
    span_fields = n;
    span_end_ns = slot_offset(end_ns);
    span_ended_by = slot_offset(ended_by);
    Py_RETURN_NONE;
}

/* new_span(*args): span_class's cls(*args), its slots filled as its
 * __init__ fills them (positional arguments only). */
static PyObject *new_span(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (span_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "new_span before span_class");
        return NULL;
    }
    Py_ssize_t first_default = span_fields - PyTuple_GET_SIZE(span_defaults);
    if (nargs < first_default || nargs > span_fields) {
        PyErr_Format(PyExc_TypeError, "new_span takes %zd to %zd arguments (%zd given)", first_default, span_fields,
                     nargs);
        return NULL;
    }
    PyObject *span = span_type->tp_alloc(span_type, 0);
    if (span == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < span_fields; i++) {
        PyObject *value = i < nargs ? args[i] : PyTuple_GET_ITEM(span_defaults, i - first_default);
        *(PyObject **)((char *)span + span_offset[i]) = Py_NewRef(value);
    }
    return span;
}

/* span.<slot at offset, or name> = value: 0, or -1 with an exception set. */
static int set_span(PyObject *span, Py_ssize_t offset, PyObject *name, PyObject *value)
{
    if (Py_TYPE(span) == span_type && offset >= 0) {
        Py_XSETREF(*(PyObject **)((char *)span + offset), Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(span, name, value);
}

/* on_exit(lineage, ev): SpanLineage.on_exit (reference: spans._on_exit):
 * the table's on_exit, the process's open span ended by its exit and
 * handed to each of on_end. An exit is most records: no Python frame. */
static PyObject *lineage_on_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "on_exit(lineage, ev)");
        return NULL;
    }
    PyObject *lineage = args[0], *ev = args[1];
    PyObject *bound = PyObject_GetAttr(lineage, s_table_on_exit), *info = NULL;
    if (bound != NULL && PyMethod_Check(bound) && PyCFunction_Check(PyMethod_GET_FUNCTION(bound)) &&
        PyCFunction_GET_FUNCTION(PyMethod_GET_FUNCTION(bound)) == (PyCFunction)(void (*)(void))table_on_exit) {
        /* This module's table method, bound: called without the bound method's call. */
        PyObject *table_args[2] = {PyMethod_GET_SELF(bound), ev};
        info = table_on_exit(NULL, table_args, 2);
    } else if (bound != NULL) {
        info = PyObject_CallOneArg(bound, ev);
    }
    Py_XDECREF(bound);
    if (info == NULL)
        return NULL;
    PyObject *result = NULL, *open = NULL, *pid = NULL, *span = NULL, *ts = NULL, *on_end = NULL;
    if (info == Py_None) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if ((open = PyObject_GetAttr(lineage, s_open)) == NULL || (pid = get(info, &process_info, F_PID)) == NULL)
        goto done;
    if (PyDict_CheckExact(open)) {
        span = PyDict_GetItemWithError(open, pid);
        if (span != NULL && (Py_INCREF(span), PyDict_DelItem(open, pid) < 0))
            goto done;
        if (span == NULL && PyErr_Occurred())
            goto done;
        if (span == NULL)
            span = Py_NewRef(Py_None);
    } else if ((span = PyObject_CallMethodObjArgs(open, s_pop, pid, Py_None, NULL)) == NULL) {
        goto done;
    }
    if (span == Py_None) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if ((ts = get(ev, &exit_event, F_TIMESTAMP)) == NULL || set_span(span, span_end_ns, s_end_ns, ts) < 0 ||
        set_span(span, span_ended_by, s_ended_by, s_exit) < 0 || (on_end = PyObject_GetAttr(lineage, s_on_end)) == NULL)
        goto done;
    if (PyList_CheckExact(on_end)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(on_end); i++) {
            PyObject *f = Py_NewRef(PyList_GET_ITEM(on_end, i)); /* the call may change the list */
            PyObject *r = PyObject_CallOneArg(f, span);
            Py_DECREF(f);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    } else {
        PyObject *it = PyObject_GetIter(on_end), *f;
        if (it == NULL)
            goto done;
        while ((f = PyIter_Next(it)) != NULL) {
            PyObject *r = PyObject_CallOneArg(f, span);
            Py_DECREF(f);
            if (r == NULL)
                break;
            Py_DECREF(r);
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(on_end);
    Py_XDECREF(ts);
    Py_XDECREF(span);
    Py_XDECREF(pid);
    Py_XDECREF(open);
    Py_DECREF(info);
    return result;
}

static PyMethodDef methods[] = {
    {"digest", (PyCFunction)(void (*)(void))digest, METH_FASTCALL,
     "digest(exec_id, salt, size) -> bytes: spans._digest's id bytes"},
    {"span_class", span_class, METH_O, "span_class(cls): the class new_span builds (spans.ProcessSpan)"},
    {"new_span", (PyCFunction)(void (*)(void))new_span, METH_FASTCALL,
     "new_span(*args): span_class's cls(*args) without its __init__'s Python frame"},
    {NULL, NULL, 0, NULL},
};

/* Bound to the table as its methods (instancemethod descriptors). */
static PyMethodDef table_methods[] = {
    {"image_parent", (PyCFunction)(void (*)(void))table_image_parent, METH_FASTCALL,
     "ProcessTable.image_parent (reference: proctable._image_parent)"},
    {"on_exec", (PyCFunction)(void (*)(void))table_on_exec, METH_FASTCALL,
     "ProcessTable.on_exec (reference: proctable._on_exec)"},
    {"on_exit", (PyCFunction)(void (*)(void))table_on_exit, METH_FASTCALL,
     "ProcessTable.on_exit (reference: proctable._on_exit)"},
    {"lineage_on_exit", (PyCFunction)(void (*)(void))lineage_on_exit, METH_FASTCALL,
     "SpanLineage.on_exit (reference: spans._on_exit)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "otel_exec.lineage._lineage_native",
    "The span lineage's per-exec mechanics (reference: otel_exec.lineage.spans._digest and "
    "otel_exec.lineage.proctable's per-event functions).", -1, methods,
    NULL, NULL, NULL, NULL,
};

/* The module's import of a module's attribute, a new reference. */
static PyObject *imported(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

static int intern_names(void)
{
    for (int i = 0; i < F_COUNT; i++)
        if ((names[i] = PyUnicode_InternFromString(field_names[i])) == NULL)
            return -1;
    return (s_procs = PyUnicode_InternFromString("_procs")) == NULL ||
                   (s_on_drop = PyUnicode_InternFromString("on_drop")) == NULL ||
                   (s_max_entries = PyUnicode_InternFromString("max_entries")) == NULL ||
                   (s_evicted = PyUnicode_InternFromString("evicted")) == NULL ||
                   (s_move_to_end = PyUnicode_InternFromString("move_to_end")) == NULL ||
                   (s_popitem = PyUnicode_InternFromString("popitem")) == NULL ||
                   (s_table_on_exit = PyUnicode_InternFromString("_table_on_exit")) == NULL ||
                   (s_open = PyUnicode_InternFromString("_open")) == NULL ||
                   (s_on_end = PyUnicode_InternFromString("on_end")) == NULL ||
                   (s_pop = PyUnicode_InternFromString("pop")) == NULL ||
                   (s_end_ns = PyUnicode_InternFromString("end_ns")) == NULL ||
                   (s_ended_by = PyUnicode_InternFromString("ended_by")) == NULL ||
                   (s_exit = PyUnicode_InternFromString("exit")) == NULL
               ? -1 : 0;
}

PyMODINIT_FUNC PyInit__lineage_native(void)
{
    if ((blake2b = imported("hashlib", "blake2b")) == NULL || intern_names() < 0 ||
        take_layout(&exec_event, "otel_exec.model.events", "ExecEvent") < 0 ||
        take_layout(&exit_event, "otel_exec.model.events", "ExitEvent") < 0 ||
        take_layout(&process_info, "otel_exec.model.process", "ProcessInfo") < 0)
        return NULL;
    for (int c = 0; c < 256; c++)
        hex_digit[c] = (unsigned char)(hex_value((Py_UCS4)c) < 0 ? 0xff : hex_value((Py_UCS4)c));
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    for (PyMethodDef *def = table_methods; def->ml_name != NULL; def++) {
        PyObject *func = PyCFunction_NewEx(def, NULL, NULL);
        PyObject *method = func != NULL ? PyInstanceMethod_New(func) : NULL;
        Py_XDECREF(func);
        if (method == NULL || PyModule_AddObject(module, def->ml_name, method) < 0) {
            Py_XDECREF(method);
            Py_DECREF(module);
            return NULL;
        }
    }
    return module;
}
