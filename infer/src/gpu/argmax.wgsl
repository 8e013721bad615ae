// Greedy decoding on the device: the index of the largest logit of the last logits row (the
// first of equals, as sample::argmax and torch.argmax choose), in one workgroup. Only this
// index is read back per token.

struct ArgmaxParams {
    vocab: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> result: array<u32>;
@group(0) @binding(2) var<uniform> params: ArgmaxParams;
@group(0) @binding(3) var<uniform> step: Step;

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) tid: u32) {
    let base = (step.m - 1u) * params.vocab;
    // Each thread's first strict maximum over its indices tid, tid + 256, ... (NaN never wins).
    var v = -3.4028235e38;
    var idx = 0xffffffffu;
    for (var j = tid; j < params.vocab; j += WG) {
        let x = logits[base + j];
        if (x > v || (idx == 0xffffffffu && x == v)) {
            v = x;
            idx = j;
        }
    }
    best_v[tid] = v;
    best_i[tid] = idx;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            let ov = best_v[tid + w];
            let oi = best_i[tid + w];
            if (ov > best_v[tid] || (ov == best_v[tid] && oi < best_i[tid])) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        // No finite maximum (all NaN): token 0, as the host's argmax answers.
        result[0] = select(best_i[0], 0u, best_i[0] == 0xffffffffu);
    }
}
