// taper's GELU (the tanh approximation, as candle's `gelu`), forward and
// backward, element-wise: y = 0.5 x (1 + tanh(k (x + 0.044715 x^3))) with
// k = sqrt(2 / pi), and dx = g * dy/dx in one pass (candle's backward
// composes about fifteen kernels). Storage in f32, bf16 or f16; the
// arithmetic in f32.
#include "common.cuh"

#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f

template <typename T>
__device__ void gelu_fwd(const T *x, T *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = to_f32(x[i]);
        const float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        y[i] = from_f32<T>(0.5f * v * (1.0f + t));
    }
}

template <typename T>
__device__ void gelu_bwd(const T *x, const T *g, T *dx, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = to_f32(x[i]);
        const float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        const float d = 0.5f * (1.0f + t) +
                        0.5f * v * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] = from_f32<T>(to_f32(g[i]) * d);
    }
}

#define GELU(NAME, T)                                                                          \
    extern "C" __global__ void gelu_fwd_##NAME(const T *x, T *y, int64_t n) {                  \
        gelu_fwd<T>(x, y, n);                                                                  \
    }                                                                                          \
    extern "C" __global__ void gelu_bwd_##NAME(const T *x, const T *g, T *dx, int64_t n) {     \
        gelu_bwd<T>(x, g, dx, n);                                                              \
    }

GELU(f32, float)
GELU(bf16, __nv_bfloat16)
GELU(f16, __half)
