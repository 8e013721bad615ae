// RMSNorm of one token per workgroup (grid: 1 x tokens), in the arithmetic of the CPU engine's
// rms_norm: y_j = g_j * (x_j * (1 / sqrt(mean(x^2) + eps))). Two entry points:
// * norm_f32 writes y as floats ([tokens, out_stride], pad slots untouched);
// * norm_i8 quantizes y per token as attention::quantize_i8 does (x_scale = 127 / max(absmax,
//   eps), codes round half to even, clamped to [-128, 127]) and writes the codes 4 per word
//   ([tokens, out_stride] words, zeros past k) and (x_scale, sum of codes) per token.
// With has_gain == 0 the input passes through unnormalized (quantization only).

struct NormParams {
    // Features per token.
    k: u32,
    // Floats per token in src.
    in_stride: u32,
    // Floats (norm_f32) or words of 4 codes (norm_i8) per token in the output.
    out_stride: u32,
    has_gain: u32,
    eps: f32,
    // 1: token i of the grid reads row step.first + i of src (the logits rows).
    from_first: u32,
    // The quantizer's floor on absmax (tern_pack::quant::ABSMAX_EPS).
    absmax_eps: f32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> gain: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> codes: array<u32>;
@group(0) @binding(4) var<storage, read_write> tokq: array<vec2<u32>>;
@group(0) @binding(5) var<uniform> params: NormParams;
@group(0) @binding(6) var<uniform> step: Step;

const WG: u32 = 256u;
var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_i: array<i32, 256>;

fn sum_f(tid: u32, v: f32) -> f32 {
    red_f[tid] = v;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            red_f[tid] += red_f[tid + w];
        }
        workgroupBarrier();
    }
    let out = red_f[0];
    workgroupBarrier();
    return out;
}

fn max_f(tid: u32, v: f32) -> f32 {
    red_f[tid] = v;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            red_f[tid] = max(red_f[tid], red_f[tid + w]);
        }
        workgroupBarrier();
    }
    let out = red_f[0];
    workgroupBarrier();
    return out;
}

fn sum_i(tid: u32, v: i32) -> i32 {
    red_i[tid] = v;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            red_i[tid] += red_i[tid + w];
        }
        workgroupBarrier();
    }
    return red_i[0];
}

fn row_base(i: u32) -> u32 {
    return select(i, step.first + i, params.from_first != 0u) * params.in_stride;
}

// 1 / rms of the row (1 without a gain).
fn inv_rms(tid: u32, base: u32) -> f32 {
    var s = 0.0;
    for (var j = tid; j < params.k; j += WG) {
        let v = src[base + j];
        s += v * v;
    }
    let total = sum_f(tid, s);
    if (params.has_gain == 0u) {
        return 1.0;
    }
    return 1.0 / sqrt(total / f32(params.k) + params.eps);
}

fn normed(base: u32, j: u32, inv: f32) -> f32 {
    let v = src[base + j];
    if (params.has_gain == 0u) {
        return v;
    }
    return gain[j] * (v * inv);
}

@compute @workgroup_size(256)
fn norm_f32(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let i = wg.y;
    let base = row_base(i);
    let inv = inv_rms(tid, base);
    for (var j = tid; j < params.k; j += WG) {
        dst[i * params.out_stride + j] = normed(base, j, inv);
    }
}

@compute @workgroup_size(256)
fn norm_i8(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let i = wg.y;
    let base = row_base(i);
    let inv = inv_rms(tid, base);
    var absmax = 0.0;
    for (var j = tid; j < params.k; j += WG) {
        absmax = max(absmax, abs(normed(base, j, inv)));
    }
    absmax = max_f(tid, absmax);
    let x_scale = 127.0 / max(absmax, params.absmax_eps);
    var sum = 0;
    for (var w = tid; w < params.out_stride; w += WG) {
        var word = 0u;
        for (var b = 0u; b < 4u; b++) {
            let j = 4u * w + b;
            if (j < params.k) {
                let c = i32(clamp(round(normed(base, j, inv) * x_scale), -128.0, 127.0));
                sum += c;
                word |= (bitcast<u32>(c) & 0xffu) << (8u * b);
            }
        }
        codes[i * params.out_stride + w] = word;
    }
    sum = sum_i(tid, sum);
    if (tid == 0u) {
        tokq[i] = vec2<u32>(bitcast<u32>(x_scale), bitcast<u32>(sum));
    }
}
