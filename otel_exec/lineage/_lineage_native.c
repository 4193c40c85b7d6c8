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
 * Every exec takes one or two ids; the unsalted hex case is nearly all of
 * them and needs no Python object but the result. The hashed cases (a
 * re-exec, an exec id that is not hex) call hashlib's blake2b, as the
 * reference does: they are rare, and one hash implementation is kept.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

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

/* The leading 2*size characters of text as hex, into out: 1 if they are all
 * hex digits (bytes.fromhex of them gives size bytes exactly; whitespace it
 * skips would give fewer), else 0. */
static int leading_hex(PyObject *text, Py_ssize_t size, unsigned char *out)
{
    if (PyUnicode_GET_LENGTH(text) < 2 * size)
        return 0;
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
    int salted = PyObject_IsTrue(salt);
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


static PyMethodDef methods[] = {
    {"digest", (PyCFunction)(void (*)(void))digest, METH_FASTCALL,
     "digest(exec_id, salt, size) -> bytes: spans._digest's id bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "otel_exec.lineage._lineage_native",
    "The span lineage's per-exec id derivation (reference: otel_exec.lineage.spans._digest).", -1, methods,
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

PyMODINIT_FUNC PyInit__lineage_native(void)
{
    if ((blake2b = imported("hashlib", "blake2b")) == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
