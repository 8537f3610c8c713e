"""The dock's fine-tune panel: train the current model on the committed objects.

The training runs in a child process (``finetune.TrainingProcess``); a worker thread
reads its output for the progress bar. The result joins the dock's model list with a
card. Closing napari's window asks first (a registered task), then cancels the run,
which writes its checkpoint.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, Widget

from ..data.io import MIN_OBJECT_PX
from . import workers
from .finetune import iteration_of, training_starts

if TYPE_CHECKING:
    from .finetune import TrainingProcess
    from .widget import ClickSegWidget

__all__ = ["ENV_FINETUNE_DIR", "FineTunePanel"]

ENV_FINETUNE_DIR = "NAPARI_CLICKSEG_FINETUNE_DIR"


class FineTunePanel:
    """Fine-tune controls of one dock (see module docstring).

    Attributes:
        widgets: the controls, in the order the dock shows them.
        root: folder of the runs (``NAPARI_CLICKSEG_FINETUNE_DIR``, else
            ``~/.napari-clickseg/finetune``).
        spec_options: extra ``FineTuneSpec`` fields (tests: a few iterations).
        training: the ``TrainingProcess`` while a run is going, else None.
    """

    def __init__(self, dock: ClickSegWidget) -> None:
        self._dock = dock
        self.root = Path(
            os.environ.get(ENV_FINETUNE_DIR) or Path.home() / ".napari-clickseg" / "finetune"
        )
        self.spec_options: dict[str, Any] = {}
        self.training: TrainingProcess | None = None
        self._worker: Any = None
        self._task: Any = None  # napari task status id: closing the window cancels the run
        self._timer: Any = None  # moves the progress bar between the trainer's lines
        self._started: float | None = None  # when the trainer took its first step
        self._step = 0  # the last iteration the trainer reported
        self._data: dict[str, Any] = {}
        self._base: dict[str, Any] = {}
        self.minutes = FloatSpinBox(label="train minutes", min=0.5, max=1440, step=0.5, value=5)
        self.folder = FileEdit(label="+ training folder", mode="d", nullable=True, value=None)
        self.start_button = PushButton(text="Fine-tune on committed objects")
        self.cancel_button = PushButton(text="Cancel training", enabled=False)
        self.progress = ProgressBar(label="training", min=0, max=1000, value=0, visible=False)
        self.widgets: list[Widget] = [
            Label(value="<b>Fine-tune</b> (in a separate process)"),
            self.minutes,
            self.folder,
            self.start_button,
            self.cancel_button,
            self.progress,
        ]
        self.start_button.changed.connect(lambda *_: self.start())
        self.cancel_button.changed.connect(lambda *_: self.cancel())

    def init_weights(self) -> str:
        """Starting weights of the dock's current model for the trainer's --init."""
        from ..weights import resolve_weights

        choice = self._dock.handle.choice
        if choice.kind == "shipped":
            return str(resolve_weights(choice.source)[0])
        if choice.kind == "file":
            return choice.source
        if choice.kind == "untrained":
            return "imagenet"
        raise ValueError(
            "custom models cannot be fine-tuned from the dock: save them with "
            "napari_clickseg.weights.save_weights and load the file"
        )

    def start(self) -> bool:
        """Fine-tune the current model on the committed objects (+ the chosen folder)."""
        from .finetune import FineTuneSpec, TrainingProcess, export_for_run

        dock = self._dock
        if self.training is not None:
            dock._status("a training run is in progress")
            return False
        h = dock.handle
        if h is None:
            dock._status("fine-tuning needs a model: choose one or load a weights file")
            return False
        images, lost = dock.annotated_images()
        unusable = f"those on {', '.join(map(repr, lost))}, whose image is gone or changed shape"
        try:
            init = self.init_weights()
            first = images[0].name if images else "image"
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", first)[:40] or "image"
            run_dir, data_dir, exported = export_for_run(images, self.root, name)
        except (ValueError, OSError) as e:
            dock._status(f"cannot fine-tune: {e}" + (f" (left out: {unusable})" if lost else ""))
            return False
        dirs = [str(data_dir)]
        if self.folder.value:
            dirs.append(str(self.folder.value))
        prov = h.provenance
        spec = FineTuneSpec(
            arch=str(prov.get("arch") or h.choice.source),
            init=init,
            data_dirs=dirs,
            out=str(run_dir),
            model_kwargs=dict(prov.get("kwargs") or {}),
            minutes=float(self.minutes.value),
            **self.spec_options,
        )
        self._data = {
            "images": list(exported.images), "planes": exported.planes,
            "objects": exported.objects, "extra": self.folder.value,
        }
        self._base = dict(prov)
        self.training = TrainingProcess(spec)
        self._task = self._register_task(f"fine-tuning {spec.arch} into {run_dir}")
        self.start_button.enabled, self.cancel_button.enabled = False, True
        self.progress.visible, self.progress.value, self.progress.tooltip = True, 0, None
        self._started, self._step = None, 0
        left_out = [unusable] if lost else []
        if exported.spanning:
            left_out.append(f"{exported.spanning} spanning several planes with no record of one")
        if exported.small:
            left_out.append(f"{exported.small} of fewer than {MIN_OBJECT_PX} pixels")
        dock._status(
            f"fine-tuning {spec.arch} on {exported.objects} objects ({exported.planes} plane(s)) "
            f"into {run_dir}" + (f"; left out: {'; '.join(left_out)}" if left_out else "")
        )
        if dock.synchronous:
            for item in self._read_output(self.training, pooled=False):
                self._on_progress(item)
            self._on_done(self.training.returncode)
        else:
            from napari.qt.threading import create_worker
            from qtpy.QtCore import QTimer

            worker = create_worker(self._read_output, self.training, _start_thread=False)
            worker.yielded.connect(self._on_progress)
            worker.returned.connect(self._on_done)
            worker.aborted.connect(lambda: self._on_done(None))  # quit() by a closing window
            self._worker = worker
            if self._timer is None:
                self._timer = QTimer()  # ours, not the dock's: the dock's widget may go first
                self._timer.setInterval(1000)
                self._timer.timeout.connect(lambda: self._show_progress())
            self._timer.start()
            workers.start(worker)
        return True

    def cancel(self) -> None:
        """Stop the running fine-tuning (the trainer writes a checkpoint first)."""
        if self.training is not None:
            self.training.cancel()
            self._dock._status("stopping the training run...")

    def shutdown(self) -> None:
        """The dock is closing: cancel the run and stop reading its output."""
        self.cancel()
        if self._worker is not None:
            self._worker.quit()

    @staticmethod
    def _read_output(proc: TrainingProcess, pooled: bool = True):
        # this thread only waits on the trainer's output for the whole run: give its slot in
        # Qt's global pool back, or predictions starve where the pool has one thread (1 CPU)
        from qtpy.QtCore import QThreadPool

        pool = QThreadPool.globalInstance() if pooled else None
        if pool is not None:
            pool.releaseThread()
        try:
            yield from proc.lines()
            return proc.returncode
        finally:
            if pool is not None:
                pool.reserveThread()

    def _window(self) -> Any:
        viewer = self._dock.viewer  # plugins may get napari's PublicOnlyProxy of it
        return getattr(getattr(viewer, "__wrapped__", viewer), "window", None)

    def _register_task(self, description: str) -> Any:
        """Tell napari a run is going: closing its window asks first, then cancels the run.

        Uses the window's task-status hook (private in napari 0.5-0.9; absent: None).
        """
        register = getattr(self._window(), "_register_task_status", None)
        if register is None:
            return None
        from napari.utils.task_status import Status

        return register("napari-clickseg", Status.BUSY, description, self._on_window_closing)

    def _end_task(self, cancelled: bool) -> None:
        task, self._task = self._task, None
        update = getattr(self._window(), "_update_task_status", None)
        if task is None or update is None:
            return
        from napari.utils.task_status import Status

        update(task, Status.CANCELLED if cancelled else Status.COMPLETED, "")

    def _on_window_closing(self) -> bool:
        """napari's window is closing: unhook the dock and cancel the run."""
        self._dock.close_dock(remove_layers=False)
        return True

    def _on_progress(self, line: str) -> None:
        """A line of the trainer's output: the bar follows its iterations, the status shows it."""
        if self._dock._closed or self.training is None:
            return
        step = iteration_of(line)
        if step is not None:
            self._step = max(self._step, step)
        if self._started is None and (training_starts(line) or step is not None):
            self._started = time.monotonic()  # the budget counts from the first step, not the data loading
        self._show_progress(line)
        if line:
            self.progress.tooltip = line
            self._dock.viewer.status = f"clickseg training: {line}"

    def _show_progress(self, line: str = "") -> None:
        """Move the bar: by iterations, or by the time since the first step (a timer calls it
        every second, as the trainer writes a line only every few iterations)."""
        if self.training is None or self._started is None or self._dock._closed:
            return
        frac = self.training.spec.progress(line, time.monotonic() - self._started)
        if frac is not None:
            self.progress.value = min(int(1000 * frac), 999)  # full once the weights are there

    def _on_done(self, code: int | None) -> None:
        from .finetune import result_weights, write_card

        dock = self._dock
        proc, self.training, self._worker = self.training, None, None
        if self._timer is not None:
            self._timer.stop()
        self._end_task(cancelled=proc is None or proc.cancelled)
        if dock._closed:  # the dock is gone (the cancelled run left its checkpoint)
            return
        self.start_button.enabled, self.cancel_button.enabled = True, False
        if proc is None:
            return
        weights = result_weights(proc.spec.out)
        if proc.cancelled:
            self.progress.visible = False
            if weights is not None and self._step > 0:  # what it learnt: written on the way out
                self._data["cancelled"] = True
                card = write_card(weights, proc.spec, self._base, self._data, proc.lines_seen)
                if dock.load_weights_file(weights, select=False):
                    dock._status(
                        f"training cancelled; its weights so far, {weights} (card {card.name}), are "
                        f"in the model list (resume: napari-clickseg train --resume --out {proc.spec.out})"
                    )
            elif (Path(proc.spec.out) / "checkpoint.pt").is_file():
                dock._status(f"training cancelled; its checkpoint is in {proc.spec.out}")
            else:
                dock._status("training cancelled before it wrote a checkpoint")
            return
        if code != 0 or weights is None:
            tail = " | ".join(proc.lines_seen[-3:])
            dock._status(f"training failed (exit {code}): {tail}")
            return
        self.progress.value = 1000
        card = write_card(weights, proc.spec, self._base, self._data, proc.lines_seen)
        if dock.load_weights_file(weights, select=False):
            dock._status(f"fine-tuned weights {weights} (card {card.name}) are in the model list")
