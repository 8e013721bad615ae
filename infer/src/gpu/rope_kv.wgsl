// RoPE (rotate-half) on q in place and on k, and the append of k and v to the layer's KV cache
// at positions step.start + i. Grid: jobs / 256 x n, a job being one rotated pair of q or k or
// one value of v. cos and sin come from the host ([n, head_dim / 2] each, as the CPU engine
// computes them), so both paths rotate by the same numbers.

struct RopeParams {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    // Floats per token in q, and in k and v.
    q_stride: u32,
    kv_stride: u32,
    // Offset of the sin table in `rope`.
    sin_offset: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> rope: array<f32>;
@group(0) @binding(4) var<storage, read_write> kcache: array<f32>;
@group(0) @binding(5) var<storage, read_write> vcache: array<f32>;
@group(0) @binding(6) var<uniform> params: RopeParams;
@group(0) @binding(7) var<uniform> step: Step;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y;
    var t = gid.x;
    if (i >= step.n) {
        return;
    }
    let hd = params.head_dim;
    let half = hd / 2u;
    let kvd = params.kv_heads * hd;
    let q_pairs = params.heads * half;
    let k_pairs = params.kv_heads * half;
    let at = (step.start + i) * kvd;
    if (t < q_pairs) {
        let d = t % half;
        let c = rope[i * half + d];
        let s = rope[params.sin_offset + i * half + d];
        let idx = i * params.q_stride + (t / half) * hd + d;
        let a = q[idx];
        let b = q[idx + half];
        q[idx] = a * c - b * s;
        q[idx + half] = b * c + a * s;
        return;
    }
    t -= q_pairs;
    if (t < k_pairs) {
        let d = t % half;
        let c = rope[i * half + d];
        let s = rope[params.sin_offset + i * half + d];
        let o = (t / half) * hd + d;
        let a = k[i * params.kv_stride + o];
        let b = k[i * params.kv_stride + o + half];
        kcache[at + o] = a * c - b * s;
        kcache[at + o + half] = b * c + a * s;
        return;
    }
    t -= k_pairs;
    if (t < kvd) {
        vcache[at + t] = v[i * params.kv_stride + t];
    }
}
