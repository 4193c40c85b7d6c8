/* otel_exec.export._spool_native: the spool's segment write in C.
 *
 * The pure-Python code is the reference (otel_exec/export/spool.py,
 * _write_framed and _split_framed) and this module gives the same results:
 *
 *   write_framed(fd, records)  each record (bytes) behind its length
 *                              prefix (4 bytes, little-endian: spool.frame),
 *                              in writev() calls of at most IOV_MAX
 *                              buffers, a short write completed.
 *
 *   split_framed(view, n)      the records framed so at the start of
 *                              view (a memoryview of a segment read back),
 *                              as views of it: at most n, up to the first
 *                              one not whole or not a record
 *                              (spool.valid_record); spool._split_framed.
 *
 * The prefixes live in one C array: no Python object per record, where the
 * reference makes a bytes object per prefix and os.writev() takes a buffer
 * reference per part. The GIL is released while writev() runs, as os.writev()
 * releases it; the caller's list and its bytes objects stay unchanged
 * meanwhile (the reader thread owns both).
 *
 * split_framed runs in the export thread for every batch read back from the
 * files (after a lag or a restart): the reference's Python steps per record
 * (the length, the record's tag and varint checked) are C steps here; only
 * the views are Python objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <sys/uio.h>

/* Buffers per writev(): a record takes two. */
#define PAIRS (IOV_MAX / 2)

/* Write iov[0:n] whole: writev() again after a short write, from where it
 * stopped. 0, or -1 with an OSError set. */
static int write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t written;
        Py_BEGIN_ALLOW_THREADS
        written = writev(fd, iov, n);
        Py_END_ALLOW_THREADS
        if (written < 0) {
            if (errno == EINTR) {
                /* As os.writev (PEP 475): retried unless a signal handler raised. */
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        size_t left = (size_t)written;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* write_framed(fd, records: list[bytes]) -> None */
static PyObject *write_framed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write_framed(fd, records) takes 2 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "write_framed: not a file descriptor");
        return NULL;
    }
    PyObject *records = args[1];
    if (!PyList_CheckExact(records)) {
        PyErr_SetString(PyExc_TypeError, "write_framed: records must be a list of bytes");
        return NULL;
    }
    struct iovec iov[2 * PAIRS];
    uint32_t prefix[PAIRS];
    Py_ssize_t count = PyList_GET_SIZE(records);
    for (Py_ssize_t first = 0; first < count; first += PAIRS) {
        int n = 0;
        for (Py_ssize_t i = first; i < count && i < first + PAIRS; i++) {
            PyObject *rec = PyList_GET_ITEM(records, i);
            if (!PyBytes_Check(rec)) {
                PyErr_SetString(PyExc_TypeError, "write_framed: records must be a list of bytes");
                return NULL;
            }
            Py_ssize_t len = PyBytes_GET_SIZE(rec);
            if ((uint64_t)len > UINT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "write_framed: a record over 4 GiB");
                return NULL;
            }
            uint32_t le = (uint32_t)len;
            unsigned char *p = (unsigned char *)&prefix[i - first];
            p[0] = le & 0xFF;
            p[1] = (le >> 8) & 0xFF;
            p[2] = (le >> 16) & 0xFF;
            p[3] = le >> 24;
            iov[n].iov_base = p;
            iov[n++].iov_len = 4;
            iov[n].iov_base = PyBytes_AS_STRING(rec);
            iov[n++].iov_len = (size_t)len;
        }
        if (write_all((int)fd, iov, n) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* Whether the n bytes at p are a record as the agent frames them: a field 2
 * (LEN) tag, then a varint of the length of the rest (spool.valid_record). */
static int valid_record(const unsigned char *p, uint64_t n)
{
    if (n < 2 || p[0] != 0x12)
        return 0;
    uint64_t value = 0;
    int over = 0; /* bits at or past 2^32: no record's length */
    uint64_t last = n < 11 ? n : 11;
    for (uint64_t i = 1, shift = 0; i < last; i++, shift += 7) {
        uint64_t bits = p[i] & 0x7F;
        if (shift >= 32) {
            if (bits)
                over = 1;
        } else {
            value |= bits << shift;
        }
        if (!(p[i] & 0x80))
            return !over && value == n - i - 1;
    }
    return 0;
}

/* split_framed(view: memoryview, max_records: int) -> list[memoryview] */
static PyObject *split_framed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split_framed(view, max_records) takes 2 arguments");
        return NULL;
    }
    PyObject *view = args[0];
    if (!PyMemoryView_Check(view)) {
        PyErr_SetString(PyExc_TypeError, "split_framed: view must be a memoryview");
        return NULL;
    }
    Py_ssize_t max_records = PyLong_AsSsize_t(args[1]);
    if (max_records == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(view, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *records = PyList_New(0);
    if (records == NULL)
        goto done;
    const unsigned char *data = buf.buf;
    uint64_t size = (uint64_t)buf.len, p = 0;
    while (p + 4 <= size && PyList_GET_SIZE(records) < max_records) {
        uint64_t n = (uint64_t)data[p] | (uint64_t)data[p + 1] << 8 | (uint64_t)data[p + 2] << 16
                     | (uint64_t)data[p + 3] << 24;
        if (p + 4 + n > size || !valid_record(data + p + 4, n))
            break;
        PyObject *rec = PySequence_GetSlice(view, (Py_ssize_t)(p + 4), (Py_ssize_t)(p + 4 + n));
        if (rec == NULL || PyList_Append(records, rec) < 0) {
            Py_XDECREF(rec);
            Py_CLEAR(records);
            goto done;
        }
        Py_DECREF(rec);
        p += 4 + n;
    }
done:
    PyBuffer_Release(&buf);
    return records;
}

static PyMethodDef module_methods[] = {
    {"write_framed", (PyCFunction)(void (*)(void))write_framed, METH_FASTCALL,
     "write_framed(fd, records): each record behind its 4-byte little-endian length, in writev() calls of at "
     "most IOV_MAX buffers, a short write completed (SignalSpool._write_records' reference)."},
    {"split_framed", (PyCFunction)(void (*)(void))split_framed, METH_FASTCALL,
     "split_framed(view, max_records): the records framed at the start of the memoryview, as views of it, up to "
     "max_records and the first one not whole or not a record (its reference: spool._split_framed)."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "otel_exec.export._spool_native",
    "The spool's segment write and read-back split in C; see otel_exec/export/spool.py.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__spool_native(void)
{
    return PyModule_Create(&module_def);
}
