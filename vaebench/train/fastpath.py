"""The trainer's fast path (CUDA by default): the uint8 split on the device, a compiled step, no host sync.

Why: at batch 16-32 the reference model's arithmetic takes about a millisecond on an H100, while an
eager step launches about a thousand kernels and the plain loop reads the loss back every step (a host
sync that drains the GPU's queue). Launches, the host and data loading bound it, not the GPU. Here:

- `DeviceBatches`: the train split as uint8 in device memory (2.0 GB for CelebA-64), each batch gathered
  there by index. The order and the flips are the plain path's (`epoch_order` and `flip_mask`, pure
  functions of (seed, step)), made on the CPU once per epoch and copied over in one go.
- `FastTrainStep`: flips, uint8 -> float in [0, 1], bf16 autocast (train.precision), the loss and its
  backward (compiled by torch.compile, with CUDA graphs on CUDA, on a channels_last model), gradient
  clipping and a fused Adam whose learning rate is a device tensor. Nothing is read back: the metric
  sums and the finite check accumulate in a device tensor that the trainer reads (`read`) only when
  it logs, validates or checkpoints.

Differences from the plain path (`vaebench.train.steps.PlainTrainStep`), all deliberate:
- Non-finite steps. The update of a step whose loss or gradient norm is not finite is skipped on the
  device (fused Adam's `found_inf`, the mechanism AMP's GradScaler uses) and counted. The trainer learns
  of it at its next read, so the run stops there rather than at the step itself. The message names the
  first step beyond train.skip_bad_batches, as the plain path's does. The steps in between did run, but
  no metrics row or checkpoint comes after the fault, so no checkpoint holds a state past it. "batch
  skipped" messages also come at the read.
- train.compile: "auto" compiles on CUDA only. If the compiler fails in the first steps (a missing
  C++ compiler or Triton, an unsupported op, CUDA-graph capture: `is_compiler_error`), training goes
  on in eager mode with one `CompileWarning`: the same numbers, slower. Any other error (out of
  memory, a shape bug in a model or objective) stops the run with its own message.
- On CUDA a compiled step draws its random numbers with inductor's generator, and some CUDA kernels are
  not deterministic, so a resumed CUDA run continues the same run statistically, not bit for bit. On CPU
  (eager) the fast path resumes bit-identically, like the plain path.
- Validation on CUDA pushes FAST_VALIDATION_BATCH images through the model at once (the same images).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vaebench.config.spec import RunSpec
from vaebench.data.batches import epoch_order, flip_mask, steps_per_epoch, train_batches
from vaebench.model.vae import VAE
from vaebench.objectives import TrainingLoss
from vaebench.train.state import LoopState
from vaebench.train.steps import Say, StepCounts, TrainPath

DEVICE_MEMORY_FRACTION = 0.5  # the split stays on the device if it takes at most this share of free memory
FAST_VALIDATION_BATCH = 256  # images per validation forward pass on CUDA
COMPILE_TRIAL_STEPS = 3  # compilation, CUDA-graph warm-up and recording all happen within the first steps
_COPY_CHUNK = 8192  # images per host-to-device copy while loading a memory-mapped split


class CompileWarning(UserWarning):
    """torch.compile of the train step failed; training goes on in eager mode (same numbers, slower)."""


def compile_enabled(spec: RunSpec, device: torch.device) -> bool:
    """train.compile: "on" everywhere, "auto" on CUDA only (inductor on a CPU compiles for minutes)."""
    return spec.train.compile == "on" or (spec.train.compile == "auto" and device.type == "cuda")


def validation_batch_size(spec: RunSpec, device: torch.device) -> int | None:
    """Images per validation forward pass on the fast path: large on CUDA, the plain path's elsewhere."""
    return max(spec.train.batch_size, FAST_VALIDATION_BATCH) if device.type == "cuda" else None


# ----------------------------------------------------------------------------- data on the device


def resident_images(
    dataset: Dataset, device: torch.device, memory_fraction: float, say: Say
) -> Tensor | None:
    """The whole split as a uint8 (N, 3, H, W) tensor on `device`, or None to gather batches on the host.

    In-memory splits (`.images`, a tensor) and prepared caches (`.array`, a memory map, copied once in
    chunks) are moved when they take at most `memory_fraction` of the device's free memory. JPEG
    datasets are not: decoding a whole split first would take minutes; `vaebench data prepare` does it
    once for all runs. On the CPU an in-memory split is used where it is, and a memory map is read per batch.
    """
    images = getattr(dataset, "images", None)
    array = getattr(dataset, "array", None)
    if not isinstance(images, Tensor) and not isinstance(array, np.ndarray):
        if device.type != "cpu":
            say(
                "The train split is decoded from JPEGs on the host every epoch; run `vaebench data prepare` "
                f"to keep it on {device} instead (much faster)."
            )
        return None
    if device.type == "cpu":
        return images if isinstance(images, Tensor) else None
    shape = tuple(images.shape) if isinstance(images, Tensor) else tuple(array.shape)  # type: ignore[union-attr]
    size = math.prod(shape)  # bytes: one per uint8 value
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else math.inf
    if size > memory_fraction * free:
        say(
            f"The train split ({size / 1e9:.2f} GB) takes more than {memory_fraction:.0%} of the free memory "
            f"of {device} ({free / 1e9:.2f} GB): its batches are gathered on the host and copied every step "
            "(slower)."
        )
        return None
    if isinstance(images, Tensor):
        return images.to(device)
    out = torch.empty(shape, dtype=torch.uint8, device=device)
    for start in range(0, shape[0], _COPY_CHUNK):
        chunk = np.array(array[start : start + _COPY_CHUNK])  # type: ignore[index]  # read from the memory map
        out[start : start + len(chunk)].copy_(torch.from_numpy(chunk))
    return out


class DeviceBatches:
    """The train split's uint8 batches (B, 3, H, W) and flip masks (B,) on `device`, in the plain order.

    Step s (epoch, i = divmod(s, steps per epoch)) gets the images epoch_order(N, seed, epoch)[i*B:(i+1)*B]
    and flips those where flip_mask(B, seed, s) is true, exactly as `train_batches` and `flip_batch` do;
    `next()` returns step `start_step`'s batch, then the next step's, and so on. The epoch's order and
    flips are made on the CPU and copied to the device once per epoch.

    `where` says where a batch is gathered: "device" (the split is resident, `resident_images`),
    "host" (a prepared cache's memory map, then copied) or "decoded" (JPEGs by a DataLoader, then copied).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        *,
        flip: bool,
        device: torch.device,
        start_step: int = 0,
        workers: int = 0,
        say: Say = print,
        memory_fraction: float = DEVICE_MEMORY_FRACTION,
    ) -> None:
        self.n = len(dataset)  # type: ignore[arg-type]
        self.batch_size, self.seed, self.flip = batch_size, seed, flip
        self.device = torch.device(device)
        self.per_epoch = steps_per_epoch(self.n, batch_size)
        self.step = start_step
        self.images = resident_images(dataset, self.device, memory_fraction, say)
        array = getattr(dataset, "array", None)
        self._array: np.ndarray | None = None
        self._loader: Iterator[Tensor] | None = None
        if self.images is not None:
            self.where = "device"
        elif isinstance(array, np.ndarray):
            self._array, self.where = array, "host"
        else:
            self._loader = train_batches(dataset, batch_size, seed, start_step, workers)
            self.where = "decoded"
        self._epoch: int | None = None
        self._order = torch.empty(0, dtype=torch.long)  # (steps per epoch, B), on the device when resident
        self._flips: Tensor | None = None  # (steps per epoch, B) bool on the device; None without flips

    def next(self) -> tuple[Tensor, Tensor | None]:
        """This step's uint8 batch (B, 3, H, W) and flip mask (B,) (None without data.flip), on the device."""
        epoch, i = divmod(self.step, self.per_epoch)
        if epoch != self._epoch:
            self._start_epoch(epoch)
        if self.images is not None:
            x = self.images.index_select(0, self._order[i])  # gathered on the device: no copy, no sync
        elif self._array is not None:
            x = _to_device(torch.from_numpy(self._array[self._order[i].numpy()]), self.device)
        else:
            assert self._loader is not None
            x = _to_device(next(self._loader), self.device)
        self.step += 1
        return x, None if self._flips is None else self._flips[i]

    def _start_epoch(self, epoch: int) -> None:
        steps = self.per_epoch
        order = epoch_order(self.n, self.seed, epoch)[: steps * self.batch_size].view(steps, self.batch_size)
        self._order = order.to(self.device) if self.images is not None else order
        if self.flip:
            first = epoch * steps
            masks = torch.stack([flip_mask(self.batch_size, self.seed, first + i) for i in range(steps)])
            self._flips = masks.to(self.device)
        self._epoch = epoch


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    """A host batch to the device; through pinned memory on CUDA, so that the copy does not block the host."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# ----------------------------------------------------------------------------- the step


class FastTrainStep:
    """One optimizer step queued on the device, with nothing read back (see the module docstring).

    `step(x_uint8, flip, lr=..., weight=...)` (or calling the object) does what `PlainTrainStep.step`
    does: flips, float conversion, forward under autocast, the objective, backward, clipping to
    train.grad_clip, and the Adam update unless the loss or gradient norm is non-finite. The optimizer
    must be fused (`build_optimizer(..., fused=True)`); it gets its learning rate as a device tensor.

    compile: None follows train.compile (`compile_enabled`). backend: torch.compile's backend; on CUDA
    inductor runs in "reduce-overhead" mode (CUDA graphs). fullgraph: a graph break is a compile error
    (so the step falls back to eager with a CompileWarning) instead of splitting the step into several
    graphs; benchmarks/compiled_objectives.py sets it to prove that each objective compiles whole.
    channels_last: None means "when compiling": the model is converted in place (the optimizer keeps its
    parameters) so that compiled convolutions need no layout changes; eager steps keep the default
    layout, because eager GroupNorm on CUDA turns channels_last activations back into contiguous ones
    around every norm. `state` (the trainer's loop
    state) seeds the counters when resuming.
    """

    deferred = True

    def __init__(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        spec: RunSpec,
        device: torch.device,
        loss: TrainingLoss,
        *,
        compile: bool | None = None,
        backend: str = "inductor",
        fullgraph: bool = False,
        channels_last: bool | None = None,
        state: LoopState | None = None,
    ) -> None:
        if not optimizer.defaults.get("fused"):
            raise ValueError(
                "FastTrainStep needs a fused optimizer (build_optimizer(model, spec, device, fused=True)): "
                "it skips non-finite steps on the device through the fused kernel's found_inf"
            )
        self.model, self.optimizer, self.device, self.loss = model, optimizer, torch.device(device), loss
        self.max_norm = spec.train.grad_clip or math.inf
        self.allowed = spec.train.skip_bad_batches
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times its algorithms once (global)
        compile = compile_enabled(spec, self.device) if compile is None else compile
        self.channels_last = compile if channels_last is None else channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        _prepare_fused_state(optimizer)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._lrs = []
        for group in optimizer.param_groups:  # a device tensor, so that setting it launches no sync
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)
            self._lrs.append(group["lr"])
        self.weight = torch.zeros((), device=self.device)
        # Slots of the float64 counter vector on the device: n, one sum per loss term, then the counts.
        self.sums_keys = ("n", *loss.terms)
        k = len(self.sums_keys)
        self._skipped, self._new_skipped, self._first_new = k, k + 1, k + 2
        self._fault_step, self._fault_loss, self._fault_grad_norm = k + 3, k + 4, k + 5
        self._grad_norm, self._step = k + 6, k + 7
        counts = torch.zeros(k + 8, dtype=torch.float64)
        if state is not None:
            counts[:k] = torch.tensor([float(state.acc.get(key, 0.0)) for key in self.sums_keys])
            counts[self._skipped] = state.skipped_batches
            counts[self._step] = state.step
        counts[[self._first_new, self._fault_step]] = -1.0
        counts[[self._fault_loss, self._fault_grad_norm, self._grad_norm]] = math.nan
        self.counts = counts.to(self.device)

        self._compiled: Callable[..., tuple[Tensor, Tensor]] | None = None
        self._compiled_calls = 0
        self._cuda_graphs = False
        if compile:
            # Each step object compiles afresh: several runs in one process (a queue) would otherwise pile
            # up recompilations of this method until dynamo's recompile limit silently turned it eager.
            # Inductor's on-disk caches make the next run's compilation of the same graph quick.
            torch._dynamo.reset()
            if backend == "inductor" and self.device.type == "cuda":
                self._cuda_graphs = True
                self._compiled = torch.compile(
                    self._loss, backend=backend, mode="reduce-overhead", fullgraph=fullgraph
                )
            else:
                self._compiled = torch.compile(self._loss, backend=backend, fullgraph=fullgraph)

    @property
    def compiled(self) -> bool:
        """Whether the step (still) runs compiled: False without compile, or after a fallback to eager."""
        return self._compiled is not None

    def __call__(self, x_uint8: Tensor, flip: Tensor | None, *, lr: float, weight: float) -> None:
        self.step(x_uint8, flip, lr=lr, weight=weight)

    def step(self, x_uint8: Tensor, flip: Tensor | None, *, lr: float, weight: float) -> None:
        """One training step on a uint8 batch (B, 3, H, W) already on the device; flip: (B,) bool or None."""
        for lr_tensor in self._lrs:
            lr_tensor.fill_(lr)
        self.weight.fill_(weight)
        self.optimizer.zero_grad(set_to_none=True)
        stats, grad_norm = self._forward_backward(x_uint8, flip)
        ok = torch.isfinite(stats[0]) & torch.isfinite(grad_norm)  # () bool, stays on the device
        self.optimizer.found_inf = (~ok).float()  # type: ignore[attr-defined]  # 1.0: the update is skipped
        self.optimizer.step()
        self._count(stats, grad_norm, ok)

    def read(self) -> StepCounts:
        """The counters as Python numbers: the one host sync of the fast path. Starts a new "since" window."""
        c = self.counts.tolist()
        self.counts[self._new_skipped] = 0.0
        self.counts[self._first_new] = -1.0
        fault = c[self._fault_step] >= 0
        return StepCounts(
            sums={key: c[i] for i, key in enumerate(self.sums_keys)} | {"n": int(c[0])},
            skipped=int(c[self._skipped]),
            new_skipped=int(c[self._new_skipped]),
            first_new_skipped=int(c[self._first_new]) if c[self._first_new] >= 0 else None,
            fault_step=int(c[self._fault_step]) if fault else None,
            fault_loss=c[self._fault_loss],
            fault_grad_norm=c[self._fault_grad_norm],
            grad_norm=c[self._grad_norm],
        )

    def reset(self) -> None:
        """Zero the metric sums (after the trainer wrote a metrics row); the skip counts go on."""
        self.counts[: len(self.sums_keys)] = 0.0

    # ------------------------------------------------------------------------- internals

    def _loss(self, x_uint8: Tensor, flip: Tensor | None, weight: Tensor) -> tuple[Tensor, Tensor]:
        """The loss and its detached terms (loss.terms order): what torch.compile compiles."""
        if flip is not None:
            x_uint8 = torch.where(flip[:, None, None, None], x_uint8.flip(-1), x_uint8)
        x = x_uint8.float().div(255.0)  # (B, 3, H, W) in [0, 1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        terms = self.loss(self.model, x, weight)
        stats = torch.stack([terms[key].float() for key in self.loss.terms])
        return terms["loss"], stats.detach()

    def _forward_backward(self, x_uint8: Tensor, flip: Tensor | None) -> tuple[Tensor, Tensor]:
        """Loss terms (T,) and the gradient norm (before clipping); compiled unless compiling failed."""
        if self._compiled is not None:
            try:
                if self._cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                loss, stats = self._compiled(x_uint8, flip, self.weight)
                loss.backward()
                self._compiled_calls += 1
                return stats, self._clip()
            except Exception as error:
                if self._compiled_calls >= COMPILE_TRIAL_STEPS or not is_compiler_error(error):
                    raise  # out of memory, a bug in the model or the objective: eager would fail too
                self._fall_back(error)
        loss, stats = self._loss(x_uint8, flip, self.weight)
        loss.backward()
        return stats, self._clip()

    def _clip(self) -> Tensor:
        return torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)  # () total norm before clipping

    def _fall_back(self, error: Exception) -> None:
        self._compiled = None
        self._cuda_graphs = False
        self.optimizer.zero_grad(set_to_none=True)
        if self.channels_last:  # eager steps run in the default layout (see the class docstring)
            self.model.to(memory_format=torch.contiguous_format)
            _prepare_fused_state(self.optimizer)
            self.channels_last = False
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        warnings.warn(
            f"torch.compile of the train step failed ({type(error).__name__}: {first_line}); training goes "
            "on without compiling (the same numbers, slower). Set train.compile: off to skip the attempt.",
            CompileWarning,
            stacklevel=4,
        )

    def _count(self, stats: Tensor, grad_norm: Tensor, ok: Tensor) -> None:
        """Add this step to the device counters: about ten tiny kernels, no sync."""
        c, k = self.counts, len(self.sums_keys)
        okd = ok.double()
        c[:k] += torch.cat([okd.view(1), torch.where(ok, stats.double(), 0.0)])
        c[self._skipped : self._new_skipped + 1] += 1.0 - okd  # in total and since the last read
        c[self._first_new] = torch.where(ok | (c[self._first_new] >= 0), c[self._first_new], c[self._step])
        fault = (c[self._skipped] > self.allowed) & (c[self._fault_step] < 0)
        at_fault = torch.stack([c[self._step], stats[0].double(), grad_norm.double()])
        c[self._fault_step : self._grad_norm] = torch.where(
            fault, at_fault, c[self._fault_step : self._grad_norm]
        )
        c[self._grad_norm] = grad_norm
        c[self._step] += 1.0


_COMPILER_MODULES = ("torch._dynamo", "torch._inductor")
_CAPTURE_ERRORS = ("stream is capturing", "cuda graph", "cudagraph")


def is_compiler_error(error: BaseException) -> bool:
    """Whether an exception of a compiled step is the compiler's (fall back to eager) or the program's.

    Compiler errors are dynamo's and inductor's own exceptions (a missing C++ compiler or Triton, an
    unsupported op, a lowering failure) and CUDA-graph capture failures. Not compiler errors, anywhere
    in the chain of causes: running out of memory, and dynamo's TorchRuntimeError, which is the
    program's own error (a shape mismatch, say) met while tracing; eager mode would fail the same way.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or getattr(seen, "inner_exception", None) or seen.__context__
    if any(isinstance(e, torch.OutOfMemoryError | torch._dynamo.exc.TorchRuntimeError) for e in chain):
        return False
    for e in chain:
        if type(e).__module__.startswith(_COMPILER_MODULES):
            return True
        if isinstance(e, RuntimeError) and any(s in str(e).lower() for s in _CAPTURE_ERRORS):
            return True
    return False


def _prepare_fused_state(optimizer: torch.optim.Optimizer) -> None:
    """Fused param groups, and state as the fused kernel expects it, whatever the checkpoint held.

    `load_state_dict` replaces the param groups by the checkpoint's, so a run begun on the plain path
    (say on a CPU) and resumed here comes back unfused, with its step counts on the CPU; the unfused
    kernels refuse `found_inf`. And fused kernels walk a parameter and its moments as flat arrays, so
    each moment takes its parameter's strides (channels_last, or contiguous after a fallback).
    """
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in list(state.items()):
                if not isinstance(value, Tensor):
                    continue
                if key == "step":
                    state[key] = value.to(dtype=torch.float32, device=p.device)
                elif value.shape == p.shape and (value.stride() != p.stride() or value.device != p.device):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _device_batches(
    dataset: Dataset, spec: RunSpec, seed: int, start_step: int, device: torch.device, say: Say
) -> DeviceBatches:
    return DeviceBatches(
        dataset, spec.train.batch_size, seed, flip=spec.data.flip, device=device,
        start_step=start_step, workers=spec.data.num_workers, say=say,
    )  # fmt: skip


FAST = TrainPath(
    "fast",  # device-resident batches and a compiled step with a fused optimizer (see the module docstring)
    fused_optimizer=True,
    batches=_device_batches,
    step=FastTrainStep,
    validation_batch_size=validation_batch_size,
)
