//! How a decode step prefetches the streams it reads once: a fixed [`StreamHint`], or the
//! faster of the two, measured while the steps run ([`Prefetch::Auto`]).
//!
//! Which hint is faster depends on what else runs on the core's caches, so on a shared
//! machine it can change from one hour to the next (see [`StreamHint`]). The tuner's first
//! `2 · `[`CALIBRATE`] steps alternate the two hints, and the ratio of the medians of each
//! side's times may switch the hint it holds, as a sample's median does below (but not confirm
//! it: so few steps are too few to explore less). Then it runs most steps with the
//! hint it holds and, at random, about one step in `explore` with the other. An explored step's
//! time over the median of the last [`RECENT`] steps of the held hint is one sample; after
//! [`WINDOW`] samples their median decides:
//! * below [`SWITCH_BELOW`]: the other hint is faster; it becomes the held one, and the
//!   samples start again at the highest exploration rate (at half the lowest if the gap is
//!   wider than [`WIDE_GAP`]);
//! * above [`CONFIRM_ABOVE`]: the held hint is confirmed, and exploration halves (down to one
//!   step in [`EXPLORE_LEAST`], or straight there past [`WIDE_GAP`]), so a slower hint costs
//!   less the longer, or the more clearly, it is known slower;
//! * between: nothing changes.
//!
//! A step's time changes little from one step to the next (the context grows by one token), so
//! neighbouring steps are fair baselines; the medians keep one step that a timer interrupt or
//! a neighbour's burst slowed from deciding anything. The draws come from a fixed seed, so a
//! run explores the same steps each time; they are random so that no period of the caller
//! (such as `tern bench`'s bandwidth probe every eighth step) lines up with them.

use std::sync::Mutex;
use std::time::Instant;

use crate::kernels::{StreamHint, set_stream_hint};

/// `LoadOptions::prefetch`: how the decode prefetches its read-once streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// Measure both hints while decoding and hold the faster (the module's tuner).
    #[default]
    Auto,
    /// Always this hint.
    Fixed(StreamHint),
}

impl Prefetch {
    /// Parses `auto`, `nta` or `l2`.
    pub fn from_name(s: &str) -> Option<Prefetch> {
        match s {
            "auto" => Some(Prefetch::Auto),
            _ => StreamHint::ALL
                .into_iter()
                .find(|h| h.name() == s)
                .map(Prefetch::Fixed),
        }
    }

    /// `auto`, `nta` or `l2`.
    pub fn name(self) -> &'static str {
        match self {
            Prefetch::Auto => "auto",
            Prefetch::Fixed(h) => h.name(),
        }
    }
}

/// Steps of each hint, alternated, that the tuner starts with.
pub const CALIBRATE: usize = 4;
/// Steps of the held hint whose median an explored step is compared with.
pub const RECENT: usize = 4;
/// Samples (explored steps) per decision.
pub const WINDOW: usize = 5;
/// The median sample under which the other hint is taken.
pub const SWITCH_BELOW: f64 = 0.97;
/// The median sample over which the held hint is confirmed.
pub const CONFIRM_ABOVE: f64 = 1.03;
/// A ratio of the two hints' times past which (or under whose inverse) the gap is wide: the
/// tuner then explores at once at (or near) its least frequent.
pub const WIDE_GAP: f64 = 1.15;
/// Exploration at its most frequent: one step in this many, on average.
pub const EXPLORE_MOST: u32 = 8;
/// Exploration at its least frequent.
pub const EXPLORE_LEAST: u32 = 64;

/// The tuner of one model (see the module).
#[derive(Debug)]
pub struct Tuner {
    mode: Prefetch,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    held: StreamHint,
    /// Seconds of the latest steps of the held hint, oldest first.
    recent: Vec<f64>,
    /// Explored steps' times over the held hint's.
    samples: Vec<f64>,
    /// One step in this many explores, on average.
    explore: u32,
    /// Steps of the first alternation run so far (up to `2 · CALIBRATE`), and the other
    /// hint's times in it.
    calibrated: usize,
    other: Vec<f64>,
    switches: u32,
    rng: u64,
}

/// A decode step under way: the hint it runs with, and whether that was an exploration.
#[derive(Debug)]
pub struct Trial {
    hint: StreamHint,
    explore: bool,
    start: Instant,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

impl Tuner {
    /// A tuner that starts with the non-temporal hint.
    pub fn new(mode: Prefetch) -> Tuner {
        Tuner {
            mode,
            state: Mutex::new(State {
                held: match mode {
                    Prefetch::Auto => StreamHint::default(),
                    Prefetch::Fixed(h) => h,
                },
                recent: Vec::with_capacity(RECENT),
                samples: Vec::with_capacity(WINDOW),
                explore: EXPLORE_MOST,
                calibrated: 0,
                other: Vec::with_capacity(CALIBRATE),
                switches: 0,
                rng: 0x9e37_79b9_7f4a_7c15,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few numbers always left consistent: a panic elsewhere cannot spoil it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The option it was made with.
    pub fn mode(&self) -> Prefetch {
        self.mode
    }

    /// The hint it holds now.
    pub fn held(&self) -> StreamHint {
        self.lock().held
    }

    /// How many times it changed the held hint.
    pub fn switches(&self) -> u32 {
        self.lock().switches
    }

    /// Picks the hint of the decode step about to run and sets it for the kernels.
    pub fn begin(&self) -> Trial {
        let mut s = self.lock();
        let explore = self.mode == Prefetch::Auto
            && if s.calibrated < 2 * CALIBRATE {
                s.calibrated % 2 == 1
            } else {
                s.recent.len() >= 2 && s.draw().is_multiple_of(u64::from(s.explore))
            };
        let hint = if explore { s.held.other() } else { s.held };
        set_stream_hint(hint);
        Trial {
            hint,
            explore,
            start: Instant::now(),
        }
    }

    /// Records the step `trial` began, now ended.
    pub fn end(&self, trial: Trial) {
        let secs = trial.start.elapsed().as_secs_f64();
        self.record(trial.hint, trial.explore, secs);
    }

    /// [`Tuner::end`] with the step's time given.
    fn record(&self, hint: StreamHint, explore: bool, secs: f64) {
        if self.mode != Prefetch::Auto {
            return;
        }
        let mut s = self.lock();
        if s.calibrated < 2 * CALIBRATE {
            if explore {
                s.other.push(secs);
            } else {
                s.push_recent(secs);
            }
            s.calibrated += 1;
            if s.calibrated == 2 * CALIBRATE {
                // It may switch, but not confirm: a few steps are too few to explore less.
                let m = median(&s.other) / median(&s.recent);
                s.other.clear();
                s.decide(m.min(1.0));
            }
            return;
        }
        // A step ran with the hint held when it began; another caller's step (a model is
        // shared) may have switched it since, and then its time speaks for neither side.
        if !explore {
            if hint == s.held {
                s.push_recent(secs);
            }
            return;
        }
        if s.recent.is_empty() || hint == s.held {
            return;
        }
        let sample = secs / median(&s.recent);
        s.samples.push(sample);
        if s.samples.len() == WINDOW {
            let m = median(&s.samples);
            s.samples.clear();
            s.decide(m);
        }
    }
}

impl State {
    /// The next pseudo-random number (SplitMix64).
    fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Acts on the median `m` of the other hint's times over the held one's.
    fn decide(&mut self, m: f64) {
        if m < SWITCH_BELOW {
            self.held = self.held.other();
            self.recent.clear();
            self.switches += 1;
            // A wide gap needs less checking, and each check of the slower hint costs more.
            self.explore = if m < 1.0 / WIDE_GAP {
                EXPLORE_LEAST / 2
            } else {
                EXPLORE_MOST
            };
        } else if m > CONFIRM_ABOVE {
            self.explore = if m > WIDE_GAP {
                EXPLORE_LEAST
            } else {
                (self.explore * 2).min(EXPLORE_LEAST)
            };
        }
    }

    /// Keeps `secs` among the held hint's latest [`RECENT`] step times.
    fn push_recent(&mut self, secs: f64) {
        if self.recent.len() == RECENT {
            self.recent.remove(0);
        }
        self.recent.push(secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` decisions with step times from `time(hint)`; returns the hints run.
    fn drive(t: &Tuner, steps: usize, time: impl Fn(StreamHint) -> f64) -> Vec<StreamHint> {
        (0..steps)
            .map(|_| {
                let trial = t.begin();
                let h = trial.hint;
                t.record(h, trial.explore, time(h));
                h
            })
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for p in [
            Prefetch::Auto,
            Prefetch::Fixed(StreamHint::NonTemporal),
            Prefetch::Fixed(StreamHint::L2),
        ] {
            assert_eq!(Prefetch::from_name(p.name()), Some(p));
        }
        assert_eq!(Prefetch::from_name("t0"), None);
    }

    #[test]
    fn auto_moves_to_the_faster_hint_and_stays() {
        let t = Tuner::new(Prefetch::Auto);
        assert_eq!(t.held(), StreamHint::NonTemporal);
        let ran = drive(&t, 400, |h| if h == StreamHint::L2 { 0.83 } else { 1.0 });
        assert_eq!(t.held(), StreamHint::L2);
        assert_eq!(t.switches(), 1);
        // After the switch, the slower hint is explored less and less often.
        let late = ran[200..].iter().filter(|&&h| h != StreamHint::L2).count();
        assert!(late * 32 <= 200, "{late} of the last 200 steps explored");
    }

    #[test]
    fn auto_keeps_the_faster_hint_it_holds() {
        let t = Tuner::new(Prefetch::Auto);
        drive(&t, 400, |h| if h == StreamHint::L2 { 1.06 } else { 1.0 });
        assert_eq!((t.held(), t.switches()), (StreamHint::NonTemporal, 0));
    }

    #[test]
    fn auto_follows_a_change_of_the_machine() {
        let t = Tuner::new(Prefetch::Auto);
        drive(&t, 300, |h| if h == StreamHint::L2 { 0.8 } else { 1.0 });
        assert_eq!(t.held(), StreamHint::L2);
        drive(&t, 2000, |h| if h == StreamHint::L2 { 1.1 } else { 1.0 });
        assert_eq!((t.held(), t.switches()), (StreamHint::NonTemporal, 2));
    }

    /// Step times as a shared machine gives them: ±10 % of jitter on every step and one step
    /// in twenty half again as long.
    fn noisy(seed: u64, l2: f64) -> impl Fn(StreamHint) -> f64 {
        let state = std::cell::RefCell::new(State {
            rng: seed,
            ..Tuner::new(Prefetch::Auto).state.into_inner().unwrap()
        });
        move |h| {
            let s = state.borrow_mut().draw();
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            let burst = if s.is_multiple_of(20) { 1.5 } else { 1.0 };
            let base = if h == StreamHint::L2 { l2 } else { 1.0 };
            base * (0.9 + 0.2 * u) * burst
        }
    }

    /// Through the noise, over 200 runs of 400 steps each way: every run ends on the faster
    /// hint, the runs spend 92 % of their steps on it on average (the rest is exploring), and
    /// none less than 70 % (observed: 0.962 and 0.936 on average, 0.865 and 0.72 at worst).
    #[test]
    fn noise_does_not_mislead_it() {
        for (l2, faster) in [(0.83, StreamHint::L2), (1.08, StreamHint::NonTemporal)] {
            let shares: Vec<f64> = (0..200)
                .map(|seed| {
                    let t = Tuner::new(Prefetch::Auto);
                    let ran = drive(&t, 400, noisy(seed, l2));
                    assert_eq!(t.held(), faster, "seed {seed}, l2 at {l2}");
                    ran.iter().filter(|&&h| h == faster).count() as f64 / 400.0
                })
                .collect();
            let mean = shares.iter().sum::<f64>() / shares.len() as f64;
            let worst = shares.iter().copied().fold(1.0, f64::min);
            assert!(
                mean >= 0.92 && worst >= 0.7,
                "l2 at {l2}: {mean} on average, {worst} at worst"
            );
        }
    }

    #[test]
    fn equal_hints_never_switch() {
        let t = Tuner::new(Prefetch::Auto);
        drive(&t, 1000, |_| 1.0);
        assert_eq!(t.switches(), 0);
    }

    #[test]
    fn a_fixed_hint_never_explores() {
        let t = Tuner::new(Prefetch::Fixed(StreamHint::L2));
        let ran = drive(&t, 200, |h| if h == StreamHint::L2 { 2.0 } else { 1.0 });
        assert!(ran.iter().all(|&h| h == StreamHint::L2));
        assert_eq!(t.switches(), 0);
    }
}
