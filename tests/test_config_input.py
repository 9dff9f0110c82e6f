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
            " ~nntrain-no-such-user, but there is no user 'nntrain-no-such-user'"
            " whose home folder it could be; write the home folder out in full (or"
            " ./~nntrain-no-such-user/x for a file or folder so named)")):
        load_config(None, ["train.epochs=1", "output=~nntrain-no-such-user/x"])


UNKNOWN_HOME = ("'~nntrain-no-such-user/x' starts with ~nntrain-no-such-user, but"
                " there is no user 'nntrain-no-such-user' whose home folder it could"
                " be; write the home folder out in full (or"
                " ./~nntrain-no-such-user/x for a file or folder so named)")


@pytest.mark.parametrize("how", ["file", "--out"])
def test_fit_refuses_a_tilde_of_an_unknown_user_in_output_and_out_alike(
        monkeypatch, tmp_path, tiny_npz, write_config, how):
    monkeypatch.chdir(tmp_path)
    raw = tiny_config_dict(tiny_npz)
    options = ["--out", "~nntrain-no-such-user/x"]
    if how == "file":
        raw["output"], options = "~nntrain-no-such-user/x", []
    config = write_config(raw)

    result = invoke("fit", config, *options, "--quiet")

    assert_exit_2(result, {
        "file": f"{config}: invalid output: {UNKNOWN_HOME}",
        "--out": f"Invalid value for '--out': {UNKNOWN_HOME} (see: "}[how])
    assert list(tmp_path.glob("~*")) == []


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


@pytest.mark.parametrize("how", ["file", "set", "--out"])
def test_fit_takes_a_dot_slash_tilde_path_as_a_folder_so_named(
        monkeypatch, tmp_path, tiny_npz, write_config, how):
    # ./~run is the folder "~run" here, never the home folder of a user "run"
    # (pathlib drops the "./"), as ./~data.npz is the file "~data.npz".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~data.npz").write_bytes(tiny_npz.read_bytes())
    raw = tiny_config_dict("./~data.npz")
    raw["train"] = {"epochs": 1, "plots": False}
    if how == "file":
        raw["output"] = "./~run"
    options = {"file": [], "set": ["--set", "output=./~run"],
               "--out": ["--out=./~run"]}[how]

    result = invoke("fit", write_config(raw), *options, "--quiet")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "~run" / "checkpoints" / "last.npz").is_file()
    written = load_config(tmp_path / "~run" / "config.yaml")
    assert written["data"]["path"] == str(tmp_path / "~data.npz")


@pytest.mark.parametrize("command", ["eval", "plot"])
def test_eval_and_plot_take_data_at_a_dot_slash_tilde_path(
        monkeypatch, tmp_path, tiny_config, command):
    from nntrain.pipeline import fit

    fit(load_config(tiny_config, ["train.epochs=1"]), tmp_path / "run", quiet=True)
    monkeypatch.chdir(tmp_path)
    source = Path(load_config(tmp_path / "run" / "config.yaml")["data"]["path"])
    source.rename(tmp_path / "~moved.npz")
    target = {"eval": tmp_path / "run" / "checkpoints" / "last.npz",
              "plot": tmp_path / "run"}[command]

    result = invoke(command, target, "--data", "./~moved.npz")

    assert result.exit_code == 0, result.output


def test_fit_refuses_an_out_that_is_not_utf8_text_writing_nothing(
        monkeypatch, tmp_path, tiny_config):
    # --set output=... holding such a byte is refused by YAML already.
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    folder = b"run\xff".decode("utf-8", "surrogateescape")  # as argv holds it

    result = invoke("fit", tiny_config, "--out", folder, "--quiet")

    assert_exit_2(result, "Invalid value for '--out': 'run\\xff' holds a byte that"
                          " is not UTF-8 text; a path must be valid text: rename the"
                          " file or folder, or choose another")
    assert sorted(tmp_path.rglob("*")) == before


def test_eval_expands_a_tilde_in_its_checkpoint_argument(monkeypatch, tmp_path,
                                                          tiny_config):
    from nntrain.pipeline import fit

    monkeypatch.setenv("HOME", str(tmp_path))
    fit(load_config(tiny_config, ["train.epochs=1"]), tmp_path / "run", quiet=True)

    result = invoke("eval", "~/run/checkpoints/last.npz", "--json")

    assert result.exit_code == 0, result.output
    assert str(Path(tmp_path, "run", "checkpoints", "last.npz")) in result.stdout


def test_load_config_refuses_an_empty_path():
    with pytest.raises(ConfigError, match="^the config path is empty; give the path"
                       " of a YAML file$"):
        load_config("")


def test_fit_refuses_an_empty_config_path():
    assert_exit_2(invoke("fit", ""), "error: the config path is empty; give the"
                  " path of a YAML file")


@pytest.mark.parametrize("path, kind", [(5, "int"), ({"train": {"epochs": 1}},
                                                     "dict"), (b"a.yaml", "bytes")])
def test_load_config_refuses_a_path_of_another_type(path, kind):
    with pytest.raises(TypeError, match=f"^path is {kind}; give the config file's"
                       r" path, a str or pathlib\.Path, or None for the defaults$"):
        load_config(path)


def test_load_config_reads_overrides_from_any_iterable_but_a_string():
    config = load_config(None, (text for text in ["train.epochs=2"]))

    assert config["train"]["epochs"] == 2
    with pytest.raises(TypeError, match="^overrides is {'train.epochs': 2}; give a"
                       " list of KEY=VALUE strings"):
        load_config(None, {"train.epochs": 2})


@pytest.fixture
def one_epoch_run(tmp_path, tiny_config):
    from nntrain.pipeline import fit

    run = tmp_path / "run"
    fit(load_config(tiny_config, ["train.epochs=1"]), run, quiet=True)
    return run


def test_resumed_config_refuses_a_string_of_overrides(one_epoch_run):
    from nntrain.checkpoint import load_checkpoint
    from nntrain.train.resume import resumed_config

    last = one_epoch_run / "checkpoints" / "last.npz"
    with pytest.raises(TypeError, match="^overrides is 'train.epochs=9'; give a list"
                       " of KEY=VALUE strings"):
        resumed_config(load_checkpoint(last), "train.epochs=9", last)


@pytest.mark.parametrize("call", ["restore", "evaluate_checkpoint"])
def test_restore_and_evaluate_refuse_a_truthy_string_for_average(one_epoch_run,
                                                                 call):
    import nntrain.restore

    last = one_epoch_run / "checkpoints" / "last.npz"
    with pytest.raises(TypeError, match="^average is 'no'; give True or False$"):
        getattr(nntrain.restore, call)(last, average="no")


def test_evaluate_checkpoint_refuses_an_unknown_split(one_epoch_run):
    from nntrain.restore import evaluate_checkpoint

    with pytest.raises(ValueError, match="^split is 'bogus'; give one of train, val,"
                       " test$"):
        evaluate_checkpoint(one_epoch_run / "checkpoints" / "last.npz",
                            split="bogus")


@pytest.mark.parametrize("data_path, error, message", [
    (5, TypeError, "^data_path is int; give the folder or npz file"),
    ("", "BadInputError", "^data_path is empty; give the folder or npz file"),
])
def test_evaluate_checkpoint_refuses_a_data_path_that_is_no_path(
        one_epoch_run, data_path, error, message):
    from nntrain import errors
    from nntrain.restore import evaluate_checkpoint

    error = getattr(errors, error) if isinstance(error, str) else error
    with pytest.raises(error, match=message):
        evaluate_checkpoint(one_epoch_run / "checkpoints" / "last.npz",
                            data_path=data_path)


@pytest.mark.parametrize("notes", ["hello", b"ab", [1, None], iter(["a"])])
def test_fit_refuses_notes_that_are_not_a_list_of_strings(tiny_config, tmp_path,
                                                          notes):
    from nntrain.pipeline import fit

    with pytest.raises(TypeError, match="^notes is .*; give a list of strings"):
        fit(load_config(tiny_config), tmp_path / "run", quiet=True, notes=notes)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arguments, error, message", [
    ({"splits": ("bogus",)}, ValueError, "^splits is \\('bogus',\\); give a tuple"),
    ({"splits": "test"}, ValueError, "^splits is 'test'; give a tuple"),
    ({"preprocessor": "x"}, TypeError, "^preprocessor is str; give a fitted"),
])
def test_prepare_data_names_a_wrong_argument(tiny_config, arguments, error,
                                             message):
    from nntrain.prepare import prepare_data

    with pytest.raises(error, match=message):
        prepare_data(load_config(tiny_config), **arguments)


def test_fit_refuses_force_with_resume_as_the_cli_does(one_epoch_run, tiny_config):
    from nntrain.errors import BadInputError
    from nntrain.pipeline import fit

    before = (one_epoch_run / "metrics.jsonl").read_bytes()
    config = load_config(tiny_config, ["train.epochs=2"])

    with pytest.raises(BadInputError, match="^force=True starts over and resume"
                       " continues: give one of them$"):
        fit(config, one_epoch_run, force=True, resume=one_epoch_run, quiet=True)

    assert (one_epoch_run / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("name", ["run_dir", "resume"])
def test_fit_refuses_a_nul_in_a_path_argument(one_epoch_run, tiny_config, name):
    from nntrain.errors import BadInputError
    from nntrain.pipeline import fit

    config = load_config(tiny_config, ["train.epochs=2"])
    paths = {"run_dir": one_epoch_run, "resume": None, name: "a\x00b"}

    with pytest.raises(BadInputError, match=re.escape(
            f"{name} 'a\\x00b' holds a NUL character (\\x00), which no path can")):
        fit(config, paths["run_dir"], resume=paths["resume"], quiet=True)


def test_a_control_character_in_a_file_is_named_by_line_and_column(write_config):
    config = write_config("train:\n  epochs: 1\noutput: a\x01b\n")

    result = invoke("fit", config)

    assert_exit_2(result, f"error: {config}: YAML does not allow the non-printable"
                  " character U+0001 (line 3, column 10); remove it\n")


def test_a_control_character_in_a_set_value_gives_a_one_line_error(tiny_config):
    result = invoke("fit", tiny_config, "--set", "output=a\x01b")

    assert_exit_2(result, "error: --set output: YAML does not allow the non-printable"
                  " character U+0001 (line 1, column 2); remove it\n")


def test_a_byte_that_is_not_utf8_in_a_set_value_is_named(tiny_config):
    # A shell passes $'output=bad\xff' on; Python holds the byte as U+DCFF.
    result = invoke("fit", tiny_config, "--set", "output=bad\udcff")

    assert_exit_2(result, "error: --set output: holds the byte 0xFF, which is not"
                  " UTF-8 text (line 1, column 4); write the value as text\n")


@pytest.mark.parametrize("command", ["gradcheck", "sanity"])
def test_a_check_needs_no_run_length_in_its_config(write_config, tiny_npz,
                                                   command):
    raw = tiny_config_dict(tiny_npz)
    del raw["train"]
    config = write_config(raw)

    result = invoke(command, config, "--samples", 6)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith(
        {"gradcheck": "PASSED: all 4 arrays agree",
         "sanity": "passed: 100% training accuracy"}[command])


def test_a_check_still_refuses_both_run_lengths(write_config, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["train"] = {"epochs": 1, "iterations": 3}

    result = invoke("gradcheck", write_config(raw))

    assert_exit_2(result, "set exactly one of train.epochs and train.iterations")


YAML11_HINT = ("; write a plain decimal number: nntrain reads a leading 0 (octal in"
               " YAML 1.1) or a colon (base 60) as text)")


@pytest.mark.parametrize("text", ["017", "1:30", "-010"])
def test_yaml_1_1_octal_and_base_60_integers_are_refused_with_a_hint(text):
    # YAML 1.1 reads 017 as 15, 1:30 as 90 and -010 as -8: values nobody meant.
    with pytest.raises(ConfigError, match=re.escape(
            f"--set seed={text}: invalid seed: '{text}' (expected an integer >= 0"
            f"{YAML11_HINT}")):
        load_config(None, ["train.epochs=1", f"seed={text}"])


@pytest.mark.parametrize("text, value", [("0", 0), ("17", 17), ("0x11", 17),
                                         ("0b101", 5), ("1_000", 1000), ("+5", 5)])
def test_plain_hex_and_binary_integers_still_read_as_numbers(text, value):
    assert load_config(None, ["train.epochs=1", f"seed={text}"])["seed"] == value


def test_a_text_key_keeps_a_leading_zero(write_config):
    config = load_config(write_config("train: {epochs: 1}\noutput: 017\n"))

    assert config["output"] == "017"


@pytest.mark.parametrize("make, problem, fix", [
    (lambda folder: (folder / "loop.yaml").symlink_to("loop.yaml"),
     "Too many levels of symbolic links", "its symbolic links form a loop: fix them"),
    (lambda folder: (folder / "file").write_text("x"),
     "Not a directory", "a part of its path is a file, not a folder: check the path"),
], ids=["link loop", "file as folder"])
def test_a_config_that_cannot_be_read_gets_the_fix_for_its_cause(
        tmp_path, make, problem, fix):
    make(tmp_path)
    path = tmp_path / ("loop.yaml" if "loop" in fix else "file/config.yaml")

    result = invoke("fit", path)

    assert_exit_2(result, f"error: cannot read {path}: {problem}; {fix}\n")
