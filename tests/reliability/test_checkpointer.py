"""An epoch cut short by Ctrl-C is not recorded as completed (Keras still calls on_epoch_end for it)."""
import keras

from ldseg_suite import training


def test_epoch_stopped_by_sigint_is_not_checkpointed(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    sigint = training.SigintStop()
    ck = training.Checkpointer(tmp_path, training.NaNGuard(), sigint)
    ck.set_model(model)
    ck.on_epoch_end(0)
    assert ck.completed == 1 and training.latest_checkpoint(tmp_path)[1] == 1
    sigint.received = True
    ck.on_epoch_end(1)
    assert ck.completed == 1 and training.latest_checkpoint(tmp_path)[1] == 1
