"""The training loop of built-in recipes: DDP + DistributedSampler, per-epoch checkpoint, resume."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from kubemaas_runtime.storage import open_store
from kubemaas_runtime.training import progress
from kubemaas_runtime.training.bundles import Artifact, bundle_source, publish, save_bundle
from kubemaas_runtime.training.checkpoints import load_checkpoint, save_checkpoint
from kubemaas_runtime.training.config import TrainConfig
from kubemaas_runtime.training.distributed import DistInfo, all_reduce_sum, init_distributed
from kubemaas_runtime.training.errors import TrainingError
from kubemaas_runtime.training.objectives import Objective
from kubemaas_runtime.training.pruning import prune_model
from kubemaas_runtime.training.recipes import Recipe, get_recipe
from kubemaas_runtime.training.settings import TrainingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def params_digest(model: nn.Module) -> str:
    """sha256 over every parameter's bytes: equal on all ranks iff the gradients were synchronised."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> Evaluation:
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch])
        loss += float(nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum"))
        correct += int((logits.argmax(dim=1) == y[i : i + batch]).sum())
    return Evaluation(accuracy=correct / len(x), loss=loss / len(x))


def evaluator(recipe: Recipe) -> Any:
    """The recipe's own held-out metric when it has one (``textgen``: per-token loss), else ``evaluate``."""
    custom = getattr(recipe, "evaluate", None)
    return custom if callable(custom) else evaluate


def train_recipe(
    config: TrainConfig, settings: TrainingSettings, objective: Objective | None = None
) -> Artifact | None:
    """Run one rank of a built-in recipe; rank 0 returns the artifact, other ranks None.

    ``objective`` replaces the loss and/or the initial weights (students: ``training/students``).
    """
    objective = objective or Objective()
    assert config.recipe is not None
    recipe = get_recipe(config.recipe)
    params = recipe.params(config.params)
    info = init_distributed(settings)
    epochs = config.epochs or recipe.epochs
    global_batch = config.batch_size or recipe.batch_size
    lr = config.lr or recipe.lr
    if global_batch % info.world_size:
        raise TrainingError(
            f"--batch-size {global_batch} (global) is not divisible by WORLD_SIZE={info.world_size}"
        )
    local_batch = global_batch // info.world_size
    splits = recipe.data(params)
    if len(splits.train_x) < global_batch:
        raise TrainingError(f"--batch-size {global_batch} is larger than the {len(splits.train_x)} training samples")

    if settings.threads:
        torch.set_num_threads(settings.threads)
    seed_everything(config.seed)
    model = recipe.model(params)
    if objective.initial_state is not None:
        model.load_state_dict(objective.initial_state)
    model = model.to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    store = open_store(config.output)
    start_epoch, step, metrics = _resume(store, info, config, model, optimizer, settings.source_uid)
    ddp: nn.Module = (
        DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
        if info.distributed
        else model
    )
    train_set = TensorDataset(torch.from_numpy(splits.train_x), torch.from_numpy(splits.train_y))
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(train_set, batch_size=local_batch, sampler=sampler, drop_last=True)
    test_x = torch.from_numpy(splits.test_x).to(info.device)
    test_y = torch.from_numpy(splits.test_y).to(info.device)
    began = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        for group in optimizer.param_groups:  # cosine decay by epoch: a function of the epoch, so resume-safe
            group["lr"] = cosine_lr(lr, epoch, epochs)
        torch.manual_seed(config.seed + 7919 * (epoch + 1) + info.rank)  # dropout etc., stable across resume
        ddp.train()
        tick = time.perf_counter()
        loss_sum, seen = 0.0, 0
        for x, y in loader:
            x, y = x.to(info.device), y.to(info.device)
            optimizer.zero_grad(set_to_none=True)
            logits = ddp(x)
            loss = objective.loss(logits, x, y) if objective.loss else nn.functional.cross_entropy(logits, y)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(y)
            seen += len(y)
        train_s = time.perf_counter() - tick
        total_loss, total_seen = all_reduce_sum([loss_sum, float(seen)], info)
        if info.is_primary:
            ev = evaluator(recipe)(model, test_x, test_y)
            metrics = {
                "accuracy": ev.accuracy,
                "loss": ev.loss,
                "trainLoss": total_loss / max(total_seen, 1.0),
                "epochs": float(epoch + 1),
                "samplesPerSecond": total_seen / train_s if train_s > 0 else 0.0,
            }
            progress.emit(
                "progress",
                epoch=epoch + 1,
                epochs=epochs,
                step=step,
                loss=round(metrics["trainLoss"], 6),
                accuracy=round(ev.accuracy, 6),
                testLoss=round(ev.loss, 6),
                samplesPerSecond=round(metrics["samplesPerSecond"], 1),
                elapsedS=round(time.perf_counter() - began, 3),
                worldSize=info.world_size,
            )
            save_checkpoint(store, _state(config, epoch + 1, step, model, optimizer, metrics, settings.source_uid))
    if info.distributed:
        dist.barrier()
    progress.log_json("rank-done", rank=info.rank, worldSize=info.world_size, step=step, paramsSha256=params_digest(model))
    if not info.is_primary:
        return None
    lineage = {  # what rebuilds the model from checkpoint.pt (students need it), and how it was trained
        "hyperparameters": params.model_dump(mode="json"),
        "training": {"epochs": epochs, "batchSize": global_batch, "lr": lr, "seed": config.seed},
        **objective.lineage,
    }
    return _finish(config, recipe, model, splits, step, epochs, optimizer, metrics, test_x, test_y, settings, lineage)


def _state(
    config: TrainConfig,
    epoch: int,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    metrics: dict[str, float],
    run: str | None,
) -> dict[str, Any]:
    return {
        "run": run or "",
        "recipe": config.recipe or "",
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "metrics": dict(metrics),
    }


def _resume(
    store: Any,
    info: DistInfo,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: str | None,
) -> tuple[int, int, dict[str, float]]:
    """Resume a restarted gang of the same run; a new run (another TrainingJob uid) starts afresh.

    Without the run check, re-applying a TrainingJob to the same output would "resume" at the
    old run's final epoch, train nothing and re-export the old weights.
    """
    state = load_checkpoint(store, info)
    if state is None:
        return 0, 0, {}
    previous = str(state.get("run") or "")
    if run and previous != run:
        log.info("%s/checkpoint.pt belongs to run %r, not %r: starting from epoch 0", store.uri, previous, run)
        if info.is_primary:
            progress.emit("fresh-start", reason="checkpoint from another run", previousRun=previous, run=run)
        return 0, 0, {}
    if state.get("recipe") != config.recipe:
        raise TrainingError(
            f"{store.uri}/checkpoint.pt was written by recipe {state.get('recipe')!r}, not {config.recipe!r}; "
            "use a fresh --output"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TrainingError(f"{store.uri}/checkpoint.pt does not fit this model: {exc}") from exc
    epoch, step = int(state["epoch"]), int(state["step"])
    log.info("resuming from %s/checkpoint.pt at epoch %d, step %d", store.uri, epoch, step)
    if info.is_primary:
        progress.emit("resume", epoch=epoch, step=step, uri=store.uri)
    saved = state.get("metrics")
    metrics = {str(k): float(v) for k, v in saved.items()} if isinstance(saved, dict) else {}
    return epoch, step, metrics


def _finish(
    config: TrainConfig,
    recipe: Recipe,
    model: nn.Module,
    splits: Any,
    step: int,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    metrics: dict[str, float],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    settings: TrainingSettings,
    lineage: dict[str, Any],
) -> Artifact | None:
    model = model.cpu()
    evaluate_fn = evaluator(recipe)
    ev = evaluate_fn(model, test_x.cpu(), test_y.cpu())
    metrics = {**metrics, "accuracy": ev.accuracy, "loss": ev.loss, "epochs": float(epochs)}
    if config.prune_amount > 0:
        metrics["unprunedAccuracy"] = ev.accuracy
        metrics["sparsity"] = prune_model(model, config.prune_amount)
        pruned = evaluate_fn(model, test_x.cpu(), test_y.cpu())
        metrics["accuracy"], metrics["loss"] = pruned.accuracy, pruned.loss
    custom_save = getattr(recipe, "save_bundle", None)
    if callable(custom_save):  # a recipe with its own bundle layout (textgen: an onnxruntime-genai folder)
        digest, metrics, size = custom_save(
            model,
            splits,
            metrics,
            output=config.output,
            name=config.name or recipe.name,
            checkpoint=_state(config, epochs, step, model, optimizer, metrics, settings.source_uid),
            source=bundle_source(settings, recipe.name, lineage),
        )
        return publish(Artifact(uri=config.output, sha256=digest, metrics=metrics, size_bytes=size), settings)
    return save_bundle(
        model,
        torch.from_numpy(splits.test_x[:2]),
        (splits.test_x, splits.test_y),
        metrics,
        output=config.output,
        name=config.name or recipe.name,
        labels=splits.labels,
        input_name=recipe.input_name,
        output_name=recipe.output_name,
        checkpoint=_state(config, epochs, step, model, optimizer, metrics, settings.source_uid),
        recipe=recipe.name,
        settings=settings,
        source_fields=lineage,
    )
