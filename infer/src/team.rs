//! A fork-join for the short parallel regions of a decode step: persistent workers that spin
//! between regions instead of sleeping.
//!
//! A decode step of the 700M shape runs about 190 parallel regions (q, k, v, attention, o,
//! gate, up, down per layer, then the head), each some tens of microseconds long. Through
//! rayon, every region paid for waking or finding the other workers (`sched_yield` loops,
//! futex wake-ups, deque steals): at two threads about 0.18 of the CPU time of the step went to
//! the scheduler (`perf record -e cpu-clock`, `tern bench -p 128 -n 64 --threads 2`). Here a
//! region costs a few atomic operations: the caller publishes the job, every worker that is
//! spinning joins, and the caller works too.
//!
//! * Each thread takes a contiguous share of the tasks (a matrix's rows in order), then steals
//!   single tasks from the ends of the others' shares. With one shared counter instead, the two
//!   threads took alternate tasks: each thread's stream jumped at every task, and the rows its
//!   prefetches had requested ahead were the other thread's (decode slower than through rayon:
//!   85.1, 82.9, 78.2 against 94.0, 97.6, 77.7 tok/s, alternated runs).
//! * Measured (700M 2-bit, two threads, `-p 128 -n 64`, eight alternated runs against the
//!   build before, which used rayon): decode 54.6–81.3 (median 76.2) → 79.5–96.4 (median 87.5)
//!   tok/s; 2B4T 22.2–23.0 → 22.0–29.0 tok/s (four runs). One thread does not use the team.
//! * Prefill's regions (milliseconds long, where rayon's cost did not show) run on it too, so
//!   that one set of threads serves the whole forward.
//! * The team of the current rayon pool's size is used (`--threads` sets it), so the thread
//!   count has one meaning; each size's team is created once and lives with the process.
//! * A worker spins [`SPIN`] after its last region, then parks on a condition variable: an idle
//!   engine takes no CPU, and the first region after a pause wakes it.
//! * The caller never waits for a worker that has not joined: a job is closed as soon as all
//!   its tasks are claimed and the workers that joined have finished. On a busy machine, where
//!   a worker is descheduled, a region runs on fewer threads instead of stalling.
//! * One job at a time per team; a caller that finds it busy (two models decoding on the same
//!   pool size at once, as tests do) runs its region on rayon instead.
//! * The caller may name the memory of the region after the next ([`prime_next`]): a worker that
//!   runs out of tasks prefetches the start of its share of it ([`PRIME`] bytes) instead of
//!   idling through the end of the region and the serial code after it.
//! * A panic in a task is caught on the thread that ran it, the job is closed, and the caller
//!   resumes the panic: borrowed data never outlives a task that uses it.
//! * A decode step on several threads runs as one lockstep job instead ([`lockstep()`]): every
//!   thread walks the whole step, and its parallel loops end in barriers, so that the step
//!   publishes one job rather than some 120.

use std::any::Any;
use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

mod lockstep;
pub use lockstep::{Lock, lockstep};

/// How long a worker spins for the next region before it parks. Longer than the serial work
/// between two regions of a decode step (a norm, the attention's bookkeeping: microseconds),
/// shorter than anything a user would notice as a busy core.
pub const SPIN: Duration = Duration::from_millis(2);

/// Runs `f(t)` for every `t` in `0..tasks`, on the threads of the current rayon pool, and
/// returns when all have run. Each thread (the caller too) runs a contiguous share of the tasks
/// in increasing order, then takes single tasks from the ends of the shares still unfinished.
pub fn for_each(tasks: usize, f: impl Fn(usize) + Sync) {
    let threads = rayon::current_num_threads();
    if tasks <= 1 || threads <= 1 {
        return (0..tasks).for_each(f);
    }
    // More tasks than a range word holds, or the team busy with another caller's job: rayon.
    if tasks > u32::MAX as usize || Team::of(threads).try_run(tasks, &f, false).is_err() {
        (0..tasks).into_par_iter().for_each(&f);
    }
}

/// Bytes of its share of the next region a worker prefetches after its last task of a region
/// (while the caller finishes the region and does the serial work between the two: norms,
/// quantization, RoPE, the KV append; about 0.06 of a 700M decode step at two threads, in some
/// 120 gaps). In-process A/B runs that alternate per decode step (700M 2-bit, two threads,
/// `-p 128 -n 256`), time per token without priming: +2.2, +2.2, +0.5, +5.8, +0.6 %; 2B4T
/// +2.2, +0.5, -0.5 %. Against 64 KB: 24 KB +1.5 to +4.9 %, 128 KB -0.8 to +3.6 %, 256 KB
/// +0.3 to +6.0 %.
pub const PRIME: usize = 64 << 10;

thread_local! {
    /// The caller's hint for its next region (see [`prime_next`]).
    static NEXT: std::cell::RefCell<Vec<(usize, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Names the memory that the region after the next one on this thread will read (`regions` in
/// the order of its tasks, say a layer's weights): a worker that runs out of tasks in the next
/// region prefetches the start of its share of that one, instead of idling while the caller
/// finishes and runs the serial code between them. Only addresses are kept: a prefetch reads
/// nothing and never faults.
pub fn prime_next(regions: &[&[u8]]) {
    NEXT.with(|n| {
        let mut n = n.borrow_mut();
        n.clear();
        n.extend(regions.iter().map(|r| (r.as_ptr() as usize, r.len())));
    });
}

/// The pieces of `next` that thread `me` of `threads` reads first, `PRIME` bytes at most
/// (its share starts `me / threads` of the way in, as `for_each` hands out tasks).
fn share_start(
    next: &[(usize, usize)],
    me: usize,
    threads: usize,
    out: &mut [(usize, usize); 4],
) -> usize {
    let total: usize = next.iter().map(|p| p.1).sum();
    let (mut skip, mut want, mut k) = (total / threads * me, PRIME, 0);
    for &(a, len) in next {
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(want);
        out[k] = (a + skip, take);
        (k, skip, want) = (k + 1, 0, want - take);
        if want == 0 || k == out.len() {
            break;
        }
    }
    k
}

/// The round trip between two threads of the current pool's team, in nanoseconds: one thread
/// writes a counter, the other answers, for about `millis` milliseconds, and the median of the
/// trip's mean over each batch of 64 is returned (the mean over all of them read 500–3,000 ns
/// in some runs, against 50–70 or about 400 in the others: a thread the host holds up weighs
/// on a mean, not on a median); `None` with fewer than two threads, or when the two tasks did
/// not run at once (one CPU, or a loaded machine that kept one of them off a CPU for the
/// 100 ms wait). A team busy with another caller's job runs
/// them on rayon's threads instead, which meet as well.
///
/// Every parallel region of a decode step costs a few such trips (publishing the job, joining,
/// closing), and so does each cache line one thread writes and the other reads next (a
/// region's outputs, the activations after a norm). On a virtual machine the trip depends on
/// where the host places the virtual CPUs. On the 2-vCPU Zen 4 machine this project was built
/// on it read 50–70 ns in most runs and about 430 ns in the others, whose read bandwidth was
/// higher (48–60 GB/s against 34–46); the 700M shape's two-thread decode reached 0.83–0.88 of
/// its roofline in the first state and 0.65–0.72 in the second, where each of its ~120
/// regions per step ran some 10 µs longer. `tern bench` reports the trip, so that a roofline
/// fraction comes with the state it was measured in.
pub fn round_trip_ns(millis: u64) -> Option<f64> {
    const STOP: u64 = u64::MAX;
    const BATCH: u64 = 64;
    if rayon::current_num_threads() < 2 {
        return None;
    }
    let budget = Duration::from_millis(millis);
    // Both tasks must be running before the first trip; either gives up after `wait`.
    let wait = Duration::from_millis(100);
    let arrived = AtomicUsize::new(0);
    let counter = Line(AtomicU64::new(0));
    let result = Mutex::new(None);
    let meet = |start: Instant| -> bool {
        arrived.fetch_add(1, Ordering::AcqRel);
        while arrived.load(Ordering::Acquire) < 2 {
            if start.elapsed() > wait {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    };
    for_each(2, |t| {
        let start = Instant::now();
        if !meet(start) {
            // Alone: the other task, if it comes later, finds the stop (stored first) and
            // leaves at once.
            counter.0.store(STOP, Ordering::Release);
            arrived.fetch_add(2, Ordering::AcqRel);
            return;
        }
        let c = &counter.0;
        if c.load(Ordering::Acquire) == STOP {
            return;
        }
        if t == 1 {
            // Answers each odd value with the next even one, until told to stop.
            let mut want = 1;
            loop {
                let v = c.load(Ordering::Acquire);
                if v == STOP {
                    return;
                }
                if v == want {
                    c.store(want + 1, Ordering::Release);
                    want += 2;
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        let t0 = Instant::now();
        let mut trips = 0u64;
        // Each batch's time per trip: their median, so that a batch the host interrupted
        // (a descheduled thread, a page fault) does not move it.
        let mut batches = Vec::new();
        'run: while t0.elapsed() < budget {
            let b0 = Instant::now();
            for _ in 0..BATCH {
                let v = 2 * trips + 1;
                c.store(v, Ordering::Release);
                let mut spins = 0u32;
                while c.load(Ordering::Acquire) != v + 1 {
                    std::hint::spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(4096) && t0.elapsed() > budget + wait {
                        break 'run;
                    }
                }
                trips += 1;
            }
            batches.push(b0.elapsed().as_secs_f64() * 1e9 / BATCH as f64);
        }
        c.store(STOP, Ordering::Release);
        if !batches.is_empty() {
            batches.sort_by(f64::total_cmp);
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(batches[batches.len() / 2]);
        }
    });
    result.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// An output buffer shared by the tasks of a region that write disjoint elements of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

// SAFETY: only used by regions whose tasks write disjoint elements.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer itself (a method, so that a closure captures the whole `OutPtr`).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// `at .. at + len` is inside the buffer and no other thread touches it meanwhile.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, at: usize, len: usize) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// `[n, width]` values of which each task of a region writes its own tokens' rows.
pub(crate) struct TokenRows<T> {
    ptr: *mut T,
    n: usize,
    width: usize,
}

impl<T> Clone for TokenRows<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for TokenRows<T> {}

// SAFETY: only used by regions whose tasks write disjoint tokens.
unsafe impl<T: Send> Send for TokenRows<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for TokenRows<T> {}

impl<T> TokenRows<T> {
    /// `buf` as `[buf.len() / width, width]`.
    pub(crate) fn new(buf: &mut [T], width: usize) -> TokenRows<T> {
        assert!(
            width > 0 && buf.len().is_multiple_of(width),
            "rows of {width}"
        );
        TokenRows {
            ptr: buf.as_mut_ptr(),
            n: buf.len() / width,
            width,
        }
    }

    /// The rows of `tokens`.
    ///
    /// # Safety
    /// The buffer outlives the slice, and no other thread touches these rows meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rows<'a>(self, tokens: Range<usize>) -> &'a mut [T] {
        assert!(tokens.start <= tokens.end && tokens.end <= self.n, "tokens");
        let len = (tokens.end - tokens.start) * self.width;
        // SAFETY: inside the buffer (checked); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(tokens.start * self.width), len) }
    }
}

/// Runs `f(tokens)` over ranges of `0..n` on the threads of the current pool: the per-token
/// work of a prefill between two matrix regions (norms, RoPE, the gate, the quantizer), which
/// would otherwise run on the caller alone while the other threads wait. A single token (a
/// decode step) runs at once, on the caller.
pub fn for_tokens(n: usize, f: impl Fn(Range<usize>) + Sync) {
    let threads = rayon::current_num_threads();
    if n < 2 || threads < 2 {
        return f(0..n);
    }
    // Two ranges per thread: the team's stealing evens out a slow start.
    let per = n.div_ceil(2 * threads);
    for_each(n.div_ceil(per), |c| f(c * per..((c + 1) * per).min(n)));
}

/// [`for_tokens`] over the token rows of `buf` (`[n, width]`): `f(first, rows)`, `rows` being
/// the rows of tokens `first ..`.
pub fn for_token_rows<T: Send>(buf: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows = TokenRows::new(buf, width);
    for_tokens(rows.n, |t| {
        let first = t.start;
        // SAFETY: `for_tokens` hands out disjoint ranges, and `buf` is borrowed for the call.
        f(first, unsafe { rows.rows(t) })
    });
}

/// [`for_token_rows`] over two buffers of the same tokens (`[n, wa]` and `[n, wb]`):
/// `f(first, a_rows, b_rows)`.
pub fn for_token_rows2<A: Send, B: Send>(
    (a, wa): (&mut [A], usize),
    (b, wb): (&mut [B], usize),
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (ra, rb) = (TokenRows::new(a, wa), TokenRows::new(b, wb));
    assert_eq!(ra.n, rb.n, "the same tokens");
    for_tokens(ra.n, |t| {
        // SAFETY: `for_tokens` hands out disjoint ranges, and both buffers are borrowed for
        // the call.
        let (x, y) = unsafe { (ra.rows(t.clone()), rb.rows(t.clone())) };
        f(t.start, x, y)
    });
}

/// The team was running another caller's job.
struct Busy;

/// The job's task body, with its borrow's lifetime erased: valid while the job is open or a
/// worker that joined it has not finished (the caller waits for both before returning).
type Task = *const (dyn Fn(usize) + Sync);

/// `state` bits: the job counter in the high half, whether it is open, and the workers in it.
const OPEN: u64 = 1 << 31;
const ACTIVE: u64 = OPEN - 1;
const EPOCH: u64 = 1 << 32;

/// A range of tasks in one word.
fn range(start: usize, end: usize) -> u64 {
    ((start as u64) << 32) | end as u64
}

/// Pads a value to its own cache line, so that workers spinning on one do not slow the others.
#[repr(align(128))]
struct Line<T>(T);

struct Team {
    /// `[job counter: 32 | open: 1 | workers in the job: 31]`.
    state: Line<AtomicU64>,
    /// Per thread (the caller first), its share of the tasks still unclaimed, `[start: 32 |
    /// end: 32]`: a contiguous range, so that each thread streams on through the rows its
    /// kernels' prefetches have already requested.
    ranges: Vec<Line<AtomicU64>>,
    /// The job's body. Written only by the holder of `busy`, while the job is
    /// closed and no worker is in it.
    job: UnsafeCell<Task>,
    /// The memory the region after the job reads, `(address, bytes)` pieces in order (see
    /// [`prime_next`]); written like `job`.
    next: UnsafeCell<Vec<(usize, usize)>>,
    /// Held by the caller of the running job.
    busy: AtomicBool,
    /// A lockstep job's shares of its current phase (see [`lockstep()`]).
    phases: Vec<Line<AtomicU64>>,
    /// A lockstep job's arrivals at the ends of its phases so far.
    arrived: Line<AtomicU64>,
    /// A lockstep participant panicked: the others leave their barriers.
    aborted: AtomicBool,
    /// A task's panic, kept for the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Parked workers and their wake-up.
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread holding `busy`, while no worker is in a job (see
// `try_run`), and read only by workers inside the open job it describes.
unsafe impl Sync for Team {}

impl Team {
    /// The team for `threads` threads (the caller and `threads - 1` workers), created at first
    /// use and kept for the rest of the process.
    fn of(threads: usize) -> &'static Team {
        // The last team this thread used, so that a region costs no lock and no hash.
        thread_local! {
            static LAST: std::cell::Cell<Option<(usize, &'static Team)>> =
                const { std::cell::Cell::new(None) };
        }
        if let Some((n, team)) = LAST.get()
            && n == threads
        {
            return team;
        }
        let team = Team::create(threads);
        LAST.set(Some((threads, team)));
        team
    }

    /// [`Team::of`] through the process-wide table.
    fn create(threads: usize) -> &'static Team {
        static TEAMS: OnceLock<Mutex<HashMap<usize, &'static Team>>> = OnceLock::new();
        let mut teams = TEAMS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        teams.entry(threads).or_insert_with(|| {
            let noop: &'static (dyn Fn(usize) + Sync) = &|_| {};
            let team: &'static Team = Box::leak(Box::new(Team {
                state: Line(AtomicU64::new(0)),
                ranges: (0..threads).map(|_| Line(AtomicU64::new(0))).collect(),
                job: UnsafeCell::new(noop as Task),
                next: UnsafeCell::new(Vec::new()),
                busy: AtomicBool::new(false),
                phases: (0..threads).map(|_| Line(AtomicU64::new(0))).collect(),
                arrived: Line(AtomicU64::new(0)),
                aborted: AtomicBool::new(false),
                panic: Mutex::new(None),
                sleepers: AtomicUsize::new(0),
                park: Mutex::new(()),
                wake: Condvar::new(),
            }));
            for i in 1..threads {
                std::thread::Builder::new()
                    .name(format!("tern-team-{threads}-{i}"))
                    .spawn(move || team.work(i))
                    .expect("spawning a worker thread");
            }
            team
        })
    }

    /// Runs the job on the caller and the workers that join it; `Err(Busy)` (having run
    /// nothing) when another caller's job is running. A `lockstep` job starts with its phase
    /// state cleared.
    fn try_run(
        &self,
        tasks: usize,
        f: &(dyn Fn(usize) + Sync),
        lockstep: bool,
    ) -> Result<(), Busy> {
        if self.busy.swap(true, Ordering::Acquire) {
            return Err(Busy);
        }
        if lockstep {
            // Ordered before the workers' reads by the job's publication below.
            for p in &self.phases {
                p.0.store(0, Ordering::Relaxed);
            }
            self.arrived.0.store(0, Ordering::Relaxed);
            self.aborted.store(false, Ordering::Relaxed);
        }
        // SAFETY: the lifetime is erased only for the duration of this call: the job is closed
        // below, after every worker in it has left, before `f`'s borrow ends.
        let task: Task = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Task>(f) };
        // SAFETY: this thread holds `busy` and the previous job is closed with no worker in it.
        unsafe { *self.job.get() = task };
        // SAFETY: as above.
        NEXT.with(|n| unsafe { std::ptr::swap(self.next.get(), &mut *n.borrow_mut()) });
        let threads = self.ranges.len();
        for (i, r) in self.ranges.iter().enumerate() {
            r.0.store(
                range(i * tasks / threads, (i + 1) * tasks / threads),
                Ordering::Relaxed,
            );
        }
        let epoch = (self.state.0.load(Ordering::Relaxed) & !(OPEN | ACTIVE)).wrapping_add(EPOCH);
        // Publishes the job (and the ranges); SeqCst pairs with a parking worker's check.
        self.state.0.store(epoch | OPEN, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _park = self.park.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| self.claim(f, 0)));
        // Close: wait until the workers in the job have left, then shut it to late ones.
        loop {
            let s = self.state.0.load(Ordering::Acquire);
            if s & ACTIVE == 0
                && self
                    .state
                    .0
                    .compare_exchange_weak(s, epoch, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::hint::spin_loop();
        }
        NEXT.with(|n| n.borrow_mut().clear());
        let theirs = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.busy.store(false, Ordering::Release);
        if let Err(p) = mine {
            // A lockstep peer's panic is the cause of the caller's own.
            if p.is::<lockstep::PeerPanicked>()
                && let Some(t) = theirs
            {
                resume_unwind(t);
            }
            resume_unwind(p);
        }
        if let Some(p) = theirs {
            resume_unwind(p);
        }
        Ok(())
    }

    /// Runs the tasks of thread `me`'s range from its start, then those left in the others'
    /// ranges from their ends, until none is left.
    fn claim(&self, f: &(dyn Fn(usize) + Sync), me: usize) {
        let threads = self.ranges.len();
        for v in (0..threads).map(|i| (me + i) % threads) {
            let r = &self.ranges[v].0;
            let mut cur = r.load(Ordering::Relaxed);
            loop {
                let (start, end) = ((cur >> 32) as usize, (cur & 0xffff_ffff) as usize);
                if start >= end {
                    break;
                }
                let (next, t) = if v == me {
                    (range(start + 1, end), start)
                } else {
                    (range(start, end - 1), end - 1)
                };
                match r.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        f(t);
                        cur = r.load(Ordering::Relaxed);
                    }
                    Err(now) => cur = now,
                }
            }
        }
    }

    /// A worker: joins every open job it sees, spins between jobs, parks when idle.
    fn work(&self, me: usize) {
        let mut seen = 0u64;
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let s = self.state.0.load(Ordering::Acquire);
            let epoch = s & !(OPEN | ACTIVE);
            if s & OPEN != 0 && epoch != seen {
                // Join, unless the job was closed (or the count changed) meanwhile.
                if self
                    .state
                    .0
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                seen = epoch;
                // SAFETY: inside the open job, whose caller waits for this worker to leave
                // before it rewrites `job` or lets `f` go.
                let f = unsafe { &*(*self.job.get()) };
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.claim(f, me))) {
                    *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                }
                // What to prefetch, read while in the job (the caller rewrites it for the next).
                let mut plan = [(0, 0); 4];
                // SAFETY: inside the job, as `f` above.
                let pieces = share_start(
                    unsafe { &*self.next.get() },
                    me,
                    self.ranges.len(),
                    &mut plan,
                );
                self.state.0.fetch_sub(1, Ordering::Release);
                self.prefetch(&plan[..pieces], seen);
                idle_since = Instant::now();
                spins = 0;
                continue;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && idle_since.elapsed() >= SPIN {
                self.sleep(seen);
                idle_since = Instant::now();
            }
        }
    }

    /// Prefetches `pieces` into L2 in steps of 1 KB, stopping early when a job newer than `seen`
    /// opens.
    fn prefetch(&self, pieces: &[(usize, usize)], seen: u64) {
        for &(a, len) in pieces {
            for off in (0..len).step_by(1024) {
                let s = self.state.0.load(Ordering::Relaxed);
                if s & OPEN != 0 && s & !(OPEN | ACTIVE) != seen {
                    return;
                }
                crate::kernels::prefetch_l2_raw((a + off) as *const i8, 1024.min(len - off));
            }
        }
    }

    /// Parks until a job newer than `seen` opens (or a spurious wake-up).
    fn sleep(&self, seen: u64) {
        let guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let s = self.state.0.load(Ordering::SeqCst);
        let pending = s & OPEN != 0 && s & !(OPEN | ACTIVE) != seen;
        if !pending {
            drop(self.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    pub(super) fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn token_rows_reach_every_token_once_with_its_own_index() {
        for threads in [1, 2, 3] {
            pool(threads).install(|| {
                for n in [0, 1, 2, 7, 128] {
                    let (mut a, mut b) = (vec![u32::MAX; n * 3], vec![0u8; n]);
                    for_token_rows2((&mut a, 3), (&mut b, 1), |first, a, b| {
                        assert_eq!(a.len(), 3 * b.len());
                        for (i, (row, c)) in a.chunks_exact_mut(3).zip(b).enumerate() {
                            row.fill((first + i) as u32);
                            *c += 1;
                        }
                    });
                    let want: Vec<u32> = (0..n as u32).flat_map(|i| [i; 3]).collect();
                    assert_eq!(a, want, "{threads} threads, {n} tokens");
                    assert!(b.iter().all(|&c| c == 1), "{threads} threads, {n} tokens");
                }
            });
        }
    }

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in [1, 2, 3] {
            pool(threads).install(|| {
                for tasks in [0, 1, 2, 7, 16, 257] {
                    for _ in 0..50 {
                        let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                        for_each(tasks, |t| {
                            hits[t].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(
                            hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                            "{threads} threads, {tasks} tasks"
                        );
                    }
                }
            });
        }
    }

    #[test]
    fn the_round_trip_is_measured_on_two_threads_and_not_on_one() {
        assert_eq!(pool(1).install(|| round_trip_ns(5)), None);
        // Two threads (the team's, or rayon's when a concurrent test holds the team): a
        // measurement may find the other thread descheduled on a loaded machine and give up,
        // so it is tried until one meets.
        let two = pool(2);
        let ns = (0..50).find_map(|_| two.install(|| round_trip_ns(5)));
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            let ns = ns.expect("two threads met in none of 50 tries");
            assert!(ns.is_finite() && ns > 0.0, "{ns}");
        }
    }

    #[test]
    fn a_workers_prime_starts_at_its_share_and_spans_pieces() {
        let mut plan = [(0, 0); 4];
        // Two threads over 100 + 50 + 200 bytes: the second's share starts at byte 175.
        let next = [(1000, 100), (5000, 50), (9000, 200)];
        assert_eq!(share_start(&next, 1, 2, &mut plan), 1);
        assert_eq!(plan[0], (9025, 175));
        // Large pieces: `PRIME` bytes from the share's start, across a piece boundary.
        let half = PRIME / 2;
        let next = [(0, 3 * PRIME), (1 << 40, 2 * PRIME)];
        assert_eq!(share_start(&next, 1, 2, &mut plan), 2);
        assert_eq!(plan[..2], [(5 * half, half), (1 << 40, half)]);
        // Nothing named: nothing to prefetch.
        assert_eq!(share_start(&[], 1, 2, &mut plan), 0);
    }

    #[test]
    fn regions_after_a_pause_wake_the_parked_workers() {
        pool(2).install(|| {
            let ran = AtomicUsize::new(0);
            for_each(4, |_| {
                ran.fetch_add(1, Ordering::Relaxed);
            });
            std::thread::sleep(SPIN * 3);
            // The workers are parked now; the next region still runs every task.
            let workers = Mutex::new(std::collections::HashSet::new());
            for _ in 0..200 {
                for_each(8, |_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    workers.lock().unwrap().insert(std::thread::current().id());
                    std::thread::sleep(Duration::from_micros(50));
                });
            }
            assert_eq!(ran.load(Ordering::Relaxed), 4 + 200 * 8);
            // Tasks that sleep leave room for the worker: more than one thread ran some (three
            // when a concurrent test held the team and a region fell back to rayon).
            assert!(workers.lock().unwrap().len() >= 2);
        });
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_recovers() {
        pool(2).install(|| {
            for round in 0..20 {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    for_each(16, |t| {
                        if t == (round * 7) % 16 {
                            panic!("task {t}");
                        }
                        std::thread::sleep(Duration::from_micros(20));
                    })
                }));
                assert!(r.is_err(), "round {round}: the panic was lost");
                let sum = AtomicUsize::new(0);
                for_each(16, |t| {
                    sum.fetch_add(t, Ordering::Relaxed);
                });
                assert_eq!(sum.load(Ordering::Relaxed), 120);
            }
        });
    }
}
