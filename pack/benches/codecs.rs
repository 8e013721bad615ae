//! Encode and decode throughput of the two codecs (scalar reference code in `tern-pack`), on a
//! 2B4T FFN-shaped slice: 512 rows × 6912 inputs (3.5 M weights).
//!
//! `cargo bench -p tern-pack --bench codecs`; criterion reports elements (weights) per second.
//! GB/s of weights = Gelem/s × bits per weight / 8 for the packed side, × 1 byte for the
//! unpacked i8 side.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tern_pack::Codec;
use tern_pack::init::SplitMix64;

const ROWS: usize = 512;
const K: usize = 6912;

fn bench(c: &mut Criterion) {
    let mut rng = SplitMix64::new(1);
    let trits: Vec<i8> = (0..ROWS * K)
        .map(|_| (rng.next_u64() % 3) as i8 - 1)
        .collect();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements((ROWS * K) as u64));
    g.sample_size(20);
    for codec in Codec::ALL {
        let packed = codec.encode_matrix(&trits, K).unwrap();
        g.bench_function(format!("encode/{}", codec.bits_label()), |b| {
            b.iter(|| codec.encode_matrix(black_box(&trits), K).unwrap())
        });
        let mut out = vec![0i8; ROWS * K];
        g.bench_function(format!("decode/{}", codec.bits_label()), |b| {
            b.iter(|| {
                for (src, dst) in packed
                    .chunks_exact(codec.row_bytes(K))
                    .zip(out.chunks_exact_mut(K))
                {
                    codec.decode_row(black_box(src), dst).unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
