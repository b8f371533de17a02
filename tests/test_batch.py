"""Batch runs on dask.distributed: a 2-worker LocalCluster (processes, loopback) on tiny datasets.

Every simulation is a "small"-preset one shrunk to 32 × 64 × 64 voxels, 6 particles, 4 tilts and
surrogate structures, so one takes about a second; outputs are compared with the same tasks run
in this process (the simulation is deterministic for a seed). The fault test kills a worker
process (SIGKILL) while it runs a task and checks that the batch still completes with every
output correct; the resume tests check that nothing finished is done again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_shrec.batch import (
    BatchParams,
    ReconstructSettings,
    check_tasks,
    execute_task,
    expand_inputs,
    plan_reconstruct,
    plan_simulate,
    run_batch,
)
from napari_shrec.batch.provenance import file_output_state, sidecar_path, write_sidecar
from napari_shrec.cli import main
from napari_shrec.io.mrc import read_mrc

TINY = dict(structure_sources=[], download_structures=False, shape_zyx=(32, 64, 64),
            n_particles=(6, 6), tilt_angles_deg=(-45.0, -15.0, 15.0, 45.0))
TINY_CLI = ["--shape", "32", "64", "64", "--particles", "6", "6", "--tilt-range", "-45", "45",
            "30", "--no-download"]
COMPARED = ("grandmodel.mrc", "class_mask.mrc", "projections.mrc", "reconstruction.mrc")


def _tiny_plan(out: Path, n: int, seed: int = 100, **kwargs):
    return plan_simulate(out, n, preset="small", seed=seed, **TINY, **kwargs)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes and a client (loopback only)."""
    from distributed import Client

    from napari_shrec.batch.engine import local_cluster

    with local_cluster(2, 1) as local, Client(local) as client:
        client.wait_for_workers(2, timeout=120)
        yield local, client


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Tasks 0…3 (seeds 100…103) run one after another in this process."""
    out = tmp_path_factory.mktemp("batch-reference")
    for task in _tiny_plan(out, 4):
        execute_task(task, threads=1)
    return out


def _assert_same_dataset(folder: Path, reference: Path) -> None:
    assert json.loads((folder / "simulation.json").read_text())["seed"] == \
        json.loads((reference / "simulation.json").read_text())["seed"]
    assert (folder / "particle_locations.txt").read_text() == \
        (reference / "particle_locations.txt").read_text()
    for name in COMPARED:
        np.testing.assert_array_equal(read_mrc(folder / name).data,
                                      read_mrc(reference / name).data, err_msg=name)


def _mtimes(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sorted(out.glob("*/simulation.json"))}


# --------------------------------------------------------------------------- no cluster
def test_execute_task_is_idempotent_and_refuses_foreign_folders(tmp_path, reference):
    task = _tiny_plan(tmp_path, 1)[0]
    assert task.state() == "missing"
    first = execute_task(task, threads=1)
    assert not first.skipped and first.elapsed_s > 0
    _assert_same_dataset(tmp_path / "model_0", reference / "model_0")
    assert [p.name for p in tmp_path.iterdir()] == ["model_0"]  # no temporary folder left
    stamp = _mtimes(tmp_path)
    again = execute_task(task, threads=2)  # another thread count is the same parameters
    assert again.skipped and _mtimes(tmp_path) == stamp

    other_seed = _tiny_plan(tmp_path, 1, seed=7)[0]
    assert other_seed.state() == "foreign"
    with pytest.raises(FileExistsError, match="model_0"):
        check_tasks([other_seed])
    (tmp_path / "model_1").mkdir()  # somebody's folder without simulation.json
    with pytest.raises(FileExistsError, match="model_1"):
        check_tasks(_tiny_plan(tmp_path, 2))
    with pytest.raises(ValueError, match=r"\{i\}"):
        _tiny_plan(tmp_path, 2, name_pattern="sim")


def test_file_outputs_record_provenance_and_interruption(tmp_path):
    out = tmp_path / "picks.txt"
    params = {"input": "x", "settings": {"threads": 3, "a": (1, 2)}}
    assert file_output_state(out, params) == "missing"
    write_sidecar(out, action="detect", params=params, status="writing")
    assert file_output_state(out, params) == "interrupted"  # the batch may redo it
    out.write_text("1bxn 1 2 3\n")
    write_sidecar(out, action="detect", params=params, status="finished")
    assert file_output_state(out, params) == "finished"
    assert file_output_state(out, {"input": "x", "settings": {"threads": 1, "a": [1, 2]}}) \
        == "finished"  # JSON form, thread counts ignored
    assert file_output_state(out, {"input": "y", "settings": {"a": [1, 2]}}) == "foreign"
    sidecar_path(out).unlink()
    assert file_output_state(out, params) == "foreign"  # a user's file: never replaced unasked


def test_expand_inputs_globs_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        folder = tmp_path / f"model_{i}"
        folder.mkdir()
        (folder / "simulation.json").write_text("{}")
    names = [p.name for p in expand_inputs([str(tmp_path / "model_*")])]
    assert names == ["model_1", "model_2", "model_10"]
    assert [p.name for p in expand_inputs([tmp_path])] == names  # a folder of datasets
    with pytest.raises(FileNotFoundError, match="nothing_*"):
        expand_inputs([str(tmp_path / "nothing_*")])


# --------------------------------------------------------------------------- on the cluster
def _worker_environment() -> dict[str, str | None]:
    import os

    return {name: os.environ.get(name) for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_local_cluster_workers_keep_glibc_default_trimming(cluster):
    """distributed's MALLOC_TRIM_THRESHOLD_=65536 makes a small simulation 18 % slower; our
    LocalCluster leaves it unset (thread limits still set)."""
    _, client = cluster
    environments = client.run(_worker_environment)
    assert len(environments) == 2
    for environment in environments.values():
        assert environment == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}


def test_batch_on_two_workers_matches_serial_and_resumes(tmp_path, cluster, reference):
    _, client = cluster
    events = []
    tasks = _tiny_plan(tmp_path, 4)
    report = run_batch(tasks, client=client, on_event=events.append)
    assert report.ok, report.errors
    assert [t.status for t in report.tasks] == ["finished"] * 4
    for i in range(4):
        _assert_same_dataset(tmp_path / f"model_{i}", reference / f"model_{i}")
    workers = {e.worker for e in events if e.kind == "started"}
    assert len(workers) == 2  # both workers took tasks
    assert any(e.kind == "progress" and e.total > 0 for e in events)

    # resume: nothing finished is done again, a lost output is redone, leftovers are removed
    stamp = _mtimes(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "model_2")
    (tmp_path / ".model_2.partial-deadbeef").mkdir()  # an attempt killed earlier
    events.clear()
    again = run_batch(tasks, client=client, on_event=events.append)
    assert [t.status for t in again.tasks] == ["skipped", "skipped", "finished", "skipped"]
    assert [e.index for e in events if e.kind == "started"] == [2]
    after = _mtimes(tmp_path)
    assert {k: v for k, v in after.items() if k != "model_2"} == \
        {k: v for k, v in stamp.items() if k != "model_2"}
    _assert_same_dataset(tmp_path / "model_2", reference / "model_2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"model_{i}" for i in range(4)]


@pytest.mark.slow
def test_worker_killed_mid_task_and_batch_still_completes(tmp_path, cluster, reference):
    local, client = cluster
    pids = client.run(os.getpid)
    killed: dict[str, int] = {}

    def on_event(event):
        # kill the worker running the first task once it is inside its tilt series
        if (not killed and event.kind == "progress" and event.index == 0
                and event.message.startswith("tilt series")):
            killed[event.worker] = pids[event.worker]
            os.kill(pids[event.worker], signal.SIGKILL)

    params = BatchParams(progress_interval_s=0.0)
    report = run_batch(_tiny_plan(tmp_path, 4), params, client=client, on_event=on_event)
    assert killed, "the first task never reported its tilt series"
    assert report.ok, report.errors
    assert report.tasks[0].attempts >= 2  # the killed attempt, then a new one
    for i in range(4):
        _assert_same_dataset(tmp_path / f"model_{i}", reference / f"model_{i}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"model_{i}" for i in range(4)]
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed worker


@pytest.mark.slow
def test_failing_task_is_retried_reported_and_does_not_stop_others(tmp_path, cluster):
    _, client = cluster
    run_batch(plan_simulate(tmp_path, 2, preset="small", seed=3, reconstruction=False, **TINY),
              client=client)
    tasks = plan_reconstruct(expand_inputs([tmp_path]), ReconstructSettings(device="cpu"))
    (tmp_path / "model_1" / "projections.mrc").unlink()  # fails on every attempt
    events = []
    report = run_batch(tasks, BatchParams(retries=1), client=client, on_event=events.append)
    assert not report.ok
    ok, bad = report.tasks
    assert ok.status == "finished" and bad.status == "failed"
    assert "projections" in bad.message and "model_1" in bad.message
    assert bad.attempts == 2  # first attempt + 1 retry
    assert sum(e.kind == "error" and e.index == 1 for e in events) == 2
    assert read_mrc(tmp_path / "model_0" / "reconstruction.mrc").data.shape == (32, 64, 64)
    assert not (tmp_path / "model_1" / "reconstruction.mrc").exists()
    assert file_output_state(tmp_path / "model_1" / "reconstruction.mrc",
                             bad.task.provenance_params()) == "missing"  # failed before writing


@pytest.mark.slow
def test_cli_batch_simulate_on_a_scheduler_resumes_and_refuses(tmp_path, cluster, capsys):
    local, _ = cluster
    out = tmp_path / "sims"
    argv = ["batch", "simulate", "--n", "2", "--out", str(out), "--seed", "100", *TINY_CLI,
            "--scheduler", local.scheduler_address]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "2 tasks: 2 finished" in text
    stamp = _mtimes(out)
    assert main(argv) == 0
    assert "2 tasks: 2 skipped" in capsys.readouterr().out
    assert _mtimes(out) == stamp
    other = [a if a != "100" else "5" for a in argv]
    assert main(other) == 2  # other seeds: the folders are not this batch's
    assert "--overwrite" in capsys.readouterr().err
    assert _mtimes(out) == stamp


def test_forked_workers_from_the_command_line_match_serial(tmp_path, reference):
    # a fresh process, as a user's: nothing has run OpenMP yet, so the workers are forked
    import subprocess
    import sys

    out = tmp_path / "sims"
    (tmp_path / "no-structures").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "napari_shrec.cli", "batch", "simulate", "--n", "2", "--out",
         str(out), "--seed", "100", *TINY_CLI, "--structures", str(tmp_path / "no-structures"),
         "--start-method", "fork"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LocalCluster, 2 workers (forked)" in proc.stdout
    assert "2 tasks: 2 finished" in proc.stdout
    assert "unsafe" not in proc.stderr and "Restarting worker" not in proc.stderr
    for i in range(2):
        _assert_same_dataset(out / f"model_{i}", reference / f"model_{i}")


def test_fork_is_refused_after_openmp_or_torch(monkeypatch):
    import types

    from napari_shrec.batch.engine import default_start_method, worker_start_method

    assert default_start_method() == "fork"  # Linux
    assert worker_start_method("spawn") == ("spawn", None)
    fake = types.ModuleType("numba.np.ufunc.parallel")
    fake._is_initialized = True
    monkeypatch.setitem(sys.modules, "numba.np.ufunc.parallel", fake)
    method, why = worker_start_method("fork")
    assert method == "spawn" and "numba" in why
    fake._is_initialized = False
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    method, why = worker_start_method("fork")
    assert method == "spawn" and "PyTorch" in why
    monkeypatch.delitem(sys.modules, "torch")
    assert worker_start_method("fork") == ("fork", None)
    with pytest.raises(ValueError, match="start method must be one of spawn, fork"):
        BatchParams(start_method="forkserver")
