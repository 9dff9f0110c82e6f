"""Config input that reaches past the schema's types: paths (a NUL, a leading
``~``), YAML's error messages and its YAML 1.1 integers, the Python API's
arguments, and a gradient check's config."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.cli import cli
from nntrain.config import load_config
from nntrain.errors import ConfigError


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def assert_exit_2(result, message):
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


NUL_PATH = "invalid {key}: '{value}' holds a NUL character (\\x00), which no path" \
    " can; remove it"


@pytest.mark.parametrize("key, text", [("output", "'a\\x00b'"),
                                       ("data.path", "'/tmp/a\\x00b.npz'")])
@pytest.mark.parametrize("command", ["fit", "gradcheck"])
def test_a_nul_in_a_path_key_is_refused_naming_the_key(write_config, command, key,
                                                       text):
    section, _, name = key.rpartition(".")
    yaml_value = '"' + text.strip("'") + '"'  # YAML's double quotes read \x00
    content = f"{section}: {{{name}: {yaml_value}}}" if section else \
        f"{name}: {yaml_value}"
    config = write_config(content + "\ntrain: {epochs: 1}\n")

    from_file = invoke(command, config)
    from_set = invoke(command, write_config("train: {epochs: 1}\n", "plain.yaml"),
                      "--set", f"{key}={yaml_value}")

    message = NUL_PATH.format(key=key, value=text.strip("'"))
    assert_exit_2(from_file, f"{config}: {message}")
    assert_exit_2(from_set, f"--set {key}={yaml_value}: {message}")


@pytest.mark.parametrize("key", ["output", "data.path"])
def test_a_leading_tilde_in_a_path_key_is_the_home_folder(monkeypatch, tmp_path,
                                                          key):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    config = load_config(None, ["train.epochs=1", f"{key}=~/x"])

    section, _, name = key.rpartition(".")
    value = config[section][name] if section else config[name]
    assert value == str(tmp_path / "home" / "x")


def test_a_tilde_of_an_unknown_user_is_refused():
    with pytest.raises(ConfigError, match=re.escape(
            "invalid output: '~nntrain-no-such-user/x' starts with"
            " ~nntrain-no-such-user, but there is no home folder to expand it to;"
            " write the folder out in full (or ./~nntrain-no-such-user/x for a folder"
            " so named)")):
        load_config(None, ["train.epochs=1", "output=~nntrain-no-such-user/x"])


@pytest.mark.parametrize("how", ["file", "set", "--out"])
def test_fit_writes_a_run_given_with_a_tilde_into_the_home_folder(
        monkeypatch, tmp_path, tiny_npz, write_config, how):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    raw = tiny_config_dict(tiny_npz)
    raw["train"] = {"epochs": 1, "plots": False}
    if how == "file":
        raw["output"] = "~/run"
    options = {"file": [], "set": ["--set", "output=~/run"],
               "--out": ["--out=~/run"]}[how]

    result = invoke("fit", write_config(raw), *options, "--quiet")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "run" / "checkpoints" / "last.npz").is_file()
    assert not (tmp_path / "~").exists()


def test_eval_expands_a_tilde_in_its_checkpoint_argument(monkeypatch, tmp_path,
                                                          tiny_config):
    from nntrain.pipeline import fit

    monkeypatch.setenv("HOME", str(tmp_path))
    fit(load_config(tiny_config, ["train.epochs=1"]), tmp_path / "run", quiet=True)

    result = invoke("eval", "~/run/checkpoints/last.npz", "--json")

    assert result.exit_code == 0, result.output
    assert str(Path(tmp_path, "run", "checkpoints", "last.npz")) in result.stdout
