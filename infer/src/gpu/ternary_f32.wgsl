// Packed ternary x f32 activations (TriLM): out[i, r] = (sum_j t[r, j] * x[i, j]) / s(r).
// Scalar twin: tern_pack::dot::dot_f32 (then the division by the row's scale, as
// crate::linear::TernaryLinear does). common.wgsl is prepended.

@group(0) @binding(0) var<storage, read> weights: array<u32>;
// One divisor per row shard (W = t / s).
@group(0) @binding(1) var<storage, read> scales: array<f32>;
// [n, row_words * TRITS] vec4s: token i's activations in slot order, zero past k.
@group(0) @binding(2) var<storage, read> xs: array<vec4<f32>>;
// [n, rows] f32.
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;
@group(0) @binding(5) var<uniform> step: Step;
// One value per row, added when params.has_bias is 1 (else any small buffer).
@group(0) @binding(6) var<storage, read> bias: array<f32>;

// Per token of the tile, one partial sum per thread.
var<workgroup> partial: array<f32, TILE * WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let lane = tid % LANES;
    let row = (wg.y * params.groups_x + wg.x) * ROWS_PER_WG + tid / LANES;
    let first = wg.z * TILE;
    let nt = min(TILE, batch_tokens() - first);
    // vec4s per token.
    let stride = params.x_stride;

    var acc: array<vec4<f32>, TILE>;
    if (row < params.rows) {
        let base = row * params.row_words;
        // Lane l reads words l, l + 32, l + 64, ... of the row: the 32 lanes of a row read 128
        // contiguous bytes per step. Each word is decoded once and serves all tokens of the tile.
        for (var w = lane; w < params.row_words; w += LANES) {
            var s = planes_of(weights[base + w]);
            let at = word_slots(w);
            for (var p = 0u; p < TRITS; p++) {
                let d = next_plane(&s, p);
                let dv = vec4<u32>(d, d >> 8u, d >> 16u, d >> 24u) & vec4<u32>(0xffu);
                // Adds and subtracts only (digit 2: +x, 0: -x, 1: nothing), as on the CPU, so an
                // infinite activation meets a zero trit without making a NaN.
                let nonzero = dv != vec4<u32>(1u);
                let positive = dv == vec4<u32>(2u);
                let xo = first * stride + at.x + p * at.y;
                for (var i = 0u; i < TILE; i++) {
                    if (i < nt) {
                        let x = xs[xo + i * stride];
                        acc[i] += select(vec4<f32>(0.0), select(-x, x, positive), nonzero);
                    }
                }
            }
        }
    }

    for (var i = 0u; i < TILE; i++) {
        partial[i * WG + tid] = (acc[i].x + acc[i].y) + (acc[i].z + acc[i].w);
    }
    workgroupBarrier();
    // Tree over the 32 lanes of each row (contiguous in tid).
    for (var width = LANES / 2u; width > 0u; width >>= 1u) {
        if (lane < width) {
            for (var i = 0u; i < TILE; i++) {
                partial[i * WG + tid] += partial[i * WG + tid + width];
            }
        }
        workgroupBarrier();
    }

    if (lane == 0u && row < params.rows) {
        let s = scales[row / params.rows_per_scale];
        for (var i = 0u; i < nt; i++) {
            var v = partial[i * WG + tid] / s;
            if (params.has_bias != 0u) {
                v += bias[row];
            }
            let o = (first + i) * params.out_stride + row;
            if (params.accumulate != 0u) {
                v = out[o] + v;
            }
            out[o] = v;
        }
    }
}
