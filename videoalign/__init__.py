"""videoalign: score, train and align text-to-video models with VideoReward."""
