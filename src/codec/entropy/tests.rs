use super::*;
use crate::analysis::entropy::entropy;

use crate::tensor::synth::Rng;

/// Symbols with a geometric-ish distribution (like float exponents).
fn skewed(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::from_state(seed);
    (0..n).map(|_| (120.0 + 4.0 * r.normal()).clamp(0.0, 255.0) as u8).collect()
}

fn round_trip(syms: &[u8], ctx: Option<&[u8]>) -> Vec<u8> {
    let mut enc = Vec::new();
    encode_stream(syms, ctx, &mut enc).unwrap();
    let mut dec = vec![0u8; syms.len()];
    decode_stream(&enc, ctx, &mut dec).unwrap();
    assert_eq!(dec, syms);
    enc
}

#[test]
fn model_quantization_sums_and_keeps_symbols() {
    let syms = skewed(10_000, 1);
    let h = hist(&syms);
    for p in 8..=MAX_PRECISION {
        let m = Model::from_hist(&h, p).unwrap();
        assert_eq!(m.freq.iter().map(|&f| f as u64).sum::<u64>(), 1 << p);
        for (s, (&c, &f)) in h.iter().zip(&m.freq).enumerate() {
            assert_eq!(c > 0, f > 0, "symbol {s} at precision {p}");
        }
        let mut buf = Vec::new();
        m.write(&mut buf);
        let back = Model::read(&mut crate::codec::Reader::new(&buf, "t")).unwrap();
        assert_eq!(back, m);
    }
    let mut few = [0u64; 256];
    few[3] = 1;
    few[200] = 1_000_000;
    let m = Model::from_hist(&few, 12).unwrap();
    assert_eq!(m.freq[3], 1);
    let mut all = [1u64; 256];
    all[0] = 0;
    assert!(Model::from_hist(&all, 7).is_none());
    assert!(Model::from_hist(&[0; 256], 12).is_none());
}

#[test]
fn model_read_rejects_garbage() {
    let m = Model::from_hist(&hist(&skewed(5000, 2)), 12).unwrap();
    let mut buf = Vec::new();
    m.write(&mut buf);
    for cut in 0..buf.len() {
        assert!(Model::read(&mut crate::codec::Reader::new(&buf[..cut], "t")).is_err(), "cut {cut}");
    }
    for i in 0..buf.len() {
        for flip in [1u8, 0x80, 0xff] {
            let mut b = buf.clone();
            b[i] ^= flip;
            // Either an error or a valid model: never a panic, never a bad sum.
            if let Ok(m) = Model::read(&mut crate::codec::Reader::new(&b, "t")) {
                assert_eq!(m.freq.iter().map(|&f| f as u64).sum::<u64>(), 1 << m.precision);
            }
        }
    }
}

#[test]
fn streams_round_trip_all_modes() {
    assert!(round_trip(&[], None).len() <= 2);
    round_trip(&[7], None);
    assert_eq!(round_trip(&[9; 1000], None).len(), 2);
    round_trip(&[1, 2, 3, 4, 5], None);
    for n in [63, 64, 65, 66, 67, 1000, 4097] {
        round_trip(&skewed(n, n as u64), None);
    }
    // Uniform bytes stay raw.
    let mut r = Rng::from_state(5);
    let u: Vec<u8> = (0..10_000).map(|_| r.next_u64() as u8).collect();
    assert_eq!(round_trip(&u, None).len(), u.len() + 1);
}

#[test]
fn coded_size_is_near_the_entropy() {
    let syms = skewed(1 << 20, 3);
    let h = entropy(&hist(&syms)) * syms.len() as f64 / 8.0;
    let enc = round_trip(&syms, None);
    let over = enc.len() as f64 / h - 1.0;
    assert!(over < 0.005, "{} bytes vs entropy {h:.0}: {:.3} % over", enc.len(), over * 100.0);
}

#[test]
fn context_models_pay_where_the_contexts_matter() {
    // The symbol depends strongly on the context for half the contexts.
    let mut r = Rng::from_state(11);
    let n = 1 << 18;
    let ctx: Vec<u8> = (0..n).map(|_| (r.next_u64() % 8) as u8).collect();
    let syms: Vec<u8> =
        ctx.iter().map(|&c| if c < 4 { c * 10 + (r.next_u64() % 3) as u8 } else { r.next_u64() as u8 }).collect();
    let with = round_trip(&syms, Some(&ctx));
    let without = round_trip(&syms, None);
    assert!(with.len() * 10 < without.len() * 8, "{} vs {}", with.len(), without.len());
    let hs = ctx_hists(&syms, &ctx);
    assert_eq!(hs.iter().map(|(c, _)| *c).collect::<Vec<_>>(), (0..8).collect::<Vec<u8>>());
    let floor = crate::analysis::entropy::conditional_entropy(&hs.iter().map(|(_, h)| h.to_vec()).collect::<Vec<_>>())
        * n as f64
        / 8.0;
    assert!((with.len() as f64) < floor * 1.01, "{} vs floor {floor:.0}", with.len());
}

#[test]
fn truncated_and_corrupt_streams_fail_cleanly() {
    let mut r = Rng::from_state(17);
    let syms = skewed(3000, 4);
    let ctx: Vec<u8> = (0..syms.len()).map(|_| (r.next_u64() % 3) as u8).collect();
    for c in [None, Some(&ctx[..])] {
        let mut enc = Vec::new();
        encode_stream(&syms, c, &mut enc).unwrap();
        let mut out = vec![0u8; syms.len()];
        for cut in 0..enc.len() {
            assert!(decode_stream(&enc[..cut], c, &mut out).is_err(), "cut at {cut}");
        }
        let mut caught = 0;
        for i in 0..enc.len() {
            let mut b = enc.clone();
            b[i] ^= 1 << (r.next_u64() % 8);
            if decode_stream(&b, c, &mut out).is_err() {
                caught += 1;
            }
        }
        // Most flips are detected by the end-state check; none panics.
        assert!(caught * 2 > enc.len(), "{caught} of {}", enc.len());
        // Wrong output length.
        let mut short = vec![0u8; syms.len() - 1];
        let cs = c.map(|c| &c[..c.len() - 1]);
        assert!(decode_stream(&enc, cs, &mut short).is_err());
    }
}

/// The reference: constriction's ANS coder (24-bit model) on the same data.
/// This coder must cost at most 0.5 % more.
#[test]
fn bit_cost_matches_constriction() {
    use constriction::stream::model::DefaultContiguousCategoricalEntropyModel;
    use constriction::stream::stack::DefaultAnsCoder;
    let syms = skewed(1 << 18, 9);
    let h = hist(&syms);
    let total: u64 = h.iter().sum();
    let probs: Vec<f64> = h.iter().map(|&c| c as f64 / total as f64).collect();
    let model = DefaultContiguousCategoricalEntropyModel::from_floating_point_probabilities_perfect(&probs).unwrap();
    let mut coder = DefaultAnsCoder::new();
    coder.encode_iid_symbols_reverse(syms.iter().map(|&s| s as usize), &model).unwrap();
    let theirs = coder.num_bits() as f64 / 8.0;
    let ours = round_trip(&syms, None).len() as f64;
    assert!(ours < theirs * 1.005, "ours {ours} bytes, constriction {theirs}");
    assert!(ours > theirs * 0.95, "suspiciously small: ours {ours}, constriction {theirs}");
}

/// Four-lane streams built by hand (mode 1: single streams, and the context
/// layout: raw contexts' symbols in one block, the coded ones interleaved in
/// one stream) decode.
#[test]
fn four_lane_streams_of_earlier_builds_decode() {
    let syms = skewed(20_000, 12);
    let m = Model::from_hist(&hist(&syms), 12).unwrap();
    let mut enc = vec![MODE_RANS, 0];
    m.write(&mut enc);
    rans::encode::<{ rans::LANES }>(&syms, &m, &mut enc);
    let mut out = vec![0u8; syms.len()];
    decode_stream(&enc, None, &mut out).unwrap();
    assert_eq!(out, syms);

    // Contexts 0 and 1 coded (models 0 and 1), context 2 raw.
    let ctx: Vec<u8> = (0..syms.len()).map(|i| (i * 7 % 3) as u8).collect();
    let models = [m.clone(), Model::uniform(12)];
    let mut map = [RAW_CTX; 256];
    map[0] = 0;
    map[1] = 1;
    let mut enc = vec![MODE_RANS, 1];
    models.iter().for_each(|m| m.write(&mut enc));
    enc.extend_from_slice(&2u16.to_le_bytes());
    enc.extend_from_slice(&[0, 0, 1, 1]);
    let raw: Vec<u8> = syms.iter().zip(&ctx).filter(|(_, c)| **c == 2).map(|(s, _)| *s).collect();
    crate::codec::put_block(&mut enc, &raw).unwrap();
    let (cs, cc): (Vec<u8>, Vec<u8>) = syms.iter().zip(&ctx).filter(|(_, c)| **c != 2).map(|(s, c)| (*s, *c)).unzip();
    rans::encode_ctx::<{ rans::LANES }>(&cs, &cc, &map, &models, &mut enc);
    decode_stream(&enc, Some(&ctx), &mut out).unwrap();
    assert_eq!(out, syms);
    // The current encoder writes long single streams as 32- or 64-lane
    // rANS, short ones and context streams in this layout.
    let mut now = Vec::new();
    encode_stream(&syms, None, &mut now).unwrap();
    assert_eq!(now[0], MODE_RANS);
    now.clear();
    encode_stream(&skewed(WIDE_FROM, 1), None, &mut now).unwrap();
    assert_eq!(now[0], MODE_RANS32);
    now.clear();
    let long = skewed(WIDER_FROM + 33, 2);
    encode_stream(&long, None, &mut now).unwrap();
    assert_eq!(now[0], MODE_RANS64);
    let mut back = vec![0u8; long.len()];
    decode_stream(&now, None, &mut back).unwrap();
    assert_eq!(back, long);
    now.clear();
    let few = WIDE_CODED_FROM / 2;
    encode_stream(&syms[..few], Some(&ctx[..few]), &mut now).unwrap();
    assert_eq!(now[0], MODE_RANS);
    // Context streams with many coded symbols: 32 lanes.
    let long = skewed(3 * WIDE_CODED_FROM, 3);
    let lctx: Vec<u8> = (0..long.len()).map(|i| (i % 3) as u8).collect();
    now.clear();
    encode_stream(&long, Some(&lctx), &mut now).unwrap();
    assert_eq!(now[0], MODE_CTX32);
    let mut back = vec![0u8; long.len()];
    decode_stream(&now, Some(&lctx), &mut back).unwrap();
    assert_eq!(back, long);
}

/// A long context stream is planned on a sample; a symbol of a coded
/// context that the sample never sees must still be coded (the models come
/// from the exact counts), and the skewed context must still be coded.
#[test]
fn sampled_plans_code_symbols_the_sample_missed() {
    let n = 1 << 17;
    assert!(n >= SAMPLE_FROM);
    let mut r = Rng::from_state(21);
    // Context 1 (every tenth symbol) is skewed, context 0 uniform.
    let ctx: Vec<u8> = (0..n).map(|i| (i % 10 == 0) as u8).collect();
    let mut syms: Vec<u8> = (0..n)
        .map(|i| if ctx[i] == 1 { (100.0 + 2.0 * r.normal()).clamp(0.0, 255.0) as u8 } else { r.next_u64() as u8 })
        .collect();
    // Position 70 is in context 1 and not sampled.
    assert!(sample_positions(n, PLAN_SAMPLE).all(|i| i != 70) && ctx[70] == 1);
    syms[70] = 250;
    let at: Vec<usize> = (0..n).filter(|&i| ctx[i] == 1 && syms[i] == 250).collect();
    assert_eq!(at, [70]);
    let enc = round_trip(&syms, Some(&ctx));
    // Context 1 costs about 3 of its 8 bits: coded, the block is well
    // under the raw size.
    assert!(enc.len() < n - n / 20, "{} bytes for {n} symbols", enc.len());
}

/// The sampled histogram of a long stream gives every present symbol a
/// count (the ones the sample missed exactly), no absent one, and is not
/// fooled by structure at the sampling period.
#[test]
fn sampled_model_histograms_keep_every_present_symbol() {
    let n = 2 * SAMPLE_FROM + 5;
    let mut syms = skewed(n, 30);
    let picked: std::collections::HashSet<usize> = sample_positions(n, MODEL_SAMPLE).collect();
    let off: Vec<usize> = (0..n).filter(|i| !picked.contains(i)).step_by(977).take(5).collect();
    for (k, &i) in off.iter().enumerate() {
        syms[i] = 250 + k as u8;
    }
    let h = model_hist(&syms);
    let exact = hist(&syms);
    for v in 0..256 {
        assert_eq!(h[v] > 0, exact[v] > 0, "symbol {v}");
    }
    for k in 0..5 {
        assert_eq!(h[250 + k], 1, "symbol {} appears once, off the sample", 250 + k);
    }
    round_trip(&syms, None);
    // Eight symbols in turn: a fixed stride of 8 would see one of them.
    let periodic: Vec<u8> = (0..n).map(|i| (i % 8) as u8 * 30).collect();
    let h = model_hist(&periodic);
    for k in 0..8 {
        let share = h[k * 30] as f64 / n as f64;
        assert!((share - 0.125).abs() < 0.01, "symbol {}: share {share:.4}", k * 30);
    }
}
