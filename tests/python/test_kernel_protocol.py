"""The Jupyter protocol, checked by the PyPI `jupyter_kernel_test` suite
against the real kernel started by a real jupyter_client."""

import tempfile
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

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # evcxr builds its runtime on the first cell: give it time once.
        cls.kc.execute_interactive("let warm_up = 1;", timeout=300)


if __name__ == "__main__":
    unittest.main()
