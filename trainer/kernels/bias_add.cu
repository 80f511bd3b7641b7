// taper's bias add: y[r, c] = x[r, c] + b[c] over contiguous rows of
// `cols`, in f32 arithmetic. candle's `broadcast_add` computes every
// element's strided index through its generic broadcast path, which made the
// linear layers' bias adds about a fifth of a bf16 step's GPU time
// (notes/gpu-performance.md, optimisation 10).
#include "common.cuh"

template <typename T>
__device__ void bias_add(const T *x, const T *b, T *y, int64_t n, int64_t cols) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        y[i] = from_f32<T>(to_f32(x[i]) + to_f32(b[i % cols]));
    }
}

#define BIAS_ADD(NAME, T)                                                                      \
    extern "C" __global__ void bias_add_##NAME(const T *x, const T *b, T *y, int64_t n,        \
                                                int64_t cols) {                                \
        bias_add<T>(x, b, y, n, cols);                                                         \
    }

BIAS_ADD(f32, float)
BIAS_ADD(bf16, __nv_bfloat16)
BIAS_ADD(f16, __half)
