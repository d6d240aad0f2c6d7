/* schemas._avroc: the Avro record reader of schemas.avro_fast, in C (optional; the Python reader is the reference).
 *
 * read(program, buf, pos) -> (value, next position), where ``program`` is the tuple tree that
 * ``schemas.avro_fast.program`` builds from a record schema:
 *   (STRING,) (BYTES,) (LONG,) (MICROS, epoch) (DOUBLE,) (FLOAT,) (BOOLEAN,) (NULL,)
 *   (UNION, (branch, ...)) (ARRAY, item) (RECORD, (name, ...), (field, ...))
 * It returns what the generated Python reader returns for the same bytes, or raises ValueError
 * (a truncated or malformed body, a union index out of range), UnicodeDecodeError, or OverflowError
 * (a varint wider than 64 bits, a time out of range) where the Python reader raises or would build a
 * value that only the reference path may judge. Every read is bounds-checked against the buffer.
 * Built by `pip install -e .` (pyproject.toml, [tool.setuptools.ext-modules]); after editing this file run
 * that again: an editable install does not rebuild it by itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>

enum { OP_STRING = 1, OP_BYTES, OP_LONG, OP_MICROS, OP_DOUBLE, OP_FLOAT, OP_BOOLEAN, OP_NULL, OP_UNION, OP_ARRAY, OP_RECORD };

#define MAX_DEPTH 64

typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t pos;
} Cursor;

static int truncated(void) {
    PyErr_SetString(PyExc_ValueError, "truncated");
    return -1;
}

/* Zigzag varint into *out; -1 with an exception set when truncated or wider than 64 bits. */
static int read_long(Cursor *c, int64_t *out) {
    uint64_t result = 0;
    int shift = 0;
    while (1) {
        if (c->pos >= c->size) return truncated();
        unsigned char b = c->data[c->pos++];
        if (shift == 63 && (b & 0x7E)) {
            PyErr_SetString(PyExc_OverflowError, "varint wider than 64 bits");
            return -1;
        }
        result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = (int64_t)(result >> 1) ^ -(int64_t)(result & 1);
            return 0;
        }
        shift += 7;
        if (shift > 63) {
            PyErr_SetString(PyExc_ValueError, "varint longer than 10 bytes");
            return -1;
        }
    }
}

static int read_length(Cursor *c, Py_ssize_t *out) {
    int64_t n;
    if (read_long(c, &n) < 0) return -1;
    if (n < 0 || n > c->size - c->pos) return truncated();
    *out = (Py_ssize_t)n;
    return 0;
}

static PyObject *micros(int64_t value, PyObject *epoch) {
    /* epoch + timedelta(microseconds=value), as the Python reader computes it */
    int64_t day = 86400000000LL;
    int64_t days = value / day, rest = value % day;
    if (rest < 0) {
        rest += day;
        days -= 1;
    }
    if (days > 999999999 || days < -999999999) {
        PyErr_SetString(PyExc_OverflowError, "time out of range");
        return NULL;
    }
    PyObject *delta = PyDelta_FromDSU((int)days, (int)(rest / 1000000), (int)(rest % 1000000));
    if (delta == NULL) return NULL;
    PyObject *out = PyNumber_Add(epoch, delta);
    Py_DECREF(delta);
    return out;
}

static PyObject *read_value(Cursor *c, PyObject *node, int depth);

static PyObject *bad_program(void) {
    PyErr_SetString(PyExc_TypeError, "not a reader program (schemas.avro_fast.program)");
    return NULL;
}

static PyObject *read_array(Cursor *c, PyObject *item, int depth) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    while (1) {
        int64_t count;
        if (read_long(c, &count) < 0) goto fail;
        if (count == 0) return out;
        if (count < 0) { /* a block with its size in bytes: the size is skipped */
            int64_t skipped;
            if (count == INT64_MIN) {
                truncated();
                goto fail;
            }
            count = -count;
            if (read_long(c, &skipped) < 0) goto fail;
        }
        if (count > c->size - c->pos) { /* more items than bytes left: no item of our schemas is empty */
            truncated();
            goto fail;
        }
        for (int64_t i = 0; i < count; i++) {
            PyObject *value = read_value(c, item, depth + 1);
            if (value == NULL) goto fail;
            int failed = PyList_Append(out, value);
            Py_DECREF(value);
            if (failed) goto fail;
        }
    }
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *read_record(Cursor *c, PyObject *names, PyObject *fields, int depth) {
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = read_value(c, PyTuple_GET_ITEM(fields, i), depth + 1);
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        int failed = PyDict_SetItem(out, PyTuple_GET_ITEM(names, i), value);
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *read_value(Cursor *c, PyObject *node, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "schema nested too deep");
        return NULL;
    }
    if (!PyTuple_Check(node) || PyTuple_GET_SIZE(node) < 1) return bad_program();
    long op = PyLong_AsLong(PyTuple_GET_ITEM(node, 0));
    Py_ssize_t size = PyTuple_GET_SIZE(node), n;
    int64_t v;
    switch (op) {
    case OP_STRING:
        if (read_length(c, &n) < 0) return NULL;
        c->pos += n;
        return PyUnicode_DecodeUTF8((const char *)c->data + c->pos - n, n, NULL);
    case OP_BYTES:
        if (read_length(c, &n) < 0) return NULL;
        c->pos += n;
        return PyBytes_FromStringAndSize((const char *)c->data + c->pos - n, n);
    case OP_LONG:
        if (read_long(c, &v) < 0) return NULL;
        return PyLong_FromLongLong(v);
    case OP_MICROS:
        if (size < 2) return bad_program();
        if (read_long(c, &v) < 0) return NULL;
        return micros(v, PyTuple_GET_ITEM(node, 1));
    case OP_DOUBLE:
        if (c->size - c->pos < 8) return truncated(), NULL;
        c->pos += 8;
        return PyFloat_FromDouble(PyFloat_Unpack8((const char *)c->data + c->pos - 8, 1));
    case OP_FLOAT:
        if (c->size - c->pos < 4) return truncated(), NULL;
        c->pos += 4;
        return PyFloat_FromDouble(PyFloat_Unpack4((const char *)c->data + c->pos - 4, 1));
    case OP_BOOLEAN:
        if (c->pos >= c->size) return truncated(), NULL;
        return PyBool_FromLong(c->data[c->pos++] == 1);
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_UNION: {
        if (size < 2 || !PyTuple_Check(PyTuple_GET_ITEM(node, 1))) return bad_program();
        PyObject *branches = PyTuple_GET_ITEM(node, 1);
        if (read_long(c, &v) < 0) return NULL;
        if (v < 0 || v >= PyTuple_GET_SIZE(branches)) {
            PyErr_Format(PyExc_ValueError, "union index %lld", (long long)v);
            return NULL;
        }
        return read_value(c, PyTuple_GET_ITEM(branches, (Py_ssize_t)v), depth + 1);
    }
    case OP_ARRAY:
        if (size < 2) return bad_program();
        return read_array(c, PyTuple_GET_ITEM(node, 1), depth);
    case OP_RECORD:
        if (size < 3 || !PyTuple_Check(PyTuple_GET_ITEM(node, 1)) || !PyTuple_Check(PyTuple_GET_ITEM(node, 2))
            || PyTuple_GET_SIZE(PyTuple_GET_ITEM(node, 1)) != PyTuple_GET_SIZE(PyTuple_GET_ITEM(node, 2)))
            return bad_program();
        return read_record(c, PyTuple_GET_ITEM(node, 1), PyTuple_GET_ITEM(node, 2), depth);
    default:
        if (op == -1 && PyErr_Occurred()) return NULL;
        return bad_program();
    }
}

static PyObject *avroc_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(program, buf, pos)");
        return NULL;
    }
    PyObject *program = args[0];
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[2]);
    PyObject *out = NULL;
    if (pos == -1 && PyErr_Occurred()) goto done;
    if (pos < 0 || pos > view.len) {
        truncated();
        goto done;
    }
    Cursor cursor = {(const unsigned char *)view.buf, view.len, pos};
    PyObject *value = read_value(&cursor, program, 0);
    if (value != NULL) {
        out = Py_BuildValue("(Nn)", value, cursor.pos);
    }
done:
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))avroc_read, METH_FASTCALL,
     "read(program, buf, pos) -> (value, next position): one Avro value of ``program`` from ``buf``."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_avroc", "The Avro record reader of schemas.avro_fast, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__avroc(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "STRING", OP_STRING) || PyModule_AddIntConstant(m, "BYTES", OP_BYTES)
        || PyModule_AddIntConstant(m, "LONG", OP_LONG) || PyModule_AddIntConstant(m, "MICROS", OP_MICROS)
        || PyModule_AddIntConstant(m, "DOUBLE", OP_DOUBLE) || PyModule_AddIntConstant(m, "FLOAT", OP_FLOAT)
        || PyModule_AddIntConstant(m, "BOOLEAN", OP_BOOLEAN) || PyModule_AddIntConstant(m, "NULL", OP_NULL)
        || PyModule_AddIntConstant(m, "UNION", OP_UNION) || PyModule_AddIntConstant(m, "ARRAY", OP_ARRAY)
        || PyModule_AddIntConstant(m, "RECORD", OP_RECORD)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
