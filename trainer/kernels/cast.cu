// taper's dtype casts between f32 and bf16 or f16, for contiguous tensors:
// four elements a thread, each side read or written in one vector access.
//
// Why: candle's bf16 -> f32 cast stores eight floats a thread one by one
// (a 32-byte stride between neighbouring threads) and leaves seven eighths
// of its threads idle; it ran at about a fifth of the memory bandwidth and
// its 74 calls were 2 ms of a 23 ms bf16 step of the reference GPT
// (notes/gpu-performance.md, optimisation 11).
#include "common.cuh"

// `n` elements; the first `n / 4 * 4` by fours (both pointers 16-byte
// aligned for f32, 8-byte for the halves: cudaMalloc's alignment, checked
// on the host), the rest one by one.
template <typename S, typename D>
__device__ void cast(const S *src, D *dst, int64_t n) {
    typedef typename four<S>::type SV;
    typedef typename four<D>::type DV;
    const int64_t quads = n / 4;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (int64_t i = first; i < quads; i += stride) {
        float v[4];
        const SV in = reinterpret_cast<const SV *>(src)[i];
        unpack4<S>(in, v);
        DV out;
        pack4<D>(v, out);
        reinterpret_cast<DV *>(dst)[i] = out;
    }
    for (int64_t i = quads * 4 + first; i < n; i += stride) dst[i] = from_f32<D>(to_f32(src[i]));
}

#define CAST(NAME, S, D)                                                                       \
    extern "C" __global__ void cast_##NAME(const S *src, D *dst, int64_t n) {                  \
        cast<S, D>(src, dst, n);                                                               \
    }

CAST(bf16_f32, __nv_bfloat16, float)
CAST(f32_bf16, float, __nv_bfloat16)
CAST(f16_f32, __half, float)
CAST(f32_f16, float, __half)
