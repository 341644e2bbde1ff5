"""The top-level commands: score, train-reward, relabel, dpo, rwr, train-latent-rm, guide. Each is generated from its
command module's config dataclass (base.register); the module's `run(cfg)` does the work."""

from videoalign.cli.base import app, register

register(app, "score", "videoalign.commands.score", "ScoreConfig", positional=("video", "prompt"))
register(app, "train-reward", "videoalign.commands.train_reward", "TrainRewardConfig")
register(app, "relabel", "videoalign.commands.relabel", "RelabelConfig", positional=("input",))
register(app, "dpo", "videoalign.commands.dpo", "DpoConfig")
register(app, "rwr", "videoalign.commands.rwr", "RwrConfig")
register(app, "train-latent-rm", "videoalign.commands.train_latent_rm", "TrainLatentRmConfig")
register(app, "guide", "videoalign.commands.guide", "GuideConfig")
