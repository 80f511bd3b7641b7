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
// and over rows dw = sum(g * xh), db = sum(g). The backward takes a row
// a warp (shuffle reductions, no block barriers, many rows in flight);
// each warp adds its rows' dw and db terms to its own sums in shared
// memory (each lane owns its columns, so no atomics), a block adds its
// warps' sums into one partial row in global memory, and a second kernel
// adds the blocks' partials: a fixed order, so the result does not vary
// from run to run.
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

// The backward, one warp a row: a block of rows takes four reductions,
// each two __syncthreads, so a block a row leaves the SMs waiting on
// latency; a warp reduces with shuffles alone, and a block's warps each
// have their own row in flight.
__device__ __forceinline__ float warp_row_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// One row by one warp; lane `l` owns columns l, l + 32, ..., and adds its
// dw and db terms into the warp's own sdw, sdb (no two lanes share a
// column, no two warps a row of sums: no atomics). VALS > 0: the row
// (cols <= 32 * VALS) stays in registers, read once; VALS == 0: any
// length, x and g read again for each pass (from L1/L2).
template <typename T, int VALS>
__device__ __forceinline__ void layer_norm_bwd_row(const T *xr, const T *w, const T *gr, T *dr,
                                                   int cols, float eps, float *sdw, float *sdb) {
    const int lane = threadIdx.x % 32;
    float mean, rstd, s1 = 0.0f, s2 = 0.0f;
    if constexpr (VALS > 0) {
        float xv[VALS], gv[VALS];
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < VALS; ++k) {
            const int j = k * 32 + lane;
            xv[k] = j < cols ? to_f32(xr[j]) : 0.0f;
            gv[k] = j < cols ? to_f32(gr[j]) : 0.0f;
            s += xv[k];
        }
        mean = warp_row_sum(s) / cols;
        float v = 0.0f;
#pragma unroll
        for (int k = 0; k < VALS; ++k) {
            const float d = xv[k] - mean;
            if (k * 32 + lane < cols) v += d * d;
        }
        rstd = rsqrtf(warp_row_sum(v) / cols + eps);
#pragma unroll
        for (int k = 0; k < VALS; ++k) {
            const int j = k * 32 + lane;
            if (j < cols) {
                const float xh = (xv[k] - mean) * rstd;
                const float gw = gv[k] * to_f32(w[j]);
                s1 += gw;
                s2 += gw * xh;
                sdw[j] += gv[k] * xh;
                sdb[j] += gv[k];
                xv[k] = xh;
                gv[k] = gw;
            }
        }
        s1 = warp_row_sum(s1) / cols;
        s2 = warp_row_sum(s2) / cols;
#pragma unroll
        for (int k = 0; k < VALS; ++k) {
            const int j = k * 32 + lane;
            if (j < cols) dr[j] = from_f32<T>(rstd * (gv[k] - s1 - xv[k] * s2));
        }
    } else {
        float s = 0.0f;
        for (int j = lane; j < cols; j += 32) s += to_f32(xr[j]);
        mean = warp_row_sum(s) / cols;
        float v = 0.0f;
        for (int j = lane; j < cols; j += 32) {
            const float d = to_f32(xr[j]) - mean;
            v += d * d;
        }
        rstd = rsqrtf(warp_row_sum(v) / cols + eps);
        for (int j = lane; j < cols; j += 32) {
            const float gj = to_f32(gr[j]);
            const float xh = (to_f32(xr[j]) - mean) * rstd;
            const float gw = gj * to_f32(w[j]);
            s1 += gw;
            s2 += gw * xh;
            sdw[j] += gj * xh;
            sdb[j] += gj;
        }
        s1 = warp_row_sum(s1) / cols;
        s2 = warp_row_sum(s2) / cols;
        for (int j = lane; j < cols; j += 32) {
            const float xh = (to_f32(xr[j]) - mean) * rstd;
            const float gw = to_f32(gr[j]) * to_f32(w[j]);
            dr[j] = from_f32<T>(rstd * (gw - s1 - xh * s2));
        }
    }
}

// Warp `wp` of block `b` (of W warps a block) takes rows b * W + wp, then
// every gridDim.x * W-th: a fixed assignment, so a fixed summation order.
template <typename T, int VALS>
__device__ void layer_norm_bwd_rows(const T *x, const T *w, const T *g, T *dx, int rows, int cols,
                                    float eps, float *sdw, float *sdb) {
    const int warps = blockDim.x / 32;
    const int64_t stride = (int64_t)gridDim.x * warps;
    for (int64_t row = (int64_t)blockIdx.x * warps + threadIdx.x / 32; row < rows; row += stride)
        layer_norm_bwd_row<T, VALS>(x + row * cols, w, g + row * cols, dx + row * cols, cols, eps,
                                    sdw, sdb);
}

// blockDim.x: a multiple of 32, 8 warps at most; __launch_bounds__ keeps
// it to 128 registers a thread, so two blocks of 8 fit an SM. Dynamic
// shared memory: 2 * cols floats a warp (its dw, then its db). `partial`
// holds 2 * cols f32 a block: the sums of its warps, added in warp order.
// The row lengths a lane's registers hold come in four sizes (up to 1024
// columns); longer rows take the general path.
template <typename T>
__device__ void layer_norm_bwd(const T *x, const T *w, const T *g, T *dx, float *partial,
                               int rows, int cols, float eps) {
    extern __shared__ float sums[];
    const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
    float *sdw = sums + (threadIdx.x / 32) * 2 * cols, *sdb = sdw + cols;
    for (int j = lane; j < 2 * cols; j += 32) sdw[j] = 0.0f;
    __syncwarp();
    if (cols <= 256) layer_norm_bwd_rows<T, 8>(x, w, g, dx, rows, cols, eps, sdw, sdb);
    else if (cols <= 512) layer_norm_bwd_rows<T, 16>(x, w, g, dx, rows, cols, eps, sdw, sdb);
    else if (cols <= 768) layer_norm_bwd_rows<T, 24>(x, w, g, dx, rows, cols, eps, sdw, sdb);
    else if (cols <= 1024) layer_norm_bwd_rows<T, 32>(x, w, g, dx, rows, cols, eps, sdw, sdb);
    else layer_norm_bwd_rows<T, 0>(x, w, g, dx, rows, cols, eps, sdw, sdb);
    __syncthreads();
    float *p = partial + (int64_t)blockIdx.x * 2 * cols;
    for (int j = threadIdx.x; j < 2 * cols; j += blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < warps; ++k) s += sums[k * 2 * cols + j];
        p[j] = s;
    }
}

// out[0..cols) = dw, out[cols..2 cols) = db: column c of 2 * cols, the sum
// of `blocks` partial rows. Blocks of (32, PARAMS_SLICES) threads: a warp
// reads 32 adjacent columns of one partial row (coalesced), the slices
// take every PARAMS_SLICES-th partial row (many loads in flight), and
// their sums are added in slice order (deterministic).
#define PARAMS_SLICES 16
template <typename T>
__device__ void layer_norm_bwd_params(const float *partial, T *out, int blocks, int cols) {
    __shared__ float sums[PARAMS_SLICES][32];
    const int n = 2 * cols, c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < n) {
#pragma unroll 4
        for (int k = threadIdx.y; k < blocks; k += PARAMS_SLICES) s += partial[(int64_t)k * n + c];
    }
    sums[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        for (int k = 1; k < PARAMS_SLICES; ++k) s += sums[k][threadIdx.x];
        out[c] = from_f32<T>(s);
    }
}

#define LAYER_NORM(NAME, T)                                                                     \
    extern "C" __global__ void layer_norm_fwd_##NAME(const T *x, const T *w, const T *b, T *y,  \
                                                     int cols, float eps) {                     \
        layer_norm_fwd<T>(x, w, b, y, cols, eps);                                               \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(256, 2)                                        \
        layer_norm_bwd_##NAME(const T *x, const T *w, const T *g, T *dx, float *partial,        \
                              int rows, int cols, float eps) {                                  \
        layer_norm_bwd<T>(x, w, g, dx, partial, rows, cols, eps);                               \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(32 * PARAMS_SLICES)                            \
        layer_norm_bwd_params_##NAME(const float *partial, T *out, int blocks, int cols) {      \
        layer_norm_bwd_params<T>(partial, out, blocks, cols);                                   \
    }

LAYER_NORM(f32, float)
LAYER_NORM(bf16, __nv_bfloat16)
LAYER_NORM(f16, __half)
