// Dense values stored as the checkpoint stores them, read from u32 words: format 0 is f32 (one
// value per word), 1 is f16 and 2 is bf16 (two values per word, the first in the low half).
// Prepended to embed.wgsl and dense.wgsl, whose `table` binding holds the words.

const FORMAT_F32: u32 = 0u;
const FORMAT_F16: u32 = 1u;
const FORMAT_BF16: u32 = 2u;

// Value `idx` (counted in elements) as f32, exactly.
fn value_at(idx: u32, format: u32) -> f32 {
    if (format == FORMAT_F32) {
        return bitcast<f32>(table[idx]);
    }
    let word = table[idx >> 1u];
    let high = (idx & 1u) == 1u;
    if (format == FORMAT_F16) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}
