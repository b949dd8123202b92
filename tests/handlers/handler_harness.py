"""Run the TorchServe handlers in-process, with the Context and metrics a worker gives them.

A module of its own (not conftest.py, which another test folder may shadow) so that tests and
bench_handlers.py can import it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import ts
from PIL import Image
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

ASSETS = Path(__file__).resolve().parents[2] / "autotune" / "assets"
METRICS_YAML = Path(ts.__file__).parent / "configs" / "metrics.yaml"


def load(handler_class: type[Any], settings: dict[str, Any] | None, model_dir: Path) -> Any:
    """A handler initialised as a TorchServe worker does it; ``.test_context`` is its Context."""
    handler = handler_class()
    handler.test_context = make_context(settings, model_dir)
    handler.initialize(handler.test_context)
    return handler


def make_context(settings: dict[str, Any] | None, model_dir: Path) -> Context:
    """A Context as ``ts.service.Service`` builds it from model-config.yaml."""
    metrics = MetricsCacheYamlImpl(config_file_path=str(METRICS_YAML))
    metrics.initialize_cache()
    metrics.model_name = "test"
    yaml_config = {} if settings is None else {"handler": settings}
    manifest = {"model": {"modelName": "test"}}
    return Context(
        "test", str(model_dir), manifest, 8, None, ts.__version__, True, metrics, yaml_config
    )


def run_batch(handler: Any, bodies: list[bytes]) -> tuple[list[dict[str, Any]], list[int]]:
    """One batch through ``handler.handle``, as ``ts.service.Service.predict`` does it."""
    context = handler.test_context
    context.request_processor = [RequestProcessor({}) for _ in bodies]
    context.request_ids = {i: f"request-{i}" for i in range(len(bodies))}
    context.metrics.request_ids = context.request_ids
    results = handler.handle([{"body": body} for body in bodies], context)
    statuses = [context.get_response_status(i)[0] for i in range(len(bodies))]
    return results, statuses


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
