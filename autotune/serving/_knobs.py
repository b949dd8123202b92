"""Which knobs an archive can take, found from its manifest and handler without running them.

Every archive takes workers, batch size and max batch delay (registration and model-config.yaml),
the device (``deviceType``; cuda only where a GPU is found) and threads per worker on cpu (the
server's ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, which the workers inherit). ``torch.compile``
through the YAML's ``pt2`` section applies where TorchServe's ``BaseHandler.initialize`` loads
an eager model: the handler is a stock one, or a class in the handler file that derives from a
BaseHandler-based class and does not replace ``initialize`` without calling ``super()``.

Knobs that need the handler's cooperation (``fp16``, ``torchscript``, ``compile`` inside the
handler, ``threads_per_worker`` set by the handler) are those the handler file declares with a
module-level ``AUTOTUNE_KNOBS = ("fp16", ...)``. Handler code is read with ``ast``, never
imported: user code runs only inside TorchServe's workers.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final, Literal

from autotune._errors import ConfigError
from autotune.serving._manifest import Manifest
from autotune.space import Backend, Hardware, SearchSpace

HANDLER_KNOBS: Final = ("fp16", "torchscript", "compile", "threads_per_worker")
_BASE_HANDLER: Final = ("ts.torch_handler.base_handler", "BaseHandler")
_MAX_DEPTH: Final = 12

HandlerKind = Literal["stock", "file"]


@dataclass(frozen=True, kw_only=True)
class HandlerInfo:
    """What the tuner knows of an archive's handler, read from its source."""

    name: str  # as the manifest says it
    kind: HandlerKind
    path: Path
    class_name: str | None  # None: a function entry point
    base_initialize: bool  # BaseHandler.initialize loads the model (so pt2 applies)
    declared: tuple[str, ...] = ()  # AUTOTUNE_KNOBS
    why: str = ""  # why base_initialize is what it is

    def text(self) -> str:
        where = "TorchServe stock handler" if self.kind == "stock" else "handler file"
        entry = f"class {self.class_name}" if self.class_name else "function entry point"
        return f"{self.name} ({where}, {entry}; {self.why})"


@dataclass(frozen=True, kw_only=True)
class Knobs:
    """The knobs one archive takes on this host, and why the others are not offered."""

    devices: tuple[str, ...]
    compile_via: Literal["handler", "pt2"] | None
    threads_via: Literal["handler", "environment"]
    fp16: bool
    torchscript: bool
    missing: Mapping[str, str] = field(default_factory=dict)  # knob -> why not

    def handler_keys(self) -> tuple[str, ...]:
        """The ``handler:`` keys of model-config.yaml the study writes per trial."""
        keys = [k for k in ("fp16", "torchscript") if getattr(self, k)]
        if self.compile_via == "handler":
            keys.append("compile")
        if self.threads_via == "handler":
            keys.append("threads_per_worker")
        return tuple(keys)


def ts_package_dir() -> Path:
    """TorchServe's ``ts`` package folder (found, not imported)."""
    spec = importlib.util.find_spec("ts")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("TorchServe's Python package `ts` is not installed here")
    return Path(next(iter(spec.submodule_search_locations)))


def inspect_handler(manifest: Manifest, model_dir: Path, *, source: str) -> HandlerInfo:
    """Find the handler the way TorchServe's ``ModelLoader`` does, and read it."""
    module_part, _, function = manifest.handler.partition(":")
    stem = module_part.removesuffix(".py").split("/")[-1]
    local = model_dir / f"{stem}.py"
    if local.is_file():
        kind: HandlerKind = "file"
        path = local
    else:
        path = ts_package_dir() / "torch_handler" / f"{manifest.handler}.py"
        kind = "stock"
        if not path.is_file():
            raise ConfigError(
                f"{source}: handler {manifest.handler!r} is neither a file in the archive nor a "
                "TorchServe stock handler (image_classifier, object_detector, ...)"
            )
    tree = _parse(path, source=source)
    declared = _declared_knobs(tree, path, source=source)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if function or "handle" in functions:
        return HandlerInfo(
            name=manifest.handler,
            kind=kind,
            path=path,
            class_name=None,
            base_initialize=False,
            declared=declared,
            why="a function entry point does not use BaseHandler",
        )
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if not classes:
        raise ConfigError(
            f"{source}: handler {path.name} defines no class and no `handle` function; "
            "TorchServe cannot load it"
        )
    cls = classes[0]
    modules = _Modules(model_dir)
    module = _module_name(path, model_dir)
    based, why = modules.base_initialize(module, path, cls.name, 0)
    return HandlerInfo(
        name=manifest.handler,
        kind=kind,
        path=path,
        class_name=cls.name,
        base_initialize=based,
        declared=declared,
        why=why,
    )


def find_knobs(manifest: Manifest, handler: HandlerInfo, hardware: Hardware) -> Knobs:
    """The knobs this archive takes on ``hardware``."""
    missing: dict[str, str] = {}
    devices = ("cpu", "cuda") if hardware.gpus > 0 else ("cpu",)
    if hardware.gpus == 0:
        missing["cuda"] = "no GPU found on this host"
    declared = set(handler.declared)
    undeclared = f"handler {handler.path.name} does not declare it in AUTOTUNE_KNOBS"
    compile_via: Literal["handler", "pt2"] | None = None
    if "compile" in declared:
        compile_via = "handler"
    elif not handler.base_initialize:
        missing["compile"] = (
            f"{undeclared}, and pt2 needs a handler built on BaseHandler.initialize ({handler.why})"
        )
    elif not manifest.model_file:
        missing["compile"] = (
            f"pt2 compiles the eager model BaseHandler loads, and this archive holds "
            f"{manifest.artifact_text()}"
        )
    else:
        compile_via = "pt2"
    for knob in ("fp16", "torchscript"):
        if knob not in declared:
            missing[knob] = undeclared
    if "fp16" in declared and hardware.gpus == 0:
        missing["fp16"] = "fp16 runs on cuda only, and no GPU was found on this host"
    return Knobs(
        devices=devices,
        compile_via=compile_via,
        threads_via="handler" if "threads_per_worker" in declared else "environment",
        fp16="fp16" in declared,
        torchscript="torchscript" in declared,
        missing=missing,
    )


def restrict_space(space: SearchSpace, knobs: Knobs, *, strict: bool) -> SearchSpace:
    """``space`` cut down to what the archive takes. ``strict`` (a ``--space`` of the user's):
    a knob the archive cannot take is refused with one line instead of dropped."""

    def refuse(key: str, knob: str) -> None:
        if strict:
            raise ConfigError(
                f"{space.source}: parameters.{key}: this archive cannot take {knob}: "
                f"{knobs.missing.get(knob, 'not supported')}; remove it from the search space"
            )

    backends = space.backends
    if Backend.CUDA_FP16 in backends and not knobs.fp16:
        refuse("fp16", "fp16")
        backends = tuple(b for b in backends if b is not Backend.CUDA_FP16)
        if not backends:
            backends = (Backend.CUDA_FP32,)
    torchscript = space.torchscript
    if True in torchscript and not knobs.torchscript:
        refuse("torchscript", "torchscript")
        torchscript = (False,)
    compile_ = space.compile
    if True in compile_ and knobs.compile_via is None:
        refuse("compile", "compile")
        compile_ = (False,)
    if torchscript == (True,) and compile_ == (True,):
        compile_ = (False,)
    return dataclasses.replace(space, backends=backends, torchscript=torchscript, compile=compile_)


def describe_knobs(space: SearchSpace, knobs: Knobs) -> list[str]:
    """One line per knob: the values the run searches and how each reaches TorchServe."""

    def values(items: tuple[int, ...]) -> str:
        lo, hi = items[0], items[-1]
        if len(items) > 2 and items == tuple(range(lo, hi + 1)):
            return f"{lo}..{hi}"
        return ", ".join(str(v) for v in items)

    def per_device(name: str) -> str:
        per = getattr(space, name)
        texts = {d: values(per[d]) for d in space.devices}
        if len(set(texts.values())) == 1:
            return next(iter(texts.values()))
        return "; ".join(f"{d}: {t}" for d, t in texts.items())

    lines = [
        f"workers: {per_device('workers')} (registration and model-config.yaml min/maxWorkers)",
        f"batch size: {per_device('batch_size')} (registration and model-config.yaml batchSize)",
        f"max batch delay: {per_device('max_batch_delay_ms')} ms (registration and "
        "model-config.yaml maxBatchDelay; 0 is sent as 1)",
    ]
    device = ", ".join(space.devices) + " (model-config.yaml deviceType, number_of_gpu)"
    if "cuda" not in space.devices and "cuda" in knobs.missing:
        device += f"; cuda not offered: {knobs.missing['cuda']}"
    lines.append(f"device: {device}")
    if "cpu" in space.devices:
        threads = "torch's default" if space.threads_per_worker == (0,) else None
        how = (
            "handler: threads_per_worker in model-config.yaml"
            if knobs.threads_via == "handler"
            else "the server's OMP_NUM_THREADS/MKL_NUM_THREADS, a restart when it changes"
        )
        lines.append(
            f"threads per worker (cpu): {threads or values(space.threads_per_worker)} ({how})"
        )
    via = {"pt2": "model-config.yaml pt2: compile", "handler": "handler: compile"}
    if True in space.compile:
        assert knobs.compile_via is not None
        lines.append(f"torch.compile: off, on ({via[knobs.compile_via]})")
    elif knobs.compile_via is not None:
        lines.append(
            f"torch.compile: available ({via[knobs.compile_via]}), not in the search space"
        )
    else:
        lines.append(f"torch.compile: not available ({knobs.missing['compile']})")
    for knob, offered, available in (
        ("torchscript", True in space.torchscript, knobs.torchscript),
        ("fp16", Backend.CUDA_FP16 in space.backends, knobs.fp16 and "fp16" not in knobs.missing),
    ):
        if offered:
            lines.append(f"{knob}: off, on (handler: {knob} in model-config.yaml)")
        elif available:
            lines.append(f"{knob}: available (handler: {knob}), not in the search space")
        else:
            lines.append(f"{knob}: not available ({knobs.missing.get(knob, 'not supported')})")
    return lines


# -- reading handler source ------------------------------------------------------------------


def _parse(path: Path, *, source: str) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise ConfigError(
            f"{source}: handler {path.name} cannot be read as Python: {exc}"
        ) from None


def _declared_knobs(tree: ast.Module, path: Path, *, source: str) -> tuple[str, ...]:
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if not any(isinstance(t, ast.Name) and t.id == "AUTOTUNE_KNOBS" for t in targets):
            continue
        where = f"{source}: {path.name}: AUTOTUNE_KNOBS"
        if not isinstance(value, ast.Tuple | ast.List) or not all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
        ):
            raise ConfigError(f"{where} must be a tuple of string literals")
        names = tuple(str(e.value) for e in value.elts if isinstance(e, ast.Constant))
        unknown = [n for n in names if n not in HANDLER_KNOBS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown knob {unknown[0]!r}; known: {', '.join(HANDLER_KNOBS)}"
            )
        return names
    return ()


def _module_name(path: Path, model_dir: Path) -> str:
    ts_dir = ts_package_dir()
    if path.is_relative_to(ts_dir):
        parts = path.relative_to(ts_dir.parent).with_suffix("").parts
        return ".".join(parts)
    return path.stem


@dataclass
class _Modules:
    """Resolves class names across the archive's files and TorchServe's ``ts`` package."""

    model_dir: Path

    def file_of(self, module: str) -> Path | None:
        if module == "ts" or module.startswith("ts."):
            path = ts_package_dir().parent.joinpath(*module.split(".")).with_suffix(".py")
            return path if path.is_file() else None
        local = self.model_dir / f"{module}.py"
        return local if local.is_file() else None

    def base_initialize(
        self, module: str, path: Path, class_name: str, depth: int
    ) -> tuple[bool, str]:
        if (module, class_name) == _BASE_HANDLER:
            return True, "BaseHandler.initialize loads the model"
        if depth > _MAX_DEPTH:
            return False, f"class {class_name}: base classes too deep to follow"
        tree = _cached_parse(path)
        cls = next(
            (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None
        )
        if cls is None:
            return False, f"class {class_name} not found in {path.name}"
        init = next(
            (
                n
                for n in cls.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "initialize"
            ),
            None,
        )
        imports = _imports(tree, module)
        based, why = False, f"{class_name} is not based on TorchServe's BaseHandler"
        for base in cls.bases:
            target = _resolve(base, imports, module)
            if target is None:
                continue
            base_module, base_name = target
            if (base_module, base_name) == _BASE_HANDLER:
                based, why = True, f"{class_name} derives from BaseHandler"
                break
            base_path = self.file_of(base_module)
            if base_path is None:
                continue
            base_based, base_why = self.base_initialize(
                base_module, base_path, base_name, depth + 1
            )
            if base_based:
                based, why = True, f"{class_name} derives from {base_name}, which uses BaseHandler"
                break
            if "replaces" in base_why:
                why = base_why
        if based and init is not None and not _calls_base_initialize(init):
            return False, f"{class_name}.initialize replaces BaseHandler's without calling super()"
        return based, why


@cache
def _cached_parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _calls_base_initialize(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``super().initialize(...)`` or ``SomeBase.initialize(self, ...)`` in the body."""
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "initialize"
        ):
            owner = node.func.value
            if (
                isinstance(owner, ast.Call)
                and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"
            ):
                return True
            if isinstance(owner, ast.Name | ast.Attribute) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Name) and first.id == "self":
                    return True
    return False


def _imports(tree: ast.Module, module: str) -> dict[str, tuple[str, str | None]]:
    """Local name -> (module, attribute or None for a module import)."""
    package = module.rpartition(".")[0]
    names: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}".strip(".") if parent else base
            for alias in node.names:
                names[alias.asname or alias.name] = (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = (alias.name, None)
                else:
                    top = alias.name.split(".")[0]
                    names[top] = (top, None)
        elif isinstance(node, ast.ClassDef):
            names[node.name] = (module, node.name)
    return names


def _resolve(
    base: ast.expr, imports: Mapping[str, tuple[str, str | None]], module: str
) -> tuple[str, str] | None:
    """The (module, class) a base-class expression names, where the imports tell."""
    if isinstance(base, ast.Name):
        found = imports.get(base.id)
        if found is None:
            return None
        mod, attr = found
        return (mod, attr) if attr is not None else None
    if isinstance(base, ast.Attribute):
        parts: list[str] = [base.attr]
        value: ast.expr = base.value
        while isinstance(value, ast.Attribute):
            parts.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name):
            return None
        found = imports.get(value.id)
        if found is None:
            return None
        mod, attr = found
        head = mod if attr is None else f"{mod}.{attr}"
        dotted = [head, *reversed(parts[1:])]
        return ".".join(dotted), base.attr
    return None
