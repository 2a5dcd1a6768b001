/* Measured prototype only (issue 14): a consume answer's bytes -> per-message produce
 * arguments, without msgspec's intermediate structs and str objects.
 *
 * decode(body, make) -> list | None
 *   make(content: bytes, epoch: int, seq: int, message_type: str, closure: str|None,
 *        retained: bool, compressed: bool) is called per message (e.g. a Message class
 *   with the subject bound); returns None when the answer uses anything this fast path
 *   does not handle (escapes in a string, an unexpected shape), so the caller falls back
 *   to the full decoder. Not a validator: the fallback is what reports malformed answers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct { const char *p, *end; } Cur;

static void ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

static int lit(Cur *c, char ch) {
    ws(c);
    if (c->p < c->end && *c->p == ch) { c->p++; return 1; }
    return 0;
}

/* a string without escapes: [*s, *s + *n) */
static int str_raw(Cur *c, const char **s, Py_ssize_t *n) {
    if (!lit(c, '"')) return 0;
    const char *q = memchr(c->p, '"', c->end - c->p);
    if (!q) return 0;
    if (memchr(c->p, '\\', q - c->p)) return 0; /* escapes: leave to the full decoder */
    *s = c->p; *n = q - c->p; c->p = q + 1;
    return 1;
}

static int num(Cur *c, long long *v) {
    ws(c);
    const char *p = c->p; long long x = 0;
    if (p >= c->end || *p < '0' || *p > '9') return 0;
    while (p < c->end && *p >= '0' && *p <= '9') { x = x * 10 + (*p - '0'); p++; }
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
    c->p = p; *v = x;
    return 1;
}

static int word(Cur *c, const char *w) {
    ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) { c->p += n; return 1; }
    return 0;
}

#define KEY(k) (klen == sizeof(k) - 1 && memcmp(key, k, klen) == 0)

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer buf; PyObject *make;
    if (!PyArg_ParseTuple(args, "y*O", &buf, &make)) return NULL;
    Cur c = {buf.buf, (const char *)buf.buf + buf.len};
    PyObject *out = PyList_New(0), *types = PyDict_New();
    const char *key; Py_ssize_t klen;
    if (!out || !types) goto fail;
    if (!lit(&c, '{')) goto fallback;
    for (;;) {
        if (!str_raw(&c, &key, &klen) || !lit(&c, ':')) goto fallback;
        if (KEY("subject")) {
            const char *s; Py_ssize_t n;
            if (!str_raw(&c, &s, &n)) goto fallback; /* checked by the caller if needed */
        } else if (KEY("messages")) {
            if (!lit(&c, '[')) goto fallback;
            if (!lit(&c, ']')) for (;;) {
                const char *content = NULL, *mt = NULL, *cl = NULL;
                Py_ssize_t ncontent = 0, nmt = 0, ncl = 0;
                long long epoch = -1, seq = -1; int retained = 1, compressed = 0;
                if (!lit(&c, '{')) goto fallback;
                for (;;) {
                    if (!str_raw(&c, &key, &klen) || !lit(&c, ':')) goto fallback;
                    if (KEY("content")) { if (!str_raw(&c, &content, &ncontent)) goto fallback; }
                    else if (KEY("message_type")) { if (!str_raw(&c, &mt, &nmt)) goto fallback; }
                    else if (KEY("closure")) {
                        if (!word(&c, "null") && !str_raw(&c, &cl, &ncl)) goto fallback;
                    }
                    else if (KEY("epoch")) { if (!num(&c, &epoch)) goto fallback; }
                    else if (KEY("seq")) { if (!num(&c, &seq)) goto fallback; }
                    else if (KEY("retained") || KEY("compressed")) {
                        int v;
                        if (word(&c, "true")) v = 1; else if (word(&c, "false")) v = 0;
                        else goto fallback;
                        if (KEY("retained")) retained = v; else compressed = v;
                    } else goto fallback; /* unknown fields: the full decoder skips them */
                    if (lit(&c, ',')) continue;
                    if (lit(&c, '}')) break;
                    goto fallback;
                }
                if (!content || !mt || epoch < 0 || seq < 0) goto fallback;
                /* message_type interned per answer: one str object per distinct type */
                PyObject *tkey = PyBytes_FromStringAndSize(mt, nmt);
                if (!tkey) goto fail;
                PyObject *type = PyDict_GetItemWithError(types, tkey);
                if (!type) {
                    if (PyErr_Occurred()) { Py_DECREF(tkey); goto fail; }
                    type = PyUnicode_DecodeUTF8(mt, nmt, "strict");
                    if (!type || PyDict_SetItem(types, tkey, type) < 0) {
                        Py_XDECREF(type); Py_DECREF(tkey); goto fail;
                    }
                    Py_DECREF(type);
                }
                Py_DECREF(tkey);
                PyObject *items[7];
                items[0] = PyBytes_FromStringAndSize(content, ncontent);
                items[1] = PyLong_FromLongLong(epoch);
                items[2] = PyLong_FromLongLong(seq);
                items[3] = type; Py_INCREF(type);
                items[4] = cl ? PyUnicode_DecodeUTF8(cl, ncl, "strict") : Py_NewRef(Py_None);
                items[5] = PyBool_FromLong(retained);
                items[6] = PyBool_FromLong(compressed);
                PyObject *msg = NULL;
                if (items[0] && items[1] && items[2] && items[4])
                    msg = PyObject_Vectorcall(make, items, 7, NULL);
                for (int i = 0; i < 7; i++) Py_XDECREF(items[i]);
                if (!msg) goto fail;
                int rc = PyList_Append(out, msg);
                Py_DECREF(msg);
                if (rc < 0) goto fail;
                if (lit(&c, ',')) continue;
                if (lit(&c, ']')) break;
                goto fallback;
            }
        } else goto fallback;
        if (lit(&c, ',')) continue;
        if (lit(&c, '}')) break;
        goto fallback;
    }
    ws(&c);
    if (c.p != c.end) goto fallback;
    PyBuffer_Release(&buf); Py_DECREF(types);
    return out;
fallback:
    PyBuffer_Release(&buf); Py_XDECREF(out); Py_XDECREF(types);
    PyErr_Clear();
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&buf); Py_XDECREF(out); Py_XDECREF(types);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, "A consume answer's messages, or None: use the full decoder."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "wire_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit_wire_fastpath(void) { return PyModule_Create(&mod); }
