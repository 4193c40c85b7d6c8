/* otel_exec.export._spool_native: the spool's segment write in C.
 *
 * The pure-Python code is the reference (otel_exec/export/spool.py,
 * SignalSpool._write_records) and this module writes the same bytes:
 *
 *   write_framed(fd, records)  each record (bytes) behind its length
 *                              prefix (4 bytes, little-endian: spool.frame),
 *                              in writev() calls of at most IOV_MAX
 *                              buffers, a short write completed.
 *
 * The prefixes live in one C array: no Python object per record, where the
 * reference makes a bytes object per prefix and os.writev() takes a buffer
 * reference per part. The GIL is released while writev() runs, as os.writev()
 * releases it; the caller's list and its bytes objects stay unchanged
 * meanwhile (the reader thread owns both).
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

static PyMethodDef module_methods[] = {
    {"write_framed", (PyCFunction)(void (*)(void))write_framed, METH_FASTCALL,
     "write_framed(fd, records): each record behind its 4-byte little-endian length, in writev() calls of at "
     "most IOV_MAX buffers, a short write completed (SignalSpool._write_records' reference)."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "otel_exec.export._spool_native",
    "The spool's segment write in C; see otel_exec/export/spool.py.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__spool_native(void)
{
    return PyModule_Create(&module_def);
}
