"""Live output from cell code through the kernel's display channel:
display and update in place, clear_output, input_request, the pager and
%memory, checked with a real jupyter_client against the real kernel."""

import tempfile
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import install_kernelspec, scratch_folder, slot_is_free

PREFIX = Path(tempfile.mkdtemp(prefix="taper-kernelspec-"))
install_kernelspec(PREFIX)


@pytest.fixture(scope="module")
def kc():
    km, kc = start_new_kernel(kernel_name="taper", startup_timeout=60, cwd=tempfile.mkdtemp(prefix="taper-cwd-"))
    reply = kc.execute_interactive(":dep taper-widgets\nlet warm_up = 1;", timeout=900)
    assert reply["content"]["status"] == "ok", reply["content"]
    yield kc
    scratch = scratch_folder(km.provisioner.pid)
    assert (scratch / "cells" / "Cargo.toml").is_file(), "evcxr builds in the kernel's slot"
    assert scratch.parent == Path(tempfile.gettempdir()) / "taper-evcxr"
    assert not slot_is_free(scratch), "the running kernel holds its slot"
    kc.stop_channels()
    km.shutdown_kernel()
    # A clean shutdown keeps the built dependencies for the next kernel and
    # frees the slot; a kernel started now takes it, with its build folder.
    assert (scratch / "cells" / "target").is_dir()
    assert slot_is_free(scratch)
    km2, kc2 = start_new_kernel(kernel_name="taper", startup_timeout=60)
    try:
        assert scratch_folder(km2.provisioner.pid) == scratch
    finally:
        kc2.stop_channels()
        km2.shutdown_kernel()


def run(kc, code, timeout=300, **kwargs):
    """Executes `code`; returns the reply and the iopub messages of that
    request, in the order they came (all before the reply)."""
    outputs = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append, **kwargs)
    return reply, outputs


def test_a_cell_updates_its_own_output_in_place(kc):
    code = """
let handle = taper_widgets::display(taper_widgets::MimeBundle::html("<i>0</i>", "0"));
for i in 1..=3 {
    std::thread::sleep(std::time::Duration::from_millis(20));
    handle.update(taper_widgets::MimeBundle::html(&format!("<i>{i}</i>"), &i.to_string()));
}
"""
    reply, outputs = run(kc, code)
    assert reply["content"]["status"] == "ok", reply["content"]
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1 and len(updates) == 3, [m["msg_type"] for m in outputs]
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    assert [u["content"]["data"]["text/plain"] for u in updates] == ["1", "2", "3"]
    assert updates[-1]["content"]["data"]["text/html"] == "<i>3</i>"
    assert all(m["parent_header"]["msg_id"] == reply["parent_header"]["msg_id"] for m in shown + updates)


def test_clear_output_with_wait(kc):
    reply, outputs = run(kc, 'println!("old"); taper_widgets::clear_output(true); println!("new");')
    assert reply["content"]["status"] == "ok"
    clears = [m for m in outputs if m["msg_type"] == "clear_output"]
    assert len(clears) == 1 and clears[0]["content"]["wait"] is True


def test_cell_code_reads_a_line_from_the_notebook_user(kc):
    asked = []

    def answer(msg):
        asked.append(msg["content"])
        kc.input("Ada")

    code = 'let name = taper_widgets::input("Your name: ").unwrap(); println!("hello {name}");'
    reply, outputs = run(kc, code, allow_stdin=True, stdin_hook=answer)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert asked == [{"prompt": "Your name: ", "password": False}]
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert "hello Ada" in text


def test_input_without_stdin_is_a_clear_error_not_a_hang(kc):
    code = 'match taper_widgets::input("x? ") { Ok(v) => println!("got {v}"), Err(e) => println!("error: {e}") }'
    reply, outputs = run(kc, code, allow_stdin=False)
    assert reply["content"]["status"] == "ok", reply["content"]
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert "allow_stdin" in text, text


def test_help_and_question_mark_open_the_pager(kc):
    reply, _ = run(kc, ":help")
    pages = reply["content"]["payload"]
    assert len(pages) == 1 and pages[0]["source"] == "page"
    assert ":dep" in pages[0]["data"]["text/plain"]
    reply, _ = run(kc, "std::vec::Vec?")
    pages = reply["content"]["payload"]
    assert len(pages) == 1 and pages[0]["source"] == "page"
    assert "Vec" in pages[0]["data"]["text/plain"]


def test_memory_magic_shows_the_cell_process_memory(kc):
    reply, outputs = run(kc, "%memory")
    assert reply["content"]["status"] == "ok"
    tables = [m for m in outputs if m["msg_type"] == "display_data"]
    assert len(tables) == 1
    data = tables[0]["content"]["data"]
    assert "<table" in data["text/html"] and "CPU (RSS)" in data["text/plain"]
    # A real reading: some MiB, not zero.
    assert "MiB" in data["text/plain"] or "GiB" in data["text/plain"], data["text/plain"]
