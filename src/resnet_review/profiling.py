"""The one profiler: what a model costs, measured the same way for every technique.

- parameters, and FLOPs/MACs of one forward pass from PyTorch's own ``FlopCounterMode``
  (MACs = FLOPs / 2: it counts a multiply-add as two FLOPs);
- CPU latency at batch 1 and 32 (eval mode, warm-up, median of repeats, thread count recorded),
  CUDA latency too when a GPU is present;
- peak memory of one training step (forward + backward): CUDA's allocator peak on a GPU, the
  rise of the peak resident set (Linux ``VmHWM``) of a fresh process on the CPU;
- size of the saved ``state_dict``;
- a TorchScript trace of the model for timing it later beside models of other stages, in one
  process (:func:`save_traced`, :func:`load_traced`; the report's Pareto front).

CLI::

    python -m resnet_review.profiling resnet50 --img-size 28 --in-chans 1 --num-classes 10 --json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .storage import atomic_save_script


@dataclass
class ModelProfile:
    params: int
    flops: int
    macs: int
    latency_ms: dict[str, float]
    threads: int
    peak_train_memory_mb: float
    peak_train_memory_method: str
    checkpoint_mb: float
    input_shapes: list[list[int]]

    def scalars(self) -> dict[str, float]:
        """Flat numbers for dvclive and the report (params in millions, MACs in billions)."""
        out = {"params_m": self.params / 1e6, "gmacs": self.macs / 1e9,
               "peak_train_memory_mb": self.peak_train_memory_mb, "checkpoint_mb": self.checkpoint_mb,
               "threads": self.threads}
        out |= {f"latency_{k}_ms": v for k, v in self.latency_ms.items()}
        return out


def example_inputs(input_shapes: list[tuple[int, ...]], batch_size: int, device: str | torch.device = "cpu",
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random normal inputs of the given per-example shapes (one tensor per model input)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((batch_size, *shape), generator=gen).to(device) for shape in input_shapes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward pass on ``inputs`` (all rows together)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def measure_latency(model: nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of one eval-mode forward pass; CUDA timed with events."""
    was_training = model.training
    model.eval()
    cuda = inputs[0].device.type == "cuda"
    times = []
    try:
        for i in range(warmup + repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(*inputs)
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                model(*inputs)
                elapsed = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                times.append(elapsed)
    finally:
        model.train(was_training)
    return statistics.median(times)


def compare_latency(models: dict[str, nn.Module], input_shapes: list[tuple[int, ...]] | dict[str, list], *,
                    batch_sizes: tuple[int, ...] = (1, 32), repeats: int = 20,
                    rounds: int = 3) -> dict[str, dict[str, list[float]]]:
    """``{name: {"cpu_b<batch>": [ms per round]}}``: eval-mode CPU latency of several models
    measured in turn, round after round (each value a :func:`measure_latency` median). Models are
    timed side by side, so load on a shared machine hits them alike and their ratios hold.
    ``input_shapes`` is one list for every model, or ``{name: shapes}``."""
    shapes = input_shapes if isinstance(input_shapes, dict) else dict.fromkeys(models, input_shapes)
    inputs = {n: {b: example_inputs(shapes[n], b) for b in batch_sizes} for n in models}
    times: dict[str, dict[str, list[float]]] = {n: {f"cpu_b{b}": [] for b in batch_sizes} for n in models}
    cpu_models = {n: m if isinstance(m, torch.jit.ScriptModule) else copy.deepcopy(m).cpu().eval()
                  for n, m in models.items()}
    for _ in range(rounds):
        for name, model in cpu_models.items():
            for b in batch_sizes:
                times[name][f"cpu_b{b}"].append(measure_latency(model, inputs[name][b], repeats))
    return times


TRACED_DIR = "traced"  # under a stage's models folder: one trace per architecture, <architecture>.pt
TRACED_SHAPES = "input_shapes.json"  # the extra file of a saved trace: its per-example input shapes


def save_traced(model: nn.Module, input_shapes: list[tuple[int, ...]], path: str | os.PathLike) -> Path | None:
    """Save a TorchScript trace of ``model`` (on the CPU, eval mode, traced at batch 1) and its
    input shapes to ``path``, so that another process can time it beside other stages' models
    without their code. A model that cannot be traced is named on stderr and None returned:
    its latency is then only the one its own stage measured."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    if not is_quantized(cpu_model):
        cpu_model = cpu_model.float()
    # the tracer warns of shape checks it turns into constants; torch 2.14 marks TorchScript
    # deprecated in favour of torch.export, which cannot export an FX int8 model
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(cpu_model, example_inputs(input_shapes, 1), check_trace=False)
        except Exception as err:  # noqa: BLE001 - any model the tracer cannot follow
            print(f"warning: {type(model).__name__} cannot be traced ({type(err).__name__}: {str(err)[:200]}); "
                  f"{path} is not written", file=sys.stderr)
            return None
        return atomic_save_script(traced, path, {TRACED_SHAPES: json.dumps([list(s) for s in input_shapes])})


def load_traced(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, list[tuple[int, ...]]]:
    """A trace written by :func:`save_traced` and its per-example input shapes (TorchScript,
    no pickled Python objects)."""
    extra = {TRACED_SHAPES: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), [tuple(s) for s in json.loads(extra[TRACED_SHAPES])]


def _rss_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _train_step(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    model(*inputs).float().logsumexp(1).mean().backward()


def _peak_rss_step(model_path: str, input_shapes: list[tuple[int, ...]], batch_size: int) -> float:
    """The rise of the peak resident set (MiB) over one CPU training step of the model saved at
    ``model_path``; run in a process whose heap has not trained anything yet."""
    model = torch.load(model_path, weights_only=False).train()  # the parent's own object
    _train_step(model, example_inputs(input_shapes, 2))  # one-time library set-up is not training memory
    model.zero_grad(set_to_none=True)
    inputs = example_inputs(input_shapes, batch_size)
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := current RSS
    base = _rss_kib("VmRSS")
    _train_step(model, inputs)
    return (_rss_kib("VmHWM") - base) / 1024


def _probe_server_main() -> None:
    """The CPU memory probe's fork server (a process of its own, started by :class:`_ProbeServer`).

    It imports the libraries a pickled model needs once, then answers each request line on stdin
    (JSON: model path, input shapes, batch size) from a child it forks for that request: a child's
    heap is that of a fresh process that has imported the libraries and has never trained, as a new
    interpreter's would be, without the ~5 s a new interpreter spends importing torch and timm. The
    server never runs a torch operation itself, so no thread pool exists yet when it forks.
    """
    import timm  # noqa: F401 - unpickling a timm or project model imports it

    from . import models  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # only answer lines go to the parent
    for line in sys.stdin:
        request = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the measuring child
            os.close(read_end)
            try:
                answer = {"peak_mb": _peak_rss_step(request["model_path"], [tuple(s) for s in request["input_shapes"]],
                                                    int(request["batch_size"]))}
            except BaseException as err:  # noqa: BLE001 - reported to the parent, which records it
                answer = {"error": f"{type(err).__name__}: {err}"}
            os.write(write_end, json.dumps(answer).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            reply = pipe.read()
        _, status = os.waitpid(pid, 0)
        if not reply:  # the child died without a word, e.g. killed for memory
            reply = json.dumps({"error": f"the measuring process ended with exit code "
                                         f"{os.waitstatus_to_exitcode(status)}"}).encode()
        out.write(reply.decode() + "\n")
        out.flush()


# glibc: serve every block of 64 KiB or more by mmap and unmap it on free, so the resident set
# follows the live tensors instead of a heap that keeps freed blocks (set for the server only).
_EXACT_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


class _ProbeServer:
    """The running fork server of this process (one, started at the first CPU measurement)."""

    _running: "_ProbeServer | None" = None

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        code = "from resnet_review.profiling import _probe_server_main; _probe_server_main()"
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, env={**os.environ, **_EXACT_RSS_ENV},
                                        start_new_session=True)

    @classmethod
    def get(cls) -> "_ProbeServer":
        if cls._running is None or cls._running.process.poll() is not None:
            cls._running = cls()
        return cls._running

    def measure(self, model_path: str, input_shapes: list[tuple[int, ...]], batch_size: int,
                timeout_s: float) -> tuple[float, str | None]:
        """``(peak MiB, None)``, or ``(NaN, why not)``."""
        request = {"model_path": model_path, "input_shapes": [list(s) for s in input_shapes],
                   "batch_size": batch_size}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return math.nan, self._died()
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                self.stop()  # the next measurement starts a new server
                return math.nan, f"timed out after {timeout_s:g} s"
        line = self.process.stdout.readline()
        if not line:
            return math.nan, self._died()
        answer = json.loads(line)
        return answer.get("peak_mb", math.nan), answer.get("error")

    def _died(self) -> str:
        self.process.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"the probe server ended with exit code {self.process.returncode}"

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, 9)  # the server and a child it may be waiting for
        except ProcessLookupError:
            pass
        self.process.wait()


def peak_training_memory_mb(model: nn.Module, input_shapes: list[tuple[int, ...]], batch_size: int = 32,
                            device: str | torch.device = "cpu", timeout_s: float = 600) -> tuple[float, str]:
    """Peak extra memory of one forward + backward pass, and how it was measured.

    Parameters already resident are not counted; activations, gradients and workspace are.
    CUDA: the allocator's peak. CPU: the rise of the peak resident set (``VmHWM``) of a fresh
    process doing one step — a fresh heap, because glibc keeps freed blocks resident and would
    hide part of the peak in a process that has already trained (Linux only; NaN elsewhere). The
    fresh processes are forked from one server per process (:func:`_probe_server_main`).
    """
    device = torch.device(device)
    if device.type == "cuda":
        model = copy.deepcopy(model).train().to(device)
        inputs = example_inputs(input_shapes, batch_size, device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _train_step(model, inputs)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda max_memory_allocated"
    if not Path("/proc/self/clear_refs").exists() or not hasattr(os, "fork"):
        return float("nan"), "unavailable (needs Linux /proc)"
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.pt"
        try:
            torch.save(copy.deepcopy(model).cpu(), model_path)
        except (AttributeError, TypeError, RuntimeError) as err:  # e.g. local functions in a QAT graph
            return float("nan"), f"unavailable (the model cannot be pickled for the child process: {err})"
        peak, error = _ProbeServer.get().measure(str(model_path), input_shapes, int(batch_size), timeout_s)
    if error:
        return math.nan, f"unavailable ({error})"
    return peak, "cpu VmHWM rise in a fresh process, mmap-only malloc"


def checkpoint_mb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20


def architecture_key(model: nn.Module) -> str:
    """What a model's cost depends on: its module types and its tensors' names, shapes and dtypes
    (not their values, nor settings such as a dropout rate that cost nothing at inference).
    Two models with the same key have the same parameters, MACs, latency and training memory."""
    import hashlib

    parts = [f"{name}:{type(module).__name__}" for name, module in model.named_modules()]
    parts += [f"{name}:{tuple(t.shape)}:{t.dtype}" for name, t in model.state_dict().items()
              if isinstance(t, torch.Tensor)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` is an int8 model (e.g. from FX ``convert_fx``): quantised modules or
    quantised tensors in its state dict. Such a model runs on the CPU only and stays int8."""
    quantized_modules = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
    return (any(type(m).__module__.startswith(quantized_modules) for m in model.modules())
            or any(isinstance(t, torch.Tensor) and t.is_quantized for t in model.state_dict().values()))


def profile_model(model: nn.Module, input_shapes: list[tuple[int, ...]], *, batch_sizes: tuple[int, ...] = (1, 32),
                  memory_batch_size: int = 32, repeats: int = 20, cuda: bool | None = None,
                  memory: bool = True, count_model: nn.Module | None = None) -> ModelProfile:
    """Profile ``model`` for inputs of per-example ``input_shapes`` (e.g. ``[(1, 28, 28)]``).

    Latency is measured on the CPU always and on CUDA when available (``cuda=None``; never for
    an int8 model, a CPU format); the model is deep-copied, so the caller's weights, statistics
    and device are untouched. ``count_model`` (default ``model``) is the trainable float form
    whose parameters, MACs and training memory are reported: an int8 model's packed weights are
    invisible to the counters, and it cannot be trained.
    """
    input_shapes = [tuple(s) for s in input_shapes]
    cpu_model = copy.deepcopy(model).cpu().eval()
    quantized = is_quantized(cpu_model)
    if not quantized:
        cpu_model = cpu_model.float()
    float_model = cpu_model if count_model is None else copy.deepcopy(count_model).cpu().float().eval()
    latency = {f"cpu_b{b}": measure_latency(cpu_model, example_inputs(input_shapes, b), repeats) for b in batch_sizes}
    use_cuda = (torch.cuda.is_available() if cuda is None else cuda) and not quantized
    mem_device = "cpu"
    if use_cuda:
        gpu_model = copy.deepcopy(cpu_model).cuda()
        for b in batch_sizes:
            latency[f"cuda_b{b}"] = measure_latency(gpu_model, example_inputs(input_shapes, b, "cuda"), repeats)
        mem_device = "cuda"
    peak_mb, method = (peak_training_memory_mb(float_model, input_shapes, memory_batch_size, mem_device)
                       if memory else (math.nan, "not measured"))
    flops = count_flops(float_model, example_inputs(input_shapes, 1))
    return ModelProfile(
        params=count_params(float_model),
        flops=flops,
        macs=flops // 2,
        latency_ms=latency,
        threads=torch.get_num_threads(),
        peak_train_memory_mb=peak_mb,
        peak_train_memory_method=f"{method}, batch {memory_batch_size}",
        checkpoint_mb=checkpoint_mb(cpu_model),
        input_shapes=[list(s) for s in input_shapes],
    )


def main(argv: list[str] | None = None) -> int:
    from .models import build_model

    parser = argparse.ArgumentParser(prog="python -m resnet_review.profiling", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a project or timm model name, e.g. resnet50")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-cuda", action="store_true", help="skip CUDA latency even when a GPU is present")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    for flag in ("img_size", "in_chans", "num_classes", "repeats"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if any(b <= 0 for b in args.batch_sizes):
        parser.error(f"--batch-sizes must be positive, got {args.batch_sizes}")
    try:
        model = build_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans)
    except ValueError as err:
        parser.error(str(err))
    result = profile_model(model, [(args.in_chans, args.img_size, args.img_size)], batch_sizes=tuple(args.batch_sizes),
                           repeats=args.repeats, cuda=False if args.no_cuda else None)
    if args.json:
        print(json.dumps({"model": args.model, **asdict(result)}, indent=2))
    else:
        print(f"{args.model} @ {args.img_size}px, {args.in_chans} channel(s), {args.num_classes} classes")
        for key, value in result.scalars().items():
            print(f"  {key:>24}: {value:,.3f}")
        print(f"  {'memory method':>24}: {result.peak_train_memory_method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
