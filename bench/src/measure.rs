//! Timing: figures sampled in batches, measured side by side in
//! alternation, and one and two threads' steps a second.

use std::time::{Duration, Instant};

use anyhow::Result;

/// Samples per figure; each sample times a batch and divides.
pub const SAMPLES: usize = 15;

pub struct Figure {
    pub name: String,
    /// Seconds per operation, one per sample, sorted.
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        self.samples[self.samples.len() / 2]
    }
    pub fn p10(&self) -> f64 {
        self.samples[self.samples.len() / 10]
    }
    pub fn p90(&self) -> f64 {
        self.samples[self.samples.len() * 9 / 10]
    }
}

pub fn fmt_time(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Times `op` in batches sized to take about `per_sample`.
/// Operations a second with one thread and with two, from windows that
/// alternate (1, 2, 2, 1, 1, 2) so that the shared machine's quiet and busy
/// moments fall on both alike. Each thread of a window gets its operation
/// from `worker` before the clock starts; the operation says whether it
/// succeeded.
pub fn steps_per_second<Op: FnMut() -> bool>(worker: impl Fn() -> Op + Sync) -> [f64; 2] {
    let window = Duration::from_millis(700);
    let mut steps = [0u64; 2];
    for threads in [1usize, 2, 2, 1, 1, 2] {
        let ready = std::sync::Barrier::new(threads);
        let total: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut op = worker();
                        ready.wait();
                        let start = Instant::now();
                        let mut n = 0u64;
                        while start.elapsed() < window {
                            if op() {
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        steps[threads - 1] += total;
    }
    steps.map(|n| n as f64 / (3.0 * window.as_secs_f64()))
}

/// One operation to time, by name.
pub type Timed<'a> = (String, Box<dyn FnMut() -> Result<()> + 'a>);

/// Times `ops` side by side: every sample round runs a batch of each, in
/// alternating order, so the shared machine's slow and fast moments fall on
/// all of them alike and their ratio means something.
pub fn measure_together(ops: Vec<Timed<'_>>, per_sample: Duration) -> Result<Vec<Figure>> {
    measure(ops, per_sample, None)
}

/// [`measure_together`] of operations each started `pause` after whatever
/// ran before it (the pause not timed), as container starts on a node
/// are: the kernel's RCU-synchronized paths (moving a process into a v1
/// cgroup) are fast right after another such move and wait out a grace
/// period after a pause, and operations run back to back would measure
/// that state, not their own cost.
pub fn measure_paced(ops: Vec<Timed<'_>>, pause: Duration) -> Result<Vec<Figure>> {
    measure(ops, Duration::ZERO, Some(pause))
}

fn measure(mut ops: Vec<Timed<'_>>, per_sample: Duration, pause: Option<Duration>) -> Result<Vec<Figure>> {
    let mut batches = Vec::with_capacity(ops.len());
    for (_, op) in ops.iter_mut() {
        // Warm up and size the batch.
        let start = Instant::now();
        let mut calibration = 0u64;
        while start.elapsed() < per_sample / 4 || calibration < 3 {
            op()?;
            calibration += 1;
        }
        let per_op = start.elapsed().as_secs_f64() / calibration as f64;
        batches.push(((per_sample.as_secs_f64() / per_op) as u64).max(1));
    }
    // Paced operations are single runs of a noisy whole (a container's
    // life): three times the samples.
    let rounds = if pause.is_some() { 3 * SAMPLES } else { SAMPLES };
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if let Some(pause) = pause {
                std::thread::sleep(pause);
                let t = Instant::now();
                (ops[i].1)()?;
                samples[i].push(t.elapsed().as_secs_f64());
                continue;
            }
            let t = Instant::now();
            for _ in 0..batches[i] {
                (ops[i].1)()?;
            }
            samples[i].push(t.elapsed().as_secs_f64() / batches[i] as f64);
        }
    }
    let figures: Vec<Figure> = ops
        .into_iter()
        .zip(samples)
        .map(|((name, _), mut samples)| {
            samples.sort_by(f64::total_cmp);
            Figure { name, samples }
        })
        .collect();
    for figure in &figures {
        eprintln!(
            "{:<58} {:>10}  [{} .. {}]",
            figure.name,
            fmt_time(figure.median()),
            fmt_time(figure.p10()),
            fmt_time(figure.p90())
        );
    }
    Ok(figures)
}

pub fn timed<'a>(name: impl Into<String>, op: impl FnMut() -> Result<()> + 'a) -> Timed<'a> {
    (name.into(), Box::new(op))
}

/// Three figures measured together, in order.
pub fn three(mut figures: Vec<Figure>) -> Result<(Figure, Figure, Figure)> {
    anyhow::ensure!(figures.len() == 3, "expected three figures");
    let c = figures.remove(2);
    let b = figures.remove(1);
    Ok((figures.remove(0), b, c))
}
