"""The kernel beyond the protocol suite: signatures, panics, interrupts,
and a notebook run end to end by nbclient."""

import contextlib
import os
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import install_kernelspec, scratch_folder

PREFIX = Path(tempfile.mkdtemp(prefix="taper-kernelspec-"))
install_kernelspec(PREFIX)


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="taper", startup_timeout=60, cwd=tempfile.mkdtemp(prefix="taper-cwd-"))
    kc.execute_interactive("let warm_up = 1;", timeout=300)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()


def run(kc, code, timeout=120):
    """Executes `code`; returns the reply and the iopub messages of that request."""
    outputs = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    return reply, outputs


@contextlib.contextmanager
def own_kernel(env=None):
    """A kernel of the test's own (with `env`, or this process's)."""
    km, kc = start_new_kernel(
        kernel_name="taper",
        startup_timeout=60,
        cwd=tempfile.mkdtemp(prefix="taper-cwd-"),
        env=dict(os.environ) if env is None else env,
    )
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def results(kc, code):
    """Runs `code`, which must succeed; returns its text/plain results."""
    reply, outputs = run(kc, code, timeout=300)
    assert reply["content"]["status"] == "ok", reply["content"]
    return [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"]


def test_variables_live_across_cells_and_errors_do_not_end_the_kernel(kernel):
    _, kc = kernel
    reply, _ = run(kc, "let kept = vec![1, 2, 3];")
    assert reply["content"]["status"] == "ok"
    reply, outputs = run(kc, "let broken: u32 = \"text\";")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "CompilationError"
    assert "mismatched types" in reply["content"]["evalue"]
    reply, outputs = run(kc, "kept.len()")
    results = [m for m in outputs if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == "3"


def test_a_panic_is_an_error_reply_and_the_kernel_keeps_serving(kernel):
    _, kc = kernel
    reply, outputs = run(kc, 'panic!("boom");')
    assert reply["content"]["status"] == "error"
    errors = [m for m in outputs if m["msg_type"] == "error"]
    assert errors, outputs
    assert "boom" in "\n".join(errors[0]["content"]["traceback"]) + errors[0]["content"]["evalue"]
    reply, outputs = run(kc, "1 + 1")
    assert reply["content"]["status"] == "ok"


def test_a_flushed_partial_line_arrives_while_the_cell_still_runs(kernel):
    """`print!` progress without a newline reaches the notebook before the
    cell ends: the cell waits for a file that the test creates only after it
    has seen the partial line (if partial lines were held back, the cell
    would wait forever and the test would time out)."""
    _, kc = kernel
    go = Path(tempfile.mkdtemp(prefix="taper-partial-")) / "go"
    code = (
        "use std::io::Write;\n"
        'print!("\\rstep 1 of 2"); std::io::stdout().flush().unwrap();\n'
        f"while !std::path::Path::new({str(go)!r}).exists() {{ std::thread::sleep(std::time::Duration::from_millis(10)); }}\n"
        'println!(" done");'
    ).replace("'", '"')
    msg_id = kc.execute(code)
    texts = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=deadline - time.monotonic())
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
            if "step 1 of 2" in "".join(texts):
                break
        assert msg["msg_type"] != "execute_result", texts
    assert texts and texts[0] == "\rstep 1 of 2", texts  # no newline added
    go.touch()
    reply = kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok"
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert "".join(texts) == "\rstep 1 of 2 done\n", texts


def wait_for_stream(kc, msg_id, text, timeout=600):
    """Reads iopub until the request `msg_id` has printed `text`."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            seen += msg["content"]["text"]


def compilers_in(folder):
    """The rustc processes working in `folder` (their current directory)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "rustc" and os.readlink(f"/proc/{pid}/cwd").startswith(folder):
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_interrupting_a_build_stops_it_and_keeps_every_variable(kernel):
    """An interrupt while a cell still compiles stops cargo, not the cell
    process (which would die of the SIGINT and lose the variables)."""
    km, kc = kernel
    run(kc, "let kept_through_the_build = 41;")
    # A cell whose compilation would take many minutes: a long constant
    # evaluation inside rustc.
    slow = (
        "#[allow(long_running_const_eval)]\n"
        "const SLOW: u64 = { let mut i = 0u64; let mut s = 0u64; "
        "while i < 4_000_000_000 { s = s.wrapping_add(i ^ (s >> 3)); i += 1; } s };\n"
        "SLOW"
    )
    msg_id = kc.execute(slow)
    time.sleep(3)
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=120)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=120)
    assert reply["content"]["status"] == "error", reply["content"]
    # No compiler of that cell goes on as an orphan.
    scratch = f"{scratch_folder(km.provisioner.process.pid)}/"
    deadline = time.monotonic() + 10
    while compilers_in(scratch) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not compilers_in(scratch), compilers_in(scratch)
    reply, outputs = run(kc, "kept_through_the_build + 1")
    results = [m for m in outputs if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == "42", outputs


def test_a_message_with_a_bad_signature_is_not_run(kernel):
    _, kc = kernel
    good_key = kc.session.key
    kc.session.key = b"not-the-key"
    kc.session.auth = None
    kc.session.key = b"not-the-key"
    msg_id = kc.execute('println!("must not run");')
    with pytest.raises(Exception):
        kc.get_shell_msg(timeout=3)
    kc.session.key = good_key
    reply, outputs = run(kc, 'println!("still serving");')
    assert reply["content"]["status"] == "ok"
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert "still serving" in text and "must not run" not in text
    assert msg_id


def test_interrupting_an_endless_loop_recovers_and_says_what_was_lost(kernel):
    _, kc = kernel
    run(kc, "let before_the_loop = 5;")
    msg_id = kc.execute("loop { std::hint::spin_loop(); }")
    time.sleep(3)  # compile and start
    km = kernel[0]
    started = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    assert time.monotonic() - started < 10
    assert reply["content"]["status"] == "error"
    assert "these variables were lost:" in reply["content"]["evalue"]
    assert "before_the_loop" in reply["content"]["evalue"], reply["content"]["evalue"]
    # The kernel serves the next cell in a fresh cell process.
    reply, outputs = run(kc, "2 + 2")
    assert reply["content"]["status"] == "ok"


def test_a_notebook_runs_end_to_end_and_a_panicking_cell_stops_it(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("let numbers: Vec<u64> = (1..=10).collect();"),
        nbformat.v4.new_code_cell('println!("sum = {}", numbers.iter().sum::<u64>());'),
        nbformat.v4.new_code_cell("numbers.len()"),
    ]
    nb.metadata["kernelspec"] = {"name": "taper", "display_name": "Rust (taper)", "language": "rust"}
    NotebookClient(nb, timeout=300, kernel_name="taper").execute()
    assert nb.cells[1].outputs[0]["text"] == "sum = 55\n"
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "10"

    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell('panic!("stop here");'), nbformat.v4.new_code_cell("1")]
    with pytest.raises(CellExecutionError):
        NotebookClient(bad, timeout=300, kernel_name="taper").execute()
    assert bad.cells[1].get("outputs", []) == []


def test_a_shell_with_incremental_builds_off_still_runs_each_new_cell():
    """A kernel started from a shell that exports `CARGO_INCREMENTAL=0` (CI
    scripts do) once ran the first cell's library for every later cell:
    evcxr's build cache keeps crates built without incremental state."""
    with own_kernel(dict(os.environ, CARGO_INCREMENTAL="0")) as kc:
        values = []
        for code in ["1 + 1", "2 + 3", "let y = 7;", "y * 6"]:
            values += results(kc, code)
        assert values == ["2", "5", "42"]


@pytest.mark.parametrize("namer", ["rustc", "rust-analyzer"])
def test_variables_keep_their_types_whoever_names_them(namer, tmp_path):
    """A cell's new variables are stored under the type evcxr names for
    them. Until rust-analyzer has resolved the notebook's dependency graph,
    rustc names them (a probe compile, vendor/README.md); with
    `TAPER_TYPE_PROBE=0` rust-analyzer always does. Either way the next cells
    use them, and what cannot be stored or compiled is said so."""
    log = tmp_path / "kernel.log"
    env = dict(os.environ, TAPER_KERNEL_LOG=str(log), TAPER_TYPE_PROBE="1" if namer == "rustc" else "0")
    with own_kernel(env) as kc:
        # Sent at once: rust-analyzer has not started.
        assert results(kc, "let n = 40; let xs = vec![1.5, 2.5]; let (tag, name) = (7u8, \"seven\");") == []
        assert results(kc, "#[derive(Debug)] struct Point { x: i64 }\nlet p = Point { x: 3 };") == []
        assert results(kc, "let points = vec![Point { x: 1 }]; let d = std::time::Duration::from_millis(5);") == []
        assert results(kc, "let mut counts = std::collections::HashMap::<String, Vec<usize>>::new();") == []
        assert results(kc, "counts.insert(\"a\".into(), vec![1]);") == []
        assert results(
            kc, 'format!("{} {} {} {} {} {} {} {}", n + 2, xs.iter().sum::<f64>(), tag, name, counts["a"][0], p.x, points.len(), d.as_millis())'
        ) == ['"42 4 7 seven 1 3 1 5"']
        reply, _ = run(kc, "let add = |a: i32| a + 1;")
        assert reply["content"]["status"] == "error"
        if namer == "rustc":
            # rust-analyzer's path, evcxr's, ends in a borrow checker
            # message after the cells above ("borrowed data escapes").
            assert "is a closure, which cannot be persisted" in reply["content"]["evalue"]
        reply, _ = run(kc, "let missing = no_such_function();")
        assert reply["content"]["status"] == "error"
        assert "cannot find function `no_such_function`" in reply["content"]["evalue"]
        assert results(kc, "n + 2") == ["42"]
    probed = [line for line in log.read_text().splitlines() if "Type probe" in line]
    if namer == "rustc":
        assert probed, "no cell was typed by a probe compile"
    else:
        assert probed == []


def test_warm_cells_see_an_edited_path_dependency_and_their_own_edits(tmp_path):
    """A warm cell is built by rustc alone while cargo would run the same
    command (vendor/README.md); a path dependency edited between cells must
    still be rebuilt, as cargo would, and a redefined function must change."""
    crate = tmp_path / "edited_dep"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "edited_dep"\nversion = "0.1.0"\nedition = "2021"\n')
    source = crate / "src" / "lib.rs"
    source.write_text("pub fn value() -> u32 { 1 }\n")
    with own_kernel() as kc:
        results(kc, "fn answer() -> u32 { 10 }")
        assert results(kc, "answer()") == ["10"]
        results(kc, "fn answer() -> u32 { 20 }")
        assert results(kc, "answer() + 1") == ["21"]

        results(kc, f':dep edited_dep = {{ path = "{crate}" }}')
        assert results(kc, "edited_dep::value()") == ["1"]
        source.write_text("pub fn value() -> u32 { 2 }\n")
        assert results(kc, "edited_dep::value()") == ["2"]
        assert results(kc, "edited_dep::value() * 10") == ["20"]


def test_install_writes_a_kernelspec_with_message_interrupts():
    import json

    folder = PREFIX / "share/jupyter/kernels/taper"
    spec = json.loads((folder / "kernel.json").read_text())
    for logo in ["logo-32x32.png", "logo-64x64.png"]:
        assert (folder / logo).read_bytes().startswith(b"\x89PNG"), logo

    assert spec["interrupt_mode"] == "message"
    assert spec["language"] == "rust"
    assert spec["argv"][1:] == ["kernel", "--connection-file", "{connection_file}"]


def test_a_model_built_in_one_cell_trains_in_another(kernel):
    """Each cell carries its own copy of candle, with its own tensor-id
    counter: without taper::tensor_ids the weights of a model built in one
    cell and the activations of the next share ids, and backward fails with
    a shape mismatch (or mixes up gradients)."""
    _, kc = kernel
    build = """:dep taper
use taper::{datasets, models, Trainer, TrainingArguments};
let other_cell_data = datasets::load_tabular("winequality", 0.2, 42).unwrap();
let other_cell_model = models::Mlp::new(&models::MlpConfig { input_dim: 11, hidden: vec![128, 128], num_classes: 6 }, 0, &taper::candle_core::Device::Cpu).unwrap();"""
    reply, outputs = run(kc, build, timeout=1200)
    assert reply["content"]["status"] == "ok", outputs
    train = """let args = TrainingArguments::builder().max_steps(40).per_device_train_batch_size(16).logging_steps(10.0).disable_tqdm(true).build().unwrap();
let mut other_cell_trainer = Trainer::new(args, other_cell_model).unwrap().with_train_dataset(other_cell_data.train.clone());
let out = other_cell_trainer.train().unwrap();
(out.global_step, out.training_loss.is_finite())"""
    reply, outputs = run(kc, train)
    results = [m for m in outputs if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == "(40, true)", outputs


def test_interrupting_training_stops_at_a_step_and_keeps_the_trainer(kernel):
    km, kc = kernel
    setup = """:dep taper
use taper::{datasets, models, Trainer, TrainingArguments};
let data = datasets::load_tabular("winequality", 0.2, 42).unwrap();
let config = models::MlpConfig { input_dim: 11, hidden: vec![64], num_classes: 6 };
let model = models::Mlp::new(&config, 0, &taper::candle_core::Device::Cpu).unwrap();
let args = TrainingArguments::builder()
    .max_steps(1_000_000_000)
    .logging_steps(1e9)
    .save_strategy(taper::args::IntervalStrategy::No)
    .disable_tqdm(true)
    .build()
    .unwrap();
let mut trainer = Trainer::new(args, model).unwrap().with_train_dataset(data.train);"""
    reply, outputs = run(kc, setup, timeout=1200)  # the first `:dep taper` builds candle
    assert reply["content"]["status"] == "ok", outputs
    msg_id = kc.execute('println!("training starts"); let out = trainer.train().unwrap();')
    wait_for_stream(kc, msg_id, "training starts")  # compiled and running
    time.sleep(0.5)
    started = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"the reply came {elapsed:.1f} s after the interrupt"
    assert reply["content"]["status"] == "ok"
    reply, outputs = run(kc, "(trainer.state.global_step > 0, out.global_step == trainer.state.global_step)")
    results = [m for m in outputs if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == "(true, true)", outputs
    # Past the grace period the interrupt is over: a later cell runs undisturbed.
    time.sleep(3.5)
    reply, outputs = run(kc, "trainer.state.global_step > 0")
    assert reply["content"]["status"] == "ok", reply["content"]


def dist_table(kc, args=""):
    """Runs `%dist args`; returns the reply and {variable: value} from its table."""
    reply, outputs = run(kc, f"%dist {args}".strip())
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    values = {}
    if shown:
        for line in shown[-1]["content"]["data"]["text/plain"].splitlines():
            words = line.split()
            if words and words[0] in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}:
                values[words[0]] = words[1]
    return reply, values


def test_dist_shows_an_emulated_world_of_one_and_changes_it_in_the_cell_process(kernel):
    _, kc = kernel
    reply, values = dist_table(kc)
    assert reply["content"]["status"] == "ok"
    assert values["RANK"] == "0" and values["WORLD_SIZE"] == "1", values
    assert values["MASTER_ADDR"] == "127.0.0.1" and int(values["MASTER_PORT"]) > 0, values

    # A second notebook's kernel picks its own port.
    km2, kc2 = start_new_kernel(kernel_name="taper", startup_timeout=60, cwd=tempfile.mkdtemp(prefix="taper-cwd-"))
    try:
        _, other = dist_table(kc2)
        assert other["MASTER_PORT"] != values["MASTER_PORT"], (values, other)
    finally:
        kc2.stop_channels()
        km2.shutdown_kernel()

    reply, changed = dist_table(kc, "WORLD_SIZE=2 RANK=1 LOCAL_WORLD_SIZE=2 LOCAL_RANK=1")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert changed["RANK"] == "1" and changed["WORLD_SIZE"] == "2", changed
    reply, outputs = run(kc, 'std::env::var("RANK").unwrap() + "/" + &std::env::var("WORLD_SIZE").unwrap()')
    results = [m for m in outputs if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == '"1/2"', outputs

    reply, _ = dist_table(kc, "RANK=5")
    assert reply["content"]["status"] == "error"
    assert "out of range" in reply["content"]["evalue"] and "nothing was changed" in reply["content"]["evalue"]

    reply, back = dist_table(kc, "reset")
    assert reply["content"]["status"] == "ok"
    assert back["RANK"] == "0" and back["WORLD_SIZE"] == "1", back
