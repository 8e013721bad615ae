// Shared by ternary_f32.wgsl and ternary_i8.wgsl (prepended to each): the workgroup shape, the
// walk of a packed row, and the digit decoders. The host side and the design are in ternary.rs;
// the layout is tern_pack::codec's, read as it is stored.

// Trits per packed byte: 4 (2-bit codec) or 5 (1.6-bit codec). Set per pipeline.
override TRITS: u32 = 4u;

// Threads that share one row (one subgroup-sized slice of the workgroup).
const LANES: u32 = 32u;
// Rows per workgroup.
const ROWS_PER_WG: u32 = 8u;
// Threads per workgroup: LANES * ROWS_PER_WG.
const WG: u32 = 256u;
// Tokens per workgroup; the grid's z dimension walks tiles of TILE tokens. The host compiles
// each kernel twice, with TILE = 8 (prefill) and TILE = 1 (decode: no predicated-off token
// slots, one accumulator per thread).
const TILE: u32 = 8u;

struct Params {
    // Rows (output features) of the matrix.
    rows: u32,
    // u32 words per packed row (row_bytes / 4; pack pads every row to 4 bytes).
    row_words: u32,
    // Words of the row's full 32-byte groups: 8 * full_groups.
    full_words: u32,
    // Words of the tail: tail_bytes / 4 (the tail's width nb is a multiple of 4 bytes).
    tail_words: u32,
    // Activation stride per token, in units of 4 slots (vec4s or words of 4 codes): at least
    // row_words * TRITS, the slots of a packed row; the slots past k hold zeros.
    x_stride: u32,
    // Rows sharing one scale: rows / number of scales.
    rows_per_scale: u32,
    // Workgroups along x; the row block of workgroup (x, y) is y * groups_x + x.
    groups_x: u32,
    // int8 kernel only: 1 writes f32 outputs, 0 the raw i32 sums.
    dequantize: u32,
    // Output stride per token (>= rows).
    out_stride: u32,
    // 1: out += result (a residual connection), 0: out = result.
    accumulate: u32,
    // 1: add bias[row] to the result.
    has_bias: u32,
    // 1: the batch is step.m tokens (the logits rows), 0: step.n.
    use_m: u32,
}

fn batch_tokens() -> u32 {
    return select(step.n, step.m, params.use_m != 0u);
}

// Where word `w` of a packed row meets the activations, in units of 4 activations: plane p of
// the word's 4 bytes covers the 4 contiguous slots starting at 4 * (at.x + p * at.y).
//
// Full group g holds bytes 32g .. 32g + 32; digit p of its byte b is slot 32*T*g + 32p + b, so
// word w (bytes 4(w % 8) .. +4 of group w / 8) starts plane p at slot 32*T*(w/8) + 32p + 4(w%8).
// The tail (nb = 4 * tail_words bytes after the full groups) follows the same rule at width nb:
// digit p of tail byte b is slot 32*T*full_groups + p*nb + b. Slots at or past k are padding;
// the host zero-fills their activations, so the kernels need no bounds checks on a row.
fn word_slots(w: u32) -> vec2<u32> {
    if (w < params.full_words) {
        return vec2<u32>((w >> 3u) * 8u * TRITS + (w & 7u), 8u);
    }
    return vec2<u32>(params.full_words * TRITS + (w - params.full_words), params.tail_words);
}

// Digit decoder state for one packed word (the 1.6-bit code needs a running product).
struct Planes {
    word: u32,
    // Bytes 0 and 2 of the word in 16-bit lanes: the running m_p = q * 3^p mod 256.
    lo: u32,
    // Bytes 1 and 3, likewise.
    hi: u32,
}

fn planes_of(word: u32) -> Planes {
    return Planes(word, word & 0x00ff00ffu, (word >> 8u) & 0x00ff00ffu);
}

// Digit plane p (called for p = 0, 1, ... in order) of the word's 4 bytes, as 4 packed bytes:
// byte i of the result is digit p (= trit + 1, in 0..=2) of byte i of the word.
//
// 2-bit: digit p of a byte is bits 2p..2p+2, so one shift and mask serves all 4 bytes.
// 1.6-bit: tern_pack::codec::bits1_6's own rule, digit p = (3 * m_p) >> 8 with
// m_{p+1} = 3 * m_p mod 256 and m_0 = the byte, done on two bytes at once in 16-bit lanes
// (3 * 255 < 2^16, so lanes never carry into each other). That is 2 multiplies, 4 masks and
// 2 shifts per plane for 4 bytes, all in registers. A 243-entry lookup table would cost 4
// dependent loads per plane instead (from a buffer, or from workgroup memory with bank
// conflicts on data-dependent addresses) in a kernel whose bottleneck is memory; arithmetic
// is also the codec's documented definition, so the shader decodes exactly what pack encodes.
fn next_plane(s: ptr<function, Planes>, p: u32) -> u32 {
    if (TRITS == 4u) {
        return ((*s).word >> (2u * p)) & 0x03030303u;
    }
    let tl = (*s).lo * 3u;
    let th = (*s).hi * 3u;
    (*s).lo = tl & 0x00ff00ffu;
    (*s).hi = th & 0x00ff00ffu;
    // Digits of bytes 0 and 2 sit in bits 8..10 and 24..26 of tl; those of bytes 1 and 3 in the
    // same bits of th, which are already bytes 1 and 3 of the result.
    return ((tl >> 8u) & 0x00030003u) | (th & 0x03000300u);
}
