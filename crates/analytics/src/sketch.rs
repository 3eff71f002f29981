//! [`LatencySketch`]: a mergeable latency distribution (the DDSketch algorithm).
//!
//! Values (microseconds) fall into logarithmic buckets `(γ^(i-1), γ^i]` with
//! `γ = (1 + α) / (1 - α)` and `α = 1%`: any quantile read back is within 1% of a value
//! actually recorded at that rank (relative error, whatever the distribution). Two sketches
//! merge by adding their bucket counts, so per-minute sketches add up exactly to hourly ones,
//! and a query over any set of rows reads percentiles from the merged sketch.
//!
//! Buckets are kept sparse (sorted `(index, count)` pairs): latencies cluster, so a
//! minute's sketch usually holds a few dozen buckets. From 1 µs to one hour there are
//! about 1,100 possible buckets. The encoded form ([`LatencySketch::encode`]) is a version
//! byte followed by LEB128 varints (zero count, bucket count, then delta-coded indexes and
//! counts): tens of bytes for a typical minute.

/// Relative accuracy of quantiles.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Encoding version byte.
const VERSION: u8 = 1;

/// A mergeable latency distribution; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySketch {
    /// Values of 0 µs.
    zeros: u64,
    /// Sorted by index, no zero counts.
    buckets: Vec<(i32, u64)>,
}

fn gamma_ln() -> f64 {
    let gamma = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
    gamma.ln()
}

/// The bucket of a value ≥ 1.
fn index_of(value: u64) -> i32 {
    ((value as f64).ln() / gamma_ln()).ceil() as i32
}

/// The value a bucket stands for: the middle of `(γ^(i-1), γ^i]` in relative terms.
fn value_of(index: i32) -> f64 {
    let gamma = gamma_ln().exp();
    2.0 * (index as f64 * gamma_ln()).exp() / (gamma + 1.0)
}

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> LatencySketch {
        LatencySketch::default()
    }

    /// Record one value (microseconds).
    pub fn add(&mut self, micros: u64) {
        self.add_n(micros, 1);
    }

    /// Record `n` values equal to `micros`.
    pub fn add_n(&mut self, micros: u64, n: u64) {
        if n == 0 {
            return;
        }
        if micros == 0 {
            self.zeros += n;
            return;
        }
        let i = index_of(micros);
        match self.buckets.binary_search_by_key(&i, |(k, _)| *k) {
            Ok(pos) => self.buckets[pos].1 += n,
            Err(pos) => self.buckets.insert(pos, (i, n)),
        }
    }

    /// Add every value of `other` to this sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        self.zeros += other.zeros;
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        let mut out = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, ca)), Some(&&(ib, cb))) => {
                    if ia == ib {
                        out.push((ia, ca + cb));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        out.push((ia, ca));
                        a.next();
                    } else {
                        out.push((ib, cb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    out.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    out.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = out;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.zeros + self.buckets.iter().map(|(_, c)| c).sum::<u64>()
    }

    /// The value at quantile `q` (0.0..=1.0), in microseconds; `None` when empty. Within
    /// [`RELATIVE_ACCURACY`] of the recorded value of that rank (nearest-rank definition:
    /// the smallest value with at least `q × count` values at or below it).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = self.zeros;
        if seen >= rank {
            return Some(0.0);
        }
        for &(i, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(value_of(i));
            }
        }
        self.buckets.last().map(|&(i, _)| value_of(i))
    }

    /// The encoded form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.buckets.len() * 3);
        out.push(VERSION);
        put_varint(&mut out, self.zeros);
        put_varint(&mut out, self.buckets.len() as u64);
        let mut prev: i64 = 0;
        for &(i, c) in &self.buckets {
            put_varint(&mut out, zigzag(i64::from(i) - prev));
            put_varint(&mut out, c);
            prev = i64::from(i);
        }
        out
    }

    /// Decode [`LatencySketch::encode`]'s output. An empty input is an empty sketch.
    pub fn decode(bytes: &[u8]) -> Result<LatencySketch, String> {
        if bytes.is_empty() {
            return Ok(LatencySketch::default());
        }
        if bytes[0] != VERSION {
            return Err(format!("unknown latency sketch version {}", bytes[0]));
        }
        let mut pos = 1;
        let zeros = get_varint(bytes, &mut pos)?;
        let n = get_varint(bytes, &mut pos)?;
        if n > 100_000 {
            return Err(format!("latency sketch with {n} buckets"));
        }
        let mut buckets = Vec::with_capacity(n as usize);
        let mut prev: i64 = 0;
        for _ in 0..n {
            let i = prev + unzigzag(get_varint(bytes, &mut pos)?);
            let c = get_varint(bytes, &mut pos)?;
            let i32_index =
                i32::try_from(i).map_err(|_| format!("latency sketch index {i} out of range"))?;
            if buckets.last().is_some_and(|&(last, _)| last >= i32_index) {
                return Err("latency sketch buckets out of order".to_owned());
            }
            if c > 0 {
                buckets.push((i32_index, c));
            }
            prev = i;
        }
        if pos != bytes.len() {
            return Err("trailing bytes after a latency sketch".to_owned());
        }
        Ok(LatencySketch { zeros, buckets })
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or_else(|| "truncated latency sketch".to_owned())?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long in a latency sketch".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        // A skewed distribution from 1 µs to ~20 s.
        let mut values: Vec<u64> = (1..=20_000u64).map(|i| i * i / 20 + 1).collect();
        let mut s = LatencySketch::new();
        for &v in &values {
            s.add(v);
        }
        values.sort_unstable();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&values, q) as f64;
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() <= exact * RELATIVE_ACCURACY + 1e-9,
                "q={q}: {got} vs {exact}"
            );
        }
        assert_eq!(s.count(), 20_000);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = LatencySketch::new();
        let mut b = LatencySketch::new();
        let mut all = LatencySketch::new();
        for i in 0..5_000u64 {
            let v = (i * 7919) % 100_000;
            if i % 3 == 0 {
                a.add(v);
            } else {
                b.add(v);
            }
            all.add(v);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, all);
        let mut other_way = b;
        other_way.merge(&a);
        assert_eq!(other_way, all);
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let mut s = LatencySketch::new();
        for v in [0, 0, 1, 2, 3, 1_000, 1_000, 250_000, 3_600_000_000] {
            s.add(v);
        }
        let bytes = s.encode();
        assert_eq!(LatencySketch::decode(&bytes).unwrap(), s);
        assert_eq!(LatencySketch::decode(&[]).unwrap(), LatencySketch::new());
        assert!(LatencySketch::decode(&[9]).is_err());
        assert!(LatencySketch::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(LatencySketch::decode(&trailing).is_err());
        // Small: a version byte and a few bytes per bucket.
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
    }

    #[test]
    fn empty_and_zero_values() {
        let mut s = LatencySketch::new();
        assert_eq!(s.quantile(0.5), None);
        s.add(0);
        assert_eq!(s.quantile(0.99), Some(0.0));
        s.add_n(10, 3);
        assert_eq!(s.count(), 4);
        let p99 = s.quantile(0.99).unwrap();
        assert!((p99 - 10.0).abs() <= 0.1, "{p99}");
    }
}
