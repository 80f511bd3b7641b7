"""The Jupyter protocol, checked by the PyPI `jupyter_kernel_test` suite
against the real kernel started by a real jupyter_client."""

import tempfile
import time
import unittest
from pathlib import Path

import jupyter_kernel_test

from conftest import install_kernelspec

PREFIX = Path(tempfile.mkdtemp(prefix="taper-kernelspec-"))
install_kernelspec(PREFIX)


class TaperKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "taper"
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("to stderr");'
    code_generate_error = "let x: u32 = \"not a number\";"
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": "format!(\"{}-{}\", 1, 2)", "result": '"1-2"'},
    ]
    code_history_pattern = "6 *"
    supported_history_operations = ("tail", "range", "search")
    complete_code_samples = ["let x = 1;", "fn f() {}", "let s = \"}\";"]
    incomplete_code_samples = ["fn f() {", "let v = vec![1,", "let s = \"open"]
    invalid_code_samples = ["let x = 1; }", "(]"]
    completion_samples = [{"text": "let value_for_completion = 1; value_for_comp"}]
    code_inspect_sample = "std::vec::Vec::<u8>::new"
    # Live output from cell code goes through the kernel's display channel.
    code_display_data = [
        {"code": 'taper_widgets::display(taper_widgets::MimeBundle::html("<b>hi</b>", "hi"));', "mime": "text/html"},
        {"code": 'taper_widgets::display(taper_widgets::MimeBundle::text("plain"));', "mime": "text/plain"},
    ]
    code_clear_output = "taper_widgets::clear_output(false);"
    code_page_something = ":help"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # evcxr builds its runtime on the first cell, and the widgets crate
        # on `:dep`: give both time once.
        reply = cls.kc.execute_interactive(":dep taper-widgets\nlet warm_up = 1;", timeout=900)
        assert reply["content"]["status"] == "ok", reply["content"]
        # The cell's variable types come from rustc while rust-analyzer
        # resolves the dependency graph in the background: once the kernel
        # is idle, taper's graph too, before any `:dep taper`. The first
        # completion waits for that (a few seconds in a release build, about
        # a minute in the debug build CI tests), once.
        time.sleep(1)
        cls.kc.complete("warm_u", 6)
        reply = cls.kc.get_shell_msg(timeout=900)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert "warm_up" in reply["content"]["matches"], reply["content"]


class TaperIopubWelcomeTests(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = "taper"
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()
