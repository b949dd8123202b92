"""Serving on TorchServe: the server process, the model archive and the knobs it takes, the
models, the evaluator that deploys and measures a configuration, config.properties, Java and the
host's hardware."""

from autotune.serving._answers import TOLERANCE_TEXT, answer_difference
from autotune.serving._archive import (
    CONTROLLED_KEYS,
    MODEL_CONFIG_FILE,
    MODEL_VERSION,
    ModelArchive,
    archive_kind,
    build_archive,
    model_config,
    open_archive,
    overridden_keys,
    pack_mar,
    rewrite_model_config,
    write_yaml_atomic,
)
from autotune.serving._evaluator import (
    THREAD_ENV,
    TorchServeEvaluator,
    result_from_goodput,
    thread_env,
    worker_error,
)
from autotune.serving._exported import (
    CONFIG_PROPERTIES_FILE,
    ENV_FILE,
    MODEL_STORE_DIR,
    ExportedServer,
    read_properties,
)
from autotune.serving._hardware import detect_hardware, visible_gpus
from autotune.serving._hostlock import Holder, HostLock, HostLocked
from autotune.serving._java import find_java_home
from autotune.serving._knobs import (
    HANDLER_KNOBS,
    HandlerInfo,
    Knobs,
    describe_knobs,
    find_knobs,
    inspect_handler,
    restrict_space,
)
from autotune.serving._manifest import Manifest, read_manifest
from autotune.serving._models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    ModelSource,
    ModelSpec,
    get_model,
    model_source,
)
from autotune.serving._process import (
    ChildProcess,
    ChildRecord,
    find_executable,
    host_dir,
    reap_orphans,
    stop_process_group,
    wait_until,
)
from autotune.serving._properties import (
    Addresses,
    ModelEntry,
    read_env,
    render_env,
    render_properties,
    server_properties,
)
from autotune.serving._server import (
    ServerSettings,
    TorchServe,
    free_port,
    stop_all,
    torchserve_executable,
)

__all__ = [
    "BUILTIN_MODELS",
    "CONFIG_PROPERTIES_FILE",
    "CONTROLLED_KEYS",
    "DEFAULT_MODEL",
    "ENV_FILE",
    "HANDLER_KNOBS",
    "MODEL_CONFIG_FILE",
    "MODEL_STORE_DIR",
    "MODEL_VERSION",
    "THREAD_ENV",
    "TOLERANCE_TEXT",
    "Addresses",
    "ChildProcess",
    "ChildRecord",
    "ExportedServer",
    "HandlerInfo",
    "Holder",
    "HostLock",
    "HostLocked",
    "Knobs",
    "Manifest",
    "ModelArchive",
    "ModelEntry",
    "ModelSource",
    "ModelSpec",
    "ServerSettings",
    "TorchServe",
    "TorchServeEvaluator",
    "answer_difference",
    "archive_kind",
    "build_archive",
    "describe_knobs",
    "detect_hardware",
    "find_executable",
    "find_java_home",
    "find_knobs",
    "free_port",
    "get_model",
    "host_dir",
    "inspect_handler",
    "model_config",
    "model_source",
    "open_archive",
    "overridden_keys",
    "pack_mar",
    "read_env",
    "read_manifest",
    "read_properties",
    "reap_orphans",
    "render_env",
    "render_properties",
    "restrict_space",
    "result_from_goodput",
    "rewrite_model_config",
    "server_properties",
    "stop_all",
    "stop_process_group",
    "thread_env",
    "torchserve_executable",
    "visible_gpus",
    "wait_until",
    "worker_error",
    "write_yaml_atomic",
]
