"""The trainer's live view in a notebook: a training cell shows one output
and redraws it in place while it runs, through the display channel; the
quickstart notebook runs end to end under nbclient and its saved copy
holds the final view; headless Chromium renders that copy."""

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from conftest import ARTIFACTS, ROOT, install_kernelspec

PREFIX = Path(tempfile.mkdtemp(prefix="taper-kernelspec-"))
install_kernelspec(PREFIX)

TRAIN = """
use taper::args::IntervalStrategy;
use taper::{datasets, models, Trainer, TrainingArguments};
let data = datasets::load_tabular("winequality", 0.2, 42).unwrap();
let config = models::MlpConfig { input_dim: 11, hidden: vec![256, 256], num_classes: 6 };
let model = models::Mlp::new(&config, 0, &taper::candle_core::Device::Cpu).unwrap();
let args = TrainingArguments::builder()
    .max_steps(600)
    .per_device_train_batch_size(64)
    .logging_steps(50.0)
    .eval_strategy(IntervalStrategy::Steps)
    .eval_steps(200.0)
    .save_strategy(IntervalStrategy::No)
    .build()
    .unwrap();
let mut trainer = Trainer::new(args, model).unwrap()
    .with_train_dataset(data.train)
    .with_eval_dataset(data.test);
trainer.train().unwrap().global_step
"""


@pytest.fixture(scope="module")
def kc():
    km, kc = start_new_kernel(kernel_name="taper", startup_timeout=60, cwd=tempfile.mkdtemp(prefix="taper-cwd-"))
    reply = kc.execute_interactive(":dep taper\nlet warm_up = 1;", timeout=1200)
    assert reply["content"]["status"] == "ok", reply["content"]
    yield kc
    kc.stop_channels()
    km.shutdown_kernel()


def progress_of(html_text):
    """(value, max) of the first <progress> element (in any attribute order:
    nbconvert and browsers reorder them)."""
    tag = re.search(r"<progress\b[^>]*>", html_text)
    assert tag, html_text[:500]
    value = re.search(r'\bvalue="(\d+)"', tag.group(0))
    total = re.search(r'\bmax="(\d+)"', tag.group(0))
    assert value and total, tag.group(0)
    return int(value.group(1)), int(total.group(1))


def test_a_training_cell_redraws_one_live_view_while_it_runs(kc):
    outputs = []
    reply = kc.execute_interactive(TRAIN, timeout=600, output_hook=outputs.append)
    assert reply["content"]["status"] == "ok", reply["content"]
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    assert len(shown) == 1, [m["msg_type"] for m in outputs]
    display_id = shown[0]["content"]["transient"]["display_id"]
    updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
    assert all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    # Drawn while the cell was busy: every update is older than the reply.
    replied = reply["header"]["date"]
    live = [u for u in updates if u["header"]["date"] < replied]
    assert len(live) >= 5, f"{len(live)} updates before the reply"
    # The progress moved forward between updates, and the last frame is the end.
    steps = [progress_of(u["content"]["data"]["text/html"])[0] for u in updates]
    assert steps == sorted(steps) and len(set(steps)) >= 3, steps
    last = updates[-1]["content"]["data"]
    assert progress_of(last["text/html"]) == (600, 600)
    assert "100%" in last["text/plain"]
    # The final metrics row: step 600 with its validation loss.
    rows = re.findall(r"<tr>(.*?)</tr>", last["text/html"], re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    metric_rows = [c for c in cells if c and c[0] in {"200", "400", "600"}]
    assert [c[0] for c in metric_rows] == ["200", "400", "600"], cells
    assert all(re.fullmatch(r"\d+\.\d{6}", value) for value in metric_rows[-1][1:3]), metric_rows
    assert 'class="taper-training-loss"' in last["text/html"]
    assert "CPU (RSS)" in last["text/html"]


LAUNCHED = """%%launch -n 2
use taper::{datasets, models, Trainer, TrainingArguments};
let data = datasets::load_tabular("winequality", 0.2, 42)?;
let config = models::MlpConfig { input_dim: 11, hidden: vec![256, 256], num_classes: 6 };
let model = models::Mlp::new(&config, 0, &taper::candle_core::Device::Cpu)?;
let args = TrainingArguments::builder().max_steps(400).per_device_train_batch_size(32).logging_steps(100.0).build()?;
let mut trainer = Trainer::new(args, model)?.with_train_dataset(data.train);
let out = trainer.train()?;
println!("rank {} done at step {}", std::env::var("RANK")?, out.global_step);
"""


def test_launch_runs_the_cell_on_two_processes_with_rank_0_drawing_live(kc):
    outputs = []
    reply = kc.execute_interactive(LAUNCHED, timeout=1500, output_hook=outputs.append)
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert reply["content"]["status"] == "ok", (reply["content"], text[-3000:])
    # Both ranks ran, each line prefixed by the launcher.
    assert "[rank0]: rank 0 done at step 400" in text, text[-3000:]
    assert "[rank1]: rank 1 done at step 400" in text, text[-3000:]
    # Only rank 0 draws, live, before the cell's reply.
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    assert len(shown) == 1, [m["msg_type"] for m in outputs]
    updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
    replied = reply["header"]["date"]
    assert len([u for u in updates if u["header"]["date"] < replied]) >= 2
    assert progress_of(updates[-1]["content"]["data"]["text/html"]) == (400, 400)


def test_launch_reports_a_bad_first_line():
    km, kc = start_new_kernel(kernel_name="taper", startup_timeout=60, cwd=tempfile.mkdtemp(prefix="taper-cwd-"))
    try:
        reply = kc.execute_interactive("%%launch -n zero\nprintln!();", timeout=120)
        assert reply["content"]["status"] == "error"
        assert "usage: `%%launch -n N`" in reply["content"]["evalue"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


@pytest.fixture(scope="module")
def quickstart():
    """notebooks/01-quickstart.ipynb executed by nbclient, saved as an artifact."""
    nb = nbformat.read(ROOT / "notebooks" / "01-quickstart.ipynb", as_version=4)
    workdir = Path(tempfile.mkdtemp(prefix="taper-quickstart-"))
    NotebookClient(nb, timeout=1200, kernel_name="taper", resources={"metadata": {"path": str(workdir)}}).execute()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    saved = ARTIFACTS / "01-quickstart.executed.ipynb"
    nbformat.write(nb, saved)
    return saved


def training_view(nb):
    for cell in nb.cells:
        if cell.cell_type == "code" and "trainer.train()" in cell.source:
            views = [o for o in cell.outputs if o.output_type == "display_data"]
            assert len(views) == 1, cell.outputs
            return views[0]["data"]
    raise AssertionError("the quickstart has no training cell")


def test_the_saved_quickstart_holds_the_final_view(quickstart):
    nb = nbformat.read(quickstart, as_version=4)
    view = training_view(nb)
    value, total = progress_of(view["text/html"])
    assert value == total > 0
    epochs = re.findall(r"<tr><td[^>]*>(\d+)</td>", view["text/html"])
    assert epochs == [str(e) for e in range(1, 41)], epochs
    assert re.search(r'<path class="taper-training-loss" d="M[\d.]+,[\d.]+( L[\d.]+,[\d.]+){10,}"', view["text/html"])
    assert re.search(r'<path class="taper-evaluation-loss" d="M', view["text/html"])
    assert "CPU (RSS)" in view["text/html"]
    evaluate = next(c for c in nb.cells if c.cell_type == "code" and "trainer.evaluate()" in c.source)
    accuracy = float(re.search(r"accuracy (\d\.\d+)", evaluate.outputs[0]["data"]["text/plain"]).group(1))
    assert accuracy > 0.5, accuracy  # the majority class is about 0.42
    memory = nb.cells[-1].outputs
    assert memory and "CPU (RSS)" in memory[0]["data"]["text/plain"]


def test_chromium_renders_the_view_from_the_exported_notebook(quickstart):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: apt-get install chromium (install/test-env.sh does it as root)"
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(quickstart))
    page = ARTIFACTS / "01-quickstart.html"
    page.write_text(body)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    # Read the rendered DOM: the bar at its end, a table row per epoch, the chart's path.
    value, total = progress_of(html.unescape(dom).replace("'", '"'))
    assert value == total > 0
    table = re.search(r'<table class="taper-metrics".*?</table>', dom, re.S).group(0)
    assert len(re.findall(r"<tr>", table)) == 40
    assert re.search(r'<path class="taper-training-loss" d="M', dom)
    shot = ARTIFACTS / "01-quickstart.png"
    shot.unlink(missing_ok=True)
    subprocess.run(flags + ["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.exists() and shot.stat().st_size > 10_000
