//! The network benchmark's statistics and verdicts, as plain functions over samples
//! (`src/bin/netbench.rs` measures, this judges): medians that say how many samples
//! were not finite instead of dropping them silently, ratios as medians of per-round
//! paired ratios, the path order rotating from round to round, memory readings that
//! may be missing, and a target judged only on a clean run with usable baselines.

use std::fmt;

/// The median of some samples, and how many were left out as not finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Median {
    /// NaN when no sample was finite.
    pub value: f64,
    pub non_finite: usize,
    pub samples: usize,
}

impl Median {
    /// Whether every sample was finite (and there was one).
    pub fn complete(&self) -> bool {
        self.samples > 0 && self.non_finite == 0
    }
}

/// The median of the finite samples (the upper one of an even count), with the
/// count of those left out.
pub fn median(samples: &[f64]) -> Median {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    let non_finite = samples.len() - v.len();
    if v.is_empty() {
        return Median { value: f64::NAN, non_finite, samples: samples.len() };
    }
    v.sort_by(f64::total_cmp);
    Median { value: v[v.len() / 2], non_finite, samples: samples.len() }
}

/// The `q`-th percentile (0-100) of the finite samples, nearest rank (the smallest
/// sample with at least q % of them at or below it); NaN when none is finite.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q / 100.0 * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median over rounds of `num[r] / den[r]`: each round's paths ran back to back,
/// so the ratio of a round cancels what drifted between rounds (another build, the
/// machine's temperature). A round whose denominator is not above zero gives a
/// non-finite ratio, counted as such.
pub fn paired_ratio(num: &[f64], den: &[f64]) -> Median {
    assert_eq!(num.len(), den.len(), "paired samples: one of each per round");
    let ratios: Vec<f64> = num.iter().zip(den).map(|(n, d)| if *d > 0.0 { n / d } else { f64::NAN }).collect();
    median(&ratios)
}

/// The order `items` run in during round `round`: rotated by one each round
/// (A B C, B C A, C A B, ...), so that no path always runs first, or always after
/// the same one.
pub fn rotation<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

/// What went wrong in the samples a verdict rests on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
}

impl Faults {
    pub fn add(&mut self, o: Faults) {
        self.errors += o.errors;
        self.non_2xx += o.non_2xx;
    }
}

/// A target on a ratio: `value vs baseline >= threshold` (or `<=`).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub at_least: bool,
    pub threshold: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Met,
    NotMet,
    /// The run cannot say: errors, a baseline of zero, missing samples.
    NotJudged(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Met => write!(f, "met"),
            Verdict::NotMet => write!(f, "NOT met"),
            Verdict::NotJudged(why) => write!(f, "not judged ({why})"),
        }
    }
}

/// Whether `target` is met by `ratio` (a [`paired_ratio`]) against `baseline`'s
/// median. "Met" needs a clean run (no error, no non-2xx answer in the samples it
/// rests on), a baseline median finite and above zero, and every paired ratio
/// finite; otherwise the verdict says why it is not given.
pub fn verdict(target: Target, ratio: Median, baseline: Median, faults: Faults) -> Verdict {
    let mut why = Vec::new();
    if faults.errors > 0 {
        why.push(format!("{} socket errors", faults.errors));
    }
    if faults.non_2xx > 0 {
        why.push(format!("{} non-2xx answers", faults.non_2xx));
    }
    if !(baseline.value.is_finite() && baseline.value > 0.0) {
        why.push(format!("baseline median {}", baseline.value));
    } else if !baseline.complete() {
        why.push(format!("{} of {} baseline samples not finite", baseline.non_finite, baseline.samples));
    }
    if !ratio.complete() {
        why.push(format!("{} of {} paired ratios not finite", ratio.non_finite, ratio.samples));
    }
    if !why.is_empty() {
        return Verdict::NotJudged(why.join(", "));
    }
    let ok = if target.at_least { ratio.value >= target.threshold } else { ratio.value <= target.threshold };
    if ok { Verdict::Met } else { Verdict::NotMet }
}

/// A memory reading in KiB, or why there is none (the process was gone, /proc
/// unreadable): shown as such, never as 0 MB.
pub fn megabytes(kib: Option<u64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MB", k as f64 / 1024.0),
        None => "unavailable (not read)".into(),
    }
}

/// The largest of the readings over rounds; None when any is missing (a maximum
/// is only as good as its worst reading) or there are none.
pub fn peak(readings: &[Option<u64>]) -> Option<u64> {
    let all: Option<Vec<u64>> = readings.iter().copied().collect();
    all?.into_iter().max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_LEAST_3: Target = Target { at_least: true, threshold: 3.0 };

    fn m(value: f64) -> Median {
        Median { value, non_finite: 0, samples: 3 }
    }

    #[test]
    fn medians_count_what_they_leave_out() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Median { value: 2.0, non_finite: 0, samples: 3 });
        assert_eq!(median(&[f64::NAN, 1.0, f64::INFINITY, 5.0]), Median { value: 5.0, non_finite: 2, samples: 4 });
        let none = median(&[f64::NAN]);
        assert!(none.value.is_nan() && none.non_finite == 1 && !none.complete());
        assert!(!median(&[]).complete());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0, f64::NAN, 3.0], 99.0), 7.0);
        assert_eq!(percentile(&[7.0, 3.0, 5.0], 50.0), 5.0);
        assert!(percentile(&[f64::NAN], 50.0).is_nan());
    }

    #[test]
    fn ratios_are_medians_of_per_round_pairs() {
        // the ratio of the medians would be 20/10 = 2; paired, each round is 1 or 3
        let c = [10.0, 20.0, 30.0];
        let a = [10.0, 10.0, 10.0];
        assert_eq!(paired_ratio(&c, &a).value, 2.0);
        let c = [30.0, 10.0, 60.0];
        let a = [10.0, 10.0, 20.0];
        assert_eq!(paired_ratio(&c, &a), Median { value: 3.0, non_finite: 0, samples: 3 });
        // a round with a zero baseline is a non-finite ratio, not a skipped round
        let r = paired_ratio(&[1.0, 2.0], &[0.0, 1.0]);
        assert_eq!((r.value, r.non_finite), (2.0, 1));
    }

    #[test]
    fn the_path_order_rotates_every_round() {
        let p = ['A', 'B', 'C'];
        let orders: Vec<String> = (0..4).map(|r| rotation(&p, r).into_iter().collect()).collect();
        assert_eq!(orders, ["ABC", "BCA", "CAB", "ABC"]);
        assert!(rotation::<char>(&[], 2).is_empty());
    }

    #[test]
    fn met_only_on_a_clean_run_with_a_usable_baseline() {
        let clean = Faults::default();
        assert_eq!(verdict(AT_LEAST_3, m(3.5), m(1000.0), clean), Verdict::Met);
        assert_eq!(verdict(AT_LEAST_3, m(2.5), m(1000.0), clean), Verdict::NotMet);
        let at_most = Target { at_least: false, threshold: 0.4 };
        assert_eq!(verdict(at_most, m(0.3), m(50.0), clean), Verdict::Met);
        assert_eq!(verdict(at_most, m(0.5), m(50.0), clean), Verdict::NotMet);
        // a fast failure is not a fast answer
        let errors = Faults { errors: 12, non_2xx: 0 };
        assert!(
            matches!(verdict(AT_LEAST_3, m(9.0), m(1000.0), errors), Verdict::NotJudged(w) if w.contains("12 socket errors"))
        );
        let non_2xx = Faults { errors: 0, non_2xx: 3 };
        assert!(
            matches!(verdict(AT_LEAST_3, m(9.0), m(1000.0), non_2xx), Verdict::NotJudged(w) if w.contains("3 non-2xx"))
        );
        // a baseline that measured nothing makes any ratio meaningless
        for bad in [m(0.0), m(f64::NAN), m(f64::INFINITY)] {
            assert!(matches!(verdict(AT_LEAST_3, m(9.0), bad, clean), Verdict::NotJudged(_)), "{bad:?}");
        }
        let partial = Median { value: 4.0, non_finite: 1, samples: 3 };
        assert!(
            matches!(verdict(AT_LEAST_3, partial, m(1000.0), clean), Verdict::NotJudged(w) if w.contains("1 of 3 paired"))
        );
        assert!(verdict(AT_LEAST_3, m(3.5), m(1000.0), clean).to_string() == "met");
    }

    #[test]
    fn a_missing_memory_reading_is_not_zero() {
        assert_eq!(megabytes(Some(2048)), "2.0 MB");
        assert_eq!(megabytes(None), "unavailable (not read)");
        assert_eq!(peak(&[Some(1), Some(5), Some(3)]), Some(5));
        assert_eq!(peak(&[Some(7), None]), None);
        assert_eq!(peak(&[]), None);
    }
}
