// gelu.cuh: GELU as llama.cpp computes it, for geglu.cu and the fused GeGLU matmuls.

// GELU in its tanh form, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), rounded as
// llama.cpp's CPU backend rounds it (ggml's f16 table): at the input rounded to f16, the
// result rounded to f16; 0 below -10 and the identity above 10 (prelude.wgsl: gelu_f16).
__device__ __forceinline__ float gelu_f16(float x) {
    if (x <= -10.0f) {
        return 0.0f;
    }
    if (x >= 10.0f) {
        return x;
    }
    float h = f16_to_f32(f32_to_f16(x));
    float inner = fminf(fmaxf(0.7978846f * h * (1.0f + 0.044715f * h * h), -15.0f), 15.0f);
    return f16_to_f32(f32_to_f16(0.5f * h * (1.0f + tanhf(inner))));
}
