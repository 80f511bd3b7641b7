// The split of f32 values for taper's 3xTF32 matrix product (ops/matmul.rs):
// x = hi + lo, where hi is x rounded to TF32 (the 10-bit mantissa that the
// tensor cores read; the 13 low bits are zero, so the tensor cores take it
// exactly) and lo = x - hi rounded to TF32 too. a b is then
// hi_a hi_b + hi_a lo_b + lo_a hi_b; the terms left out, lo_a lo_b and
// lo's own rounding, are below 2^-21 of the product.
//
// Non-finite values (and the few finite ones within half a TF32 step of
// f32's largest, which round to infinity) stay whole in hi with lo = 0, so
// an inf or a NaN makes the same outputs non-finite as in f32 (an inf's
// may come out NaN: inf * lo_b + inf * hi_b with opposite signs).
#include <stdint.h>

// x rounded to TF32, half away from zero on the magnitude (PTX's
// cvt.rna.tf32.f32).
__device__ __forceinline__ float round_tf32(float x) {
    return __uint_as_float((__float_as_uint(x) + 0x1000u) & 0xffffe000u);
}

__device__ __forceinline__ void split(float x, float &hi, float &lo) {
    const float h = round_tf32(x);
    if (isfinite(x) && isfinite(h)) {
        hi = h;
        // Rounded here too, so that the tensor cores, which may truncate
        // an f32 input to TF32, read it exactly.
        lo = round_tf32(x - h);
    } else {
        hi = x;
        lo = 0.0f;
    }
}

extern "C" __global__ void split_tf32(const float *x, float *hi, float *lo, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        split(x[i], hi[i], lo[i]);
    }
}

// Four values a thread, one 16-byte access each way: `x` 16-byte aligned,
// `n4` groups of four.
extern "C" __global__ void split_tf32_x4(const float4 *x, float4 *hi, float4 *lo, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 v = x[i];
        float4 h, l;
        split(v.x, h.x, l.x);
        split(v.y, h.y, l.y);
        split(v.z, h.z, l.z);
        split(v.w, h.w, l.w);
        hi[i] = h;
        lo[i] = l;
    }
}
