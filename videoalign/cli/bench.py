"""`videoalign bench reward | winrate | speed [score | relabel | train-reward | dpo | guide]`, generated from the
config dataclasses of commands/bench/<name>.py (base.register)."""

from videoalign.cli.base import bench_app, register, speed_app

register(bench_app, "reward", "videoalign.commands.bench.reward", "RewardBenchConfig")
register(bench_app, "winrate", "videoalign.commands.bench.winrate", "WinrateConfig")
register(speed_app, None, "videoalign.commands.bench.speed", "SpeedSuiteConfig", callback=True)
register(speed_app, "score", "videoalign.commands.bench.speed_score", "SpeedScoreConfig")
register(speed_app, "relabel", "videoalign.commands.bench.speed_relabel", "SpeedRelabelConfig")
register(speed_app, "train-reward", "videoalign.commands.bench.speed_train_reward", "SpeedTrainRewardConfig")
register(speed_app, "dpo", "videoalign.commands.bench.speed_dpo", "SpeedDpoConfig")
register(speed_app, "guide", "videoalign.commands.bench.speed_guide", "SpeedGuideConfig")
