"""hesp-hf: open-set video facial expression recognition with HESP on Hugging Face Transformers.

Importing the package registers HESP with `AutoConfig`, `AutoModel`, `AutoModelForVideoClassification` and
`AutoVideoProcessor`, so checkpoints load without `trust_remote_code`, and the `zero-shot-video-classification`
pipeline task (`hesp_hf.inference.zero_shot`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)

from .inference.zero_shot import register_pipeline as _register_zero_shot_pipeline
from .modeling.configuration_hesp import HESPConfig
from .modeling.loss_hesp import HESPOpenSetLoss
from .modeling.modeling_hesp import HESPForOpenSetVideoClassification, HESPVideoClassifierOutput
from .modeling.video_processing_hesp import HESPVideoProcessor, VideoDecodeError
from .pairing import check_pair, model_and_processor_from_clip


__version__ = "0.2.0"


def train(**options):
    """Train, calibrate, evaluate and save one HESP run from keyword options; see `hesp_hf.run.train`."""
    from .run.train import train as run_training

    return run_training(**options)


def timeline(model, processor, video, window: float = 2.0, stride: float = 0.5, *, live: bool = False, **options):
    """The expression timeline of a long recording (windows, merged segments, unreadable and face-less stretches
    marked; `faces="all"`: a timeline per person); see `hesp_hf.inference.timeline.timeline`, and
    `hesp_hf.inference.timeline_outputs` for its files. `live=True`: `video` is a live source ('-', a stream URL, a
    pipe) and the result an iterator of windows, each as soon as it is decided (`hesp_hf.inference.live.LiveTimeline`)."""
    if live:
        from .inference.live import LiveTimeline

        return LiveTimeline(model, processor, video, window=window, stride=stride, **options)
    from .inference.timeline import timeline as make_timeline

    return make_timeline(model, processor, video, window=window, stride=stride, **options)


def load_oscr_metric(**kwargs):
    """The open-set `evaluate` metric (ACC / AUROC / OSCR), loaded offline; see `hesp_hf.metrics.load_oscr_metric`."""
    from .metrics import load_oscr_metric as load

    return load(**kwargs)


_register_zero_shot_pipeline()
AutoConfig.register(HESPConfig.model_type, HESPConfig, exist_ok=True)
AutoModel.register(HESPConfig, HESPForOpenSetVideoClassification, exist_ok=True)
AutoModelForVideoClassification.register(HESPConfig, HESPForOpenSetVideoClassification, exist_ok=True)
AutoVideoProcessor.register(HESPConfig, HESPVideoProcessor, exist_ok=True)
# Saving copies the defining files into the checkpoint and records them in `auto_map` (remote-code loading).
HESPConfig.register_for_auto_class()
HESPForOpenSetVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
HESPVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = [
    "HESPConfig",
    "HESPForOpenSetVideoClassification",
    "HESPOpenSetLoss",
    "HESPVideoClassifierOutput",
    "HESPVideoProcessor",
    "VideoDecodeError",
    "__version__",
    "check_pair",
    "load_oscr_metric",
    "model_and_processor_from_clip",
    "timeline",
    "train",
]
