"""nntrain's errors survive pickling (search workers and Dask send them back)."""

import inspect
import pickle

import pytest

from nntrain import config, errors

# One instance of each exception class of errors.py and config.py, with every
# argument its constructor takes set to a value other than its default.
INSTANCES = [
    errors.NNTrainError("failed"),
    errors.BadInputError("bad"),
    errors.ConfigError("invalid train.epochs", ("train.epochs", "train.iterations")),
    errors.DataError("no data"),
    errors.DataLocationError("the data is not there", "pass --data", missing=False,
                             also="download it"),
    errors.CheckpointError("damaged"),
    errors.RunDirectoryError("not empty"),
    errors.FolderLockedError("another nntrain process is writing to runs/a"),
    errors.TrainingError("NaN loss"),
    errors.NonFiniteScoresError("infinite scores"),
    errors.DownloadError("timed out"),
    errors.ClusterError("no scheduler"),
    errors.GradientCheckError("gradients differ"),
    errors.StopRequested("stopped by SIGTERM", 143),
    errors.NNTrainWarning("note"),
    errors.DataWarning("moved"),
    errors.CheckpointWarning("old"),
    config.ForeignSettingError("optimizer.beta1 is not a setting of 'sgd'",
                               ("optimizer.beta1", "optimizer.name"), "optimizer",
                               "remove it, or replace the whole section"),
]


def test_every_exception_class_of_errors_and_config_has_an_instance_here():
    classes = {cls for module in (errors, config)
               for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, BaseException) and cls.__module__ == module.__name__}
    assert classes == {type(error) for error in INSTANCES}


@pytest.mark.parametrize("error", INSTANCES, ids=lambda error: type(error).__name__)
def test_an_error_comes_back_from_pickle_with_its_message_and_attributes(error):
    error.__notes__ = ["a note"]

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)
    assert getattr(copy, "exit_code", None) == getattr(error, "exit_code", None)
