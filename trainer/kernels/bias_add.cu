// taper's bias add: y[r, c] = x[r, c] + b[c] over contiguous rows of
// `cols`, in f32 arithmetic. candle's `broadcast_add` computes every
// element's strided index through its generic broadcast path, which made the
// linear layers' bias adds about a fifth of a bf16 step's GPU time
// (notes/gpu-performance.md, optimisation 10).
#include "common.cuh"

// A two-dimensional grid: blockIdx.y strides over rows, x over columns, so
// that no element pays for a 64-bit modulo to find its column (the first
// version, one index over all elements, ran at a third of the bandwidth).
template <typename T>
__device__ void bias_add(const T *x, const T *b, T *y, int64_t rows, int cols) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const T *xr = x + r * cols;
        T *yr = y + r * cols;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
            yr[c] = from_f32<T>(to_f32(xr[c]) + to_f32(b[c]));
    }
}

// The same for rows of a multiple of 4 elements (and 4-aligned starts): a
// thread adds four at once, reading and writing each side in one vector
// access (scalar bf16 accesses held the first versions to about 1.1 TB/s).
template <typename T>
__device__ void bias_add4(const T *x, const T *b, T *y, int64_t rows, int cols) {
    typedef typename four<T>::type V;
    const int quads = cols / 4;
    const V *bv = reinterpret_cast<const V *>(b);
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const V *xr = reinterpret_cast<const V *>(x + r * cols);
        V *yr = reinterpret_cast<V *>(y + r * cols);
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < quads; c += gridDim.x * blockDim.x) {
            float xs[4], bs[4];
            const V xq = xr[c], bq = bv[c];
            unpack4<T>(xq, xs);
            unpack4<T>(bq, bs);
#pragma unroll
            for (int k = 0; k < 4; k++) xs[k] += bs[k];
            V out;
            pack4<T>(xs, out);
            yr[c] = out;
        }
    }
}

#define BIAS_ADD(NAME, T)                                                                      \
    extern "C" __global__ void bias_add_##NAME(const T *x, const T *b, T *y, int64_t rows,     \
                                                int cols) {                                    \
        bias_add<T>(x, b, y, rows, cols);                                                      \
    }                                                                                          \
    extern "C" __global__ void bias_add4_##NAME(const T *x, const T *b, T *y, int64_t rows,    \
                                                 int cols) {                                   \
        bias_add4<T>(x, b, y, rows, cols);                                                     \
    }

BIAS_ADD(f32, float)
BIAS_ADD(bf16, __nv_bfloat16)
BIAS_ADD(f16, __half)
