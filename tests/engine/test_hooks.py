"""The training loop's hooks (ppcls.engine.hooks): a new hook is one class registered by name and
listed under Global.hooks; it is called at the named points, in priority order, beside the
default hooks; a wrong name or key is one error line."""

import os

import pytest

from helpers import QUICKSTART, tiny_data, tiny_overrides  # noqa: F401

from ppcls.engine.hooks import HOOKS, Hook


@HOOKS.register
class StepCounter(Hook):
    """Counts what the loop does; ``start`` is a key a config gives."""

    def __init__(self, start=0):
        self.steps, self.calls, self.seen = start, [], []

    def before_run(self, engine):
        self.calls.append("before_run")

    def before_epoch(self, engine, epoch):
        self.calls.append(f"before_epoch {epoch}")

    def after_step(self, engine, step):
        self.steps += 1
        self.seen.append((step["epoch"], step["iter"], step["batch_size"], step["update"]))

    def after_epoch(self, engine, epoch, outputs):
        self.calls.append(f"after_epoch {epoch} {sorted(outputs)}")

    def after_run(self, engine):
        self.calls.append("after_run")

    def before_save(self, engine, prefixes):
        self.calls.append("before_save " + ",".join(os.path.basename(p) for p in prefixes))


def _config(tiny_data, out, hooks):
    from ppcls.utils.config import get_config

    root, _, _ = tiny_data
    return get_config(QUICKSTART, tiny_overrides(root, str(out), epochs=2, max_iters_per_epoch=3,
                                                 eval_during_train=False, save_interval=0,
                                                 fast_cpu=False) + [f"Global.hooks={hooks}"])


def test_a_hook_listed_under_global_hooks_counts_the_steps(tiny_data, tmp_path):
    from ppcls.engine.engine import Engine

    engine = Engine(_config(tiny_data, tmp_path, "[{StepCounter: {start: 100}}]"), mode="train")
    counter, = [h for h in engine.hooks if isinstance(h, StepCounter)]
    engine.train()
    assert counter.steps == 100 + 2 * 3  # 2 epochs of 3 iterations, counted from the config's start
    assert counter.seen == [(e, i, 8, True) for e in (1, 2) for i in range(3)]
    assert counter.calls == ["before_run",
                             "before_epoch 1", "after_epoch 1 ['train']", "before_save latest",
                             "before_epoch 2", "after_epoch 2 ['train']", "before_save latest",
                             "after_run"]
    # the default hooks ran beside it: the LR schedule stepped per iteration, the log has its lines
    assert engine.lr.scheduler.last_epoch == 6
    log = open(tmp_path / "MobileNeXt_x0_35" / "train.log").read()
    assert "[Train][Epoch 2/2][Iter: 2/3]lr(" in log and "[Train][Epoch 2/2][Avg]" in log


def test_hooks_run_in_priority_order_and_a_missing_point_is_skipped():
    from ppcls.engine.hooks import call_hooks

    order = []

    class Late(Hook):
        priority = 95

        def after_step(self, engine, step):
            order.append("late")

    class Early:  # no base class, no priority (50), only one point
        def after_step(self, engine, step):
            order.append("early")

    call_hooks([Late(), Early()], "after_step", None, {})
    call_hooks([Late(), Early()], "before_epoch", None, 1)  # neither has it: nothing, no error
    assert order == ["early", "late"]


@pytest.mark.parametrize("hooks, message", [
    ("[StepCountr]", r"Global\.hooks\.0: unknown hook 'StepCountr'.*did you mean 'StepCounter'"),
    ("[{StepCounter: {stat: 1}}]", r"Global\.hooks\.0\.StepCounter: hook StepCounter does not take "
                                   r"key 'stat' \(did you mean 'start'\?\)"),
    ("[LoggerHook]", r"Global\.hooks\.0: LoggerHook is a default hook \(always on\)"),
])
def test_a_wrong_hook_is_one_error_naming_the_key(tiny_data, tmp_path, hooks, message):
    from ppcls.engine.engine import Engine
    from ppcls.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Engine(_config(tiny_data, tmp_path, hooks), mode="train")


def test_global_hooks_must_be_a_list(tiny_data, tmp_path):
    from ppcls.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Global\.hooks"):
        _config(tiny_data, tmp_path, "StepCounter")


def test_the_resolved_config_is_a_new_object_and_is_what_config_yaml_records(tiny_data, tmp_path):
    import copy

    import yaml

    from ppcls.engine.engine import Engine
    from ppcls.utils.global_config import ENGINE_KEYS, GLOBAL

    cfg = _config(tiny_data, tmp_path, "[]")
    given = copy.deepcopy(cfg)
    missing = [key for key in ENGINE_KEYS if key not in cfg["Global"]]
    assert missing  # keys whose table default the engine fills in
    engine = Engine(cfg, mode="train")
    try:
        assert cfg == given and engine.config is not cfg  # the caller's config is left as given
        with open(os.path.join(engine.output_dir, "config.yaml")) as f:
            saved = yaml.safe_load(f)
        assert saved["Global"] == engine.config["Global"]
        assert {key: saved["Global"][key] for key in missing} == {key: GLOBAL[key][1] for key in missing}
    finally:
        if engine._run_lock is not None:
            engine._run_lock.release()
