//! What the live training view costs a training loop, as a table.
//!
//! `cargo bench -p taper-widgets --bench widget_cost`
//!
//! A fake training step busy-waits 1 ms. The same loop runs without a view
//! (the baseline) and with a [`TrainingView`] drawn through the display
//! channel on every step (throttled as the trainer's callback is: a redraw
//! at most every 200 ms, a table row and a chart point every 50 steps, a
//! forced redraw every 500 steps as after an evaluation). The channel's
//! other end is a thread that answers every message as the kernel does,
//! without the zeromq send, so the figure is the cell process's cost. Runs
//! alternate so drift hits both sides alike.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use taper_widgets::protocol::DISPLAY_ENV;
use taper_widgets::{
    Cell, LiveOutput, MemoryRow, MemoryTable, MetricsTable, ProgressText, Target, TrainingView,
};

const STEPS: u64 = 3000;
const STEP: Duration = Duration::from_millis(1);
const ROUNDS: usize = 3;

fn fake_step() {
    let start = Instant::now();
    while start.elapsed() < STEP {
        std::hint::spin_loop();
    }
}

/// Answers every line with an ack, like the kernel's display relay.
fn fake_kernel() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("display.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                for line in BufReader::new(stream).lines() {
                    if line.is_err() || writer.write_all(b"{\"status\":\"ok\"}\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    std::env::set_var(DISPLAY_ENV, &path);
    dir
}

fn baseline() -> Duration {
    let start = Instant::now();
    for step in 0..STEPS {
        fake_step();
        black_box(step);
    }
    start.elapsed()
}

/// The loop with the view; returns the time and the number of redraws.
fn with_view() -> (Duration, usize) {
    let mut output = LiveOutput::new(Target::Notebook);
    let mut view = TrainingView {
        table: MetricsTable::new(&["Step", "Training Loss", "Validation Loss"]),
        memory: Some(MemoryTable {
            rows: vec![MemoryRow {
                device: "CPU (RSS)".into(),
                current: 1 << 30,
                peak: Some(1 << 31),
                total: None,
            }],
        }),
        ..TrainingView::default()
    };
    let mut redraws = 0;
    let start = Instant::now();
    for step in 1..=STEPS {
        fake_step();
        view.progress = ProgressText {
            current: step,
            total: STEPS,
            elapsed: start.elapsed().as_secs_f64(),
            comment: format!("Epoch {:.2}/3", step as f64 / 1000.0),
        };
        let loss = 2.0 / (1.0 + step as f64 / 100.0);
        if step % 50 == 0 {
            view.chart.push_training(step as f64, loss);
        }
        let evaluation = step % 500 == 0;
        if evaluation {
            view.chart.push_evaluation(step as f64, loss * 1.1);
            view.table.write_line(&[
                ("Step", Cell::Int(step as i64)),
                ("Training Loss", Cell::Float(loss)),
                ("Validation Loss", Cell::Float(loss * 1.1)),
            ]);
        }
        if output.refresh(&view, evaluation) {
            redraws += 1;
        }
    }
    output.finish(&view);
    (start.elapsed(), redraws + 1)
}

/// The time of one forced redraw (render and send) of a full view.
fn one_redraw() -> Duration {
    let mut output = LiveOutput::with_interval(Target::Notebook, Duration::ZERO);
    let mut view = TrainingView::default();
    for step in 0..500 {
        view.chart
            .push_training(step as f64, 1.0 / (1.0 + step as f64));
    }
    for step in 0..20 {
        view.table.write_line(&[
            ("Step", Cell::Int(step)),
            ("Validation Loss", Cell::Float(0.5)),
        ]);
    }
    output.refresh(&view, true);
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        output.refresh(&view, true);
    }
    start.elapsed() / n
}

/// The time of a step that does not redraw: the throttle's check.
fn one_check() -> Duration {
    let mut output = LiveOutput::with_interval(Target::Notebook, Duration::from_secs(3600));
    let view = TrainingView::default();
    output.refresh(&view, true);
    let n = 1_000_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(output.refresh(black_box(&view), false));
    }
    start.elapsed() / n
}

fn main() {
    let _kernel = fake_kernel();
    let (mut base, mut live, mut redraws) = (Duration::ZERO, Duration::ZERO, 0);
    for _ in 0..ROUNDS {
        base += baseline();
        let (t, n) = with_view();
        live += t;
        redraws += n;
    }
    let per_step = |d: Duration| d.as_secs_f64() / (ROUNDS as f64 * STEPS as f64);
    let (base_step, live_step) = (per_step(base), per_step(live));
    let overhead = (live_step - base_step) / base_step * 100.0;
    let redraw = one_redraw();
    let check = one_check();
    let seconds = live.as_secs_f64() / ROUNDS as f64;
    println!(
        "widget cost at a {} ms fake step, {STEPS} steps x {ROUNDS} rounds\n",
        STEP.as_millis()
    );
    println!("| measurement | value |");
    println!("| --- | --- |");
    println!("| step without view | {:.1} us |", base_step * 1e6);
    println!("| step with live view | {:.1} us |", live_step * 1e6);
    println!(
        "| view cost per step | {:.2} us ({overhead:+.3}% of step time; budget 1%) |",
        (live_step - base_step) * 1e6
    );
    let rate = redraws as f64 / ROUNDS as f64 / seconds;
    println!("| redraws per second | {rate:.1} |");
    println!(
        "| one redraw (render + send + ack), 500-point chart, 20 rows | {:.0} us |",
        redraw.as_secs_f64() * 1e6
    );
    println!(
        "| a step that does not redraw (throttle check) | {:.0} ns |",
        check.as_secs_f64() * 1e9
    );
    // The same cost from its parts, which busy machines measure more steadily.
    let derived =
        rate * redraw.as_secs_f64() * 100.0 + check.as_secs_f64() / STEP.as_secs_f64() * 100.0;
    println!(
        "| cost from the parts: redraw rate x redraw time + checks | {derived:.3}% of step time |"
    );
}
