// taper's embedding lookup and its backward, for f32 tables (the models
// keep their weights in f32): out[i, :] = w[ids[i], :], and the gradient
// dw[ids[i], :] += g[i, :] with f32 atomics into a zeroed table. candle's
// `index_add` backward took about 2.1 ms a launch on the reference GPT's
// 8192 ids (notes/gpu-performance.md, call 6b); the atomics spread the
// work over every element of g and collide only where ids repeat. The
// order of the adds varies, so repeated ids' sums may differ in the last
// bit from run to run. Ids past the table (>= rows) read zeros and
// train nothing, rather than touch memory outside it.
#include <stdint.h>

extern "C" __global__ void embedding_fwd_f32(const float *w, const uint32_t *ids, float *out,
                                             int64_t n_ids, int cols, uint32_t rows) {
    const int64_t n = n_ids * cols;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = k / cols, j = k % cols;
        const uint32_t id = ids[i];
        out[k] = id < rows ? w[(int64_t)id * cols + j] : 0.0f;
    }
}

extern "C" __global__ void embedding_bwd_f32(const uint32_t *ids, const float *g, float *dw,
                                             int64_t n_ids, int cols, uint32_t rows) {
    const int64_t n = n_ids * cols;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = k / cols, j = k % cols;
        const uint32_t id = ids[i];
        if (id < rows) atomicAdd(&dw[(int64_t)id * cols + j], g[k]);
    }
}
