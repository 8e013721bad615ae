//! The 1.6-bit code: 5 trits per byte (3^5 = 243 <= 256), 1.6 bits per weight.
//!
//! The five digits `d_p = trit_p + 1` form the base-3 number `v = Σ d_p · 3^(4−p)` (digit 0 most
//! significant, `v` in 0..243), stored as the byte `q = ceil(v · 256 / 243)`. That scaling makes
//! digit extraction a pair of byte multiplies with no division: digit `p` is
//! `((q · 3^p mod 256) · 3) >> 8`. A SIMD kernel does this on 16-bit lanes (or with a byte
//! shuffle table); the 13 byte values the encoder never writes are rejected on decode.

/// Trits in one byte.
pub const TRITS_PER_BYTE: usize = 5;

/// One full group: 32 bytes, 160 weights, 1.6 bits per weight. The layout is documented in
/// [`crate::codec`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Digit `p` of byte `b` is weight `32p + b` of the group.
    pub qs: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<Group>() == super::GROUP_BYTES);
// 32 bytes * 8 bits = 256 bits for 160 weights: 1.6 bits per weight.
const _: () =
    assert!(std::mem::size_of::<Group>() * 8 * 10 == 16 * super::GROUP_BYTES * TRITS_PER_BYTE);

const POW3: [u16; 5] = [1, 3, 9, 27, 81];

/// Packs five digits (`trit + 1`, each 0..=2), digit 0 most significant.
#[inline]
pub const fn encode_byte(d: [u8; 5]) -> u8 {
    let v = d[0] as u16 * 81 + d[1] as u16 * 27 + d[2] as u16 * 9 + d[3] as u16 * 3 + d[4] as u16;
    (v << 8).div_ceil(243) as u8
}

/// Digit `p` (0..5) of a byte, by the multiply-shift rule (what SIMD kernels compute).
#[inline]
pub const fn digit(q: u8, p: usize) -> u8 {
    let shifted = (q as u16 * POW3[p]) & 0xff;
    ((shifted * 3) >> 8) as u8
}

/// `DECODE[byte]` = the five trits of `byte`, or `None` for a byte the encoder never writes.
pub static DECODE: [Option<[i8; 5]>; 256] = build_decode();

const fn build_decode() -> [Option<[i8; 5]>; 256] {
    let mut table = [None; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut d = [0u8; 5];
        let mut trits = [0i8; 5];
        let mut p = 0;
        while p < 5 {
            d[p] = digit(byte as u8, p);
            trits[p] = d[p] as i8 - 1;
            p += 1;
        }
        if encode_byte(d) == byte as u8 {
            table[byte] = Some(trits);
        }
        byte += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_243_values_round_trip_through_the_multiply_shift_rule() {
        let mut seen = std::collections::HashSet::new();
        for v in 0..243u16 {
            let d = [v / 81, v / 27 % 3, v / 9 % 3, v / 3 % 3, v % 3].map(|x| x as u8);
            let q = encode_byte(d);
            assert!(seen.insert(q), "two values share byte {q}");
            for (p, &dp) in d.iter().enumerate() {
                assert_eq!(digit(q, p), dp, "v={v} p={p}");
            }
            assert!(DECODE[q as usize].is_some());
        }
        assert_eq!(DECODE.iter().filter(|e| e.is_some()).count(), 243);
    }
}
