"""optuna-dashboard on a study: the study note it shows, and the dashboard as a child process.

``DashboardServer`` runs ``optuna-dashboard`` on our own port and always stops it.
"""

from __future__ import annotations

import contextlib
import math
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import optuna

from autotune._errors import ConfigError, StorageError
from autotune.results._summary import StudySummary, summarize
from autotune.serving import ChildProcess, find_executable, wait_until
from autotune.study import CONFIRMATION_RULE


# -- the study note -------------------------------------------------------------------------------
def study_note(study: optuna.Study) -> str:
    """The Markdown summary of a study: SLA, best configuration, P99, throughput, speed-up."""
    return note_markdown(summarize(study))


def note_markdown(summary: StudySummary) -> str:
    """``study_note`` of a summary: what optuna-dashboard shows as the study's note."""
    sla = f"{summary.sla_ms:g} ms" if summary.sla_ms is not None else "unknown"
    confirmations = (
        f" (and {summary.confirmation_trials} confirmation trials)"
        if summary.confirmation_trials
        else ""
    )
    lines = [
        f"## autotune: {summary.study_name}",
        "",
        f"- SLA: P99 <= {sla}",
        f"- model: {summary.model or 'unknown'}",
        f"- trials: {summary.complete} complete, {summary.feasible} within the SLA" + confirmations,
    ]
    best = summary.best
    if best is None:
        fastest = summary.fastest
        fastest_text = f"{fastest.p99_ms:.1f} ms" if fastest is not None else "not measured"
        headline = (
            "**No configuration held the SLA in every confirmation.**"
            if summary.confirmed
            else "**No trial met the SLA.**"
        )
        lines += ["", f"{headline} The fastest P99 was {fastest_text}."]
        return "\n".join(lines) + "\n"
    p99 = best.p99_ms
    lines += [
        "",
        f"### Best: trial {best.number}",
        "",
        f"- configuration: `{best.label}`",
        f"- throughput: **{best.throughput_rps:.1f} req/s** at P99 "
        + (f"**{p99:.1f} ms**" if math.isfinite(p99) else "n/a"),
    ]
    reps = best.replicates
    if reps is not None:
        figures = ", ".join(f"{v:.1f}" for v in reps.throughput_rps)
        spread = f"{reps.spread:.2f}x" if math.isfinite(reps.spread) else "inf"
        lines.append(
            f"- confirmed: **{reps.confirmed_rps:.1f} req/s** ({CONFIRMATION_RULE}: "
            f"{figures}; spread {spread})"
        )
    lines += [
        f"- speed-up over the TorchServe default: {_speedup_text(summary)}",
        "",
        "Deploy it with `autotune export`; Optuna's `study.best_trial` only counts trials that "
        "met the SLA (the dashboard's *Best Trial* card does not look at constraints).",
    ]
    if best.config is not None:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in best.config.as_dict().items()]
    return "\n".join(lines) + "\n"


def save_study_note(study: optuna.Study) -> None:
    """Write ``study_note(study)`` as the study's optuna-dashboard note."""
    from optuna_dashboard import save_note

    save_note(study, study_note(study))


def _speedup_text(summary: StudySummary) -> str:
    baseline = summary.baseline
    if baseline is None:
        return "n/a (no baseline trial)"
    speedup = summary.speedup
    if speedup is None:
        return f"n/a (the default configuration, trial {baseline.number}, missed the SLA)"
    return f"**{speedup:.2f}x** ({baseline.figure_rps:.1f} req/s in trial {baseline.number})"


# -- optuna-dashboard as a child process ----------------------------------------------------------
def dashboard_executable() -> str:
    found = find_executable("optuna-dashboard")
    if found is None:
        raise ConfigError(
            "optuna-dashboard not found; install it with `pip install optuna-dashboard`"
        )
    return found


def dashboard_argv(
    storage: str, *, host: str, port: int, artifact_dir: Path | None = None
) -> list[str]:
    argv = [dashboard_executable(), storage, "--host", host, "--port", str(port)]
    if artifact_dir is not None:
        argv += ["--artifact-dir", str(artifact_dir)]
    return argv


class DashboardServer:
    """``optuna-dashboard`` on ``host:port`` as our child: a context manager, always stopped."""

    def __init__(
        self,
        storage: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        artifact_dir: Path | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.argv = dashboard_argv(storage, host=host, port=port, artifact_dir=artifact_dir)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self._child = ChildProcess(self.argv, name="optuna-dashboard", log_path=log_path)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        # Without a log file the dashboard's own messages go to our terminal.
        self._child.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        def answers() -> bool:
            if not self._child.is_alive():
                where = f"; see {self.log_path}" if self.log_path is not None else ""
                raise StorageError(f"optuna-dashboard exited during start-up{where}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/api/meta", timeout=5) as response,
            ):
                return bool(response.status == 200)
            return False

        wait_until(
            answers,
            timeout_s=self.startup_timeout_s,
            what=f"optuna-dashboard did not answer on {self.url}",
            error=StorageError,
        )

    def wait(self) -> int:
        """Block until the dashboard exits; returns its exit status."""
        return self._child.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._child.stop(timeout_s)

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
