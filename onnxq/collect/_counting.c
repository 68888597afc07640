/*
 * Histogram counting kernel for onnxq.collect.stats (optional: stats falls back to numpy without it).
 *
 * count(x, counts, num_bins, scale_pos, scale_neg, signed) -> number of values not counted
 *
 *   x       contiguous float32 ('f') or float64 ('d') buffer
 *   counts  writable contiguous int64 buffer laid out [LANES][halves][num_bins], halves = 2 if signed
 *           else 1; element k is counted in lane k % LANES (runs of equal values, such as the exact zeros
 *           of ReLU outputs, would otherwise serialise their increments on one counter)
 *   |x| mode (signed == 0): bin floor(|v| * scale_pos)
 *   signed mode: v >= 0 (and -0.0) to bin floor(v * scale_pos) of the first half, v < 0 to bin
 *           floor(-v * scale_neg) of the second half
 *
 * The scales are powers of two chosen by the caller so that every finite value lands below num_bins;
 * the products are computed in the data's own precision, so they are exact (as in the numpy path) and
 * truncation equals floor for non-negative values. A product that is not below num_bins (NaN, Inf, or a
 * caller's mistake) is skipped and counted in the return value: the kernel never writes out of bounds.
 * Plain C, no numpy headers: the buffer protocol is all it needs. The GIL is released while counting.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define LANES 4

/* The bin product of value v, and its half: |x| mode, or signed with the negatives n bins further. */
#define ABS_PRODUCT(T, ABS, v, a, half) (a = ABS(v) * sp, half = 0)
/* Branch-free (an indexed load, not a jump): with random signs a branch here mispredicts half the time. */
#define SIGNED_PRODUCT(T, ABS, v, a, half) \
    do {                                   \
        const int neg = (v) < 0;           \
        a = ABS(v) * scales[neg];          \
        half = neg * n;                    \
    } while (0)

/* Four lanes unrolled: lane k % 4 without a division, and four independent increment chains. */
#define COUNT_LOOP(T, ABS, PRODUCT)                                                              \
    do {                                                                                         \
        const T *x = (const T *)xb.buf;                                                          \
        const T fn = (T)n, sp = (T)scale_pos, scales[2] = {(T)scale_pos, (T)scale_neg};          \
        int64_t *lanes[LANES];                                                                   \
        for (int l = 0; l < LANES; l++) lanes[l] = counts + l * stride;                          \
        Py_ssize_t k = 0;                                                                        \
        for (; k + LANES <= m; k += LANES) {                                                     \
            for (int l = 0; l < LANES; l++) {                                                    \
                T a;                                                                             \
                Py_ssize_t half;                                                                 \
                PRODUCT(T, ABS, x[k + l], a, half);                                              \
                if (a < fn) {                                                                    \
                    lanes[l][half + (Py_ssize_t)a]++;                                            \
                } else {                                                                         \
                    skipped++;                                                                   \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        for (int l = 0; k < m; k++, l++) {                                                       \
            T a;                                                                                 \
            Py_ssize_t half;                                                                     \
            PRODUCT(T, ABS, x[k], a, half);                                                      \
            if (a < fn) {                                                                        \
                lanes[l][half + (Py_ssize_t)a]++;                                                \
            } else {                                                                             \
                skipped++;                                                                       \
            }                                                                                    \
        }                                                                                        \
    } while (0)

static PyObject *count(PyObject *self, PyObject *args) {
    PyObject *x_obj, *c_obj;
    Py_ssize_t n;
    double scale_pos, scale_neg;
    int is_signed;
    if (!PyArg_ParseTuple(args, "OOnddp", &x_obj, &c_obj, &n, &scale_pos, &scale_neg, &is_signed)) {
        return NULL;
    }
    Py_buffer xb, cb;
    if (PyObject_GetBuffer(x_obj, &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(c_obj, &cb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    const Py_ssize_t halves = is_signed ? 2 : 1;
    const Py_ssize_t stride = halves * n;
    const char *xf = xb.format ? xb.format : "B";
    const char *cf = cb.format ? cb.format : "B";
    int is_f32 = xb.itemsize == 4 && strcmp(xf, "f") == 0;
    int is_f64 = xb.itemsize == 8 && strcmp(xf, "d") == 0;
    int counts_ok = cb.itemsize == 8 && (strcmp(cf, "q") == 0 || strcmp(cf, "l") == 0) &&
                    n > 0 && cb.len / 8 == LANES * stride;
    if (!(is_f32 || is_f64) || !counts_ok) {
        PyBuffer_Release(&xb);
        PyBuffer_Release(&cb);
        PyErr_SetString(PyExc_ValueError,
                        "count() needs float32/float64 values and int64 counts of LANES*halves*num_bins");
        return NULL;
    }
    const Py_ssize_t m = xb.len / xb.itemsize;
    int64_t *counts = (int64_t *)cb.buf;
    Py_ssize_t skipped = 0;
    Py_BEGIN_ALLOW_THREADS
    if (is_f32 && !is_signed) {
        COUNT_LOOP(float, fabsf, ABS_PRODUCT);
    } else if (is_f32) {
        COUNT_LOOP(float, fabsf, SIGNED_PRODUCT);
    } else if (!is_signed) {
        COUNT_LOOP(double, fabs, ABS_PRODUCT);
    } else {
        COUNT_LOOP(double, fabs, SIGNED_PRODUCT);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&xb);
    PyBuffer_Release(&cb);
    return PyLong_FromSsize_t(skipped);
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS, "Count values into lane histograms; returns how many were skipped."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counting", NULL, -1, methods};

PyMODINIT_FUNC PyInit__counting(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "LANES", LANES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
