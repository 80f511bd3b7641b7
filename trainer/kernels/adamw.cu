// taper's fused AdamW: the whole update of one parameter tensor in one
// element-wise pass over f32 parameters, gradients and moments (the
// composed update is about fifteen kernels a tensor, each a full pass).
// Both flavours of optim/adamw.rs, with the same operations in the same
// order:
//   adamw_torch: p *= keep; m, v updated; p -= m / (sqrt(v) / sqrt_bc2 + eps) * step_size
//   adamw_hf:    m, v updated; p -= m / (sqrt(v) / sqrt_bc2 + eps) * step_size; p *= keep
// with keep = 1 - lr * weight_decay, and for adamw_hf sqrt_bc2 = 1 and
// step_size = lr * sqrt(bc2) / bc1 (for adamw_torch, step_size = lr / bc1).
// `clip`, when not null, points to gradient clipping's coefficient on the
// device: the gradient is multiplied by it as it is loaded, which spares
// clipping its own multiply pass over every gradient.
#include <stdint.h>

extern "C" __global__ void adamw_f32(float *p, const float *g, float *m, float *v,
                                     const float *clip, int64_t n,
                                     float beta1, float one_minus_beta1, float beta2,
                                     float one_minus_beta2, float eps, float keep,
                                     float step_size, float sqrt_bc2, int decay_after) {
    const float coef = clip ? *clip : 1.0f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float grad = clip ? g[i] * coef : g[i];
        const float mi = m[i] * beta1 + grad * one_minus_beta1;
        const float vi = v[i] * beta2 + (grad * grad) * one_minus_beta2;
        float theta = p[i];
        if (!decay_after) theta = theta * keep;
        const float denom = sqrtf(vi) / sqrt_bc2 + eps;
        theta = theta - (mi / denom) * step_size;
        if (decay_after) theta = theta * keep;
        p[i] = theta;
        m[i] = mi;
        v[i] = vi;
    }
}
