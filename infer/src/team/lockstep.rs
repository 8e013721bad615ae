//! Lockstep jobs: every thread of the team runs the same body at once, and the body's parallel
//! loops ([`Lock::for_each`]) end in a barrier instead of a fork and a join.
//!
//! A decode step through [`super::for_each`] publishes some 120 regions, one after the other:
//! for each, the caller writes the job, a worker sees it, joins it and reads its closure and
//! captures (lines the caller has just written), and at its end the caller waits for the
//! workers to leave, then runs the serial work (a norm, the int8 quantizer) while they spin.
//! Where the two CPUs of this project's machine were placed far apart (a thread round trip of
//! about 400 ns), each of those regions ran some 10 µs longer than its bytes take. In a
//! lockstep job each thread walks the step itself: it builds its own closures, keeps its own
//! copy of the serial state (the hidden state, the normed and quantized inputs) and computes
//! it redundantly, and between two loops only the loops' outputs pass from thread to thread.
//!
//! * A loop's tasks are shared as in [`super::for_each`]: each thread takes a contiguous share
//!   from its start, then single tasks from the ends of the others'. A share is tagged with its
//!   phase (the loop's number in the job); the first thread to reach a phase arms the shares of
//!   those that have not, so that a late thread's tasks are taken by the others.
//! * A loop ends in a barrier that every thread must reach: its outputs are complete, and no
//!   thread writes a buffer the others may still read, before all have arrived. A thread that
//!   arrives early prefetches the start of its share of the memory the caller names for the
//!   next loop.
//! * A panic in one thread makes the others leave their barriers with a panic of their own;
//!   the caller resumes the first.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;

use super::{Team, share_start};

/// The panic a lockstep thread raises when a peer panicked (the caller resumes the peer's).
pub(super) struct PeerPanicked;

/// Pauses a thread spins at a barrier before it yields its CPU at each further check: about
/// 30 µs on Zen 4 (29 ns a pause), some ten times the mean wait of a decode step's loops
/// (0.3–3.8 µs in a tally of 700M runs at two threads). With three threads on two CPUs, a
/// 700M decode ran 62 tok/s this way (the regions: 65).
const SPINS: u32 = 1 << 10;

/// Bits of a share's phase tag, start and end.
const TAG_BITS: u32 = 24;
const POS_BITS: u32 = 20;
const POS: u64 = (1 << POS_BITS) - 1;
/// Most tasks in one loop, and most loops in one job.
const MAX_TASKS: usize = POS as usize;
const MAX_PHASES: u32 = (1 << TAG_BITS) - 1;

fn share(tag: u64, start: usize, end: usize) -> u64 {
    (tag << (2 * POS_BITS)) | ((start as u64) << POS_BITS) | end as u64
}

fn tag(s: u64) -> u64 {
    s >> (2 * POS_BITS)
}

fn bounds(s: u64) -> (usize, usize) {
    (((s >> POS_BITS) & POS) as usize, (s & POS) as usize)
}

/// One thread's view of a lockstep job.
pub struct Lock<'t> {
    team: &'t Team,
    me: usize,
    /// Loops run so far.
    phase: Cell<u32>,
}

/// Runs `body` on every thread of the current rayon pool's team at once (the caller is thread
/// 0) and returns `true` when all have finished; `false`, having run nothing, with fewer than
/// two threads or when the team is running another caller's job. Every thread must make the
/// same sequence of [`Lock::for_each`] calls.
pub fn lockstep(body: impl Fn(&Lock<'_>) + Sync) -> bool {
    let threads = rayon::current_num_threads();
    if threads < 2 {
        return false;
    }
    let team = Team::of(threads);
    let run = |me: usize| {
        let lock = Lock {
            team,
            me,
            phase: Cell::new(0),
        };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| body(&lock))) {
            team.aborted.store(true, Ordering::Release);
            resume_unwind(p);
        }
    };
    // One task per thread, each thread's own first: no thread can finish its body (and take a
    // peer's) before every peer has started its own, at the first barrier.
    team.try_run(threads, &run, true).is_ok()
}

impl Lock<'_> {
    /// This thread's number (0 for the caller).
    pub fn me(&self) -> usize {
        self.me
    }

    /// Threads in the job.
    pub fn threads(&self) -> usize {
        self.team.phases.len()
    }

    /// Runs `f(t)` for every `t` in `0..tasks` on the job's threads and returns when every
    /// thread has reached the end of this loop (so every task has run). `next`: the memory the
    /// next loop reads, in the order of its tasks; a thread that runs out of tasks prefetches
    /// the start of its share of it while it waits.
    pub fn for_each(&self, tasks: usize, f: impl Fn(usize), next: &[&[u8]]) {
        assert!(tasks <= MAX_TASKS, "{tasks} tasks in one lockstep loop");
        let p = self.phase.get() + 1;
        assert!(p <= MAX_PHASES, "too many lockstep loops");
        self.phase.set(p);
        let team = self.team;
        let (threads, me, tag_p) = (self.threads(), self.me, u64::from(p));
        let arm = |i: usize| {
            let r = &team.phases[i].0;
            let mut cur = r.load(Ordering::Acquire);
            while tag(cur) != tag_p {
                let fresh = share(tag_p, i * tasks / threads, (i + 1) * tasks / threads);
                match r.compare_exchange_weak(cur, fresh, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => cur = fresh,
                    Err(now) => cur = now,
                }
            }
            cur
        };
        for v in (0..threads).map(|i| (me + i) % threads) {
            let r = &self.team.phases[v].0;
            let mut cur = arm(v);
            loop {
                let (start, end) = bounds(cur);
                if start >= end {
                    break;
                }
                let (next, t) = if v == me {
                    (share(tag_p, start + 1, end), start)
                } else {
                    (share(tag_p, start, end - 1), end - 1)
                };
                match r.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        f(t);
                        cur = r.load(Ordering::Relaxed);
                    }
                    // A later phase's tag cannot appear: that phase needs this thread's arrival.
                    Err(now) => cur = now,
                }
            }
        }
        // Arrive (publishing this thread's outputs), then wait for the others.
        let target = u64::from(p) * threads as u64;
        team.arrived.0.fetch_add(1, Ordering::AcqRel);
        let done = || team.arrived.0.load(Ordering::Acquire) >= target;
        let mut plan = [(0, 0); 4];
        let pieces: Vec<(usize, usize)> = next
            .iter()
            .map(|r| (r.as_ptr() as usize, r.len()))
            .collect();
        let n = share_start(&pieces, me, threads, &mut plan);
        'prime: for &(a, len) in &plan[..n] {
            for off in (0..len).step_by(1024) {
                if done() {
                    break 'prime;
                }
                crate::kernels::prefetch_l2_raw((a + off) as *const i8, 1024.min(len - off));
            }
        }
        let mut spins = 0u32;
        while !done() {
            if team.aborted.load(Ordering::Relaxed) {
                resume_unwind(Box::new(PeerPanicked));
            }
            // A peer still short of the barrier after ~`SPINS` pauses may be waiting for this
            // CPU (more threads than CPUs, or a busy machine): offer it.
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pool;
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, AtomicUsize};
    use std::time::Duration;

    /// [`lockstep`], retried while another test's job holds the team.
    fn run(body: impl Fn(&Lock<'_>) + Sync) {
        while !lockstep(&body) {
            std::thread::yield_now();
        }
    }

    /// Tasks in loop `i` of the tests' jobs: empty, single and uneven loops among them.
    fn tasks(i: usize) -> usize {
        (i * 7) % 23
    }

    #[test]
    fn every_task_of_every_loop_runs_once_before_its_barrier_opens() {
        const LOOPS: usize = 60;
        for threads in [2, 3, 4] {
            let counts: Vec<Vec<AtomicU32>> = (0..LOOPS)
                .map(|i| (0..tasks(i)).map(|_| AtomicU32::new(0)).collect())
                .collect();
            pool(threads).install(|| {
                run(|lock| {
                    for (i, c) in counts.iter().enumerate() {
                        lock.for_each(
                            tasks(i),
                            |t| {
                                c[t].fetch_add(1, Ordering::Relaxed);
                            },
                            &[],
                        );
                        // Past the barrier, every thread sees every task of the loop done.
                        for (t, n) in c.iter().enumerate() {
                            assert_eq!(n.load(Ordering::Relaxed), 1, "loop {i} task {t}");
                        }
                    }
                })
            });
        }
    }

    #[test]
    fn one_thread_runs_nothing_and_says_so() {
        let runs = AtomicUsize::new(0);
        let ran = pool(1).install(|| {
            lockstep(|_| {
                runs.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(!ran);
        assert_eq!(runs.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_late_threads_share_is_taken_by_the_others() {
        // Thread 1 reaches the first loop 200 ms late: thread 0 arms its share and takes it.
        let by = Mutex::new(vec![usize::MAX; 64]);
        pool(2).install(|| {
            run(|lock| {
                if lock.me() == 1 {
                    std::thread::sleep(Duration::from_millis(200));
                }
                lock.for_each(64, |t| by.lock().unwrap()[t] = lock.me(), &[]);
            })
        });
        let by = by.into_inner().unwrap();
        assert!(by.iter().all(|&m| m < 2), "every task ran: {by:?}");
        assert!(
            by[32..].contains(&0),
            "thread 0 took none of thread 1's share: {by:?}"
        );
    }

    #[test]
    fn a_panic_in_one_thread_reaches_the_caller_and_the_team_recovers() {
        pool(2).install(|| {
            for round in 0..10 {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    run(|lock| {
                        for i in 0..8 {
                            lock.for_each(tasks(i), |_| {}, &[]);
                            if i == 3 && lock.me() == round % 2 {
                                panic!("thread {} in round {round}", lock.me());
                            }
                        }
                    })
                }));
                let p = r.expect_err("the panic was lost");
                let msg = p.downcast_ref::<String>().expect("the thread's own panic");
                assert_eq!(*msg, format!("thread {} in round {round}", round % 2));
                let sum = AtomicUsize::new(0);
                let add = |t: usize| {
                    sum.fetch_add(t, Ordering::Relaxed);
                };
                run(|lock| lock.for_each(16, add, &[]));
                assert_eq!(sum.load(Ordering::Relaxed), 120);
            }
        });
    }
}
