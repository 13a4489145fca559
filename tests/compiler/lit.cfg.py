# lit configuration of the sbpflow compiler FileCheck tests: every *.mlir file
# here runs its RUN lines with sbpflow-opt and FileCheck on PATH.
import os

import lit.formats

config.name = "sbpflow-compiler"
config.test_format = lit.formats.ShTest(True)
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = config.sbpflow_obj_root
config.excludes = ["inputs"]
config.environment["PATH"] = os.pathsep.join(
    [config.sbpflow_bin_dir, config.llvm_tools_dir, config.environment.get("PATH", "")]
)
