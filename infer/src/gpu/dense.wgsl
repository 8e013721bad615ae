// Dense f32 / f16 / bf16 weights x f32 activations (the LM head, and every layer of a float
// model): out[i, r] = sum_j W[r, j] * x[i, j] (+ bias, or added to out). The workgroup is the
// ternary kernels' (8 rows x 32 lanes, a tile of 8 tokens on z); lane l reads values 2l, 2l + 1,
// 2l + 64, ... of its row, so the 32 lanes of a row read 128 (f16) or 256 (f32) contiguous
// bytes per step. values.wgsl is prepended. Scalar twin: kernels::dense_gemm_f32.

struct DenseParams {
    rows: u32,
    cols: u32,
    // Floats per token in xs, and in out.
    x_stride: u32,
    out_stride: u32,
    groups_x: u32,
    accumulate: u32,
    has_bias: u32,
    use_m: u32,
    format: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read> table: array<u32>;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: DenseParams;
@group(0) @binding(4) var<uniform> step: Step;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

const LANES: u32 = 32u;
const ROWS_PER_WG: u32 = 8u;
const WG: u32 = 256u;
// 8, or 1 in the decode variant (see common.wgsl).
const TILE: u32 = 8u;

var<workgroup> partial: array<f32, TILE * WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let lane = tid % LANES;
    let row = (wg.y * params.groups_x + wg.x) * ROWS_PER_WG + tid / LANES;
    let first = wg.z * TILE;
    let count = select(step.n, step.m, params.use_m != 0u);
    let nt = min(TILE, count - first);

    var acc: array<f32, TILE>;
    if (row < params.rows) {
        let base = row * params.cols;
        for (var j = 2u * lane; j < params.cols; j += 2u * LANES) {
            let w0 = value_at(base + j, params.format);
            let pair = j + 1u < params.cols;
            var w1 = 0.0;
            if (pair) {
                w1 = value_at(base + j + 1u, params.format);
            }
            for (var i = 0u; i < TILE; i++) {
                if (i < nt) {
                    let xo = (first + i) * params.x_stride + j;
                    var a = w0 * xs[xo];
                    if (pair) {
                        a += w1 * xs[xo + 1u];
                    }
                    acc[i] += a;
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
        for (var i = 0u; i < nt; i++) {
            var v = partial[i * WG + tid];
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
