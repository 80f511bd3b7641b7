//! Tests of the memory tracker (HF's `TrainerMemoryTracker` semantics: alloc
//! and peaked deltas, nested stages ignored, `skip_memory_metrics`, the init
//! report) and of the `snapshot` query.
//!
//! RSS is per process and the tests of one binary run on parallel threads,
//! so every test that measures takes `SERIAL` first: one test's 200 MB must
//! not land in another's stage.

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use taper::memory::{snapshot, MemoryTracker, Stage};
use taper::metrics::{format_metrics_block, Metrics};

const MB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 200 MB with every page written, so it is resident.
fn touched_200mb() -> Vec<u8> {
    let buffer = vec![1u8; 200 * MB];
    assert_eq!(buffer[buffer.len() - 1], 1);
    buffer
}

fn mem_keys(metrics: &Metrics) -> Vec<&str> {
    metrics
        .keys()
        .map(String::as_str)
        .filter(|k| k.contains("_mem_"))
        .collect()
}

#[test]
fn memory_kept_by_a_stage_is_its_alloc_delta() {
    let _serial = serial();
    let mut tracker = MemoryTracker::new(false);
    let mut metrics = Metrics::new();
    tracker.start(Stage::Train);
    let buffer = touched_200mb();
    tracker.stop_and_update_metrics(Stage::Train, &mut metrics);
    drop(buffer);

    let alloc = metrics["train_mem_cpu_alloc_delta"];
    let peaked = metrics["train_mem_cpu_peaked_delta"];
    assert!(alloc >= 150.0 * MB as f64, "alloc delta {alloc}");
    assert!(peaked >= 0.0, "peaked delta {peaked}");
    assert_eq!(
        mem_keys(&metrics),
        ["train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta"]
    );
}

#[test]
fn memory_freed_within_a_stage_is_its_peaked_delta() {
    let _serial = serial();
    let mut tracker = MemoryTracker::new(false);
    let mut metrics = Metrics::new();
    tracker.start(Stage::Eval);
    let buffer = touched_200mb();
    // Long enough for the 1 ms sampler to see it many times.
    thread::sleep(Duration::from_millis(50));
    drop(buffer);
    tracker.stop_and_update_metrics(Stage::Eval, &mut metrics);

    let alloc = metrics["eval_mem_cpu_alloc_delta"];
    let peaked = metrics["eval_mem_cpu_peaked_delta"];
    assert!(peaked >= 150.0 * MB as f64, "peaked delta {peaked}");
    assert!(alloc.abs() < 50.0 * MB as f64, "alloc delta {alloc}");
}

#[test]
fn evaluate_inside_train_is_not_tracked() {
    let _serial = serial();
    let mut tracker = MemoryTracker::new(false);
    let mut train_metrics = Metrics::new();
    let mut eval_metrics = Metrics::new();
    tracker.start(Stage::Train);
    tracker.start(Stage::Eval);
    let buffer = touched_200mb();
    tracker.stop_and_update_metrics(Stage::Eval, &mut eval_metrics);
    assert!(eval_metrics.is_empty(), "{eval_metrics:?}");
    tracker.stop_and_update_metrics(Stage::Train, &mut train_metrics);
    drop(buffer);

    assert!(!train_metrics.keys().any(|k| k.starts_with("eval_")));
    // Train's measurement kept running through the nested calls.
    assert!(train_metrics["train_mem_cpu_alloc_delta"] >= 150.0 * MB as f64);

    // With train done, evaluate is tracked again.
    tracker.start(Stage::Eval);
    tracker.stop_and_update_metrics(Stage::Eval, &mut eval_metrics);
    assert_eq!(
        mem_keys(&eval_metrics),
        ["eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"]
    );
}

#[test]
fn a_stop_without_its_start_adds_nothing() {
    let _serial = serial();
    let mut tracker = MemoryTracker::new(false);
    let mut metrics = Metrics::new();
    tracker.stop_and_update_metrics(Stage::Test, &mut metrics);
    tracker.start(Stage::Test);
    tracker.stop_and_update_metrics(Stage::Train, &mut metrics);
    assert!(metrics.is_empty(), "{metrics:?}");
    tracker.stop_and_update_metrics(Stage::Test, &mut metrics);
    assert_eq!(
        mem_keys(&metrics),
        ["test_mem_cpu_alloc_delta", "test_mem_cpu_peaked_delta"]
    );
}

#[test]
fn skip_memory_metrics_adds_nothing() {
    let mut tracker = MemoryTracker::new(true);
    let mut metrics = Metrics::new();
    for stage in [Stage::Init, Stage::Train, Stage::Eval, Stage::Test] {
        tracker.start(stage);
        tracker.stop_and_update_metrics(stage, &mut metrics);
    }
    tracker.start(Stage::Init);
    tracker.stop(Stage::Init);
    tracker.start(Stage::Train);
    tracker.stop_and_update_metrics(Stage::Train, &mut metrics);
    assert!(metrics.is_empty(), "{metrics:?}");
}

#[test]
fn init_reports_the_memory_before_init() {
    let _serial = serial();
    let mut tracker = MemoryTracker::new(false);
    let mut metrics = Metrics::new();
    let rss_before = snapshot().cpu_rss as f64;
    tracker.start(Stage::Init);
    tracker.stop_and_update_metrics(Stage::Init, &mut metrics);

    assert_eq!(
        metrics.keys().collect::<Vec<_>>(),
        [
            "init_mem_cpu_alloc_delta",
            "init_mem_cpu_peaked_delta",
            "before_init_mem_cpu"
        ]
    );
    let before = metrics["before_init_mem_cpu"];
    assert!(before > 0.0);
    assert!(
        (before - rss_before).abs() < 50.0 * MB as f64,
        "{before} vs {rss_before}"
    );

    // Reported once only.
    let mut train_metrics = Metrics::new();
    tracker.start(Stage::Train);
    tracker.stop_and_update_metrics(Stage::Train, &mut train_metrics);
    assert!(!train_metrics.contains_key("before_init_mem_cpu"));
    assert!(!train_metrics.contains_key("init_mem_cpu_alloc_delta"));
}

#[test]
fn a_stopped_init_is_reported_with_the_next_stage() {
    let _serial = serial();
    // HF's Trainer.__init__ stops init without metrics; train reports it.
    let mut tracker = MemoryTracker::new(false);
    tracker.start(Stage::Init);
    tracker.stop(Stage::Init);
    let mut metrics = Metrics::new();
    tracker.start(Stage::Train);
    tracker.stop_and_update_metrics(Stage::Train, &mut metrics);
    assert_eq!(
        metrics.keys().collect::<Vec<_>>(),
        [
            "init_mem_cpu_alloc_delta",
            "init_mem_cpu_peaked_delta",
            "train_mem_cpu_alloc_delta",
            "train_mem_cpu_peaked_delta",
            "before_init_mem_cpu"
        ]
    );

    let mut eval_metrics = Metrics::new();
    tracker.start(Stage::Eval);
    tracker.stop_and_update_metrics(Stage::Eval, &mut eval_metrics);
    assert_eq!(
        eval_metrics.keys().collect::<Vec<_>>(),
        ["eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"]
    );
}

#[test]
fn snapshot_is_plausible() {
    let _serial = serial();
    let first = snapshot();
    assert!(first.cpu_rss > MB as u64, "{first:?}");
    assert!(first.cpu_rss < 1 << 40, "{first:?}");
    assert!(first.cpu_peak_rss >= first.cpu_rss, "{first:?}");
    assert!(first.gpus.is_empty());

    let buffer = touched_200mb();
    let during = snapshot();
    drop(buffer);
    let after = snapshot();
    assert!(
        during.cpu_rss >= first.cpu_rss + 150 * MB as u64,
        "{first:?} {during:?}"
    );
    assert!(after.cpu_peak_rss >= during.cpu_rss, "{during:?} {after:?}");
    assert!(after.cpu_peak_rss >= after.cpu_rss);
}

#[test]
fn memory_metrics_print_in_megabytes() {
    let mut metrics = Metrics::new();
    metrics.insert("train_mem_cpu_alloc_delta".into(), (200 * MB) as f64);
    metrics.insert("train_mem_cpu_peaked_delta".into(), (3 * MB + 12345) as f64);
    let block = format_metrics_block("train", &metrics);
    assert_eq!(
        block,
        "***** train metrics *****\n  \
         train_mem_cpu_alloc_delta  = 200MB\n  \
         train_mem_cpu_peaked_delta =   3MB\n"
    );
}
