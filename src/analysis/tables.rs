//! Plain-text and markdown renderings of an analysis: the `analyze` output,
//! and the Aveiro Tables 3.1 (top bytes), 3.2 (byte-plane entropy) and 3.3
//! (float-field entropies and the floor) with our numbers beside the study's.

use super::stats::BAND_LABELS;
use super::summary::{FileAnalysis, TensorAnalysis};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Numbers a study published, typed in as quoted. Only what the source text
/// quotes is filled in; everything else stays empty and renders blank.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PublishedEntropy {
    /// Where the numbers come from ("Aveiro study, Qwen2-0.5B BF16, as published").
    pub source: String,
    pub dtype: String,
    /// Table 3.1: the most frequent bytes, as named in the source.
    pub top_bytes: Vec<String>,
    /// Their share, as quoted (free text: the quote may not say per byte or together).
    pub top_bytes_share: String,
    /// Table 3.2, with the source's own labels.
    pub high_byte_bits: Option<f64>,
    pub low_byte_bits: Option<f64>,
    /// Table 3.3: (quantity, value as quoted) pairs; empty when nothing was quoted.
    pub fields: Vec<(String, String)>,
}

/// The Aveiro study's numbers for Qwen2-0.5B (BF16) as issue 5 quotes them:
/// top bytes 0x3c/0xbc at 28 %, "high byte" 7.96 bits, "low byte" 2.63 bits.
/// Nothing of Table 3.3 is quoted there, so it stays blank.
pub fn aveiro_qwen2_0_5b() -> PublishedEntropy {
    PublishedEntropy {
        source: "theirs (Qwen2-0.5B, as published)".into(),
        dtype: "BF16".into(),
        top_bytes: vec!["0x3c".into(), "0xbc".into()],
        top_bytes_share: "28 %".into(),
        high_byte_bits: Some(7.96),
        low_byte_bits: Some(2.63),
        fields: Vec::new(),
    }
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

/// Table 3.1: the most frequent bytes of all planes together and of the
/// highest plane (for floats the one holding the sign and exponent), with the
/// published top bytes beside them, then the other planes alone.
pub fn table_3_1(t: &TensorAnalysis, p: Option<&PublishedEntropy>) -> String {
    let mut s = String::new();
    let theirs = p.map_or("theirs", |p| p.source.as_str());
    let Some(top) = t.planes.last() else { return s };
    let _ = writeln!(
        s,
        "| rank | all bytes: byte | share | cumulative | plane {k} ({holds}): byte | share | cumulative | {theirs}: byte | share |",
        k = top.plane,
        holds = top.holds
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---|---:|---:|---|---:|");
    let n = t.top_bytes.len().max(top.top.len());
    for i in 0..n {
        let cell = |b: Option<&super::summary::ByteShare>| match b {
            Some(b) => format!("0x{:02x} | {} | {}", b.value, pct(b.share), pct(b.cumulative)),
            None => " | | ".to_string(),
        };
        let tb = p.and_then(|p| p.top_bytes.get(i)).cloned().unwrap_or_default();
        let ts = match p {
            Some(p) if i < p.top_bytes.len() => p.top_bytes_share.clone(),
            _ => String::new(),
        };
        let _ = writeln!(s, "| {} | {} | {} | {tb} | {ts} |", i + 1, cell(t.top_bytes.get(i)), cell(top.top.get(i)));
    }
    if let Some(p) = p.filter(|p| p.top_bytes.len() >= 2 && !p.top_bytes_share.is_empty()) {
        let share = |pop: &[super::summary::ByteShare], name: &str| -> String {
            let v: Vec<String> = p
                .top_bytes
                .iter()
                .map(|b| {
                    let x = pop.iter().find(|s| format!("0x{:02x}", s.value) == b.to_lowercase());
                    format!("{b} {}", x.map_or("(not in the top 10)".to_string(), |x| pct(x.share)))
                })
                .collect();
            format!("{} of {name}", v.join(", "))
        };
        let _ = writeln!(
            s,
            "\nThe study quotes {} at {} without saying whether that is the share of each byte or of both, and of \
             which bytes. Here: {}; {}.",
            p.top_bytes.join("/"),
            p.top_bytes_share,
            share(&top.top, &format!("the plane {} bytes", top.plane)),
            share(&t.top_bytes, "all bytes")
        );
    }
    for pl in t.planes.iter().rev().skip(1) {
        let _ = writeln!(s, "\nPlane {} ({}), top bytes of that plane alone:\n", pl.plane, pl.holds);
        let _ = writeln!(s, "| rank | byte | share | cumulative |");
        let _ = writeln!(s, "|---:|---|---:|---:|");
        for (i, b) in pl.top.iter().enumerate() {
            let _ = writeln!(s, "| {} | 0x{:02x} | {} | {} |", i + 1, b.value, pct(b.share), pct(b.cumulative));
        }
    }
    s
}

fn bits(x: Option<f64>) -> String {
    x.map_or(String::new(), |x| format!("{x:.2}"))
}

/// Table 3.2: entropy of each byte plane, highest plane first. For BF16 the
/// study's two numbers are shown twice: under its own labels, and matched to
/// the plane whose content they describe.
pub fn table_3_2(t: &TensorAnalysis, p: Option<&PublishedEntropy>) -> String {
    let mut s = String::new();
    let p = p.filter(|p| p.dtype == t.dtype);
    let theirs = p.map_or("theirs", |p| p.source.as_str());
    let two = t.planes.len() == 2;
    let _ = writeln!(
        s,
        "| byte plane | holds ({} little-endian) | entropy, bits (ours) | {theirs}, under the study's label | {theirs}, matched by content |",
        t.dtype
    );
    let _ = writeln!(s, "|---|---|---:|---|---:|");
    // by content: the lower of the two published numbers belongs to the lower-entropy plane
    let (lo_pub, hi_pub) = match p {
        Some(p) => match (p.high_byte_bits, p.low_byte_bits) {
            (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
            _ => (None, None),
        },
        None => (None, None),
    };
    let ours_lo_plane = if two { Some(if t.planes[1].entropy <= t.planes[0].entropy { 1 } else { 0 }) } else { None };
    for pl in t.planes.iter().rev() {
        let name = match (two, pl.plane) {
            (true, 1) => "plane 1 = high byte (stored second)".to_string(),
            (true, 0) => "plane 0 = low byte (stored first)".to_string(),
            _ => format!("plane {}", pl.plane),
        };
        let (label, matched) = match (two, p) {
            (true, Some(p)) => {
                let label = if pl.plane == 1 {
                    p.high_byte_bits.map(|b| format!("{b:.2} (\"high byte\")"))
                } else {
                    p.low_byte_bits.map(|b| format!("{b:.2} (\"low byte\")"))
                };
                let matched = if Some(pl.plane) == ours_lo_plane { lo_pub } else { hi_pub };
                (label.unwrap_or_default(), bits(matched))
            }
            _ => (String::new(), String::new()),
        };
        let _ = writeln!(s, "| {name} | {} | {:.2} | {label} | {matched} |", pl.holds, pl.entropy);
    }
    if let (true, Some(p), Some(ol)) = (two, p, ours_lo_plane)
        && let (Some(h), Some(l)) = (p.high_byte_bits, p.low_byte_bits)
    {
        let study_says_high_is_low_entropy = h < l;
        let ours_high_is_low_entropy = ol == 1;
        let _ = writeln!(s);
        if study_says_high_is_low_entropy != ours_high_is_low_entropy {
            let _ = writeln!(
                s,
                "**The study's labels are swapped relative to the bytes.** In little-endian {dt} the high byte (plane 1, \
                 the second byte of each element) holds {h1}; here it measures {e1:.2} bits and the low byte ({h0}) \
                 {e0:.2} bits. The study calls the {hb:.2}-bit plane the high byte and the {lb:.2}-bit plane the low byte: \
                 its numbers match ours only with the labels exchanged, so its \"high byte\" is the mantissa-carrying \
                 byte and its \"low byte\" the sign/exponent byte.",
                dt = t.dtype,
                h1 = t.planes[1].holds,
                e1 = t.planes[1].entropy,
                h0 = t.planes[0].holds,
                e0 = t.planes[0].entropy,
                hb = h,
                lb = l,
            );
        } else {
            let _ = writeln!(
                s,
                "The study's labels agree with the bytes: the high byte is the lower-entropy plane in both."
            );
        }
    }
    s
}

/// Table 3.3: entropies of the float fields and the order-0 floor.
pub fn table_3_3(t: &TensorAnalysis, p: Option<&PublishedEntropy>) -> String {
    let mut s = String::new();
    let theirs = p.map_or("theirs", |p| p.source.as_str());
    let Some(f) = &t.fields else {
        return format!("{} is not a float dtype: no field entropies.\n", t.dtype);
    };
    let quoted = |k: &str| -> String {
        p.and_then(|p| p.fields.iter().find(|(q, _)| q == k)).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let _ = writeln!(s, "| quantity | ours | {theirs} |");
    let _ = writeln!(s, "|---|---:|---:|");
    let rows: [(&str, String); 9] = [
        ("H(sign), bits", format!("{:.4}", f.sign)),
        ("H(exponent), bits", format!("{:.4}", f.exponent)),
        ("H(mantissa), bits", format!("{:.4}", f.mantissa)),
        ("H(sign, exponent), bits", format!("{:.4}", f.sign_exponent)),
        ("H(mantissa | exponent), bits", format!("{:.4}", f.mantissa_given_exponent)),
        ("H(sign, mantissa | exponent), bits", format!("{:.4}", f.sign_mantissa_given_exponent)),
        ("order-0 floor, bits per weight", format!("{:.4} of {}", f.floor_bits, f.bits_per_element)),
        ("order-0 floor, share of the original size", pct(f.floor_ratio())),
        ("distinct exponents", f.distinct_exponents.to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {} | {v} | {} |", k.replace('|', "\\|"), quoted(k));
    }
    s
}

/// Tables 3.1–3.3 as one markdown section for one analysis (normally the
/// whole-file total of the main dtype), with the published numbers beside ours.
pub fn aveiro_tables(t: &TensorAnalysis, p: Option<&PublishedEntropy>) -> String {
    let what = if t.name == "*" {
        format!("all {} {} tensors together, {} weights", t.tensors, t.dtype, t.numel)
    } else {
        format!("tensor {}, {}, {} weights", t.name, t.dtype, t.numel)
    };
    let mut s = String::new();
    let _ = writeln!(s, "### Table 3.1: most frequent bytes ({what})\n");
    s += &table_3_1(t, p);
    let _ = writeln!(s, "\n### Table 3.2: entropy of each byte plane ({what})\n");
    s += &table_3_2(t, p);
    let _ = writeln!(s, "\n### Table 3.3: entropy of the float fields and the order-0 floor ({what})\n");
    s += &table_3_3(t, p);
    if let Some(p) = p {
        if p.dtype != t.dtype {
            let _ = writeln!(
                s,
                "\nThe published numbers describe {} weights; these are {}, so only the layout is comparable.",
                p.dtype, t.dtype
            );
        }
        if p.fields.is_empty() {
            let _ = writeln!(
                s,
                "\nBlank cells under \"{}\": not quoted in our source (issue 5), left empty rather than guessed.",
                p.source
            );
        }
    }
    s
}

/// A detailed plain-text block for one analysis.
pub fn tensor_detail(t: &TensorAnalysis) -> String {
    let mut s = String::new();
    let title = if t.name == "*" { format!("all {} tensors of dtype {}", t.tensors, t.dtype) } else { t.name.clone() };
    let _ = writeln!(s, "== {title}: {} {:?}, {} elements, {} bytes", t.dtype, t.shape, t.numel, t.bytes);
    let _ = writeln!(s, "  byte entropy (all planes together): {:.4} bits/byte", t.byte_entropy);
    let _ = write!(s, "  top bytes:");
    for b in &t.top_bytes {
        let _ = write!(s, " 0x{:02x} {:.2}% (cum {:.2}%);", b.value, 100.0 * b.share, 100.0 * b.cumulative);
    }
    let _ = writeln!(s);
    for pl in t.planes.iter().rev() {
        let _ = write!(s, "  plane {} [{}]: H = {:.4} bits; top:", pl.plane, pl.holds, pl.entropy);
        for b in pl.top.iter().take(5) {
            let _ = write!(s, " 0x{:02x} {:.2}% (cum {:.2}%);", b.value, 100.0 * b.share, 100.0 * b.cumulative);
        }
        let _ = writeln!(s);
    }
    if let Some(f) = &t.fields {
        let _ = writeln!(
            s,
            "  fields: H(sign) {:.4}, H(exp) {:.4}, H(mant) {:.4}, H(sign,exp) {:.4}, H(mant|exp) {:.4}, H(sign,mant|exp) {:.4}; {} distinct exponents",
            f.sign,
            f.exponent,
            f.mantissa,
            f.sign_exponent,
            f.mantissa_given_exponent,
            f.sign_mantissa_given_exponent,
            f.distinct_exponents
        );
    }
    let _ = writeln!(
        s,
        "  order-0 floor: {:.4} bits/element = {:.2} % of the original",
        t.floor_bits_per_element,
        100.0 * t.floor_ratio
    );
    if let Some(v) = &t.stats {
        let _ = writeln!(
            s,
            "  values: zero {:.2}%, positive {:.2}%, negative {:.2}%, NaN {}, inf {}; min {}, max {}, smallest |x|>0 {}, mean {}, std {}",
            100.0 * v.zero_share(),
            100.0 * v.positive_share(),
            100.0 * v.negative_share(),
            v.nan,
            v.inf,
            opt(v.min),
            opt(v.max),
            opt(v.min_abs_nonzero),
            opt(v.mean),
            opt(v.std)
        );
        let _ = write!(s, "  magnitudes:");
        for (l, sh) in BAND_LABELS.iter().zip(v.band_shares()) {
            let _ = write!(s, " {l}: {:.2}%;", 100.0 * sh);
        }
        let _ = writeln!(s);
    }
    s
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.6e}"))
}

/// The plain-text `analyze` output: one line per tensor, then the detailed
/// totals per dtype (and the detail of every tensor when `detail`).
pub fn render_text(a: &FileAnalysis, detail: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: {} tensors, {} bytes of tensor data", a.file, a.tensors.len(), a.data_bytes);
    let w = a.tensors.iter().map(|t| t.name.len()).max().unwrap_or(6).clamp(6, 60);
    let _ = writeln!(
        s,
        "{:<w$} {:<8} {:>12} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "tensor", "dtype", "elements", "H(hi)", "H(lo)", "H(s,e)", "H(m|e)", "floor", "floor%", "zero%"
    );
    for t in &a.tensors {
        let hi = t.planes.last().map_or(0.0, |p| p.entropy);
        let lo = t.planes.first().map_or(0.0, |p| p.entropy);
        let (se, me) = t.fields.as_ref().map_or((f64::NAN, f64::NAN), |f| (f.sign_exponent, f.mantissa_given_exponent));
        let z = t.stats.as_ref().map_or(f64::NAN, |v| 100.0 * v.zero_share());
        let _ = writeln!(
            s,
            "{:<w$} {:<8} {:>12} {:>7.3} {:>7.3} {:>8.3} {:>8.3} {:>8.3} {:>7.2} {:>6.2}",
            t.name,
            t.dtype,
            t.numel,
            hi,
            lo,
            se,
            me,
            t.floor_bits_per_element,
            100.0 * t.floor_ratio,
            z
        );
    }
    let _ = writeln!(
        s,
        "floor with one model per tensor: {:.0} bytes = {:.2} % of the tensor data\n",
        a.floor_bytes_per_tensor,
        100.0 * a.floor_ratio_per_tensor
    );
    if detail {
        for t in &a.tensors {
            s += &tensor_detail(t);
        }
        let _ = writeln!(s);
    }
    for t in &a.totals {
        s += &tensor_detail(t);
    }
    if let Some(t) = a.totals.iter().find(|t| t.dtype == "BF16" && t.planes.len() == 2) {
        let (h, l) = (t.planes[1].entropy, t.planes[0].entropy);
        let verdict = if h < l {
            "here the high byte is the low-entropy one, so by content the study's labels are swapped"
        } else {
            "here the high byte has the higher entropy, as the study's labels say (unusual for trained weights)"
        };
        let _ = writeln!(
            s,
            "\nnote: plane 1 is the HIGH byte of little-endian BF16 (sign + 7 exponent bits): {h:.2} bits here, the low byte {l:.2} bits. \
             The Aveiro study labels its 7.96-bit plane \"high byte\" and its 2.63-bit plane \"low byte\"; {verdict}."
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summary::analyze_tensor;
    use crate::tensor::{DType, TensorView};

    fn bf16_tensor(vals: &[u16]) -> TensorAnalysis {
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [vals.len() as u64];
        analyze_tensor(&TensorView { name: "w", dtype: DType::BF16, shape: &shape, data: &data })
    }

    #[test]
    fn swapped_labels_are_reported() {
        // high byte few values, low byte many: the usual BF16 picture
        let vals: Vec<u16> = (0..256u16).map(|i| 0x3c00 | (i & 0xff)).collect();
        let t = bf16_tensor(&vals);
        let p = aveiro_qwen2_0_5b();
        let md = table_3_2(&t, Some(&p));
        assert!(md.contains("labels are swapped"), "{md}");
        assert!(md.contains("7.96 (\"high byte\")"));
        // plane 1 row (first) is matched to 2.63 by content
        let first = md.lines().nth(2).unwrap();
        assert!(first.starts_with("| plane 1") && first.ends_with("| 2.63 |"), "{first}");
        let all = aveiro_tables(&t, Some(&p));
        assert!(all.contains("Table 3.1") && all.contains("Table 3.3") && all.contains("0x3c"));
        assert!(all.contains("| 0x3c | 28 % |"), "{all}");
        assert!(all.contains("0x3c 100.00 %, 0xbc (not in the top 10) of the plane 1 bytes"), "{all}");
    }

    #[test]
    fn agreeing_labels_are_not_called_swapped() {
        // high byte uniform, low byte constant
        let vals: Vec<u16> = (0..256u16).map(|i| i << 8).collect();
        let t = bf16_tensor(&vals);
        let md = table_3_2(&t, Some(&aveiro_qwen2_0_5b()));
        assert!(!md.contains("swapped"), "{md}");
        let no_pub = table_3_3(&t, None);
        assert!(no_pub.contains("order-0 floor"));
    }
}
