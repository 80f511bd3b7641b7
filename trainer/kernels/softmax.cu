// taper's attention softmax, forward and backward, for rows of the last
// dimension: y = softmax(scale * x + causal mask), and
// dx = scale * y * (g - sum(g * y)). Inputs and outputs in f32, bf16 or
// f16; the arithmetic always in f32 (what PyTorch's autocast does for a
// softmax). One block per row; rows of any length.
//
// The causal mask: a row is query i = row % q_len of a (q_len, cols) score
// matrix whose keys end with the queries (cols >= q_len); key j is masked
// when j > i + cols - q_len. Masked entries give y = 0 (and dx = 0).
#include "common.cuh"

// The number of unmasked keys of `row`.
__device__ __forceinline__ int row_limit(int64_t row, int cols, int q_len, int causal) {
    if (!causal) return cols;
    const int64_t i = row % q_len;
    const int64_t limit = i + (cols - q_len) + 1;
    return limit < 0 ? 0 : (limit > cols ? cols : (int)limit);
}

template <typename T>
__device__ void softmax_fwd(const T *x, T *y, int cols, int q_len, float scale, int causal) {
    __shared__ float shared[32];
    const int64_t row = blockIdx.x;
    const T *xr = x + row * cols;
    T *yr = y + row * cols;
    const int limit = row_limit(row, cols, q_len, causal);
    float m = -INFINITY;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) m = fmaxf(m, to_f32(xr[j]) * scale);
    m = block_max(m, shared);
    float s = 0.0f;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) s += expf(to_f32(xr[j]) * scale - m);
    s = block_sum(s, shared);
    const float inv = 1.0f / s;
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        yr[j] = from_f32<T>(j < limit ? expf(to_f32(xr[j]) * scale - m) * inv : 0.0f);
}

template <typename T>
__device__ void softmax_bwd(const T *y, const T *g, T *dx, int cols, float scale) {
    __shared__ float shared[32];
    const int64_t row = blockIdx.x;
    const T *yr = y + row * cols;
    const T *gr = g + row * cols;
    T *dr = dx + row * cols;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dot += to_f32(yr[j]) * to_f32(gr[j]);
    dot = block_sum(dot, shared);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float yj = to_f32(yr[j]);
        dr[j] = from_f32<T>(scale * yj * (to_f32(gr[j]) - dot));
    }
}

#define SOFTMAX(NAME, T)                                                                       \
    extern "C" __global__ void softmax_fwd_##NAME(const T *x, T *y, int cols, int q_len,       \
                                                  float scale, int causal) {                  \
        softmax_fwd<T>(x, y, cols, q_len, scale, causal);                                      \
    }                                                                                          \
    extern "C" __global__ void softmax_bwd_##NAME(const T *y, const T *g, T *dx, int cols,     \
                                                  float scale) {                               \
        softmax_bwd<T>(y, g, dx, cols, scale);                                                 \
    }

SOFTMAX(f32, float)
SOFTMAX(bf16, __nv_bfloat16)
SOFTMAX(f16, __half)
