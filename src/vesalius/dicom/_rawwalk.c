/*
 * The plain elements of an explicit VR little endian data set, read in C for the ingest
 * path (vesalius.dicom.rawscan).
 *
 * walk(data, pos, limit, last, out, keys, max_keys, top, meta) converts the elements from *pos*
 * into their DICOM JSON in *out*, as vesalius.dicom.fastjson.value_json does, and returns
 * (pos, last) at the first element it leaves to the Python scanner: anything but a plain
 * value (a sequence, the character set, the pixel data, a binary value, non-ASCII text, a
 * value that would fall back to pydicom...), an element out of order or overrunning *limit*,
 * or the end. It never decides that a file is unusual or refused: the Python scanner reads
 * the element it stopped at, with every rule, and calls it again after. So the Python code
 * stays the one definition of what is read and how; this only reads the common case faster.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The VRs read here; any other is left to Python. */
enum kind {
    K_DEFAULT,    /* AE AS CS DA DT TM UI: ASCII whatever the character set */
    K_CHARSET,    /* LO SH UC */
    K_SINGLE,     /* LT ST UT */
    K_PN,
    K_IS,
    K_DS,
    K_US, K_SS, K_UL, K_SL, K_FL, K_FD, K_UV, K_SV,
    K_AT,
};

typedef struct {
    char name[3];
    int kind;
    int long_length; /* a 12-byte header with a 32-bit length (EXPLICIT_VR_LENGTH_32) */
} VrInfo;

static const VrInfo VRS[] = {
    {"AE", K_DEFAULT, 0}, {"AS", K_DEFAULT, 0}, {"CS", K_DEFAULT, 0}, {"DA", K_DEFAULT, 0},
    {"DT", K_DEFAULT, 0}, {"TM", K_DEFAULT, 0}, {"UI", K_DEFAULT, 0},
    {"LO", K_CHARSET, 0}, {"SH", K_CHARSET, 0}, {"UC", K_CHARSET, 1},
    {"LT", K_SINGLE, 0}, {"ST", K_SINGLE, 0}, {"UT", K_SINGLE, 1},
    {"PN", K_PN, 0}, {"IS", K_IS, 0}, {"DS", K_DS, 0},
    {"US", K_US, 0}, {"SS", K_SS, 0}, {"UL", K_UL, 0}, {"SL", K_SL, 0},
    {"FL", K_FL, 0}, {"FD", K_FD, 0}, {"UV", K_UV, 1}, {"SV", K_SV, 1},
    {"AT", K_AT, 0},
};
#define N_VRS (sizeof(VRS) / sizeof(VRS[0]))

static PyObject *vr_names[N_VRS];
static PyObject *s_vr, *s_value, *s_alphabetic;

#define CHARSET 0x00080005u
#define PIXEL_REPRESENTATION 0x00280103u
#define UNDEFINED 0xFFFFFFFFu

static int vr_index(const unsigned char *raw) {
    for (size_t i = 0; i < N_VRS; i++) {
        if (VRS[i].name[0] == (char)raw[0] && VRS[i].name[1] == (char)raw[1]) {
            return (int)i;
        }
    }
    return -1;
}

static inline uint16_t u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t u64(const unsigned char *p) {
    return (uint64_t)u32(p) | ((uint64_t)u32(p + 4) << 32);
}

/* What str.strip() removes, among ASCII characters. */
static inline int is_space(unsigned char c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
}

static int all_ascii(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] & 0x80) {
            return 0;
        }
    }
    return 1;
}

static int contains(const unsigned char *p, Py_ssize_t n, unsigned char c) {
    return n > 0 && memchr(p, c, (size_t)n) != NULL;
}

/* Text that reads the same in every plain character set, without escape sequences (which
   switch the character set): anything else is left to Python. */
static int plain_text(const unsigned char *p, Py_ssize_t n) {
    return all_ascii(p, n) && !contains(p, n, 0x1B);
}

/* n less the trailing spaces; and less trailing spaces and NULs. */
static Py_ssize_t rstrip_spaces(const unsigned char *p, Py_ssize_t n) {
    while (n > 0 && p[n - 1] == ' ') {
        n--;
    }
    return n;
}

static Py_ssize_t rstrip_space_nul(const unsigned char *p, Py_ssize_t n) {
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == 0)) {
        n--;
    }
    return n;
}

static PyObject *ascii_str(const unsigned char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) {
        memcpy(PyUnicode_DATA(s), p, (size_t)n);
    }
    return s;
}

/* {"vr": vr} or {"vr": vr, "Value": values} (a reference to *values* is taken). */
static PyObject *item(PyObject *vr, PyObject *values) {
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (PyDict_SetItem(d, s_vr, vr) < 0 ||
        (values != NULL && PyDict_SetItem(d, s_value, values) < 0)) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

#define DEFER ((PyObject *)Py_None) /* not converted here: Python reads the element */

typedef PyObject *(*PartFn)(const unsigned char *p, Py_ssize_t n, int kind);

/* The backslash-separated values of p[0:n], each converted by *part*: a list, DEFER (when a
   part is), or NULL with an exception set. */
static PyObject *values(const unsigned char *p, Py_ssize_t n, PartFn part, int kind) {
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '\\') {
            continue;
        }
        PyObject *value = part(p + start, i - start, kind);
        if (value == NULL || value == DEFER) {
            Py_DECREF(list);
            return value;
        }
        int failed = PyList_Append(list, value);
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(list);
            return NULL;
        }
        start = i + 1;
    }
    return list;
}

/* {"vr": vr, "Value": list} from what values() returned. */
static PyObject *with_values(PyObject *vr, PyObject *list) {
    if (list == NULL || list == DEFER) {
        return list;
    }
    PyObject *d = item(vr, list);
    Py_DECREF(list);
    return d;
}

/* One value of fastjson._strings: an empty one, or one with white space at either end, is
   left to Python (pydicom's handling of them differs by VR). */
static PyObject *string_part(const unsigned char *p, Py_ssize_t n, int kind) {
    (void)kind;
    if (n == 0 || is_space(p[0]) || is_space(p[n - 1])) {
        return DEFER;
    }
    return ascii_str(p, n);
}

static PyObject *text_item(PyObject *vr, const unsigned char *p, Py_ssize_t n) {
    if (n == 0) {
        return item(vr, NULL);
    }
    if (contains(p, n, 0)) {
        return DEFER;
    }
    return with_values(vr, values(p, n, string_part, 0));
}

static PyObject *single_item(PyObject *vr, PyObject *value) {
    if (value == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, value); /* steals */
    return with_values(vr, list);
}

/* One name of a PN: several component groups, or padding pydicom may keep, go to Python. */
static PyObject *name_part(const unsigned char *p, Py_ssize_t n, int kind) {
    if (contains(p, n, '=') || contains(p, n, 0)) {
        return DEFER;
    }
    PyObject *name = string_part(p, n, kind);
    if (name == NULL || name == DEFER) {
        return name;
    }
    PyObject *entry = PyDict_New();
    if (entry == NULL || PyDict_SetItem(entry, s_alphabetic, name) < 0) {
        Py_XDECREF(entry);
        entry = NULL;
    }
    Py_DECREF(name);
    return entry;
}

static PyObject *person_names(PyObject *vr, const unsigned char *p, Py_ssize_t n) {
    n = rstrip_space_nul(p, n);
    if (n == 0) {
        return item(vr, NULL);
    }
    return with_values(vr, values(p, n, name_part, 0));
}

/* fastjson's _IS and _DS patterns, as re.fullmatch reads them. */
static int is_integer_text(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) {
        i++;
    }
    if (i == n) {
        return 0;
    }
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }
    return 1;
}

static int is_decimal_text(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i = 0, digits = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) {
        i++;
    }
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        i++, digits++;
    }
    if (i < n && p[i] == '.') {
        i++;
        Py_ssize_t fraction = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            i++, fraction++;
        }
        if (digits == 0 && fraction == 0) {
            return 0;
        }
    } else if (digits == 0) {
        return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) {
            i++;
        }
        Py_ssize_t exponent = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            i++, exponent++;
        }
        if (exponent == 0) {
            return 0;
        }
    }
    return i == n;
}

/* One IS or DS value, stripped of spaces and NULs at both ends: int() or float() of it. */
static PyObject *number(const unsigned char *p, Py_ssize_t n, int kind) {
    while (n > 0 && (p[0] == ' ' || p[0] == 0)) {
        p++, n--;
    }
    n = rstrip_space_nul(p, n);
    if (kind == K_IS ? !is_integer_text(p, n) : !is_decimal_text(p, n)) {
        return DEFER;
    }
    PyObject *text = ascii_str(p, n);
    if (text == NULL) {
        return NULL;
    }
    PyObject *result = kind == K_IS ? PyLong_FromUnicodeObject(text, 10) : PyFloat_FromString(text);
    Py_DECREF(text);
    if (result != NULL && kind == K_DS && !isfinite(PyFloat_AS_DOUBLE(result))) {
        Py_DECREF(result);
        return DEFER;
    }
    return result;
}

static PyObject *decimal_item(PyObject *vr, int kind, const unsigned char *p, Py_ssize_t n) {
    if (!contains(p, n, '\\')) {
        if (rstrip_space_nul(p, n) == 0) { /* only spaces and NULs: no value */
            return item(vr, NULL);
        }
        PyObject *value = number(p, n, kind);
        return value == DEFER ? value : single_item(vr, value);
    }
    return with_values(vr, values(p, n, number, kind));
}

static PyObject *binary_numbers(PyObject *vr, int kind, const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t size = (kind == K_US || kind == K_SS) ? 2 : (kind == K_FD || kind == K_UV || kind == K_SV) ? 8 : 4;
    if (n % size) {
        return DEFER;
    }
    Py_ssize_t count = n / size;
    PyObject *list = PyList_New(count);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *q = p + i * size;
        PyObject *value = NULL;
        switch (kind) {
        case K_US: value = PyLong_FromLong(u16(q)); break;
        case K_SS: value = PyLong_FromLong((int16_t)u16(q)); break;
        case K_UL: value = PyLong_FromUnsignedLong(u32(q)); break;
        case K_SL: value = PyLong_FromLong((int32_t)u32(q)); break;
        case K_UV: value = PyLong_FromUnsignedLongLong(u64(q)); break;
        case K_SV: value = PyLong_FromLongLong((int64_t)u64(q)); break;
        default: { /* K_FL, K_FD */
            double d;
            if (kind == K_FL) {
                uint32_t bits = u32(q);
                float f;
                memcpy(&f, &bits, 4);
                d = f;
            } else {
                uint64_t bits = u64(q);
                memcpy(&d, &bits, 8);
            }
            if (!isfinite(d)) {
                Py_DECREF(list);
                return DEFER;
            }
            value = PyFloat_FromDouble(d);
        }
        }
        if (value == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, value);
    }
    return with_values(vr, list);
}

static PyObject *attribute_tags(PyObject *vr, const unsigned char *p, Py_ssize_t n) {
    if (n % 4) {
        return DEFER;
    }
    PyObject *list = PyList_New(n / 4);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n / 4; i++) {
        char text[9];
        snprintf(text, sizeof text, "%04X%04X", u16(p + 4 * i), u16(p + 4 * i + 2));
        PyObject *s = ascii_str((const unsigned char *)text, 8);
        if (s == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, s);
    }
    return with_values(vr, list);
}

/* The DICOM JSON of one value, DEFER, or NULL with an exception set. */
static PyObject *convert(int index, const unsigned char *p, Py_ssize_t n) {
    int kind = VRS[index].kind;
    PyObject *vr = vr_names[index];
    if (n == 0) {
        return item(vr, NULL);
    }
    switch (kind) {
    case K_DEFAULT:
        if (!all_ascii(p, n)) {
            return DEFER;
        }
        /* a UI drops trailing NULs and spaces, the others trailing spaces */
        n = VRS[index].name[0] == 'U' && VRS[index].name[1] == 'I' ? rstrip_space_nul(p, n)
                                                                   : rstrip_spaces(p, n);
        return text_item(vr, p, n);
    case K_CHARSET:
        if (!plain_text(p, n)) {
            return DEFER;
        }
        return text_item(vr, p, rstrip_spaces(p, n));
    case K_SINGLE:
        if (!plain_text(p, n)) {
            return DEFER;
        }
        n = rstrip_space_nul(p, n);
        if (n == 0) {
            return item(vr, NULL);
        }
        if (contains(p, n, 0)) {
            return DEFER;
        }
        return single_item(vr, ascii_str(p, n));
    case K_PN:
        if (!plain_text(p, n)) {
            return DEFER;
        }
        return person_names(vr, p, n);
    case K_IS:
    case K_DS:
        if (!all_ascii(p, n)) {
            return DEFER;
        }
        return decimal_item(vr, kind, p, n);
    case K_AT:
        return attribute_tags(vr, p, n);
    default:
        return binary_numbers(vr, kind, p, n);
    }
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t pos, limit, max_keys;
    long long last;
    PyObject *out, *keys;
    int top, meta;
    if (!PyArg_ParseTuple(args, "y*nnLO!O!npp", &view, &pos, &limit, &last, &PyDict_Type, &out,
                          &PyDict_Type, &keys, &max_keys, &top, &meta)) {
        return NULL;
    }
    const unsigned char *data = view.buf;
    if (limit > view.len) {
        limit = view.len;
    }
    while (pos >= 0 && pos + 8 <= limit) {
        const unsigned char *head = data + pos;
        uint32_t group = u16(head), tag = (group << 16) | u16(head + 2);
        if ((long long)tag <= last) {
            break;
        }
        if (meta ? group != 2
                 : (group < 8 || group == 0xFFFE || tag == CHARSET || tag == PIXEL_REPRESENTATION ||
                    (top && (tag == 0x7FE00008u || tag == 0x7FE00009u || tag == 0x7FE00010u)))) {
            break;
        }
        int index = vr_index(head + 4);
        if (index < 0) {
            break;
        }
        Py_ssize_t value_at;
        uint32_t length;
        if (VRS[index].long_length) {
            if (pos + 12 > limit) {
                break;
            }
            length = u32(head + 8);
            value_at = pos + 12;
        } else {
            length = u16(head + 6);
            value_at = pos + 8;
        }
        if (length == UNDEFINED || value_at + (Py_ssize_t)length > limit) {
            break;
        }
        PyObject *converted = convert(index, data + value_at, (Py_ssize_t)length);
        if (converted == NULL) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (converted == DEFER) {
            break;
        }
        PyObject *number = PyLong_FromUnsignedLong(tag);
        PyObject *key = number == NULL ? NULL : PyDict_GetItemWithError(keys, number);
        if (key != NULL) {
            Py_INCREF(key);
        } else if (number != NULL && !PyErr_Occurred()) {
            char text[9]; /* PyUnicode_FromFormat has no %X */
            snprintf(text, sizeof text, "%08X", (unsigned int)tag);
            key = ascii_str((const unsigned char *)text, 8);
            if (key != NULL && PyDict_GET_SIZE(keys) < max_keys &&
                PyDict_SetItem(keys, number, key) < 0) {
                Py_CLEAR(key);
            }
        }
        Py_XDECREF(number);
        if (key == NULL || PyDict_SetItem(out, key, converted) < 0) {
            Py_XDECREF(key);
            Py_DECREF(converted);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(converted);
        last = tag;
        pos = value_at + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nL", pos, last);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(data, pos, limit, last, out, keys, max_keys, top, meta) -> (pos, last): convert "
     "the plain explicit VR little endian elements from pos into out (of the file meta group "
     "only with meta); stops at the first one left to the Python scanner."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rawwalk", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rawwalk(void) {
    for (size_t i = 0; i < N_VRS; i++) {
        vr_names[i] = PyUnicode_InternFromString(VRS[i].name);
        if (vr_names[i] == NULL) {
            return NULL;
        }
    }
    s_vr = PyUnicode_InternFromString("vr");
    s_value = PyUnicode_InternFromString("Value");
    s_alphabetic = PyUnicode_InternFromString("Alphabetic");
    if (s_vr == NULL || s_value == NULL || s_alphabetic == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
