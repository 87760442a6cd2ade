"""EAT (Efficient Emotional Adaptation for audio-driven talking heads, ICCV 2023) networks.

Own PyTorch definitions whose state_dict keys/shapes equal the official checkpoints (manifest:
shared/reference/eat.tsv). Pure nn.Modules, tensors in/out; loading lives in avatar/head/eat/runtime.py.
"""
from .audio2kp import Audio2kpConfig, Audio2kpTransformer
from .dense_motion import DenseMotionConfig, DenseMotionNetwork
from .emotion_prompt import EmotionDeepPrompt, EmotionPromptConfig
from .generator import GeneratorConfig, OcclusionAwareSPADEGeneratorEam
from .he_estimator import HEEstimator, HEEstimatorConfig
from .keypoint_detector import KPDetector, KPDetectorConfig
from .sidetuning import EmotionalDeformationTransformer

# checkpoint part name -> network class (part names = keys of the official .pth.tar dicts)
PART_CLASSES = {
    "generator": OcclusionAwareSPADEGeneratorEam,
    "kp_detector": KPDetector,
    "audio2kptransformer": Audio2kpTransformer,
    "sidetuning": EmotionalDeformationTransformer,
    "emotionprompt": EmotionDeepPrompt,
    "he_estimator": HEEstimator,
}

__all__ = [
    "PART_CLASSES", "Audio2kpConfig", "Audio2kpTransformer", "DenseMotionConfig", "DenseMotionNetwork",
    "EmotionDeepPrompt", "EmotionPromptConfig", "GeneratorConfig", "OcclusionAwareSPADEGeneratorEam",
    "HEEstimator", "HEEstimatorConfig", "KPDetector", "KPDetectorConfig", "EmotionalDeformationTransformer",
]
