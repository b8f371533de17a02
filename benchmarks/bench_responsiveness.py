"""How interactive the napari viewer stays while a dock widget's worker thread runs.

A ``QTimer`` asks to fire every 10 ms in the main (GUI) thread; each time it fires the lateness
against the previous tick plus 10 ms is recorded. A frozen event loop (a worker holding the GIL,
a flood of progress signals, slow progress-bar repaints) shows up as late ticks. Measured idle
for a few seconds, then while the Simulate widget simulates the ``small`` preset in its worker
thread (the real widget in a real, shown ``napari.Viewer``, napari progress bar and all).

Run under a display, e.g.::

    QT_QPA_PLATFORM=xcb xvfb-run -a python benchmarks/bench_responsiveness.py [--json OUT]
        [--idle-s 3] [--structures DIR ...] [--progress-interval 0.05]

Target (issue 10): the viewer stays interactive — p95 lateness well under 50 ms and no stall
longer than about 100 ms while a simulation runs (the eye notices ~100 ms). On a 2-core machine
shared with other work, the numbers include the other work's load: read ``uptime`` with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

TICK_MS = 10


class LagProbe:
    """Records how late a 10 ms ``QTimer`` fires in the main thread (ms per tick)."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.lags_ms: list[float] = []
        #: (seconds since start, lag ms, what the GUI showed then) of each tick over 100 ms
        self.stalls: list[tuple[float, float, str]] = []
        self.label = ""  # set by the caller: what is happening now
        self._t0 = 0.0
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.lags_ms = []
        self.stalls = []
        self._last = self._t0 = time.perf_counter()
        self._timer.start()

    def stop(self) -> list[float]:
        self._timer.stop()
        return list(self.lags_ms)

    def _tick(self) -> None:
        now = time.perf_counter()
        lag = max((now - self._last) * 1000.0 - TICK_MS, 0.0)
        self.lags_ms.append(lag)
        if lag > 100:
            self.stalls.append((round(now - self._t0, 2), round(lag, 1), self.label))
        self._last = now


def summarize(lags_ms: list[float], seconds: float) -> dict:
    lags = np.asarray(lags_ms, dtype=np.float64)
    if lags.size == 0:
        return {"ticks": 0, "seconds": round(seconds, 2)}
    return {"ticks": int(lags.size), "seconds": round(seconds, 2),
            "expected_ticks": int(seconds * 1000 / TICK_MS),
            "p50_ms": round(float(np.percentile(lags, 50)), 1),
            "p95_ms": round(float(np.percentile(lags, 95)), 1),
            "p99_ms": round(float(np.percentile(lags, 99)), 1),
            "max_ms": round(float(lags.max()), 1),
            "stalls_over_100ms": int((lags > 100).sum())}


def pump(app, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle measurement (s)")
    parser.add_argument("--structures", type=Path, action="append", default=[],
                        help="structure folders (default: none, surrogate shapes)")
    parser.add_argument("--progress-interval", type=float, default=None,
                        help="TaskRunner.min_progress_interval_s to use (default: the widget's)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_shrec._workers import set_threading
    from napari_shrec.widgets.simulate import SimulateWidget

    set_threading(True)
    viewer = napari.Viewer(title="bench_responsiveness")
    viewer.window.resize(1400, 900)
    widget = SimulateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Simulate")
    app = QApplication.instance()
    if args.progress_interval is not None:
        widget.runner.min_progress_interval_s = args.progress_interval
    widget.apply_preset("small")
    widget.set_sources(args.structures)
    widget.download_check.setChecked(False)
    pump(app, 1.0)  # let the window settle

    probe = LagProbe()
    probe.start()
    start = time.perf_counter()
    pump(app, args.idle_s)
    idle = summarize(probe.stop(), time.perf_counter() - start)

    progress_calls = {"n": 0}

    def on_progress(done: int, total: int, message: str) -> None:
        progress_calls["n"] += 1
        probe.label = f"after progress {done}/{total} {message}"

    widget.runner.progressed.connect(on_progress)
    widget.runner.finished.connect(lambda *_: setattr(probe, "label", "showing the layers"))
    with tempfile.TemporaryDirectory(prefix="bench-responsiveness-") as tmp:
        widget.folder_edit.setText(str(Path(tmp) / "sim"))
        probe.start()
        start = time.perf_counter()
        if not widget.start_simulation():
            raise SystemExit(f"simulation did not start: {widget.status.status.text()}")
        while widget.runner.busy:
            app.processEvents()
            time.sleep(0.001)
        busy = summarize(probe.stop(), time.perf_counter() - start)
        busy["stalls"] = probe.stalls
        status = widget.status.status.text()
    busy["progress_updates_in_gui"] = progress_calls["n"]
    viewer.close()

    report = {"idle": idle, "simulating_small": busy, "status": status,
              "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              "machine": platform.platform(), "qt_platform": app.platformName()}
    print(f"{'':18} {'ticks':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'>100ms':>6}")
    for name, row in (("idle", idle), ("simulating small", busy)):
        print(f"{name:18} {row['ticks']:6d} {row['p50_ms']:7.1f} {row['p95_ms']:7.1f} "
              f"{row['p99_ms']:7.1f} {row['max_ms']:7.1f} {row['stalls_over_100ms']:6d}")
    print(f"simulation: {busy['seconds']} s, {busy['progress_updates_in_gui']} progress updates "
          f"reached the GUI; {status}")
    for at, lag, label in busy["stalls"]:
        print(f"  stall {lag:7.1f} ms at {at:6.2f} s, {label}")
    print(f"load average {report['load_average']}, {report['cpus']} CPUs, Qt "
          f"{report['qt_platform']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
