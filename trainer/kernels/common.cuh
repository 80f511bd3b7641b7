// What taper's kernels share: conversions between the storage types (f32,
// bf16, f16) and f32, four of them as one vector word, and reductions over
// a block.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }

// Four elements as one vector word: float4 for f32, uint2 (8 bytes) for
// the halves, whose bits are moved in registers (a struct of four halves
// would be loaded field by field).
template <typename T> struct four { typedef uint2 type; };
template <> struct four<float> { typedef float4 type; };

__device__ __forceinline__ void unpack(const float4 &x, float *out) {
    out[0] = x.x; out[1] = x.y; out[2] = x.z; out[3] = x.w;
}
template <typename T> __device__ __forceinline__ void unpack_halves(const uint2 &x, float *out) {
    T h[4];
    memcpy(h, &x, sizeof(x));
#pragma unroll
    for (int k = 0; k < 4; k++) out[k] = to_f32(h[k]);
}
__device__ __forceinline__ void pack(const float *in, float4 &x) {
    x.x = in[0]; x.y = in[1]; x.z = in[2]; x.w = in[3];
}
template <typename T> __device__ __forceinline__ void pack_halves(const float *in, uint2 &x) {
    T h[4];
#pragma unroll
    for (int k = 0; k < 4; k++) h[k] = from_f32<T>(in[k]);
    memcpy(&x, h, sizeof(x));
}
template <typename S> __device__ __forceinline__ void unpack4(const typename four<S>::type &x, float *out) {
    if constexpr (sizeof(S) == 4) unpack(x, out); else unpack_halves<S>(x, out);
}
template <typename D> __device__ __forceinline__ void pack4(const float *in, typename four<D>::type &x) {
    if constexpr (sizeof(D) == 4) pack(in, x); else pack_halves<D>(in, x);
}

// Reductions over the block; `shared` holds one value per warp (32 at most).
__device__ __forceinline__ float block_max(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = (blockDim.x + 31) / 32;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

__device__ __forceinline__ float block_sum(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = (blockDim.x + 31) / 32;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

