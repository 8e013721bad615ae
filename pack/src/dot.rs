//! Scalar reference dot products of packed ternary rows: the spec for every kernel in
//! `tern-infer` (SIMD and GPU alike).
//!
//! * [`dot_i8`]: packed trits × int8 activations → exact i32 (BitNet's integer path). Every
//!   kernel must equal it bit for bit.
//! * [`dot_f32`]: packed trits × f32 activations → f32 (TriLM's float path), summed in weight
//!   order. Kernels that sum in another order must stay within [`dot_f32_error_budget`].
//!
//! Both walk the row in the codec's layout (see [`crate::codec`]) through the byte decode table,
//! never materialising the row.

use crate::codec::Codec;

/// Named budget for float dot products: `|computed − exact| <= DOT_F32_ULPS_PER_TERM · k · ε · Σ|x|`
/// (the classical bound for recursive summation of `k` terms, with a factor 2 of headroom so
/// that a kernel summing in any order, or with FMA, meets it too).
pub const DOT_F32_ULPS_PER_TERM: f64 = 2.0;

/// The absolute error allowed for a float dot product of `x` (see [`DOT_F32_ULPS_PER_TERM`]).
pub fn dot_f32_error_budget(x: &[f32]) -> f64 {
    let sum_abs: f64 = x.iter().map(|v| v.abs() as f64).sum();
    DOT_F32_ULPS_PER_TERM * x.len() as f64 * f32::EPSILON as f64 * sum_abs
}

/// Visits `(trit, weight index)` for every non-padding weight of a packed row of `k` weights.
#[inline]
fn for_each_trit(codec: Codec, row: &[u8], k: usize, mut f: impl FnMut(i8, usize)) {
    assert_eq!(row.len(), codec.row_bytes(k), "packed row length");
    let t = codec.trits_per_byte();
    for (base, nb) in codec.segments(k) {
        let bytes = &row[base / t..base / t + nb];
        for p in 0..t {
            let first = base + p * nb;
            let count = nb.min(k.saturating_sub(first));
            for (b, &byte) in bytes.iter().enumerate().take(count) {
                // Bytes the encoder never writes decode as zeros here; readers reject them.
                let trits = codec.decode_byte(byte).unwrap_or([0; 5]);
                f(trits[p], first + b);
            }
        }
    }
}

/// `Σ t_j · x_j` over a packed row, exactly.
///
/// # Panics
/// If `row.len() != codec.row_bytes(x.len())`.
pub fn dot_i8(codec: Codec, row: &[u8], x: &[i8]) -> i32 {
    let mut acc = 0i32;
    for_each_trit(codec, row, x.len(), |t, j| acc += t as i32 * x[j] as i32);
    acc
}

/// `Σ t_j · x_j` over a packed row, summed in f32 in weight order.
///
/// # Panics
/// If `row.len() != codec.row_bytes(x.len())`.
pub fn dot_f32(codec: Codec, row: &[u8], x: &[f32]) -> f32 {
    // Sum in plain weight order (the layout visits planes, so collect signs first).
    let mut signed = vec![0i8; x.len()];
    for_each_trit(codec, row, x.len(), |t, j| signed[j] = t);
    signed.iter().zip(x).fold(0.0f32, |acc, (&t, &v)| match t {
        1 => acc + v,
        -1 => acc - v,
        _ => acc,
    })
}

/// `y[r] = Σ_j t[r, j] · x_j` for a packed `[rows, k]` matrix (reference matrix-vector).
///
/// # Panics
/// If the buffer lengths do not agree with `rows` and `k = x.len()`.
pub fn matvec_i8(codec: Codec, packed: &[u8], x: &[i8], y: &mut [i32]) {
    let rb = codec.row_bytes(x.len());
    assert_eq!(packed.len(), y.len() * rb, "packed matrix length");
    for (row, out) in packed.chunks_exact(rb).zip(y.iter_mut()) {
        *out = dot_i8(codec, row, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_of_a_hand_packed_row() {
        // k = 6 in the 2-bit codec: one tail of 4 bytes (padded); weight j is digit j/4 of byte j%4.
        let trits = [1i8, -1, 0, 1, -1, 1];
        let mut row = vec![0u8; Codec::Bits2.row_bytes(6)];
        Codec::Bits2.encode_row(&trits, &mut row).unwrap();
        let x = [3i8, 5, 7, 11, 13, 17];
        assert_eq!(dot_i8(Codec::Bits2, &row, &x), 3 - 5 + 11 - 13 + 17);
        let xf = x.map(f32::from);
        assert_eq!(dot_f32(Codec::Bits2, &row, &xf), 13.0);
    }
}
