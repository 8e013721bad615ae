// Embedding lookup: x[i, j] = table[tokens[i], j] for the n tokens of the step (grid: hidden /
// 256 x n). values.wgsl is prepended.

struct EmbedParams {
    hidden: u32,
    format: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read> tokens: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<uniform> params: EmbedParams;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    if (j >= params.hidden || i >= step.n) {
        return;
    }
    x[i * params.hidden + j] = value_at(tokens[i] * params.hidden + j, params.format);
}
