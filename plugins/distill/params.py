"""Parameters of the distillation step (the GUI renders this schema as a form)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from slimline.core.plugin import PluginParams

TEACHER_SOURCE = "source"   # the pipeline's input model
TEACHER_INPUT = "input"     # this step's input model (the model before distillation)


class DistillParams(PluginParams):
    """Knobs of L = α·CE(student, labels) + (1−α)·T²·KL(teacher ‖ student)."""

    teacher: str = Field(
        TEACHER_SOURCE, min_length=1,
        description="Teacher model: 'source' (the pipeline's input model), 'input' (this step's "
                    "input model, when a separate student file is given) or a path to a model file "
                    "(Slimline torch archive, ONNX, or any runnable torch format).",
        json_schema_extra={"ui": "model_path_or_choice", "choices": [TEACHER_SOURCE, TEACHER_INPUT]},
    )
    student: str = Field(
        "", description="Optional path to a Slimline torch archive to train as the student; "
                        "empty = the step's input model (e.g. after pruning or low-rank).",
        json_schema_extra={"ui": "model_path"},
    )
    epochs: int = Field(10, ge=1, le=1000, description="Maximum passes over the training data.")
    batch_size: int = Field(64, ge=1, le=65536, description="Training rows per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0, description="Optimizer learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="Optimizer (sgd uses momentum 0.9).")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Weight decay (L2 for adam/sgd, decoupled for adamw).")
    temperature: float = Field(4.0, ge=0.05, le=100.0,
                               description="Softmax temperature T for the soft targets; the KD term is scaled by T².")
    alpha: float = Field(0.5, ge=0.0, le=1.0,
                         description="Weight of the hard-label cross-entropy; 1−α weighs the KD term. "
                                     "Ignored (pure KD) when the data has no labels.")
    validation_fraction: float = Field(
        0.1, ge=0.0, le=0.5,
        description="Share of the training rows held out for validation, early stopping and "
                    "choosing the best weights; 0 = no validation (all epochs run, last weights kept).")
    patience: int = Field(3, ge=1, le=1000,
                          description="Early stopping: epochs without a better validation score before stopping.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: 'auto' = CUDA when available, else CPU.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for the split, shuffling and dropout (deterministic).")
    max_batches_per_epoch: int = Field(0, ge=0, le=10**7,
                                       description="Cap on optimizer steps per epoch; 0 = all batches.")
    # --- language models (a causal LM student with a text file as training data) ---------------
    lm_window_length: int = Field(128, ge=8, le=8192,
                                  description="Language models: tokens per training window cut from the text file.")
    lm_windows: int = Field(256, ge=2, le=1_000_000,
                            description="Language models: most windows cut from the text file (training + "
                                        "validation; batch_size counts windows).")
    lm_micro_batch: int = Field(0, ge=0, le=4096,
                                description="Language models: windows per forward pass, gradients accumulated up "
                                            "to batch_size; 0 = auto (4 on CPU, 16 on CUDA). Bounds memory: the "
                                            "logits of one window are tokens × vocabulary floats.")
    lm_eval_every: int = Field(0, ge=0, le=10**6,
                               description="Language models: validation perplexity every this many optimizer "
                                           "steps (and after each epoch); 0 = about 10 times per run.")
    engine: Literal["local", "torchrun"] = Field(
        "local", description="Where training runs: 'local' = in the job's process; 'torchrun' = data-parallel over "
                             "nproc processes launched with torch.distributed.run (gloo on CPU, nccl on CUDA): each "
                             "global batch is split across the processes, gradients are averaged (DDP) and rank 0 "
                             "writes the result. The same seed gives the same global batches as one process.")
    nproc: int = Field(2, ge=1, le=256, description="torchrun: training processes on this machine (one per GPU "
                                                    "on CUDA).")
    nnodes: int = Field(1, ge=1, le=1024, description="torchrun: machines taking part; above 1 the same launch must "
                                                      "run on every other machine (see the docs), with job_dir "
                                                      "shared and rdzv_endpoint set.")
    rdzv_endpoint: str = Field("", description="torchrun, several machines: HOST:PORT where the machines meet "
                                               "(this machine's address and a free port).")
    job_dir: str = Field("", description="torchrun, several machines: a folder every machine can read (the "
                                         "training data and the result travel through it); empty = a "
                                         "temporary folder on this machine.")

    @field_validator("teacher", "student", "rdzv_endpoint", "job_dir")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _multinode_needs_a_meeting_point(self) -> DistillParams:
        if self.nnodes > 1 and (self.engine != "torchrun" or not self.rdzv_endpoint or not self.job_dir):
            raise ValueError("nnodes > 1 needs engine 'torchrun', rdzv_endpoint (HOST:PORT) and a shared job_dir")
        return self
