// taper's cross-entropy over rows of logits: loss[r] = logsumexp(x[r]) -
// x[r][label[r]] (0 where the label is negative: ignored), and its
// backward dx[r] = g[r] * (softmax(x[r]) - onehot(label[r])). Logits in
// f32, bf16 or f16; the arithmetic and the losses in f32. One block per row.
#include "common.cuh"

// The row's maximum and the sum of exp(x - max), over the block.
template <typename T>
__device__ __forceinline__ void row_stats(const T *xr, int cols, float *shared, float &m, float &s) {
    m = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, to_f32(xr[j]));
    m = block_max(m, shared);
    s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += expf(to_f32(xr[j]) - m);
    s = block_sum(s, shared);
}

template <typename T>
__device__ void ce_fwd(const T *x, const int64_t *labels, float *loss, int cols) {
    __shared__ float shared[32];
    const int64_t row = blockIdx.x;
    const int64_t label = labels[row];
    if (label < 0 || label >= cols) {
        if (threadIdx.x == 0) loss[row] = 0.0f;
        return;
    }
    const T *xr = x + row * cols;
    float m, s;
    row_stats(xr, cols, shared, m, s);
    if (threadIdx.x == 0) loss[row] = m + logf(s) - to_f32(xr[label]);
}

template <typename T>
__device__ void ce_bwd(const T *x, const int64_t *labels, const float *g, T *dx, int cols) {
    __shared__ float shared[32];
    const int64_t row = blockIdx.x;
    const int64_t label = labels[row];
    T *dr = dx + row * cols;
    if (label < 0 || label >= cols) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) dr[j] = from_f32<T>(0.0f);
        return;
    }
    const T *xr = x + row * cols;
    float m, s;
    row_stats(xr, cols, shared, m, s);
    const float gr = g[row], inv = 1.0f / s;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float p = expf(to_f32(xr[j]) - m) * inv;
        dr[j] = from_f32<T>(gr * (p - (j == label ? 1.0f : 0.0f)));
    }
}

#define CROSS_ENTROPY(NAME, T)                                                                 \
    extern "C" __global__ void cross_entropy_fwd_##NAME(const T *x, const int64_t *labels,    \
                                                        float *loss, int cols) {              \
        ce_fwd<T>(x, labels, loss, cols);                                                      \
    }                                                                                          \
    extern "C" __global__ void cross_entropy_bwd_##NAME(const T *x, const int64_t *labels,    \
                                                        const float *g, T *dx, int cols) {    \
        ce_bwd<T>(x, labels, g, dx, cols);                                                     \
    }

CROSS_ENTROPY(f32, float)
CROSS_ENTROPY(bf16, __nv_bfloat16)
CROSS_ENTROPY(f16, __half)
