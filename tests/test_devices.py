"""The device line, GPU memory growth per GPU, and children that share a GPU (no GPU needed)."""

import os
import subprocess

import pytest
import tensorflow as tf

from pipelines import devices
from pipelines.tools import child_runs


def _fake_gpus(count: int) -> list:
  return [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(count)]


@pytest.fixture
def gpus(monkeypatch):
  """Makes TensorFlow report `count` GPUs named NVIDIA H200; records, in order, each
  set_memory_growth call and each read of a GPU's details."""
  calls = []

  def install(count: int, growth_error: bool = False) -> list:
    fake = _fake_gpus(count)

    def set_memory_growth(device, enable):
      if growth_error:
        raise RuntimeError("Physical devices cannot be modified after being initialized")
      calls.append((device.name, enable))

    monkeypatch.setattr(
      tf.config, "list_physical_devices", lambda kind=None: fake if kind == "GPU" else [], raising=True
    )
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", set_memory_growth)
    monkeypatch.setattr(tf.config.experimental, "get_memory_growth", lambda device: False)

    def get_device_details(device):
      calls.append((device.name, "details"))
      return {"device_name": "NVIDIA H200"}

    monkeypatch.setattr(tf.config.experimental, "get_device_details", get_device_details)
    return calls

  monkeypatch.delenv(devices.ALLOW_GROWTH_ENV, raising=False)
  return install


def test_cpu_line_names_the_cores_and_is_printed_once(gpus, capsys):
  calls = gpus(0)
  line = devices.configure()
  cores = len(os.sched_getaffinity(0))
  assert line == f"device: CPU (no GPU visible), {cores} cores"
  captured = capsys.readouterr()
  assert captured.err == line + "\n" and captured.out == ""  # stdout stays the tool's own
  assert calls == []


def test_memory_growth_is_requested_for_each_gpu_before_anything_else(gpus, capsys):
  calls = gpus(2)
  line = devices.configure()
  assert calls == [
    ("/physical_device:GPU:0", True),
    ("/physical_device:GPU:1", True),
    ("/physical_device:GPU:0", "details"),
  ]
  assert line.startswith("device: GPU 0 (NVIDIA H200), memory growth on")
  assert "2 GPUs visible" in line
  assert capsys.readouterr().err == line + "\n"


def test_one_gpu_line(gpus):
  calls = gpus(1)
  assert devices.configure() == "device: GPU 0 (NVIDIA H200), memory growth on"
  assert calls[0] == ("/physical_device:GPU:0", True)


def test_a_users_growth_false_is_kept_and_said(gpus, monkeypatch):
  calls = gpus(1)
  monkeypatch.setenv(devices.ALLOW_GROWTH_ENV, "false")
  line = devices.configure()
  assert not [call for call in calls if call[1] is True]  # no set_memory_growth(gpu, True)
  assert line == "device: GPU 0 (NVIDIA H200), memory growth off (TF_FORCE_GPU_ALLOW_GROWTH=false)"


def test_growth_after_the_gpu_was_set_up_is_reported_off_not_raised(gpus, monkeypatch):
  gpus(1, growth_error=True)
  assert devices.configure().endswith("memory growth off (TensorFlow had set up the GPU before this call)")
  monkeypatch.setenv(devices.ALLOW_GROWTH_ENV, "true")  # the allocator still grows: TensorFlow reads it
  assert devices.configure().endswith("memory growth on")


def test_child_env_turns_on_gpu_memory_growth_unless_the_user_chose(monkeypatch):
  env = child_runs.child_env({"PATH": "/usr/bin"})
  assert env[devices.ALLOW_GROWTH_ENV] == "true"
  # Only FATAL TensorFlow lines in a role's or run's log, unless the user (or --verbose) chose.
  assert env["PATH"] == "/usr/bin" and env["TF_CPP_MIN_LOG_LEVEL"] == "3"
  assert child_runs.child_env({"TF_CPP_MIN_LOG_LEVEL": "0"})["TF_CPP_MIN_LOG_LEVEL"] == "0"
  assert child_runs.child_env({devices.ALLOW_GROWTH_ENV: "false"})[devices.ALLOW_GROWTH_ENV] == "false"
  monkeypatch.delenv(devices.ALLOW_GROWTH_ENV, raising=False)
  assert child_runs.child_env()[devices.ALLOW_GROWTH_ENV] == "true"  # default: this process's env


def test_sweep_tune_and_launch_children_get_the_growth_env(monkeypatch, tmp_path):
  """TrainProcess starts every child of pipelines-sweep, -tune and -launch: its Popen env."""
  seen = {}

  class FakePopen:
    def __init__(self, command, **kwargs):
      seen.update(kwargs["env"])
      self.pid = 1

  monkeypatch.delenv(devices.ALLOW_GROWTH_ENV, raising=False)
  monkeypatch.setattr(subprocess, "Popen", FakePopen)
  child_runs.TrainProcess(["true"], tmp_path / "logs" / "run.log")
  assert seen[devices.ALLOW_GROWTH_ENV] == "true"
