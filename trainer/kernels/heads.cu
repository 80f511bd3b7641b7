// Moving attention heads between the projection's layout and the heads'
// layout, as raw rows of bytes (no dtype: each head's `head_dim` elements
// are contiguous on both sides, so a head row moves as `units` words of
// 2, 4, 8 or 16 bytes, whichever divides its size).
//
//   split: src (batch, t, groups, heads, row) -> dst (groups, batch, heads, t, row)
//   merge: srcs[g] (batch, heads, t, row), g < groups -> dst (batch, t, groups, heads, row)
//
// Why: candle does these permutations with its generic strided copy, which
// decodes five strided dimensions per element and ran at about a tenth of
// the memory bandwidth (5.3 ms of a 23 ms bf16 step of the reference GPT;
// notes/gpu-performance.md, optimisation 11). Here consecutive threads move
// consecutive words of a row, so both sides are read and written in whole
// lines. Indices are 32-bit: the launch refuses more than 2^32 words.
#include <stdint.h>

template <typename U>
__device__ void split_heads(const U *src, U *dst, uint32_t n, uint32_t batch, uint32_t t,
                            uint32_t groups, uint32_t heads, uint32_t units) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        uint32_t rest = i / units;
        const uint32_t u = i - rest * units;
        const uint32_t ti = rest % t;
        rest /= t;
        const uint32_t h = rest % heads;
        rest /= heads;
        const uint32_t b = rest % batch;
        const uint32_t g = rest / batch;
        const uint64_t from = ((((uint64_t)b * t + ti) * groups + g) * heads + h) * units + u;
        dst[i] = src[from];
    }
}

template <typename U>
__device__ void merge_heads(const U *s0, const U *s1, const U *s2, U *dst, uint32_t n,
                            uint32_t t, uint32_t groups, uint32_t heads, uint32_t units) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        uint32_t rest = i / units;
        const uint32_t u = i - rest * units;
        const uint32_t h = rest % heads;
        rest /= heads;
        const uint32_t g = rest % groups;
        rest /= groups;
        const uint32_t ti = rest % t;
        const uint32_t b = rest / t;
        const U *src = g == 0 ? s0 : (g == 1 ? s1 : s2);
        dst[i] = src[(((uint64_t)b * heads + h) * t + ti) * units + u];
    }
}

#define HEADS(NAME, U)                                                                         \
    extern "C" __global__ void split_heads_##NAME(const U *src, U *dst, uint32_t n,            \
                                                  uint32_t batch, uint32_t t, uint32_t groups, \
                                                  uint32_t heads, uint32_t units) {            \
        split_heads<U>(src, dst, n, batch, t, groups, heads, units);                           \
    }                                                                                          \
    extern "C" __global__ void merge_heads_##NAME(const U *s0, const U *s1, const U *s2,       \
                                                  U *dst, uint32_t n, uint32_t t,              \
                                                  uint32_t groups, uint32_t heads,             \
                                                  uint32_t units) {                            \
        merge_heads<U>(s0, s1, s2, dst, n, t, groups, heads, units);                           \
    }

HEADS(w2, uint16_t)
HEADS(w4, uint32_t)
HEADS(w8, uint2)
HEADS(w16, uint4)
