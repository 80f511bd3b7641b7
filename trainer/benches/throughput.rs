//! Training throughput of the reference GPT (issue 7's figures): the
//! Trainer in f32 and bf16, beside a bare candle loop of the same model
//! (forward, backward, taper's AdamW; no Trainer) for the overhead ratio.
//!
//! On a GPU (built with `--features cuda`): `GptConfig::reference()` (6
//! layers, d 768, 12 heads, vocab 8192), batch 16 x 512 random tokens,
//! AdamW (lr 3e-4, weight decay 0.01, no clipping, as the PyTorch
//! reference `torch_gpt.py`), 3 warm-up steps then 10 timed ones between two
//! device synchronisations. Without a GPU, a tiny GPT for a few steps, so
//! that CI builds and runs it in seconds.
//!
//! Each mode runs in a child process of its own (this binary with
//! `--child MODE`), so that its peak GPU memory is its own. Peak memory is
//! the device's used memory (`total - free`, CUDA context included, as
//! taper's memory metrics report it), sampled during the warm-up steps only,
//! so that the sampling costs the timed steps nothing. "Tensors' peak" is
//! the CUDA memory pool's high-water mark over the whole run (live
//! allocations only, `taper::device::gpu_memory_peak`), the figure
//! comparable with PyTorch's `max_memory_allocated`.
//!
//! TFLOP/s counts 6 x tokens x non-embedding parameters per step (the
//! model's `floating_point_ops`, HF's estimate), which leaves out attention's
//! own products; `torch_gpt.py` counts all parameters and attention, so
//! compare tokens/s across the two.
//!
//! Run: `cargo bench -p taper --features cuda --bench throughput`; options
//! `--steps N`, `--warmup N`, `--modes trainer-f32,bare-bf16,...` (and
//! `phases-f32`, `phases-bf16`: forward, backward and AdamW timed apart), and
//! `--recipes` to also train the small GPT's reverse task in f32, bf16 and
//! fp16 on the selected device (a correctness check: eval accuracy), and
//! `--ops` to time the model's operations one by one on the reference shapes
//! (`--products` for only the f32 matrix products' table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use taper::callbacks::TrainerCallback;
use taper::data::{default_collate, Batch, Field, Sample, VecDataset};
use taper::models::{Gpt, GptConfig};
use taper::optim::{self, Gradients, Parameters};
use taper::precision::Precision;
use taper::trainer::{DefaultHooks, StepContext, TrainerControl, TrainerState, TrainingHooks};
use taper::{Model, Trainer, TrainingArguments};

#[path = "throughput/ops.rs"]
mod ops;

const MODES: [&str; 4] = ["trainer-f32", "bare-f32", "trainer-bf16", "bare-bf16"];

/// What one mode measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    ms_per_step: f64,
    flops_per_step: f64,
    tokens_per_step: f64,
    peak_bytes: u64,
    context_bytes: u64,
    /// The memory pool's high-water mark (live tensors only).
    pool_peak_bytes: u64,
    first_loss: f64,
    last_loss: f64,
}

struct Setup {
    device: Device,
    config: GptConfig,
    batch_size: usize,
    warmup: usize,
    steps: usize,
}

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn setup(args: &[String]) -> Setup {
    let device = taper::device::gpu(0).unwrap().unwrap_or(Device::Cpu);
    let gpu = device.is_cuda();
    let config = if gpu {
        GptConfig::reference()
    } else {
        GptConfig {
            vocab_size: 64,
            max_seq_len: 16,
            n_layer: 2,
            n_head: 2,
            d_model: 32,
        }
    };
    let number = |name: &str, default: usize| {
        option(args, name).map_or(default, |v| v.parse().expect("a whole number"))
    };
    Setup {
        device,
        config,
        batch_size: if gpu { 16 } else { 4 },
        warmup: number("--warmup", if gpu { 3 } else { 1 }),
        steps: number("--steps", if gpu { 10 } else { 3 }),
    }
}

/// Random token sequences, labels random too (as `torch_gpt.py`).
fn random_tokens(setup: &Setup, num: usize) -> VecDataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (v, t) = (setup.config.vocab_size, setup.config.max_seq_len);
    let samples = (0..num)
        .map(|_| Sample {
            input: Field::U32((0..t).map(|_| rng.random_range(0..v as u32)).collect()),
            label: Some(Field::I64(
                (0..t).map(|_| rng.random_range(0..v as i64)).collect(),
            )),
        })
        .collect();
    VecDataset::new(samples)
}

fn training_args(setup: &Setup, bf16: bool, max_grad_norm: f64) -> TrainingArguments {
    let steps = setup.warmup + setup.steps;
    TrainingArguments::builder()
        .output_dir(
            std::env::temp_dir()
                .join("taper-throughput")
                .display()
                .to_string(),
        )
        .learning_rate(3e-4)
        .weight_decay(0.01)
        .max_grad_norm(max_grad_norm)
        .lr_scheduler_type("constant".to_string())
        .max_steps(steps as i64)
        // One log at the end of the warm-up, one at the end: their means.
        .logging_steps(setup.warmup as f64)
        .save_strategy(taper::args::IntervalStrategy::No)
        .per_device_train_batch_size(setup.batch_size)
        .optim("adamw_torch".to_string())
        .disable_tqdm(true)
        .bf16(bf16)
        .build()
        .expect("valid benchmark arguments")
}

/// Samples the device's used memory every 2 ms until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Poller {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(gpu_used());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak.max(gpu_used())
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().map_or(0, |h| h.join().unwrap())
    }
}

fn gpu_used() -> u64 {
    taper::memory::snapshot().gpus.first().map_or(0, |g| g.used)
}

/// When the timed steps started and ended, and the peak memory of the warm-up.
type Marks = (Option<Instant>, Option<Instant>, u64);

/// Times the Trainer's steps after the warm-up: synchronises the device and
/// reads the clock at the end of step `warmup` and at the end of training.
struct Timer {
    device: Device,
    warmup: usize,
    poller: Arc<Mutex<Poller>>,
    marks: Arc<Mutex<Marks>>,
}

impl TrainerCallback for Timer {
    fn on_step_end(
        &mut self,
        _: &TrainingArguments,
        state: &TrainerState,
        _: &mut TrainerControl,
    ) -> taper::Result<()> {
        if state.global_step == self.warmup {
            self.device.synchronize()?;
            let peak = self.poller.lock().unwrap().finish();
            *self.marks.lock().unwrap() = (Some(Instant::now()), None, peak);
        }
        Ok(())
    }

    fn on_train_end(
        &mut self,
        _: &TrainingArguments,
        _: &TrainerState,
        _: &mut TrainerControl,
    ) -> taper::Result<()> {
        self.device.synchronize()?;
        self.marks.lock().unwrap().1 = Some(Instant::now());
        Ok(())
    }
}

/// HF's training step, then the loss read back at once: the Trainer's
/// behaviour before it kept the losses on the device (a `+syncloss` mode).
struct SyncLoss;

impl TrainingHooks<Gpt> for SyncLoss {
    fn training_step(
        &self,
        model: &Gpt,
        params: &Parameters,
        batch: &Batch,
        ctx: &StepContext,
    ) -> taper::Result<(Tensor, Gradients)> {
        let (loss, grads) = DefaultHooks.training_step(model, params, batch, ctx)?;
        loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok((loss, grads))
    }
}

fn run_trainer(
    setup: &Setup,
    model: Gpt,
    bf16: bool,
    (sync_loss, max_grad_norm): (bool, f64),
    out: &mut Measured,
) {
    let data = random_tokens(setup, setup.batch_size * (setup.warmup + setup.steps));
    let poller = Arc::new(Mutex::new(Poller::start()));
    let marks = Arc::new(Mutex::new((None, None, 0)));
    let timer = Timer {
        device: setup.device.clone(),
        warmup: setup.warmup,
        poller: poller.clone(),
        marks: marks.clone(),
    };
    let mut trainer = Trainer::new(training_args(setup, bf16, max_grad_norm), model)
        .unwrap()
        .with_train_dataset(data)
        .with_callback(timer);
    if sync_loss {
        trainer = trainer.with_hooks(SyncLoss);
    }
    trainer.callbacks_mut().pop("PrinterCallback");
    trainer.train().unwrap();
    let (start, end, peak) = *marks.lock().unwrap();
    out.ms_per_step = (end.unwrap() - start.unwrap()).as_secs_f64() * 1e3 / setup.steps as f64;
    out.peak_bytes = peak;
    // The first and the last logged loss: means over the warm-up, then over the timed steps.
    let losses: Vec<f64> = trainer
        .state
        .log_history
        .iter()
        .filter_map(|log| log.get("loss").and_then(|l| l.as_f64()))
        .collect();
    out.first_loss = losses.first().copied().unwrap_or(f64::NAN);
    out.last_loss = losses.last().copied().unwrap_or(f64::NAN);
}

/// Where a bare step's time goes: forward (with the loss), backward, optimizer,
/// each ended by a device synchronisation (which adds a little to the total).
fn run_phases(setup: &Setup, model: Gpt, mode: &str) {
    let data = random_tokens(setup, setup.batch_size * (setup.warmup + setup.steps));
    let params = Parameters::from_varmap(model.varmap());
    let mut opt = optim::build(&training_args(setup, false, 0.0), params.clone()).unwrap();
    let mut totals = [0.0f64; 3];
    for (i, chunk) in data.samples().chunks(setup.batch_size).enumerate() {
        let batch = default_collate(chunk, &setup.device).unwrap();
        setup.device.synchronize().unwrap();
        let t0 = Instant::now();
        let loss = model.forward(&batch, true).unwrap().loss.unwrap();
        setup.device.synchronize().unwrap();
        let t1 = Instant::now();
        let grads = Gradients::from_store(&params, &loss.backward().unwrap());
        setup.device.synchronize().unwrap();
        let t2 = Instant::now();
        opt.step(&grads, 3e-4).unwrap();
        setup.device.synchronize().unwrap();
        let t3 = Instant::now();
        if i >= setup.warmup {
            for (total, (a, b)) in totals.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
                *total += (b - a).as_secs_f64() * 1e3 / setup.steps as f64;
            }
        }
    }
    println!(
        "PHASES {mode}: forward+loss {:.1} ms, backward {:.1} ms, AdamW {:.1} ms",
        totals[0], totals[1], totals[2]
    );
}

fn run_bare(setup: &Setup, model: Gpt, out: &mut Measured) {
    let data = random_tokens(setup, setup.batch_size * (setup.warmup + setup.steps));
    let batches: Vec<Batch> = data
        .samples()
        .chunks(setup.batch_size)
        .map(|chunk| default_collate(chunk, &setup.device).unwrap())
        .collect();
    let params = Parameters::from_varmap(model.varmap());
    let mut opt = optim::build(&training_args(setup, false, 0.0), params.clone()).unwrap();
    let mut poller = Poller::start();
    let mut start = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        if i == setup.warmup {
            setup.device.synchronize().unwrap();
            out.peak_bytes = poller.finish();
            start = Instant::now();
        }
        let loss = model.forward(batch, true).unwrap().loss.unwrap();
        let grads = Gradients::from_store(&params, &loss.backward().unwrap());
        opt.step(&grads, 3e-4).unwrap();
        // The Trainer reads every loss back; so does this loop.
        let value = f64::from(
            loss.to_dtype(DType::F32)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        );
        if i == 0 {
            out.first_loss = value;
        }
        out.last_loss = value;
    }
    setup.device.synchronize().unwrap();
    out.ms_per_step = start.elapsed().as_secs_f64() * 1e3 / setup.steps as f64;
}

/// One mode, in this (child) process; prints a `RESULT` line. Suffixes:
/// `+trim` turns off the GPU memory pool's caching (CUDA's default), to
/// measure what the caching gains; `+syncloss` (Trainer modes) reads every
/// micro-batch's loss back right after its backward pass, as the Trainer did
/// before it kept the losses on the device, to measure what that costs;
/// `+clip` (Trainer modes) clips gradients to a norm of 1 (HF's default; the
/// other modes do not clip, as `torch_gpt.py`); `+tf32` lets f32 matrix
/// products use TF32 tensor cores (HF's `tf32`); `+ieee` keeps cuBLAS's
/// FP32 products for the linear layers instead of taper's 3xTF32
/// (`TAPER_COMPOSED_OPS=matmul`), the baseline of that change.
fn child(setup: &Setup, label: &str) {
    let mut parts = label.split('+');
    let mode = parts.next().unwrap_or_default();
    let flags: Vec<&str> = parts.collect();
    let (trim, sync_loss, clip) = (
        flags.contains(&"trim"),
        flags.contains(&"syncloss"),
        flags.contains(&"clip"),
    );
    if trim && setup.device.is_cuda() {
        taper::device::set_gpu_memory_caching(0, false).unwrap();
    }
    if flags.contains(&"tf32") {
        taper::device::set_tf32(&setup.device, Some(true)).unwrap();
    }
    if flags.contains(&"ieee") {
        // Read once, at the first fused op: nothing has run yet.
        std::env::set_var("TAPER_COMPOSED_OPS", "matmul");
    }
    let context_bytes = gpu_used();
    let mut model = Gpt::new(&setup.config, 0, &setup.device).unwrap();
    let bf16 = mode.ends_with("bf16");
    if bf16 {
        model.set_precision(Precision::Mixed(DType::BF16));
    }
    let probe = random_tokens(setup, setup.batch_size);
    let batch = default_collate(probe.samples(), &Device::Cpu).unwrap();
    let mut out = Measured {
        flops_per_step: model.floating_point_ops(&batch).unwrap(),
        tokens_per_step: (setup.batch_size * setup.config.max_seq_len) as f64,
        context_bytes,
        ..Default::default()
    };
    if mode.starts_with("trainer") {
        let max_grad_norm = if clip { 1.0 } else { 0.0 };
        run_trainer(setup, model, bf16, (sync_loss, max_grad_norm), &mut out);
    } else if mode.starts_with("phases") {
        run_phases(setup, model, label);
        return;
    } else {
        run_bare(setup, model, &mut out);
    }
    out.pool_peak_bytes = taper::device::gpu_memory_peak(0).unwrap().unwrap_or(0);
    println!(
        "RESULT {label} {} {} {} {} {} {} {} {}",
        out.ms_per_step,
        out.flops_per_step,
        out.tokens_per_step,
        out.peak_bytes,
        out.context_bytes,
        out.pool_peak_bytes,
        out.first_loss,
        out.last_loss
    );
}

fn parse_result(line: &str) -> Option<(String, Measured)> {
    let mut parts = line.strip_prefix("RESULT ")?.split_whitespace();
    let mode = parts.next()?.to_string();
    let mut f = || parts.next().and_then(|v| v.parse::<f64>().ok());
    Some((
        mode,
        Measured {
            ms_per_step: f()?,
            flops_per_step: f()?,
            tokens_per_step: f()?,
            peak_bytes: f()? as u64,
            context_bytes: f()? as u64,
            pool_peak_bytes: f()? as u64,
            first_loss: f()?,
            last_loss: f()?,
        },
    ))
}

fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 30) as f64)
}

/// Trains the `gpt` recipe on `reverse` in f32, bf16 and fp16 on the
/// selected device: the eval accuracy says whether training is right there.
fn recipes() {
    use taper::recipes::Recipe;
    let recipe = Recipe::new(Some("gpt"), Some("reverse")).unwrap();
    for precision in ["f32", "bf16", "fp16"] {
        let dir = std::env::temp_dir().join(format!("taper-recipe-{precision}"));
        let mut cli: Vec<String> = [
            "--output_dir",
            &dir.display().to_string(),
            "--disable_tqdm",
            "--skip_memory_metrics",
            "false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if precision != "f32" {
            cli.extend([format!("--{precision}"), "true".to_string()]);
        }
        let start = Instant::now();
        let (train, eval) = recipe.run(recipe.arguments(None, &cli).unwrap()).unwrap();
        let mib = |key: &str| {
            train
                .get(key)
                .map_or("-".into(), |b| format!("{:.0}", b / 1048576.0))
        };
        println!(
            "recipe gpt/reverse {precision}: eval_accuracy {:.4}, eval_loss {:.4}, train_loss {:.4}, {:.1} s; \
             MiB: before_init_mem_gpu {}, init_mem_gpu_alloc_delta {}, train_mem_gpu_alloc_delta {}, \
             train_mem_gpu_peaked_delta {}",
            eval["eval_accuracy"],
            eval["eval_loss"],
            train["train_loss"],
            start.elapsed().as_secs_f64(),
            mib("before_init_mem_gpu"),
            mib("init_mem_gpu_alloc_delta"),
            mib("train_mem_gpu_alloc_delta"),
            mib("train_mem_gpu_peaked_delta"),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let setup = setup(&args);
    if let Some(mode) = option(&args, "--child") {
        if mode == "ops" {
            ops::run_products(&setup);
            ops::run_ops(&setup);
        } else if mode == "products" {
            ops::run_products(&setup);
        } else {
            child(&setup, &mode);
        }
        return;
    }
    let table = ["ops", "products"]
        .into_iter()
        .find(|t| args.iter().any(|a| *a == format!("--{t}")));
    if let Some(table) = table {
        // In a child too: memory the ops leave cached in this process's
        // pool would count in the modes' device-wide peak memory.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--child", table])
            .output()
            .expect("running the ops child");
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    let modes: Vec<String> = option(&args, "--modes").map_or_else(
        || MODES.iter().map(|m| m.to_string()).collect(),
        |m| m.split(',').map(str::to_string).collect(),
    );
    let c = &setup.config;
    println!(
        "GPT {} layers, d {}, {} heads, vocab {}, batch {} x {} tokens, {} warm-up + {} timed steps, on {:?}\n",
        c.n_layer, c.d_model, c.n_head, c.vocab_size, setup.batch_size, c.max_seq_len,
        setup.warmup, setup.steps, setup.device
    );
    let mut results: Vec<(String, Measured)> = Vec::new();
    for mode in &modes {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args(["--child", mode]);
        for name in ["--steps", "--warmup"] {
            if let Some(value) = option(&args, name) {
                command.args([name, &value]);
            }
        }
        let output = command.output().expect("running a child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        if let Some(line) = stdout.lines().find(|l| l.starts_with("PHASES")) {
            println!("{line}");
            continue;
        }
        match stdout.lines().find_map(parse_result) {
            Some(result) => results.push(result),
            None => eprintln!(
                "mode {mode} failed ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
    println!("| mode | ms/step | tokens/s | TFLOP/s | peak GPU mem GiB (context GiB) | tensors' peak GiB | loss first -> last | Trainer / bare |");
    println!("|---|---|---|---|---|---|---|---|");
    for (mode, m) in &results {
        let ratio = if let Some(variant) = mode.strip_prefix("trainer-") {
            // `+syncloss` and `+clip` Trainers compare with the same bare loop.
            let variant = variant.replace("+syncloss", "").replace("+clip", "");
            results
                .iter()
                .find(|(other, _)| *other == format!("bare-{variant}"))
                .map_or("-".to_string(), |(_, bare)| {
                    format!("{:.3}", m.ms_per_step / bare.ms_per_step)
                })
        } else {
            "-".to_string()
        };
        println!(
            "| taper {mode} | {:.1} | {:.0} | {:.1} | {} ({}) | {} | {:.3} -> {:.3} | {ratio} |",
            m.ms_per_step,
            m.tokens_per_step / m.ms_per_step * 1e3,
            m.flops_per_step / m.ms_per_step / 1e9,
            gib(m.peak_bytes),
            gib(m.context_bytes),
            gib(m.pool_peak_bytes),
            m.first_loss,
            m.last_loss,
        );
    }
    if args.iter().any(|a| a == "--recipes") {
        recipes();
    }
}
