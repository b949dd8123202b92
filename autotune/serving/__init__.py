"""Serving on TorchServe: the server process, the model archive, the models, the evaluator that
deploys and measures a configuration, Java and the host's hardware."""

from autotune.serving._archive import (
    MODEL_CONFIG_FILE,
    MODEL_VERSION,
    build_archive,
    model_config,
    rewrite_model_config,
    write_yaml_atomic,
)
from autotune.serving._evaluator import TorchServeEvaluator, result_from_goodput
from autotune.serving._exported import (
    CONFIG_PROPERTIES_FILE,
    MODEL_STORE_DIR,
    ExportedServer,
    read_properties,
)
from autotune.serving._hardware import detect_hardware, visible_gpus
from autotune.serving._java import find_java_home
from autotune.serving._models import BUILTIN_MODELS, DEFAULT_MODEL, ModelSpec, get_model
from autotune.serving._process import find_executable, stop_process_group
from autotune.serving._server import (
    ServerSettings,
    TorchServe,
    free_port,
    render_properties,
    stop_all,
    torchserve_executable,
)

__all__ = [
    "BUILTIN_MODELS",
    "CONFIG_PROPERTIES_FILE",
    "DEFAULT_MODEL",
    "MODEL_CONFIG_FILE",
    "MODEL_STORE_DIR",
    "MODEL_VERSION",
    "ExportedServer",
    "ModelSpec",
    "ServerSettings",
    "TorchServe",
    "TorchServeEvaluator",
    "build_archive",
    "detect_hardware",
    "find_executable",
    "find_java_home",
    "free_port",
    "get_model",
    "model_config",
    "read_properties",
    "render_properties",
    "result_from_goodput",
    "rewrite_model_config",
    "stop_all",
    "stop_process_group",
    "torchserve_executable",
    "visible_gpus",
    "write_yaml_atomic",
]
