// Packed ternary x int8 activations (BitNet): acc[i, r] = sum_j t[r, j] * q[i, j], exact in i32,
// then out[i, r] = f32(acc) / (x_scale[i] * s(r)) as crate::linear::TernaryLinear computes it.
// Scalar twin: tern_pack::dot::dot_i8. common.wgsl is prepended.

@group(0) @binding(0) var<storage, read> weights: array<u32>;
// One divisor per row shard (W = t / s).
@group(0) @binding(1) var<storage, read> scales: array<f32>;
// [n, row_words * TRITS] words: token i's int8 codes in slot order, 4 per word, zero past k.
@group(0) @binding(2) var<storage, read> xq: array<u32>;
// Per token: (bits of the f32 multiplier x_scale, bits of the i32 sum of its codes).
@group(0) @binding(3) var<storage, read> tokens: array<vec2<u32>>;
// [n, rows]: bits of f32 outputs, or of the raw i32 sums when params.dequantize == 0.
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;
@group(0) @binding(6) var<uniform> step: Step;
// One value per row, added when params.has_bias is 1 (else any small buffer).
@group(0) @binding(7) var<storage, read> bias: array<f32>;

var<workgroup> partial: array<i32, TILE * WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let lane = tid % LANES;
    let row = (wg.y * params.groups_x + wg.x) * ROWS_PER_WG + tid / LANES;
    let first = wg.z * TILE;
    let nt = min(TILE, batch_tokens() - first);
    // Words per token.
    let stride = params.x_stride;

    // sum_j d_j * q_j with the digits d = t + 1 in 0..=2, so the packed digits are valid signed
    // bytes for dot4I8Packed (SDot where the device has it, four multiply-adds otherwise); the
    // host supplies sum_j q_j, as the CPU kernels use it: sum t*q = sum d*q - sum q. The sums
    // are exact: |sum d*q| <= 2 * 128 * (k + 160) < 2^31 for k <= MAX_K.
    var acc: array<i32, TILE>;
    if (row < params.rows) {
        let base = row * params.row_words;
        // Lane l reads words l, l + 32, ... of the row (128 contiguous bytes per step for the 32
        // lanes of a row); each word is decoded once and serves all tokens of the tile.
        for (var w = lane; w < params.row_words; w += LANES) {
            var s = planes_of(weights[base + w]);
            let at = word_slots(w);
            for (var p = 0u; p < TRITS; p++) {
                let d = next_plane(&s, p);
                let xo = first * stride + at.x + p * at.y;
                for (var i = 0u; i < TILE; i++) {
                    if (i < nt) {
                        acc[i] += dot4I8Packed(d, xq[xo + i * stride]);
                    }
                }
            }
        }
    }

    for (var i = 0u; i < TILE; i++) {
        partial[i * WG + tid] = acc[i];
    }
    workgroupBarrier();
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
            let tok = tokens[first + i];
            let v = partial[i * WG + tid] - bitcast<i32>(tok.y);
            var bits = bitcast<u32>(v);
            let o = (first + i) * params.out_stride + row;
            if (params.dequantize != 0u) {
                // |v| < 2^24, so f32(v) is exact; the product is correctly rounded, the
                // division within WGSL's 2.5 ulp.
                var y = f32(v) / (bitcast<f32>(tok.x) * s);
                if (params.has_bias != 0u) {
                    y += bias[row];
                }
                if (params.accumulate != 0u) {
                    y = bitcast<f32>(out[o]) + y;
                }
                bits = bitcast<u32>(y);
            }
            out[o] = bits;
        }
    }
}
