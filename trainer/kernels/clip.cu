// taper's gradient norm for clipping: one launch per gradient tensor adds its
// sum of squares into a single f32 device scalar, where the composed norm
// runs a square and a sum per tensor and an add between tensors (about
// 3 x 150 launches a step for the reference GPT). Block partial sums are
// combined with atomicAdd, so the last bits of the total depend on the order
// in which blocks finish: the norm is not bit-for-bit reproducible on the
// GPU (the CPU keeps the composed, deterministic sum).
#include <stdint.h>

extern "C" __global__ void sum_squares_f32(const float *x, int64_t n, float *total) {
    float acc = 0.0f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        acc += v * v;
    }
    for (int offset = 16; offset > 0; offset >>= 1)
        acc += __shfl_down_sync(0xffffffffu, acc, offset);
    __shared__ float warps[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warps[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < (int)(blockDim.x >> 5) ? warps[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1)
            acc += __shfl_down_sync(0xffffffffu, acc, offset);
        if (lane == 0) atomicAdd(total, acc);
    }
}
