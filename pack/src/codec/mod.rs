//! Lossless codecs for ternary weights: 2 bits (4 trits per byte) and 1.6 bits (5 trits per byte).
//!
//! # Layout (both codecs; independent of the machine that writes or reads it)
//!
//! A ternary matrix is stored row by row (`[out_features, in_features]`, rows are output
//! channels). Each row of `k` weights takes [`Codec::row_bytes`]`(k)` bytes, a multiple of 4 so
//! that every row starts 4-byte aligned (for GPU word loads). Inside a row:
//!
//! * **Groups** of 32 bytes hold `32 * T` weights, `T` being the trits per byte (4 or 5). Weight
//!   `j` of a group (`0 <= j < 32 * T`) is digit `p = j / 32` of byte `b = j % 32`. So digit
//!   plane `p` of the group's 32 bytes covers the *contiguous* weights `32p .. 32p + 32`: a
//!   SIMD kernel loads 32 bytes, extracts one plane per step and meets a contiguous slice of the
//!   activations, with no shuffles. (AVX-512 takes two groups per register.)
//! * **The tail**: the `r = k mod 32T` weights after the last full group take the remaining
//!   `nb = row_bytes - 32 * full_groups` bytes (`nb <= 32`), with the same rule at width `nb`:
//!   weight `j` of the tail is digit `j / nb` of byte `j % nb`. Slots `j >= r` are padding and
//!   always hold the trit 0.
//!
//! The digit encodings are in [`bits2`] and [`bits1_6`]. Decoding a row never looks at anything
//! but the row's bytes and `k`, so a file written on one machine reads the same on every other.

pub mod bits1_6;
pub mod bits2;

use crate::error::{Error, Result};

/// Bytes in a group, for both codecs: one AVX2 register, half an AVX-512 register.
pub const GROUP_BYTES: usize = 32;

/// Which packing a ternary tensor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// 4 trits per byte, 2 bits per weight.
    Bits2,
    /// 5 trits per byte, 1.6 bits per weight.
    Bits1_6,
}

impl Codec {
    /// Both codecs, for loops in tests and benchmarks.
    pub const ALL: [Codec; 2] = [Codec::Bits2, Codec::Bits1_6];

    /// Trits stored in one byte.
    pub const fn trits_per_byte(self) -> usize {
        match self {
            Codec::Bits2 => bits2::TRITS_PER_BYTE,
            Codec::Bits1_6 => bits1_6::TRITS_PER_BYTE,
        }
    }

    /// Weights in one full group of [`GROUP_BYTES`] bytes.
    pub const fn group_weights(self) -> usize {
        GROUP_BYTES * self.trits_per_byte()
    }

    /// Nominal bits per weight, before padding and scales.
    pub const fn nominal_bits(self) -> f64 {
        8.0 / self.trits_per_byte() as f64
    }

    /// The name written into packed checkpoints (`tern.codec` metadata).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Bits2 => "ternary-2bit",
            Codec::Bits1_6 => "ternary-1.6bit",
        }
    }

    /// The `--bits` spelling.
    pub const fn bits_label(self) -> &'static str {
        match self {
            Codec::Bits2 => "2",
            Codec::Bits1_6 => "1.6",
        }
    }

    /// Parses a [`Codec::name`].
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Parses the `--bits` spelling: `2` or `1.6`.
    pub fn from_bits(bits: &str) -> Option<Codec> {
        match bits.trim() {
            "2" | "2.0" => Some(Codec::Bits2),
            "1.6" | "1.58" => Some(Codec::Bits1_6),
            _ => None,
        }
    }

    /// Bytes of one packed row of `k` weights (groups, tail, then padding to a multiple of 4).
    pub const fn row_bytes(self, k: usize) -> usize {
        let t = self.trits_per_byte();
        let full = k / (GROUP_BYTES * t);
        let rem = k % (GROUP_BYTES * t);
        let raw = full * GROUP_BYTES + rem.div_ceil(t);
        raw.div_ceil(4) * 4
    }

    /// Full groups in a row of `k` weights.
    pub const fn full_groups(self, k: usize) -> usize {
        k / self.group_weights()
    }

    /// Bytes of the tail of a row of `k` weights (0 when `k` is a multiple of the group).
    pub const fn tail_bytes(self, k: usize) -> usize {
        self.row_bytes(k) - self.full_groups(k) * GROUP_BYTES
    }

    /// Bits per weight of a `[rows, k]` matrix, with `scales` f32 scales included.
    pub fn bits_per_weight(self, rows: usize, k: usize, scales: usize) -> f64 {
        let bytes = rows * self.row_bytes(k) + scales * 4;
        (bytes * 8) as f64 / (rows * k) as f64
    }

    /// The digit of value `trit + 1` in {0, 1, 2}, from a trit in {-1, 0, 1}.
    fn check_trit(t: i8) -> Result<u8> {
        match t {
            -1..=1 => Ok((t + 1) as u8),
            _ => Err(Error::Codec(format!("value {t} is not ternary"))),
        }
    }

    /// Packs one row of trits (`-1`, `0`, `1`) into `out` (`row_bytes(trits.len())` bytes).
    pub fn encode_row(self, trits: &[i8], out: &mut [u8]) -> Result<()> {
        let k = trits.len();
        if out.len() != self.row_bytes(k) {
            return Err(Error::Codec(format!(
                "row of {k} weights needs {} bytes, buffer has {}",
                self.row_bytes(k),
                out.len()
            )));
        }
        let mut digits = [1u8; 5];
        let t = self.trits_per_byte();
        for (base, nb) in self.segments(k) {
            for b in 0..nb {
                for (p, d) in digits.iter_mut().enumerate().take(t) {
                    let j = base + p * nb + b;
                    *d = if j < k {
                        Self::check_trit(trits[j])?
                    } else {
                        1
                    };
                }
                out[base / t + b] = self.encode_digits(&digits);
            }
        }
        Ok(())
    }

    /// Unpacks one row of `out.len()` weights, rejecting bytes the encoder never writes.
    pub fn decode_row(self, row: &[u8], out: &mut [i8]) -> Result<()> {
        let k = out.len();
        if row.len() != self.row_bytes(k) {
            return Err(Error::Codec(format!(
                "row of {k} weights needs {} bytes, got {}",
                self.row_bytes(k),
                row.len()
            )));
        }
        let t = self.trits_per_byte();
        for (base, nb) in self.segments(k) {
            for b in 0..nb {
                let byte = row[base / t + b];
                let digits = self.decode_byte(byte).ok_or_else(|| {
                    Error::Codec(format!(
                        "byte {byte:#04x} at offset {} is not a valid {} code",
                        base / t + b,
                        self.name()
                    ))
                })?;
                for (p, &d) in digits.iter().enumerate().take(t) {
                    let j = base + p * nb + b;
                    if j < k {
                        out[j] = d;
                    } else if d != 0 {
                        return Err(Error::Codec(format!(
                            "padding slot {j} of a row of {k} weights holds a non-zero trit"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the tail of a packed row of `k` weights: its bytes are valid codes and its padding
    /// slots hold the trit 0. (Full groups have no padding; their bytes need only be valid.)
    pub fn check_tail(self, row: &[u8], k: usize) -> Result<()> {
        let t = self.trits_per_byte();
        let start = self.full_groups(k) * GROUP_BYTES;
        let (base, nb) = (
            self.full_groups(k) * self.group_weights(),
            self.tail_bytes(k),
        );
        for (b, &byte) in row[start..start + nb].iter().enumerate() {
            let digits = self.decode_byte(byte).ok_or_else(|| {
                Error::Codec(format!(
                    "byte {byte:#04x} at offset {} is not a valid {} code",
                    start + b,
                    self.name()
                ))
            })?;
            for (p, &d) in digits.iter().enumerate().take(t) {
                let j = base + p * nb + b;
                if j >= k && d != 0 {
                    return Err(Error::Codec(format!(
                        "padding slot {j} of a row of {k} weights holds a non-zero trit"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Packs a row-major `[rows, k]` matrix of trits.
    pub fn encode_matrix(self, trits: &[i8], k: usize) -> Result<Vec<u8>> {
        if k == 0 || !trits.len().is_multiple_of(k) {
            return Err(Error::Codec(format!(
                "{} values do not form rows of {k}",
                trits.len()
            )));
        }
        let rb = self.row_bytes(k);
        let mut out = vec![0u8; trits.len() / k * rb];
        for (row, dst) in trits.chunks_exact(k).zip(out.chunks_exact_mut(rb)) {
            self.encode_row(row, dst)?;
        }
        Ok(out)
    }

    /// Unpacks a `[rows, k]` matrix.
    pub fn decode_matrix(self, packed: &[u8], rows: usize, k: usize) -> Result<Vec<i8>> {
        let rb = self.row_bytes(k);
        if packed.len() != rows * rb {
            return Err(Error::Codec(format!(
                "[{rows}, {k}] needs {} packed bytes, got {}",
                rows * rb,
                packed.len()
            )));
        }
        let mut out = vec![0i8; rows * k];
        for (src, dst) in packed.chunks_exact(rb).zip(out.chunks_exact_mut(k)) {
            self.decode_row(src, dst)?;
        }
        Ok(out)
    }

    /// The segments of a row as `(first weight, bytes)`: the full groups, then the tail.
    pub(crate) fn segments(self, k: usize) -> impl Iterator<Item = (usize, usize)> {
        let gw = self.group_weights();
        let full = self.full_groups(k);
        let tail = self.tail_bytes(k);
        (0..full)
            .map(move |g| (g * gw, GROUP_BYTES))
            .chain((tail > 0).then_some((full * gw, tail)))
    }

    fn encode_digits(self, digits: &[u8; 5]) -> u8 {
        match self {
            Codec::Bits2 => bits2::encode_byte([digits[0], digits[1], digits[2], digits[3]]),
            Codec::Bits1_6 => bits1_6::encode_byte(*digits),
        }
    }

    /// The trits of one byte (unused digits are 0), or `None` for a byte no encoder writes.
    #[inline]
    pub fn decode_byte(self, byte: u8) -> Option<[i8; 5]> {
        match self {
            Codec::Bits2 => bits2::DECODE[byte as usize],
            Codec::Bits1_6 => bits1_6::DECODE[byte as usize],
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-bit", self.bits_label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_bytes_are_aligned_and_tight() {
        for codec in Codec::ALL {
            for k in 1..2000 {
                let rb = codec.row_bytes(k);
                assert_eq!(rb % 4, 0);
                assert!(rb * codec.trits_per_byte() >= k, "{codec} k={k}");
                assert!(rb < k.div_ceil(codec.trits_per_byte()) + 4, "{codec} k={k}");
                assert!(codec.tail_bytes(k) <= GROUP_BYTES);
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_name(codec.name()), Some(codec));
            assert_eq!(Codec::from_bits(codec.bits_label()), Some(codec));
        }
        assert_eq!(Codec::from_bits("3"), None);
    }
}
