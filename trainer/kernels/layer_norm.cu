// taper's layer norm over the last dimension, forward and backward:
// y = (x - mean) * rstd * w + b with rstd = 1 / sqrt(var + eps), the
// statistics in f32 whatever the storage (f32, bf16 or f16). candle's
// composed layer norm is about ten kernels each way, in f32 with casts
// around them (notes/gpu-performance.md, optimisation 8).
//
// The backward recomputes mean and rstd from x (two row reductions, on a
// row the kernel reads anyway) instead of saving them: a candle CustomOp
// returns one tensor. Per row, with xh = (x - mean) * rstd and gw = g * w:
//   dx = rstd * (gw - mean(gw) - xh * mean(gw * xh)),
// and over rows dw = sum(g * xh), db = sum(g). The row sums for dw and db
// go to shared memory per block (each thread owns its columns, so no
// atomics), then one partial row a block to global memory, and a second
// kernel adds the blocks' partials: a fixed order, so the result does not
// vary from run to run.
#include "common.cuh"

// mean and rstd of a row, in f32, over the block.
template <typename T>
__device__ __forceinline__ void row_stats(const T *xr, int cols, float eps, float *shared,
                                          float &mean, float &rstd) {
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += to_f32(xr[j]);
    mean = block_sum(s, shared) / cols;
    float v = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float d = to_f32(xr[j]) - mean;
        v += d * d;
    }
    rstd = rsqrtf(block_sum(v, shared) / cols + eps);
}

// One block a row.
template <typename T>
__device__ void layer_norm_fwd(const T *x, const T *w, const T *b, T *y, int cols, float eps) {
    __shared__ float shared[32];
    const int64_t row = blockIdx.x;
    const T *xr = x + row * cols;
    T *yr = y + row * cols;
    float mean, rstd;
    row_stats(xr, cols, eps, shared, mean, rstd);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        yr[j] = from_f32<T>((to_f32(xr[j]) - mean) * rstd * to_f32(w[j]) + to_f32(b[j]));
}

// Rows blockIdx.x, blockIdx.x + gridDim.x, ...; `partial` holds 2 * cols
// f32 a block (dw, then db). Dynamic shared memory: 2 * cols floats.
template <typename T>
__device__ void layer_norm_bwd(const T *x, const T *w, const T *g, T *dx, float *partial,
                               int rows, int cols, float eps) {
    __shared__ float shared[32];
    extern __shared__ float sums[];
    float *sdw = sums, *sdb = sums + cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sdw[j] = sdb[j] = 0.0f;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *xr = x + row * cols;
        const T *gr = g + row * cols;
        T *dr = dx + row * cols;
        float mean, rstd;
        row_stats(xr, cols, eps, shared, mean, rstd);
        float s1 = 0.0f, s2 = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float gj = to_f32(gr[j]);
            const float xh = (to_f32(xr[j]) - mean) * rstd;
            const float gw = gj * to_f32(w[j]);
            s1 += gw;
            s2 += gw * xh;
            sdw[j] += gj * xh;
            sdb[j] += gj;
        }
        s1 = block_sum(s1, shared) / cols;
        s2 = block_sum(s2, shared) / cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xh = (to_f32(xr[j]) - mean) * rstd;
            const float gw = to_f32(gr[j]) * to_f32(w[j]);
            dr[j] = from_f32<T>(rstd * (gw - s1 - xh * s2));
        }
    }
    float *p = partial + (int64_t)blockIdx.x * 2 * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        p[j] = sdw[j];
        p[cols + j] = sdb[j];
    }
}

// One thread a column: out[0..cols) = dw, out[cols..2 cols) = db, the sums
// of `blocks` partial rows.
template <typename T>
__device__ void layer_norm_bwd_params(const float *partial, T *out, int blocks, int cols) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float dw = 0.0f, db = 0.0f;
#pragma unroll 8
    for (int k = 0; k < blocks; ++k) {
        dw += partial[(int64_t)k * 2 * cols + j];
        db += partial[(int64_t)k * 2 * cols + cols + j];
    }
    out[j] = from_f32<T>(dw);
    out[cols + j] = from_f32<T>(db);
}

#define LAYER_NORM(NAME, T)                                                                    \
    extern "C" __global__ void layer_norm_fwd_##NAME(const T *x, const T *w, const T *b, T *y, \
                                                     int cols, float eps) {                    \
        layer_norm_fwd<T>(x, w, b, y, cols, eps);                                              \
    }                                                                                          \
    extern "C" __global__ void layer_norm_bwd_##NAME(const T *x, const T *w, const T *g,       \
                                                     T *dx, float *partial, int rows,          \
                                                     int cols, float eps) {                    \
        layer_norm_bwd<T>(x, w, g, dx, partial, rows, cols, eps);                              \
    }                                                                                          \
    extern "C" __global__ void layer_norm_bwd_params_##NAME(const float *partial, T *out,      \
                                                            int blocks, int cols) {            \
        layer_norm_bwd_params<T>(partial, out, blocks, cols);                                  \
    }

LAYER_NORM(f32, float)
LAYER_NORM(bf16, __nv_bfloat16)
LAYER_NORM(f16, __half)
