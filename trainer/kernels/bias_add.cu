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

#define BIAS_ADD(NAME, T)                                                                      \
    extern "C" __global__ void bias_add_##NAME(const T *x, const T *b, T *y, int64_t rows,     \
                                                int cols) {                                    \
        bias_add<T>(x, b, y, rows, cols);                                                      \
    }

BIAS_ADD(f32, float)
BIAS_ADD(bf16, __nv_bfloat16)
BIAS_ADD(f16, __half)
