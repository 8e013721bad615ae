//! The 2-bit code: 4 trits per byte, 2.0 bits per weight.
//!
//! Digit `p` (0..4) of a byte sits in bits `2p..2p+2` and holds `trit + 1` (0, 1 or 2); the bit
//! pattern `0b11` is never written. Storing `trit + 1` unsigned lets an int8 kernel use unsigned ×
//! signed byte dot products (`vpdpbusd`, `vpmaddubsw`): `Σ t·x = Σ (t+1)·x − Σ x`, with `Σ x`
//! computed once per activation row.

/// Trits in one byte.
pub const TRITS_PER_BYTE: usize = 4;

/// One full group: 32 bytes, 128 weights, 2.0 bits per weight. The layout is documented in
/// [`crate::codec`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Digit `p` of byte `b` is weight `32p + b` of the group.
    pub qs: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<Group>() == super::GROUP_BYTES);
const _: () = assert!(std::mem::size_of::<Group>() * 8 == 2 * super::GROUP_BYTES * TRITS_PER_BYTE);

/// Packs four digits (`trit + 1`, each 0..=2).
#[inline]
pub const fn encode_byte(d: [u8; 4]) -> u8 {
    d[0] | (d[1] << 2) | (d[2] << 4) | (d[3] << 6)
}

/// `DECODE[byte]` = the four trits of `byte` (fifth entry 0), or `None` if a digit is `0b11`.
pub static DECODE: [Option<[i8; 5]>; 256] = build_decode();

const fn build_decode() -> [Option<[i8; 5]>; 256] {
    let mut table = [None; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut trits = [0i8; 5];
        let mut ok = true;
        let mut p = 0;
        while p < 4 {
            let d = (byte >> (2 * p)) & 3;
            if d == 3 {
                ok = false;
            }
            trits[p] = d as i8 - 1;
            p += 1;
        }
        if ok {
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
    fn every_digit_combination_round_trips_and_exactly_81_bytes_are_valid() {
        let mut valid = 0;
        for byte in 0..=255u8 {
            if let Some(t) = DECODE[byte as usize] {
                valid += 1;
                let d = [0, 1, 2, 3].map(|p| (t[p] + 1) as u8);
                assert_eq!(encode_byte(d), byte);
            }
        }
        assert_eq!(valid, 81);
    }
}
