// Causal grouped-query attention of the step's n queries against the layer's KV cache, one
// workgroup per (head, token): scores of the start + i + 1 visible positions (kept in `scores`),
// softmax, then the weighted sum of values, as attention::block_body computes it (weights
// e_p / sum applied to each value row).

struct AttnParams {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    // Positions per (token, head) row of `scores`.
    capacity: u32,
    q_stride: u32,
    out_stride: u32,
    scale: f32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kcache: array<f32>;
@group(0) @binding(2) var<storage, read> vcache: array<f32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: AttnParams;
@group(0) @binding(6) var<uniform> step: Step;

const WG: u32 = 256u;
const LOWEST: f32 = -3.4028235e38;
var<workgroup> red: array<f32, 256>;

fn reduce(tid: u32, v: f32, take_max: bool) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            if (take_max) {
                red[tid] = max(red[tid], red[tid + w]);
            } else {
                red[tid] += red[tid + w];
            }
        }
        workgroupBarrier();
    }
    let out = red[0];
    workgroupBarrier();
    return out;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let h = wg.x;
    let i = wg.y;
    let hd = params.head_dim;
    let kvd = params.kv_heads * hd;
    let kv_off = (h / (params.heads / params.kv_heads)) * hd;
    let len = step.start + i + 1u;
    let qo = i * params.q_stride + h * hd;
    let so = (i * params.heads + h) * params.capacity;

    var local_max = LOWEST;
    for (var p = tid; p < len; p += WG) {
        var s = 0.0;
        let ko = p * kvd + kv_off;
        for (var d = 0u; d < hd; d++) {
            s += q[qo + d] * kcache[ko + d];
        }
        s *= params.scale;
        scores[so + p] = s;
        local_max = max(local_max, s);
    }
    let m = reduce(tid, local_max, true);
    var local_sum = 0.0;
    for (var p = tid; p < len; p += WG) {
        let e = exp(scores[so + p] - m);
        scores[so + p] = e;
        local_sum += e;
    }
    let total = reduce(tid, local_sum, false);
    // Every thread's exponentials are read by the threads of the next loop.
    storageBarrier();
    for (var d = tid; d < hd; d += WG) {
        var acc = 0.0;
        for (var p = 0u; p < len; p++) {
            acc += (scores[so + p] / total) * vcache[p * kvd + kv_off + d];
        }
        out[i * params.out_stride + h * hd + d] = acc;
    }
}
