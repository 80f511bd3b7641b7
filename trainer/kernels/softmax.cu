// taper's attention softmax, forward and backward, for rows of the last
// dimension: y = softmax(scale * x + causal mask), and
// dx = scale * y * (g - sum(g * y)). Inputs and outputs in f32, bf16 or
// f16; the arithmetic always in f32 (what PyTorch's autocast does for a
// softmax). Rows of up to 1024 take a warp each and are read once into
// registers (the `_rows` kernels: the block-a-row kernels, which read a row
// three times and reduce across warps, ran at a third of the memory
// bandwidth on the reference GPT's 512-long rows; notes/gpu-performance.md,
// optimisation 11); longer rows take a block each.
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

// Rows of at most 32 x SLOTS elements (SLOTS 4, 8, 16 or 32: rows up to
// 1024), one warp a row, the row held in registers (element j of the row
// in lane j % 32, slot j / 32). SLOTS is a template parameter so that a
// row of 512 keeps 16 values a lane, not 32: the backward with 32 slots
// of y and g held too few warps per SM to hide its loads' latency, and ran
// at 0.6 TB/s (call 11).

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

template <typename T, int SLOTS>
__device__ void softmax_fwd_rows(const T *x, T *y, int64_t rows, int cols, int q_len, float scale,
                                 int causal) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int lane = threadIdx.x % 32;
    const T *xr = x + row * cols;
    T *yr = y + row * cols;
    const int limit = row_limit(row, cols, q_len, causal);
    float v[SLOTS];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < SLOTS; k++) {
        const int j = lane + 32 * k;
        v[k] = j < limit ? to_f32(xr[j]) * scale : -INFINITY;
        m = fmaxf(m, v[k]);
    }
    m = warp_max(m);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < SLOTS; k++) {
        v[k] = lane + 32 * k < limit ? expf(v[k] - m) : 0.0f;
        s += v[k];
    }
    s = warp_sum(s);
    const float inv = s > 0.0f ? 1.0f / s : 0.0f;
#pragma unroll
    for (int k = 0; k < SLOTS; k++) {
        const int j = lane + 32 * k;
        if (j < cols) yr[j] = from_f32<T>(v[k] * inv);
    }
}

// The masked keys (y = 0, so dx = 0) are neither read nor computed.
template <typename T, int SLOTS>
__device__ void softmax_bwd_rows(const T *y, const T *g, T *dx, int64_t rows, int cols, int q_len,
                                 float scale, int causal) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int lane = threadIdx.x % 32;
    const T *yr = y + row * cols;
    const T *gr = g + row * cols;
    T *dr = dx + row * cols;
    const int limit = row_limit(row, cols, q_len, causal);
    float yv[SLOTS], gv[SLOTS];
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < SLOTS; k++) {
        const int j = lane + 32 * k;
        yv[k] = j < limit ? to_f32(yr[j]) : 0.0f;
        gv[k] = j < limit ? to_f32(gr[j]) : 0.0f;
        dot += yv[k] * gv[k];
    }
    dot = warp_sum(dot);
#pragma unroll
    for (int k = 0; k < SLOTS; k++) {
        const int j = lane + 32 * k;
        if (j < cols) dr[j] = from_f32<T>(scale * yv[k] * (gv[k] - dot));
    }
}

#define SOFTMAX_ROWS(NAME, T, SLOTS)                                                           \
    extern "C" __global__ void softmax_fwd_rows##SLOTS##_##NAME(                               \
        const T *x, T *y, int64_t rows, int cols, int q_len, float scale, int causal) {        \
        softmax_fwd_rows<T, SLOTS>(x, y, rows, cols, q_len, scale, causal);                    \
    }                                                                                          \
    extern "C" __global__ void softmax_bwd_rows##SLOTS##_##NAME(                               \
        const T *y, const T *g, T *dx, int64_t rows, int cols, int q_len, float scale,         \
        int causal) {                                                                          \
        softmax_bwd_rows<T, SLOTS>(y, g, dx, rows, cols, q_len, scale, causal);                \
    }

#define SOFTMAX_ROWS_ALL(NAME, T)                                                              \
    SOFTMAX_ROWS(NAME, T, 4)                                                                   \
    SOFTMAX_ROWS(NAME, T, 8)                                                                   \
    SOFTMAX_ROWS(NAME, T, 16)                                                                  \
    SOFTMAX_ROWS(NAME, T, 32)

#define SOFTMAX(NAME, T)                                                                       \
    extern "C" __global__ void softmax_fwd_##NAME(const T *x, T *y, int cols, int q_len,       \
                                                  float scale, int causal) {                  \
        softmax_fwd<T>(x, y, cols, q_len, scale, causal);                                      \
    }                                                                                          \
    extern "C" __global__ void softmax_bwd_##NAME(const T *y, const T *g, T *dx, int cols,     \
                                                  float scale) {                               \
        softmax_bwd<T>(y, g, dx, cols, scale);                                                 \
    }                                                                                          \
    SOFTMAX_ROWS_ALL(NAME, T)

SOFTMAX(f32, float)
SOFTMAX(bf16, __nv_bfloat16)
SOFTMAX(f16, __half)
