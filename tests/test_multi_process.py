"""Two processes on localhost train exactly like one process with the same global batch.

The processes talk through the engines' own runtimes (JAX's distributed
service with gloo CPU collectives; TensorFlow's MultiWorkerMirroredStrategy
over gRPC), started here on free ports by tests/multi_process_worker.py, each
bounded in time and killed if the test fails. One run of three processes (the
two-process run and the single-process reference side by side) serves every
test of the module.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import keras_diffusion as kd

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_process_worker.py")
TOLERANCE = 1e-5
TIMEOUT = 900


def free_ports(count):
    """`count` ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        for sock in sockets:
            stack.enter_context(sock)
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]


def run_processes(commands, environment):
    """Runs the commands at once; returns their outputs, or fails with the first failure's log (all killed)."""
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
        for command in commands
    ]
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"one": the single-process results, "two": [process 0's, process 1's]}, and the output folders."""
    one, two = tmp_path_factory.mktemp("one_process"), tmp_path_factory.mktemp("two_processes")
    addresses = ",".join(f"localhost:{port}" for port in free_ports(2))
    run_processes(
        [
            [sys.executable, WORKER, str(one), "0", "1"],
            [sys.executable, WORKER, str(two), "0", "2", addresses],
            [sys.executable, WORKER, str(two), "1", "2", addresses],
        ],
        dict(os.environ),
    )
    return {
        "one": dict(np.load(one / "result_0.npz")),
        "two": [dict(np.load(two / f"result_{index}.npz")) for index in range(2)],
        "folders": (one, two),
    }


def largest_difference(first, second, prefix):
    keys = [key for key in first if key.startswith(prefix)]
    assert keys and set(keys) == {key for key in second if key.startswith(prefix)}
    return max(float(np.max(np.abs(first[key] - second[key]))) for key in keys)


def test_each_process_knows_its_index_and_the_count(runs):
    assert [int(r["process_index"]) for r in runs["two"]] == [0, 1]
    assert [int(r["process_count"]) for r in runs["two"]] == [2, 2]
    assert int(runs["one"]["process_count"]) == 1


@pytest.mark.parametrize("process", [0, 1])
def test_the_losses_equal_the_single_process_losses(runs, process):
    for key in ("loss_1", "loss_2", "dae_loss"):
        one, two = float(runs["one"][key]), float(runs["two"][process][key])
        assert abs(one - two) <= TOLERANCE * max(1.0, abs(one)), (key, one, two)


@pytest.mark.parametrize("process", [0, 1])
def test_the_weights_and_ema_equal_the_single_process_ones_after_resuming_mid_epoch(runs, process):
    two = runs["two"][process]
    assert int(two["epochs_run"]) == 1  # the second fit resumed in epoch 2, from the checkpoint of its first batch
    assert largest_difference(runs["one"], two, "weight_") <= TOLERANCE
    assert largest_difference(runs["one"], two, "ema_") <= TOLERANCE
    assert largest_difference(runs["one"], two, "dae_weight_") <= TOLERANCE


def test_training_moved_the_weights_far_more_than_the_tolerance(runs):
    # The EMA (decay 0.9) lags the weights: their gap shows the weights moved.
    assert largest_difference(runs["one"], {k.replace("ema_", "weight_"): v for k, v in runs["one"].items()
                                             if k.startswith("ema_")}, "weight_") > 100 * TOLERANCE  # fmt: skip


def test_generate_splits_the_batch_and_gives_every_process_the_single_process_images(runs):
    assert int(runs["one"]["generate_local_rows"]) == 4
    for two in runs["two"]:
        assert int(two["generate_local_rows"]) == 2  # each process sampled half of the 4 images
        assert two["generated"].shape == (4, 8, 8, 1)
        assert np.max(np.abs(two["generated"] - runs["one"]["generated"])) <= TOLERANCE


def test_fid_features_are_split_between_the_processes_and_the_score_is_the_single_process_one(runs):
    assert int(runs["one"]["fid_images_seen"]) == 4
    for two in runs["two"]:
        assert int(two["fid_images_seen"]) == 2
        assert abs(float(two["fid"]) - float(runs["one"]["fid"])) <= TOLERANCE * max(1.0, float(runs["one"]["fid"]))


def test_only_the_chief_writes_files(runs):
    _, two = runs["folders"]
    assert sorted(p.name for p in (two / "process_0").iterdir()) == ["epoch_0002.png", "model.keras"]
    assert not (two / "process_1").exists()
    checkpoint = sorted(p.name for p in (two / "checkpoint").iterdir())
    assert checkpoint == ["checkpoint.json", "step-000000004.weights.h5"]  # nothing half-written beside it
    assert json.loads((two / "checkpoint" / "checkpoint.json").read_text())["global_step"] == 4


def test_global_batches_are_the_same_sequence_wherever_they_are_built():
    images = np.arange(12, dtype="float32").reshape(12, 1, 1, 1)
    orders = []
    for _ in range(2):  # as two processes would build them
        dataset = kd.distributed.global_batches(images, batch_size=4, shuffle=True, seed=5)
        orders.append([[batch[:, 0, 0, 0].numpy().tolist() for batch in dataset] for _epoch in range(2)])
    assert orders[0] == orders[1]
    first_epoch, second_epoch = orders[0]
    assert sorted(sum(first_epoch, [])) == list(range(12)) and first_epoch != second_epoch


def test_a_global_batch_that_does_not_divide_between_processes_is_refused(monkeypatch):
    monkeypatch.setattr(kd.distributed, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        kd.distributed.global_batches(np.zeros((8, 2, 2, 1), "float32"), batch_size=5)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(addresses="node0"), "not 'host:port'"),
        (dict(addresses="a:1,b:2", num_processes=3, process_id=0), "one address per process"),
        (dict(addresses="a:1,b:2", process_id=2), r"process_id` must be in 0\.\.1"),
        (dict(addresses="a:1,b:2"), "Give `process_id`"),
    ],
)
def test_bad_setups_are_refused_before_anything_connects(arguments, message):
    with pytest.raises(ValueError, match=message):
        kd.distributed.initialize(**arguments)


def test_processes_with_different_models_refuse_to_train_naming_the_mismatch():
    addresses = ",".join(f"localhost:{port}" for port in free_ports(2))
    outputs = run_processes([[sys.executable, WORKER, "mismatched", str(i), addresses] for i in range(2)], dict(os.environ))
    for output in outputs:
        assert "refused: The processes disagree on the model's configuration" in output, output[-3000:]
        assert "process(es) [1] differ from process 0" in output


def test_a_coordinator_that_never_answers_times_out_naming_its_address():
    """A second process that waits for a peer nobody starts: TimeoutError within the timeout, address named."""
    (port,) = free_ports(1)
    (own,) = free_ports(1)
    code = (
        "import keras_diffusion as kd\n"
        f"kd.distributed.initialize('localhost:{port},localhost:{own}', process_id=1, timeout=3)\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(WORKER)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode != 0
    assert "TimeoutError" in result.stderr and f"localhost:{port}" in result.stderr, result.stderr[-3000:]
