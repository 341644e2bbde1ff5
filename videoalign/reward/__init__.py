"""The judge: VideoReward (Qwen2-VL video reward model), its checkpoint layouts, prompt template and inputs,
Qwen2-VL pixels, what trains, and the scoring engine.

`from videoalign.reward import VideoReward` works without importing torch until the class is used.
"""

__all__ = ["VideoReward"]


def __getattr__(name):
    if name == "VideoReward":
        from videoalign.reward.videoreward import VideoReward

        return VideoReward
    raise AttributeError(name)
