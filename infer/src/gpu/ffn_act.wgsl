// The gated FFN's activation in place: g = act(g) * u, act being SiLU (g / (1 + e^-g)) or
// BitNet's squared ReLU, as model.rs computes them. Grid: intermediate / 256 x n.

struct ActParams {
    inter: u32,
    // Floats per token in g and u.
    stride: u32,
    // 0: SiLU, 1: squared ReLU.
    act: u32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<uniform> params: ActParams;
@group(0) @binding(3) var<uniform> step: Step;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    if (j >= params.inter || i >= step.n) {
        return;
    }
    let o = i * params.stride + j;
    let a = g[o];
    let b = u[o];
    if (params.act == 0u) {
        g[o] = a / (1.0 + exp(-a)) * b;
    } else {
        let r = max(a, 0.0);
        g[o] = r * r * b;
    }
}
