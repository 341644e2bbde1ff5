"""videoalign: score, train and align text-to-video models with VideoReward (VideoAlign, arXiv 2501.13918)."""

__version__ = "0.1.0.dev0"

__all__ = ["VideoReward", "__version__"]


def __getattr__(name):
    # Lazy, so `videoalign --help` and `import videoalign` do not import torch.
    if name == "VideoReward":
        from videoalign.reward.videoreward import VideoReward

        return VideoReward
    raise AttributeError(name)
